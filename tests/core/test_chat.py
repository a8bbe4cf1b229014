"""A chat server broadcasting with `conn.write()` to every other connection, and `Options.max_pending`.

Output written with `conn.write` does not hold back reading (see the loop's
design notes), so nothing but `max_pending` bounds what piles up for a peer
that does not read: these tests show that bound, and that the peers that do
read are not affected by one that does not.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import selectors
import socket
import threading
from typing import Any, Callable, Generic, TypeVar

import pytest
from support import WAIT, Data, Start, TestEvents, local, recv_exactly, recv_until_closed, wait_for

import evio
from evio.events import DataResult, OpenedResult

MiB = 1 << 20
#: The chat server's max_pending.
LIMIT = 256 * 1024
#: Every chat message is this long, newline included.
MSG = 32 * 1024
SPEAKERS = 3
R = TypeVar("R")


@functools.cache
def message(speaker: int, seq: int) -> bytes:
    return (b"%d %d " % (speaker, seq)).ljust(MSG - 1, b".") + b"\n"


class Chat(TestEvents):
    """Broadcasts each complete line a client sends to every other open connection."""

    def __init__(self, clients: int, *, snapshot: bool) -> None:
        super().__init__()
        self.clients = clients
        self.snapshot = snapshot  # iterate over a copy of server.conns, or over server.conns itself
        self.silent_addr: Any = None  # the client that never reads, set by the test before the others connect
        self.all_open = threading.Event()
        self.opened_count = 0
        self.closed_with: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()
        self.unexpected_close = threading.Event()
        self.unexpected: list[tuple[Any, BaseException | None]] = []
        self.silent_closed = threading.Event()
        self.max_pending: dict[Any, int] = {}  # remote address -> most bytes pending after a write to it

    def opened(self, conn: evio.Conn) -> OpenedResult:
        conn.context = bytearray()
        self.opened_count += 1
        if self.opened_count == self.clients:
            self.all_open.set()
        return None, evio.Options(max_pending=LIMIT), None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if not data:
            return None
        kept: bytearray = conn.context
        kept += data
        end = kept.rfind(b"\n") + 1
        if not end:
            return None
        lines = bytes(kept[:end])
        del kept[:end]
        conns = conn.server.conns
        for other in list(conns.values()) if self.snapshot else conns.values():
            if other is not conn and other.write(lines):
                addr = other.remote_addr
                self.max_pending[addr] = max(self.max_pending.get(addr, 0), other.pending)
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put((conn.remote_addr, err))
        if conn.remote_addr == self.silent_addr:
            self.silent_closed.set()
        else:
            self.unexpected.append((conn.remote_addr, err))
            self.unexpected_close.set()
        return None


class Receiver:
    """One client's view of the chat: every message from each speaker, in order, byte for byte."""

    def __init__(self, me: int | None) -> None:
        self.me = me  # the speaker this client is, if any: it does not hear itself
        self.kept = b""
        self.next = [0] * SPEAKERS
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        buf = self.kept + chunk if self.kept else chunk
        start = 0
        while len(buf) - start >= MSG:
            line = buf[start : start + MSG]
            speaker = int(line[: line.index(b" ")])
            assert speaker != self.me, "a client heard its own message"
            assert line == message(speaker, self.next[speaker]), f"out of order or mangled: {line[:20]!r}"
            self.next[speaker] += 1
            self.count += 1
            start += MSG
        self.kept = buf[start:]

    def expected(self, rounds: int) -> int:
        return rounds * (SPEAKERS - (self.me is not None))


def chat_with_a_silent_client(start_server: Start, backend: str, clients: int, *, snapshot: bool) -> None:
    """`clients` chat clients, the first of which never reads; the next `SPEAKERS` speak, one message a round.

    Each round waits until every reading client has every message so far, so
    the readers are never behind: whatever piles up is the silent client's.
    Rounds go on until the silent client is dropped, then a few more.
    """
    chat = Chat(clients, snapshot=snapshot)
    st = start_server(chat, local(backend))
    silent = st.connect(rcvbuf=1 << 12)
    chat.silent_addr = silent.getsockname()
    readers = [st.connect() for _ in range(clients - 1)]
    sel = selectors.DefaultSelector()
    try:
        assert chat.all_open.wait(WAIT), "not every client was accepted"
        receivers = [Receiver(i if i < SPEAKERS else None) for i in range(len(readers))]
        for i, r in enumerate(readers):
            sel.register(r, selectors.EVENT_READ, i)
        rounds = 0
        rounds_after_drop = 0
        while rounds_after_drop < 5:
            # The kernel's buffers take a few MiB for the silent client before anything pends for it.
            assert rounds * SPEAKERS * MSG < 16 * MiB, "the silent client was never dropped"
            for speaker in range(SPEAKERS):
                readers[speaker].sendall(message(speaker, rounds))
            rounds += 1
            while not all(rcv.count == rcv.expected(rounds) for rcv in receivers):
                assert not chat.unexpected_close.is_set(), f"reading clients were closed: {chat.unexpected}"
                ready = sel.select(WAIT)
                assert ready, f"no client received anything for {WAIT:g} s in round {rounds}"
                for key, _ in ready:
                    chunk = readers[key.data].recv(1 << 20)
                    assert chunk, f"client {key.data} was closed"
                    receivers[key.data].feed(chunk)
            if chat.silent_closed.is_set():
                rounds_after_drop += 1

        addr, err = chat.closed_with.get(timeout=WAIT)
        assert addr == chat.silent_addr
        assert isinstance(err, BufferError), err
        assert f"max_pending={LIMIT}" in str(err)
        # It was held to the bound, and did reach it (the next message would have passed it).
        assert LIMIT - MSG < chat.max_pending[chat.silent_addr] <= LIMIT
        # The other clients are unaffected: still open, and they got every message (checked as they came).
        assert chat.closed_with.empty()
        assert len(st.server.conns) == clients - 1
        for rcv in receivers:
            assert rcv.count == rcv.expected(rounds) and not rcv.kept
        # The silent client, dropped at once, got a prefix of the conversation and then its end.
        silent.settimeout(WAIT)
        heard = Receiver(None)
        heard.feed(recv_until_closed(silent))
        assert heard.count < SPEAKERS * rounds
    finally:
        sel.close()
        for r in readers:
            r.close()
        silent.close()


def test_chat_of_100_clients_drops_the_one_that_never_reads(start_server: Start, backend: str) -> None:
    chat_with_a_silent_client(start_server, backend, 100, snapshot=True)


def test_broadcast_over_server_conns_itself_while_a_write_overflows(start_server: Start, backend: str) -> None:
    chat_with_a_silent_client(start_server, backend, 2 + SPEAKERS, snapshot=False)


# ---- max_pending on one connection ---------------------------------------


class Writer(TestEvents, Generic[R]):
    """On `go`, runs `self.job(conn)` on the loop thread and queues its result; the client does not read meanwhile."""

    def __init__(self, options: evio.Options | None, job: Callable[[evio.Conn], R]) -> None:
        super().__init__()
        self.options = options
        self.job = job
        self.result: queue.Queue[R] = queue.Queue()
        self.conns: queue.Queue[evio.Conn] = queue.Queue()
        self.closed_with: queue.Queue[BaseException | None] = queue.Queue()

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.conns.put(conn)
        return None, self.options, None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data == b"go":
            self.result.put(self.job(conn))
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put(err)
        return None


def fill(conn: evio.Conn) -> int:
    """Write until the socket takes no more and something is pending; return the bytes written."""
    piece = 1 << 16
    for i in range(1, 64 * MiB // piece):
        assert conn.write(b"f" * piece)
        if conn.pending:
            return i * piece
    raise AssertionError("the socket took 64 MiB from a client that does not read")


def test_max_pending_allows_exactly_the_limit_and_closes_at_one_byte_more(start_server: Start, backend: str) -> None:
    def job(conn: evio.Conn) -> tuple[int, bool, int, bool, int]:
        fill(conn)
        before = conn.pending
        at_limit = conn.write(b"a" * (LIMIT - before))
        pending_at_limit = conn.pending
        over = conn.write(b"!")
        return before, at_limit, pending_at_limit, over, conn.pending

    ev = Writer(evio.Options(max_pending=LIMIT), job)
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        c.sendall(b"go")
        before, at_limit, pending_at_limit, over, after = ev.result.get(timeout=WAIT)
        assert 0 < before <= 1 << 16
        assert at_limit and pending_at_limit == LIMIT, "pending == max_pending is allowed"
        assert not over, "the write that passed max_pending was accepted"
        assert after == 0, "what was pending is dropped at once"
        err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, BufferError)
        assert f"{LIMIT + 1} bytes would be pending, over max_pending={LIMIT}" in str(err)


def test_max_pending_many_small_writes_close_at_the_first_that_passes_it(start_server: Start, backend: str) -> None:
    piece = 1000

    def job(conn: evio.Conn) -> tuple[int, int, int, bool]:
        written = fill(conn)
        last = conn.pending
        for _ in range(2 * LIMIT // piece):
            if not conn.write(b"s" * piece):
                return written, last, conn.pending, conn.write(b"s")
            written += piece
            last = conn.pending
        raise AssertionError(f"{2 * LIMIT} bytes written past a full socket and none refused")

    ev = Writer(evio.Options(max_pending=LIMIT), job)
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        c.sendall(b"go")
        written, last, after, again = ev.result.get(timeout=WAIT)
        assert LIMIT - piece < last <= LIMIT, "refused before the limit, or accepted past it"
        assert after == 0 and not again, "a connection closed by max_pending takes no more writes"
        err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, BufferError)
        assert f"{last + piece} bytes would be pending, over max_pending={LIMIT}" in str(err)
        # What the socket took still arrives, then the end; what was pending is dropped.
        assert len(recv_until_closed(c)) == written - last


@pytest.mark.parametrize("how", ["write", "return"])
def test_max_pending_one_large_write_closes_at_once(start_server: Start, backend: str, how: str) -> None:
    big = b"L" * (32 * MiB)  # far more than the kernel's buffers take, and than the limit

    class Big(Writer[bool]):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data != b"go":
                return None
            if how == "return":
                return big
            self.result.put(conn.write(big))
            return None

    ev = Big(evio.Options(max_pending=MiB), lambda conn: False)
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        c.sendall(b"go")
        if how == "write":
            assert ev.result.get(timeout=WAIT) is False
        err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, BufferError)
        assert f"over max_pending={MiB}" in str(err)
        got = recv_until_closed(c)
        assert len(got) < len(big) - MiB  # only what the socket took before the write was refused
        assert got == big[: len(got)]


def test_max_pending_bounds_writes_from_another_thread(start_server: Start, backend: str) -> None:
    ev = Writer(evio.Options(max_pending=LIMIT), lambda conn: None)  # no job: this thread writes
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16):
        conn = ev.conns.get(timeout=WAIT)
        for _ in range(256):  # 16 MiB, written from this thread to a client that does not read
            if not conn.write(b"t" * (1 << 16)):
                break
        err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, BufferError) and f"over max_pending={LIMIT}" in str(err)
        assert not conn.write(b"t")
        wait_for(lambda: conn.pending == 0, "the writes still on their way to the loop settled")


@pytest.mark.parametrize(
    "options", [None, evio.Options(), evio.Options(max_pending=None)], ids=["no-options", "default", "none"]
)
def test_without_max_pending_output_piles_up_and_all_of_it_arrives(
    start_server: Start, backend: str, options: evio.Options | None
) -> None:
    total = 32 * MiB
    blob = bytes(range(256)) * (total // 256)

    def job(conn: evio.Conn) -> int:
        view = memoryview(blob)
        for i in range(0, total, 1 << 16):
            assert conn.write(view[i : i + (1 << 16)])
        return conn.pending

    ev = Writer(options, job)
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=1 << 16) as c:
        c.sendall(b"go")
        pending = ev.result.get(timeout=WAIT)
        assert pending > total // 2, f"only {pending} bytes pending: the test shows nothing"
        got = recv_exactly(c, total)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        assert ev.closed_with.empty()
        assert len(st.server.conns) == 1
        c.shutdown(socket.SHUT_WR)
        assert recv_until_closed(c) == b""
    assert ev.closed_with.get(timeout=WAIT) is None
