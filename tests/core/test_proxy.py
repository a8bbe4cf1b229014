"""A TCP proxy written with `dial`, `write`, `pause_reading` and `resume_reading`; half-close and resets through it.

The proxy and its backend are evio servers on threads; the client is a
plain blocking socket. The proxy pairs each accepted client with a dialled
backend connection (each one's `context` is the other), writes what one
side reads to the other with `peer.write()`, pauses a side while its peer
has more than `BOUND` bytes pending, and resumes it from the peer's
`postwrite` once that has drained to `BOUND // 2`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import struct
import threading
import time

import pytest
from support import WAIT, Data, ServerThread, Start, TestEvents, local, recv_exactly, recv_until_closed, wait_for

import evio
import evio.loop
from evio.events import DataResult, OpenedResult

MiB = 1 << 20
#: Pending bytes on one side past which the proxy stops reading the other.
BOUND = 256 * 1024
#: The most one `data` event can add to a peer's pending output.
READ_SIZE = evio.loop.READ_SIZE


def side(conn: evio.Conn) -> str:
    return "backend" if conn.outbound else "client"


class Proxy(TestEvents):
    """Client <-> backend, one dialled backend connection per accepted client, with flow control."""

    def __init__(self, backend_addr: str, *, half_close: bool = True) -> None:
        super().__init__()
        self.backend_addr = backend_addr
        self.options = evio.Options(half_close=half_close)
        # Written on the proxy's loop thread only; the test reads them once the traffic is over.
        self.paused: set[int] = set()
        self.pauses = {"client": 0, "backend": 0}
        self.resumes = {"client": 0, "backend": 0}
        self.eofs = {"client": 0, "backend": 0}  # end of input read from that side and passed on with write_eof
        self.max_pending = 0
        self.refused_writes = 0
        self.closed_with: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()

    def opened(self, conn: evio.Conn) -> OpenedResult:
        if not conn.outbound:
            # The dialled conn's events cannot fire before this returns: its context is set already.
            conn.context = conn.server.dial(self.backend_addr, context=conn)
        return None, self.options, None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        peer: evio.Conn = conn.context
        if data is None:
            return None
        if not data:  # this side's end of input (half_close): pass it on
            self.eofs[side(conn)] += 1
            peer.write_eof()
            return None
        if not peer.write(data):
            self.refused_writes += 1  # the peer is closing: its `closed` closes this side
            return None
        pending = peer.pending
        self.max_pending = max(self.max_pending, pending)
        if pending > BOUND and conn.id not in self.paused:
            self.paused.add(conn.id)
            self.pauses[side(conn)] += 1
            conn.pause_reading()
        return None

    def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
        # `conn` drained some: resume the side that feeds it once little is left.
        self.max_pending = max(self.max_pending, remaining)
        peer: evio.Conn | None = conn.context
        if peer is not None and remaining <= BOUND // 2 and peer.id in self.paused:
            self.paused.discard(peer.id)
            self.resumes[side(peer)] += 1
            peer.resume_reading()
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put((side(conn), err))
        peer: evio.Conn | None = conn.context
        if peer is not None:
            peer.close()  # False, and nothing done, when the peer is closing or closed already
        return None

    def ends(self) -> dict[str, BaseException | None]:
        """The `closed` of both sides of the one proxied connection, by side."""
        got = dict([self.closed_with.get(timeout=WAIT), self.closed_with.get(timeout=WAIT)])
        assert set(got) == {"client", "backend"}, got
        return got


class Echo(TestEvents):
    """The backend: echoes, and answers `reset` by resetting the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_with: queue.Queue[BaseException | None] = queue.Queue()

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data == b"reset":
            return None, evio.Action.DETACH
        return data

    def detached(self, conn: evio.Conn, sock: socket.socket) -> evio.Action | None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # linger 0: the kernel sends RST
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put(err)
        return None


def backend_url(st: ServerThread) -> str:
    host, port = st.addr()
    return f"tcp4://{host}:{port}"


def proxy_to(start_server: Start, backend_events: TestEvents, backend: str, **kw: bool) -> tuple[Proxy, ServerThread]:
    bst = start_server(backend_events, local(backend))
    proxy = Proxy(backend_url(bst), **kw)
    return proxy, start_server(proxy, local(backend))


def test_64mib_each_way_through_the_proxy_with_a_slow_reader_keeps_memory_flat(
    start_server: Start, backend: str
) -> None:
    total = 64 * MiB
    payload = os.urandom(total)
    proxy, pst = proxy_to(start_server, Echo(), backend)
    with pst.connect() as c:
        c.settimeout(60)
        # Client -> proxy -> echo -> proxy -> client, both ways at once: the client sends while it reads.
        sender = threading.Thread(target=c.sendall, args=(payload,), name="proxy-test-sender")
        sender.start()
        try:
            digest = hashlib.sha256()
            got = 0
            while got < total:
                if got < 8 * MiB:
                    time.sleep(0.002)  # the load: slow at first, so the proxy must hold both sides back
                chunk = c.recv(min(1 << 16 if got < 8 * MiB else MiB, total - got))
                assert chunk, f"the proxy closed after {got} bytes"
                digest.update(chunk)
                got += len(chunk)
        except BaseException:
            c.shutdown(socket.SHUT_RDWR)  # so the sender fails at once instead of waiting for its time-out
            raise
        finally:
            sender.join(60)
        assert not sender.is_alive()
        assert digest.digest() == hashlib.sha256(payload).digest()
    assert proxy.ends() == {"client": None, "backend": None}
    # The slow reader made output pend on the client side, so the proxy paused the backend; the
    # echo then stopped reading, output pended on the backend side, and the proxy paused the client.
    assert proxy.pauses["backend"] > 0 and proxy.pauses["client"] > 0, proxy.pauses
    assert proxy.resumes["backend"] > 0 and proxy.resumes["client"] > 0, proxy.resumes
    assert proxy.max_pending > BOUND, "output never pended: the test did not exercise pausing"
    # A side stops being read once its peer has more than BOUND pending: one more read at most.
    assert proxy.max_pending <= BOUND + READ_SIZE, f"{proxy.max_pending} bytes pending at most, over the bound"
    assert proxy.refused_writes == 0


class AnswerAtEnd(TestEvents):
    """Reads the whole request, to its end of input, then answers with its sha256 and a large blob, and closes."""

    # More than a socket's send buffer grows to (4 MiB on Linux by default) and the client's window hold.
    blob = os.urandom(8 * MiB)

    def opened(self, conn: evio.Conn) -> OpenedResult:
        conn.context = hashlib.sha256()
        return None, evio.Options(half_close=True), None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data is None:
            return None
        if data:
            conn.context.update(data)
            return None
        return conn.context.digest() + self.blob, evio.Action.CLOSE


def test_client_half_close_through_the_proxy_still_gets_the_whole_reply(start_server: Start, backend: str) -> None:
    request = os.urandom(MiB)
    proxy, pst = proxy_to(start_server, AnswerAtEnd(), backend)
    with pst.connect(rcvbuf=1 << 16) as c:
        c.sendall(request)
        c.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while len(reply) < 4 * MiB:
            time.sleep(0.002)  # the load: a slow reader at first, so the reply pends in the proxy
            chunk = c.recv(1 << 16)
            assert chunk, f"the proxy closed after {len(reply)} bytes of the reply"
            reply += chunk
        reply += recv_until_closed(c)
    assert reply == hashlib.sha256(request).digest() + AnswerAtEnd.blob
    # The client's EOF went on to the backend (it answers only then), the backend's came back.
    assert proxy.eofs == {"client": 1, "backend": 1}
    assert proxy.pauses["backend"] > 0, "the reply never pended: the backend side was not held back"
    assert proxy.max_pending <= BOUND + READ_SIZE
    assert proxy.ends() == {"client": None, "backend": None}


class GreetAndEnd(TestEvents):
    """Sends a greeting and shuts its write side at once, then reads until the client's end of input."""

    greeting = os.urandom(2 * MiB)

    def __init__(self) -> None:
        super().__init__()
        self.received: queue.Queue[tuple[bytes, BaseException | None]] = queue.Queue()

    def opened(self, conn: evio.Conn) -> OpenedResult:
        conn.context = hashlib.sha256()
        assert conn.write(self.greeting)
        assert conn.write_eof()
        return None, evio.Options(half_close=True), None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data:
            conn.context.update(data)
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.received.put((conn.context.digest(), err))
        return None


def test_backend_half_close_through_the_proxy_and_the_client_still_sends(start_server: Start, backend: str) -> None:
    request = os.urandom(3 * MiB)
    greeter = GreetAndEnd()
    proxy, pst = proxy_to(start_server, greeter, backend)
    with pst.connect() as c:
        # The backend's end of input reaches the client while the client's side stays open.
        assert recv_until_closed(c) == GreetAndEnd.greeting
        c.sendall(request)
        c.shutdown(socket.SHUT_WR)
        digest, err = greeter.received.get(timeout=WAIT)
        assert err is None
        assert digest == hashlib.sha256(request).digest(), "the backend did not get the whole request"
    assert proxy.eofs == {"backend": 1, "client": 1}
    assert proxy.ends() == {"client": None, "backend": None}


def echo_once(c: socket.socket) -> None:
    """A round trip through proxy and backend: both legs are up."""
    c.sendall(b"hello")
    assert recv_exactly(c, 5) == b"hello"


def test_client_reset_closes_the_backend_side(start_server: Start, backend: str) -> None:
    echo = Echo()
    proxy, pst = proxy_to(start_server, echo, backend)
    c = pst.connect()
    echo_once(c)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # linger 0: the kernel sends RST
    ends = proxy.ends()
    assert isinstance(ends["client"], ConnectionResetError), ends
    assert ends["backend"] is None  # the proxy closed it, gracefully
    assert echo.closed_with.get(timeout=WAIT) is None  # and the backend saw it end


def test_backend_reset_closes_the_client_side(start_server: Start, backend: str) -> None:
    proxy, pst = proxy_to(start_server, Echo(), backend)
    with pst.connect() as c:
        echo_once(c)
        c.sendall(b"reset")
        assert recv_until_closed(c) == b""
    ends = proxy.ends()
    assert isinstance(ends["backend"], ConnectionResetError), ends
    assert ends["client"] is None


def test_a_backend_that_refuses_closes_the_client(start_server: Start, backend: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: a connect is refused
        proxy = Proxy(f"tcp4://127.0.0.1:{port}")
        pst = start_server(proxy, local(backend))
        with pst.connect() as c:
            c.sendall(b"never delivered")
            assert recv_until_closed(c) == b""
    ends = proxy.ends()
    assert isinstance(ends["backend"], ConnectionRefusedError), ends
    assert ends["client"] is None


# ---- half_close on its own ------------------------------------------------


class Replier(TestEvents):
    """Answers a request with `conn.write()` of more than the kernel's buffers take; records `data(conn, b"")`.

    `conn.write`, unlike a returned reply, does not hold back reading: the
    loop reads the client's end of input while the reply is still pending.
    """

    reply = os.urandom(16 * MiB)

    def __init__(self, options: evio.Options | None) -> None:
        super().__init__()
        self.options = options
        self.conns: queue.Queue[evio.Conn] = queue.Queue()
        self.eofs: queue.Queue[int] = queue.Queue()  # pending bytes when data(conn, b"") fired
        self.closed_with: queue.Queue[BaseException | None] = queue.Queue()

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.conns.put(conn)
        return None, self.options, None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data is None:
            return None
        if not data:
            self.eofs.put(conn.pending)
        else:
            assert conn.write(self.reply)
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put(err)
        return None


@pytest.mark.parametrize(
    "options", [None, evio.Options(), evio.Options(half_close=False)], ids=["no-options", "default", "false"]
)
def test_without_half_close_end_of_input_closes_once_output_is_written(
    start_server: Start, backend: str, options: evio.Options | None
) -> None:
    ev = Replier(options)
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        conn = ev.conns.get(timeout=WAIT)
        c.sendall(b"request")
        c.shutdown(socket.SHUT_WR)
        # The server reads our end of input and begins closing (writes are refused) with the reply pending.
        wait_for(lambda: not conn.write(b""), "the connection closing")
        assert conn.pending > 0, "nothing was pending at end of input: the test shows nothing"
        assert ev.closed_with.empty(), "closed before its output was written"
        assert recv_until_closed(c) == Replier.reply
    assert ev.closed_with.get(timeout=WAIT) is None
    assert ev.eofs.empty(), "data(conn, b'') fired without half_close"


def test_with_half_close_the_connection_stays_open_for_writing_after_end_of_input(
    start_server: Start, backend: str
) -> None:
    ev = Replier(evio.Options(half_close=True))
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        conn = ev.conns.get(timeout=WAIT)
        c.sendall(b"request")
        c.shutdown(socket.SHUT_WR)
        assert ev.eofs.get(timeout=WAIT) > 0, "the reply was not pending at end of input: the test shows nothing"
        assert recv_exactly(c, len(Replier.reply)) == Replier.reply
        # All written, the peer's input over, and the connection still open: only a close ends it.
        assert conn.id in dict(st.server.conns)
        assert ev.closed_with.empty()
        assert conn.write(b"after the end")  # from this thread
        assert recv_exactly(c, 13) == b"after the end"
        assert conn.close()
        assert recv_until_closed(c) == b""
    assert ev.closed_with.get(timeout=WAIT) is None
    assert ev.eofs.empty(), "data(conn, b'') fired more than once"
