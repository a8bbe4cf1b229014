"""Fixtures: a real server on a thread, run once per backend."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import evio

BACKENDS = ("epoll", "portable")
WAIT = 10.0  # seconds any single wait in a test may take before it fails
#: A receive buffer, set before connecting, that no large reply fits in: the server's first send is short.
SMALL_WINDOW = 1 << 16


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_fd_limit()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: every behaviour test runs on both."""
    if request.param == "epoll" and not hasattr(__import__("select"), "epoll"):
        pytest.skip("no epoll on this platform")
    return str(request.param)


def with_backend(addr: str, backend: str) -> str:
    """`addr` with its scheme set to use `backend` (`-net` selects the portable one)."""
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = "tcp", addr
    return f"{scheme}{'-net' if backend == 'portable' else ''}://{rest}"


def local(backend: str) -> str:
    """An IPv4 loopback address with a port the kernel picks, on `backend`."""
    return with_backend("tcp4://127.0.0.1:0", backend)


def wait_for(condition: Callable[[], bool], what: str = "condition") -> None:
    """Poll `condition` until it holds, failing the test after `WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met in {WAIT:g} s"
        time.sleep(0.001)


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


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    """Start servers for a test; every one is stopped when the test ends."""
    started: list[ServerThread] = []

    def start(events: TestEvents, *addrs: str) -> ServerThread:
        st = ServerThread(events, *addrs)
        started.append(st)
        return st.start()

    yield start
    for st in started:
        if st.thread.is_alive():
            st.stop()


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


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
