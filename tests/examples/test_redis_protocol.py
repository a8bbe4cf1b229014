"""The Redis clone's sans-I/O parts without a network: the protocol object, the keyspace, the AOF.

Expected replies were taken from a real redis-server 7.0 on loopback, byte
for byte, except where this server says otherwise on purpose (one database,
the version it reports).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redisclone import CLOSE, KEEP, SHUTDOWN, AOFError, AppendOnlyFile, Database, RedisProtocol, make_reader
from redisclone import aof as aof_module
from redisclone.aof import encode_command
from redisclone.resp import HAVE_HIREDIS, HiredisReader, PureReader
from redisclone.store import Keyspace, glob_to_regex, now_ms
from support import WAIT

Factory = Callable[..., RedisProtocol]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test closes the AOFs it opens: no fsync thread and no descriptor outlives it."""
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    yield
    assert not [t for t in threading.enumerate() if t.name == "aof-fsync"], "an AOF was left open"
    if before:
        assert set(os.listdir("/proc/self/fd")) <= before | {"0", "1", "2"}, "a descriptor was left open"


@pytest.fixture(params=["hiredis", "pure"])
def connect(request: pytest.FixtureRequest) -> Factory:
    """Make protocol objects (connections) on one shared database, with the reader under test."""
    pure = request.param == "pure"
    if not pure and not HAVE_HIREDIS:
        pytest.skip("hiredis is not installed")
    db = Database()

    def make(database: Database | None = None) -> RedisProtocol:
        return RedisProtocol(database or db, PureReader() if pure else HiredisReader(small_packet=0))

    return make


# (request, reply) as redis-server 7.0.15 gave them.
EXCHANGES = [
    (b"FOO a b\r\n", b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"),
    (b"foo\r\n", b"-ERR unknown command 'foo', with args beginning with: \r\n"),
    (b"*1\r\n$0\r\n\r\n", b"-ERR unknown command '', with args beginning with: \r\n"),
    (b"get\r\n", b"-ERR wrong number of arguments for 'get' command\r\n"),
    (b"GET a b\r\n", b"-ERR wrong number of arguments for 'get' command\r\n"),
    (b"set k v xx nx\r\n", b"-ERR syntax error\r\n"),
    (b"set k v ex 0\r\n", b"-ERR invalid expire time in 'set' command\r\n"),
    (b"set k v ex -1\r\n", b"-ERR invalid expire time in 'set' command\r\n"),
    (b"set k v ex abc\r\n", b"-ERR value is not an integer or out of range\r\n"),
    (b"set k v px 1 ex 2\r\n", b"-ERR syntax error\r\n"),
    (b"set k v get\r\n", b"$-1\r\n"),
    (b"set n 01\r\nincr n\r\n", b"+OK\r\n-ERR value is not an integer or out of range\r\n"),
    (b"set n 9223372036854775807\r\nincr n\r\n", b"+OK\r\n-ERR increment or decrement would overflow\r\n"),
    (b"incrby n abc\r\n", b"-ERR value is not an integer or out of range\r\n"),
    (b"ping a b\r\n", b"-ERR wrong number of arguments for 'ping' command\r\n"),
    (b"echo\r\n", b"-ERR wrong number of arguments for 'echo' command\r\n"),
    (
        b"select 0\r\nselect x\r\nselect 16\r\n",
        b"+OK\r\n-ERR value is not an integer or out of range\r\n-ERR DB index is out of range\r\n",
    ),
    (
        b"set k v\r\nexpire k x\r\nexpire k 10 nx\r\nexpire nokey 10\r\nttl nokey\r\nset k v\r\nttl k\r\n",
        b"+OK\r\n-ERR value is not an integer or out of range\r\n:1\r\n:0\r\n:-2\r\n+OK\r\n:-1\r\n",
    ),
    (b"hello x\r\n", b"-ERR Protocol version is not an integer or out of range\r\n"),
    (b"hello 4\r\n", b"-NOPROTO unsupported protocol version\r\n"),
    (
        b"client setname a b\r\nclient setname\r\nclient setname foo\r\nclient getname\r\nclient foo\r\n",
        b"-ERR wrong number of arguments for 'client|setname' command\r\n"
        b"-ERR wrong number of arguments for 'client|setname' command\r\n+OK\r\n$3\r\nfoo\r\n"
        b"-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
    ),
    (
        b"config get maxmemory\r\nconfig get save\r\nconfig get appendonly\r\nconfig get nonexist\r\nconfig get\r\n",
        b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        b"*0\r\n-ERR wrong number of arguments for 'config|get' command\r\n",
    ),
    (b"dbsize x\r\n", b"-ERR wrong number of arguments for 'dbsize' command\r\n"),
    (b"keys\r\n", b"-ERR wrong number of arguments for 'keys' command\r\n"),
    (
        b"mset a\r\nmset a 1 b\r\nmget\r\n",
        b"-ERR wrong number of arguments for 'mset' command\r\n-ERR wrong number of arguments for 'mset' command\r\n"
        b"-ERR wrong number of arguments for 'mget' command\r\n",
    ),
    (b"flushdb async\r\nflushdb x\r\nflushall sync\r\n", b"+OK\r\n-ERR syntax error\r\n+OK\r\n"),
    (
        b"del\r\nexists\r\n",
        b"-ERR wrong number of arguments for 'del' command\r\n-ERR wrong number of arguments for 'exists' command\r\n",
    ),
    (b"   \r\n\r\nPING\n", b"+PONG\r\n"),
    (b"*-1\r\n*0\r\nPING\r\n", b"+PONG\r\n"),
    (b"incr\r\n", b"-ERR wrong number of arguments for 'incr' command\r\n"),
    (b"decrby n 1\r\nincrby n 9223372036854775807\r\n", b":-1\r\n:9223372036854775806\r\n"),
    (b"set f 1.5\r\nincr f\r\n", b"+OK\r\n-ERR value is not an integer or out of range\r\n"),
    (
        b"ttl\r\nexpire k\r\n",
        b"-ERR wrong number of arguments for 'ttl' command\r\n-ERR wrong number of arguments for 'expire' command\r\n",
    ),
    (b"echo a b\r\n", b"-ERR wrong number of arguments for 'echo' command\r\n"),
    (b"exists a a a\r\n", b":0\r\n"),
    (b"set k v ex 99999999999999999\r\n", b"-ERR invalid expire time in 'set' command\r\n"),
    (b"set k v px 9223372036854775807\r\n", b"-ERR invalid expire time in 'set' command\r\n"),
    (b"set k v EX 10 KEEPTTL\r\n", b"-ERR syntax error\r\n"),
    (b"set k v PXAT 1\r\nget k\r\n", b"+OK\r\n$-1\r\n"),
    (
        b"multi\r\nset a 1\r\nget a\r\nincr a\r\nexec\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n$1\r\n1\r\n:2\r\n",
    ),
    (b"exec\r\ndiscard\r\n", b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n"),
    (b"multi\r\nmulti\r\ndiscard\r\n", b"+OK\r\n-ERR MULTI calls can not be nested\r\n+OK\r\n"),
    (
        b"multi\r\nget\r\nset a 2\r\nexec\r\nget a\r\n",
        b"+OK\r\n-ERR wrong number of arguments for 'get' command\r\n+QUEUED\r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n",
    ),
    (
        b"multi\r\nnope\r\nexec\r\n",
        b"+OK\r\n-ERR unknown command 'nope', with args beginning with: \r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    ),
    (
        b"multi\r\nset s x\r\nincr s\r\nexec\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n",
    ),
    (b"multi\r\nexec\r\n", b"+OK\r\n*0\r\n"),
    (b"multi\r\nselect 0\r\nexec\r\n", b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"),
    (b"multi\r\nwatch a\r\nexec\r\n", b"+OK\r\n-ERR WATCH inside MULTI is not allowed\r\n*0\r\n"),
    (
        b"setex k 0 v\r\nsetex k x v\r\nsetex k 10 v\r\nttl k\r\npsetex k -1 v\r\nsetnx k v\r\nsetnx n v\r\n",
        b"-ERR invalid expire time in 'setex' command\r\n-ERR value is not an integer or out of range\r\n+OK\r\n"
        b":10\r\n-ERR invalid expire time in 'psetex' command\r\n:0\r\n:1\r\n",
    ),
    (
        b"set k v\r\ngetset k w\r\ngetdel nokey\r\nappend k abc\r\nstrlen k\r\nstrlen nokey\r\nunlink k nokey\r\n",
        b"+OK\r\n$1\r\nv\r\n$-1\r\n:4\r\n:4\r\n:0\r\n:1\r\n",
    ),
    (
        b"setnx\r\nsetex k 1\r\nappend k\r\n",
        b"-ERR wrong number of arguments for 'setnx' command\r\n-ERR wrong number of arguments for 'setex' command\r\n"
        b"-ERR wrong number of arguments for 'append' command\r\n",
    ),
    (b"set k v\r\ngetdel k\r\nexists k\r\n", b"+OK\r\n$1\r\nv\r\n:0\r\n"),
    (b"command count x\r\n", b"-ERR wrong number of arguments for 'command|count' command\r\n"),
    (b"command nope\r\n", b"-ERR unknown subcommand 'nope'. Try COMMAND HELP.\r\n"),
    (b"config nope\r\n", b"-ERR unknown subcommand 'nope'. Try CONFIG HELP.\r\n"),
]


@pytest.mark.parametrize(("request_bytes", "reply"), EXCHANGES)
def test_replies_match_redis(connect: Factory, request_bytes: bytes, reply: bytes) -> None:
    conn = connect()
    assert conn.feed(request_bytes) == reply
    assert conn.verdict == KEEP


def test_unknown_command_quotes_at_most_128_characters(connect: Factory) -> None:
    reply = connect().feed(encode_command([b"NOPE", b"a" * 100, b"b" * 100, b"c"]))
    assert (
        reply
        == b"-ERR unknown command 'NOPE', with args beginning with: '" + b"a" * 100 + b"' '" + b"b" * 25 + b"' \r\n"
    )


def test_errors_never_hold_a_line_break(connect: Factory) -> None:
    assert connect().feed(encode_command([b"x\r\ny", b"1\n2"])) == (
        b"-ERR unknown command 'x  y', with args beginning with: '1 2' \r\n"
    )


def test_strings(connect: Factory) -> None:
    c = connect()
    assert c.feed(encode_command([b"SET", b"k", b"v\r\n\x00\xff"])) == b"+OK\r\n"
    assert c.feed(encode_command([b"GET", b"k"])) == b"$5\r\nv\r\n\x00\xff\r\n"
    assert c.feed(b"set k 2 nx\r\nset k 2 xx\r\nset nokey 1 xx\r\nget nokey\r\n") == b"$-1\r\n+OK\r\n$-1\r\n$-1\r\n"
    assert c.feed(b"set k 3 get\r\nset new 1 nx get\r\nget new\r\n") == b"$1\r\n2\r\n$-1\r\n$1\r\n1\r\n"
    assert (
        c.feed(b"incr k\r\ndecr k\r\nincrby k 10\r\ndecrby k 20\r\nget k\r\n")
        == b":4\r\n:3\r\n:13\r\n:-7\r\n$2\r\n-7\r\n"
    )
    assert c.feed(b"mset a 1 b 2\r\nmget a nokey b\r\n") == b"+OK\r\n*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
    assert c.feed(b"type a\r\ntype nokey\r\n") == b"+string\r\n+none\r\n"
    assert c.feed(b"exists a b nokey a\r\ndel a nokey\r\nexists a\r\ndbsize\r\n") == b":3\r\n:1\r\n:0\r\n:3\r\n"
    assert c.feed(b"ping\r\nping hi\r\necho there\r\n") == b"+PONG\r\n$2\r\nhi\r\n$5\r\nthere\r\n"
    big = b"x" * 5000
    assert (
        c.feed(encode_command([b"SET", b"big", big]) + encode_command([b"GET", b"big"]))
        == b"+OK\r\n$5000\r\n" + big + b"\r\n"
    )


def test_command_names_in_any_case(connect: Factory) -> None:
    assert connect().feed(b"SET k 1\r\nset k 2\r\nSeT k 3\r\ngEt k\r\nCLIENT ID\r\nclient id\r\n") == (
        b"+OK\r\n+OK\r\n+OK\r\n$1\r\n3\r\n:1\r\n:1\r\n"
    )


def test_keys_glob(connect: Factory) -> None:
    c = connect()
    c.feed(b"mset hello 1 hallo 1 hxllo 1 hllo 1 heeeello 1 h*llo 1 other 1\r\n")

    def keys(pattern: bytes) -> List[bytes]:
        reply = c.feed(encode_command([b"KEYS", pattern]))
        return sorted(reply.split(b"\r\n")[2::2])

    assert keys(b"h?llo") == [b"h*llo", b"hallo", b"hello", b"hxllo"]
    assert keys(b"h*llo") == [b"h*llo", b"hallo", b"heeeello", b"hello", b"hllo", b"hxllo"]
    assert keys(b"h[ae]llo") == [b"hallo", b"hello"]
    assert keys(b"h[^e]llo") == [b"h*llo", b"hallo", b"hxllo"]
    assert keys(b"h[a-b]llo") == [b"hallo"]
    assert keys(b"h\\*llo") == [b"h*llo"]
    assert len(keys(b"*")) == 7
    assert glob_to_regex(b"[]").match(b"a") is None


def test_expiry(connect: Factory) -> None:
    c = connect()
    assert c.feed(b"set k v ex 100\r\nttl k\r\n") == b"+OK\r\n:100\r\n"
    assert c.feed(b"set k v\r\nttl k\r\n") == b"+OK\r\n:-1\r\n"  # SET drops the old deadline
    assert c.feed(b"expire k 50\r\npersist k\r\npersist k\r\nttl k\r\n") == b":1\r\n:1\r\n:0\r\n:-1\r\n"
    assert (
        c.feed(b"expire k 50 xx\r\nexpire k 100 nx\r\nexpire k 60 gt\r\nexpire k 70 lt\r\n")
        == b":0\r\n:1\r\n:0\r\n:1\r\n"
    )
    assert (
        c.feed(b"expire k 1 nx xx\r\n") == b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
    )
    assert c.feed(b"expire k 1 gt lt\r\n") == b"-ERR GT and LT options at the same time are not compatible\r\n"
    assert c.feed(b"expire k 1 foo\r\n") == b"-ERR Unsupported option foo\r\n"
    assert c.feed(b"pexpire k 5000\r\npttl k\r\n").startswith(b":1\r\n:")
    at = now_ms() // 1000 + 100
    assert c.feed(b"expireat k %d\r\nttl k\r\n" % at) in (b":1\r\n:100\r\n", b":1\r\n:99\r\n")
    assert c.feed(b"set gone v px 1\r\n") == b"+OK\r\n"
    time.sleep(0.01)
    assert c.feed(b"get gone\r\nexists gone\r\nttl gone\r\n") == b"$-1\r\n:0\r\n:-2\r\n"
    assert c.feed(b"set old v\r\nexpire old -1\r\nget old\r\n") == b"+OK\r\n:1\r\n$-1\r\n"  # a past deadline deletes
    assert c.feed(b"set k v exat 1\r\nget k\r\n") == b"+OK\r\n$-1\r\n"


def test_sweep_deletes_expired_keys_with_bounded_work() -> None:
    ks = Keyspace()
    past = now_ms() - 1000
    for i in range(500):
        ks.data[b"k%d" % i] = b"v"
        ks.expire_at(b"k%d" % i, past)
    ks.data[b"live"] = b"v"
    ks.expire_at(b"live", now_ms() + 100_000)
    ks.data[b"forever"] = b"v"
    assert ks.sweep(200) == 200
    assert len(ks) == 302
    assert ks.sweep(1000) == 300
    assert sorted(ks.data) == [b"forever", b"live"]
    assert ks.sweep(1000) == 0


def test_sweep_skips_stale_deadlines() -> None:
    ks = Keyspace()
    ks.data[b"k"] = b"v"
    ks.expire_at(b"k", now_ms() - 10)
    ks.expire_at(b"k", now_ms() + 100_000)  # a newer deadline: the first entry is stale
    assert ks.sweep(10) == 0
    assert ks.alive(b"k")


def test_database_tick_sweeps() -> None:
    db = Database()
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"set a 1 px 1\r\nset b 1\r\n")
    time.sleep(0.01)
    db.tick()
    assert list(db.keyspace.data) == [b"b"]


def test_hello_switches_to_resp3_and_back(connect: Factory) -> None:
    c = connect()
    reply = c.feed(b"hello 3\r\n")
    assert reply.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in reply
    assert c.resp == 3
    # In RESP3, nulls and maps are spelt differently; everything else is the same.
    assert c.feed(b"get nokey\r\nmget nokey\r\nconfig get save\r\nclient getname\r\n") == (
        b"_\r\n*1\r\n_\r\n%1\r\n$4\r\nsave\r\n$0\r\n\r\n_\r\n"
    )
    assert c.feed(b"hello 2\r\nget nokey\r\n").endswith(b"$-1\r\n")
    assert c.feed(b"hello 3 setname app\r\nclient getname\r\n").endswith(b"$3\r\napp\r\n")
    assert (
        c.feed(b"hello 3 auth someone pw\r\n") == b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    )
    assert c.feed(b"hello 3 auth default pw\r\n").startswith(b"%7\r\n")


def test_hello_then_more_commands_in_one_packet(connect: Factory) -> None:
    assert connect().feed(b"hello 3\r\nget nokey\r\n").endswith(b"*0\r\n_\r\n")


def test_client_commands(connect: Factory) -> None:
    c = connect()
    assert c.feed(b"client setinfo lib-name redis-py\r\nclient setinfo LIB-VER 5.0\r\n") == b"+OK\r\n+OK\r\n"
    assert c.feed(b"client setinfo foo bar\r\n") == b"-ERR Unrecognized option 'foo'\r\n"
    assert c.feed(b'client setname "a b"\r\n') == (
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    )
    assert b"lib-name=redis-py lib-ver=5.0" in c.feed(b"client info\r\n")
    assert c.feed(b"client no-evict on\r\n") == b"+OK\r\n"
    other = connect()
    assert c.feed(b"client id\r\n") != other.feed(b"client id\r\n")


def test_command_info_and_docs(connect: Factory) -> None:
    c = connect()
    reply = c.feed(b"command info get nope\r\n")
    assert reply.startswith(b"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n")
    assert reply.endswith(b"*-1\r\n")
    assert c.feed(b"command docs\r\n") == b"*0\r\n"
    assert c.feed(b"command\r\n").startswith(b"*%d\r\n" % int(c.feed(b"command count\r\n")[1:-2]))


def test_info(connect: Factory) -> None:
    c = connect()
    c.feed(b"set a 1\r\n")
    reply = c.feed(b"info\r\n")
    assert b"# Server\r\nredis_version:" in reply and b"db0:keys=1,expires=0" in reply
    assert b"connected_clients:1" in reply
    assert b"# Server" not in c.feed(b"info keyspace\r\n")


def test_quit_answers_then_closes_and_runs_nothing_after(connect: Factory) -> None:
    c = connect()
    assert c.feed(b"set a 1\r\nquit\r\nset a 2\r\n") == b"+OK\r\n+OK\r\n"
    assert c.verdict == CLOSE
    assert connect().feed(b"get a\r\n") == b"$1\r\n1\r\n"


def test_a_transaction_runs_nothing_until_exec(connect: Factory) -> None:
    c, other = connect(), connect()
    assert c.feed(b"multi\r\nset t 1\r\nhello 3\r\n") == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n"
    assert other.feed(b"get t\r\n") == b"$-1\r\n"
    assert c.feed(b"exec\r\nget nokey\r\n").endswith(b"*0\r\n_\r\n")  # HELLO 3 ran inside it
    assert c.feed(b"multi\r\nset t 2\r\nquit\r\n") == b"+OK\r\n+QUEUED\r\n+OK\r\n"
    assert c.verdict == CLOSE
    assert other.feed(b"get t\r\n") == b"$1\r\n1\r\n"


def test_shutdown_answers_nothing(connect: Factory) -> None:
    c = connect()
    assert c.feed(b"shutdown foo\r\n") == b"-ERR syntax error\r\n"
    assert c.feed(b"ping\r\nshutdown nosave\r\nping\r\n") == b"+PONG\r\n"
    assert c.verdict == SHUTDOWN


def test_a_protocol_error_answers_what_came_before_then_closes(connect: Factory) -> None:
    c = connect()
    assert c.feed(b"set a 1\r\n*1\r\n$x\r\nset a 2\r\n") == b"+OK\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert c.verdict == CLOSE
    assert c.feed(b"ping\r\n") == b""
    other = connect()
    assert other.feed(b"get a\r\n") == b"$1\r\n1\r\n"


def test_connection_count(connect: Factory) -> None:
    db = Database()
    a, b = connect(db), connect(db)
    assert db.clients == 2 and db.connections_received == 2
    a.connection_lost()
    assert db.clients == 1
    b.connection_lost()


# ---- the append-only file -------------------------------------------------------


def _aof_db(path: Path, pure: bool = False) -> Database:
    db = Database(AppendOnlyFile(str(path)))
    db.load()
    return db


def test_aof_logs_writes_not_reads_with_absolute_deadlines(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    before = now_ms()
    c.feed(b"set a 1\r\nget a\r\nset b 2 ex 100\r\nexpire a 50\r\nincr n\r\nset c 3 nx\r\nset c 4 nx\r\n")
    c.feed(b"del nokey\r\ndel c\r\nexpire a -1\r\nmset x 1 y 2\r\npersist b\r\nflushdb\r\n")
    assert db.aof is not None
    db.aof.close()
    entries = []
    rest = path.read_bytes()
    reader = make_reader(pure=True)
    entries = reader.feed(rest)
    names = [e[0] for e in entries]
    assert names == [b"set", b"SET", b"PEXPIREAT", b"incr", b"SET", b"del", b"DEL", b"mset", b"persist", b"flushdb"]
    assert entries[1][:4] == [b"SET", b"b", b"2", b"PXAT"]
    assert before + 100_000 <= int(entries[1][4]) <= now_ms() + 100_000
    assert before + 50_000 <= int(entries[2][2]) <= now_ms() + 50_000


def test_aof_replay_restores_data_and_keeps_deadlines(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"set a 1\r\nset b 2 ex 100\r\nincrby n 5\r\nset gone 1 px 1\r\nmset x 1 y 2\r\ndel y\r\n")
    c.feed(b"setex s 100 v\r\nsetnx t 1\r\ngetset t 2\r\nappend t 3\r\nset u 1\r\ngetdel u\r\nunlink x\r\n")
    assert db.aof is not None
    db.aof.close()
    time.sleep(0.01)
    again = _aof_db(path)
    c2 = RedisProtocol(again, make_reader(pure=True))
    assert c2.feed(b"mget a b n gone x y\r\n") == b"*6\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n5\r\n$-1\r\n$-1\r\n$-1\r\n"
    ttl = c2.feed(b"pttl b\r\n")
    assert 90_000 < int(ttl[1:-2]) <= 100_000
    assert c2.feed(b"mget s t u x\r\n") == b"*4\r\n$1\r\nv\r\n$2\r\n23\r\n$-1\r\n$-1\r\n"
    assert 90_000 < int(c2.feed(b"pttl s\r\n")[1:-2]) <= 100_000
    assert again.aof is not None
    again.aof.close()


def test_aof_torn_tail_is_cut_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.aof"
    whole = encode_command([b"SET", b"a", b"1"]) + encode_command([b"SET", b"b", b"2"])
    torn = encode_command([b"SET", b"c", b"3"])[:-3]
    path.write_bytes(whole + torn)
    with caplog.at_level(logging.WARNING, logger="redisclone"):
        db = _aof_db(path)
    assert dict(db.keyspace.data) == {b"a": b"1", b"b": b"2"}
    assert path.read_bytes() == whole
    assert any("incomplete" in r.getMessage() and str(len(whole)) in r.getMessage() for r in caplog.records)
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"set d 4\r\n")
    assert db.aof is not None
    db.aof.close()
    assert path.read_bytes() == whole + encode_command([b"set", b"d", b"4"])


def test_aof_with_garbage_inside_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    garbage = encode_command([b"SET", b"a", b"1"]) + b"*1\r\n$x\r\n" + encode_command([b"SET", b"b", b"2"])
    path.write_bytes(garbage)
    with pytest.raises(AOFError, match="invalid bulk length"):
        _aof_db(path)
    assert path.read_bytes() == garbage


def test_aof_missing_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new.aof"
    db = _aof_db(path)
    assert path.exists() and os.path.getsize(path) == 0
    assert db.aof is not None
    db.aof.close()


def test_aof_everysec_fsyncs_on_its_own_thread_and_stops_with_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: List[str] = []
    fsynced = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(threading.current_thread().name)
        real_fsync(fd)
        fsynced.set()

    monkeypatch.setattr(aof_module, "FSYNC_INTERVAL", 0.02)
    monkeypatch.setattr(os, "fsync", fsync)
    aof = AppendOnlyFile(str(tmp_path / "a.aof"))
    aof.load(lambda cmd: None)
    aof.log([b"SET", b"a", b"1"])
    assert aof.write()
    assert synced == []  # the write returned without an fsync on the caller's thread
    assert fsynced.wait(WAIT)
    assert synced[0] == "aof-fsync"
    thread = aof._fsync_thread
    assert thread is not None
    aof.close()
    assert not thread.is_alive()
    assert synced[-1] == threading.current_thread().name  # close's own last fsync


def test_aof_always_fsyncs_before_write_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: List[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    aof = AppendOnlyFile(str(tmp_path / "a.aof"), fsync="always")
    aof.load(lambda cmd: None)
    assert aof._fsync_thread is None
    aof.log([b"SET", b"a", b"1"])
    assert aof.write() and len(synced) == 1
    aof.close()


def test_config_reports_the_aof(tmp_path: Path) -> None:
    db = _aof_db(tmp_path / "a.aof")
    replies: Dict[bytes, bytes] = {}
    c = RedisProtocol(db, make_reader(pure=True))
    for key in (b"appendonly", b"appendfilename"):
        replies[key] = c.feed(b"config get " + key + b"\r\n")
    assert replies[b"appendonly"].endswith(b"$3\r\nyes\r\n")
    assert replies[b"appendfilename"].endswith(b"$5\r\na.aof\r\n")
    assert db.aof is not None
    db.aof.close()


_PIPELINE_COMMANDS = st.sampled_from(
    [
        [b"GET", b"a"],
        [b"GET", b"b"],
        [b"get", b"a"],
        [b"GET"],
        [b"SET", b"a", b"1"],
        [b"SET", b"b", b"x" * 2000],
        [b"set", b"a", b"2"],
        [b"SET", b"a", b"3", b"PX", b"100000"],
        [b"SET", b"a"],
        [b"PING"],
        [b"PING", b"hi"],
        [b"ping"],
        [b"INCR", b"n"],
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    commands=st.lists(_PIPELINE_COMMANDS, min_size=1, max_size=6).flatmap(
        lambda cmds: st.lists(st.sampled_from(cmds), min_size=1, max_size=40)
    ),
    preset=st.booleans(),
)
def test_a_pipeline_answers_as_its_commands_one_by_one(commands: List[List[bytes]], preset: bool) -> None:
    replies = []
    keyspaces = []
    for packets in ([b"".join(encode_command(c) for c in commands)], [encode_command(c) for c in commands]):
        db = Database()
        conn = RedisProtocol(db, make_reader(pure=True))
        if preset:
            conn.feed(b"set a 0\r\nset b 0\r\n")
        replies.append(b"".join(conn.feed(p) for p in packets))
        keyspaces.append((dict(db.keyspace.data), set(db.keyspace.expires)))
    assert replies[0] == replies[1]
    assert keyspaces[0] == keyspaces[1]


def test_a_pipeline_of_sets_is_logged_to_the_aof(tmp_path: Path) -> None:
    db = _aof_db(tmp_path / "a.aof")
    conn = RedisProtocol(db, make_reader(pure=True))
    assert conn.feed(encode_command([b"SET", b"k", b"v"]) * 3 + encode_command([b"SET", b"j", b"w"])) == b"+OK\r\n" * 4
    assert db.aof is not None
    db.aof.close()
    assert (tmp_path / "a.aof").read_bytes() == encode_command([b"SET", b"k", b"v"]) * 3 + encode_command(
        [b"SET", b"j", b"w"]
    )


def test_a_pipeline_of_gets_sees_expiry(connect: Factory) -> None:
    c = connect()
    c.feed(b"set a 1 px 1\r\nset b 2\r\n")
    time.sleep(0.01)
    assert c.feed(encode_command([b"GET", b"a"]) + encode_command([b"GET", b"b"])) == b"$-1\r\n$1\r\n2\r\n"


# ---- bounded steps ------------------------------------------------------------------


def test_replies_come_in_bounded_steps_and_add_up_to_the_unbounded_ones(connect: Factory) -> None:
    db = Database()
    value = b"v" * 100_000
    request = b"set big " + value + b"\r\n" + b"GET big\r\n" * 50 + b"PING\r\n"
    whole = RedisProtocol(db, make_reader(pure=True)).feed(request)
    stepped = RedisProtocol(db, make_reader(pure=True), step=256 * 1024)
    pieces = [stepped.feed(request)]
    while stepped.backlog:
        pieces.append(stepped.resume())
    assert b"".join(pieces) == whole
    assert len(pieces) > 10
    assert all(len(p) <= 256 * 1024 + len(value) + 20 for p in pieces)  # the step, plus at most one reply
    assert stepped.resume() == b""


def test_input_arriving_while_steps_wait_queues_behind_them() -> None:
    db = Database()
    c = RedisProtocol(db, make_reader(pure=True), step=1)
    assert c.feed(b"ECHO x\r\nECHO a\r\n") == b"$1\r\nx\r\n" and c.backlog
    assert c.feed(b"ECHO b\r\n") == b"$1\r\na\r\n" and c.backlog
    assert c.resume() == b"$1\r\nb\r\n" and not c.backlog


def test_set_and_ping_replies_are_bounded_by_their_commands_and_not_counted() -> None:
    """A reply no longer than its command (a byte more for an inline PING) adds what the input bounds."""
    c = RedisProtocol(Database(), make_reader(pure=True), step=1)
    assert c.feed(b"PING\r\nSET k v\r\nPING\r\nECHO a\r\nECHO b\r\n") == b"+PONG\r\n+OK\r\n+PONG\r\n$1\r\na\r\n"
    assert c.backlog and c.resume() == b"$1\r\nb\r\n" and not c.backlog


def test_a_protocol_error_waits_for_the_steps_before_it() -> None:
    c = RedisProtocol(Database(), make_reader(pure=True), step=1)
    assert c.feed(b"ECHO a\r\nECHO b\r\n*1\r\n$x\r\n") == b"$1\r\na\r\n" and c.verdict == KEEP
    assert c.resume() == b"$1\r\nb\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert c.verdict == CLOSE and not c.backlog


def test_quit_in_a_step_drops_what_follows() -> None:
    c = RedisProtocol(Database(), make_reader(pure=True), step=1)
    assert c.feed(b"ECHO a\r\nQUIT\r\nPING\r\n") == b"$1\r\na\r\n"
    assert c.resume() == b"+OK\r\n" and c.verdict == CLOSE and not c.backlog


def test_the_query_buffer_limit_closes_without_running_anything(connect: Factory) -> None:
    db = Database()
    db.query_buffer_limit = 1000
    c = connect(db)
    assert c.feed(b"SET a 1\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$5000\r\n" + b"x" * 999) == b""
    assert c.verdict == CLOSE and c.close_reason.startswith("qbuf=")
    assert db.keyspace.data == {}


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"*1\r\n\r\n", b"-ERR Protocol error: expected '$', got ' '\r\n"),  # as redis-server 7.0
        (b"*1\r\n\n", b"-ERR Protocol error: expected '$', got ' '\r\n"),
    ],
)
def test_protocol_errors_never_hold_a_raw_cr_or_lf(connect: Factory, request_bytes: bytes, reply: bytes) -> None:
    c = connect()
    assert c.feed(request_bytes) == reply


@settings(max_examples=300, deadline=None)
@given(junk=st.lists(st.sampled_from([b"*", b"$", b"\r", b"\n", b"1", b"2", b"x", b'"', b" "]), max_size=30))
def test_no_error_reply_holds_a_line_break(junk: List[bytes]) -> None:
    c = RedisProtocol(Database(), make_reader(pure=True))
    out = c.feed(b"".join(junk))
    for line in out.split(b"\r\n")[:-1]:
        assert b"\r" not in line and b"\n" not in line


# ---- the AOF: failed writes, the loader, rewrites ---------------------------------------


class FailingWrites:
    """os.write for the AOF: the first `budget` bytes go through, then ENOSPC (after a short write)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
        self.budget = budget
        self.real = os.write
        monkeypatch.setattr(os, "write", self)

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real(fd, bytes(data[: self.budget]))
        self.budget -= n
        return n


MISCONF = b"-MISCONF Errors writing to the AOF file: No space left on device\r\n"


def test_a_failed_aof_write_is_cut_off_undone_and_answered_misconf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    assert c.feed(b"set a 1\r\nset gone 1\r\n") == b"+OK\r\n+OK\r\n"
    good = path.read_bytes()
    writes = FailingWrites(monkeypatch, 10)  # the next write comes up short, then fails
    # One run of writes (all taken back), a read that sees none of them, then writes refused up front.
    assert c.feed(b"set a 2\r\nincr n\r\ndel gone\r\nflushall\r\nget a\r\nset b 1\r\nping\r\necho x\r\n") == (
        MISCONF * 4 + b"$1\r\n1\r\n" + MISCONF + MISCONF + b"$1\r\nx\r\n"
    )
    assert path.read_bytes() == good  # the short write was cut off
    assert dict(db.keyspace.data) == {b"a": b"1", b"gone": b"1"}
    assert c.feed(b"multi\r\nset c 1\r\nexec\r\n") == b"+OK\r\n" + MISCONF + (
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    )
    writes.budget = 1 << 30  # room again: the probe goes through after its interval
    assert db.aof is not None
    db.aof._retry_at = 0.0
    db.tick()
    assert db.aof.error is None
    assert c.feed(b"set b 2\r\n") == b"+OK\r\n"
    db.aof.close()
    again = _aof_db(path)
    assert dict(again.keyspace.data) == {b"a": b"1", b"gone": b"1", b"b": b"2"}
    assert again.aof is not None
    again.aof.close()


def test_a_failed_aof_write_takes_a_whole_transaction_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"set a 1\r\nset b 1 ex 100\r\n")
    deadline = db.keyspace.expires[b"b"]
    FailingWrites(monkeypatch, 0)
    assert c.feed(b"multi\r\nset a 2\r\nflushall\r\nset c 3\r\nexec\r\n") == b"+OK\r\n" + b"+QUEUED\r\n" * 3 + MISCONF
    assert dict(db.keyspace.data) == {b"a": b"1", b"b": b"1"}
    assert db.keyspace.expires == {b"b": deadline}
    assert c.feed(b"get a\r\n") == b"$1\r\n1\r\n"
    assert db.aof is not None
    db.aof.close()


def test_a_transaction_is_logged_between_multi_and_exec(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"multi\r\nset a 1\r\nget a\r\nincr n\r\nexec\r\nmulti\r\nget a\r\nexec\r\n")
    assert db.aof is not None
    db.aof.close()
    assert path.read_bytes() == (
        encode_command([b"MULTI"])
        + encode_command([b"set", b"a", b"1"])
        + encode_command([b"incr", b"n"])
        + encode_command([b"EXEC"])
    )


def test_a_transaction_cut_short_by_a_crash_is_reverted_on_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.aof"
    before = encode_command([b"SET", b"a", b"1"])
    path.write_bytes(before + encode_command([b"MULTI"]) + encode_command([b"SET", b"b", b"1"]))
    with caplog.at_level(logging.WARNING, logger="redisclone"):
        db = _aof_db(path)
    assert dict(db.keyspace.data) == {b"a": b"1"}
    assert path.read_bytes() == before
    assert any("Revert incomplete MULTI/EXEC" in r.getMessage() for r in caplog.records)
    assert db.aof is not None
    db.aof.close()


@pytest.mark.parametrize(
    ("content", "offset", "what"),
    [
        (b"FLUSHALL\r\n", 0, "expected '*', got 'F'"),
        (encode_command([b"SET", b"a", b"1"]) + b"FLUSHALL\r\n", 27, "expected '*', got 'F'"),
        (b"*1\r\nFLUSHALL\r\n", 4, "expected '$', got 'F'"),
        (b"*1\r\n$3\r\nabcd\r\n", 11, "expected CRLF after a bulk string"),
        (b"*0\r\n", 0, "invalid multibulk length"),
    ],
)
def test_the_loader_takes_only_resp_arrays_and_names_the_offset(
    tmp_path: Path, content: bytes, offset: int, what: str
) -> None:
    path = tmp_path / "a.aof"
    path.write_bytes(content)
    with pytest.raises(AOFError, match=f"at offset {offset} .*: {re.escape(what)}"):
        _aof_db(path)
    assert path.read_bytes() == content


def test_a_value_holding_a_command_is_data_on_replay(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    sneaky = b"\r\n" * 10 + encode_command([b"FLUSHALL"])
    c.feed(encode_command([b"SET", b"keep", b"1"]) + encode_command([b"SET", b"v", sneaky]))
    assert db.aof is not None
    db.aof.close()
    again = _aof_db(path)
    assert dict(again.keyspace.data) == {b"keep": b"1", b"v": sneaky}
    assert again.aof is not None
    again.aof.close()


def _rewrite_and_wait(aof: AppendOnlyFile, db: Database) -> None:
    assert aof.rewrite(db.keyspace.records)
    deadline = time.monotonic() + WAIT
    while aof.rewriting:
        assert time.monotonic() < deadline, "the rewrite child did not finish"
        aof.poll_rewrite()
        time.sleep(0.005)


def test_a_rewrite_is_compact_keeps_writes_made_meanwhile_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    for i in range(200):
        c.feed(b"set k%d %d\r\nincr n\r\nset t%d v px 100000\r\n" % (i % 10, i, i % 5))
    c.feed(b"set gone 1 px 1\r\n")
    aof = db.aof
    assert aof is not None
    before = path.stat().st_size
    assert aof.rewrite(db.keyspace.records)
    assert not aof.rewrite(db.keyspace.records)  # one at a time
    c.feed(b"set during 1\r\nincr n\r\n")  # logged to the old file while the child writes
    while aof.rewriting:
        aof.poll_rewrite()
        time.sleep(0.005)
    assert aof.last_rewrite_ok and aof.rewrites == 1
    c.feed(b"set after 1\r\n")
    after = path.stat().st_size
    assert after < before / 5
    expected = dict(db.keyspace.data)
    deadlines = dict(db.keyspace.expires)
    del expected[b"gone"], deadlines[b"gone"]
    aof.close()
    again = _aof_db(path)
    assert dict(again.keyspace.data) == expected and again.keyspace.data[b"n"] == b"201"
    assert dict(again.keyspace.expires) == deadlines
    assert not [p for p in os.listdir(tmp_path) if p.startswith("temp-rewriteaof")]
    assert again.aof is not None
    again.aof.close()


def test_a_rewrite_that_cannot_be_put_in_place_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.aof"
    db = _aof_db(path)
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"set a 1\r\nset a 2\r\n")
    old = path.read_bytes()

    def no_rename(src: str, dst: str) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "rename", no_rename)
    assert db.aof is not None
    _rewrite_and_wait(db.aof, db)
    assert not db.aof.last_rewrite_ok and db.aof.rewrites == 0
    assert path.read_bytes() == old
    assert not [p for p in os.listdir(tmp_path) if p.startswith("temp-rewriteaof")]
    c.feed(b"set b 1\r\n")
    db.aof.close()
    assert path.read_bytes() == old + encode_command([b"set", b"b", b"1"])


def test_a_rewrite_killed_midway_leaves_the_old_file_and_its_temp_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "a.aof"
    path.write_bytes(encode_command([b"SET", b"a", b"1"]))
    stale = tmp_path / "temp-rewriteaof-a.aof-999999999.aof"  # no such process: left by a crash
    stale.write_bytes(b"*3\r\n$3\r\nSET")
    db = _aof_db(path)
    assert not stale.exists()
    assert dict(db.keyspace.data) == {b"a": b"1"}
    assert db.aof is not None
    db.aof.close()


def test_a_rewrite_that_cannot_fork_is_an_error_and_holds_automatic_ones_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _aof_db(tmp_path / "a.aof")
    c = RedisProtocol(db, make_reader(pure=True))
    c.feed(b"set a 1\r\n")
    aof = db.aof
    assert aof is not None
    aof.rewrite_min_size = 1
    assert aof.due_for_rewrite()  # grown from nothing

    def no_fork() -> int:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    monkeypatch.setattr(os, "fork", no_fork)
    assert c.feed(b"bgrewriteaof\r\n") == (
        b"-ERR Can't execute an AOF background rewriting. Please check the server logs for more information.\r\n"
    )
    assert b"aof_last_bgrewrite_status:err" in c.feed(b"info persistence\r\n")
    assert not aof.due_for_rewrite()  # not again at every tick
    aof.close()
