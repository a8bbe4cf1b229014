"""Exceptions raised by events, and bad values returned from them."""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Union

import pytest
from conftest import (
    WAIT,
    ServerThread,
    TestEvents,
    local,
    open_fds,
    recv_exactly,
    recv_until_closed,
    with_backend,
)

import evio
from evio.events import DataResult, OpenedResult, TickResult

Start = Callable[..., ServerThread]
Data = Union[bytes, memoryview, None]


class Boom(Exception):
    pass


class Faulty(TestEvents):
    """Echoes; `boom` in the input raises from data, a bad value returns one."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_with: queue.Queue[BaseException | None] = queue.Queue()

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data == b"boom":
            raise Boom("data failed")
        if data == b"str":
            return "not bytes"  # type: ignore[return-value]
        if data == b"action":
            return b"x", 42  # type: ignore[return-value]
        return data

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        self.closed_with.put(err)
        return None


@pytest.mark.parametrize(
    ("trigger", "error", "message"),
    [(b"boom", Boom, "data failed"), (b"str", TypeError, "not bytes"), (b"action", TypeError, "42")],
)
def test_a_failing_data_event_closes_only_its_connection(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture, trigger: bytes, error: type, message: str
) -> None:
    ev = Faulty()
    st = start_server(ev, local(backend))
    with caplog.at_level(logging.ERROR, logger="evio"), st.connect() as bystander, st.connect() as victim:
        victim.sendall(trigger)
        assert recv_until_closed(victim) == b""
        err = ev.closed_with.get(timeout=WAIT)
        assert isinstance(err, error) and message in str(err)
        bystander.sendall(b"still here")
        assert recv_exactly(bystander, 10) == b"still here"
    records = [r for r in caplog.records if r.name == "evio"]
    assert records and records[0].exc_info is not None and records[0].exc_info[0] is error


def test_a_failing_opened_event_closes_the_connection(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    class BadOpen(Faulty):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            if conn.id == 1:
                raise Boom("opened failed")
            return b"hi"

    ev = BadOpen()
    st = start_server(ev, local(backend))
    with caplog.at_level(logging.ERROR, logger="evio"):
        with st.connect() as c:
            assert recv_until_closed(c) == b""
        assert isinstance(ev.closed_with.get(timeout=WAIT), Boom)
        with st.connect() as c:
            assert recv_exactly(c, 2) == b"hi"
    assert any("opened" in r.getMessage() for r in caplog.records)


def test_failing_closed_and_detached_are_logged(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    logged = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "detached" in record.getMessage():
                logged.set()

    class BadEndings(TestEvents):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return None, evio.Action.DETACH if data == b"detach" else evio.Action.CLOSE

        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            raise Boom("closed failed")

        def detached(self, conn: evio.Conn, sock: Any) -> evio.Action | None:
            raise Boom("detached failed")

    handler = Handler()
    logging.getLogger("evio").addHandler(handler)
    try:
        st = start_server(BadEndings(), local(backend))
        with caplog.at_level(logging.ERROR, logger="evio"):
            with st.connect() as c:
                c.sendall(b"close")
                assert recv_until_closed(c) == b""
            with st.connect() as c:
                c.sendall(b"detach")
                assert recv_until_closed(c) == b"", "a socket whose detached event failed is closed"
            assert logged.wait(WAIT)
            with st.connect() as c:  # the server keeps serving
                c.sendall(b"close")
                assert recv_until_closed(c) == b""
    finally:
        logging.getLogger("evio").removeHandler(handler)
    messages = [r.getMessage() for r in caplog.records]
    assert any("closed raised" in m for m in messages)
    assert any("detached raised" in m for m in messages)


@pytest.mark.parametrize("where", ["serving", "tick", "tick-value", "data-interrupt"])
def test_loop_level_failures_close_everything_and_propagate(backend: str, tmp_path: Path, where: str) -> None:
    closed: list[BaseException | None] = []
    connected = threading.Event()
    interrupt = KeyboardInterrupt if where == "data-interrupt" else Boom

    class Fatal(TestEvents):
        def serving(self, server: evio.Server) -> evio.Action | None:
            super().serving(server)
            if where == "serving":
                raise Boom("serving failed")
            return None

        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            if data == b"die":
                raise interrupt()
            connected.set()  # the echo is sent before any later tick runs
            return data

        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            closed.append(err)
            return None

        def tick(self) -> TickResult:
            if where == "tick" and connected.is_set():
                raise Boom("tick failed")
            if where == "tick-value" and connected.is_set():
                return "soon"  # type: ignore[return-value]
            return 0.02

    path = tmp_path / "fatal.sock"
    before = open_fds()
    st = ServerThread(Fatal(), local(backend), with_backend(f"unix://{path}", backend))
    if where == "serving":
        st.thread.start()
        st.join()
        assert isinstance(st.error, Boom)
    else:
        st.start()
        c = st.connect(1)
        c.sendall(b"ok")
        assert recv_exactly(c, 2) == b"ok"
        assert connected.wait(WAIT)
        if where == "data-interrupt":
            c.sendall(b"die")
        st.join()
        assert recv_until_closed(c) == b""
        c.close()
        assert closed == [None]
        expected: type = {"tick": Boom, "tick-value": TypeError, "data-interrupt": KeyboardInterrupt}[where]
        assert isinstance(st.error, expected)
    assert not os.path.exists(path), "the unix socket file is removed in every case"
    assert open_fds() == before
