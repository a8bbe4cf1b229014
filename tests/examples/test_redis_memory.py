"""The Redis clone hands freed memory back to the system: `MEMORY PURGE`, and a purging thread.

glibc's malloc keeps freed blocks in its heap while a block in use sits
above them; without a purge, the clone's resident memory after a burst of
big writes stays near the burst's peak (the soak, bench/soak.py, saw 220 MiB
more after every round of 10,000 clients).
"""

from __future__ import annotations

import platform
import threading
from pathlib import Path

import pytest
from redisclone import Database, RedisProtocol, make_reader, memory
from support import REDIS_SERVER, Processes, RedisClone, RedisServer, ask, clone_argv, needs_redis, wait_for

GLIBC = platform.libc_ver()[0] == "glibc"


def heap_rss_kib() -> int:
    """Resident KiB of this process's brk heap: where glibc's malloc keeps blocks below its mmap threshold."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.endswith("[heap]"):
            for field in lines[i + 1 :]:
                if field.startswith("Rss:"):
                    return int(field.split()[1])
    return 0


def test_memory_purge_and_its_errors_are_redis_words() -> None:
    conn = RedisProtocol(Database(), make_reader(pure=True))
    assert conn.feed(b"MEMORY PURGE\r\n") == b"+OK\r\n"
    assert conn.feed(b"memory purge\r\n") == b"+OK\r\n"
    assert conn.feed(b"MEMORY FOO\r\n") == b"-ERR unknown subcommand 'FOO'. Try MEMORY HELP.\r\n"
    assert conn.feed(b"MEMORY\r\n") == b"-ERR wrong number of arguments for 'memory' command\r\n"


@needs_redis
def test_memory_purge_answers_as_redis_server(processes: Processes, tmp_path: Path) -> None:
    assert REDIS_SERVER is not None
    clone = processes.add(RedisClone(clone_argv()))
    redis = processes.add(RedisServer([], tmp_path))
    for request in (b"MEMORY PURGE\r\n", b"MEMORY FOO\r\n"):
        assert ask(clone, request) == ask(redis, request), request


@pytest.mark.skipif(
    not GLIBC or platform.python_implementation() != "CPython", reason="glibc's heap, as CPython uses it"
)
def test_a_purge_hands_freed_heap_pages_back() -> None:
    # 800 blocks of 100 KB (below glibc's mmap threshold, so in the heap) and every other one freed: each
    # freed block lies between two that stay, so none can be trimmed off the heap's top, as after a burst.
    blocks = [bytes(100_000) + bytes([i % 256]) for i in range(800)]
    pins = blocks[1::2]
    full = heap_rss_kib()
    del blocks
    kept = heap_rss_kib()
    assert full - kept < 20_000, (full, kept)  # without a purge the allocator keeps them: the case to fix
    assert memory.purge()
    purged = heap_rss_kib()
    assert kept - purged > 20_000, (full, kept, purged)  # most of the 40 MB freed went back to the system
    assert len(pins) == 400


def test_the_purger_thread_runs_and_stops() -> None:
    purger = memory.Purger(interval=0.01)
    started = purger.start()
    assert started == GLIBC  # no thread where the C library cannot purge
    if started:
        wait_for(lambda: purger.purges >= 2, "the purger purging, again and again")
        assert [t for t in threading.enumerate() if t.name == "memory-purge"]
    purger.stop()
    assert not [t for t in threading.enumerate() if t.name == "memory-purge"]
