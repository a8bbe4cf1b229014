"""The HTTP example's limits against the real process, with real clients.

Each of the four time-outs (header, body, keep-alive, send), the output
bound, `--max-connections`, the document root and what it refuses to show,
and running out of descriptors. Where the example claims to do what nginx
does, the same input goes to nginx too (`nginx -c` with the equivalent
configuration; skipped, saying why, where nginx is not installed), and the
test says where the two differ on purpose:

- On a header or body time-out nginx closes without a word; the example
  answers 408 when part of a request arrived (and, as nginx, closes a
  connection that sent nothing without a word).
- Out of descriptors, nginx answers 500 for a file that exists; the example 503.
"""

from __future__ import annotations

import http.client
import os
import resource
import select
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h11
import pytest
from support import (
    HTTP_EXAMPLE,
    WAIT,
    HttpServer,
    NotReady,
    Processes,
    Reply,
    ServerProcess,
    free_port,
    limit_descriptors,
    proc_status_kb,
    read_replies,
)

NGINX = shutil.which("nginx")
HELLO = b"hello, file\n"
#: Slack for a time-out to fire late, on a loaded machine (it may never fire early).
LATE = 1.0
#: The clocks' granularity: a client starts its clock before it connects, so the server's starts later.
SKEW = 0.02


# ---- the servers ----------------------------------------------------------


@dataclass
class Settings:
    """What a test asks of the server under test, for the example and nginx alike."""

    header: float | None = None
    body: float | None = None
    keepalive: float | None = None
    send: float | None = None
    autoindex: bool = False
    #: nginx: deny names starting with a dot, as the example does unless `--dotfiles allow`.
    dotfiles: bool = False
    nofile: int | None = None
    extra: list[str] = field(default_factory=list)  # more flags, for the example only

    def flags(self) -> list[str]:
        out = []
        for name in ("header", "body", "keepalive", "send"):
            value = getattr(self, name)
            if value is not None:
                out += [f"--timeout-{name}", f"{value:g}"]
        if self.autoindex:
            out.append("--autoindex")
        if self.dotfiles:
            out += ["--dotfiles", "allow"]
        return out + self.extra

    def nginx_directives(self) -> str:
        names = {"header": "client_header_timeout", "body": "client_body_timeout"}
        names.update(keepalive="keepalive_timeout", send="send_timeout")
        lines = [f"{names[n]} {round(getattr(self, n) * 1000)}ms;" for n in names if getattr(self, n) is not None]
        return "\n  ".join(lines)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
{rlimit}
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  default_type text/plain;
  {directives}
  server {{
    listen 127.0.0.1:{port};
    root {root};
    autoindex {autoindex};
    location = /plaintext {{ return 200 "Hello, World!"; }}
    # nginx reads the whole body before it proxies: a body time-out applies, then a 502.
    location = /echo {{ proxy_pass http://127.0.0.1:1; }}
    {deny}
  }}
}}
"""


class Nginx(ServerProcess):
    """nginx as one process (`master_process off`), so its pid is the one serving; ready once its port accepts."""

    def __init__(self, settings: Settings, root: Path, workdir: Path) -> None:
        assert NGINX is not None
        self.host = "127.0.0.1"
        self.error_log = workdir / "error.log"
        self.port = free_port(self.host)
        conf = workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=workdir,
                port=self.port,
                root=root,
                directives=settings.nginx_directives(),
                autoindex="on" if settings.autoindex else "off",
                deny="" if settings.dotfiles else r"location ~ /\. { deny all; }",
                rlimit=f"worker_rlimit_nofile {settings.nofile};" if settings.nofile else "",
            )
        )
        argv = [NGINX, "-p", str(workdir), "-e", str(self.error_log), "-c", str(conf)]
        super().__init__(argv, port=self.port, host=self.host, preexec=limit_descriptors(settings.nofile))

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


def start_nginx(settings: Settings, root: Path, workdir: Path) -> Nginx:
    """nginx on a free port: tried again on another when the one picked was taken before nginx bound it."""
    workdir.mkdir()
    for _ in range(4):
        try:
            return Nginx(settings, root, workdir)
        except NotReady:
            pass  # it exited (the port was taken), or never accepted: another port
    return Nginx(settings, root, workdir)


class Peer:
    """The server under test: the example (on one backend) or nginx."""

    def __init__(self, kind: str, process: HttpServer | Nginx) -> None:
        self.kind = kind
        self.process = process
        self.host, self.port, self.pid = process.host, process.port, process.pid

    @property
    def is_nginx(self) -> bool:
        return self.kind == "nginx"

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        sock.settimeout(WAIT)
        sock.connect((self.host, self.port))
        return sock

    def open_files(self) -> list[str]:
        """What the server's descriptors point at."""
        names = []
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                names.append(os.readlink(f"/proc/{self.pid}/fd/{fd}"))
            except FileNotFoundError:
                pass  # closed meanwhile
        return names

    def request(self, target: str) -> tuple[int, bytes]:
        """One GET on a new connection, with http.client."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=WAIT)
        try:
            conn.request("GET", target)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def _nginx_or_skip(target: str) -> None:
    if target == "nginx" and NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light): no comparison")


@pytest.fixture(params=["epoll", "portable", "nginx"])
def target(request: pytest.FixtureRequest) -> str:
    """The server under test: the example on each backend, and nginx given the same input."""
    _nginx_or_skip(str(request.param))
    return str(request.param)


EVIO_ONLY = pytest.mark.parametrize("target", ["epoll", "portable"], indirect=True)


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(HELLO)
    return root


@pytest.fixture
def launch(target: str, processes: Processes, tmp_path: Path, www: Path) -> Iterator[Callable[..., Peer]]:
    """Start the server under test with `Settings`; each is stopped after the test.

    The example must exit 0 and log nothing unless a test expects it to (`expect_log`).
    """
    started: list[Peer] = []
    expected_logs: dict[int, str] = {}

    def start(settings: Settings | None = None, *, expect_log: str = "") -> Peer:
        settings = settings or Settings()
        n = len(started)
        if target == "nginx":
            peer = Peer("nginx", processes.add(start_nginx(settings, www, tmp_path / f"nginx{n}")))
        else:
            backend = ["--stdlib"] if target == "portable" else []
            args = ["--root", str(www), *backend, *settings.flags()]
            peer = Peer("evio", processes.add(HttpServer(args, nofile=settings.nofile)))
        started.append(peer)
        expected_logs[n] = expect_log
        return peer

    yield start
    for n, peer in enumerate(started):
        code = peer.process.stop()
        if isinstance(peer.process, HttpServer):
            log = peer.process.log()
            assert code == 0, f"the server exited with {code}: {peer.process.describe()}"
            if expected_logs[n]:
                assert expected_logs[n] in log
            else:
                assert log == "", "the server logged errors"


# ---- clients that keep to a schedule ----------------------------------------


@dataclass
class Client:
    """A raw connection that sends `sends` (seconds after it connected, bytes) and reads all it is sent.

    `first_data` and `closed` are in seconds after it connected, too.
    """

    sock: socket.socket
    sends: list[tuple[float, bytes]]
    #: With a test of what a complete response is, the client is done when it holds one (else: when closed).
    done_when: Callable[[bytes], bool] | None = None
    data: bytearray = field(default_factory=bytearray)
    opened: float = field(default_factory=time.monotonic)
    first_data: float | None = None
    closed: float | None = None  # when the server closed (or reset) the connection

    @classmethod
    def of(
        cls, peer: Peer, sends: list[tuple[float, bytes]], done_when: Callable[[bytes], bool] | None = None
    ) -> Client:
        """A new connection to `peer`, its clock started before the connect (the server's starts later)."""
        opened = time.monotonic()
        return cls(peer.connect(), sends, done_when, opened=opened)

    @property
    def done(self) -> bool:
        if self.closed is not None:
            return True
        return self.done_when is not None and not self.sends and self.done_when(bytes(self.data))


def run(clients: list[Client], limit: float = WAIT) -> None:
    """Keep every client to its schedule, and read, until all are done or `limit` seconds passed."""
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    try:
        while not all(c.done for c in clients):
            now = time.monotonic()
            assert now - start < limit, f"clients not done in {limit:g} s: {[bytes(c.data[:80]) for c in clients]}"
            for c in clients:
                while c.sends and c.opened + c.sends[0][0] <= now and c.closed is None:
                    try:
                        c.sock.send(c.sends.pop(0)[1])
                    except OSError:
                        c.sends.clear()  # the server closed: the read below sees it
            pending = [c.opened + c.sends[0][0] for c in clients if c.sends and c.closed is None]
            wait = max(0.0, min(pending) - now) if pending else 0.05
            for key, _ in sel.select(min(wait, 0.05)):
                c = key.data
                try:
                    chunk = c.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    if c.first_data is None:
                        c.first_data = time.monotonic() - c.opened
                    c.data += chunk
                else:
                    c.closed = time.monotonic() - c.opened
                    sel.unregister(c.sock)
    finally:
        sel.close()
        for c in clients:
            c.sock.close()


def replies(data: bytes, count: int, *, closed: bool) -> list[Reply]:
    return read_replies(data, ["GET"] * count, closed=closed)


def complete(count: int, method: str = "GET") -> Callable[[bytes], bool]:
    """A test that `count` whole responses arrived."""

    def test(data: bytes) -> bool:
        try:
            read_replies(data, [method] * count)
        except (AssertionError, h11.ProtocolError):
            return False
        return True

    return test


def on_time(elapsed: float | None, expected: float) -> bool:
    """A time-out that fired when it should: never early (`SKEW` aside), at most `LATE` late."""
    return elapsed is not None and expected - SKEW <= elapsed <= expected + LATE


def assert_408_then_close(peer: Peer, data: bytes, before: int = 0) -> None:
    """The example answers a time-out with 408 and closes; nginx closes without a word."""
    if peer.is_nginx:
        assert len(replies(data, before, closed=False)) == before if before else data == b""  # nothing more
        return
    *earlier, last = replies(data, before + 1, closed=True)
    assert all(r.status == 200 for r in earlier)
    assert (last.status, last.headers["connection"]) == (408, "close")
    assert b"408 Request Timeout" in last.body


HEAD_START = b"GET /plaintext HTTP/1.1\r\nHost: h\r\n"
GET = HEAD_START + b"\r\n"


# ---- the header time-out ------------------------------------------------------


def test_header_timeout(launch: Callable[..., Peer]) -> None:
    t = 0.5
    peer = launch(Settings(header=t))
    silent = Client.of(peer, [])
    partial = Client.of(peer, [(0, b"GET /plaintext HTTP/1.1\r\nHo")])
    # A byte every tenth of the time-out: bytes keep coming, but the whole head is due in time.
    trickle = Client.of(peer, [(i * t / 10, bytes([b])) for i, b in enumerate(HEAD_START + b"X-Slow: " * 9)])
    run([silent, partial, trickle])
    for c in (silent, partial, trickle):
        assert on_time(c.closed, t), f"closed after {c.closed} s, not {t} s"
    assert silent.data == b""  # nothing asked, nothing answered: nginx and the example alike
    assert_408_then_close(peer, bytes(partial.data))
    assert_408_then_close(peer, bytes(trickle.data))


def test_slowloris_is_cut_off_while_a_healthy_client_is_served(launch: Callable[..., Peer], target: str) -> None:
    """1,000 connections sending a header byte every 0.5 s, with a 1 s header time-out."""
    count, t, every = 1000, 1.0, 0.5
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < count + 200:
        pytest.skip("the hard limit on descriptors is below 1,200: cannot open 1,000 connections")
    peer = launch(Settings(header=t, nofile=count + 200))
    payload = HEAD_START + b"X-Slow: " + b"a" * 100
    slow = [Client.of(peer, [(i * every, payload[i : i + 1]) for i in range(20)]) for _ in range(count)]
    latencies: list[float] = []
    statuses: set[int] = set()
    stop = threading.Event()

    def healthy() -> None:  # a new connection for each request: new clients must get in
        while not stop.is_set():
            start = time.monotonic()
            status, _ = peer.request("/plaintext")
            latencies.append(time.monotonic() - start)
            statuses.add(status)
            stop.wait(0.02)

    thread = threading.Thread(target=healthy)
    thread.start()
    try:
        run(slow)
    finally:
        stop.set()
        thread.join(WAIT)
    closed = sorted(c.closed or 0.0 for c in slow)
    # Each was cut a time-out after it connected, bytes or not. The 1,000 time-outs fall due within
    # a fraction of a second and are answered one after another: the last may come later (on PyPy,
    # whose JIT has not compiled that path yet, half a second later).
    assert on_time(closed[0], t) and closed[-1] <= t + 2 * LATE, f"cut between {closed[0]} and {closed[-1]} s"
    answers = {bytes(c.data[:30]) for c in slow}
    assert answers == ({b""} if peer.is_nginx else {b"HTTP/1.1 408 Request Timeout\r\n"})
    assert statuses == {200} and len(latencies) >= 10
    worst = max(latencies)
    print(
        f"\n{target}: {count} slowloris connections cut {closed[0]:.2f}-{closed[-1]:.2f} s after they began; "
        f"a healthy client meanwhile: {len(latencies)} requests, median {statistics.median(latencies) * 1000:.1f} ms, "
        f"worst {worst * 1000:.1f} ms"
    )
    assert worst < t, f"a healthy client waited {worst:.2f} s"  # served before the slowloris was even cut


# ---- the body time-out ----------------------------------------------------------


def test_body_timeout(launch: Callable[..., Peer]) -> None:
    t = 0.5
    peer = launch(Settings(body=t))
    stalled = Client.of(peer, [(0, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")])
    # A byte every 0.4 time-outs: the body takes two time-outs, but no two reads are one apart.
    body = b"abcde"
    sends = [(0.0, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")]
    sends += [(0.4 * t * (i + 1), body[i : i + 1]) for i in range(len(body))]
    trickle = Client.of(peer, sends, done_when=complete(1, "POST"))
    run([stalled, trickle])
    assert on_time(stalled.closed, t)
    assert_408_then_close(peer, bytes(stalled.data))
    [r] = read_replies(bytes(trickle.data), ["POST"])
    # The whole body was read: the example echoes it, nginx proxies it (to nothing there: 502).
    assert r.status == 502 if peer.is_nginx else (r.status, r.body) == (200, body)
    assert trickle.first_data is not None and trickle.first_data >= 0.4 * t * len(body)


# ---- the keep-alive time-out --------------------------------------------------------


def test_keepalive_timeout(launch: Callable[..., Peer]) -> None:
    t, header = 1.0, 0.2
    peer = launch(Settings(keepalive=t, header=header))
    idle = Client.of(peer, [(0, GET)])
    again = Client.of(peer, [(0, GET), (0.5 * t, GET)])  # the time-out counts from the last answer
    # An answer, then part of the next head: the header time-out runs from its first byte.
    partial = Client.of(peer, [(0, GET), (0.1, b"GET /plaint")])
    run([idle, again, partial])
    assert on_time(idle.closed, t)  # answered at once, then idle
    assert len(replies(bytes(idle.data), 1, closed=False)) == 1  # closed without a word
    assert on_time(again.closed, 1.5 * t)
    assert len(replies(bytes(again.data), 2, closed=False)) == 2
    assert on_time(partial.closed, 0.1 + header)
    assert partial.closed is not None and partial.closed < t - SKEW  # the header time-out, not the keep-alive one
    assert_408_then_close(peer, bytes(partial.data), before=1)


# ---- the send time-out ------------------------------------------------------------


def big_file(root: Path, name: str, size: int) -> Path:
    path = root / name
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no disk, and the page cache holds zeros
    return path


def test_send_timeout(launch: Callable[..., Peer], www: Path) -> None:
    t = 0.5
    path = str(big_file(www, "big.bin", 64 << 20))
    peer = launch(Settings(send=t))
    with peer.connect(rcvbuf=1 << 16) as reader:
        reader.sendall(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        start = time.monotonic()
        deadline = start + WAIT
        while path not in peer.open_files():  # the download began
            assert time.monotonic() < deadline
            time.sleep(0.005)
        while path in peer.open_files():  # the server gave up on the client, who takes nothing
            assert time.monotonic() < deadline, "the server kept sending to a client that reads nothing"
            time.sleep(0.005)
        elapsed = time.monotonic() - start
        assert on_time(elapsed, t), f"the file was released after {elapsed:.2f} s"
        # What was already on its way arrives, then the close: the response is cut short.
        received = bytearray()
        while chunk := reader.recv(1 << 20):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 67108864" in head
    assert len(body) < 64 << 20


def test_a_client_that_reads_steadily_is_not_cut_off(launch: Callable[..., Peer], www: Path) -> None:
    t = 0.5
    big_file(www, "big.bin", 16 << 20)
    peer = launch(Settings(send=t))
    with peer.connect(rcvbuf=1 << 16) as reader:
        reader.sendall(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        start = time.monotonic()
        received = 0
        while chunk := reader.recv(1 << 16):
            received += len(chunk)
            if received >= 16 << 20:
                break
            if time.monotonic() - start < 4 * t:
                time.sleep(0.002)  # about 30 MB/s at most for four time-outs: slow, never stalled
    assert received >= 16 << 20, f"cut off after {received} bytes"


# ---- bounded output -------------------------------------------------------------


#: The growth allowed: five clients' bounded output (5 MiB or so), and what a garbage collector holds on to.
RSS_LIMIT_KB = 64 * 1024


@EVIO_ONLY
def test_pipelined_requests_for_a_file_do_not_amplify(launch: Callable[..., Peer], www: Path) -> None:
    """Five clients pipelining 200 requests for a 256 KiB file, and not reading: 250 MiB asked for
    (before the output bound, all of it was built at once, in the first call).
    """
    data = os.urandom(256 << 10)
    (www / "quarter.bin").write_bytes(data)
    peer = launch()
    assert peer.request("/quarter.bin") == (200, data)  # in the page cache, and the code paths warm
    baseline = proc_status_kb(peer.pid, "VmRSS")
    clients = [peer.connect(rcvbuf=1 << 16) for _ in range(5)]
    try:
        for c in clients:
            c.sendall(b"GET /quarter.bin HTTP/1.1\r\nHost: h\r\n\r\n" * 200)
        peak = baseline
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            peak = max(peak, proc_status_kb(peer.pid, "VmRSS"))
            time.sleep(0.01)
        assert peak - baseline < RSS_LIMIT_KB, f"RSS grew by {(peak - baseline) // 1024} MiB"
        # Each answer comes, in order, when the client reads.
        conn = h11.Connection(h11.CLIENT)
        got = 0
        reader = clients[0]
        body = bytearray()

        def ask() -> None:  # h11 reads a response to a request it was given
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
            conn.send(h11.EndOfMessage())

        ask()
        while got < 200:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(reader.recv(1 << 20))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
                body = bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert body == data
                got += 1
                conn.start_next_cycle()
                ask()
        peak = max(peak, proc_status_kb(peer.pid, "VmRSS"))
        assert peak - baseline < RSS_LIMIT_KB, f"RSS grew by {(peak - baseline) // 1024} MiB"
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
@EVIO_ONLY
def test_a_pipeline_of_listings_does_not_stall_other_clients(launch: Callable[..., Peer], www: Path) -> None:
    many = www / "many"
    many.mkdir()
    for i in range(5000):
        (many / f"file-number-{i:05d}.txt").write_bytes(b"")
    peer = launch(Settings(autoindex=True))
    status, page = peer.request("/many/")
    assert status == 200 and page.count(b"<li>") == 5001
    count = 60
    latencies: list[float] = []
    stop = threading.Event()

    def healthy() -> None:
        conn = http.client.HTTPConnection(peer.host, peer.port, timeout=WAIT)
        try:
            while not stop.is_set():
                start = time.monotonic()
                conn.request("GET", "/plaintext")
                assert conn.getresponse().read() == b"Hello, World!"
                latencies.append(time.monotonic() - start)
                stop.wait(0.005)
        finally:
            conn.close()

    thread = threading.Thread(target=healthy)
    with peer.connect() as piper:
        piper.sendall(b"GET /many/ HTTP/1.1\r\nHost: h\r\n\r\n" * count)
        thread.start()
        try:
            client = Client(piper, [], done_when=complete(count))  # its clock: from the first request
            run([client], limit=WAIT * 3)
        finally:
            stop.set()
            thread.join(WAIT)
    assert [r.body for r in replies(bytes(client.data), count, closed=False)] == [page] * count
    worst = max(latencies)
    print(
        f"\n{count} pipelined listings of 5,000 entries answered in {client.first_data or 0:.2f}-"
        f"{(time.monotonic() - client.opened):.2f} s; meanwhile a healthy client: {len(latencies)} requests, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, worst {worst * 1000:.1f} ms"
    )
    assert worst < 0.5, f"a healthy client waited {worst:.2f} s"


# ---- connections and descriptors ------------------------------------------------


@EVIO_ONLY
def test_max_connections(launch: Callable[..., Peer]) -> None:
    peer = launch(Settings(extra=["--max-connections", "2"]))
    with peer.connect() as first, peer.connect() as second:
        for c in (first, second):
            c.sendall(GET)
            assert c.recv(1024).startswith(b"HTTP/1.1 200 OK")
        with peer.connect() as third:  # the kernel completes the handshake; the server does not accept
            third.sendall(GET)
            ready, _, _ = select.select([third], [], [], 0.3)
            assert not ready, "a third connection was served with --max-connections 2"
            first.close()
            assert third.recv(1024).startswith(b"HTTP/1.1 200 OK")


def test_out_of_descriptors_a_file_that_exists_is_503(launch: Callable[..., Peer]) -> None:
    limit = 64
    peer = launch(Settings(nofile=limit), expect_log="cannot accept")
    with peer.connect() as keeper:
        keeper.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        assert keeper.recv(1024).endswith(HELLO)
        idle = []
        try:
            deadline = time.monotonic() + WAIT
            while len(peer.open_files()) < limit:  # the server's descriptors run out
                assert time.monotonic() < deadline, f"the server holds {len(peer.open_files())} of {limit}"
                idle += [peer.connect() for _ in range(8)]
                time.sleep(0.02)
            keeper.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n")
            data = b""
            while chunk := keeper.recv(1024):
                data += chunk
            [r] = read_replies(data, ["GET"], closed=True)
            if peer.is_nginx:
                assert r.status == 500  # nginx's answer when open() fails with EMFILE
            else:
                assert (r.status, r.headers["retry-after"]) == (503, "1")
        finally:
            for s in idle:
                s.close()
    deadline = time.monotonic() + WAIT
    while True:  # descriptors back: the file is served again
        status, body = peer.request("/hello.txt")
        if status == 200:
            assert body == HELLO
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)


# ---- what is shown ----------------------------------------------------------------


@pytest.fixture
def exposed(www: Path) -> Path:
    """A root that looks like a project: version control, secrets, a folder without an index."""
    (www / ".env").write_bytes(b"SECRET_KEY=hunter2\n")
    (www / ".git").mkdir()
    (www / ".git" / "config").write_bytes(b"[core]\n")
    (www / "sub").mkdir()
    (www / "sub" / "page.txt").write_bytes(b"page\n")
    return www


def test_dotfiles_and_folders_are_refused_and_folders_not_listed(launch: Callable[..., Peer], exposed: Path) -> None:
    peer = launch()  # nginx: with `location ~ /\. { deny all; }`, the usual way to do the same
    for target in ("/.env", "/.git/config", "/.git/", "/%2egit/config", "/sub/../.env"):
        status, body = peer.request(target)
        assert status == 403, f"{target}: {status}"
        assert b"SECRET" not in body and b"[core]" not in body
    assert peer.request("/sub/")[0] == 403  # no index.html, no autoindex: nginx's 403
    assert peer.request("/sub/page.txt") == (200, b"page\n")


def test_autoindex_lists_folders_without_dot_entries(launch: Callable[..., Peer], exposed: Path) -> None:
    peer = launch(Settings(autoindex=True))
    status, page = peer.request("/")
    assert status == 200
    assert b'href="sub/"' in page and b'href="hello.txt"' in page
    assert b".env" not in page and b".git" not in page  # nginx's autoindex leaves them out too
    status, page = peer.request("/sub/")
    assert status == 200 and b'href="page.txt"' in page


def test_dotfiles_allow(launch: Callable[..., Peer], exposed: Path) -> None:
    peer = launch(Settings(dotfiles=True))  # nginx: its default, without the deny rule
    assert peer.request("/.env") == (200, b"SECRET_KEY=hunter2\n")
    assert peer.request("/.git/config") == (200, b"[core]\n")


def test_without_root_the_shipped_folder_is_served_never_the_current_one(processes: Processes, tmp_path: Path) -> None:
    """`make serve-http` runs the example without --root: from a project's folder, it shows nothing of it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_bytes(b"SECRET_KEY=hunter2\n")
    (project / "notes.txt").write_bytes(b"private notes\n")
    server = processes.add(HttpServer([], cwd=project))
    try:
        peer = Peer("evio", server)
        shipped = (HTTP_EXAMPLE.parent / "www" / "index.html").read_bytes()
        assert peer.request("/") == (200, shipped)
        assert peer.request("/index.html") == (200, shipped)
        assert peer.request("/notes.txt")[0] == 404
        assert peer.request("/.env")[0] == 403
        assert peer.request("/plaintext") == (200, b"Hello, World!")
    finally:
        assert server.stop() == 0
    assert server.log() == ""


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--timeout-header", "0", "not a positive time"),
        ("--timeout-body", "-1", "not a positive time"),
        ("--timeout-keepalive", "10x", "not a time"),
        ("--timeout-send", "", "not a time"),
        ("--max-connections", "0", "must be 1 or more"),
        ("--dotfiles", "yes", "invalid choice"),
    ],
)
def test_bad_limits_are_refused(flag: str, value: str, message: str) -> None:
    done = subprocess.run([sys.executable, str(HTTP_EXAMPLE), flag, value], capture_output=True, timeout=WAIT * 2)
    assert done.returncode == 2
    assert message.encode() in done.stderr and flag.encode() in done.stderr
