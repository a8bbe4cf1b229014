"""Address strings: parsing `[scheme[-net]://]address[?option=value&...]`, for listening and for dialling.

Binding the listeners these describe is `evio.listeners`' job.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Tuple

SCHEMES = ("tcp", "tcp4", "tcp6", "unix")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
# sun_path holds 108 bytes on Linux and 104 on BSD and macOS, with the final NUL.
_UNIX_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


@dataclass(frozen=True)
class Address:
    """One parsed address: what to bind and how."""

    text: str
    scheme: str
    portable: bool
    host: str = ""
    port: int = 0
    path: str = ""
    reuseport: bool = False
    #: A unix socket file's permissions (`?mode=0660`), set before it accepts; `None` follows the umask.
    mode: int | None = None

    @property
    def is_unix(self) -> bool:
        return self.scheme == "unix"


def named_error(err: OSError, doing: str) -> OSError:
    """`err` again, of the same type and errno, its message saying what was being done and to what."""
    message = f"{doing}: {err.strerror or err}"
    return type(err)(err.errno, message) if err.errno is not None else type(err)(message)


def _bad(text: str, why: str) -> ValueError:
    return ValueError(f"bad address {text!r}: {why}")


def _is_literal(host: str, family: socket.AddressFamily) -> bool:
    try:
        socket.inet_pton(family, host.split("%", 1)[0] if family == socket.AF_INET6 else host)
    except (OSError, ValueError):
        return False
    return True


def parse(text: str) -> Address:
    """Parse one address string, raising `ValueError` that names it when it is malformed."""
    if not isinstance(text, str):
        raise TypeError(f"an address must be a str, not {type(text).__name__}: {text!r}")
    if not text:
        raise _bad(text, "empty")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    portable = scheme.endswith("-net")
    if portable:
        scheme = scheme[: -len("-net")]
    if scheme not in SCHEMES:
        raise _bad(text, f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}, optionally with -net")
    rest, _, query = rest.partition("?")
    reuseport, mode = _parse_options(text, query)
    if scheme == "unix":
        if not rest:
            raise _bad(text, "a unix address needs a path")
        if "\0" in rest:
            raise _bad(text, "a unix path cannot hold a NUL byte")
        if len(os.fsencode(rest)) > _UNIX_PATH_MAX:
            raise _bad(text, f"a unix socket path is at most {_UNIX_PATH_MAX} bytes long")
        if reuseport:
            raise _bad(text, "reuseport applies to TCP addresses only")
        return Address(text, scheme, portable, path=rest, mode=mode)
    if mode is not None:
        raise _bad(text, "mode applies to unix addresses only")
    host, port = _split_host_port(text, rest)
    if scheme == "tcp4" and _is_literal(host, socket.AF_INET6):
        raise _bad(text, "tcp4 needs an IPv4 address or a host name")
    if scheme == "tcp6" and _is_literal(host, socket.AF_INET):
        raise _bad(text, "tcp6 needs an IPv6 address or a host name")
    return Address(text, scheme, portable, host=host, port=port, reuseport=reuseport)


def _parse_options(text: str, query: str) -> Tuple[bool, int | None]:
    """`reuseport` and `mode` from `option=value&...`."""
    reuseport = False
    mode: int | None = None
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if key == "reuseport":
            value = value.lower()
            if not eq or value not in _TRUE + _FALSE:
                raise _bad(text, f"reuseport takes true/false, 1/0 or yes/no, not {value!r}")
            reuseport = value in _TRUE
        elif key == "mode":
            if not (eq and value.isascii() and value.isdigit() and set(value) <= set("01234567") and len(value) <= 4):
                raise _bad(text, f"mode takes octal permissions, as 0660, not {value!r}")
            mode = int(value, 8)
        else:
            raise _bad(text, f"unknown option {key!r}; the options are reuseport (TCP) and mode (unix)")
    return reuseport, mode


def _split_host_port(text: str, rest: str) -> Tuple[str, int]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not _is_literal(host, socket.AF_INET6):
            raise _bad(text, "expected an IPv6 literal in brackets, as [::1]:port")
        if not tail.startswith(":"):
            raise _bad(text, "expected :port after the IPv6 literal")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise _bad(text, "expected host:port")
        if ":" in host:
            raise _bad(text, "IPv6 literals go in brackets, as [::1]:port")
    if not (port_text.isdigit() and port_text.isascii()):
        raise _bad(text, f"the port must be a number from 0 to 65535, not {port_text!r}")
    port = int(port_text)
    if port > 65535:
        raise _bad(text, f"port {port} is out of range 0-65535")
    return host, port


def parse_dial(text: str) -> Address:
    """Parse an address to connect to: `serve`'s syntax, with a host (or a path) and without options."""
    address = parse(text)
    if address.portable:
        raise _bad(text, "-net chooses a server's backend; a dial uses the loop it is made on")
    if "?" in text:
        raise _bad(text, "a dial takes no ?options")
    if address.is_unix:
        return address
    if not address.host:
        raise _bad(text, "a dial needs a host, as tcp://127.0.0.1:6379")
    if address.port == 0:
        raise _bad(text, "a dial needs a port from 1 to 65535")
    return address
