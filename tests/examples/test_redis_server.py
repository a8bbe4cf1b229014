"""The Redis clone as a real process: redis-py, raw sockets, redis-cli, redis-benchmark, the AOF, signals.

Every server runs as `python examples/redis_server.py --port 0 ...` on
loopback and is read back from its listening line; every one is stopped (and
killed if it will not stop) when its fixture ends. Behaviour tests run on both
evio backends, and with the pure parser where hiredis is the default.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, List

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redisclone.aof import encode_command
from support import (
    CLONE,
    REPO,
    WAIT,
    Processes,
    RedisClone,
    clone_argv,
    command,
    have_ipv6_loopback,
    recv_until_closed,
)

ASYNCIO_PEER = REPO / "bench" / "redis_asyncio_server.py"


Start = Callable[..., RedisClone]


@pytest.fixture
def start(processes: Processes) -> Start:
    """Start servers for one test; each is stopped when the test ends."""

    def run(*args: str, backend: str = "epoll", script: Path = CLONE) -> RedisClone:
        return processes.add(RedisClone(clone_argv(args, backend, script)))

    return run


# Both evio backends; and the pure parser, where hiredis would be the default.
VARIANTS = ["epoll", "portable", "pure"]


@pytest.fixture(scope="module", params=VARIANTS)
def server(request: pytest.FixtureRequest) -> Iterator[RedisClone]:
    """One server per variant, shared by this module's tests: each test uses its own keys."""
    with RedisClone(clone_argv(backend=str(request.param))) as proc:
        yield proc
        assert proc.stop() == 0, proc.describe()
        assert "Traceback" not in proc.log(), proc.describe()


@pytest.fixture
def r(server: RedisClone) -> Iterator[redis.Redis]:
    """A redis-py client with default settings (RESP3 with redis-py 8)."""
    client = server.client()
    yield client
    client.close()


# ---- redis-py ---------------------------------------------------------------------


def test_every_command_through_redis_py(r: redis.Redis) -> None:
    r.flushall()
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("s", "v") is True
    assert r.get("s") == b"v"
    assert r.get("missing") is None
    assert r.set("s", "w", nx=True) is None
    assert r.set("s", "w", xx=True) is True
    assert r.set("s", "x", get=True) == b"w"
    assert r.set("t", "1", ex=100) is True
    assert 99 <= r.ttl("t") <= 100
    assert r.set("t", "1", px=100_000) and 99_000 <= r.pttl("t") <= 100_000
    assert r.incr("n") == 1 and r.incrby("n", 10) == 11 and r.decr("n") == 10 and r.decrby("n", 5) == 5
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "missing", "b") == [b"1", None, b"2"]
    assert r.exists("a", "b", "missing") == 2
    assert sorted(r.keys("*")) == [b"a", b"b", b"n", b"s", b"t"]
    assert sorted(r.keys("[ab]")) == [b"a", b"b"]
    assert r.dbsize() == 5
    assert r.delete("a", "missing") == 1
    assert r.expire("b", 100) is True and 99 <= r.ttl("b") <= 100
    assert r.persist("b") is True and r.ttl("b") == -1
    assert r.ttl("missing") == -2
    assert r.type("b") == b"string"
    assert command(r, "SELECT", 0) in (True, b"OK", "OK")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        command(r, "SELECT", 1)
    assert r.client_setname("me") is True and r.client_getname() == "me"
    assert r.config_get("appendonly") == {"appendonly": "no"}
    assert r.info()["redis_version"]
    assert r.info("keyspace")["db0"]["keys"] == 4
    assert r.command_count() > 20
    assert r.flushdb() is True and r.dbsize() == 0
    assert r.set("x", 1) and r.flushall() and r.dbsize() == 0


def test_transactions_through_redis_py(r: redis.Redis) -> None:
    with r.pipeline() as pipe:  # MULTI/EXEC: redis-py's default pipeline
        pipe.set("tx", 1)
        pipe.incr("tx")
        pipe.get("tx")
        assert pipe.execute() == [True, 2, b"2"]


def test_errors_through_redis_py(r: redis.Redis) -> None:
    r.set("text", "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("text")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        command(r, "GET")
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE', with args beginning with: 'x'"):
        command(r, "NOPE", "x")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        command(r, "SET", "k", "v", "NX", "XX")
    assert r.ping()  # errors leave the connection usable


def test_resp2_clients_too(server: RedisClone) -> None:
    client = server.client(protocol=2)
    try:
        assert client.set("resp2", "v") and client.get("resp2") == b"v"
        assert client.get("missing") is None
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()


def test_pipeline_of_10000_commands(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"p:{i}", f"value {i}\r\n")
    assert pipe.execute() == [True] * 10_000
    for i in range(10_000):
        pipe.get(f"p:{i}")
    assert pipe.execute() == [f"value {i}\r\n".encode() for i in range(10_000)]
    assert r.delete(*[f"p:{i}" for i in range(10_000)]) == 10_000


def test_binary_values(r: redis.Redis) -> None:
    every_byte = bytes(range(256)) * 4
    big = os.urandom(3 * 1024 * 1024)  # many reads on the server's side
    key = b"bin\r\n\x00\xff"
    r.set(key, every_byte)
    r.set("big", big)
    assert r.get(key) == every_byte
    assert r.get("big") == big
    assert r.mget(key, "big") == [every_byte, big]


def test_many_clients_at_once(server: RedisClone) -> None:
    setup = server.client()
    setup.delete("counter")
    errors: List[BaseException] = []

    def work(n: int) -> None:
        client = server.client()
        try:
            for i in range(100):
                client.incr("counter")
                client.set(f"c{n}:{i}", i)
            assert client.get(f"c{n}:99") == b"99"
        except BaseException as err:
            errors.append(err)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert not errors, errors
    assert setup.get("counter") == b"4000"
    setup.close()


def test_unix_socket(start: Start, tmp_path: Path) -> None:
    path = str(tmp_path / "redis.sock")
    server = start("--unixsocket", path)
    assert server.unix == path and server.port > 0
    client = server.client(unix_socket_path=path)
    try:
        assert client.set("u", "1") and client.get("u") == b"1"
    finally:
        client.close()


@pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 loopback here")
def test_bind_several_addresses(start: Start) -> None:
    server = start("--bind", "127.0.0.1 ::1")
    assert [host for host, _ in server.tcp] == ["127.0.0.1", "::1"]
    for host, port in server.tcp:
        with socket.create_connection((host, port), timeout=WAIT) as sock:
            sock.sendall(b"PING\r\n")
            assert _read_replies(sock, 1) == [b"+PONG\r\n"]


# ---- raw sockets: pipelining, splits, malformed input --------------------------


def _read_replies(sock: socket.socket, count: int) -> List[bytes]:
    """Read `count` RESP replies (simple ones: lines and bulk strings)."""
    buf = b""
    replies: List[bytes] = []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(replies)} of {count} replies"
        buf += chunk
        while True:
            nl = buf.find(b"\r\n")
            if nl < 0:
                break
            if buf[:1] == b"$" and buf[1:nl] != b"-1":
                end = nl + 2 + int(buf[1:nl]) + 2
                if len(buf) < end:
                    break
            else:
                end = nl + 2
            replies.append(buf[:end])
            buf = buf[end:]
    return replies


def _parse_replies(buf: bytes) -> int:
    """Check that `buf` is a run of whole RESP2/RESP3 replies; return how many."""

    def one(pos: int) -> int:
        nl = buf.index(b"\r\n", pos)
        kind, head = buf[pos : pos + 1], buf[pos + 1 : nl]
        if kind in (b"+", b"-", b"_"):
            return nl + 2
        if kind == b":":
            int(head)
            return nl + 2
        if kind == b"$":
            n = int(head)
            if n < 0:
                return nl + 2
            assert buf[nl + 2 + n : nl + 4 + n] == b"\r\n"
            return nl + 4 + n
        assert kind in (b"*", b"%"), buf[pos : pos + 20]
        end = nl + 2
        for _ in range(max(0, int(head)) * (2 if kind == b"%" else 1)):
            end = one(end)
        return end

    pos = count = 0
    while pos < len(buf):
        pos = one(pos)
        count += 1
    return count


def test_commands_split_at_every_byte(server: RedisClone) -> None:
    stream = encode_command([b"SET", b"split", b"a\r\nb"]) + b"GET split\r\n" + encode_command([b"GET", b"split"])
    with server.connect() as sock:
        for i in range(len(stream)):
            sock.sendall(stream[i : i + 1])
            time.sleep(0.0005)
        assert _read_replies(sock, 3) == [b"+OK\r\n", b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"]


def test_a_protocol_error_closes_only_that_connection(server: RedisClone) -> None:
    with server.connect() as bystander, server.connect() as sock:
        bystander.sendall(b"PING\r\n")
        assert _read_replies(bystander, 1) == [b"+PONG\r\n"]
        sock.sendall(b"SET pe 1\r\n*1\r\n$x\r\nSET pe 2\r\n")
        assert recv_until_closed(sock) == b"+OK\r\n-ERR Protocol error: invalid bulk length\r\n"
        bystander.sendall(b"GET pe\r\n")
        assert _read_replies(bystander, 1) == [b"$1\r\n1\r\n"]


def test_an_oversized_bulk_is_refused_before_its_data(server: RedisClone) -> None:
    with server.connect() as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$600000000\r\n")  # and not one byte of the value
        assert recv_until_closed(sock) == b"-ERR Protocol error: invalid bulk length\r\n"


def test_a_huge_array_header_is_refused_or_waits_cheaply(server: RedisClone) -> None:
    with server.connect() as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n*3000000000\r\n")
        assert recv_until_closed(sock) == b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
    with server.connect() as sock, server.connect() as other:
        sock.sendall(b"*2000000000\r\n$4\r\nPING\r\n")  # legal: the server waits, holding only what came
        other.sendall(b"PING\r\n")
        assert _read_replies(other, 1) == [b"+PONG\r\n"]


def test_quit(server: RedisClone) -> None:
    with server.connect() as sock:
        sock.sendall(b"PING\r\nQUIT\r\nPING\r\n")
        assert recv_until_closed(sock) == b"+PONG\r\n+OK\r\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    junk=st.binary(max_size=300)
    | st.lists(
        st.sampled_from([b"*", b"$", b"\r\n", b"2", b"-1", b"99999", b"+", b":", b"GET", b"SET", b"k", b" ", b'"']),
        max_size=40,
    ).map(b"".join)
)
def test_fuzzed_input_gets_replies_or_a_close_never_a_crash(server: RedisClone, junk: bytes) -> None:
    if b"shutdown" in junk.lower():
        return
    with server.connect() as sock:
        sock.sendall(junk)
        sock.shutdown(socket.SHUT_WR)  # the end of input: the server closes once it replied
        reply = recv_until_closed(sock)
    _parse_replies(reply)  # whole, well-formed replies and nothing else
    with server.connect() as probe:
        probe.sendall(b"PING\r\n")
        assert _read_replies(probe, 1) == [b"+PONG\r\n"]


# ---- expiry ------------------------------------------------------------------------


def test_expired_keys_are_swept_without_being_asked_for(r: redis.Redis) -> None:
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"e{i}", "v", px=50)
    pipe.set("keep", "v")
    pipe.execute()
    deadline = time.monotonic() + WAIT
    while r.dbsize() > 1 and time.monotonic() < deadline:  # DBSIZE counts keys not yet swept
        time.sleep(0.05)
    assert r.dbsize() == 1
    assert r.keys("*") == [b"keep"]


# ---- stopping ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["epoll", "portable"])
def test_shutdown_command_exits_0(start: Start, backend: str) -> None:
    server = start(backend=backend)
    with server.connect() as sock:
        sock.sendall(b"SHUTDOWN\r\n")
        assert recv_until_closed(sock) == b""
    assert server.wait() == 0


@pytest.mark.parametrize("backend", ["epoll", "portable"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly(start: Start, backend: str, signum: int) -> None:
    server = start(backend=backend)
    with server.connect() as sock:
        sock.sendall(b"PING\r\n")
        assert _read_replies(sock, 1) == [b"+PONG\r\n"]
        assert server.stop(signum) == 0
        assert recv_until_closed(sock) == b""
    assert "Traceback" not in server.log()


def test_a_taken_port_is_reported(start: Start) -> None:
    first = start()
    proc = subprocess.run(
        [sys.executable, str(CLONE), "--port", str(first.port)], capture_output=True, timeout=WAIT * 2, check=False
    )
    assert proc.returncode == 1
    assert b"cannot listen on" in proc.stderr


# ---- the append-only file -----------------------------------------------------------


def test_aof_survives_sigkill(start: Start, tmp_path: Path) -> None:
    aof = str(tmp_path / "data.aof")
    server = start("--appendonly", "yes", "--appendfilename", aof)
    client = server.client()
    client.set("a", "1")
    client.set("ttl", "v", ex=100)
    client.mset({"b": "2", "c": "3"})
    client.incrby("n", 7)
    client.delete("c")
    client.close()
    server.kill()  # no chance to flush anything: what was acknowledged must be in the file
    again = start("--appendonly", "yes", "--appendfilename", aof)
    client = again.client()
    try:
        assert client.mget("a", "b", "c", "n") == [b"1", b"2", None, b"7"]
        assert 90 <= client.ttl("ttl") <= 100  # the deadline is kept, not renewed
    finally:
        client.close()
    assert "5 commands loaded" in again.log() or "commands loaded" in again.log()


def test_aof_torn_tail_is_cut_with_a_warning(start: Start, tmp_path: Path) -> None:
    aof = tmp_path / "data.aof"
    server = start("--appendonly", "yes", "--appendfilename", str(aof))
    client = server.client()
    client.set("a", "1")
    client.set("b", "2")
    client.close()
    server.kill()
    good = aof.read_bytes()
    with open(aof, "ab") as f:
        f.write(encode_command([b"SET", b"c", b"3"])[:-5])  # a crash in the middle of a write
    again = start("--appendonly", "yes", "--appendfilename", str(aof))
    client = again.client()
    try:
        assert client.mget("a", "b", "c") == [b"1", b"2", None]
        client.set("d", "4")
    finally:
        client.close()
    assert "incomplete" in again.log() and f"offset {len(good)}" in again.log()
    assert again.stop() == 0
    assert aof.read_bytes().startswith(good + b"*3\r\n$3\r\nset\r\n$1\r\nd\r\n") or aof.read_bytes().startswith(
        good + encode_command([b"SET", b"d", b"4"])
    )


def test_a_corrupt_aof_stops_the_start(tmp_path: Path) -> None:
    aof = tmp_path / "bad.aof"
    aof.write_bytes(encode_command([b"SET", b"a", b"1"]) + b"*1\r\n$zz\r\n" + encode_command([b"SET", b"b", b"2"]))
    proc = subprocess.run(
        [sys.executable, str(CLONE), "--port", "0", "--appendonly", "yes", "--appendfilename", str(aof)],
        capture_output=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert proc.returncode == 1
    offset = len(encode_command([b"SET", b"a", b"1"])) + len(b"*1\r\n")
    assert b"Bad file format reading the append only file " in proc.stderr
    assert f"at offset {offset} (after 1 commands): invalid bulk length".encode() in proc.stderr


# ---- redis-cli and redis-benchmark -----------------------------------------------------

# CI installs redis-tools, so there a missing tool is a failure, not a skip.
needs_tools = pytest.mark.skipif(
    (shutil.which("redis-cli") is None or shutil.which("redis-benchmark") is None) and not os.environ.get("CI"),
    reason="redis-tools (redis-cli, redis-benchmark) is not installed",
)


def _run(argv: List[str], stdin: bytes | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=WAIT * 3, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


@needs_tools
def test_redis_cli(server: RedisClone) -> None:
    cli = ["redis-cli", "-h", server.host, "-p", str(server.port)]
    assert _run([*cli, "ping"]).strip() == "PONG"
    assert _run([*cli, "set", "cli", "hello world"]).strip() == "OK"
    assert _run([*cli, "get", "cli"]).strip() == "hello world"
    assert _run([*cli, "incr", "cli:n"]).strip() == "1"
    assert _run([*cli, "get", "cli:missing"]).strip() == ""
    assert "redis_version:" in _run([*cli, "info", "server"])
    # Lines on stdin, as a script: redis-cli asks COMMAND DOCS first.
    out = _run(cli, stdin=b"set cli2 v\nget cli2\nnope\n")
    assert out == "OK\nv\nERR unknown command 'nope', with args beginning with: \n\n"  # as against redis-server
    assert "unknown command" in _run([*cli, "nope"])


@needs_tools
def test_redis_benchmark(server: RedisClone) -> None:
    where = ["-h", server.host, "-p", str(server.port)]
    out = _run(["redis-benchmark", *where, "-t", "ping,set,get", "-n", "3000", "-q", "-P", "16", "-c", "10"])
    lines = [line for line in out.replace("\r", "\n").splitlines() if "requests per second" in line]
    assert [line.split(":")[0] for line in lines] == ["PING_INLINE", "PING_MBULK", "SET", "GET"]
    for line in lines:
        assert float(line.split(":")[1].split()[0]) > 0


# ---- the asyncio peer used by the benchmark ---------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_peer_serves_the_same_protocol(start: Start, loop: str) -> None:
    args = []
    if loop == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            pytest.skip("uvloop is not installed")
        args.append("--uvloop")
    server = start(*args, script=ASYNCIO_PEER)
    client = server.client()
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"k{i}", i)
        assert pipe.execute() == [True] * 1000
        assert client.get("k999") == b"999"
        with pytest.raises(redis.ResponseError, match="unknown command"):
            command(client, "NOPE")
    finally:
        client.close()
    with server.connect() as sock:
        sock.sendall(b"*1\r\n$x\r\n")
        assert recv_until_closed(sock) == b"-ERR Protocol error: invalid bulk length\r\n"
    with server.connect() as sock:
        sock.sendall(b"SHUTDOWN\r\n")
        recv_until_closed(sock)
    assert server.wait() == 0
