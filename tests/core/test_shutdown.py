"""`Server.shutdown()`: stopping a serve from the loop's thread or from any other, on both backends."""

from __future__ import annotations

import errno
import os
import queue
import select
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest
from support import (
    WAIT,
    Data,
    Processes,
    ServerProcess,
    Start,
    TestEvents,
    local,
    open_fds,
    recv_exactly,
    recv_until_closed,
    use_backend,
    wait_for,
)

import evio
from evio.events import DataResult, OpenedResult, TickResult

#: serve() returns this soon after shutdown(), at most. It takes milliseconds; the bound is generous
#: so that a loaded machine (or PyPy warming up) does not fail the test, while a loop that only noticed
#: the request on some later wake-up (there is no tick here) would.
PROMPTLY = 2.0


class Echo(TestEvents):
    """Echoes; counts opened and closed per connection. No polling tick: only the inbox wakes the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_thread = 0
        self.accepted: queue.Queue[evio.Conn] = queue.Queue()
        self.opened_count: dict[int, int] = {}
        self.closed_count: dict[int, int] = {}
        self.closed_errors: dict[int, BaseException | None] = {}

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.loop_thread = threading.get_ident()
        return super().serving(server)

    def tick(self) -> TickResult:
        return None

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.opened_count[conn.id] = self.opened_count.get(conn.id, 0) + 1
        self.accepted.put(conn)
        return None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        return data

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_count[conn.id] = self.closed_count.get(conn.id, 0) + 1
        self.closed_errors[conn.id] = err
        return None


def stopped_for_good(server: evio.Server) -> None:
    """What holds once serve has returned: shutdown() is harmless, after() and dial() are refused."""
    server.shutdown()
    server.shutdown()
    with pytest.raises(RuntimeError):
        server.after(0, lambda: None)
    with pytest.raises(RuntimeError):
        server.dial("tcp://127.0.0.1:9")
    assert dict(server.conns) == {}


class BusyClients:
    """`n` clients on one thread, each sending a message and reading its echo, over and over, until the server goes.

    Each ends with "eof" (end of input), "reset" (ECONNRESET on a read) or the unexpected error.
    """

    def __init__(self, addr: Any, n: int) -> None:
        self.socks = [socket.create_connection(addr[:2], timeout=WAIT) for _ in range(n)]
        self.rounds = [0] * n
        self.endings: dict[int, str] = {}
        self.bad_echo: list[int] = []
        self.error: BaseException | None = None
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="busy-clients")

    def start(self) -> None:
        for i, s in enumerate(self.socks):
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, i)
            s.send(self._message(i))
        self._thread.start()

    @staticmethod
    def _message(i: int) -> bytes:
        return f"client {i:03d} ".encode() * 50  # 600 bytes: one send each

    def _run(self) -> None:
        try:
            got = [b""] * len(self.socks)
            deadline = time.monotonic() + 3 * WAIT
            while len(self.endings) < len(self.socks) and time.monotonic() < deadline:
                for key, _ in self._sel.select(1.0):
                    i = key.data
                    s = self.socks[i]
                    try:
                        chunk = s.recv(65536)
                    except ConnectionResetError:
                        self._end(i, "reset")
                        continue
                    except OSError as err:
                        self._end(i, repr(err))
                        continue
                    if not chunk:
                        self._end(i, "eof")
                        continue
                    got[i] += chunk
                    message = self._message(i)
                    if len(got[i]) >= len(message):
                        if got[i] != message:
                            self.bad_echo.append(i)
                        got[i] = b""
                        self.rounds[i] += 1
                        try:
                            s.send(message)
                        except OSError:
                            pass  # the server is going: the read that follows says how it went
        except BaseException as err:
            self.error = err

    def _end(self, i: int, how: str) -> None:
        self._sel.unregister(self.socks[i])
        self.endings[i] = how

    def join(self) -> None:
        self._thread.join(4 * WAIT)
        assert not self._thread.is_alive(), "the clients did not all see their connection end"

    def close(self) -> None:
        self._sel.close()
        for s in self.socks:
            s.close()


def test_shutdown_from_another_thread_while_100_clients_are_busy(start_server: Start, backend: str) -> None:
    before = open_fds()
    ev = Echo()
    st = start_server(ev, local(backend))
    server = st.server
    clients = BusyClients(st.addr(), 100)
    try:
        clients.start()
        wait_for(lambda: min(clients.rounds) >= 3, "every client to be busy")
        assert len(server.conns) == 100
        start = time.monotonic()
        server.shutdown()  # from this thread, not the loop's
        st.join()
        took = time.monotonic() - start
        clients.join()
    finally:
        clients.close()
    assert took < PROMPTLY, f"serve took {took:.2f} s to return"
    assert not st.thread.is_alive()
    assert st.error is None
    assert clients.error is None and clients.bad_echo == []
    # Every client's connection ended. The strict form, end of input for each, is
    # test_input_arriving_while_shutdown_closes_still_gives_end_of_input: a client whose request
    # arrives just as the server closes its socket can see a reset (see that test).
    assert len(clients.endings) == 100
    assert set(clients.endings.values()) <= {"eof", "reset"}, clients.endings
    assert sorted(ev.opened_count) == sorted(ev.closed_count)
    assert len(ev.closed_count) == 100
    assert set(ev.closed_count.values()) == {1}, "closed fired once per connection"
    assert set(ev.opened_count.values()) == {1}
    assert open_fds() == before, "a descriptor was left open"
    stopped_for_good(server)


def test_input_arriving_while_shutdown_closes_still_gives_end_of_input(start_server: Start, backend: str) -> None:
    """The race the 100 busy clients can hit, made to happen every time.

    When shutdown closes connections it reads and discards what they sent (unread input turns a close
    into a reset) until the socket has nothing more, then closes it. A request that arrives between
    that last read and the close is unread: the close sends a reset, and the client's kernel discards
    what it had not handed over, end of input included. This test delivers a request in that window.
    """
    armed = threading.Event()
    injected: list[bool] = []

    class Hooked(Echo):
        client: socket.socket | None = None

        def opened(self, conn: evio.Conn) -> OpenedResult:
            real = conn._recv_into

            def recv_into(buf: Any) -> int:
                try:
                    n: int = real(buf)
                    return n
                except BlockingIOError:
                    if armed.is_set() and not injected and self.client is not None:
                        injected.append(True)
                        self.client.sendall(b"next request")  # in flight as the server closes
                        select.select([conn._fd], [], [], WAIT)  # it has arrived, after the last read
                    raise

            conn._recv_into = recv_into
            return super().opened(conn)

    ev = Hooked()
    st = start_server(ev, local(backend))
    with st.connect() as client:
        ev.client = client
        ev.accepted.get(timeout=WAIT)
        client.sendall(b"request")
        assert recv_exactly(client, 7) == b"request"
        armed.set()
        st.server.shutdown()
        st.join()
        if not injected:
            pytest.fail("shutdown never found the connection's input empty: the scenario did not come about")
        try:
            got: object = recv_until_closed(client)
        except ConnectionResetError as err:
            got = err
    assert got == b"", f"the client saw {got!r} instead of end of input"


def test_ctrl_c_style_serve_on_a_worker_stopped_from_the_main_thread(backend: str) -> None:
    """What a program does to stop a serve on a worker thread (on Ctrl-C, say): shutdown() from the main thread."""
    assert threading.current_thread() is threading.main_thread()
    ev = Echo()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            evio.serve(ev, local(backend))
        except BaseException as err:
            failures.append(err)
            ev.ready.set()

    worker = threading.Thread(target=run, name="evio-worker")
    worker.start()
    try:
        assert ev.ready.wait(WAIT) and not failures
        assert ev.server is not None
        server = ev.server
        addr = server.addrs[0]
        assert isinstance(addr, tuple)
        with socket.create_connection((addr[0], addr[1]), timeout=WAIT) as c:
            c.sendall(b"hello")
            assert recv_exactly(c, 5) == b"hello"
            # The loop is idle now, waiting in poll with no timer and no tick: only the shutdown wakes it.
            start = time.monotonic()
            server.shutdown()
            worker.join(WAIT)
            took = time.monotonic() - start
            assert recv_until_closed(c) == b""
    finally:
        if worker.is_alive() and ev.server is not None:
            ev.server.shutdown()
        worker.join(WAIT)
    assert not worker.is_alive()
    assert failures == []
    assert took < PROMPTLY, f"serve took {took:.2f} s to return"
    assert list(ev.closed_count.values()) == [1]
    stopped_for_good(server)


def test_shutdown_is_idempotent_from_every_thread(start_server: Start, backend: str) -> None:
    ev = Echo()
    st = start_server(ev, local(backend))
    server = st.server
    on_loop_done = threading.Event()

    def twice_on_the_loop() -> None:
        server.shutdown()
        server.shutdown()
        on_loop_done.set()

    with st.connect() as c:
        ev.accepted.get(timeout=WAIT)
        go = threading.Barrier(4)

        def hammer() -> None:
            go.wait(WAIT)
            for _ in range(50):
                server.shutdown()

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        server.after(0, twice_on_the_loop)
        go.wait(WAIT)
        server.shutdown()
        server.shutdown()
        for t in threads:
            t.join(WAIT)
        st.join()
        assert recv_until_closed(c) == b""
    assert not any(t.is_alive() for t in threads)
    assert st.error is None
    assert list(ev.closed_count.values()) == [1]
    stopped_for_good(server)


def test_calls_from_a_thread_before_its_shutdown_are_carried_out_first(start_server: Start, backend: str) -> None:
    ev = Echo()
    st = start_server(ev, local(backend))
    server = st.server
    clients = [st.connect() for _ in range(10)]
    try:
        conns = {c.id: c for c in (ev.accepted.get(timeout=WAIT) for _ in range(10))}
        by_port = {conn.remote_addr[1]: conn for conn in conns.values()}
        ordered = [by_port[c.getsockname()[1]] for c in clients]
        for i, conn in enumerate(ordered):
            assert conn.write(f"last words {i}".encode())
        assert ordered[0].close()
        server.shutdown()  # queued behind the writes and the close, from this same thread
        st.join()
        for i, c in enumerate(clients):
            assert recv_until_closed(c) == f"last words {i}".encode()
    finally:
        for c in clients:
            c.close()
    assert set(ev.closed_count.values()) == {1} and len(ev.closed_count) == 10
    assert all(err is None for err in ev.closed_errors.values())


@pytest.mark.parametrize("how", ["Action.SHUTDOWN", "shutdown()"])
def test_shutdown_from_an_event_is_as_action_shutdown(start_server: Start, backend: str, how: str) -> None:
    class Quit(Echo):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data != b"quit":
                return data
            if how == "Action.SHUTDOWN":
                return b"bye", evio.Action.SHUTDOWN
            conn.server.shutdown()  # on the loop's thread
            try:  # takes effect at once: the server is shutting down already
                conn.server.after(0, lambda: None)
            except RuntimeError:
                return b"bye"
            return b"after() was not refused"

    ev = Quit()
    st = start_server(ev, local(backend))
    with st.connect() as a, st.connect() as b:
        a.sendall(b"ping")
        assert recv_exactly(a, 4) == b"ping"
        b.sendall(b"quit")
        assert recv_until_closed(b) == b"bye"  # the reply goes out, then the connection closes
        assert recv_until_closed(a) == b""  # and every other connection with it
        st.join()
    assert set(ev.closed_count.values()) == {1} and len(ev.closed_count) == 2
    stopped_for_good(st.server)


def test_shutdown_in_serving_returns_before_serving_anyone(backend: str) -> None:
    class StopAtOnce(Echo):
        def serving(self, server: evio.Server) -> evio.Action | None:
            super().serving(server)
            server.shutdown()
            return None

    ev = StopAtOnce()
    thread = threading.Thread(target=evio.serve, args=(ev, local(backend)))
    thread.start()
    thread.join(WAIT)
    if thread.is_alive() and ev.server is not None:
        ev.server.shutdown()
        thread.join(WAIT)
        pytest.fail("serve did not return after shutdown() in serving")
    assert ev.server is not None
    assert ev.opened_count == {} and ev.closed_count == {}
    stopped_for_good(ev.server)
    with socket.socket() as s:  # the listener is gone
        assert s.connect_ex(ev.server.addrs[0][:2]) == errno.ECONNREFUSED


# ---- a serve with no address --------------------------------------------------


class DialsOut(Echo):
    """A loop with no listener: it dials `target` once serving, and records what the connection receives."""

    def __init__(self, target: str, stop_when_closed: bool = False) -> None:
        super().__init__()
        self.target = target
        self.stop_when_closed = stop_when_closed
        self.dialled: evio.Conn | None = None
        self.received = b""

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.dialled = server.dial(self.target)
        return super().serving(server)

    def opened(self, conn: evio.Conn) -> OpenedResult:
        super().opened(conn)
        return b"hello"

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        self.received += bytes(data or b"")
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        super().closed(conn, err)
        return evio.Action.SHUTDOWN if self.stop_when_closed else None


@pytest.mark.parametrize("how", ["shutdown() from another thread", "Action.SHUTDOWN from closed"])
def test_serve_with_no_address_returns_on_shutdown(start_server: Start, backend: str, how: str) -> None:
    peer_ev = Echo()
    peer = start_server(peer_ev, local(backend))
    host, port = peer.addr()[:2]
    ev = DialsOut(f"tcp://{host}:{port}", stop_when_closed=how.startswith("Action"))
    use_backend(ev, backend)
    st = start_server(ev)  # no address at all
    assert st.server.addrs == ()
    assert st.server._loop._poller.name == backend
    wait_for(lambda: ev.received == b"hello", "the echo of the greeting")
    start = time.monotonic()
    if how.startswith("Action"):
        peer_ev.accepted.get(timeout=WAIT).close()  # the peer closes; closed returns Action.SHUTDOWN
    else:
        st.server.shutdown()
    st.join()
    took = time.monotonic() - start
    assert took < PROMPTLY
    assert ev.dialled is not None
    assert ev.opened_count == {ev.dialled.id: 1} and ev.closed_count == {ev.dialled.id: 1}
    stopped_for_good(st.server)


def test_portable_that_is_not_a_bool_is_a_type_error_naming_it() -> None:
    class Odd(Echo):
        portable = "yes"  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"Odd\.portable must be True or False, not 'yes'"):
        evio.serve(Odd())


def test_serve_with_no_address_and_nothing_to_do_waits_for_shutdown(start_server: Start, backend: str) -> None:
    before = open_fds()
    ev = Echo()
    use_backend(ev, backend)
    st = start_server(ev)
    ran = threading.Event()
    st.server.after(0, ran.set)  # the loop runs, with nothing to serve
    assert ran.wait(WAIT)
    assert st.thread.is_alive()
    start = time.monotonic()
    st.server.shutdown()
    st.join()
    assert time.monotonic() - start < PROMPTLY
    assert open_fds() == before
    stopped_for_good(st.server)


def test_no_descriptor_left_after_a_run_that_dialled(start_server: Start, backend: str) -> None:
    """A dialling loop with no address closes its inbox, poller, and every dialled socket when it returns."""
    before = open_fds()
    peer = start_server(Echo(), local(backend))
    host, port = peer.addr()[:2]
    ev = DialsOut(f"tcp://{host}:{port}")
    use_backend(ev, backend)
    st = start_server(ev)
    wait_for(lambda: ev.received == b"hello", "the echo")
    more = [st.server.dial(f"tcp://{host}:{port}") for _ in range(5)]
    wait_for(lambda: all(c.id in ev.opened_count for c in more), "every dial to open")
    st.server.shutdown()
    st.join()
    peer.stop()  # after its connections saw the dialler go
    assert open_fds() == before
    assert len(ev.closed_count) == 6 and set(ev.closed_count.values()) == {1}


def _start_script(processes: Processes, source: str, *args: str, ready: str) -> ServerProcess:
    """Run `source` with `args` in a child Python that imports what this one does, once it prints `ready`."""
    argv = [sys.executable, "-c", source, *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return processes.add(ServerProcess(argv, ready=ready, env=env))


_SIGNAL_SERVER = """
import signal, sys, evio

class Idle(evio.Events):
    def serving(self, server):
        signal.signal(signal.SIGTERM, lambda signum, frame: server.shutdown())
        print("ready", flush=True)

evio.serve(Idle(), sys.argv[1])
print("stopped", flush=True)
"""


def test_shutdown_from_a_signal_handler_stops_an_idle_loop_at_once(backend: str, processes: Processes) -> None:
    """No tick, no traffic: the handler's shutdown() must interrupt the poll, which would otherwise resume."""
    proc = _start_script(processes, _SIGNAL_SERVER, local(backend), ready="ready")
    assert proc.stdout() == "ready\n"
    assert proc.stop(signal.SIGTERM) == 0, proc.describe()
    assert proc.stdout() == "ready\nstopped\n"


# The main thread blocks SIGUSR1, so the kernel hands it to the other thread: the interpreter notes
# it there, and only the wakeup descriptor tells the main thread's poll (no timer, no traffic).
_SIGNAL_ON_ANOTHER_THREAD = """
import os, signal, sys, threading, evio

never = threading.Event()
threading.Thread(target=never.wait, daemon=True).start()  # its mask is the default: SIGUSR1 open
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
theirs = None
if sys.argv[2] == "theirs":  # the application set its own first
    theirs = os.pipe()[1]
    os.set_blocking(theirs, False)
    signal.set_wakeup_fd(theirs)

class Idle(evio.Events):
    def serving(self, server):
        signal.signal(signal.SIGUSR1, lambda signum, frame: server.shutdown())
        current = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(current)
        print("ready", "theirs" if current == theirs else "ours" if current != -1 else "none", flush=True)
        return evio.Action.SHUTDOWN if theirs is not None else None

evio.serve(Idle(), sys.argv[1])
after = signal.set_wakeup_fd(-1)
print("stopped", "theirs" if after == theirs else "none" if after == -1 else "ours", flush=True)
"""


def test_a_signal_taken_by_another_thread_still_runs_its_handler(backend: str, processes: Processes) -> None:
    """serve() on the main thread makes its inbox the signal wakeup descriptor, and gives it back."""
    proc = _start_script(processes, _SIGNAL_ON_ANOTHER_THREAD, local(backend), "none", ready=r"ready \w+")
    assert proc.stdout() == "ready ours\n"
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(WAIT) == 0, proc.describe()
    assert proc.stdout() == "ready ours\nstopped none\n"  # given back: nothing set after serve


def test_an_applications_signal_wakeup_descriptor_is_left_alone(backend: str, processes: Processes) -> None:
    proc = _start_script(processes, _SIGNAL_ON_ANOTHER_THREAD, local(backend), "theirs", ready=r"ready \w+")
    assert proc.wait(WAIT) == 0, proc.describe()
    assert proc.stdout() == "ready theirs\nstopped theirs\n"
