"""`Options.idle_timeout`: idle connections close with `TimeoutError`, busy ones do not, and waiting costs nothing.

Timing bounds here are generous on the late side: the server runs on a
thread of the test process, sharing the interpreter (and its lock) with
the clients, on machines that may be busy with other work. The early side
is tight: a connection must not close before it was idle for its time-out,
less the time between the loop reading its clock for a turn (it stamps
activity with that reading, not with a clock read per byte) and the event
that records the time: milliseconds for one connection, more for a burst
of accepts (`TURN`).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Callable

import pytest
from support import WAIT, Data, Start, TestEvents, local, recv_exactly, recv_until_closed

import evio
from evio.events import DataResult, OpenedResult

MiB = 1 << 20
#: How much earlier than its time-out a close may be recorded (see the module's docstring).
EARLY = 0.05
#: How much later than its time-out a close may come: time for the loop's thread to get the interpreter.
LATE = 1.0
#: How long one turn of the loop may take while it accepts a burst of connections (up to 128 a turn) and the
#: test's thread, connecting more, competes for the interpreter: up to 0.13 s was seen. A connection accepted
#: in that turn is stamped with the clock the loop read at its start, so it may close that much early.
TURN = 0.25


class Idle(TestEvents):
    """Gives each connection the idle time-out `timeout_for(conn)`; records when each opened and closed."""

    # Tick only once: a quiet loop is what the CPU test measures (`stop()` uses `Server.shutdown`).
    stop_poll = 3600.0

    def __init__(self, timeout_for: Callable[[evio.Conn], float | None], expected: int = 1) -> None:
        super().__init__()
        self.timeout_for = timeout_for
        self.expected = expected
        self.all_open = threading.Event()
        self.opened_at: dict[int, float] = {}
        self.conns: queue.Queue[evio.Conn] = queue.Queue()
        self.closed_with: queue.Queue[tuple[int, float, BaseException | None]] = queue.Queue()

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.opened_at[conn.id] = time.monotonic()
        self.conns.put(conn)
        if len(self.opened_at) == self.expected:
            self.all_open.set()
        return None, evio.Options(idle_timeout=self.timeout_for(conn)), None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put((conn.id, time.monotonic(), err))
        return None


def test_a_thousand_idle_connections_cost_no_cpu_then_all_time_out_on_time(start_server: Start, backend: str) -> None:
    timeout = 1.5  # long enough to connect 1,000 clients and measure a quiet window before the first expiry
    quiet = 0.3

    def untimed(conn: evio.Conn) -> bool:
        return conn.id % 100 == 0

    ev = Idle(lambda conn: None if untimed(conn) else timeout, expected=1000)
    st = start_server(ev, local(backend))
    clients: list[socket.socket] = []
    try:
        for _ in range(1000):
            clients.append(st.connect())
        assert ev.all_open.wait(WAIT), "not every connection was accepted"
        conns = [ev.conns.get_nowait() for _ in range(1000)]
        untimed_ids = {conn.id for conn in conns if untimed(conn)}
        untimed_addrs = {conn.remote_addr for conn in conns if untimed(conn)}
        assert len(untimed_ids) == 10

        # CPU time of the whole process (every thread) over a window in which nothing happens: the
        # loop's thread waits for its first idle deadline, this one waits for the window to end.
        cpu_before, began = time.process_time(), time.monotonic()
        threading.Event().wait(quiet)  # the measuring window, not a synchronisation
        cpu, ended = time.process_time() - cpu_before, time.monotonic()
        assert ended < min(ev.opened_at.values()) + timeout - TURN, "too slow to connect: the window met an expiry"
        assert ev.closed_with.empty()
        # A waiting loop uses well under 0.1% of the window here; one that spun, woke often or looked at
        # every connection now and then would use far more than the 2% allowed.
        assert cpu < 0.02 * (ended - began), f"{cpu:.4f} s of CPU in {ended - began:.3f} s while idle"

        for _ in range(1000 - len(untimed_ids)):
            id, closed_at, err = ev.closed_with.get(timeout=WAIT)
            assert id not in untimed_ids, "a connection without idle_timeout was closed"
            assert isinstance(err, TimeoutError), err
            idle = closed_at - ev.opened_at[id]
            assert timeout - TURN <= idle <= timeout + LATE, f"connection {id} closed after {idle:.3f} s"
        for c in clients:
            if c.getsockname() not in untimed_addrs:
                assert c.recv(1) == b"", "a timed-out client did not see the end of its connection"
        assert len(st.server.conns) == len(untimed_ids)
        assert ev.closed_with.empty()
    finally:
        for c in clients:
            c.close()


class Traffic(Idle):
    """Idle time-out `TIMEOUT`; counts what it receives, and can send a byte every `INTERVAL` from a timer."""

    TIMEOUT = 0.3
    INTERVAL = 0.05  # far below the time-out: a late timer or a slow client does not make a gap of 0.3 s

    def __init__(self, sends: int) -> None:
        super().__init__(lambda conn: self.TIMEOUT)
        self.sends = sends
        self.received = 0
        self.last_sent_at = 0.0

    def opened(self, conn: evio.Conn) -> OpenedResult:
        if self.sends:
            conn.server.after(self.INTERVAL, lambda: self.send(conn))
        return super().opened(conn)

    def send(self, conn: evio.Conn) -> None:
        assert conn.write(b"s"), "the connection closed while it was sending"
        self.last_sent_at = time.monotonic()
        self.sends -= 1
        if self.sends:
            conn.server.after(self.INTERVAL, lambda: self.send(conn))

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data:
            self.received += len(data)
        return None


@pytest.mark.parametrize("direction", ["receiving", "sending"])
def test_traffic_either_way_keeps_a_connection_open_until_it_stops(
    start_server: Start, backend: str, direction: str
) -> None:
    n = 15  # 15 x 0.05 s: busy for 2.5 time-outs
    ev = Traffic(sends=n if direction == "sending" else 0)
    st = start_server(ev, local(backend))
    with st.connect() as c:
        if direction == "receiving":
            for i in range(n):
                if i:
                    time.sleep(Traffic.INTERVAL)  # the load: a client that talks slowly, never pausing for long
                c.sendall(b"r")
            last_activity = time.monotonic()
        else:
            assert recv_exactly(c, n) == b"s" * n  # one byte per interval, from the server's timer
        id, closed_at, err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, TimeoutError), err
        if direction == "sending":
            last_activity = ev.last_sent_at
        else:
            assert ev.received == n
        busy = last_activity - ev.opened_at[id]
        assert busy > 2 * Traffic.TIMEOUT, "the traffic did not outlast the time-out: the test shows nothing"
        idle = closed_at - last_activity
        assert Traffic.TIMEOUT - EARLY <= idle <= Traffic.TIMEOUT + LATE, f"closed {idle:.3f} s after the last byte"
        assert recv_until_closed(c) == b""


def test_idle_timeout_on_a_dialled_connection(start_server: Start, backend: str) -> None:
    timeout = 0.3
    ev = Idle(lambda conn: timeout if conn.outbound else None)
    st = start_server(ev, local(backend))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()
        dialled = st.server.dial(f"tcp4://{host}:{port}")
        listener.settimeout(WAIT)
        peer, _ = listener.accept()
        with peer:
            conn = ev.conns.get(timeout=WAIT)
            assert conn is dialled and conn.outbound and conn.addr_index == -1
            peer.sendall(b"ping")  # traffic first: the time-out counts from the last byte
            sent_at = time.monotonic()
            id, closed_at, err = ev.closed_with.get(timeout=WAIT)
            assert id == conn.id
            assert isinstance(err, TimeoutError), err
            idle = closed_at - sent_at
            assert timeout - EARLY <= idle <= timeout + LATE, f"closed after {idle:.3f} s"
            peer.settimeout(WAIT)
            assert recv_until_closed(peer) == b""


class BigReply(Idle):
    """Answers `go` with a reply far larger than the kernel's buffers, under an idle time-out."""

    reply = b"b" * (16 * MiB)

    def __init__(self, timeout: float) -> None:
        super().__init__(lambda conn: timeout)
        self.pended = 0

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        return self.reply if data == b"go" else None

    def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
        self.pended = max(self.pended, remaining)
        return None


def test_idle_timeout_closes_a_connection_whose_peer_stopped_reading(start_server: Start, backend: str) -> None:
    timeout = 0.3
    ev = BigReply(timeout)
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        c.sendall(b"go")
        asked_at = time.monotonic()
        _, closed_at, err = ev.closed_with.get(timeout=WAIT)
        # Output was pending all along, but no byte went out: that is idle too.
        assert ev.pended > 0, "nothing was pending: the test shows nothing"
        assert isinstance(err, TimeoutError), err
        idle = closed_at - asked_at
        assert timeout - EARLY <= idle <= timeout + LATE, f"closed after {idle:.3f} s"
        got = recv_until_closed(c)
        assert 0 < len(got) < len(BigReply.reply)  # what the kernel took, not what was pending


def test_a_slow_but_steady_reader_of_a_large_reply_is_not_idle(start_server: Start, backend: str) -> None:
    timeout = 0.3
    ev = BigReply(timeout)
    st = start_server(ev, local(backend))
    with st.connect() as c:
        c.sendall(b"go")
        got = bytearray()
        began = time.monotonic()
        while time.monotonic() - began < 3 * timeout:
            chunk = c.recv(8192)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
            time.sleep(0.02)  # the load: about 400 KiB/s, never a gap near the time-out
        assert ev.closed_with.empty(), f"closed while the client was reading: {ev.closed_with.get()}"
        got += recv_exactly(c, len(BigReply.reply) - len(got))
        assert got == BigReply.reply


def test_time_spent_paused_is_not_idle_time(start_server: Start, backend: str) -> None:
    """A connection the program paused is not idle on the peer's account; the clock restarts on resume."""
    idle = 0.3
    conns: queue.Queue[evio.Conn] = queue.Queue()
    ended: queue.Queue[tuple[float, BaseException | None]] = queue.Queue()

    class Paused(TestEvents):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            conn.pause_reading()
            conns.put(conn)
            return None, evio.Options(idle_timeout=idle), None

        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            ended.put((time.monotonic(), err))
            return None

    st = start_server(Paused(), local(backend))
    with st.connect() as c:
        conn = conns.get(timeout=WAIT)
        # Three time-outs' worth of pause: not closed meanwhile.
        with pytest.raises(queue.Empty):
            ended.get(timeout=3 * idle)
        resumed = time.monotonic()
        conn.resume_reading()
        at, err = ended.get(timeout=WAIT)
        assert isinstance(err, TimeoutError)
        assert at - resumed >= idle - EARLY, "the idle clock started again at the resume"
        assert recv_until_closed(c) == b""
