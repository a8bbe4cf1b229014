"""The Redis clone's limits and time-outs, against the real process, each beside redis-server 7.0 where it is installed.

Every test starts its own servers (`examples/redis_server.py`, and
`redis-server` for the comparison) and stops them when it ends. Where the
clone claims to do as Redis does, the same input goes to both and the
replies are compared byte for byte; a test whose comparison needs
redis-server says so when it is missing (CI installs it).
"""

from __future__ import annotations

import os
import resource
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import (
    CLONE,
    REDIS_SERVER,
    WAIT,
    Processes,
    RedisClone,
    RedisPeer,
    RedisServer,
    ask,
    clone_argv,
    command,
    info,
    limit_descriptors,
    needs_redis,
    open_fds,
    proc_status_kb,
    recv_until_end,
    wait_for,
)

Start = Callable[..., RedisClone]
Peer = RedisPeer


@pytest.fixture
def start(processes: Processes) -> Start:
    """Start clones (`start(*args)`) for one test; each is stopped when it ends."""

    def run(*args: str, preexec: Callable[[], None] | None = None) -> RedisClone:
        return processes.add(RedisClone(clone_argv(args), preexec=preexec))

    return run


@pytest.fixture(scope="module")
def shared_clone() -> Iterator[RedisClone]:
    """One clone with default settings for the tests that only send it input."""
    with RedisClone(clone_argv()) as server:
        yield server
        assert server.stop() == 0, server.describe()


@pytest.fixture
def redis_server(processes: Processes, tmp_path: Path) -> Callable[..., RedisServer]:
    """Start real redis-servers (`redis_server(*args)`) for one test; each is stopped when it ends."""
    count = 0

    def run(*args: str, preexec: Callable[[], None] | None = None) -> RedisServer:
        nonlocal count
        folder = tmp_path / f"redis{count}"
        folder.mkdir()
        count += 1
        return processes.add(RedisServer(args, folder, preexec))

    return run


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` and read one reply line (simple replies only)."""
    sock.sendall(data)
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, f"closed; got {buf!r}"
        buf += chunk
    return buf


def config_get(peer: Peer, name: str) -> str:
    with peer.connect() as sock:
        sock.sendall(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(name), name.encode()))
        reply = b""
        while reply.count(b"\r\n") < 5:
            chunk = sock.recv(4096)
            assert chunk
            reply += chunk
    parts = reply.split(b"\r\n")
    assert parts[0] == b"*2" and parts[2] == name.encode(), reply
    return parts[4].decode()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes `sock` within `seconds` (sending nothing before)."""
    ready, _, _ = select.select([sock], [], [], seconds)
    if not ready:
        return False
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


# ---- CONFIG GET and INFO clients ------------------------------------------------------

LIMITS = [
    "maxclients",
    "timeout",
    "proto-max-bulk-len",
    "client-query-buffer-limit",
    "client-output-buffer-limit",
    "unixsocketperm",
    "appendfsync",
    "auto-aof-rewrite-percentage",
    "auto-aof-rewrite-min-size",
]


@needs_redis
def test_config_get_gives_redis_defaults_for_each_limit(start: Start, redis_server: Callable[..., RedisServer]) -> None:
    clone, redis = start(), redis_server()
    for name in LIMITS:
        assert config_get(clone, name) == config_get(redis, name), name


@needs_redis
def test_config_get_reports_limits_set_on_the_command_line_as_redis(
    start: Start, redis_server: Callable[..., RedisServer]
) -> None:
    args = [
        "--maxclients",
        "50",
        "--timeout",
        "30",
        "--proto-max-bulk-len",
        "2mb",
        "--client-query-buffer-limit",
        "3MB",
        "--client-output-buffer-limit",
        "normal 1mb 512kb 10",
        "--unixsocketperm",
        "770",
        "--appendfsync",
        "always",
        "--auto-aof-rewrite-percentage",
        "50",
        "--auto-aof-rewrite-min-size",
        "1gb",
    ]
    clone, redis = start(*args), redis_server(*args)
    for name in LIMITS:
        assert config_get(clone, name) == config_get(redis, name), name
    assert config_get(clone, "proto-max-bulk-len") == str(2 * 1024 * 1024)


@needs_redis
@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--proto-max-bulk-len", "1000", "argument must be between 1048576 and 9223372036854775807 inclusive"),
        ("--client-query-buffer-limit", "1000", "argument must be between 1048576 and 9223372036854775807 inclusive"),
        ("--proto-max-bulk-len", "1zb", "argument must be a memory value"),
        ("--maxclients", "0", "argument must be between 1 and 4294967295 inclusive"),
        ("--timeout", "-1", "argument must be between 0 and 2147483647 inclusive"),
        ("--unixsocketperm", "800", "argument couldn't be parsed as an octal number"),
        ("--client-output-buffer-limit", "normal 1mb", "Wrong number of arguments in buffer limit configuration."),
    ],
)
def test_a_bad_limit_stops_the_start_in_redis_words(flag: str, value: str, words: str) -> None:
    assert REDIS_SERVER is not None
    clone = subprocess.run(
        [sys.executable, str(CLONE), "--port", "0", flag, value], capture_output=True, timeout=WAIT * 2, check=False
    )
    redis = subprocess.run([REDIS_SERVER, flag, value], capture_output=True, timeout=WAIT * 2, check=False)
    assert clone.returncode != 0 and redis.returncode != 0
    assert words in clone.stderr.decode(), clone.stderr
    assert words in redis.stdout.decode() + redis.stderr.decode()


@needs_redis
def test_info_clients_has_redis_fields(start: Start, redis_server: Callable[..., RedisServer]) -> None:
    clone, redis = start(), redis_server()
    with clone.connect() as a, clone.connect() as b:
        assert roundtrip(a, b"PING\r\n") == roundtrip(b, b"PING\r\n") == b"+PONG\r\n"
        fields = info(clone, "clients")
    assert list(fields) == list(info(redis, "clients"))
    assert fields["connected_clients"] == "3" and fields["blocked_clients"] == "0"
    assert fields["maxclients"] == "10000"


# ---- maxclients and descriptors ---------------------------------------------------------


def _at_maxclients(peer: Peer, limit: int) -> Tuple[List[socket.socket], bytes, bytes]:
    """Fill `peer` to `limit` clients, then connect one more: (the clients, its reply, a fresh client's reply)."""
    clients = [peer.connect() for _ in range(limit)]
    for sock in clients:
        assert roundtrip(sock, b"PING\r\n") == b"+PONG\r\n"
    with peer.connect() as extra:
        refused = recv_until_end(extra)
    clients.pop().close()
    deadline = time.monotonic() + WAIT
    while True:  # the server sees the close a moment later
        with peer.connect() as again:
            again.sendall(b"PING\r\n")
            reply = read_until_closed_or_line(again)
        if reply == b"+PONG\r\n" or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return clients, refused, reply


def read_until_closed_or_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        try:
            chunk = sock.recv(100)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


@needs_redis
def test_one_client_over_maxclients_is_told_and_closed(start: Start, redis_server: Callable[..., RedisServer]) -> None:
    for peer in (start("--maxclients", "3"), redis_server("--maxclients", "3")):
        clients, refused, reply = _at_maxclients(peer, 3)
        try:
            assert refused == b"-ERR max number of clients reached\r\n"
            assert reply == b"+PONG\r\n"  # room again once one left
        finally:
            for sock in clients:
                sock.close()
    assert int(info(peer, "stats")["rejected_connections"]) >= 1


@needs_redis
def test_maxclients_is_lowered_to_fit_the_descriptor_limit_as_redis_does(
    start: Start, redis_server: Callable[..., RedisServer]
) -> None:
    clone = start(preexec=limit_descriptors(64))
    redis = redis_server(preexec=limit_descriptors(64))
    assert config_get(clone, "maxclients") == config_get(redis, "maxclients") == "32"
    assert "maxclients has been reduced to 32 to compensate for low ulimit" in clone.log()
    assert "maxclients has been reduced to 32 to compensate for low ulimit" in redis.log()
    clients, refused, _ = _at_maxclients(clone, 32)
    for sock in clients:
        sock.close()
    assert refused == b"-ERR max number of clients reached\r\n"


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="no prlimit() to lower a running server's limit")
def test_out_of_descriptors_a_client_is_told_not_left_hanging(start: Start) -> None:
    server = start()
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    in_use = open_fds(server.pid)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (in_use + 8, hard))  # maxclients (10000) is far off
    clients: List[socket.socket] = []
    refused = b""
    try:
        for _ in range(20):
            sock = server.connect()
            sock.sendall(b"PING\r\n")
            reply = read_until_closed_or_line(sock)  # an answer either way: never a hang
            if reply != b"+PONG\r\n":
                refused = reply
                sock.close()
                break
            clients.append(sock)
        assert refused == b"-ERR max number of clients reached\r\n"
        assert 1 <= len(clients) <= 8
        for _ in range(3):  # and again, every time
            with server.connect() as sock:
                assert recv_until_end(sock) == b"-ERR max number of clients reached\r\n"
    finally:
        for sock in clients:
            sock.close()
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: info(server, "clients")["connected_clients"] == "1", "the clients' close", every=0.01)
    with server.connect() as sock:
        assert roundtrip(sock, b"PING\r\n") == b"+PONG\r\n"


# ---- timeout ------------------------------------------------------------------------


@pytest.mark.slow
@needs_redis
def test_timeout_closes_idle_clients_and_spares_busy_ones(
    start: Start, redis_server: Callable[..., RedisServer]
) -> None:
    for peer in (start("--timeout", "1"), redis_server("--timeout", "1")):
        with peer.connect() as idle, peer.connect() as busy:
            assert roundtrip(idle, b"PING\r\n") == b"+PONG\r\n"
            began = time.monotonic()
            while time.monotonic() - began < 1.5:  # busy: a command every 0.2 s, never idle for a second
                assert roundtrip(busy, b"PING\r\n") == b"+PONG\r\n"
                time.sleep(0.2)
            assert closed_within(idle, WAIT)  # Redis checks idleness in its cron: about 1-2 s
            assert roundtrip(busy, b"PING\r\n") == b"+PONG\r\n"
    with start().connect() as sock:  # the default, 0: never
        assert not closed_within(sock, 1.5)


# ---- proto-max-bulk-len and client-query-buffer-limit ----------------------------------


@needs_redis
@pytest.mark.parametrize("limit", ["1mb", "3mb"])
def test_a_bulk_over_proto_max_bulk_len_is_refused_and_closes(
    start: Start, redis_server: Callable[..., RedisServer], limit: str
) -> None:
    size = int(limit[:-2]) * 1024 * 1024
    for peer in (start("--proto-max-bulk-len", limit), redis_server("--proto-max-bulk-len", limit)):
        over = ask(peer, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (size + 1))
        assert over == b"-ERR Protocol error: invalid bulk length\r\n"
        at = ask(peer, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\nSTRLEN k\r\n" % (size, b"x" * size))
        assert at == b"+OK\r\n:%d\r\n" % size


@needs_redis
def test_a_client_past_the_query_buffer_limit_is_closed_and_logged(
    start: Start, redis_server: Callable[..., RedisServer]
) -> None:
    flags = ("--client-query-buffer-limit", "1mb")
    for peer in (start(*flags), redis_server(*flags)):
        with peer.connect() as bystander, peer.connect() as sock:
            assert roundtrip(bystander, b"PING\r\n") == b"+PONG\r\n"
            try:  # a 2 MB value's first 1.5 MB: unparsed input past 1 MiB
                sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$2000000\r\n" + b"x" * 1_500_000)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while sending
            assert recv_until_end(sock) == b""  # closed, and not answered
            assert roundtrip(bystander, b"EXISTS q\r\n") == b":0\r\n"
        wait_for(lambda: "Closing client that reached max query buffer length" in peer.log(), "the log line")  # noqa: B023
    # Under the limit nothing happens: a 900 KB value.
    assert ask(start(*flags), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$900000\r\n" + b"x" * 900_000 + b"\r\n") == b"+OK\r\n"


# ---- client-output-buffer-limit ------------------------------------------------------


def _unread_reply(peer: Peer, size: int, dropped: bool) -> int:
    """SET a `size`-byte value, then GET it on a client with a small window: how much of the reply arrives.

    With `dropped`, the client reads nothing until the server has logged that
    it dropped it: read at once, a fast reader on the other core can drain the
    reply while the server is still handing it to the kernel, and then nothing
    is ever pending.
    """
    with peer.connect() as setter:
        setter.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$%d\r\n%s\r\n" % (size, b"x" * size))
        assert read_until_closed_or_line(setter) == b"+OK\r\n"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # before connecting: a small window
    sock.settimeout(WAIT)
    with sock:
        sock.connect((peer.host, peer.port))
        sock.sendall(b"GET b\r\n")
        if dropped:
            wait_for(lambda: "output buffer limits" in peer.log(), "the log line")
        whole = size + len(b"$%d\r\n\r\n" % size)
        got = 0
        while got < whole:  # all of it, or what came before the server closed
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        return got


@needs_redis
def test_the_hard_output_limit_drops_a_client_that_does_not_read(
    start: Start, redis_server: Callable[..., RedisServer]
) -> None:
    flags = ("--client-output-buffer-limit", "normal 1mb 0 0")
    size = 16_000_000  # far more than the kernel's buffers take: most of it would wait in the server
    whole = size + len(b"$%d\r\n\r\n" % size)
    for peer in (start(*flags), redis_server(*flags)):
        assert _unread_reply(peer, size, dropped=True) < whole  # dropped (and logged) before it was all sent
    assert _unread_reply(start(), size, dropped=False) == whole  # the default: no limit, as Redis


# ---- unix socket permissions ---------------------------------------------------------


def _umask0() -> None:
    os.umask(0)


@needs_redis
@pytest.mark.parametrize(("perm", "mode"), [("700", 0o700), ("770", 0o770), (None, 0o777)])
def test_unixsocketperm_sets_the_socket_mode_as_redis_does(
    start: Start, redis_server: Callable[..., RedisServer], tmp_path: Path, perm: str | None, mode: int
) -> None:
    for name, run in (("clone", start), ("redis", redis_server)):
        path = tmp_path / f"{name}.sock"
        args = ["--unixsocket", str(path)] + (["--unixsocketperm", perm] if perm else [])
        peer = run(*args, preexec=_umask0)  # under umask 000 the socket would be anyone's
        assert stat.S_IMODE(path.stat().st_mode) == mode, name
        assert config_get(peer, "unixsocketperm") == (perm or "0")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(path))
            assert roundtrip(sock, b"PING\r\n") == b"+PONG\r\n"


# ---- protocol errors --------------------------------------------------------------------


@needs_redis
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"*1\r\n\r\n",
        b"*1\r\n\n\r\n",
        b"*x\r\n",
        b"*1\r\n$-5\r\n",
        b'"unbalanced\r\n',
        b"*1\r\n$4\r\nPING\r\n*1\r\n\r\n",
    ],
)
def test_protocol_errors_are_worded_as_redis_without_raw_line_breaks(
    start: Start, redis_server: Callable[..., RedisServer], request_bytes: bytes
) -> None:
    clone_reply = ask(start(), request_bytes)
    assert clone_reply == ask(redis_server(), request_bytes)
    for line in clone_reply.split(b"\r\n")[:-1]:
        assert b"\r" not in line and b"\n" not in line


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.sampled_from([b"*", b"$", b"\r", b"\n", b"1", b"-", b"x", b"\x00"]), min_size=1, max_size=20))
def test_no_reply_holds_a_raw_line_break(shared_clone: RedisClone, junk: List[bytes]) -> None:
    reply = ask(shared_clone, b"".join(junk))
    assert reply.endswith(b"\r\n") or reply == b""
    for line in reply.split(b"\r\n")[:-1]:
        assert b"\r" not in line and b"\n" not in line


# ---- replies in bounded steps --------------------------------------------------------------


@pytest.mark.parametrize("variant", [[], ["--pure-parser"], ["--stdlib"]])
def test_a_packet_asking_for_a_gigabyte_is_answered_in_bounded_steps(start: Start, variant: List[str]) -> None:
    server = start(*variant)
    value = b"v" * (1 << 20)
    count = 1000  # 1000 GETs of 1 MiB in one 7 KB write: a GiB of replies
    with server.connect() as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$%d\r\n%s\r\n" % (len(value), value))
        assert read_until_closed_or_line(sock) == b"+OK\r\n"
        base = proc_status_kb(server.pid, "VmRSS") * 1024
        latencies: List[float] = []
        done = threading.Event()
        errors: List[BaseException] = []

        def ping() -> None:
            try:
                with server.connect() as other:
                    while not done.is_set():
                        began = time.perf_counter()
                        assert roundtrip(other, b"PING\r\n") == b"+PONG\r\n"
                        latencies.append(time.perf_counter() - began)
                        done.wait(0.005)
            except BaseException as err:
                errors.append(err)

        pinger = threading.Thread(target=ping)
        pinger.start()
        try:
            sock.sendall(b"GET v\r\n" * count)
            head = b"$%d\r\n" % len(value)
            want = count * (len(head) + len(value) + 2)
            got = 0
            buf = bytearray(1 << 20)
            first = b""
            while got < want:
                n = sock.recv_into(buf)
                assert n, f"closed after {got} of {want} bytes"
                if len(first) < 64:
                    first += bytes(buf[: min(n, 64)])
                got += n
            assert got == want and first.startswith(head + b"vvvv")
        finally:
            done.set()
            pinger.join(WAIT)
        assert not errors, errors
        peak = proc_status_kb(server.pid, "VmHWM") * 1024
        assert peak - base < 96 * 1024 * 1024, f"peak {peak >> 20} MiB, from {base >> 20} MiB"  # not a GiB
        assert len(latencies) > 10 and max(latencies) < 1.0, max(latencies)  # every other client is served meanwhile
        assert roundtrip(sock, b"PING\r\n") == b"+PONG\r\n"  # and this one goes on


@pytest.mark.parametrize("variant", [[], ["--stdlib"]])
def test_headers_announcing_billions_of_elements_stall_nobody(start: Start, variant: List[str]) -> None:
    """hiredis would size a list by such a header: freeing it stalled the loop 8 s a packet here."""
    server = start(*variant)
    hostile = [server.connect() for _ in range(3)]
    try:
        with server.connect() as other:
            for sock, header in zip(hostile, (b"*2147483647\r\n", b"*1\r\n*2147483647\r\n", b"*1\r\n~2147483647\r\n")):
                sock.sendall(header + b"$1\r\na\r\n" * 20)
                began = time.perf_counter()
                assert roundtrip(other, b"PING\r\n") == b"+PONG\r\n"
                # Taken at once; 2 s leaves a loaded machine room, and is a quarter of one stall.
                assert time.perf_counter() - began < 2.0
            for sock in hostile:
                sock.close()  # the half-read commands are dropped with their connections: at once too
            began = time.perf_counter()
            assert roundtrip(other, b"PING\r\n") == b"+PONG\r\n"
            assert time.perf_counter() - began < 2.0
    finally:
        for sock in hostile:
            sock.close()


def test_a_pipeline_of_steps_keeps_its_order_through_redis_py(start: Start) -> None:
    server = start()
    client = server.client()
    try:
        client.set("big", b"x" * 300_000)
        pipe = client.pipeline(transaction=False)
        for _ in range(60):
            pipe.get("big")
            pipe.incr("n")
        replies = pipe.execute()
        assert replies[0::2] == [b"x" * 300_000] * 60
        assert replies[1::2] == list(range(1, 61))
        assert command(client, "PING") is True
    finally:
        client.close()
