"""Address strings: parsing `[scheme[-net]://]address[?option=value&...]` and binding listeners."""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable, Tuple

from .conn import SockAddr

SCHEMES = ("tcp", "tcp4", "tcp6", "unix")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
# sun_path holds 108 bytes on Linux and 104 on BSD and macOS, with the final NUL.
_UNIX_PATH_MAX = 107 if sys.platform.startswith("linux") else 103
# The kernel caps the backlog at its own limit (net.core.somaxconn on Linux).
_BACKLOG = 4096


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

    @property
    def is_unix(self) -> bool:
        return self.scheme == "unix"


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
    reuseport = _parse_options(text, query)
    if scheme == "unix":
        if not rest:
            raise _bad(text, "a unix address needs a path")
        if "\0" in rest:
            raise _bad(text, "a unix path cannot hold a NUL byte")
        if len(os.fsencode(rest)) > _UNIX_PATH_MAX:
            raise _bad(text, f"a unix socket path is at most {_UNIX_PATH_MAX} bytes long")
        if reuseport:
            raise _bad(text, "reuseport applies to TCP addresses only")
        return Address(text, scheme, portable, path=rest)
    host, port = _split_host_port(text, rest)
    if scheme == "tcp4" and _is_literal(host, socket.AF_INET6):
        raise _bad(text, "tcp4 needs an IPv4 address or a host name")
    if scheme == "tcp6" and _is_literal(host, socket.AF_INET):
        raise _bad(text, "tcp6 needs an IPv6 address or a host name")
    return Address(text, scheme, portable, host=host, port=port, reuseport=reuseport)


def _parse_options(text: str, query: str) -> bool:
    reuseport = False
    for item in query.split("&"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if key != "reuseport":
            raise _bad(text, f"unknown option {key!r}; the only option is reuseport")
        value = value.lower()
        if not eq or value not in _TRUE + _FALSE:
            raise _bad(text, f"reuseport takes true/false, 1/0 or yes/no, not {value!r}")
        reuseport = value in _TRUE
    return reuseport


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


class Listener:
    """A bound, listening, non-blocking socket and what is needed to clean it up."""

    __slots__ = ("_unix_ident", "address", "fd", "index", "is_unix", "name", "name_is_local", "sock")

    def __init__(self, address: Address, index: int) -> None:
        self.address = address
        self.index = index
        self.is_unix = address.is_unix
        self._unix_ident: Tuple[int, int] | None = None
        try:
            self.sock = _bind_unix(address) if address.is_unix else _bind_tcp(address)
        except OSError as err:
            raise _named(err, address) from err
        self.fd = self.sock.fileno()
        try:
            if address.is_unix:
                st = os.stat(address.path)
                self._unix_ident = (st.st_dev, st.st_ino)
            self.name: SockAddr = self.sock.getsockname()
        except OSError as err:
            self.close()
            raise _named(err, address) from err
        # An accepted socket's own address is the listener's unless it listens on every interface.
        self.name_is_local = self.is_unix or self.name[0] not in ("0.0.0.0", "::")

    def close(self) -> None:
        """Close the socket; remove its unix socket file if it is still the one bound here."""
        self.sock.close()
        ident, self._unix_ident = self._unix_ident, None
        if ident is None:
            return
        path = self.address.path
        try:
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == ident:
                os.unlink(path)
        except OSError:
            pass


def _named(err: OSError, address: Address) -> OSError:
    """`err` again, its message naming the address at fault."""
    message = f"cannot listen on {address.text!r}: {err.strerror or err}"
    return type(err)(err.errno, message) if err.errno is not None else type(err)(message)


def _bind_tcp(address: Address) -> socket.socket:
    host, scheme = address.host, address.scheme
    v6only: bool | None = None
    sockaddr: tuple[Any, ...]
    if not host:
        if scheme == "tcp4" or (scheme == "tcp" and not socket.has_dualstack_ipv6()):
            family, sockaddr = socket.AF_INET, ("0.0.0.0", address.port)
        else:
            family, sockaddr, v6only = socket.AF_INET6, ("::", address.port, 0, 0), scheme == "tcp6"
    else:
        want = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}.get(scheme, socket.AF_UNSPEC)
        infos = socket.getaddrinfo(host, address.port, want, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        if family == socket.AF_INET6 and scheme == "tcp6":
            v6only = True

    def configure(sock: socket.socket) -> None:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.reuseport:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not supported here")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6only is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))

    return _listening(socket.socket(family, socket.SOCK_STREAM), sockaddr, configure)


def _bind_unix(address: Address) -> socket.socket:
    path = address.path
    _remove_stale_socket(path)
    return _listening(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path)


def _listening(
    sock: socket.socket, sockaddr: Any, configure: Callable[[socket.socket], None] | None = None
) -> socket.socket:
    """Configure, bind and listen on `sock`, non-blocking; closed if any step fails."""
    try:
        if configure is not None:
            configure(sock)
        sock.bind(sockaddr)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file at `path` that nobody accepts on; leave anything else alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        return  # bind will fail with EADDRINUSE and the file stays untouched
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except (BlockingIOError, InterruptedError):
        pass  # a listener whose backlog is full is alive all the same
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "a live server is listening on this unix socket")


def bind_all(addrs: tuple[Address, ...]) -> list[Listener]:
    """Bind every address, in order; on a failure close what was bound and raise."""
    listeners: list[Listener] = []
    try:
        for index, address in enumerate(addrs):
            listeners.append(Listener(address, index))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners
