"""`Server.dial`: connecting out on the loop, on both backends, over loopback only."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

import pytest
from support import (
    WAIT,
    Data,
    Echo,
    ServerThread,
    Start,
    TestEvents,
    have_ipv6_loopback,
    local,
    open_fds,
    recv_exactly,
    recv_until_closed,
    use_backend,
    wait_for,
    with_backend,
)

import evio
from evio.events import DataResult, OpenedResult, TickResult

T = TypeVar("T")
GetAddrInfo = Callable[..., Any]


class Dialer(TestEvents):
    """Records every event, with the thread it ran on. What `opened` returns depends on `conn.context`.

    Dialled connections are greeted with `greeting`; accepted ones are not greeted.

    No polling tick: a call from another thread has to wake the loop by itself.
    """

    def __init__(self, greeting: bytes | None = None, echo: bool = True) -> None:
        super().__init__()
        self.greeting = greeting
        self.echo = echo
        self.loop_thread = 0
        self.log: queue.Queue[tuple[str, evio.Conn, Any]] = queue.Queue()
        self.opened_ids: list[int] = []
        self.closed_ids: list[int] = []
        self.received: dict[int, bytes] = {}

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.loop_thread = threading.get_ident()
        return super().serving(server)

    def tick(self) -> TickResult:
        return None

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.opened_ids.append(conn.id)
        self.received[conn.id] = b""
        self.log.put(("opened", conn, threading.get_ident()))
        what = conn.context
        if what == "raise":
            raise RuntimeError("opened raised on purpose")
        if what == "close":
            return b"bye", evio.Action.CLOSE
        if what == "idle":
            return b"idle", evio.Options(idle_timeout=0.2), None
        if isinstance(what, bytes):
            return what
        return self.greeting if conn.outbound else None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data is None:
            return None
        self.received[conn.id] += bytes(data)
        return data if self.echo else None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_ids.append(conn.id)
        self.log.put(("closed", conn, err))
        return None

    def next(self, name: str, conn: evio.Conn | None = None) -> Any:
        """The next event, which must be `name` (for `conn`, if given): its thread (opened) or error (closed)."""
        got, c, detail = self.log.get(timeout=WAIT)
        assert got == name, f"expected {name}, got {got} for {c!r}: {detail!r}"
        if conn is not None:
            assert c is conn, f"{name} fired for {c!r}, expected {conn!r}"
        return detail

    def closed_error(self, conn: evio.Conn) -> BaseException | None:
        """Wait for `conn`'s closed event, skipping other events, and return its error."""
        deadline = time.monotonic() + WAIT
        while True:
            got, c, detail = self.log.get(timeout=max(0.0, deadline - time.monotonic()))
            if got == "closed" and c is conn:
                err: BaseException | None = detail
                return err


def on_loop(server: evio.Server, fn: Callable[[], T]) -> T:
    """Run `fn` on the loop's thread (from a timer) and hand back what it returned, or raise what it raised."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def run() -> None:
        try:
            box.put((True, fn()))
        except BaseException as err:
            box.put((False, err))

    server.after(0, run)
    ok, value = box.get(timeout=WAIT)
    if not ok:
        raise value
    result: T = value
    return result


@contextlib.contextmanager
def peer_listener(family: socket.AddressFamily = socket.AF_INET) -> Iterator[socket.socket]:
    """A plain loopback listener to dial; the test accepts from it (with a time-out)."""
    lst = socket.socket(family, socket.SOCK_STREAM)
    try:
        lst.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        lst.listen(64)
        lst.settimeout(WAIT)
        yield lst
    finally:
        lst.close()


def accept(lst: socket.socket) -> tuple[socket.socket, Any]:
    sock, addr = lst.accept()
    sock.settimeout(WAIT)
    return sock, addr


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening: a connect to it is refused, and nobody can take it meanwhile."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
    finally:
        s.close()


@contextlib.contextmanager
def full_backlog() -> Iterator[tuple[int, socket.socket]]:
    """A loopback listener that never accepts, its backlog full: the kernel drops new connection attempts.

    Yields its port and a probe: a connect made once the backlog was full. While the probe is still
    pending, the listener has been dropping every attempt, so any connect to it made since is pending too.
    """
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks: list[socket.socket] = []
    try:
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        # listen(0) queues one or two connections (by kernel and Python); more attempts stay pending.
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        for _ in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            assert s.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
        yield port, socks[-1]
    finally:
        for s in socks:
            s.close()
        lst.close()


@contextlib.contextmanager
def full_unix_backlog(path: str) -> Iterator[socket.socket]:
    """A unix listener at `path` that never accepts, its backlog full (a connect to it fails with EAGAIN).

    Yields a probe: a socket whose `connect_ex(path)` answers EAGAIN for as long as the backlog stays full.
    """
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    socks: list[socket.socket] = []
    try:
        lst.bind(path)
        lst.listen(0)
        for _ in range(64):  # a unix connect completes at once while there is room, and fails once there is none
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            code = s.connect_ex(path)
            if code == errno.EAGAIN:
                break
            assert code == 0, os.strerror(code)
        else:
            pytest.fail("could not fill the unix listener's backlog")
        yield socks[-1]
    finally:
        for s in socks:
            s.close()
        lst.close()


def pending(sock: socket.socket) -> bool:
    """Whether a non-blocking connect is still under way (neither connected nor failed)."""
    _, writable, _ = select.select([], [sock], [], 0)
    return not writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def resolver_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "evio-resolver"}


# ---- connecting --------------------------------------------------------------


def test_dial_connects_and_the_connection_works_as_an_accepted_one(start_server: Start, backend: str) -> None:
    greeting = b"hello from the dialler\n"
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        ev = Dialer(greeting=greeting)
        st = start_server(ev, local(backend))
        conn = st.server.dial(f"tcp://127.0.0.1:{port}", context="mine")  # from this thread, not the loop's
        assert isinstance(conn, evio.Conn)
        assert conn.outbound and conn.addr_index == -1 and conn.context == "mine"
        assert conn.server is st.server
        peer, peer_addr = accept(lst)
        with peer:
            assert ev.next("opened", conn) == ev.loop_thread
            assert recv_exactly(peer, len(greeting)) == greeting
            assert conn.remote_addr == ("127.0.0.1", port)
            assert conn.local_addr == peer_addr
            assert st.server.conns[conn.id] is conn
            peer.sendall(b"ping")
            assert recv_exactly(peer, 4) == b"ping"  # data fires for it and its reply goes out
            assert conn.write(b"pushed")
            assert recv_exactly(peer, 6) == b"pushed"
        assert ev.next("closed", conn) is None  # the peer closed
        assert conn.id not in st.server.conns
        assert conn.write(b"late") is False
    st.stop()
    assert ev.opened_ids == [conn.id] and ev.closed_ids == [conn.id]


def test_dialled_conn_before_it_is_up(start_server: Start, backend: str) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        ev = Dialer()
        st = start_server(ev, local(backend))
        server = st.server

        def dial_and_look() -> tuple[evio.Conn, dict[str, Any]]:
            c = server.dial(f"tcp://127.0.0.1:{port}", context={"k": 1})
            # On the loop's thread the connection cannot be up before dial returns (opened fires later).
            seen = {
                "outbound": c.outbound,
                "addr_index": c.addr_index,
                "context": c.context,
                "remote_addr": c.remote_addr,
                "local_addr": c.local_addr,
                "in_conns": c.id in server.conns,
                "wake": c.wake(),
                "write": c.write(b"early"),
                "pending": c.pending,
                "opened_yet": c.id in ev.opened_ids,
            }
            return c, seen

        conn, seen = on_loop(server, dial_and_look)
        assert seen == {
            "outbound": True,
            "addr_index": -1,
            "context": {"k": 1},
            "remote_addr": ("127.0.0.1", port),
            "local_addr": ("", 0),
            "in_conns": False,  # `conns` holds open connections; this one is connecting
            "wake": False,  # not open yet
            "write": True,  # queued until it is
            "pending": 5,
            "opened_yet": False,
        }
        peer, peer_addr = accept(lst)
        with peer:
            ev.next("opened", conn)
            assert recv_exactly(peer, 5) == b"early"
            assert conn.local_addr == peer_addr
            assert conn.remote_addr == ("127.0.0.1", port)
            wait_for(lambda: conn.pending == 0, "the early output to be counted as sent")
            assert conn.wake()  # now it is open
        assert ev.next("closed", conn) is None


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_writes_before_connect_go_first_in_order_then_what_opened_returns(
    start_server: Start, backend: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = os.urandom(1 << 16) * 64  # 4 MiB: more than one send takes, so the early output drains in pieces
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        # From another thread, the writes must come before the connection is up: hold it up in its look-up.
        _, release, _ = fake_resolver(monkeypatch, "held.example", [inet(port)])
        ev = Dialer(greeting=b"[opened]")
        st = start_server(ev, local(backend))
        server = st.server

        def dial_and_write() -> evio.Conn:
            c = server.dial(f"tcp://127.0.0.1:{port}" if where == "loop" else "tcp://held.example:9")
            mutable = bytearray(b"second;")
            assert c.write(b"first;")
            assert c.write(mutable)
            mutable[:] = b"XXXXXXX"  # the write copied it
            assert c.write(memoryview(b"third;"))
            assert c.write(blob)
            assert c.write(b";last")
            return c

        if where == "loop":
            conn = on_loop(server, dial_and_write)
        else:
            conn = dial_and_write()
            assert conn.id not in ev.opened_ids
            release.set()
        expected = b"first;second;third;" + blob + b";last" + b"[opened]"
        peer, _ = accept(lst)
        with peer:
            assert recv_exactly(peer, len(expected)) == expected
            ev.next("opened", conn)
        assert ev.next("closed", conn) is None


def test_opened_can_write_more_and_the_early_output_still_goes_first(start_server: Start, backend: str) -> None:
    """Writes inside opened (besides its return value) follow what was written before the connection was up."""

    class WritesInOpened(Dialer):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            super().opened(conn)
            conn.write(b"B")
            return b"C"

    with peer_listener() as lst:
        ev = WritesInOpened()
        st = start_server(ev, local(backend))
        server = st.server
        port = lst.getsockname()[1]

        def dial_and_write() -> evio.Conn:
            c = server.dial(f"tcp://127.0.0.1:{port}")
            c.write(b"A")
            return c

        conn = on_loop(server, dial_and_write)
        peer, _ = accept(lst)
        with peer:
            assert recv_exactly(peer, 3) == b"ABC"
        assert ev.closed_error(conn) is None


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_close_before_connected_sends_what_was_written_then_closes_without_opened(
    start_server: Start, backend: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        # From another thread, the close must come before the connection is up: hold it up in its look-up.
        _, release, _ = fake_resolver(monkeypatch, "held.example", [inet(port)])
        ev = Dialer(greeting=b"opened must not fire")
        st = start_server(ev, local(backend))
        server = st.server

        def dial_write_close() -> evio.Conn:
            c = server.dial(f"tcp://127.0.0.1:{port}" if where == "loop" else "tcp://held.example:9")
            assert c.write(b"parting words")
            assert c.close()
            assert c.write(b"after close") is False
            assert c.close() is False
            return c

        if where == "loop":
            conn = on_loop(server, dial_write_close)
        else:
            conn = dial_write_close()
            assert conn.id not in ev.opened_ids
            release.set()
        peer, _ = accept(lst)
        with peer:
            assert recv_until_closed(peer) == b"parting words"
        assert ev.next("closed", conn) is None
    st.stop()
    assert ev.opened_ids == []
    assert ev.closed_ids == [conn.id]


def test_write_eof_before_connected(start_server: Start, backend: str) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        ev = Dialer(greeting=b"+greeting", echo=False)
        st = start_server(ev, local(backend))
        server = st.server

        def dial_write_eof() -> evio.Conn:
            c = server.dial(f"tcp://127.0.0.1:{port}")
            assert c.write(b"request")
            assert c.write_eof()
            assert c.write(b"refused") is False
            return c

        conn = on_loop(server, dial_write_eof)
        peer, _ = accept(lst)
        with peer:
            assert recv_until_closed(peer) == b"request+greeting"  # then end of input
            ev.next("opened", conn)
            peer.sendall(b"response")  # the connection still reads
            wait_for(lambda: ev.received.get(conn.id) == b"response", "the response read")
        assert ev.next("closed", conn) is None  # once the peer closed too


def test_dial_to_a_unix_path(start_server: Start, backend: str, tmp_path: Any) -> None:
    path = str(tmp_path / "peer.sock")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with lst:
        lst.bind(path)
        lst.listen(8)
        lst.settimeout(WAIT)
        ev = Dialer(greeting=b"over unix")
        st = start_server(ev, local(backend))
        server = st.server
        before: dict[str, Any] = {}

        def dial() -> evio.Conn:
            c = server.dial(f"unix://{path}", context="u")
            before.update(remote=c.remote_addr, local=c.local_addr)
            c.write(b"early;")
            return c

        conn = on_loop(server, dial)
        assert before == {"remote": path, "local": ""}
        peer, _ = accept(lst)
        with peer:
            assert recv_exactly(peer, 15) == b"early;over unix"
            assert ev.next("opened", conn) == ev.loop_thread
            assert conn.remote_addr == path and conn.local_addr == ""
            assert conn.outbound and conn.addr_index == -1 and conn.context == "u"
            peer.sendall(b"echo me")
            assert recv_exactly(peer, 7) == b"echo me"
        assert ev.next("closed", conn) is None


def test_dial_to_a_unix_server_run_by_evio(start_server: Start, backend: str, tmp_path: Any) -> None:
    path = str(tmp_path / "evio.sock")
    start_server(Echo(), with_backend(f"unix://{path}", backend))
    ev = Dialer(greeting=b"round trip", echo=False)
    st = start_server(ev, local(backend))
    conn = st.server.dial(f"unix://{path}")
    ev.next("opened", conn)
    wait_for(lambda: ev.received.get(conn.id) == b"round trip", "the echo of the greeting")
    assert conn.close()
    assert ev.next("closed", conn) is None


@pytest.mark.parametrize(
    ("family", "template"),
    [
        (socket.AF_INET, "tcp4://127.0.0.1:{port}"),
        (socket.AF_INET, "tcp://127.0.0.1:{port}"),
        (socket.AF_INET6, "tcp6://[::1]:{port}"),
        (socket.AF_INET6, "tcp://[::1]:{port}"),
    ],
)
def test_dial_ip_literals(start_server: Start, backend: str, family: socket.AddressFamily, template: str) -> None:
    if family == socket.AF_INET6 and not have_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    with peer_listener(family) as lst:
        port = lst.getsockname()[1]
        ev = Dialer(greeting=b"hi")
        st = start_server(ev, local(backend))
        conn = st.server.dial(template.format(port=port))
        peer, peer_addr = accept(lst)
        with peer:
            assert recv_exactly(peer, 2) == b"hi"
            ev.next("opened", conn)
            assert conn.remote_addr[:2] == lst.getsockname()[:2]
            assert conn.local_addr[:2] == peer_addr[:2]
        assert ev.next("closed", conn) is None


def test_dial_from_many_threads_at_once(start_server: Start, backend: str) -> None:
    peer = start_server(Echo(), local(backend))
    host, port = peer.addr()[:2]
    ev = Dialer(echo=False)
    st = start_server(ev, local(backend))
    go = threading.Barrier(8)
    dialled: list[list[evio.Conn]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def dial_some(k: int) -> None:
        try:
            go.wait(WAIT)
            for i in range(10):
                token = f"<{k}:{i}>".encode()
                dialled[k].append(st.server.dial(f"tcp://{host}:{port}", context=token))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=dial_some, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads) and errors == []
    conns = [c for per_thread in dialled for c in per_thread]
    assert len({c.id for c in conns}) == 80
    # Each connection greeted the echo server with its token (opened returns the context) and got it back.
    wait_for(lambda: all(ev.received.get(c.id) == c.context for c in conns), "every token echoed")
    assert sorted(ev.opened_ids) == sorted(c.id for c in conns)
    for c in conns:
        assert c.close()  # from this thread
    wait_for(lambda: len(ev.closed_ids) == 80, "every dialled connection closed")
    st.stop()
    assert sorted(ev.closed_ids) == sorted(c.id for c in conns)


@pytest.mark.parametrize("context", ["close", "idle"])
def test_what_opened_returns_applies_to_a_dialled_conn(start_server: Start, backend: str, context: str) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        ev = Dialer()
        st = start_server(ev, local(backend))
        conn = st.server.dial(f"tcp://127.0.0.1:{port}", context=context)
        peer, _ = accept(lst)
        with peer:
            # (b"bye", Action.CLOSE): written, then closed.
            # (b"idle", Options(idle_timeout=0.2), None): written, then closed once idle.
            assert recv_until_closed(peer) == (b"bye" if context == "close" else b"idle")
        err = ev.closed_error(conn)
        if context == "close":
            assert err is None
        else:
            assert isinstance(err, TimeoutError)


def test_opened_raising_closes_the_dialled_conn(start_server: Start, backend: str) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        ev = Dialer()
        st = start_server(ev, local(backend))
        conn = st.server.dial(f"tcp://127.0.0.1:{port}", context="raise")
        peer, _ = accept(lst)
        with peer:
            ev.next("opened", conn)
            err = ev.next("closed", conn)
            assert isinstance(err, RuntimeError) and "on purpose" in str(err)
            assert recv_until_closed(peer) == b""


# ---- failing ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "tcp4"])
def test_dial_to_a_refused_port(start_server: Start, backend: str, scheme: str) -> None:
    with refused_port() as port:
        ev = Dialer(greeting=b"never")
        st = start_server(ev, local(backend))
        addr = f"{scheme}://127.0.0.1:{port}"
        conn = st.server.dial(addr)
        err = ev.next("closed", conn)
        assert isinstance(err, ConnectionRefusedError)
        assert err.errno == errno.ECONNREFUSED
        assert f"cannot connect to {addr!r}" in str(err)
        assert conn.id not in st.server.conns
        assert conn.write(b"x") is False and conn.close() is False
    st.stop()
    assert ev.opened_ids == []
    assert ev.closed_ids == [conn.id]


# glibc rejects these names without sending a query: the test's traffic stays on this machine.
@pytest.mark.parametrize("host", ["-.invalid", "bad name.invalid"])
def test_dial_to_a_name_that_does_not_resolve(start_server: Start, backend: str, host: str) -> None:
    ev = Dialer(greeting=b"never")
    st = start_server(ev, local(backend))
    addr = f"tcp://{host}:80"
    conn = st.server.dial(addr)
    err = ev.next("closed", conn)
    assert isinstance(err, OSError)
    assert repr(addr) in str(err)
    st.stop()
    assert ev.opened_ids == []
    assert ev.closed_ids == [conn.id]


def test_dial_times_out_on_a_listener_that_never_answers(start_server: Start, backend: str) -> None:
    with full_backlog() as (port, probe):
        ev = Dialer(greeting=b"never")
        st = start_server(ev, local(backend))
        addr = f"tcp://127.0.0.1:{port}"
        start = time.monotonic()
        conn = st.server.dial(addr, timeout=0.5)
        err = ev.next("closed", conn)
        elapsed = time.monotonic() - start
        assert isinstance(err, TimeoutError)
        assert err.errno == errno.ETIMEDOUT
        assert repr(addr) in str(err) and "0.5 s" in str(err)
        assert elapsed >= 0.5  # not early: the time-out runs on the monotonic clock from the dial
        # The probe went in before the dial and is still not connected: the listener dropped every
        # attempt all along, so the dial's connect was pending when the time-out fired.
        assert pending(probe), "the listener's backlog was not full: the test proves nothing"
    st.stop()
    assert ev.opened_ids == []
    assert ev.closed_ids == [conn.id]


def test_dial_to_a_unix_listener_with_a_full_backlog_times_out(
    start_server: Start, backend: str, tmp_path: Any
) -> None:
    path = str(tmp_path / "full.sock")
    with full_unix_backlog(path) as probe:
        ev = Dialer(greeting=b"never")
        st = start_server(ev, local(backend))
        addr = f"unix://{path}"
        start = time.monotonic()
        conn = st.server.dial(addr, timeout=0.3)
        err = ev.next("closed", conn)
        assert isinstance(err, TimeoutError)  # not the EAGAIN of the first attempt: the dial kept trying
        assert repr(addr) in str(err)
        assert time.monotonic() - start >= 0.3
        assert probe.connect_ex(path) == errno.EAGAIN  # still full: every attempt of the dial was refused
    st.stop()
    assert ev.opened_ids == []


def test_dial_to_a_missing_unix_path(start_server: Start, backend: str, tmp_path: Any) -> None:
    ev = Dialer(greeting=b"never")
    st = start_server(ev, local(backend))
    addr = f"unix://{tmp_path}/nobody-here.sock"
    conn = st.server.dial(addr)
    err = ev.next("closed", conn)
    assert isinstance(err, FileNotFoundError)
    assert f"cannot connect to {addr!r}" in str(err)
    st.stop()
    assert ev.opened_ids == []


MALFORMED = [
    "tcp://:80",  # no host
    "tcp://127.0.0.1:0",  # port 0
    "tcp://127.0.0.1:80?reuseport=1",  # no options
    "tcp://127.0.0.1:80?",
    "unix:///tmp/evio-test.sock?reuseport=0",
    "tcp-net://127.0.0.1:80",  # -net picks a server's backend
    "unix-net:///tmp/evio-test.sock",
    "udp://127.0.0.1:80",
    "tcp://127.0.0.1",
    "tcp://127.0.0.1:65536",
    "tcp://::1:80",
    "tcp4://[::1]:80",
    "tcp6://127.0.0.1:80",
    "unix://",
    "",
]


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_malformed_dial_addresses_are_a_value_error_at_once(start_server: Start, backend: str, where: str) -> None:
    ev = Dialer()
    st = start_server(ev, local(backend))
    server = st.server

    def try_all() -> dict[str, BaseException | None]:
        out: dict[str, BaseException | None] = {}
        for addr in MALFORMED:
            try:
                server.dial(addr)
            except BaseException as err:
                out[addr] = err
            else:
                out[addr] = None
        return out

    results = on_loop(server, try_all) if where == "loop" else try_all()
    for addr, err in results.items():
        assert isinstance(err, ValueError), f"dial({addr!r}) gave {err!r}"
        assert repr(addr) in str(err), f"the error does not name {addr!r}: {err}"
    # No connection came of any of them: the next event is the closed of the next dial.
    with refused_port() as port:
        conn = server.dial(f"tcp://127.0.0.1:{port}")
        assert isinstance(ev.next("closed", conn), ConnectionRefusedError)
    assert ev.opened_ids == [] and ev.closed_ids == [conn.id]


# ---- host names ------------------------------------------------------------------


def test_dial_by_host_name_localhost(start_server: Start, backend: str) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        before = resolver_threads()
        ev = Dialer(greeting=b"by name")
        st = start_server(ev, local(backend))
        assert resolver_threads() <= before  # a server that has not dialled a name starts no resolver
        conn = st.server.dial(f"tcp://localhost:{port}")
        peer, _ = accept(lst)
        with peer:
            assert recv_exactly(peer, 7) == b"by name"
            ev.next("opened", conn)
            assert conn.remote_addr == ("127.0.0.1", port)
            started = resolver_threads() - before
            assert started, "the name was not looked up on a resolver thread"
            assert all(t.ident != ev.loop_thread for t in started)
        assert ev.next("closed", conn) is None
        st.stop()
        wait_for(lambda: not any(t.is_alive() for t in started), "resolver threads to end with the server")


def fake_resolver(
    monkeypatch: pytest.MonkeyPatch, name: str, answer: list[tuple[Any, ...]]
) -> tuple[threading.Event, threading.Event, list[str]]:
    """Make `name` resolve to `answer`, slowly: the look-up waits for `release`.

    Returns (looking_up, release, the names of the threads that looked it up). Other names resolve
    as usual; `name` never reaches the real resolver (no DNS traffic).
    """
    real: GetAddrInfo = socket.getaddrinfo
    looking_up = threading.Event()
    release = threading.Event()
    threads: list[str] = []

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        if host != name:
            return real(host, port, family, type, proto, flags)
        if flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        threads.append(threading.current_thread().name)
        looking_up.set()
        release.wait(WAIT)
        return answer

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looking_up, release, threads


def inet(port: int) -> tuple[Any, ...]:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def test_the_loop_keeps_serving_while_a_name_resolves(
    start_server: Start, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with peer_listener() as lst:
        port = lst.getsockname()[1]
        looking_up, release, threads = fake_resolver(monkeypatch, "slow.example", [inet(port)])
        ev = Dialer(greeting=b"resolved")
        st = start_server(ev, local(backend))
        try:
            conn = st.server.dial("tcp://slow.example:9", timeout=None)
            assert looking_up.wait(WAIT)
            # The look-up is stuck; the loop is not: it serves a connection and runs a timer meanwhile.
            with st.connect() as client:
                client.sendall(b"are you there")
                assert recv_exactly(client, 13) == b"are you there"
            ran = threading.Event()
            st.server.after(0, ran.set)
            assert ran.wait(WAIT)
            assert not release.is_set() and conn.id not in ev.opened_ids
        finally:
            release.set()
        peer, _ = accept(lst)
        with peer:
            assert recv_exactly(peer, 8) == b"resolved"
        assert ev.closed_error(conn) is None
        assert threads == ["evio-resolver"]


def test_each_address_of_a_name_is_tried_in_order_until_one_connects(
    start_server: Start, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with refused_port() as bad, peer_listener() as first, peer_listener() as second:
        good1, good2 = first.getsockname()[1], second.getsockname()[1]
        _, release, _ = fake_resolver(monkeypatch, "multi.example", [inet(bad), inet(good1), inet(good2)])
        release.set()
        ev = Dialer(greeting=b"x")
        st = start_server(ev, local(backend))
        conn = st.server.dial("tcp://multi.example:9")
        peer, _ = accept(first)  # the refused address was passed over, the first good one taken
        with peer:
            assert recv_exactly(peer, 1) == b"x"
            ev.next("opened", conn)
            assert conn.remote_addr == ("127.0.0.1", good1)
            assert select.select([second], [], [], 0)[0] == [], "the dial went on past an address that connected"
        assert ev.next("closed", conn) is None


def test_a_name_whose_addresses_all_fail(start_server: Start, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with refused_port() as bad1, refused_port() as bad2:
        _, release, threads = fake_resolver(monkeypatch, "dead.example", [inet(bad1), inet(bad2)])
        release.set()
        ev = Dialer(greeting=b"never")
        st = start_server(ev, local(backend))
        conn = st.server.dial("tcp://dead.example:9")
        err = ev.next("closed", conn)
        assert isinstance(err, ConnectionRefusedError)
        assert "cannot connect to 'tcp://dead.example:9'" in str(err)
        assert threads == ["evio-resolver"]
    st.stop()
    assert ev.opened_ids == []


# ---- closed exactly once, and shutdown ------------------------------------------


def test_closed_fires_exactly_once_per_dialled_conn_whatever_happens(backend: str) -> None:
    before = open_fds()
    with refused_port() as refused, peer_listener() as lst, peer_listener() as closer, full_backlog() as (stuck, _):
        ev = Dialer(greeting=b"hi")
        st = ServerThread(ev, local(backend)).start()
        server = st.server
        ok = f"tcp://127.0.0.1:{lst.getsockname()[1]}"

        def dial_and_close_at_once() -> evio.Conn:
            c = server.dial(ok, context=b"unseen")
            assert c.close()
            return c

        conns: dict[str, evio.Conn] = {}
        conns["refused"] = server.dial(f"tcp://127.0.0.1:{refused}")
        conns["unresolvable"] = server.dial("tcp://-.invalid:80")
        conns["timed out"] = server.dial(f"tcp://127.0.0.1:{stuck}", timeout=0.2)
        conns["closed before up"] = on_loop(server, dial_and_close_at_once)
        conns["peer closes"] = server.dial(f"tcp://127.0.0.1:{closer.getsockname()[1]}")
        conns["we close"] = server.dial(ok)
        conns["opened closes"] = server.dial(ok, context="close")
        conns["opened raises"] = server.dial(ok, context="raise")
        peers = [accept(lst)[0] for _ in range(4)]
        with accept(closer)[0] as p:
            assert recv_exactly(p, 2) == b"hi"  # read, or closing would be a reset
        wait_for(lambda: conns["we close"].id in ev.opened_ids, "opened")
        assert conns["we close"].close()
        conns["under way at shutdown"] = server.dial(f"tcp://127.0.0.1:{stuck}", timeout=None)
        ended = [w for w in conns if w != "under way at shutdown"]
        wait_for(lambda: all(conns[w].id in ev.closed_ids for w in ended), "every dial but one to end")
        st.stop()
        for p in peers:
            p.close()
    errors: dict[int, list[BaseException | None]] = {}
    while not ev.log.empty():
        name, c, detail = ev.log.get_nowait()
        if name == "closed":
            errors.setdefault(c.id, []).append(detail)
    opens = ("peer closes", "we close", "opened closes", "opened raises")
    for what, c in conns.items():
        assert len(errors.get(c.id, [])) == 1, f"{what}: closed fired {len(errors.get(c.id, []))} times"
        assert ev.opened_ids.count(c.id) == (1 if what in opens else 0), what
    kinds = {what: type(errors[c.id][0]) for what, c in conns.items()}
    assert kinds == {
        "refused": ConnectionRefusedError,
        "unresolvable": socket.gaierror,
        "timed out": TimeoutError,
        "closed before up": type(None),
        "peer closes": type(None),
        "we close": type(None),
        "opened closes": type(None),
        "opened raises": RuntimeError,
        "under way at shutdown": ConnectionAbortedError,
    }
    assert len(ev.closed_ids) == len(conns)
    assert open_fds() == before


def test_dials_under_way_at_shutdown_are_aborted(backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    resolvers_before = resolver_threads()
    looking_up, release, _ = fake_resolver(monkeypatch, "hung.example", [inet(9)])
    path = str(tmp_path / "full.sock")
    refusals: list[BaseException | None] = []

    class Aborted(Dialer):
        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            try:  # the server is shutting down: no new dials
                conn.server.dial("tcp://127.0.0.1:9")
            except BaseException as refusal:
                refusals.append(refusal)
            else:
                refusals.append(None)
            return super().closed(conn, err)

    with full_backlog() as (stuck, probe), full_unix_backlog(path) as unix_probe:
        ev = Aborted(greeting=b"never")
        st = ServerThread(ev, local(backend)).start()
        server = st.server
        tcp = server.dial(f"tcp://127.0.0.1:{stuck}", timeout=None)
        unix = server.dial(f"unix://{path}", timeout=None)
        named = server.dial("tcp://hung.example:80", timeout=None)
        assert looking_up.wait(WAIT)
        last = server.dial(f"tcp://127.0.0.1:{stuck}", timeout=None)
        server.shutdown()  # from this thread, right after the dial above: carried out in call order
        start = time.monotonic()
        st.join()
        # The look-up is still stuck: serve does not wait for it (beyond a short grace for the thread).
        assert time.monotonic() - start < WAIT / 2
        # Nothing could have connected: both listeners were full all along, so every dial was under way.
        assert pending(probe)
        assert unix_probe.connect_ex(path) == errno.EAGAIN
        assert not release.is_set()
    release.set()
    errors = {}
    while not ev.log.empty():
        name, c, detail = ev.log.get_nowait()
        assert name == "closed", f"{name} fired for {c!r}"
        errors[c.id] = detail
    dials = {"tcp": tcp, "unix": unix, "named": named, "last": last}
    for what, c in dials.items():
        err = errors.get(c.id)
        assert isinstance(err, ConnectionAbortedError), f"{what}: {err!r}"
        assert "shut down" in str(err)
    assert "'tcp://hung.example:80'" in str(errors[named.id])
    assert sorted(ev.closed_ids) == sorted(c.id for c in dials.values())
    assert ev.opened_ids == []
    assert len(refusals) == 4 and all(isinstance(r, RuntimeError) for r in refusals), refusals
    wait_for(lambda: resolver_threads() <= resolvers_before, "the resolver thread to end once its look-up returned")


def test_dial_once_shutting_down_or_after_serve_returned_raises(start_server: Start, backend: str) -> None:
    ev = Dialer()
    st = start_server(ev, local(backend))
    server = st.server
    seen: queue.Queue[BaseException | None] = queue.Queue()

    def stop_then_dial() -> None:
        server.shutdown()  # on the loop's thread: takes effect at once
        try:
            server.dial("tcp://127.0.0.1:9")
        except BaseException as err:
            seen.put(err)
        else:
            seen.put(None)

    server.after(0, stop_then_dial)
    assert isinstance(seen.get(timeout=WAIT), RuntimeError)
    st.join()
    with pytest.raises(RuntimeError, match="shutting down"):
        server.dial("tcp://127.0.0.1:9")
    with pytest.raises(ValueError):  # a malformed address is still a ValueError first
        server.dial("tcp://:9")
    assert ev.log.empty()


# ---- a loop that only dials out --------------------------------------------------


def test_serve_without_an_address_dials_exchanges_and_shuts_down(start_server: Start, backend: str) -> None:
    peer = start_server(Echo(), local(backend))
    host, port = peer.addr()[:2]
    ev = Dialer(greeting=b"hello;", echo=False)
    use_backend(ev, backend)
    st = ServerThread(ev)  # no address at all
    st.start()
    try:
        assert st.server.addrs == ()
        assert st.server._loop._poller.name == backend
        conn = st.server.dial(f"tcp://{host}:{port}")
        assert ev.next("opened", conn) == ev.loop_thread
        assert conn.write(b"ping;")
        wait_for(lambda: ev.received.get(conn.id) == b"hello;ping;", "the echo")
        assert dict(st.server.conns) == {conn.id: conn}
    finally:
        st.server.shutdown()
        st.join()
    assert ev.next("closed", conn) is None
    assert ev.closed_ids == [conn.id]


# ---- a descriptor reused within one poll batch ------------------------------------


def test_dial_that_reuses_a_descriptor_closed_in_the_same_batch_is_not_fooled(backend: str) -> None:
    """Closing a connection and dialling from its `closed` (a reconnect) can reuse its descriptor while
    the poll batch being handled still holds a report for it: that report is not the dial's."""
    with full_backlog() as (stuck, probe):
        gate, held = threading.Event(), threading.Event()
        seen: dict[str, Any] = {}

        class Reconnect(Dialer):
            def __init__(self) -> None:
                super().__init__(echo=False)
                self.accepted: queue.Queue[evio.Conn] = queue.Queue()
                self.victim: evio.Conn | None = None
                self.redial: evio.Conn | None = None

            def opened(self, conn: evio.Conn) -> OpenedResult:
                if not conn.outbound:
                    self.accepted.put(conn)
                return super().opened(conn)

            def data(self, conn: evio.Conn, data: Data) -> DataResult:
                if data == b"close the other one" and self.victim is not None:
                    seen["victim open when told"] = self.victim.id in conn.server.conns
                    self.victim.close()  # its peer's end of input is already there: it closes at once
                return super().data(conn, data)

            def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
                if conn is self.victim:
                    # Make the victim's descriptor the lowest free one, as it often is anyway.
                    fd, squatters = conn._fd, []
                    while (spare := os.open(os.devnull, os.O_RDONLY)) < fd:
                        squatters.append(spare)
                    os.close(spare)
                    self.redial = conn.server.dial(f"tcp://127.0.0.1:{stuck}", timeout=0.5)
                    seen["redial took the descriptor"] = self.redial._fd == fd
                    for spare in squatters:
                        os.close(spare)
                return super().closed(conn, err)

        ev = Reconnect()
        st = ServerThread(ev, local(backend)).start()
        try:
            with st.connect() as teller, st.connect() as victim:
                told, ev.victim = ev.accepted.get(timeout=WAIT), ev.accepted.get(timeout=WAIT)

                def hold() -> None:  # keep the loop from polling until both reports are ready
                    held.set()
                    gate.wait(WAIT)

                st.server.after(0, hold)
                assert held.wait(WAIT)
                teller.sendall(b"close the other one")  # reported first...
                select.select([told._fd], [], [], WAIT)
                victim.shutdown(socket.SHUT_WR)  # ...then the victim's end of input, in the same batch
                select.select([ev.victim._fd], [], [], WAIT)
                gate.set()
                start = time.monotonic()
                wait_for(lambda: ev.redial is not None and ev.redial.id in ev.closed_ids, "the redial to end")
                err = ev.closed_error(ev.redial) if ev.redial is not None else None
                elapsed = time.monotonic() - start
        finally:
            gate.set()
            st.stop()
        if not (seen.get("victim open when told") and seen.get("redial took the descriptor")):
            pytest.fail(f"the scenario did not come about: {seen}")
        assert pending(probe)  # nothing could connect to that listener: the redial was pending throughout
        # Expected: the redial waits for its connect and times out. Observed: OSError(ENOTCONN) at once.
        assert isinstance(err, TimeoutError), f"the redial ended after {elapsed:.3f} s with {err!r}"


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "1"])
def test_a_dial_timeout_that_is_not_a_positive_number_is_refused(
    start_server: Start, backend: str, timeout: Any
) -> None:
    st = start_server(TestEvents(), local(backend))
    with pytest.raises((ValueError, TypeError), match="timeout"):
        st.server.dial("tcp://127.0.0.1:1", timeout=timeout)
    assert not st.server.conns
