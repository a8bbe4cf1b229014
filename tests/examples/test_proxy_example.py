"""The load balancer example (`examples/proxy.py`) as a user runs it: a real process, real clients, real backends.

Every proxy runs as `python examples/proxy.py --listen tcp://127.0.0.1:0 ...`
and is read back from its `proxy listening on ADDR` line; its log (stderr)
goes to a file the test reads. Every process and thread a test starts is
stopped when its fixture ends (killed if it will not stop). The backends
are small servers on threads of the test process: `NamedEcho` (an evio
server that says its name, then echoes), `RawBackend` (a listening socket
the test accepts on itself, to see exactly what the proxy sends), or the
Redis clone as a process. Waits poll with a deadline (`WAIT`) on what the
proxy logs or says on SIGUSR1, never sleep for a guessed time. The data-path
tests run on both evio backends (`--stdlib` selects the portable one).
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import proxy as proxy_example
import pytest
import redis
from support import (
    EXAMPLES,
    SMALL_WINDOW,
    WAIT,
    Addr,
    Processes,
    RedisClone,
    ServerProcess,
    ServerThread,
    TestEvents,
    clone_argv,
    have_ipv6_loopback,
    parse_addrs,
    proc_status_kb,
    recv_exactly,
    recv_until_closed,
    recv_until_end,
    wait_for,
)
from tcplb import Backend, Balancer

import evio

SCRIPT = EXAMPLES / "proxy.py"
FLAVORS = ("epoll", "stdlib")
#: What the proxy logs for each backend on SIGUSR1 (`Backend.describe`).
STATS_LINE = re.compile(
    r"^proxy: backend (\S+) weight=(\d+) (UP|DOWN) active=(\d+) total=(\d+) bytes_in=(\d+) bytes_out=(\d+)$", re.M
)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

Start = Callable[..., "Proxy"]


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    """The evio backend the proxy runs on: epoll, or the portable one (`--stdlib`)."""
    if request.param == "epoll" and not hasattr(select, "epoll"):
        pytest.skip("no epoll on this platform")
    return str(request.param)


# ---- the proxy process ------------------------------------------------------------------------------


class Proxy(ServerProcess):
    """`examples/proxy.py` as a subprocess, ready once it printed its listening line."""

    def __init__(self, args: List[str], flavor: str = "epoll") -> None:
        if "--listen" not in args:
            args = ["--listen", "tcp://127.0.0.1:0", *args]
        if flavor == "stdlib":
            args = [*args, "--stdlib"]
        self.backends = args.count("--backend")
        super().__init__([sys.executable, str(SCRIPT), *args], ready=r"proxy listening on (.+)", timeout=WAIT * 2)
        assert self.ready_match is not None
        self.addrs: List[Addr] = parse_addrs(self.ready_match.group(1))

    def connect(self, index: int = 0, *, source: str | None = None, rcvbuf: int | None = None) -> socket.socket:
        """A blocking client socket connected to listener `index`, with a timeout."""
        addr = self.addrs[index]
        if isinstance(addr, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connecting: see ServerThread
            if source is not None:
                s.bind((source, 0))
            s.settimeout(WAIT)
            s.connect(addr)
        except BaseException:
            s.close()
            raise
        return s

    def tcp(self, index: int = 0) -> Tuple[str, int]:
        """Listener `index`'s host and port."""
        addr = self.addrs[index]
        assert isinstance(addr, tuple)
        return addr

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """SIGUSR1, then the lines it logged, by backend address."""
        before = len(STATS_LINE.findall(self.log()))
        self.send_signal(signal.SIGUSR1)
        wait_for(lambda: len(STATS_LINE.findall(self.log())) >= before + self.backends, "SIGUSR1's log lines")
        lines = STATS_LINE.findall(self.log())[before:]
        assert len(lines) == self.backends, lines
        return {
            addr: {
                "weight": int(w),
                "up": state == "UP",
                "active": int(a),
                "total": int(t),
                "bytes_in": int(i),
                "bytes_out": int(o),
            }
            for addr, w, state, a, t, i, o in lines
        }

    def wait_stats(self, condition: Callable[[Dict[str, Dict[str, Any]]], bool], what: str) -> Dict[str, Any]:
        """Ask with SIGUSR1 until `condition` holds: the proxy's counters lag the sockets a little."""
        seen: List[Dict[str, Dict[str, Any]]] = []

        def check() -> bool:
            seen.append(self.stats())
            return condition(seen[-1])

        wait_for(check, what)
        return seen[-1]

    def rss(self) -> int:
        """The process's resident memory in bytes, from /proc."""
        return proc_status_kb(self.pid, "VmRSS") * 1024


@pytest.fixture
def start_proxy(processes: Processes) -> Start:
    """Start proxies for one test; each is stopped when the test ends."""

    def start(*args: str, flavor: str = "epoll") -> Proxy:
        return processes.add(Proxy(list(args), flavor))

    return start


# ---- backends ---------------------------------------------------------------------------------------


class NamedEcho(TestEvents):
    """An evio server on a thread: says its name on a line, then echoes. Counts what it accepted."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.accepted = 0
        self.open = 0

    def opened(self, conn: evio.Conn) -> evio.OpenedResult:
        self.accepted += 1
        self.open += 1
        return self.name.encode() + b"\n"

    def data(self, conn: evio.Conn, data: Union[bytes, memoryview, None]) -> evio.DataResult:
        return data

    def closed(self, conn: evio.Conn, err: Union[BaseException, None]) -> evio.Action | None:
        self.open -= 1
        return None


def named(st: ServerThread) -> NamedEcho:
    assert isinstance(st.events, NamedEcho)
    return st.events


def tcp_addr(st: ServerThread) -> str:
    host, port = st.addr()[:2]
    return f"tcp://{host}:{port}"


def hello(sock: socket.socket) -> str:
    """The name line a `NamedEcho` backend sends first: which backend this connection reached."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, f"closed after {line!r}, before a backend said its name"
        line += chunk
    return line.decode().strip()


def visit(proxy: Proxy, **kwargs: Any) -> str:
    """Connect, read which backend answered, and close."""
    with proxy.connect(**kwargs) as s:
        return hello(s)


class RawBackend:
    """A listening socket whose connections the test accepts itself, to see every byte the proxy sends."""

    def __init__(self, rcvbuf: int | None = None, backlog: int = 16) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # accepted sockets inherit it
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(WAIT)
        self.port = self.sock.getsockname()[1]
        self.addr = f"tcp://127.0.0.1:{self.port}"
        self.conns: List[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(WAIT)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for s in [*self.conns, self.sock]:
            s.close()


class Refused:
    """A port bound but not listening: a connect to it is refused, and nobody else can take it meanwhile."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.addr = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class Hanging:
    """A loopback listener whose backlog is full and which never accepts: a connect to it hangs.

    Linux queues backlog + 1 connections; further SYNs are dropped, so the
    client's connect goes unanswered until it gives up.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        where = self.sock.getsockname()
        self.addr = f"tcp://127.0.0.1:{where[1]}"
        self.fill: List[socket.socket] = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(where)
            self.fill.append(s)
        # The path the tests mean to take: a further connect must not complete.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setblocking(False)
            probe.connect_ex(where)
            _, writable, _ = select.select([], [probe], [], 0.2)
            if writable:
                self.close()
                pytest.skip("a full listen backlog does not make a connect hang here")

    def close(self) -> None:
        for s in [*self.fill, self.sock]:
            s.close()


@pytest.fixture
def cleanup() -> Iterator[Callable[[Any], Any]]:
    """Register anything with a `close()`; all are closed when the test ends."""
    things: List[Any] = []

    def add(thing: Any) -> Any:
        things.append(thing)
        return thing

    yield add
    for thing in reversed(things):
        thing.close()


def shut_and_drain(sock: socket.socket) -> bytes:
    """Half-close our side, then read until the proxy closes: it has then let go of the pair."""
    sock.shutdown(socket.SHUT_WR)
    return recv_until_closed(sock)


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ---- Redis through the proxy: redis-cli and redis-py ------------------------------------------------


@pytest.fixture
def redis_clone() -> Iterator[RedisClone]:
    """The Redis clone (`examples/redis_server.py --port 0`) as a backend."""
    with RedisClone(clone_argv()) as clone:
        yield clone


def tcp_url(server: RedisClone) -> str:
    return f"tcp://{server.host}:{server.port}"


# CI installs redis-tools, so there a missing tool is a failure, not a skip.
needs_redis_cli = pytest.mark.skipif(
    shutil.which("redis-cli") is None and not os.environ.get("CI"), reason="redis-cli is not installed"
)


@needs_redis_cli
def test_redis_cli_through_the_proxy(start_proxy: Start, redis_clone: RedisClone, flavor: str) -> None:
    proxy = start_proxy("--backend", tcp_url(redis_clone), flavor=flavor)
    host, port = proxy.tcp()
    cli = ["redis-cli", "-h", host, "-p", str(port)]

    def run(*args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run([*cli, *args], input=stdin, capture_output=True, timeout=WAIT * 3, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    assert run("ping").strip() == "PONG"
    assert run("set", "through", "the proxy").strip() == "OK"
    assert run("get", "through").strip() == "the proxy"
    assert run("incr", "n").strip() == "1"
    # A script on stdin: several commands on one connection (redis-cli asks COMMAND DOCS first).
    assert run(stdin=b"incr n\nget n\nget through\n") == "2\n2\nthe proxy\n"
    stats = proxy.stats()[tcp_url(redis_clone)]
    assert stats["total"] == 5 and stats["bytes_in"] > 0 and stats["bytes_out"] > 0


def test_redis_py_through_the_proxy(start_proxy: Start, redis_clone: RedisClone, flavor: str) -> None:
    proxy = start_proxy("--backend", tcp_url(redis_clone), flavor=flavor)
    host, port = proxy.tcp()
    client = redis.Redis(host=host, port=port, socket_timeout=WAIT, socket_connect_timeout=WAIT)
    try:
        assert client.ping() is True
        big = os.urandom(3 << 20)  # more than the proxy lets pile up on one side
        assert client.set("big", big) is True
        assert client.get("big") == big
        pipe = client.pipeline(transaction=False)
        for _ in range(2000):
            pipe.incr("counter")
        assert pipe.execute() == list(range(1, 2001))
        assert client.get("counter") == b"2000"
    finally:
        client.close()
    stats = proxy.stats()[tcp_url(redis_clone)]
    assert stats["bytes_in"] > len(big) and stats["bytes_out"] > len(big)


# ---- the data path: 64 MiB through a slow reader, half-close, resets ---------------------------------

TOTAL = 64 << 20
CHUNK = 64 << 10
#: How long the sender must sit in one `send` before the test calls it held back.
HELD = 0.3
#: How much the proxy's RSS may grow while 64 MiB go through it. With its pauses it holds at most
#: 256 KiB pending per side plus a read buffer; without them it would hold most of the 64 MiB
#: (all but the few MiB the kernel's socket buffers take). The bound is generous for allocators
#: and PyPy's garbage collector, which frees the bytes it forwarded in batches.
RSS_GROWTH = 16 << 20


@pytest.fixture(scope="module")
def blob() -> bytes:
    return os.urandom(TOTAL)


class Sender(threading.Thread):
    """Sends `data` in chunks, and tells how long it has been stuck in the current `send`."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        super().__init__(name="sender", daemon=True)
        self.sock = sock
        self.data = data
        self.sent = 0
        self.since: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        view = memoryview(self.data)
        try:
            for i in range(0, len(view), CHUNK):
                self.since = time.monotonic()
                self.sock.sendall(view[i : i + CHUNK])
                self.since = None
                self.sent = min(i + CHUNK, len(view))
        except BaseException as err:
            self.error = err

    def held_for(self) -> float:
        since = self.since
        return 0.0 if since is None else time.monotonic() - since


class Sampler(threading.Thread):
    """Samples a process's RSS until stopped; `peak` is the largest seen."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(name="rss", daemon=True)
        self.proxy = proxy
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.proxy.rss())
            self.samples += 1

    def stop(self) -> None:
        self.done.set()
        self.join(WAIT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("direction", ["client to backend", "backend to client"])
def test_64_mib_through_a_slow_reader_keeps_memory_flat(
    start_proxy: Start, cleanup: Callable[[Any], Any], flavor: str, direction: str, blob: bytes
) -> None:
    backend: RawBackend = cleanup(RawBackend(rcvbuf=SMALL_WINDOW))
    proxy = start_proxy("--backend", backend.addr, "--check-interval", "0", flavor=flavor)
    client = cleanup(proxy.connect(rcvbuf=SMALL_WINDOW))
    server = backend.accept()
    client.sendall(b"?")  # the pair is up, and the baseline counts it
    assert recv_exactly(server, 1) == b"?"
    sending, reading = (client, server) if direction == "client to backend" else (server, client)
    baseline = proxy.rss()
    sampler = Sampler(proxy)
    sender = Sender(sending, blob)
    sampler.start()
    sender.start()
    try:
        # The reader reads nothing until the sender is held back: the proxy stopped reading its side
        # because the other side's output is pending. Without that pause the proxy would read it all.
        wait_for(lambda: sender.held_for() > HELD or not sender.is_alive(), "the sender to be held back")
        assert sender.is_alive() and sender.sent < TOTAL // 2, f"the proxy took all {sender.sent} bytes"
        held_at = sender.sent
        digest = hashlib.sha256()
        got = 0
        while got < TOTAL:
            chunk = reading.recv(1 << 20)
            assert chunk, f"closed after {got} bytes"
            digest.update(chunk)
            got += len(chunk)
        sender.join(WAIT)
        assert sender.error is None and sender.sent == TOTAL
    finally:
        sampler.stop()
        sending.close()
        sender.join(WAIT)
    assert digest.digest() == hashlib.sha256(blob).digest()  # every byte, in order
    assert sampler.samples > 0
    growth = sampler.peak - baseline
    assert growth < RSS_GROWTH, f"RSS grew by {growth >> 20} MiB (held back after {held_at >> 20} MiB)"
    stats = proxy.stats()[backend.addr]
    key = "bytes_in" if direction == "client to backend" else "bytes_out"
    assert stats[key] >= TOTAL


def test_half_close_from_the_client(start_proxy: Start, cleanup: Callable[[Any], Any], flavor: str) -> None:
    backend: RawBackend = cleanup(RawBackend())
    proxy = start_proxy("--backend", backend.addr, "--check-interval", "0", flavor=flavor)
    client = cleanup(proxy.connect())
    client.sendall(b"the whole request")
    client.shutdown(socket.SHUT_WR)
    server = backend.accept()
    assert recv_until_closed(server) == b"the whole request"  # the backend got end of input
    reply = os.urandom(1 << 20)  # more than fits in one go: the client's half is really still open
    server.sendall(reply)
    server.close()
    assert recv_until_closed(client) == reply


def test_half_close_from_the_backend(start_proxy: Start, cleanup: Callable[[Any], Any], flavor: str) -> None:
    backend: RawBackend = cleanup(RawBackend())
    proxy = start_proxy("--backend", backend.addr, "--check-interval", "0", flavor=flavor)
    client = cleanup(proxy.connect())
    server = backend.accept()
    server.sendall(b"banner, and nothing more from me")
    server.shutdown(socket.SHUT_WR)
    assert recv_until_closed(client) == b"banner, and nothing more from me"  # the client got end of input
    late = os.urandom(1 << 20)
    client.sendall(late)  # its own direction is still open
    client.shutdown(socket.SHUT_WR)
    assert recv_until_closed(server) == late
    server.close()
    wait_for(lambda: proxy.stats()[backend.addr]["active"] == 0, "the pair to end")


@pytest.mark.parametrize("side", ["client", "backend"])
def test_a_reset_on_one_side_closes_the_other(
    start_proxy: Start, cleanup: Callable[[Any], Any], flavor: str, side: str
) -> None:
    backend: RawBackend = cleanup(RawBackend())
    proxy = start_proxy("--backend", backend.addr, "--check-interval", "0", flavor=flavor)
    client = cleanup(proxy.connect())
    server = backend.accept()
    client.sendall(b"ping")
    assert recv_exactly(server, 4) == b"ping"
    server.sendall(b"pong")
    assert recv_exactly(client, 4) == b"pong"
    gone, other = (client, server) if side == "client" else (server, client)
    reset(gone)
    assert recv_until_end(other) == b""  # within WAIT: the socket's timeout fails the test otherwise
    stats = proxy.wait_stats(lambda s: s[backend.addr]["active"] == 0, "the pair to end")
    assert stats[backend.addr]["total"] == 1


def test_a_reset_after_a_half_close_still_ends_the_pair(
    start_proxy: Start, cleanup: Callable[[Any], Any], flavor: str
) -> None:
    """The backend's side is half-closed (the client's end of input was passed on) when the client resets.

    evio's `Conn.close()` refuses a connection whose write side was shut
    with `write_eof()`; the example then ends it through a wake. Without that,
    the backend connection would stay open until the backend closed it.
    """
    backend: RawBackend = cleanup(RawBackend())
    proxy = start_proxy("--backend", backend.addr, "--check-interval", "0", flavor=flavor)
    client = cleanup(proxy.connect())
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    server = backend.accept()
    assert recv_until_closed(server) == b"last words"
    reset(client)
    # The proxy does not read a client it got end of input from: it sees the reset when it next writes.
    server.sendall(b"too late")
    proxy.wait_stats(lambda s: s[backend.addr]["active"] == 0, "the backend side to close")
    assert "Traceback" not in proxy.log()


# ---- balancing --------------------------------------------------------------------------------------


def test_roundrobin_is_weighted(start_proxy: Start, start_server: Callable[..., ServerThread]) -> None:
    a = start_server(NamedEcho("A"), "tcp4://127.0.0.1:0")
    b = start_server(NamedEcho("B"), "tcp4://127.0.0.1:0")
    proxy = start_proxy("--backend", f"{tcp_addr(a)},weight=3", "--backend", tcp_addr(b), "--check-interval", "0")
    order = "".join(visit(proxy) for _ in range(12))
    assert order == "AABA" * 3  # smooth: 3 to 1, and B in the middle of A's run
    stats = proxy.stats()
    assert (stats[tcp_addr(a)]["weight"], stats[tcp_addr(a)]["total"], stats[tcp_addr(b)]["total"]) == (3, 9, 3)


def test_leastconn_follows_active_connections_for_the_weight(
    start_proxy: Start, start_server: Callable[..., ServerThread], cleanup: Callable[[Any], Any]
) -> None:
    a = start_server(NamedEcho("A"), "tcp4://127.0.0.1:0")
    b = start_server(NamedEcho("B"), "tcp4://127.0.0.1:0")
    addr_a, addr_b = tcp_addr(a), tcp_addr(b)
    proxy = start_proxy(
        "--balance", "leastconn", "--backend", addr_a, "--backend", f"{addr_b},weight=2", "--check-interval", "0"
    )
    held: List[Tuple[str, socket.socket]] = []
    for _ in range(6):  # each stays open: a tie goes round robin, else the fewest for the weight
        s = cleanup(proxy.connect())
        held.append((hello(s), s))
    assert "".join(name for name, _ in held) == "ABBABB"
    stats = proxy.stats()
    assert (stats[addr_a]["active"], stats[addr_b]["active"]) == (2, 4)
    for name, s in held:
        if name == "A":
            assert shut_and_drain(s) == b""
    proxy.wait_stats(lambda s: s[addr_a]["active"] == 0, "A's pairs to end")
    # A has none now, B has 4 for its weight of 2: the next two go to A (0/1, then 1/1 against 4/2).
    nxt = [cleanup(proxy.connect()) for _ in range(2)]
    assert [hello(s) for s in nxt] == ["A", "A"]


def test_source_keeps_each_client_address_on_its_backend(
    start_proxy: Start, start_server: Callable[..., ServerThread]
) -> None:
    servers = {name: start_server(NamedEcho(name), "tcp4://127.0.0.1:0") for name in "ABC"}
    addrs = {tcp_addr(st): name for name, st in servers.items()}
    args = [arg for addr in addrs for arg in ("--backend", addr)]
    proxy = start_proxy("--balance", "source", *args, "--check-interval", "0")
    # Loopback on Linux is all of 127.0.0.0/8: each of these is a different client address.
    sources = [f"127.0.{i}.{i + 2}" for i in range(16)]
    seen = {src: {visit(proxy, source=src) for _ in range(4)} for src in sources}
    assert all(len(names) == 1 for names in seen.values()), seen  # each client kept its backend
    chosen = {src: names.pop() for src, names in seen.items()}
    assert len(set(chosen.values())) >= 2, chosen  # and the clients spread
    # The choice is the documented hash of the client's address (not its port), the same in every process.
    plain = Balancer([Backend(addr) for addr in addrs], "source")
    for src, name in chosen.items():
        pick = plain.pick((src, 12345))
        assert pick is not None and addrs[pick.addr] == name


# ---- health: checks, rise and fall, all down -------------------------------------------------------


def test_a_killed_backend_goes_down_after_fall_checks_and_up_after_rise(
    start_proxy: Start, start_server: Callable[..., ServerThread]
) -> None:
    a = start_server(NamedEcho("A"), "tcp4://127.0.0.1:0")
    b = start_server(NamedEcho("B"), "tcp4://127.0.0.1:0")
    addr_a, addr_b = tcp_addr(a), tcp_addr(b)
    interval, fall, rise = 0.1, 3, 2
    health = ["--check-interval", str(interval), "--fall", str(fall), "--rise", str(rise), "--timeout-connect", "1"]
    proxy = start_proxy("--backend", addr_a, "--backend", addr_b, *health)
    assert sorted(visit(proxy) for _ in range(2)) == ["A", "B"]
    wait_for(lambda: named(a).accepted > 1, "a health check to reach A")  # checks run

    killed = time.monotonic()
    a.stop()
    proxy.wait_log(f"backend {addr_a} is DOWN")
    # `fall` failed checks in a row, `interval` apart: it cannot be sooner (on a slow machine, later).
    assert time.monotonic() - killed >= (fall - 1) * interval * 0.9
    assert [visit(proxy) for _ in range(4)] == ["B"] * 4  # new connections avoid it
    stats = proxy.stats()
    assert (stats[addr_a]["up"], stats[addr_b]["up"]) == (False, True)

    revived = time.monotonic()
    a2 = start_server(NamedEcho("A"), f"tcp4://{addr_a[len('tcp://') :]}")
    proxy.wait_log(f"backend {addr_a} is UP")
    assert time.monotonic() - revived >= (rise - 1) * interval * 0.9
    # The checks' connections were made (the kernel accepts them) before this thread's loop took them.
    wait_for(lambda: named(a2).accepted >= rise, "the good checks to reach the revived A")
    assert sorted(visit(proxy) for _ in range(2)) == ["A", "B"]  # back in the rotation


def test_all_backends_down_closes_new_clients_at_once(start_proxy: Start, cleanup: Callable[[Any], Any]) -> None:
    hanging: Hanging = cleanup(Hanging())
    # Checks time out after the interval (0.1 s); a client's connect would wait --timeout-connect (5 s).
    proxy = start_proxy("--backend", hanging.addr, "--check-interval", "0.1", "--fall", "2", "--timeout-connect", "5")
    proxy.wait_log(f"backend {hanging.addr} is DOWN")
    began = time.monotonic()
    with proxy.connect() as c:
        assert recv_until_end(c) == b""
    # At once: well before the 5 s a connect attempt would take (generous for a loaded machine).
    assert time.monotonic() - began < 2.5
    stats = proxy.stats()[hanging.addr]
    assert (stats["up"], stats["total"]) == (False, 0)  # no connection was even tried for the client


def test_a_refused_connection_counts_as_a_failed_check(
    start_proxy: Start, start_server: Callable[..., ServerThread], cleanup: Callable[[Any], Any]
) -> None:
    refused: Refused = cleanup(Refused())
    good = start_server(NamedEcho("G"), "tcp4://127.0.0.1:0")
    # One check at start (it fails) and no other for 60 s: the second failure must be the client's.
    proxy = start_proxy("--backend", refused.addr, "--backend", tcp_addr(good), "--check-interval", "60", "--fall", "2")
    assert visit(proxy) == "G"  # round robin's first pick was the refused one: redispatched
    log = proxy.wait_log(f"backend {refused.addr} is DOWN")
    assert f"cannot reach {refused.addr} (" in log and f"redispatching to {tcp_addr(good)}" in log
    assert visit(proxy) == "G"
    stats = proxy.stats()
    assert (stats[refused.addr]["up"], stats[refused.addr]["total"], stats[tcp_addr(good)]["total"]) == (False, 1, 2)


def test_without_checks_a_refused_backend_is_redispatched_but_stays_up(
    start_proxy: Start, start_server: Callable[..., ServerThread], cleanup: Callable[[Any], Any]
) -> None:
    """With checks off nothing could bring a backend back up, so failures do not take it down."""
    refused: Refused = cleanup(Refused())
    good = start_server(NamedEcho("G"), "tcp4://127.0.0.1:0")
    proxy = start_proxy("--backend", refused.addr, "--backend", tcp_addr(good), "--check-interval", "0", "--fall", "1")
    assert [visit(proxy) for _ in range(4)] == ["G"] * 4
    stats = proxy.stats()
    assert stats[refused.addr]["up"] and stats[refused.addr]["total"] == 2  # tried every other time, as up
    assert "is DOWN" not in proxy.log()


# ---- connect time-out, redispatch --------------------------------------------------------------------


def test_connect_timeout_redispatches_to_the_next_backend(
    start_proxy: Start, start_server: Callable[..., ServerThread], cleanup: Callable[[Any], Any], flavor: str
) -> None:
    hanging: Hanging = cleanup(Hanging())
    good = start_server(NamedEcho("G"), "tcp4://127.0.0.1:0")
    timeout = 0.5
    backends = ["--backend", hanging.addr, "--backend", tcp_addr(good)]
    proxy = start_proxy(*backends, "--timeout-connect", str(timeout), "--check-interval", "0", flavor=flavor)
    began = time.monotonic()
    with proxy.connect() as c:
        c.sendall(b"sent before any backend answered\n")  # held by the proxy, not lost
        assert hello(c) == "G"
        waited = time.monotonic() - began
        assert recv_exactly(c, 33) == b"sent before any backend answered\n"
    assert waited >= timeout * 0.9  # the first connect really timed out first
    log = proxy.log()
    assert f"cannot reach {hanging.addr} (" in log and f"redispatching to {tcp_addr(good)}" in log
    stats = proxy.stats()
    assert (stats[hanging.addr]["total"], stats[hanging.addr]["active"], stats[tcp_addr(good)]["total"]) == (1, 0, 1)


def test_redispatch_happens_once(
    start_proxy: Start, start_server: Callable[..., ServerThread], cleanup: Callable[[Any], Any]
) -> None:
    """As HAProxy's `retries 1` with `option redispatch`: one more backend, then the client is closed."""
    first: Refused = cleanup(Refused())
    second: Refused = cleanup(Refused())
    good = start_server(NamedEcho("G"), "tcp4://127.0.0.1:0")
    proxy = start_proxy(
        "--backend", first.addr, "--backend", second.addr, "--backend", tcp_addr(good), "--check-interval", "0"
    )
    with proxy.connect() as c:
        assert recv_until_end(c) == b""  # closed, though G was up
    log = proxy.log()
    assert f"cannot reach {first.addr} (" in log and f"redispatching to {second.addr}" in log
    assert f"cannot reach {second.addr} (" in log and "closing the client" in log
    stats = proxy.stats()
    assert [stats[a]["total"] for a in (first.addr, second.addr, tcp_addr(good))] == [1, 1, 0]
    assert named(good).accepted == 0


# ---- idle time-outs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["client", "server"])
def test_an_idle_side_closes_the_pair(
    start_proxy: Start, start_server: Callable[..., ServerThread], flavor: str, side: str
) -> None:
    echo = start_server(NamedEcho("E"), "tcp4://127.0.0.1:0")
    idle = 0.5
    # The other side's time-out is far longer: only this side's can close the pair in time.
    times = {"client": "30", "server": "30", side: str(idle)}
    timeouts = ["--timeout-client", times["client"], "--timeout-server", times["server"]]
    proxy = start_proxy("--backend", tcp_addr(echo), "--check-interval", "0", *timeouts, flavor=flavor)
    with proxy.connect() as c:
        assert hello(c) == "E"
        c.sendall(b"last")
        assert recv_exactly(c, 4) == b"last"
        quiet = time.monotonic()
        assert recv_until_end(c) == b""  # the proxy closed it (a socket timeout of WAIT fails the test)
        waited = time.monotonic() - quiet
    assert idle * 0.8 <= waited < WAIT  # not before the time-out; well before the other one
    wait_for(lambda: named(echo).open == 0, "the backend's connection to close too")


@pytest.mark.slow
def test_traffic_keeps_a_pair_open_past_the_idle_timeout(
    start_proxy: Start, start_server: Callable[..., ServerThread]
) -> None:
    echo = start_server(NamedEcho("E"), "tcp4://127.0.0.1:0")
    idle = 1.0
    timeouts = ["--timeout-client", str(idle), "--timeout-server", str(idle)]
    proxy = start_proxy("--backend", tcp_addr(echo), "--check-interval", "0", *timeouts)
    with proxy.connect() as c:
        assert hello(c) == "E"
        began = time.monotonic()
        # A round trip every 0.1 s (the pacing is the scenario, not a wait) for 1.5 times the time-out:
        # only a stall of most of a second on a loaded machine could look idle.
        while time.monotonic() - began < idle * 1.5:
            c.sendall(b"tick")
            assert recv_exactly(c, 4) == b"tick"
            time.sleep(0.1)
        assert recv_until_end(c) == b""  # and once quiet, it is closed


# ---- the PROXY protocol header ----------------------------------------------------------------------


def expected_header(version: int, family: str, src: Addr, dst: Addr) -> bytes:
    """The header as https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt spells it."""
    if isinstance(src, str) or isinstance(dst, str):
        assert family == "unix" and isinstance(src, str) and isinstance(dst, str)
        if version == 1:
            return b"PROXY UNKNOWN\r\n"
        block = src.encode().ljust(108, b"\0") + dst.encode().ljust(108, b"\0")
        return V2_SIGNATURE + b"\x21\x31" + len(block).to_bytes(2, "big") + block
    if version == 1:
        proto = "TCP4" if family == "ipv4" else "TCP6"
        return f"PROXY {proto} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()
    af = socket.AF_INET if family == "ipv4" else socket.AF_INET6
    fam = b"\x11" if family == "ipv4" else b"\x21"
    block = socket.inet_pton(af, src[0]) + socket.inet_pton(af, dst[0])
    block += src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
    return V2_SIGNATURE + b"\x21" + fam + len(block).to_bytes(2, "big") + block


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("family", ["ipv4", "ipv6", "unix"])
def test_proxy_header_reaches_the_backend_first(
    start_proxy: Start, cleanup: Callable[[Any], Any], tmp_path: Path, version: int, family: str
) -> None:
    if family == "ipv6" and not have_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    listen = {"ipv4": "tcp4://127.0.0.1:0", "ipv6": "tcp6://[::1]:0", "unix": f"unix://{tmp_path}/p.sock"}[family]
    backend: RawBackend = cleanup(RawBackend())
    flag = "--send-proxy" if version == 1 else "--send-proxy-v2"
    proxy = start_proxy("--listen", listen, "--backend", backend.addr, flag, "--check-interval", "0")
    dst = proxy.addrs[0]
    if family == "unix":
        assert dst == f"{tmp_path}/p.sock"
        client = cleanup(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        src: Addr = f"{tmp_path}/c.sock"
        client.bind(src)  # a named client, so that its address is in the header too
        client.settimeout(WAIT)
        client.connect(dst)
    elif family == "ipv4":
        client = cleanup(proxy.connect(source="127.0.0.2"))  # not the listener's address: src and dst differ
        src = tuple(client.getsockname()[:2])
    else:
        client = cleanup(proxy.connect())
        src = tuple(client.getsockname()[:2])
    client.sendall(b"payload")
    want = expected_header(version, family, src, dst)
    server = backend.accept()
    assert recv_exactly(server, len(want) + 7) == want + b"payload"
    server.sendall(b"answer")  # nothing is added the other way
    assert recv_exactly(client, 6) == b"answer"


# ---- listeners, unix backends, SIGUSR1, signals, the command line -----------------------------------


def test_several_listeners_and_a_unix_backend(
    start_proxy: Start, start_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    path = tmp_path / "backend.sock"
    start_server(NamedEcho("U"), f"unix://{path}")
    proxy = start_proxy(
        "--listen", "tcp4://127.0.0.1:0", "--listen", f"unix://{tmp_path}/front.sock", "--backend", f"unix://{path}"
    )
    assert proxy.addrs[1] == f"{tmp_path}/front.sock"
    for index in (0, 1):
        with proxy.connect(index) as c:
            assert hello(c) == "U"
            c.sendall(b"via %d" % index)
            assert recv_exactly(c, 5) == b"via %d" % index
    proxy.stop()
    assert not (tmp_path / "front.sock").exists()


def test_sigusr1_logs_a_line_per_backend(
    start_proxy: Start, start_server: Callable[..., ServerThread], cleanup: Callable[[Any], Any]
) -> None:
    a = start_server(NamedEcho("A"), "tcp4://127.0.0.1:0")
    refused: Refused = cleanup(Refused())
    addr_a = tcp_addr(a)
    proxy = start_proxy(
        "--backend", f"{addr_a},weight=2", "--backend", refused.addr, "--check-interval", "0.1", "--fall", "1"
    )
    proxy.wait_log(f"backend {refused.addr} is DOWN")
    first, second = cleanup(proxy.connect()), cleanup(proxy.connect())
    for c, msg in ((first, b"abc"), (second, b"hello!")):
        assert hello(c) == "A"
        c.sendall(msg)
        assert recv_exactly(c, len(msg)) == msg
    before = len(STATS_LINE.findall(proxy.log()))
    proxy.stats()
    lines = [line for line in proxy.log().splitlines() if STATS_LINE.match(line)][before:]
    assert lines == [
        # Both clients are still connected; 9 bytes went to A, and 2 names plus 9 echoed bytes came back.
        f"proxy: backend {addr_a} weight=2 UP active=2 total=2 bytes_in=9 bytes_out=13",
        f"proxy: backend {refused.addr} weight=1 DOWN active=0 total=0 bytes_in=0 bytes_out=0",
    ]
    assert proxy.running  # SIGUSR1 did not stop it


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_exit_0(
    start_proxy: Start, start_server: Callable[..., ServerThread], flavor: str, signum: int
) -> None:
    echo = start_server(NamedEcho("E"), "tcp4://127.0.0.1:0")
    proxy = start_proxy("--backend", tcp_addr(echo), flavor=flavor)
    with proxy.connect() as c:
        assert hello(c) == "E"
        assert proxy.stop(signum) == 0
        assert recv_until_end(c) == b""
    wait_for(lambda: named(echo).open == 0, "the backend's connection to close")
    assert "Traceback" not in proxy.log()


BAD_COMMAND_LINES = [
    ([], "the following arguments are required: --backend"),
    (["--backend", "tcp://127.0.0.1"], "bad address 'tcp://127.0.0.1'"),
    (["--backend", "tcp://127.0.0.1:1,weight=0"], "weight must be a whole number"),
    (["--backend", "tcp://127.0.0.1:1,maxconn=3"], "unknown option 'maxconn=3'"),
    (["--backend", "tcp-net://127.0.0.1:1"], "-net chooses a server's backend"),
    (["--backend", "tcp://127.0.0.1:0"], "a dial needs a port"),
    (["--backend", "tcp://127.0.0.1:1", "--balance", "random"], "invalid choice: 'random'"),
    (["--backend", "tcp://127.0.0.1:1", "--rise", "0"], "rise and fall must be at least 1"),
    (["--backend", "tcp://127.0.0.1:1", "--fall", "many"], "invalid int value: 'many'"),
    (["--backend", "tcp://127.0.0.1:1", "--timeout-connect", "0"], "--timeout-connect must be a positive"),
    (["--backend", "tcp://127.0.0.1:1", "--timeout-client", "nan"], "--timeout-client must be a positive"),
    (["--backend", "tcp://127.0.0.1:1", "--timeout-server", "inf"], "--timeout-server must be a positive"),
    (["--backend", "tcp://127.0.0.1:1", "--check-interval", "inf"], "--check-interval must be 0"),
    (["--backend", "tcp://127.0.0.1:1", "--check-interval", "-1"], "--check-interval must be 0"),
    (["--backend", "tcp://127.0.0.1:1", "--send-proxy", "--send-proxy-v2"], "not allowed with argument"),
    (["--backend", "tcp://127.0.0.1:1", "--listen", "udp://127.0.0.1:0"], "unknown scheme 'udp'"),
    (["--backend", "tcp://127.0.0.1:1", "--listen", "tcp://127.0.0.1:99999"], "out of range"),
]


@pytest.mark.parametrize(("args", "message"), BAD_COMMAND_LINES)
def test_bad_command_lines_are_usage_errors(args: List[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # In this process, for speed: `main` is what the script runs (the next test runs one as a process).
    try:
        status: object = proxy_example.main(args)
    except SystemExit as stop:  # argparse's own errors
        status = stop.code
    out, err = capsys.readouterr()
    assert status == 2
    assert message in err and out == ""


def test_a_bad_command_line_exits_2_with_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--backend", "tcp://127.0.0.1:1,weight=x"],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == "proxy: bad backend 'tcp://127.0.0.1:1,weight=x': weight must be a whole number from 1 to 256, not 'x'\n"
    )
    assert done.stdout == ""


def test_a_port_in_use_is_a_clear_error(cleanup: Callable[[Any], Any]) -> None:
    taken: RawBackend = cleanup(RawBackend())
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--listen", f"tcp4://127.0.0.1:{taken.port}", "--backend", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert done.returncode == 1
    assert f"127.0.0.1:{taken.port}" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr


# ---- many clients -----------------------------------------------------------------------------------

CLIENTS = 1000


def _open_files_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc/PID/limits")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_thousand_concurrent_clients(
    start_proxy: Start, start_server: Callable[..., ServerThread], flavor: str
) -> None:
    a = start_server(NamedEcho("A"), "tcp4://127.0.0.1:0")
    b = start_server(NamedEcho("B"), "tcp4://127.0.0.1:0")
    proxy = start_proxy("--backend", tcp_addr(a), "--backend", tcp_addr(b), "--check-interval", "0", flavor=flavor)
    # Each pair takes two descriptors in the proxy. It inherits the limit conftest raised for this
    # process; where the hard limit is too low for that, this test cannot run.
    if _open_files_limit(proxy.pid) < 2 * CLIENTS + 100:
        pytest.skip(f"the proxy may open only {_open_files_limit(proxy.pid)} files")
    clients: List[socket.socket] = []
    try:
        for _ in range(CLIENTS):
            clients.append(proxy.connect())
        names = Counter(hello(c) for c in clients)
        assert names == {"A": CLIENTS // 2, "B": CLIENTS // 2}
        for i, c in enumerate(clients):
            c.sendall(b"%08d" % i)
        for i, c in enumerate(clients):
            assert recv_exactly(c, 8) == b"%08d" % i
        stats = proxy.stats()
        assert [stats[tcp_addr(st)]["active"] for st in (a, b)] == [CLIENTS // 2] * 2  # all at once
        assert named(a).open + named(b).open == CLIENTS
    finally:
        for c in clients:
            c.close()
    proxy.wait_stats(lambda s: all(v["active"] == 0 for v in s.values()), "every pair to end")
    wait_for(lambda: named(a).open + named(b).open == 0, "every backend connection to close")
