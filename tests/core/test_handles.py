"""`Conn` as a handle: write, close, write_eof, pause and resume, from the loop's thread and from others."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import struct
import threading
import time
from typing import Any

import pytest
from support import (
    SMALL_WINDOW,
    WAIT,
    Data,
    ServerThread,
    Start,
    TestEvents,
    local,
    recv_exactly,
    recv_until_closed,
    wait_for,
)

import evio
from evio.inbox import Inbox

MiB = 1 << 20


class Handles(TestEvents):
    """Hands every connection to the test, and logs events in order as (name, conn id, detail)."""

    def __init__(self) -> None:
        super().__init__()
        self.conns: queue.Queue[evio.Conn] = queue.Queue()
        self.log: queue.Queue[tuple[str, int, Any]] = queue.Queue()

    def opened(self, conn: evio.Conn) -> evio.OpenedResult:
        self.conns.put(conn)
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.log.put(("closed", conn.id, err))
        return None

    def next_closed(self) -> tuple[int, BaseException | None]:
        name, id, err = self.log.get(timeout=WAIT)
        assert name == "closed", (name, id, err)
        return id, err


def pair(st: ServerThread, ev: Handles, **kw: Any) -> tuple[socket.socket, evio.Conn]:
    """A client socket and the server's `Conn` for it."""
    c = st.connect(**kw)
    return c, ev.conns.get(timeout=WAIT)


def send_blocks(c: socket.socket, limit: int = 64 * MiB) -> int:
    """Send until nobody takes a byte for half a second; return how much went."""
    c.setblocking(False)
    chunk = b"p" * (1 << 16)
    sent = 0
    stalled_since = time.monotonic()
    while sent < limit:
        try:
            sent += c.send(chunk)
            stalled_since = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - stalled_since > 0.5:
                break  # the kernel's buffers are full: TCP holds this side back
            select.select([], [c], [], 0.05)
    c.setblocking(True)
    c.settimeout(WAIT)
    return sent


# ---- write ------------------------------------------------------------------------------------------------


def test_write_to_another_connection_from_an_event(start_server: Start, backend: str) -> None:
    """A relay: what one client sends, the other receives; writes in an event go before its return."""

    class Relay(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            assert data is not None
            for other in conn.server.conns.values():
                if other is not conn:
                    assert other.write(b"<" + bytes(data) + b">") is True
            assert conn.write(b"first,") is True
            return b"then the reply"

    ev = Relay()
    st = start_server(ev, local(backend))
    a, conn_a = pair(st, ev)
    b, conn_b = pair(st, ev)
    with a, b:
        assert dict(st.server.conns) == {conn_a.id: conn_a, conn_b.id: conn_b}
        a.sendall(b"hi")
        assert recv_exactly(b, 4) == b"<hi>"
        assert recv_exactly(a, len(b"first,then the reply")) == b"first,then the reply"
    assert conn_a.outbound is False and conn_a.server is st.server


def test_write_copies_a_mutable_buffer_before_returning(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev, rcvbuf=SMALL_WINDOW)
    with c:
        buf = bytearray(b"a" * (8 * MiB))
        assert conn.write(buf)  # from this thread: queued for the loop
        buf[:] = b"z" * len(buf)
        view_of = bytearray(b"b" * (8 * MiB))
        assert conn.write(memoryview(view_of))
        view_of[:] = b"y" * len(view_of)
        assert recv_exactly(c, 16 * MiB) == b"a" * (8 * MiB) + b"b" * (8 * MiB)


def test_write_returns_false_once_closing_or_closed(start_server: Start, backend: str) -> None:
    results: queue.Queue[tuple[bool, ...]] = queue.Queue()

    class Closer(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            first = conn.close()
            results.put((first, conn.close(), conn.write(b"refused"), conn.write_eof()))
            return b"the event's own reply still goes"

    ev = Closer()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        c.sendall(b"x")
        assert results.get(timeout=WAIT) == (True, False, False, False)
        assert recv_until_closed(c) == b"the event's own reply still goes"
    assert ev.next_closed() == (conn.id, None)
    assert conn.write(b"late") is False
    assert conn.close() is False
    assert conn.pending == 0


def test_write_of_a_bad_type_is_a_type_error(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c, pytest.raises(TypeError, match="takes bytes, bytearray or memoryview"):
        conn.write("text")  # type: ignore[arg-type]


def test_pending_counts_what_the_socket_has_not_taken(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev, rcvbuf=SMALL_WINDOW)
    with c:
        blob = os.urandom(16 * MiB)
        assert conn.write(blob)
        # From this thread a recent value: it counts the write on its way to the loop, then what is left.
        # The loop takes the write and the socket a part of it: the rest stays queued on the loop's side
        # (the reader takes nothing yet, and 16 MiB is far more than a small window holds).
        wait_for(lambda: conn._posted == 0 and 0 < conn._outlen < len(blob), "a short send, the rest queued")
        assert 0 < conn.pending < len(blob)
        assert recv_exactly(c, len(blob)) == blob
        wait_for(lambda: conn.pending == 0)


def test_eight_threads_writing_to_one_connection_keep_their_order(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    per_thread, threads_n = 2000, 8
    go = threading.Barrier(threads_n)
    refused: list[int] = []

    def writer(t: int) -> None:
        go.wait()
        for n in range(per_thread):
            if not conn.write(b"%d:%d\n" % (t, n)):
                refused.append(t)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    got = bytearray()
    c.settimeout(WAIT)
    expected_lines = per_thread * threads_n
    while got.count(b"\n") < expected_lines:
        chunk = c.recv(1 << 20)
        assert chunk, "closed early"
        got += chunk
    for t in threads:
        t.join(WAIT)
    c.close()
    assert not refused
    seen: dict[int, list[int]] = {t: [] for t in range(threads_n)}
    for line in bytes(got).splitlines():
        writer_n, n = map(int, line.split(b":"))
        seen[writer_n].append(n)
    assert all(seen[w] == list(range(per_thread)) for w in range(threads_n)), "each thread's writes in its order"


def test_many_posts_from_a_thread_share_one_wake() -> None:
    """The inbox signals its descriptor once per batch, however many calls were posted."""
    inbox = Inbox()
    try:
        calls: list[int] = []
        for n in range(100):
            assert inbox.post(lambda _c, arg: calls.append(arg), None, n)
        if inbox.fd == inbox._wfd:  # an eventfd: reading gives the sum of what was written
            signals = int.from_bytes(os.read(inbox.fd, 8), "little")
        else:  # a pipe: eight bytes per signal
            signals = len(os.read(inbox.fd, 64)) // 8
        assert signals == 1, "one signal for the whole batch"
        for function, conn, arg in inbox.take():
            function(conn, arg)
        assert calls == list(range(100))
        assert inbox.post(lambda _c, arg: calls.append(arg), None, 100)
        assert len(inbox.take()) == 1
    finally:
        assert inbox.close() == []
    assert inbox.post(lambda _c, _a: None, None, None) is False


# ---- close ------------------------------------------------------------------------------------------------


def test_close_of_another_connection_fires_closed_after_the_event(start_server: Start, backend: str) -> None:
    order: list[str] = []

    class Kick(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            for other in list(conn.server.conns.values()):
                if other is not conn:
                    order.append("close")
                    assert other.close()
                    order.append("after close")
            order.append("event returns")
            return b"kicked"

        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            order.append(f"closed {conn.id}")
            return super().closed(conn, err)

    ev = Kick()
    st = start_server(ev, local(backend))
    victim, victim_conn = pair(st, ev)
    kicker, _ = pair(st, ev)
    with victim, kicker:
        assert victim_conn.write(b"pending goes first")
        kicker.sendall(b"go")
        assert recv_exactly(kicker, 6) == b"kicked"
        assert recv_until_closed(victim) == b"pending goes first"
        assert ev.next_closed() == (victim_conn.id, None)
        assert order == ["close", "after close", "event returns", f"closed {victim_conn.id}"]


def test_close_and_write_eof_from_another_thread(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        assert conn.write(b"last words")
        assert conn.close()
        assert conn.write(b"refused: after close, in call order") is False
        assert recv_until_closed(c) == b"last words"
    assert ev.next_closed() == (conn.id, None)

    c, conn = pair(st, ev)
    with c:
        assert conn.write(b"request")
        assert conn.write_eof()
        assert conn.write(b"refused") is False
        assert recv_until_closed(c) == b"request"  # end of input, while the server still reads
        c.sendall(b"a reply after our end of input")
        c.shutdown(socket.SHUT_WR)
    assert ev.next_closed() == (conn.id, None)


def test_write_eof_keeps_reading_until_the_peer_closes(start_server: Start, backend: str) -> None:
    received: queue.Queue[bytes] = queue.Queue()

    class Ask(Handles):
        def opened(self, conn: evio.Conn) -> evio.OpenedResult:
            super().opened(conn)
            assert conn.write(b"question")
            assert conn.write_eof()
            assert conn.write_eof() is False
            return None

        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            assert data is not None
            received.put(bytes(data))
            return None

    ev = Ask()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        assert recv_until_closed(c) == b"question"
        for part in (b"answer, ", b"in parts"):
            c.sendall(part)
            assert received.get(timeout=WAIT) == part
        assert conn.write(b"x") is False
        c.shutdown(socket.SHUT_WR)
        assert ev.next_closed() == (conn.id, None)


def test_write_eof_after_a_large_write_sends_all_first(start_server: Start, backend: str) -> None:
    blob = os.urandom(8 * MiB)
    asked = threading.Event()

    class Dump(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            assert conn.write(blob)
            assert conn.pending > 0, "the blob did not fit: the EOF has to wait for it"
            assert conn.write_eof()
            asked.set()
            return None

    ev = Dump()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev, rcvbuf=SMALL_WINDOW)
    with c:
        c.sendall(b"go")
        # Nothing is read until the EOF was asked for: a reader on the other core could otherwise drain
        # the blob while the loop was still handing it to the kernel, and nothing would be pending.
        assert asked.wait(WAIT)
        assert recv_until_closed(c) == blob
        c.shutdown(socket.SHUT_WR)
    assert ev.next_closed() == (conn.id, None)


# ---- pause_reading / resume_reading -------------------------------------------------------------------


def test_pause_holds_the_peer_back_and_resume_delivers_everything(start_server: Start, backend: str) -> None:
    got = bytearray()

    class Count(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            assert data is not None
            got.extend(data)
            return None

    ev = Count()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        conn.pause_reading()
        conn.pause_reading()  # idempotent
        sent = send_blocks(c)
        assert len(got) < sent, "a paused connection is not read"
        assert sent < 32 * MiB, f"{sent} bytes went into a paused connection: nothing held the peer back"
        assert conn.write(b"a paused connection still writes")
        assert recv_exactly(c, 32) == b"a paused connection still writes"
        conn.resume_reading()
        conn.resume_reading()
        wait_for(lambda: len(got) == sent, "everything delivered after resume")


def test_pause_from_an_event_on_the_loop_thread(start_server: Start, backend: str) -> None:
    seen: list[bytes] = []

    class OneAtATime(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            assert data is not None
            seen.append(bytes(data))
            conn.pause_reading()  # at once: nothing more is read until the test resumes it
            return b"ok"

    ev = OneAtATime()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        c.sendall(b"one")
        assert recv_exactly(c, 2) == b"ok"
        c.sendall(b"two")
        # The paused connection must not be read: "two" arrives only after the resume below.
        c.settimeout(0.3)
        with pytest.raises(socket.timeout):
            c.recv(1)
        c.settimeout(WAIT)
        assert seen == [b"one"]
        conn.resume_reading()
        assert recv_exactly(c, 2) == b"ok"
        assert seen == [b"one", b"two"]


@pytest.mark.parametrize("ending", ["eof", "reset"])
def test_a_paused_connection_reports_its_end_when_resumed(start_server: Start, backend: str, ending: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    conn.pause_reading()
    c.sendall(b"unread")
    if ending == "reset":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    else:
        c.shutdown(socket.SHUT_WR)
    # While paused, nothing is reported (and the loop does not spin on a reset it is not reading).
    with pytest.raises(queue.Empty):
        ev.log.get(timeout=0.3)
    conn.resume_reading()
    id, err = ev.next_closed()
    assert id == conn.id
    if ending == "reset":
        assert isinstance(err, ConnectionResetError)
    else:
        assert err is None
        c.close()


def test_write_output_does_not_stop_reading_but_replies_do(start_server: Start, backend: str) -> None:
    """Pending output from write() leaves the connection readable; pending replies hold its reading."""
    reads: queue.Queue[bytes] = queue.Queue()
    blob = os.urandom(8 * MiB)

    class Mixed(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            assert data is not None
            reads.put(bytes(data))
            if data == b"write":
                conn.write(blob)
            elif data == b"reply":
                return blob
            return None

    ev = Mixed()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev, rcvbuf=SMALL_WINDOW)
    with c:
        c.sendall(b"write")
        assert reads.get(timeout=WAIT) == b"write"
        wait_for(lambda: conn.pending > 0)
        c.sendall(b"more")
        assert reads.get(timeout=WAIT) == b"more", "written output pending: still reading"
        assert recv_exactly(c, len(blob)) == blob
        wait_for(lambda: conn.pending == 0)
        c.sendall(b"reply")
        assert reads.get(timeout=WAIT) == b"reply"
        wait_for(lambda: conn.pending > 0)
        c.sendall(b"held")
        with pytest.raises(queue.Empty):
            reads.get(timeout=0.3)  # a pending reply holds reading back
        assert recv_exactly(c, len(blob)) == blob
        assert reads.get(timeout=WAIT) == b"held"


def test_calls_from_threads_after_serve_returned(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    st.stop()
    c.close()
    assert conn.write(b"x") is False
    assert conn.close() is False
    assert conn.write_eof() is False
    conn.pause_reading()  # no error, nothing to do
    conn.resume_reading()
    st.server.shutdown()  # idempotent


def test_is_closing_and_is_reading_follow_the_state(start_server: Start, backend: str) -> None:
    seen: queue.Queue[tuple[bool, bool]] = queue.Queue()

    class Look(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            seen.put((conn.is_closing(), conn.is_reading()))
            conn.pause_reading()
            seen.put((conn.is_closing(), conn.is_reading()))
            conn.resume_reading()
            conn.write_eof()
            seen.put((conn.is_closing(), conn.is_reading()))
            return None

    ev = Look()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        c.sendall(b"x")
        assert [seen.get(timeout=WAIT) for _ in range(3)] == [(False, True), (False, False), (True, True)]
        assert recv_until_closed(c) == b""
    assert ev.next_closed() == (conn.id, None)
    assert conn.is_closing() and not conn.is_reading()


def test_detach_caused_from_another_event_fires_after_it(start_server: Start, backend: str) -> None:
    """prewrite of connection B returning DETACH, during a write from A's event: `detached` waits for A's event."""
    order: list[str] = []
    handed: queue.Queue[socket.socket] = queue.Queue()

    class Hand(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            for other in list(conn.server.conns.values()):
                if other is not conn:
                    order.append("write")
                    other.write(b"handing over")
                    order.append("written")
            order.append("returns")
            return None

        def prewrite(self, conn: evio.Conn, amount: int) -> evio.Action | None:
            return evio.Action.DETACH if amount == len(b"handing over") else None

        def detached(self, conn: evio.Conn, sock: socket.socket) -> evio.Action | None:
            order.append("detached")
            handed.put(sock)
            return None

    ev = Hand()
    st = start_server(ev, local(backend))
    b, _ = pair(st, ev)
    a, _ = pair(st, ev)
    with a, b:
        a.sendall(b"go")
        with handed.get(timeout=WAIT) as sock:
            assert recv_exactly(b, 12) == b"handing over"
            sock.sendall(b"mine now")
            assert recv_exactly(b, 8) == b"mine now"
    assert order == ["write", "written", "returns", "detached"]


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_close_after_write_eof_closes_without_waiting_for_the_peer(
    start_server: Start, backend: str, where: str
) -> None:
    results: queue.Queue[tuple[bool, bool]] = queue.Queue()

    class HalfThenClose(Handles):
        def opened(self, conn: evio.Conn) -> evio.OpenedResult:
            super().opened(conn)
            if where == "loop":
                results.put((conn.write_eof(), conn.close()))
            return None

    ev = HalfThenClose()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev)
    with c:
        if where == "thread":
            results.put((conn.write_eof(), conn.close()))
        assert results.get(timeout=WAIT) == (True, True)
        assert recv_until_closed(c) == b""
        # The peer never closed its side: the close did not wait for it.
        assert ev.next_closed() == (conn.id, None)
        assert conn.close() is False


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_abort_drops_pending_output_and_closes_at_once(start_server: Start, backend: str, where: str) -> None:
    """A peer that reads nothing: close() would wait for it (the closing time-out); abort() does not."""
    blob = b"a" * (8 * MiB)

    class Flood(Handles):
        def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
            if where == "loop":
                assert conn.write(blob)
                conn.server.after(0.05, conn.abort)
            return blob if where == "thread" else None

    ev = Flood()
    st = start_server(ev, local(backend))
    c, conn = pair(st, ev, rcvbuf=SMALL_WINDOW)
    with c:
        c.sendall(b"go")
        wait_for(lambda: conn.pending > 0, "output pending behind a reader that waits")
        if where == "thread":
            assert conn.abort()
        began = time.monotonic()
        assert ev.next_closed() == (conn.id, None)
        assert time.monotonic() - began < 5.0, "at once, not after the 30 s closing time-out"
        assert conn.abort() is False
        assert conn.write(b"x") is False
        c.settimeout(WAIT)
        got = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := c.recv(1 << 20):
                got += len(chunk)
        # One blob was written; the small window held most of it back when abort() dropped the rest.
        assert got < len(blob), "what was pending was dropped"


def test_abort_of_a_dial_under_way(start_server: Start, backend: str) -> None:
    ev = Handles()
    st = start_server(ev, local(backend))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(0)
    fillers = [socket.socket() for _ in range(4)]
    try:
        for f in fillers:  # a backlog that is full: the dial's connect stays pending
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(holder.getsockname())
        conn = st.server.dial(f"tcp://127.0.0.1:{holder.getsockname()[1]}", timeout=5.0)
        assert conn.abort()
        assert ev.next_closed() == (conn.id, None)
    finally:
        holder.close()
        for f in fillers:
            f.close()
