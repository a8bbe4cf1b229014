"""`Lingering`: sockets closed on our side that wait, reading and discarding, for the peer's end of input.

Closing a socket that still has unread input makes the kernel send a reset,
and a reset makes the peer's kernel discard replies it has not handed to the
application yet. So a graceful close shuts down our side only, and the
socket lingers here until the peer closes too, or `LINGER_TIMEOUT` passes.
`closed` has already fired: the lingering is invisible to events.
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING, Callable

from .pollers import IN, Poller

if TYPE_CHECKING:
    from .timers import Timer

#: How long a closed connection waits for the peer's end of input before the socket goes.
LINGER_TIMEOUT = 5.0


class Lingering:
    """The lingering sockets of one loop, by descriptor."""

    def __init__(self, poller: Poller, call_later: Callable[[float, Callable[[], object]], Timer]) -> None:
        self._poller = poller
        self._call_later = call_later
        self._socks: dict[int, tuple[socket.socket, Timer]] = {}
        self._buf = bytearray(65536)

    def add(self, sock: socket.socket, registered: bool) -> None:
        """Watch `sock`, whose write side is already shut down, until the peer's end of input.

        `registered`: the poller already knows the descriptor (for some mask), and only needs telling.
        """
        fd = sock.fileno()
        timer = self._call_later(LINGER_TIMEOUT, functools.partial(self._end, fd))
        self._socks[fd] = (sock, timer)
        if registered:
            self._poller.modify(fd, IN)
        else:
            self._poller.register(fd, IN)

    def __contains__(self, fd: int) -> bool:
        return fd in self._socks

    def readable(self, fd: int) -> None:
        sock = self._socks[fd][0]
        try:
            if sock.recv_into(self._buf):
                return  # discarded; keep waiting for the peer's end of input
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end(fd)

    def _end(self, fd: int) -> None:
        entry = self._socks.pop(fd, None)
        if entry is None:
            return
        sock, timer = entry
        timer.cancel()
        self._poller.discard(fd)
        sock.close()

    def close(self) -> None:
        for sock, _ in self._socks.values():
            sock.close()
        self._socks.clear()
