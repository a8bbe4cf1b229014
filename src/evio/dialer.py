"""`Dialer`: connecting out on the loop: resolving, trying each address, and the connect time-out.

A dial's life, while its `Conn` is CONNECTING: a host name goes to the
`Resolver`'s threads (an IP literal or a unix path needs none); then each
address is tried in turn with a non-blocking `connect`, and the poller
reports the socket writable once the attempt succeeds or fails. The first
that succeeds hands its socket to `Loop.connected`; when none does, or the
time-out comes first, `Loop.dial_failed` gets the error, which names the
address dialled.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import time
from typing import TYPE_CHECKING, Any, List, Tuple

from .addresses import Address, named_error, parse_dial
from .conn import Conn, SockAddr
from .pollers import OUT
from .resolver import AddrInfo, Resolver

if TYPE_CHECKING:
    from .loop import Loop
    from .timers import Timer

#: What a non-blocking connect answers while the attempt goes on.
_UNDER_WAY = (0, errno.EINPROGRESS, errno.EINTR)
#: A unix listener whose backlog is full answers EAGAIN at once: try again after this long, doubling.
_UNIX_RETRY_FIRST = 0.005
_UNIX_RETRY_MAX = 0.1


class Dial:
    """One dial in progress: where to, which addresses are left, and its time-out."""

    __slots__ = ("address", "candidates", "error", "index", "retry", "sock", "timeout", "timer", "wait")

    def __init__(self, address: Address, timeout: float | None) -> None:
        self.address = address
        self.timeout = timeout
        self.candidates: List[Tuple[int, Any]] = []  # (family, sockaddr), in the order to try them
        self.index = 0
        self.error: OSError | None = None  # the last attempt's failure
        self.sock: socket.socket | None = None  # the attempt under way
        self.timer: Timer | None = None  # the time-out
        self.wait: Timer | None = None  # a retry after a unix listener's full backlog
        self.retry = 0.0


class Dialer:
    """Every dial of one loop."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._dialing: dict[int, Conn] = {}
        self._resolver: Resolver | None = None

    @staticmethod
    def parse(text: str) -> Address:
        return _parse(text) if isinstance(text, str) else parse_dial(text)

    @staticmethod
    def target(address: Address) -> SockAddr:
        """The address a dial goes to, as `Conn.remote_addr` shows it until the connection is up."""
        return address.path if address.is_unix else (address.host, address.port)

    def start(self, c: Conn, address: Address, timeout: float | None) -> None:
        """Begin dialling `address` for `c`; the outcome reaches the loop later, never inside this call."""
        loop = self._loop
        d = c._dial = Dial(address, timeout)
        self._dialing[c.id] = c
        if loop._stopping:
            self._fail(c, _abandoned(address))
            return
        if timeout is not None:
            d.timer = loop._timers.call_at(time.monotonic() + timeout, functools.partial(self._timed_out, c))
        if address.is_unix:
            d.candidates = [(socket.AF_UNIX, address.path)]
            self._try_next(c)
            return
        family = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}.get(address.scheme, socket.AF_UNSPEC)
        try:
            infos = _numeric(address.host, address.port, family)
        except (OSError, UnicodeError):
            if self._resolver is None:
                self._resolver = Resolver()
            self._resolver.resolve(address.host, address.port, family, functools.partial(self._resolved_elsewhere, c))
            return
        d.candidates = [(info[0], info[4]) for info in infos]
        self._try_next(c)

    def _resolved_elsewhere(self, c: Conn, infos: AddrInfo | None, err: OSError | None) -> None:
        """On a resolver thread: hand the answer to the loop (dropped if the loop has ended, and the dial with it)."""
        self._loop._inbox.post(self._resolved, c, (infos, err))

    def _resolved(self, c: Conn, result: tuple[AddrInfo | None, OSError | None]) -> None:
        d = c._dial
        if d is None:
            return  # timed out or abandoned meanwhile
        infos, err = result
        if err is not None or not infos:
            err = err or socket.gaierror(socket.EAI_NONAME, "no address")
            self._fail(c, named_error(err, f"cannot resolve {d.address.text!r}"))
            return
        d.candidates = [(info[0], info[4]) for info in infos]
        self._try_next(c)

    def _try_next(self, c: Conn) -> None:
        """Start a connect to the next address, or fail with the last error when none is left."""
        d = c._dial
        if d is None:
            return
        d.wait = None
        while d.index < len(d.candidates):
            family, sockaddr = d.candidates[d.index]
            d.index += 1
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as err:
                d.error = err
                continue
            try:
                sock.setblocking(False)
                code = sock.connect_ex(sockaddr)
            except OSError as err:
                sock.close()
                d.error = err
                continue
            if code in _UNDER_WAY:
                self._watch(c, sock)
                return
            sock.close()
            if code == errno.EAGAIN and family == socket.AF_UNIX:
                # The listener's backlog is full: nothing is under way, so ask again a little later.
                d.index -= 1
                d.retry = min(_UNIX_RETRY_MAX, d.retry * 2 or _UNIX_RETRY_FIRST)
                d.wait = self._loop._call_later(d.retry, functools.partial(self._try_next, c))
                return
            d.error = OSError(code, os.strerror(code))
        last = d.error or OSError(errno.EADDRNOTAVAIL, "no address to connect to")
        self._fail(c, named_error(last, f"cannot connect to {d.address.text!r}"))

    def _watch(self, c: Conn, sock: socket.socket) -> None:
        loop = self._loop
        assert c._dial is not None
        c._dial.sock = sock
        c._fd = sock.fileno()
        loop._conns[c._fd] = c
        loop._poller.register(c._fd, OUT)
        c._mask = OUT

    def _drop_socket(self, c: Conn) -> None:
        d = c._dial
        if d is None or d.sock is None:
            return
        sock, d.sock = d.sock, None
        loop = self._loop
        loop._conns.pop(c._fd, None)
        if c._mask:
            loop._poller.discard(c._fd)
            c._mask = 0
        c._fd = -1
        sock.close()

    def ready(self, c: Conn) -> None:
        """The socket under way is writable, or failed: connected, or on to the next address."""
        d = c._dial
        assert d is not None
        sock = d.sock
        if sock is None:
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._drop_socket(c)
            d.error = OSError(code, os.strerror(code))
            self._try_next(c)
            return
        try:
            peer = sock.getpeername()
        except OSError:
            # Not connected yet: a report meant for a descriptor closed earlier in this
            # batch, whose number this socket took. The real answer comes later.
            return
        d.sock = None
        self._finish(c)
        self._loop.connected(c, sock, peer, not d.address.is_unix)

    def _timed_out(self, c: Conn) -> None:
        d = c._dial
        if d is None:
            return
        d.timer = None
        self._fail(
            c, TimeoutError(errno.ETIMEDOUT, f"cannot connect to {d.address.text!r}: no connection in {d.timeout:g} s")
        )

    def _finish(self, c: Conn) -> None:
        """The dial is over, one way or the other: stop its timers and forget it."""
        d = c._dial
        assert d is not None
        for timer in (d.timer, d.wait):
            if timer is not None:
                timer.cancel()
        c._dial = None
        self._dialing.pop(c.id, None)

    def _fail(self, c: Conn, err: OSError | None) -> None:
        self._drop_socket(c)
        self._finish(c)
        self._loop.dial_failed(c, err)

    def cancel(self, c: Conn) -> None:
        """`Conn.abort()` of a dial under way: it stops, and `closed(conn, None)` fires."""
        self._fail(c, None)

    def abort_all(self) -> None:
        """The loop is shutting down: every dial still under way fails."""
        for c in list(self._dialing.values()):
            assert c._dial is not None
            self._fail(c, _abandoned(c._dial.address))

    def close(self) -> None:
        if self._resolver is not None:
            self._resolver.close()


#: A program that dials the same few addresses again and again (a proxy, a pool) parses each once.
_parse = functools.lru_cache(maxsize=256)(parse_dial)


@functools.lru_cache(maxsize=256)
def _numeric(host: str, port: int, family: int) -> tuple[tuple[Any, ...], ...]:
    """What `getaddrinfo` answers for an IP literal, at once and without DNS (`AI_NUMERICHOST`); cached."""
    return tuple(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST))


def _abandoned(address: Address) -> ConnectionAbortedError:
    return ConnectionAbortedError(errno.ECONNABORTED, f"dial to {address.text!r} abandoned: the server shut down")
