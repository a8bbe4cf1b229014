"""Exceptions raised by events, and bad values returned from them."""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from support import (
    WAIT,
    Data,
    ServerThread,
    Start,
    TestEvents,
    local,
    open_fds,
    recv_exactly,
    recv_until_closed,
    with_backend,
)

import evio
from evio.events import DataResult, OpenedResult, TickResult


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


# ---- messages that say what is wrong -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ((b"hi", evio.Options()), "options go in the 3-tuple"),
        ((b"hi", None, "close"), r"\(b'hi', None, 'close'\)"),
        ((b"a", b"b", None, None), "out, \\(out, action\\) or \\(out, options, action\\)"),
    ],
)
def test_opened_returning_a_bad_tuple_says_how_to_fix_it(
    start_server: Start, backend: str, returned: Any, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Bad(Faulty):
        def opened(self, conn: evio.Conn) -> OpenedResult:
            return returned  # type: ignore[no-any-return]

    ev = Bad()
    st = start_server(ev, local(backend))
    with caplog.at_level(logging.ERROR, logger="evio"), st.connect() as c:
        assert recv_until_closed(c) == b""
        err = ev.closed_with.get(timeout=WAIT)
    assert isinstance(err, TypeError)
    assert re.search(message, str(err)), str(err)
    assert "opened returned" in str(err)


def test_data_returning_a_tuple_of_two_buffers_blames_the_tuple(start_server: Start, backend: str) -> None:
    class Pair(Faulty):
        def data(self, conn: evio.Conn, data: Data) -> DataResult:
            return b"a", b"b"  # type: ignore[return-value]

    ev = Pair()
    st = start_server(ev, local(backend))
    with st.connect() as c:
        c.sendall(b"x")
        assert recv_until_closed(c) == b""
    err = ev.closed_with.get(timeout=WAIT)
    assert isinstance(err, TypeError)
    assert "(b'a', b'b')" in str(err), "the message shows the whole tuple, not just its second item"


@pytest.mark.parametrize("where", ["serving", "tick"])
def test_a_connection_action_from_a_loop_event_is_a_type_error(backend: str, where: str) -> None:
    class Wrong(TestEvents):
        def serving(self, server: evio.Server) -> evio.Action | None:
            super().serving(server)
            return evio.Action.CLOSE if where == "serving" else None

        def tick(self) -> TickResult:
            return (0.01, evio.Action.DETACH) if where == "tick" else None

    st = ServerThread(Wrong(), local(backend))
    st.thread.start()
    st.join()
    assert isinstance(st.error, TypeError)
    assert f"{where} returned" in str(st.error) and "only Action.SHUTDOWN" in str(st.error)


@pytest.mark.parametrize("shape", ["bare", "first"])
@pytest.mark.parametrize("action", [evio.Action.CLOSE, evio.Action.SHUTDOWN])
def test_an_action_from_tick_in_place_of_the_delay_is_a_type_error(
    backend: str, action: evio.Action, shape: str
) -> None:
    """`Action` is an IntEnum: returned from `tick` as the delay, it must not pass for seconds."""

    class Wrong(TestEvents):
        def tick(self) -> TickResult:
            return action if shape == "bare" else (action, None)

    st = ServerThread(Wrong(), local(backend))
    st.thread.start()
    st.join()
    assert isinstance(st.error, TypeError)
    assert "tick returned" in str(st.error)
    assert ("an action goes in (delay, action)" if shape == "bare" else "the delay first") in str(st.error)


def test_a_connection_action_from_closed_is_logged_as_a_type_error(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    logged = threading.Event()

    class Wrong(Faulty):
        def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
            super().closed(conn, err)
            return evio.Action.CLOSE

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and "only Action.SHUTDOWN" in str(record.exc_info[1]):
                logged.set()

    handler = Flag()
    logging.getLogger("evio").addHandler(handler)
    try:
        ev = Wrong()
        st = start_server(ev, local(backend))
        with st.connect() as c:
            c.sendall(b"hi")
            assert recv_exactly(c, 2) == b"hi"
        assert ev.closed_with.get(timeout=WAIT) is None
        assert logged.wait(WAIT), "closed returning Action.CLOSE is reported"
        with st.connect() as c:  # and the server goes on
            c.sendall(b"ok")
            assert recv_exactly(c, 2) == b"ok"
    finally:
        logging.getLogger("evio").removeHandler(handler)


def test_log_messages_do_not_repeat_the_logger_name(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    ev = Faulty()
    st = start_server(ev, local(backend))
    with caplog.at_level(logging.ERROR, logger="evio"), st.connect() as c:
        c.sendall(b"boom")
        assert recv_until_closed(c) == b""
        ev.closed_with.get(timeout=WAIT)
    records = [r for r in caplog.records if r.name == "evio"]
    assert records
    assert not any(r.getMessage().startswith("evio:") for r in records)


def test_a_regular_file_at_a_unix_path_is_named_as_such(tmp_path: Path, backend: str) -> None:
    target = tmp_path / "not-a-socket"
    target.write_bytes(b"data")
    with pytest.raises(OSError) as info:
        evio.serve(Faulty(), with_backend(f"unix://{target}", backend))
    assert "a regular file is in the way" in str(info.value)
    assert "Address already in use" not in str(info.value)
    assert target.read_bytes() == b"data"
