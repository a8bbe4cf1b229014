"""`Waker`: lets other threads interrupt the loop's poll to deliver wakes.

An eventfd where Python has one (3.10+ on Linux), a self-pipe elsewhere. A
lock orders every write against `close`, so a wake that races with shutdown
never writes into a closed (or reused) descriptor.
"""

from __future__ import annotations

import os
import threading


class Waker:
    """A readable descriptor plus the ids that other threads asked to wake."""

    __slots__ = ("_closed", "_lock", "_pending", "_signaled", "_wfd", "fd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.fd, self._wfd = fd, fd
        else:
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)
        self._lock = threading.Lock()
        self._pending: dict[int, None] = {}  # ordered, and a hot id is queued once
        # At most one byte (or count) is in flight: wakes coalesce until the loop drains.
        self._signaled = False
        self._closed = False

    def wake(self, id: int) -> bool:
        """Queue `id` and make the descriptor readable; `False` once closed."""
        with self._lock:
            if self._closed:
                return False
            self._pending[id] = None
            if not self._signaled:
                os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self._signaled = True
        return True

    def take(self) -> list[int]:
        """Drain the descriptor and return the queued ids, oldest first."""
        with self._lock:
            ids, self._pending = list(self._pending), {}
            if self._signaled and not self._closed:
                self._signaled = False
                try:
                    os.read(self.fd, 64)
                except (BlockingIOError, InterruptedError):
                    pass
        return ids

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self.fd)
            if self._wfd != self.fd:
                os.close(self._wfd)
