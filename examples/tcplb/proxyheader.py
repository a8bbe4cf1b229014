"""The PROXY protocol header (HAProxy's specification, versions 1 and 2), sent to a backend first.

It tells the backend the client's address and the address the client
connected to, as the proxy saw them. Only the PROXY command over a stream
is needed here: TCP over IPv4 or IPv6, or a unix socket. An IPv4 address
mapped into IPv6 (a dual-stack listener's view of an IPv4 client) is sent as
IPv4 when both ends are, as the backend would have seen it without the proxy.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from typing import Any, Union

#: What `Conn.remote_addr` and `Conn.local_addr` hold: a tuple for TCP, a path for unix.
Addr = Union[tuple[Any, ...], str]

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, command PROXY
_TCP4, _TCP6, _UNIX_STREAM, _UNSPEC = 0x11, 0x21, 0x31, 0x00
_UNIX_PATH = 108  # bytes per address in the unix block, NUL-padded


def _ip(addr: Addr) -> IP | None:
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    return ipaddress.ip_address(str(addr[0]).split("%", 1)[0])


def _pair(src: Addr, dst: Addr) -> tuple[int, IP, IP] | None:
    """(family 4 or 6, source ip, destination ip), or `None` when not both are TCP of one family."""
    a, b = _ip(src), _ip(dst)
    if a is None or b is None:
        return None
    if isinstance(a, ipaddress.IPv6Address) and isinstance(b, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None and b.ipv4_mapped is not None:
            return 4, a.ipv4_mapped, b.ipv4_mapped
        return 6, a, b
    if isinstance(a, ipaddress.IPv4Address) and isinstance(b, ipaddress.IPv4Address):
        return 4, a, b
    return None


def proxy_header_v1(src: Addr, dst: Addr) -> bytes:
    """`PROXY TCP4|TCP6 src dst sport dport\\r\\n`, or `PROXY UNKNOWN\\r\\n` for anything else."""
    pair = _pair(src, dst)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    family, a, b = pair
    assert isinstance(src, tuple) and isinstance(dst, tuple)
    return f"PROXY TCP{family} {a} {b} {src[1]} {dst[1]}\r\n".encode("ascii")


def proxy_header_v2(src: Addr, dst: Addr) -> bytes:
    """The binary header: signature, version and command, family, length, then the addresses."""
    pair = _pair(src, dst)
    if pair is not None:
        family, a, b = pair
        assert isinstance(src, tuple) and isinstance(dst, tuple)
        block = a.packed + b.packed + struct.pack("!HH", src[1], dst[1])
        fam = _TCP4 if family == 4 else _TCP6
    elif isinstance(src, str) and isinstance(dst, str):
        block = _unix(src) + _unix(dst)
        fam = _UNIX_STREAM
    else:
        block, fam = b"", _UNSPEC  # the receiver then uses the connection's own addresses
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, fam, len(block)) + block


def _unix(path: str) -> bytes:
    raw = os.fsencode(path)[: _UNIX_PATH - 1]
    return raw.ljust(_UNIX_PATH, b"\0")
