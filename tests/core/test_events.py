"""Each event and each action, on both backends."""

from __future__ import annotations

import os
import queue
import socket
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
from evio.events import DataResult, OpenedResult, overridden


class Recorder(TestEvents):
    """Records every connection event, in order, as (name, conn id, detail)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: queue.Queue[tuple[str, int, Any]] = queue.Queue()

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.log.put(("opened", conn.id, conn))
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.log.put(("closed", conn.id, err))
        return None

    def next(self, name: str) -> tuple[int, Any]:
        got, id, detail = self.log.get(timeout=WAIT)
        assert got == name, f"expected {name}, got {got} {detail!r}"
        return id, detail


def test_opened_conn_attributes_and_welcome(start_server: Start, backend: str) -> None:
    class Welcome(Recorder):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            super().opened(conn)
            conn.context = {"greeted": True}
            return b"welcome\n"

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            assert conn.context == {"greeted": True}
            return data

    ev = Welcome()
    st = start_server(ev, local(backend))
    with st.connect() as a, st.connect() as b:
        assert recv_exactly(a, 8) == b"welcome\n"
        assert recv_exactly(b, 8) == b"welcome\n"
        id_a, conn_a = ev.next("opened")
        id_b, conn_b = ev.next("opened")
        assert id_a != id_b
        assert {conn_a.remote_addr, conn_b.remote_addr} == {a.getsockname(), b.getsockname()}
        assert conn_a.local_addr == st.addr() and conn_a.addr_index == 0
        a.sendall(b"x")
        assert a.recv(1) == b"x"
    ev.next("closed")
    ev.next("closed")


@pytest.mark.parametrize("form", ["pair", "triple"])
def test_opened_close_writes_output_first(start_server: Start, backend: str, form: str) -> None:
    class Refuse(Recorder):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            super().opened(conn)
            if form == "pair":
                return b"go away\n", evio.Action.CLOSE
            return bytearray(b"go away\n"), None, evio.Action.CLOSE

    ev = Refuse()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        assert recv_until_closed(c) == b"go away\n"
    ev.next("opened")
    assert ev.next("closed")[1] is None


def test_data_close_writes_output_then_closes(start_server: Start, backend: str) -> None:
    class Quit(Recorder):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data == b"quit\n":
                return b"bye\n", evio.Action.CLOSE
            return data

    ev = Quit()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        c.sendall(b"hi\n")
        assert recv_exactly(c, 3) == b"hi\n"
        c.sendall(b"quit\n")
        assert recv_until_closed(c) == b"bye\n"
    ev.next("opened")
    assert ev.next("closed")[1] is None


def test_close_with_large_pending_output_writes_all_of_it(start_server: Start, backend: str) -> None:
    blob = bytes(range(256)) * (8 << 12)  # 8 MiB: more than the socket buffers take at once

    class Dump(Recorder):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return blob, evio.Action.CLOSE

    ev = Dump()
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        conn = ev.next("opened")[1]
        c.sendall(b"go")
        wait_for(lambda: conn.pending > 0, "output pending behind a reader that waits")
        assert recv_until_closed(c) == blob
    assert ev.next("closed")[1] is None


def test_no_reference_to_a_returned_mutable_buffer(start_server: Start, backend: str) -> None:
    big = 8 << 20

    class Keep(TestEvents):
        def __init__(self) -> None:
            super().__init__()
            self.kept = bytearray()
            self.short = threading.Event()

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            self.kept[:] = b"a" * big
            return self.kept

        def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
            # After the first attempt, what is still to be sent must be the loop's own copy.
            self.kept[:] = b"z" * big
            if remaining:
                self.short.set()
            return None

    ev = Keep()
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"1")
        assert ev.short.wait(WAIT), "the first attempt was short: the rest was kept"
        got = recv_exactly(c, big)
    assert got == b"a" * big


def test_data_gets_bytes_or_a_reused_memoryview(start_server: Start, backend: str) -> None:
    types: queue.Queue[type] = queue.Queue()

    class Types(TestEvents):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            reuse = conn.addr_index == 1
            return None, evio.Options(reuse_input_buffer=reuse), evio.Action.NONE

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            types.put(type(data))
            return data  # a view into the loop's buffer is fine to return: it is sent or copied at once

    st = start_server(Types(), local(backend), local(backend))
    for index, expected in ((0, bytes), (1, memoryview)):
        with st.connect(index) as c:
            c.sendall(b"abc")
            assert recv_exactly(c, 3) == b"abc"
            assert types.get(timeout=WAIT) is expected


def test_detach_hands_over_a_blocking_socket(start_server: Start, backend: str) -> None:
    handed: queue.Queue[tuple[evio.Conn, socket.socket]] = queue.Queue()

    class Detach(Recorder):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            super().opened(conn)
            return None, evio.Options(tcp_keepalive=7), None

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"detaching\n", evio.Action.DETACH

        def detached(self, conn: evio.Conn, sock: socket.socket) -> evio.Action | None:
            handed.put((conn, sock))
            return None

    ev = Detach()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        c.sendall(b"please")
        assert recv_exactly(c, 10) == b"detaching\n"
        conn, sock = handed.get(timeout=WAIT)
        with sock:
            assert sock.getblocking()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            # Blocking I/O on the handed socket, while the loop no longer reads it.
            c.sendall(b"direct")
            assert recv_exactly(sock, 6) == b"direct"
            sock.sendall(b"reply")
            assert recv_exactly(c, 5) == b"reply"
            assert conn.wake() is False
            assert st.server.wake(conn.id) is False
    ev.next("opened")
    st.stop()
    assert ev.log.empty(), "closed must not fire for a detached connection"


def test_detach_without_handler_closes(start_server: Start, backend: str) -> None:
    class Detach(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"bye", evio.Action.DETACH

    st = start_server(Detach(), local(backend))
    with st.connect() as c:
        c.sendall(b"x")
        assert recv_until_closed(c) == b"bye"


def test_prewrite_and_postwrite_see_every_attempt(start_server: Start, backend: str) -> None:
    calls: list[tuple[str, int, int]] = []
    blob = b"q" * (16 << 20)

    class Hooks(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return blob if data == b"big" else data

        def prewrite(self, conn: evio.Conn, amount: int) -> evio.Action | None:
            calls.append(("pre", amount, -1))
            return None

        def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
            calls.append(("post", amount, remaining))
            return None

    st = start_server(Hooks(), local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"small")
        assert recv_exactly(c, 5) == b"small"
        wait_for(lambda: len(calls) >= 2)  # postwrite runs after the bytes are on their way
        assert calls == [("pre", 5, -1), ("post", 5, 0)]
        calls.clear()
        c.sendall(b"big")
        # Hold the reader until the first attempt came back short: the rest is pending.
        wait_for(lambda: any(kind == "post" and remaining > 0 for kind, _, remaining in calls[:]))
        assert recv_exactly(c, len(blob)) == blob
        wait_for(lambda: bool(calls) and calls[-1][0] == "post" and calls[-1][2] == 0)
    pre = [a for kind, a, _ in calls if kind == "pre"]
    post = [(a, r) for kind, a, r in calls if kind == "post"]
    assert len(pre) == len(post) >= 2, "a 16 MiB reply to a small window takes several attempts"
    assert pre[0] == len(blob)
    assert sum(a for a, _ in post) == len(blob)
    assert post[-1][1] == 0
    for (amount, remaining), attempted in zip(post, pre):
        assert amount + remaining == attempted


def test_prewrite_close_drops_output(start_server: Start, backend: str) -> None:
    class Veto(Recorder):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"never sent"

        def prewrite(self, conn: evio.Conn, amount: int) -> evio.Action | None:
            return evio.Action.CLOSE

    ev = Veto()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        c.sendall(b"x")
        assert recv_until_closed(c) == b""
    ev.next("opened")
    assert ev.next("closed")[1] is None


def test_postwrite_close_drops_the_rest(start_server: Start, backend: str) -> None:
    blob = b"r" * (16 << 20)

    class Once(Recorder):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return blob

        def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
            return evio.Action.CLOSE

    ev = Once()
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"x")
        ev.next("opened")
        assert ev.next("closed")[1] is None  # closed after the first attempt, before this side read
        got = recv_until_closed(c)
    assert 0 < len(got) < len(blob)


def test_shutdown_closes_every_connection_and_returns(start_server: Start, backend: str) -> None:
    class Stop(Recorder):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data == b"shutdown":
                return b"bye", evio.Action.SHUTDOWN
            return data

    ev = Stop()
    st = start_server(ev, local(backend))
    others = [st.connect() for _ in range(3)]
    for o in others:
        o.sendall(b"hi")
        assert recv_exactly(o, 2) == b"hi"
    with st.connect() as c:
        c.sendall(b"shutdown")
        assert recv_until_closed(c) == b"bye"
    st.join()
    for o in others:
        assert recv_until_closed(o) == b""
        o.close()
    events = []
    while not ev.log.empty():
        events.append(ev.log.get_nowait()[0])
    assert events.count("opened") == 4 and events.count("closed") == 4
    with pytest.raises(OSError):
        socket.create_connection(st.addr(), timeout=1).close()


def test_events_not_overridden_are_known_as_such() -> None:
    class Some(evio.Events):
        def __init__(self) -> None:  # no super().__init__(): allowed
            self.n = 0

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return None

    ev = Some()
    assert overridden(ev, "data")
    for name in ("serving", "opened", "closed", "detached", "prewrite", "postwrite", "tick"):
        assert not overridden(ev, name), name


def test_subclass_without_super_init_serves(backend: str) -> None:
    addrs: queue.Queue[Any] = queue.Queue()

    class Bare(evio.Events):
        def __init__(self) -> None:
            self.count = 0

        def serving(self, server: evio.Server) -> evio.Action | None:
            addrs.put(server.addrs[0])
            return None

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return data, evio.Action.SHUTDOWN

    t = threading.Thread(target=evio.serve, args=(Bare(), local(backend)))
    t.start()
    try:
        with socket.create_connection(addrs.get(timeout=WAIT), timeout=WAIT) as c:
            c.sendall(b"x")
            assert recv_until_closed(c) == b"x"
    finally:
        t.join(WAIT)
    assert not t.is_alive()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="tcp_keepalive"):
        evio.Options(tcp_keepalive=0)
    with pytest.raises(ValueError, match="tcp_keepalive"):
        evio.Options(tcp_keepalive=float("nan"))
    with pytest.raises(TypeError, match="tcp_keepalive"):
        evio.Options(tcp_keepalive="5")  # type: ignore[arg-type]


def test_input_stream_keeps_the_tail() -> None:
    s = evio.InputStream()
    assert s.begin(b"GET /a") == b"GET /a"
    s.end(memoryview(b"GET /a")[4:])
    assert len(s) == 2
    assert s.begin(None) == b"/a"
    assert s.begin(bytearray(b" HTTP")) == b"/a HTTP"
    s.end(b"")
    assert s.begin(b"x") == b"x"


def test_input_stream_survives_a_view_the_caller_still_holds() -> None:
    """A parser that keeps a memoryview of what `begin` returned must not make the next `begin` fail."""
    s = evio.InputStream()
    s.end(memoryview(b"abc"))  # something kept: `begin` now returns the stream's own buffer
    held = memoryview(s.begin(b"def"))
    s.end(held)  # nothing consumed
    assert s.begin(b"ghi") == b"abcdefghi"  # growing in place would raise BufferError while `held` lives
    held.release()
    s.end(b"i")
    assert s.begin(b"j") == b"ij"


def test_close_with_unread_input_still_delivers_everything(start_server: Start, backend: str) -> None:
    """Input the server never read must not turn the close into a reset that eats the reply."""
    reply = os.urandom(8 << 20)

    class Quit(Recorder):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return reply, evio.Action.CLOSE

    ev = Quit()
    st = start_server(ev, local(backend))
    for _ in range(5):
        with st.connect() as c:
            c.sendall(b"quit\r\n")
            time.sleep(0.01)
            c.sendall(b"more after quit\r\n" * 100)
            assert recv_until_closed(c) == reply  # a reset would raise ConnectionResetError here
        ev.next("opened")
        assert ev.next("closed")[1] is None


def test_shutdown_makes_one_write_attempt_of_pending_output(start_server: Start, backend: str) -> None:
    blob = os.urandom(32 << 20)

    class Stop(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return blob, evio.Action.SHUTDOWN

    st = start_server(Stop(), local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"x")
        st.join()  # serve returns without waiting for a reader
        got = recv_until_closed(c)
    assert 0 < len(got) < len(blob)
    assert got == blob[: len(got)]


@pytest.mark.parametrize("where", ["serving", "opened", "closed"])
def test_shutdown_from_other_events(backend: str, where: str) -> None:
    class Stop(TestEvents):
        def serving(self, server: evio.Server) -> evio.Action | None:
            super().serving(server)
            return evio.Action.SHUTDOWN if where == "serving" else None

        def opened(self, conn: evio.Conn) -> OpenedResult:
            return (b"hi", evio.Action.SHUTDOWN) if where == "opened" else b"hi"

        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            return evio.Action.SHUTDOWN if where == "closed" else None

        def tick(self) -> evio.events.TickResult:
            return None  # no other way to stop

    st = ServerThread(Stop(), local(backend)).start()
    if where != "serving":
        with st.connect() as c:
            assert recv_exactly(c, 2) == b"hi"
            if where == "closed":
                c.close()
            else:
                assert recv_until_closed(c) == b""
    st.join()
    assert st.error is None


def test_detach_from_opened_with_output_larger_than_the_socket_takes(start_server: Start, backend: str) -> None:
    greeting = os.urandom(8 << 20)
    handed: queue.Queue[socket.socket] = queue.Queue()
    conns: queue.Queue[evio.Conn] = queue.Queue()

    class Handoff(TestEvents):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            conns.put(conn)
            return greeting, evio.Action.DETACH

        def detached(self, conn: evio.Conn, sock: socket.socket) -> evio.Action | None:
            handed.put(sock)
            return None

    st = start_server(Handoff(), local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        conn = conns.get(timeout=WAIT)
        wait_for(lambda: conn.pending > 0, "the greeting pending while detaching")
        assert handed.empty(), "detached waits for the output to drain"
        assert recv_exactly(c, len(greeting)) == greeting
        with handed.get(timeout=WAIT) as sock:
            sock.sendall(b"after")
            assert recv_exactly(c, 5) == b"after"


def test_wake_while_output_is_pending_keeps_the_order(start_server: Start, backend: str) -> None:
    first = os.urandom(8 << 20)
    conns: queue.Queue[evio.Conn] = queue.Queue()

    class Queue(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data is None:
                return b"<after>"
            assert conn.wake()
            conns.put(conn)
            return first

    st = start_server(Queue(), local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"go")
        conn = conns.get(timeout=WAIT)
        # The wake's reply is queued behind the first reply, which waits for this reader.
        wait_for(lambda: conn.pending >= len(first) // 2, "the first reply pending")
        assert recv_exactly(c, len(first) + 7) == first + b"<after>"


def test_two_dimensional_memoryview_is_sent_whole(start_server: Start, backend: str) -> None:
    flat = os.urandom(8 << 20)

    class Matrix(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return memoryview(flat).cast("B", (1024, len(flat) // 1024))

    st = start_server(Matrix(), local(backend))
    with st.connect() as c:
        c.sendall(b"x")
        assert recv_exactly(c, len(flat)) == flat


@pytest.mark.parametrize("delay", [1e9, float("inf")])
def test_a_very_long_tick_delay_is_fine(backend: str, delay: float) -> None:
    class Sleepy(TestEvents):
        def tick(self) -> evio.events.TickResult:
            return delay

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"bye", evio.Action.SHUTDOWN

    st = ServerThread(Sleepy(), local(backend)).start()
    time.sleep(0.1)
    with st.connect() as c:
        c.sendall(b"x")
        assert recv_until_closed(c) == b"bye"
    st.join()
    assert st.error is None


def test_postwrite_alone_sees_every_attempt(start_server: Start, backend: str) -> None:
    posts: list[tuple[int, int]] = []
    blob = b"p" * (16 << 20)

    class Post(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return blob if data == b"big" else data

        def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
            posts.append((amount, remaining))
            return evio.Action.CLOSE if amount == 5 and data_was_close[0] else None

    data_was_close = [False]
    st = start_server(Post(), local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"small")
        assert recv_exactly(c, 5) == b"small"
        wait_for(lambda: posts == [(5, 0)])
        c.sendall(b"big")
        wait_for(lambda: len(posts) > 1)  # hold the reader until the first attempt of the big reply
        assert posts[1][1] > 0, "the big reply's first attempt was short: the rest took the pending path"
        assert recv_exactly(c, len(blob)) == blob
        wait_for(lambda: posts[-1][1] == 0 and len(posts) > 2)
        assert sum(a for a, _ in posts[1:]) == len(blob)
        assert posts[1][0] + posts[1][1] == len(blob)
        data_was_close[0] = True
        c.sendall(b"close")  # postwrite returning CLOSE on the fast path closes after the write
        assert recv_until_closed(c) == b"close"
