"""What the tests share, defined once: waits, socket reads, servers on threads, servers in child processes.

`conftest.py` turns these into fixtures; a test module imports them from
here (`from support import ...`), never from another test module. Sections:
the basics (waits, addresses, reads, /proc), `TestEvents` and `ServerThread`
(evio on a thread of the test process), `ServerProcess` (any program in a
child process) and what the example servers' tests share: the Redis clone
and redis-server, the HTTP example and the responses h11 reads back.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Callable, List, Tuple, TypeVar, Union

import h11
import pytest
import redis
from minihttp.parser import MAX_HEAD

import evio
import evio.loop
import evio.pollers

BACKENDS = ("epoll", "portable")
WAIT = 10.0  # seconds any single wait in a test may take before it fails
#: A receive buffer, set before connecting, that no large reply fits in: the server's first send is short.
SMALL_WINDOW = 1 << 16
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

#: A listening address as the example servers print it: (host, port), or a unix socket's path.
Addr = Union[Tuple[str, int], str]


# ---- the basics ---------------------------------------------------------------


def with_backend(addr: str, backend: str) -> str:
    """`addr` with its scheme set to use `backend` (`-net` selects the portable one)."""
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = "tcp", addr
    return f"{scheme}{'-net' if backend == 'portable' else ''}://{rest}"


def local(backend: str) -> str:
    """An IPv4 loopback address with a port the kernel picks, on `backend`."""
    return with_backend("tcp4://127.0.0.1:0", backend)


def use_backend(events: evio.Events, backend: str) -> None:
    """Make serve() use `backend` even with no address to carry `-net` (a loop that only dials out)."""
    events.portable = backend == "portable"


def have_ipv6_loopback() -> bool:
    """Whether this machine can bind ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def wait_for(condition: Callable[[], bool], what: str = "condition", *, every: float = 0.001) -> None:
    """Ask `condition` every `every` seconds until it holds, failing the test after `WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met in {WAIT:g} s"
        time.sleep(every)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly `n` bytes or fail the test."""
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        assert chunk, f"connection closed with {n} bytes still expected"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_until_closed(sock: socket.socket) -> bytes:
    """Read until the peer closes."""
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def recv_until_end(sock: socket.socket) -> bytes:
    """Read until the peer ends the connection, with a FIN or a reset (as Redis does when it drops unread input)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def open_fds(pid: int | str = "self") -> int:
    """How many descriptors a process (this one by default) has open, from /proc."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, name: str) -> int:
    """A field of /proc/PID/status in kB, such as VmRSS or VmHWM."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def limit_descriptors(nofile: int | None) -> Callable[[], None] | None:
    """A `preexec` that sets a child's limit on descriptors to `nofile`, soft and hard (`None`: inherit)."""
    if nofile is None:
        return None
    limit = nofile

    def set_limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        lowered = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, lowered))

    return set_limit


# ---- evio on a thread of the test process -----------------------------------------


class TestEvents(evio.Events):
    """Events with what every test needs: knowing when serving began, and a way to stop.

    A subclass that overrides `serving` or `tick` calls this class's version.
    """

    __test__ = False  # not a test class, despite the name
    stop_poll = 0.02

    def __init__(self) -> None:
        self.server: evio.Server | None = None
        self.ready = threading.Event()
        self.stop_requested = threading.Event()

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.server = server
        self.ready.set()
        return None

    def tick(self) -> evio.events.TickResult:
        if self.stop_requested.is_set():
            return 0.0, evio.Action.SHUTDOWN
        return self.stop_poll


class Echo(TestEvents):
    """Echoes what it reads: a peer for tests about something else."""

    def data(self, conn: evio.Conn, data: bytes | memoryview | None) -> evio.events.DataResult:
        return data


class ServerThread:
    """`evio.serve(events, *addrs)` on a thread, joined by `stop()`."""

    def __init__(self, events: TestEvents, *addrs: str) -> None:
        self.events = events
        self.addrs = addrs
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="evio-test-server", daemon=True)

    def _run(self) -> None:
        try:
            evio.serve(self.events, *self.addrs)
        except BaseException as err:
            self.error = err
            self.events.ready.set()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self.events.ready.wait(WAIT), "server did not start serving"
        if self.error is not None:
            raise self.error
        return self

    @property
    def server(self) -> evio.Server:
        assert self.events.server is not None
        return self.events.server

    def addr(self, index: int = 0) -> Any:
        return self.server.addrs[index]

    def connect(self, index: int = 0, *, rcvbuf: int | None = None) -> socket.socket:
        """A blocking client socket connected to listener `index`, with a timeout.

        `rcvbuf` sets `SO_RCVBUF` before connecting, when TCP still negotiates
        the window from it: set later, it does not shrink what the kernel
        already offered, and a large reply may go out in one `send`.
        """
        a = self.addr(index)
        if isinstance(a, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET6 if len(a) == 4 else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(WAIT)
        s.connect(a if isinstance(a, str) else a[:2])
        return s

    def stop(self) -> None:
        """Stop the server from this thread (`Server.shutdown`, and the tick for subclasses that keep it)."""
        self.events.stop_requested.set()
        if self.events.server is not None:
            self.events.server.shutdown()
        self.join()

    def join(self, timeout: float = WAIT) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "serve() did not return"


# ---- any program in a child process -------------------------------------------------


def _child_setup(preexec: Callable[[], None] | None) -> Callable[[], None]:
    """In the child, before it runs: SIGINT and SIGQUIT as a terminal would deliver them, then `preexec`.

    A shell that starts the suite in the background (CI, `make test &`) hands it SIGINT ignored, and
    a program that starts with SIGINT ignored keeps it so: Ctrl-C tests would then kill, not stop.
    """

    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        if preexec is not None:
            preexec()

    return setup


#: The `start_server` fixture: start an events object on addresses, stopped when the test ends.
Start = Callable[..., ServerThread]
#: What a `data` event receives.
Data = Union[bytes, memoryview, None]


class NotReady(AssertionError):
    """A child process exited, or did not get ready in time; it has been killed and reaped."""


class ServerProcess:
    """A program in a child process: started, waited for until ready, stopped, always reaped.

    `argv` runs with `env`, `cwd` and `preexec` (called in the child before
    it executes `argv`). The constructor returns once the child is ready, which is
    one of: `ready`, a regular expression that a whole line of its stdout
    matches (of its stderr with `ready_on="stderr"`; the match is kept as
    `ready_match`); `port`, a TCP port on `host` that accepts a connection;
    `probe`, a callable that returns True. If the child exits first, or
    `timeout` passes, it is killed and reaped and `NotReady` fails the test,
    with what it wrote. With none of the three it is ready once started.

    Its stdout and stderr go to files, never pipes, so a chatty child never
    blocks on them: `stdout()` and `log()` (stderr, or where a subclass's
    program logs) read them back at any time, and `describe()` puts both in
    assertion messages. `stop()` sends SIGTERM and returns the exit status,
    killing the child if it has not exited after a time-out; `close()` (and
    leaving a `with` block, and the `processes` fixture) stops it if it still
    runs and releases its files.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ready: str | re.Pattern[str] | None = None,
        ready_on: str = "stdout",
        port: int | None = None,
        host: str = "127.0.0.1",
        probe: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        preexec: Callable[[], None] | None = None,
        timeout: float = WAIT,
    ) -> None:
        assert ready_on in ("stdout", "stderr"), ready_on
        self.argv = [str(a) for a in argv]
        self.ready_match: re.Match[str] | None = None
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
                env=None if env is None else dict(env),
                cwd=cwd,
                preexec_fn=_child_setup(preexec),
            )
        except BaseException:
            self._out.close()
            self._err.close()
            raise
        pattern = re.compile(ready) if isinstance(ready, str) else ready
        read = self.stdout if ready_on == "stdout" else self._stderr

        def is_ready() -> bool:
            if pattern is not None:
                self.ready_match = _match_line(pattern, read())
                return self.ready_match is not None
            if port is not None:
                try:
                    socket.create_connection((host, port), timeout=WAIT).close()
                except OSError:
                    return False
                return True
            return probe is None or probe()

        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            # A line it printed counts even if it exited since; a port or a probe answering then is someone else.
            if is_ready() and (pattern is not None or not exited):
                return
            if exited or time.monotonic() > deadline:
                what = "exited" if exited else f"was not ready in {timeout:g} s"
                self.kill()
                message = f"{what}: {self.describe()}"
                self.close()
                raise NotReady(message)
            time.sleep(0.002)

    # -- what it wrote

    def stdout(self) -> str:
        """Everything it wrote to stdout so far."""
        return _read_all(self._out)

    def _stderr(self) -> str:
        return _read_all(self._err)

    def log(self) -> str:
        """Everything it logged so far: its stderr (a subclass whose program logs to a file reads that)."""
        return self._stderr()

    def wait_stdout(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """Wait until a whole line of stdout matches `pattern`; its match."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = _match_line(re.compile(pattern) if isinstance(pattern, str) else pattern, self.stdout())
            if match is not None:
                found.append(match)
            return match is not None

        wait_for(seen, f"a line matching {pattern!r} on the stdout of {self.argv}", every=0.002)
        return found[0]

    def wait_log(self, text: str, count: int = 1) -> str:
        """Wait until the log holds `text` (`count` times); the log."""
        wait_for(lambda: self.log().count(text) >= count, f"{text!r} in the log of {self.argv}", every=0.002)
        return self.log()

    def describe(self) -> str:
        """The command, its state, and what it wrote: for assertion messages."""
        code = self.proc.poll()
        state = "running" if code is None else f"exit status {code}"
        parts = [f"{self.argv} ({state})", "--- stdout:", self.stdout()[-4000:], "--- stderr:", self._stderr()[-4000:]]
        log = self.log()
        if log != self._stderr():
            parts += ["--- log:", log[-4000:]]
        return "\n".join(parts)

    # -- its life

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, signum: int) -> None:
        """Send `signum`, if it still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for it to exit on its own; its exit status (negative: the signal that ended it)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit in {timeout:g} s: {self.describe()}") from None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        """Send `signum` (SIGTERM) and return the exit status; killed if it has not exited in `timeout` seconds."""
        self.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL, and reap it: no chance to clean up. The exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def close(self) -> None:
        """Stop it if it still runs, and release its files."""
        if self.proc.poll() is None:
            self.stop()
        self._out.close()
        self._err.close()

    def __enter__(self: P) -> P:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


P = TypeVar("P", bound=ServerProcess)


def _read_all(f: IO[bytes]) -> str:
    # pread: the child shares this file's offset, which a seek would move under its writes.
    fd = f.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def _match_line(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first whole line (one that ended with a newline) of `text` that `pattern` matches."""
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            match = pattern.fullmatch(line.rstrip("\r\n"))
            if match is not None:
                return match
    return None


class Processes:
    """The child processes a test started (`add`): every one is stopped and reaped by `close()`."""

    def __init__(self) -> None:
        self.started: list[ServerProcess] = []

    def add(self, process: P) -> P:
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.started):
            process.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel just picked on `host`, for a program that cannot be asked for port 0."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def parse_addrs(listing: str) -> list[Addr]:
    """The addresses of a listening line (`127.0.0.1:6380, [::1]:6380, /tmp/x.sock`): (host, port) or a path."""
    addrs: list[Addr] = []
    for where in listing.strip().split(", "):
        if where.startswith("/"):
            addrs.append(where)
        else:
            host, _, port = where.rpartition(":")
            addrs.append((host.strip("[]"), int(port)))
    return addrs


# ---- the Redis clone and redis-server -----------------------------------------------

CLONE = EXAMPLES / "redis_server.py"
REDIS_SERVER = shutil.which("redis-server")
# CI installs redis-server, so there a missing one is a failure, not a skip.
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None and not os.environ.get("CI"),
    reason="redis-server is not installed: the comparison with Redis 7.0 is skipped (apt-get install redis-server)",
)


def clone_argv(args: Sequence[str] = (), backend: str = "epoll", script: Path = CLONE) -> list[str]:
    """`python examples/redis_server.py --port 0 ARGS`, on `backend` (or with the pure parser: `pure`)."""
    argv = [sys.executable, str(script), "--port", "0", *args]
    if backend == "portable":
        argv.append("--stdlib")
    elif backend == "pure":
        argv.append("--pure-parser")
    return argv


class RedisClone(ServerProcess):
    """The Redis clone (or a script that prints as it does), ready once it printed its listening line."""

    def __init__(self, argv: Sequence[str], preexec: Callable[[], None] | None = None) -> None:
        super().__init__(argv, ready=r"redis clone listening on (.+)", preexec=preexec, timeout=WAIT * 2)
        assert self.ready_match is not None
        addrs = parse_addrs(self.ready_match.group(1))
        self.unix = next((a for a in addrs if isinstance(a, str)), "")
        #: Every TCP address it listens on; `host` and `port` are the first.
        self.tcp: List[Tuple[str, int]] = [a for a in addrs if isinstance(a, tuple)]
        self.host, self.port = self.tcp[0] if self.tcp else ("", 0)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client, with timeouts."""
        if "unix_socket_path" not in kwargs:
            kwargs.setdefault("host", self.host)
            kwargs.setdefault("port", self.port)
        return redis.Redis(socket_timeout=WAIT, socket_connect_timeout=WAIT, **kwargs)

    def connect(self) -> socket.socket:
        """A raw client socket, with a timeout."""
        return socket.create_connection((self.host, self.port), timeout=WAIT)


class RedisServer(ServerProcess):
    """A real redis-server on a free loopback port, ready once it answers PING; it logs to a file in `folder`."""

    def __init__(self, args: Sequence[str], folder: Path, preexec: Callable[[], None] | None = None) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.logfile = folder / f"redis-{self.port}.log"
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--save", "", "--dir", str(folder)]
        argv += ["--logfile", str(self.logfile), *args]
        super().__init__(argv, probe=self._pong, preexec=preexec)

    def _pong(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=WAIT) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(100) == b"+PONG\r\n"
        except OSError:
            return False

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=WAIT)


RedisPeer = Union[RedisClone, RedisServer]


def command(client: redis.Redis, *args: Any) -> Any:
    """Send any command through redis-py (whose `execute_command` is untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def ask(peer: RedisPeer, data: bytes) -> bytes:
    """Send `data`, end the input, and read everything until the server closes."""
    with peer.connect() as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_end(sock)


def info(peer: RedisPeer, section: str) -> dict[str, str]:
    """INFO `section`, as a dict."""
    reply = ask(peer, f"INFO {section}\r\n".encode())
    body = reply.split(b"\r\n", 1)[1].decode()
    return dict(line.split(":", 1) for line in body.splitlines() if ":" in line)


# ---- the HTTP example, and responses read back by h11 --------------------------------

HTTP_EXAMPLE = EXAMPLES / "http_server.py"


class HttpServer(ServerProcess):
    """`examples/http_server.py --port 0 ARGS`, ready once it printed its listening line.

    `nofile` sets the child's limit on descriptors; `cwd` the folder it starts in.
    """

    def __init__(self, args: Sequence[str], *, nofile: int | None = None, cwd: Path | None = None) -> None:
        argv = [sys.executable, str(HTTP_EXAMPLE), "--port", "0", *args]
        super().__init__(argv, ready=r"http server listening on (.+)", cwd=cwd, preexec=limit_descriptors(nofile))
        assert self.ready_match is not None
        #: As printed: `HOST:PORT`, `unix:PATH`.
        self.addrs = self.ready_match.group(1).strip().split(", ")
        host, _, port = self.addrs[0].rpartition(":")
        self.host = host
        self.port = int(port)
        #: Set by a test whose server is meant to log errors.
        self.stderr_expected = False

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


GET_PLAINTEXT = b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    informational: list[int] = field(default_factory=list)


def read_replies(data: bytes, methods: list[str], *, closed: bool = False) -> list[Reply]:
    """`data` parsed by h11 as the responses to requests of `methods`, in order.

    Fails when bytes are left over, or (with `closed`) when the server did
    not announce the close that it made.
    """
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    if closed:
        conn.receive_data(b"")
    replies: list[Reply] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
        conn.send(h11.EndOfMessage())
        informational: list[int] = []
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA, f"response {len(replies)} is incomplete"
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert head is not None
        headers = {k.decode(): v.decode("latin-1") for k, v in head.headers}
        replies.append(Reply(head.status_code, headers, body, informational))
        if conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    assert len(replies) == len(methods), f"{len(methods) - len(replies)} responses missing after a close"
    if closed:
        assert conn.their_state is h11.MUST_CLOSE, "the last response did not say Connection: close"
    assert conn.trailing_data == (b"", closed)
    return replies


def one_reply(data: bytes, method: str = "GET") -> Reply:
    [reply] = read_replies(data, [method])
    return reply


def pipelined(count: int) -> tuple[bytes, list[str], list[tuple[int, bytes]]]:
    """`count` requests of several kinds, their methods, and the expected (status, body)."""
    data = b""
    methods: list[str] = []
    expected: list[tuple[int, bytes]] = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            data += GET_PLAINTEXT
            expected.append((200, b"Hello, World!"))
        elif kind == 1:
            data += b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%d" % (len(str(i)), i)
            expected.append((200, str(i).encode()))
        elif kind == 2:
            data += b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            data += b"1;ext=1\r\n%d\r\n0\r\nTrailer: t\r\n\r\n" % (i % 10)
            expected.append((200, str(i % 10).encode()))
        elif kind == 3:
            data += b"HEAD /json HTTP/1.1\r\nHost: h\r\n\r\n"
            expected.append((200, b""))
        else:
            data += b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            expected.append((200, b"hello, file\n"))
        methods.append(["GET", "POST", "POST", "HEAD", "GET"][kind])
    return data, methods, expected


#: Requests the example refuses, and the status it answers each with.
BAD = [
    (b"GET /\r\n\r\n", 400),  # HTTP/0.9
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/3\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nNo-Colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nbad trailer\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 123456789012345678901234567890\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"a" * 1024 + b"\r\n1\r\n", 413),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
]

#: What a static file's root keeps outside, and targets that try to reach it.
SECRET = b"top secret, outside the root"
ESCAPES = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/%252e%252e/secret.txt",
    "/../secret/secret.txt",
    "/..",
    "/../",
    "/%2e%2e",
    "//../secret.txt",
    "/..\\secret.txt",
    "/text.txt%00.html",
    "/%00",
    "/sub/%00/../../secret.txt",
    "http://h/../secret.txt",
    "http://h/%2e%2e/secret.txt",
    "/link-dir/secret.txt",
    "/link-file.txt",
    "/link-abs.txt",
    "/link-dir/",
]
