"""`Acceptor`: taking new connections off the listeners, and pausing when it should not take more.

Accepting is batched (several connections per readiness event). The
listeners leave the poller, so a level-triggered poll does not spin on a
backlog it will not take, in two cases: for `ACCEPT_PAUSE` seconds when
`accept` fails for want of descriptors, and while `Events.max_connections`
accepted connections are open. Existing connections are served meanwhile,
and the waiting clients stay in the kernel's backlog until there is room.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from .listeners import Listener
from .pollers import IN, Poller

if TYPE_CHECKING:
    from .timers import Timer

logger = logging.getLogger("evio")

#: How long to stop accepting after the process ran out of descriptors.
ACCEPT_PAUSE = 0.25
#: A shortage of descriptors is one episode (logged once) until none is seen for this long.
OUT_OF_FDS_EPISODE = 10.0
#: Connections accepted per readiness event of a listener, at most.
ACCEPTS_PER_EVENT = 128

_NO_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

#: What the acceptor hands each new socket to: `opened(sock, addr, listener)`.
Opener = Callable[[socket.socket, Any, Listener], None]
#: How it asks for a timer: `call_later(delay, callback)`.
CallLater = Callable[[float, Callable[[], object]], "Timer"]


class Acceptor:
    """The listeners of one loop, and whether they are being watched."""

    def __init__(
        self,
        listeners: list[Listener],
        poller: Poller,
        opener: Opener,
        call_later: CallLater,
        max_connections: int | None = None,
    ) -> None:
        self.listeners = {lst.fd: lst for lst in listeners}
        self._poller = poller
        self._opener = opener
        self._call_later = call_later
        self._limit = max_connections
        self._open = 0  # accepted connections open now
        self._paused = False  # out of descriptors, for a while
        self._full = False  # at max_connections
        self._watching = False
        self._out_of_fds_at = -math.inf  # when accept last failed for want of descriptors

    def start(self) -> None:
        self._update()

    def _update(self) -> None:
        """Watch the listeners exactly when accepting is allowed."""
        want = not self._paused and not self._full
        if want == self._watching:
            return
        for fd in self.listeners:
            if want:
                self._poller.register(fd, IN)
            else:
                self._poller.unregister(fd)
        self._watching = want

    def gained(self) -> None:
        """An accepted connection opened."""
        self._open += 1
        if self._limit is not None and self._open >= self._limit:
            self._full = True
            self._update()

    def lost(self) -> None:
        """An accepted connection is gone (closed or detached)."""
        self._open -= 1
        if self._full and self._limit is not None and self._open < self._limit:
            self._full = False
            self._update()

    def accept(self, listener: Listener, keep_going: Callable[[], bool]) -> None:
        """Accept what `listener` has waiting, up to a batch, while `keep_going()` says so."""
        accept = listener.sock.accept
        for _ in range(ACCEPTS_PER_EVENT):
            if self._paused or self._full:
                return  # paused by an earlier connection or listener in this batch
            try:
                sock, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in _NO_RESOURCES:
                    self._out_of_descriptors(err)
                    return
                # ECONNABORTED and friends: that one client is gone; the next may be there.
                continue
            self._opener(sock, addr, listener)
            if not keep_going():
                return

    def _out_of_descriptors(self, err: OSError) -> None:
        now = time.monotonic()
        if now - self._out_of_fds_at > OUT_OF_FDS_EPISODE:
            logger.warning("cannot accept (%s); pausing accepts, existing connections are served", err)
        self._out_of_fds_at = now
        self._paused = True
        self._update()
        self._call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = False
        self._update()

    def close(self) -> None:
        """Close every listener (removing unix socket files that are still ours)."""
        for listener in self.listeners.values():
            listener.close()
