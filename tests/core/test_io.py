"""Moving bytes: large echoes, backpressure, many connections, EOF, resets, time-outs, descriptors."""

from __future__ import annotations

import hashlib
import os
import queue
import select
import socket
import struct
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from support import (
    SMALL_WINDOW,
    WAIT,
    Data,
    Processes,
    ServerProcess,
    ServerThread,
    Start,
    TestEvents,
    cpu_seconds,
    local,
    open_fds,
    recv_exactly,
    recv_until_closed,
    wait_for,
    with_backend,
)

import evio
import evio.loop
from evio.events import DataResult

MiB = 1 << 20


class Echo(TestEvents):
    def __init__(self) -> None:
        super().__init__()
        self.closed_with: queue.Queue[BaseException | None] = queue.Queue()

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        return data

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put(err)
        return None


def test_64mib_echo_through_a_slow_reader(start_server: Start, backend: str) -> None:
    total = 64 * MiB
    payload = os.urandom(MiB) * 64
    st = start_server(Echo(), local(backend))
    with st.connect() as c:
        c.settimeout(60)
        sender = threading.Thread(target=c.sendall, args=(payload,))
        sender.start()
        digest = hashlib.sha256()
        got = 0
        while got < total:
            if got < 2 * MiB:
                time.sleep(0.002)  # slow at first: the server must hold back, not drop
            chunk = c.recv(min(1 << 16 if got < 2 * MiB else MiB, total - got))
            assert chunk
            digest.update(chunk)
            got += len(chunk)
        sender.join(60)
        assert not sender.is_alive()
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_backpressure_blocks_a_client_that_never_reads(start_server: Start, backend: str) -> None:
    st = start_server(Echo(), local(backend))
    with st.connect() as c:
        c.setblocking(False)
        chunk = b"p" * (1 << 16)
        sent = 0
        stalled_since = time.monotonic()
        while sent < 64 * MiB:
            try:
                sent += c.send(chunk)
                stalled_since = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - stalled_since > 1.0:
                    break  # nobody has taken a byte for a second: TCP holds us back
                select.select([], [c], [], 0.05)
        assert sent < 32 * MiB, f"the server kept reading {sent} bytes from a client that never reads"
        # And it still echoes all of it once the client reads.
        c.setblocking(True)
        c.settimeout(WAIT)
        assert recv_exactly(c, sent) == b"p" * sent


def test_a_thousand_concurrent_connections(start_server: Start, backend: str) -> None:
    st = start_server(Echo(), local(backend))
    clients = [socket.create_connection(st.addr(), timeout=WAIT) for _ in range(1000)]
    try:
        for i, c in enumerate(clients):
            c.sendall(b"%06d" % i)
        for i, c in enumerate(clients):
            assert recv_exactly(c, 6) == b"%06d" % i
    finally:
        for c in clients:
            c.close()


def test_half_close_still_gets_the_whole_reply(start_server: Start, backend: str) -> None:
    reply = os.urandom(8 * MiB)

    left: list[int] = []

    class Reply(Echo):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return reply

        def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
            left.append(remaining)
            return None

    ev = Reply()
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"request")
        c.shutdown(socket.SHUT_WR)  # end of input arrives while most of the reply is still pending
        wait_for(lambda: bool(left), "the reply's first write")
        # Nothing read yet, so nothing drained: the first write left the rest pending, and still does.
        assert left[0] > 0, "the first write took the whole reply: the pending path did not run"
        assert recv_until_closed(c) == reply
    assert ev.closed_with.get(timeout=WAIT) is None


def test_peer_reset_gives_closed_with_the_error(start_server: Start, backend: str) -> None:
    opened = threading.Event()

    class Watch(Echo):
        def opened(self, conn: evio.Conn) -> evio.events.OpenedResult:
            opened.set()
            return None

    ev = Watch()
    st = start_server(ev, local(backend))
    c = st.connect()
    assert opened.wait(WAIT)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # linger 0: the kernel sends RST
    err = ev.closed_with.get(timeout=WAIT)
    assert isinstance(err, ConnectionResetError)


def test_reset_while_output_is_pending(start_server: Start, backend: str) -> None:
    conns: queue.Queue[evio.Conn] = queue.Queue()

    class Flood(Echo):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            conns.put(conn)
            return b"f" * (32 * MiB)

    ev = Flood()
    st = start_server(ev, local(backend))
    c = st.connect(rcvbuf=SMALL_WINDOW)
    c.sendall(b"go")
    recv_exactly(c, 1000)
    conn = conns.get(timeout=WAIT)
    wait_for(lambda: conn.pending > 0, "the flood pending when the reset comes")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    err = ev.closed_with.get(timeout=WAIT)
    assert isinstance(err, (ConnectionResetError, BrokenPipeError))


def test_closing_connection_whose_peer_reads_nothing_is_dropped(
    start_server: Start, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evio.loop, "CLOSE_TIMEOUT", 1.0)

    class Goodbye(Echo):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"g" * (32 * MiB), evio.Action.CLOSE

    ev = Goodbye()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        c.sendall(b"x")
        began = time.monotonic()
        err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, TimeoutError)
        assert 0.9 <= time.monotonic() - began < 1.6


def test_closing_connection_that_reads_slowly_is_not_dropped(
    start_server: Start, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evio.loop, "CLOSE_TIMEOUT", 0.5)
    blob = b"s" * (16 * MiB)

    left: list[int] = []

    class Goodbye(Echo):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return blob, evio.Action.CLOSE

        def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
            left.append(remaining)
            return None

    ev = Goodbye()
    st = start_server(ev, local(backend))
    with st.connect(rcvbuf=SMALL_WINDOW) as c:
        c.sendall(b"x")
        wait_for(lambda: bool(left), "the reply's first write")
        assert left[0] > 0, "the first write took the whole reply: the closing connection had nothing pending"
        got = 0
        began = time.monotonic()
        while True:  # slower overall than the time-out, but never idle for that long
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            if time.monotonic() - began < 1.5:
                time.sleep(0.1)
        assert got == len(blob)
    assert ev.closed_with.get(timeout=WAIT) is None


def test_no_descriptor_leaks_after_a_run(backend: str, tmp_path: Any) -> None:
    before = open_fds()
    ev = Echo()
    st = ServerThread(ev, local(backend), with_backend(f"unix://{tmp_path}/fd.sock", backend)).start()
    clients = [st.connect(i % 2) for i in range(20)]
    for c in clients:
        c.sendall(b"x")
        assert c.recv(1) == b"x"
    for c in clients[:10]:
        c.close()
    st.stop()
    for c in clients[10:]:
        c.close()
    assert open_fds() == before
    assert not os.path.exists(f"{tmp_path}/fd.sock")


def test_no_leak_after_failing_to_start(backend: str) -> None:
    before = open_fds()
    with pytest.raises(ValueError):
        evio.serve(Echo(), local(backend), "bogus://x")
    with pytest.raises(OSError):
        evio.serve(Echo(), local(backend), with_backend("tcp4://192.0.2.1:0", backend))
    assert open_fds() == before


_EMFILE_SERVER = textwrap.dedent(
    """
    import resource, sys, evio
    class Echo(evio.Events):
        def serving(self, server):
            print(server.addrs[0][1], server.addrs[1][1], flush=True)
        def data(self, conn, data):
            if data == b"shutdown":
                return b"bye", evio.Action.SHUTDOWN
            return data
    import os
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    evio.serve(Echo(), *sys.argv[1:])
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_out_of_descriptors_pauses_accepting_without_spinning(backend: str, processes: Processes) -> None:
    argv = [sys.executable, "-c", _EMFILE_SERVER, local(backend), local(backend)]
    proc = processes.add(ServerProcess(argv, ready=r"(\d+) (\d+)"))
    assert proc.ready_match is not None
    port, port2 = (int(p) for p in proc.ready_match.groups())
    clients: list[socket.socket] = []
    try:
        first = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        clients.append(first)
        first.sendall(b"a")
        assert first.recv(1) == b"a"
        for _ in range(20):  # far more than the server has descriptors for, on both listeners
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
            clients.append(socket.create_connection(("127.0.0.1", port2), timeout=WAIT))
        time.sleep(0.3)
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        assert cpu_seconds(proc.pid) - cpu_before < 0.5, "the server spins while out of descriptors"
        first.sendall(b"b")
        assert first.recv(1) == b"b", "existing connections are still served"
        for c in clients[1:]:
            c.close()
        del clients[1:]
        time.sleep(0.5)  # the pause ends and the backlog drains
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as late:
            late.sendall(b"c")
            assert late.recv(1) == b"c"
        first.sendall(b"shutdown")
        assert recv_until_closed(first) == b"bye"
        assert proc.wait() == 0
        log = proc.log()
        assert log.count("cannot accept") == 1, log
    finally:
        for c in clients:
            c.close()
