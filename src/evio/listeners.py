"""Listeners: binding and listening on parsed addresses, and the unix socket files they leave behind."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import Any, Callable, Tuple

from .addresses import Address, named_error
from .conn import SockAddr

# The kernel caps the backlog at its own limit (net.core.somaxconn on Linux).
_BACKLOG = 4096


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
            raise named_error(err, f"cannot listen on {address.text!r}") from err
        self.fd = self.sock.fileno()
        try:
            if address.is_unix:
                st = os.stat(address.path)
                self._unix_ident = (st.st_dev, st.st_ino)
            self.name: SockAddr = self.sock.getsockname()
        except OSError as err:
            self.close()
            raise named_error(err, f"cannot listen on {address.text!r}") from err
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
    mode = address.mode
    bound = False

    def after_bind(sock: socket.socket) -> None:
        nonlocal bound
        bound = True
        if mode is not None:
            os.chmod(path, mode)  # between bind and listen: nobody connects before it applies

    try:
        return _listening(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path, after_bind=after_bind)
    except BaseException:
        if bound:  # the file is ours: a failed start leaves nothing behind
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


def _listening(
    sock: socket.socket,
    sockaddr: Any,
    configure: Callable[[socket.socket], None] | None = None,
    after_bind: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """Configure, bind and listen on `sock`, non-blocking; closed if any step fails."""
    try:
        if configure is not None:
            configure(sock)
        sock.bind(sockaddr)
        if after_bind is not None:
            after_bind(sock)
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
        raise OSError(errno.EADDRINUSE, f"{_kind(st.st_mode)} is in the way (not a socket; left untouched)")
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


def _kind(mode: int) -> str:
    """What a file of `mode` is, in words."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    return "a device or other special file"


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
