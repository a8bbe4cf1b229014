"""One heap for every deadline the loop keeps: `tick`, `Server.after`, time-outs, lingering, accept pauses.

Cancelling is O(1): a cancelled `Timer` stays in the heap and is discarded
when it reaches the top ("this entry is stale"), as trio's `Deadlines` does.
When stale entries outnumber live ones, the heap is rebuilt without them, so
a program that keeps scheduling and cancelling does not grow it for ever.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable, List, Tuple

#: Rebuild the heap when more than this many entries, and more than half of them, are stale.
_COMPACT_AT = 1024


class Timer:
    """A call the loop makes once, at `when` (on `time.monotonic`'s clock), unless cancelled first."""

    __slots__ = ("_callback", "_cancelled", "_heap", "_queued", "_user", "when")

    def __init__(self, heap: TimerHeap, when: float, callback: Callable[[], object], user: bool) -> None:
        #: When the call is due, on `time.monotonic`'s clock.
        self.when = when
        self._callback: Callable[[], object] | None = callback
        self._heap = heap
        # A user's callback is logged when it raises; the loop's own are not expected to.
        self._user = user
        self._cancelled = False
        self._queued = False  # in the heap now

    def cancel(self) -> None:
        """Stop the call if it has not happened yet; safe from any thread, no error if it already ran."""
        if self._callback is not None:
            self._callback = None
            self._cancelled = True
            if self._queued:
                # Only counts toward rebuilding the heap: an increment lost to a race costs nothing.
                self._heap._stale += 1

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` stopped the timer before it ran."""
        return self._cancelled

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else " done" if self._callback is None else ""
        return f"<evio.Timer when={self.when:.3f}{state}>"


class TimerHeap:
    """Timers ordered by `when`; used by the loop's thread only."""

    __slots__ = ("_entries", "_seq", "_stale")

    def __init__(self) -> None:
        # (when, sequence, timer): the sequence keeps equal times in order and never compares timers.
        self._entries: List[Tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._stale = 0

    def call_at(self, when: float, callback: Callable[[], object], *, user: bool = False) -> Timer:
        """A new timer for `callback` at `when`, already scheduled."""
        timer = Timer(self, when, callback, user)
        self.push(timer)
        return timer

    def push(self, timer: Timer) -> None:
        """Schedule a timer made elsewhere (by another thread, through the loop's inbox)."""
        if timer._callback is None:
            return
        if self._stale > _COMPACT_AT and self._stale * 2 > len(self._entries):
            self._compact()
        timer._queued = True
        heapq.heappush(self._entries, (timer.when, next(self._seq), timer))

    def next_due(self) -> float | None:
        """When the earliest live timer is due, or `None` when there is none."""
        entries = self._entries
        while entries:
            when, _, timer = entries[0]
            if timer._callback is not None:
                return when
            heapq.heappop(entries)[2]._queued = False
            self._stale -= 1
        return None

    def pop_due(self, now: float) -> list[Timer]:
        """Remove and return, in order, the timers due at `now` that are live (the caller runs them)."""
        entries = self._entries
        due: list[Timer] = []
        while entries and entries[0][0] <= now:
            timer = heapq.heappop(entries)[2]
            timer._queued = False
            if timer._callback is None:
                self._stale -= 1
            else:
                due.append(timer)
        return due

    def _compact(self) -> None:
        for entry in self._entries:
            entry[2]._queued = entry[2]._callback is not None
        self._entries = [e for e in self._entries if e[2]._callback is not None]
        heapq.heapify(self._entries)
        self._stale = 0

    def __len__(self) -> int:
        """Entries held, stale ones included."""
        return len(self._entries)
