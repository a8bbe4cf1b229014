"""Handing freed memory back to the system, as Redis's allocator does on its own.

Redis's jemalloc returns the pages of freed memory to the system a few
seconds after they are freed. glibc's malloc, which CPython allocates its
larger blocks from, keeps them in its heap until the top of the heap is free:
one block still in use near the top holds everything below it. After a burst
(10,000 clients writing megabytes, then leaving), the clone's resident memory
then stays at hundreds of MiB that hold nothing, and grows with each burst
whose peak reaches higher. `malloc_trim(0)` gives back every free page
inside the heap; `Purger` calls it every few seconds on a thread of its
own (the call releases the GIL and takes the allocator's own locks, so the
loop never waits for it), and `MEMORY PURGE` calls it at once, as in Redis.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable, List

_TRIM: List[Callable[[int], int] | None] = []


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim(3), or None where the C library has none (musl, macOS)."""
    if not _TRIM:
        try:
            _TRIM.append(ctypes.CDLL(None).malloc_trim)
        except (OSError, AttributeError):
            _TRIM.append(None)
    return _TRIM[0]


def purge() -> bool:
    """Give the allocator's free pages back to the system; whether this C library can."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Purger:
    """A thread that purges every `interval` seconds, until `stop()`."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None  # not `_thread`: that name breaks a mypyc build
        #: How many times the thread has purged.
        self.purges = 0

    def start(self) -> bool:
        """Start purging; False (and no thread) where the C library cannot."""
        if _malloc_trim() is None or self._worker is not None:
            return False
        self._worker = threading.Thread(target=self._run, name="memory-purge", daemon=True)
        self._worker.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            purge()
            self.purges += 1

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join()
