"""Limits the core enforces: `Events.max_connections`, and a unix socket file's mode."""

from __future__ import annotations

import os
import queue
import socket
import stat
from pathlib import Path

import pytest
from support import WAIT, Data, Start, TestEvents, local, recv_exactly, with_backend

import evio
from evio.addresses import parse


class Capped(TestEvents):
    max_connections = 2

    def __init__(self) -> None:
        super().__init__()
        self.opened_ids: queue.Queue[int] = queue.Queue()

    def opened(self, conn: evio.Conn) -> evio.OpenedResult:
        self.opened_ids.put(conn.id)
        return b"hello %d\n" % len(conn.server.conns)

    def data(self, conn: evio.Conn, data: Data) -> evio.DataResult:
        return data


def test_max_connections_holds_new_clients_in_the_backlog_and_serves_them_in_turn(
    start_server: Start, backend: str
) -> None:
    ev = Capped()
    st = start_server(ev, local(backend))
    clients = [st.connect() for _ in range(5)]  # all five connect: the kernel's backlog takes them
    try:
        for c in clients[:2]:
            assert c.recv(64).startswith(b"hello")
        ev.opened_ids.get(timeout=WAIT)
        ev.opened_ids.get(timeout=WAIT)
        # The other three wait, unrefused: nothing is accepted while two are open.
        with pytest.raises(queue.Empty):
            ev.opened_ids.get(timeout=0.3)
        for waiting in clients[2:]:
            waiting.sendall(b"queued")  # their input waits in the kernel too
        for turn in range(3):
            clients[turn].close()
            c = clients[2 + turn]
            assert recv_exactly(c, 8) == b"hello 2\n", "served in turn once a connection closed"
            assert recv_exactly(c, 6) == b"queued"
            assert len(st.server.conns) == 2
    finally:
        for c in clients:
            c.close()


def test_max_connections_counts_accepted_connections_only(start_server: Start, backend: str) -> None:
    target = start_server(Capped(), local(backend))
    dialled: queue.Queue[evio.Conn] = queue.Queue()

    class Dialler(Capped):
        max_connections = 1

        def opened(self, conn: evio.Conn) -> evio.OpenedResult:
            if conn.outbound:
                dialled.put(conn)
                return None
            for _ in range(2):
                conn.server.dial(f"tcp://127.0.0.1:{target.addr()[1]}")
            return super().opened(conn)

    st = start_server(Dialler(), local(backend))
    with st.connect() as c:
        assert c.recv(64).startswith(b"hello")
        dialled.get(timeout=WAIT)
        dialled.get(timeout=WAIT)  # two dials up beside the one accepted connection


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_a_bad_max_connections_is_refused(limit: object) -> None:
    class Bad(TestEvents):
        max_connections = limit  # type: ignore[assignment]

    with pytest.raises(ValueError, match="max_connections"):
        evio.serve(Bad(), "tcp4://127.0.0.1:0")


def test_unix_mode_is_set_before_accepting(start_server: Start, backend: str, tmp_path: Path) -> None:
    path = tmp_path / "perm.sock"
    old = os.umask(0)  # a umask of 000 would leave the socket writable by anyone
    try:
        st = start_server(TestEvents(), with_backend(f"unix://{path}?mode=0600", backend))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(path))
    st.stop()
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("unix:///tmp/x.sock?mode=rw", "octal"),
        ("unix:///tmp/x.sock?mode=0689", "octal"),
        ("unix:///tmp/x.sock?mode=", "octal"),
        ("unix:///tmp/x.sock?mode=77777", "octal"),
        ("tcp://:1?mode=0600", "unix addresses only"),
    ],
)
def test_bad_modes_are_value_errors(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse(text)


def test_mode_parses_as_octal() -> None:
    assert parse("unix:///tmp/x.sock?mode=0660").mode == 0o660
    assert parse("unix:///tmp/x.sock?mode=700").mode == 0o700
    assert parse("unix:///tmp/x.sock").mode is None
