"""`Inbox`: how other threads reach the loop: a queue of calls, and a descriptor that wakes the poll.

An eventfd where Python has one (3.10+ on Linux), a self-pipe elsewhere. At
most one byte (or count) is in flight: calls posted before the loop drains
the queue share one wake, so a burst from another thread costs one system
call. A lock orders every post against `close`, so a call that races with
shutdown never writes into a closed (or reused) descriptor; once closed,
`post` refuses, and `close` hands back what was still queued.

Signal handlers reach the loop too. Python runs a handler between two
bytecodes on the main thread; a signal that arrives just before the poll
starts, or on another thread, leaves the poll asleep until some descriptor
or timer wakes it, and the handler waits that long. So an inbox made with
`signals=True` (on the main thread) is a self-pipe whose write end is the
interpreter's signal wakeup descriptor (`signal.set_wakeup_fd`) until it
closes: every signal makes the poll return. One that is already set (by
the application) is left alone.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, List, Tuple

#: A call for the loop's thread: `function(conn_or_none, argument)`.
Call = Tuple[Callable[[Any, Any], None], Any, Any]


class Inbox:
    """Calls other threads posted for the loop, oldest first, and the descriptor that signals them."""

    __slots__ = ("_calls", "_closed", "_lock", "_signaled", "_wakes_signals", "_wfd", "fd")

    def __init__(self, signals: bool = False) -> None:
        if not signals and sys.version_info >= (3, 10) and hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.fd, self._wfd = fd, fd
        else:
            self.fd, self._wfd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._wfd, False)
        self._lock = threading.Lock()
        self._calls: List[Call] = []
        self._signaled = False
        self._closed = False
        self._wakes_signals = False
        if signals:
            self._wakes_signals = _swap_wakeup_fd(self._wfd, -1)

    def post(
        self, function: Callable[[Any, Any], None], conn: Any, arg: Any, posted: int = 0, wake: bool = False
    ) -> bool:
        """Queue `function(conn, arg)` for the loop and wake it; `False` once the inbox is closed.

        `posted` bytes are counted in `conn._posted` until the loop calls `settle`,
        so `Conn.pending` includes writes still on their way to the loop.

        A `wake` call joins the connection's last queued call when that is a
        wake too (`conn._wake_posted`): it would fire the same `data(conn,
        None)` at the same point in the connection's call order. So threads
        waking a connection as fast as they can queue one call, not millions,
        and a wake after a write still comes after that write.
        """
        with self._lock:
            if self._closed:
                return False
            if conn is not None:
                if wake and conn._wake_posted:
                    return True
                conn._wake_posted = wake
            self._calls.append((function, conn, arg))
            if posted:
                conn._posted += posted
            if not self._signaled:
                try:
                    os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except BlockingIOError:
                    pass  # a pipe full of signals' bytes: readable, so the loop wakes all the same
                self._signaled = True
        return True

    def take(self) -> List[Call]:
        """Drain the descriptor and return the queued calls, oldest first."""
        with self._lock:
            calls, self._calls = self._calls, []
            if not self._closed:
                self._signaled = False
                try:
                    os.read(self.fd, 4096)  # a pipe may hold a byte per signal too
                except (BlockingIOError, InterruptedError):
                    pass
        return calls

    def nudge(self) -> None:
        """Make the descriptor readable, from the loop's own thread, taking no lock.

        For a signal handler, which runs on the loop's thread between two
        bytecodes (possibly while `take` holds the lock): it interrupts the
        poll, which the interpreter would otherwise resume, so a flag the
        handler set is seen at once.
        """
        if not self._closed:
            try:
                os.write(self._wfd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass  # full (a pipe) or closing: the loop is awake either way

    def settle(self, conn: Any, posted: int) -> None:
        """The loop took `posted` bytes of `conn`'s posted writes over."""
        with self._lock:
            conn._posted -= posted

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> List[Call]:
        """Refuse further posts, close the descriptors, and return what was still queued."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            calls, self._calls = self._calls, []
            if self._wakes_signals:  # before the descriptor closes: a signal must not write into a reused one
                self._wakes_signals = False
                _swap_wakeup_fd(-1, self._wfd)
            os.close(self.fd)
            if self._wfd != self.fd:
                os.close(self._wfd)
        return calls


def _swap_wakeup_fd(fd: int, expected: int) -> bool:
    """Make `fd` the signal wakeup descriptor if `expected` is the current one; whether it was.

    Python has no getter: the only way to read the current descriptor is to
    set another. Signals are blocked meanwhile, so one that arrives in that
    instant is delivered after, to whichever descriptor stays; another
    descriptor found there is put back (with `warn_on_full_buffer=False`, as
    its own setting cannot be read). Outside the main thread of the main
    interpreter nothing changes and the answer is False.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals()) if _MASKABLE else None
    try:
        current = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        if current != expected:
            signal.set_wakeup_fd(current, warn_on_full_buffer=False)
            return False
        return True
    except ValueError:  # not the main thread of the main interpreter
        return False
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


_MASKABLE = hasattr(signal, "pthread_sigmask")
