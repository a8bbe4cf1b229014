"""Wakes from other threads, and the ticker."""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest
from support import WAIT, Data, ServerThread, Start, TestEvents, local, recv_exactly, recv_until_closed, wait_for

import evio
from evio.events import DataResult, OpenedResult, TickResult


class Wakeable(TestEvents):
    """Counts the wakes each connection got; replies with a byte per wake."""

    def __init__(self) -> None:
        super().__init__()
        self.conns: queue.Queue[evio.Conn] = queue.Queue()
        self.woken: dict[int, int] = {}
        self.last_woken: dict[int, float] = {}

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.woken[conn.id] = 0
        self.conns.put(conn)
        return None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data is None:
            self.woken[conn.id] += 1
            self.last_woken[conn.id] = time.monotonic()
            return b"w"
        return data


def drain(c: socket.socket, quiet: float = 0.3) -> bytes:
    """Read until nothing arrives for `quiet` seconds."""
    got = b""
    c.settimeout(quiet)
    try:
        while True:
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    c.settimeout(WAIT)
    return got


@pytest.mark.slow
def test_wakes_from_eight_threads(start_server: Start, backend: str) -> None:
    ev = Wakeable()
    st = start_server(ev, local(backend))
    clients = [st.connect() for _ in range(8)]
    conns = [ev.conns.get(timeout=WAIT) for _ in range(8)]
    per_thread = 500
    results: list[list[bool]] = [[] for _ in range(8)]
    returned_at: list[dict[int, float]] = [{} for _ in range(8)]
    go = threading.Barrier(8)

    def hammer(i: int) -> None:
        go.wait()
        for n in range(per_thread):
            target = conns[(i + n) % 8]
            called = time.monotonic()  # before the call: its data may run before the call returns
            results[i].append(target.wake() if n % 2 else st.server.wake(target.id))
            returned_at[i][target.id] = called

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert all(all(r) for r in results), "every wake of an open connection returns True"
    # Every wake is followed by a data(conn, None) that began after it returned; wakes may coalesce.
    last_return = {conn.id: max(r.get(conn.id, 0.0) for r in returned_at) for conn in conns}
    wait_for(lambda: all(ev.last_woken.get(id, 0.0) >= t for id, t in last_return.items()))
    for c in clients:
        assert drain(c).count(b"w") >= 1
    # Once the burst is over, one more wake each fires exactly one more data(conn, None).
    before = dict(ev.woken)
    for conn in conns:
        assert conn.wake()
    for c, conn in zip(clients, conns):
        assert recv_exactly(c, 1) == b"w"
        assert ev.woken[conn.id] == before[conn.id] + 1
        c.close()


def test_wake_of_unknown_closed_or_stopped_ids_is_false(start_server: Start, backend: str) -> None:
    closed = threading.Event()

    class Track(Wakeable):
        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            closed.set()
            return None

    ev = Track()
    st = start_server(ev, local(backend))
    assert st.server.wake(12345) is False
    c = st.connect()
    conn = ev.conns.get(timeout=WAIT)
    assert conn.wake() is True
    assert recv_exactly(c, 1) == b"w"
    c.close()
    assert closed.wait(WAIT)
    assert conn.wake() is False
    assert st.server.wake(conn.id) is False
    st.stop()
    assert st.server.wake(conn.id) is False


def test_wake_during_shutdown_never_fails(start_server: Start, backend: str) -> None:
    """Threads keep waking while the server shuts down: no error, no write to a closed fd."""
    ev = Wakeable()
    st = start_server(ev, local(backend))
    clients = [st.connect() for _ in range(4)]
    conns = [ev.conns.get(timeout=WAIT) for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            while not stop.is_set():
                for conn in conns:
                    conn.wake()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(ev.woken.values()) >= 10, "wakes delivered while the threads hammer")
        st.stop()  # with four threads waking as fast as they can: their wakes must not bury the shutdown
    finally:
        stop.set()  # a failed stop must not leave four threads spinning under every later test
        for t in threads:
            t.join(WAIT)
    assert not errors
    assert all(conn.wake() is False for conn in conns)
    for c in clients:
        c.close()


def test_a_wake_after_a_write_from_a_thread_fires_after_the_write(start_server: Start, backend: str) -> None:
    """Bursts of write-then-wake: the last wake of a burst must not join a wake queued before its write."""

    class Marks(TestEvents):
        def __init__(self) -> None:
            super().__init__()
            self.conns: queue.Queue[evio.Conn] = queue.Queue()

        def opened(self, conn: evio.Conn) -> OpenedResult:
            self.conns.put(conn)
            return None

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"|" if data is None else None

    ev = Marks()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        conn = ev.conns.get(timeout=WAIT)
        got = b""
        for burst in range(20):
            for n in range(50):
                assert conn.write(b"%d.%d;" % (burst, n))
                assert conn.wake()
            last = b"%d.49;" % burst
            deadline = time.monotonic() + WAIT
            while last not in got or b"|" not in got[got.index(last) :]:
                assert time.monotonic() < deadline, f"no data(conn, None) after {last!r}: {got[-200:]!r}"
                c.settimeout(max(0.01, deadline - time.monotonic()))
                got += c.recv(1 << 16)
            # Every write arrived, in order, between the marks.
            assert got.replace(b"|", b"").endswith(b"".join(b"%d.%d;" % (burst, n) for n in range(50)))


def test_a_wake_posted_while_its_data_runs_gets_a_data_of_its_own(start_server: Start, backend: str) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[float] = []

    class Slow(Wakeable):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data is None:
                calls.append(time.monotonic())
                if len(calls) == 1:
                    entered.set()
                    assert release.wait(WAIT)
            return super().data(conn, data)

    ev = Slow()
    st = start_server(ev, local(backend))
    with st.connect():
        conn = ev.conns.get(timeout=WAIT)
        assert conn.wake()
        assert entered.wait(WAIT)
        assert conn.wake()  # the first wake's data is running: this one cannot join it
        release.set()
        wait_for(lambda: len(calls) == 2, "a second data(conn, None)")


def test_wake_from_the_loop_thread(start_server: Start, backend: str) -> None:
    """A wake called inside an event is delivered without another thread's help."""

    class Chain(Wakeable):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data is None:
                conn.context -= 1
                if conn.context:
                    conn.wake()
                return b"."
            conn.context = 50
            conn.wake()
            return None

    st = start_server(Chain(), local(backend))
    with st.connect() as c:
        c.sendall(b"go")
        assert recv_exactly(c, 50) == b"." * 50


class Ticker(TestEvents):
    def __init__(self, script: list[TickResult]) -> None:
        super().__init__()
        self.script = script
        self.times: list[float] = []
        self.order: list[str] = []

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.order.append("serving")
        return super().serving(server)

    def tick(self) -> TickResult:
        self.order.append("tick")
        self.times.append(time.monotonic())
        if self.script:
            return self.script.pop(0)
        return super().tick()


def test_tick_comes_after_serving_then_after_each_delay(start_server: Start, backend: str) -> None:
    ev = Ticker([0.2, (0.1, evio.Action.NONE), -5.0, 0.0, (0.3, None)])
    st = start_server(ev, local(backend))
    deadline = time.monotonic() + WAIT
    while len(ev.times) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    st.stop()
    assert ev.order[:2] == ["serving", "tick"]
    gaps = [b - a for a, b in zip(ev.times, ev.times[1:])]
    assert 0.19 <= gaps[0] < 1.0
    assert 0.09 <= gaps[1] < 1.0
    assert gaps[2] < 0.1  # a negative delay counts as zero
    assert gaps[3] < 0.1
    assert 0.29 <= gaps[4] < 1.5


def test_tick_shutdown_stops_at_once(backend: str) -> None:
    ev = Ticker([0.05, (60.0, evio.Action.SHUTDOWN)])
    began = time.monotonic()
    st = ServerThread(ev, local(backend))
    st.start()
    st.join()
    assert len(ev.times) == 2
    assert time.monotonic() - began < 5


def test_tick_none_stops_ticking(backend: str) -> None:
    class StopByData(Ticker):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"bye", evio.Action.SHUTDOWN

    ev = StopByData([0.05, None])
    st = ServerThread(ev, local(backend)).start()
    try:
        time.sleep(0.5)
        assert len(ev.times) == 2
    finally:
        with st.connect() as c:  # ticks are off, so the server stops through data
            c.sendall(b"x")
            assert recv_until_closed(c) == b"bye"
        st.join()
