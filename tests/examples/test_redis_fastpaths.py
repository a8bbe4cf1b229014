"""The Redis clone's fast paths (GET, SET and PING run in the dispatch loop) answer as the handlers do.

Each test feeds the same commands spelt so that they take the fast path
(`SET`, `set`) and spelt so that they do not (`Set`, which only the table's
case-folding lookup finds), and checks both replies, both keyspaces and
that the path meant really ran: the handler for SET is counted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from redisclone import AppendOnlyFile, Database, RedisProtocol, make_reader
from redisclone.aof import encode_command
from redisclone.commands import Commands

Command = List[bytes]


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> Dict[bytes, int]:
    """How many times the table's GET, SET and PING handlers ran (the fast path calls none of them)."""
    counts: Dict[bytes, int] = {b"GET": 0, b"SET": 0, b"PING": 0}
    for name in counts:
        real: Callable[[Commands, Command], bytes] = getattr(Commands, "cmd_" + name.decode().lower())

        def counted(
            self: Commands, args: Command, real: Callable[[Commands, Command], bytes] = real, name: bytes = name
        ) -> bytes:
            counts[name] += 1
            return real(self, args)

        monkeypatch.setattr(Commands, "cmd_" + name.decode().lower(), counted)
    return counts


def run(packets: List[bytes], db: Database | None = None) -> Tuple[bytes, Dict[bytes, bytes], set[bytes]]:
    """Feed `packets` to a fresh connection: its replies, and what the keyspace holds after."""
    db = db or Database()
    conn = RedisProtocol(db, make_reader(pure=True))
    replies = b"".join(conn.feed(p) for p in packets)
    return replies, dict(db.keyspace.data), set(db.keyspace.expires)


def spelt(commands: List[Command], name: Callable[[bytes], bytes]) -> bytes:
    return b"".join(encode_command([name(c[0]), *c[1:]]) for c in commands)


PIPELINE: List[Command] = [
    [b"SET", b"a", b"1"],
    [b"GET", b"a"],
    [b"GET", b"missing"],
    [b"PING"],
    [b"SET", b"a", b"x" * 5000],  # a reply header past the table of small lengths
    [b"GET", b"a"],
    [b"SET", b"b", b""],
    [b"GET", b"b"],
]


@pytest.mark.parametrize("fast", [bytes.upper, bytes.lower], ids=["upper", "lower"])
def test_the_fast_path_answers_as_the_handlers(handled: Dict[bytes, int], fast: Callable[[bytes], bytes]) -> None:
    quick = run([spelt(PIPELINE, fast)])
    assert handled == {b"GET": 0, b"SET": 0, b"PING": 0}  # none of the handlers ran: the fast path did
    slow = run([spelt(PIPELINE, bytes.title)])
    assert handled[b"SET"] == 3 and handled[b"GET"] == 4 and handled[b"PING"] == 1
    assert quick == slow
    assert quick[0].startswith(b"+OK\r\n$1\r\n1\r\n$-1\r\n+PONG\r\n+OK\r\n$5000\r\n")


def test_set_on_the_fast_path_drops_a_deadline(handled: Dict[bytes, int]) -> None:
    replies, data, expires = run([b"set a 1 ex 100\r\n", b"SET a 2\r\n", b"TTL a\r\n"])
    assert handled[b"SET"] == 1  # the one with options; the plain SET took the fast path
    assert replies == b"+OK\r\n+OK\r\n:-1\r\n" and data == {b"a": b"2"} and expires == set()


def test_get_on_the_fast_path_sees_a_deadline_passed(handled: Dict[bytes, int]) -> None:
    db = Database()
    run([b"set a 1 px 1\r\n"], db)
    time.sleep(0.01)  # the deadline, 1 ms, is surely past after 10 ms
    replies, _, _ = run([encode_command([b"GET", b"a"])], db)
    assert handled[b"GET"] == 0
    assert replies == b"$-1\r\n"


def test_a_flush_inside_a_packet_is_seen_by_the_fast_path_after_it(handled: Dict[bytes, int]) -> None:
    """FLUSHALL replaces the keyspace's tables: what follows in the same packet must use the new ones."""
    packet = b"SET a 1\r\nFLUSHALL\r\nSET b 2\r\nGET a\r\nGET b\r\n"
    replies, data, _ = run([packet])
    assert replies == b"+OK\r\n+OK\r\n+OK\r\n$-1\r\n$1\r\n2\r\n"
    assert data == {b"b": b"2"}
    assert handled == {b"GET": 0, b"SET": 0, b"PING": 0}


def test_inside_multi_gets_and_sets_are_queued_not_run(handled: Dict[bytes, int]) -> None:
    replies, data, _ = run([b"MULTI\r\nSET a 1\r\nGET a\r\nPING\r\nEXEC\r\nGET a\r\n"])
    assert replies == b"+OK\r\n" + b"+QUEUED\r\n" * 3 + b"*3\r\n+OK\r\n$1\r\n1\r\n+PONG\r\n" + b"$1\r\n1\r\n"
    assert data == {b"a": b"1"}
    assert handled == {b"GET": 1, b"SET": 1, b"PING": 1}  # EXEC ran the queued ones through the table


def test_after_hello_3_in_the_same_packet_a_missing_key_is_resp3_null(handled: Dict[bytes, int]) -> None:
    hello3 = run([b"HELLO 3\r\n"])[0]
    hello2 = run([b"HELLO 3\r\nHELLO 2\r\n"])[0][len(hello3) :]
    replies, _, _ = run([b"GET a\r\nHELLO 3\r\nGET a\r\nHELLO 2\r\nGET a\r\n"])
    assert replies == b"$-1\r\n" + hello3 + b"_\r\n" + hello2 + b"$-1\r\n"
    assert handled[b"GET"] == 0


def test_sets_on_the_fast_path_are_logged_as_sent_and_replayed(tmp_path: Path, handled: Dict[bytes, int]) -> None:
    path = tmp_path / "a.aof"
    db = Database(AppendOnlyFile(str(path)))
    db.load()
    big = bytes(range(256)) * 400  # any bytes, CR and LF among them, longer than a packet
    assert run([b"set a 1\r\n" + encode_command([b"SET", b"big", big])], db)[0] == b"+OK\r\n+OK\r\n"
    assert handled[b"SET"] == 0
    assert db.aof is not None
    db.aof.close()
    assert path.read_bytes() == encode_command([b"set", b"a", b"1"]) + encode_command([b"SET", b"big", big])
    again = Database(AppendOnlyFile(str(path)))
    again.load()
    assert dict(again.keyspace.data) == {b"a": b"1", b"big": big}
    assert again.aof is not None
    again.aof.close()
