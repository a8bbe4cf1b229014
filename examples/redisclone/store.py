"""The keyspace: string values by key, with expiry times, lazy expiry and a bounded sweep."""

from __future__ import annotations

import heapq
import re
import time
from typing import Any, Dict, Iterator, List, Pattern, Sequence, Tuple


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: what expiry times are stored in."""
    return int(time.time() * 1000)


class Keyspace:
    """One database: `data` maps keys to values, `expires` maps volatile keys to their deadline.

    Deadlines are absolute (ms since the epoch), as the AOF records them. A key
    whose deadline passed is gone for every reader (`alive` checks), and the
    periodic `sweep` deletes such keys no one asks for. The sweep finds them in
    a heap of (deadline, key) entries; an entry whose key got another deadline
    since is stale and skipped, and the heap is rebuilt when stale entries
    outnumber live ones.

    While `journal` is a list, `save` and `flush` record there what they
    change, and `undo` puts it back: how a write command whose AOF record
    could not be written is taken back.
    """

    __slots__ = ("_heap", "data", "expires", "journal")

    def __init__(self) -> None:
        self.data: Dict[bytes, bytes] = {}
        self.expires: Dict[bytes, int] = {}
        self._heap: List[Tuple[int, bytes]] = []
        #: What the writes since the last commit changed, newest last, or None when nothing is recorded.
        self.journal: List[Tuple[Any, ...]] | None = None

    def __len__(self) -> int:
        return len(self.data)

    def alive(self, key: bytes) -> bool:
        """Whether `key` exists; deletes it when its deadline has passed."""
        if key not in self.data:
            return False
        when = self.expires.get(key)
        if when is not None and when <= now_ms():
            self.delete(key)
            return False
        return True

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`, or None when it is missing or expired."""
        value = self.data.get(key)
        if value is not None and self.expires and key in self.expires and not self.alive(key):
            return None
        return value

    def delete(self, key: bytes) -> bool:
        """Remove `key`; True when it was there (expired or not)."""
        if self.data.pop(key, None) is None:
            return False
        self.expires.pop(key, None)
        return True

    def expire_at(self, key: bytes, when: int) -> None:
        """Give the existing `key` the deadline `when` (ms since the epoch)."""
        self.expires[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if len(heap) > 2 * len(self.expires) + 1024:
            self._heap = [(w, k) for k, w in self.expires.items()]
            heapq.heapify(self._heap)

    def persist(self, key: bytes) -> bool:
        """Drop the deadline of `key`; True when it had one."""
        return self.expires.pop(key, None) is not None

    def flush(self) -> None:
        """Remove every key: new, empty tables (so the journal can keep the old ones at no cost)."""
        if self.journal is not None:
            self.journal.append((_FLUSHED, self.data, self.expires, self._heap))
        self.data = {}
        self.expires = {}
        self._heap = []

    def save(self, keys: Sequence[bytes]) -> None:
        """Record in the journal what `keys` hold now (value and deadline), before a write changes them."""
        journal = self.journal
        if journal is not None:
            data, expires = self.data, self.expires
            for key in keys:
                journal.append((key, data.get(key), expires.get(key)))

    def undo(self) -> None:
        """Put back what the journal recorded, newest first, and empty it."""
        journal = self.journal
        if not journal:
            return
        for entry in reversed(journal):
            if entry[0] is _FLUSHED:
                self.data, self.expires, self._heap = entry[1], entry[2], entry[3]
                continue
            key, value, when = entry
            if value is None:
                self.data.pop(key, None)
                self.expires.pop(key, None)
                continue
            self.data[key] = value
            if when is None:
                self.expires.pop(key, None)
            elif self.expires.get(key) != when:
                self.expire_at(key, when)
        journal.clear()

    def records(self, batch: int = 64) -> Iterator[List[bytes]]:
        """The live keys as commands that rebuild them: MSET for keys without a deadline, SET PXAT for the rest."""
        now = now_ms()
        expires = self.expires
        plain: List[bytes] = [b"MSET"]
        for key, value in self.data.items():
            when = expires.get(key)
            if when is None:
                plain += (key, value)
                if len(plain) > 2 * batch:
                    yield plain
                    plain = [b"MSET"]
            elif when > now:
                yield [b"SET", key, value, b"PXAT", b"%d" % when]
        if len(plain) > 1:
            yield plain

    def sweep(self, limit: int) -> int:
        """Delete keys whose deadline passed, at most `limit` heap entries looked at; returns how many."""
        heap, expires, data = self._heap, self.expires, self.data
        now = now_ms()
        deleted = 0
        while heap and limit > 0 and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            limit -= 1
            if expires.get(key) == when:
                del expires[key]
                del data[key]
                deleted += 1
        return deleted

    def keys(self, pattern: bytes) -> List[bytes]:
        """Live keys matching the glob-style `pattern`, as Redis's KEYS matches them."""
        now = now_ms()
        expires = self.expires
        if pattern == b"*":
            candidates = list(self.data)
        else:
            match = glob_to_regex(pattern).match
            candidates = [k for k in self.data if match(k)]
        if not expires:
            return candidates
        return [k for k in candidates if expires.get(k, now + 1) > now]


#: Marks a journal entry that holds the tables a FLUSHDB or FLUSHALL replaced.
_FLUSHED = object()

_glob_cache: Dict[bytes, Pattern[bytes]] = {}


def glob_to_regex(pattern: bytes) -> Pattern[bytes]:
    """Compile a Redis glob (`*`, `?`, `[a-z]`, `[^a]`, `\\x`) to a regex matching whole keys."""
    compiled = _glob_cache.get(pattern)
    if compiled is not None:
        return compiled
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i + 1 < n:
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif c == b"[":
            j = i + 1
            negate = j < n and pattern[j : j + 1] == b"^"
            if negate:
                j += 1
            members = bytearray()
            while j < n and pattern[j : j + 1] != b"]":
                if pattern[j : j + 1] == b"\\" and j + 1 < n:
                    j += 1
                    members += re.escape(pattern[j : j + 1])
                elif pattern[j + 1 : j + 2] == b"-" and j + 2 < n and pattern[j + 2 : j + 3] != b"]":
                    lo, hi = sorted((pattern[j], pattern[j + 2]))
                    members += re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi]))
                    j += 2
                else:
                    members += re.escape(pattern[j : j + 1])
                j += 1
            # Redis treats an unclosed '[' as running to the pattern's end.
            if members:
                out += b"[" + (b"^" if negate else b"") + bytes(members) + b"]"
            else:  # "[]" matches nothing, "[^]" anything
                out += b"[\\s\\S]" if negate else b"[^\\s\\S]"
            i = j
        else:
            out += re.escape(c)
        i += 1
    compiled = re.compile(bytes(out) + b"\\Z", re.DOTALL)
    if len(_glob_cache) < 256:
        _glob_cache[pattern] = compiled
    return compiled
