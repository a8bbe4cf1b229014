"""`HTTPConnection` and the routes, without I/O: bytes in, and every response
read back by h11, an HTTP parser written by others.
"""

from __future__ import annotations

import email.utils
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
from minihttp import CHUNK, App, HTTPConnection
from minihttp.protocol import LOW_WATER

GET_PLAINTEXT = b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    informational: list[int] = field(default_factory=list)


def read_replies(data: bytes, methods: list[str], *, closed: bool = False) -> list[Reply]:
    """`data` parsed by h11 as the responses to requests of `methods`, in order.

    Fails when bytes are left over, or (with `closed`) when the server did
    not announce the close that it made.
    """
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    if closed:
        conn.receive_data(b"")
    replies: list[Reply] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
        conn.send(h11.EndOfMessage())
        info: list[int] = []
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA, f"response {len(replies)} is incomplete"
            if isinstance(event, h11.InformationalResponse):
                info.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert head is not None
        headers = {k.decode(): v.decode("latin-1") for k, v in head.headers}
        replies.append(Reply(head.status_code, headers, body, info))
        if conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    assert len(replies) == len(methods), f"{len(methods) - len(replies)} responses missing after a close"
    if closed:
        assert conn.their_state is h11.MUST_CLOSE, "the last response did not say Connection: close"
    assert conn.trailing_data == (b"", closed)
    return replies


def one_reply(data: bytes, method: str = "GET") -> Reply:
    [reply] = read_replies(data, [method])
    return reply


@pytest.fixture
def app(tmp_path: Path) -> App:
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, file\n")
    return App(str(root), max_body=1024)


def test_plaintext_and_json(app: App) -> None:
    http = HTTPConnection(app)
    r = one_reply(http.receive(GET_PLAINTEXT))
    assert (r.status, r.body) == (200, b"Hello, World!")
    assert r.headers["server"] == "evio"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == "13"
    assert email.utils.parsedate_to_datetime(r.headers["date"]).tzname() == "UTC"
    r = one_reply(http.receive(b"GET /json HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert (r.status, r.body, r.headers["content-type"]) == (200, b'{"message":"Hello, World!"}', "application/json")
    assert not http.closing


def test_date_is_refreshed(app: App) -> None:
    http = HTTPConnection(app)
    app.refresh(784111777.0)
    r = one_reply(http.receive(GET_PLAINTEXT))
    assert r.headers["date"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    app.refresh(784111778.5)
    r = one_reply(http.receive(b"GET /plaintext HTTP/1.0\r\n\r\n"))
    assert r.headers["date"] == "Sun, 06 Nov 1994 08:49:38 GMT"


def test_head_and_other_methods(app: App) -> None:
    http = HTTPConnection(app)
    r = one_reply(http.receive(b"HEAD /plaintext HTTP/1.1\r\nHost: h\r\n\r\n"), "HEAD")
    assert (r.status, r.body, r.headers["content-length"]) == (200, b"", "13")
    r = one_reply(http.receive(b"DELETE /json HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert (r.status, r.headers["allow"]) == (405, "GET, HEAD")
    r = one_reply(http.receive(b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert (r.status, r.headers["allow"]) == (405, "POST")
    r = one_reply(http.receive(b"POST /hello.txt HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"))
    assert (r.status, r.headers["allow"]) == (405, "GET, HEAD")
    assert not http.closing


def pipelined(count: int) -> tuple[bytes, list[str], list[tuple[int, bytes]]]:
    """`count` requests of several kinds, their methods, and the expected (status, body)."""
    data = b""
    methods: list[str] = []
    expected: list[tuple[int, bytes]] = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            data += GET_PLAINTEXT
            expected.append((200, b"Hello, World!"))
        elif kind == 1:
            data += b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%d" % (len(str(i)), i)
            expected.append((200, str(i).encode()))
        elif kind == 2:
            data += b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            data += b"1;ext=1\r\n%d\r\n0\r\nTrailer: t\r\n\r\n" % (i % 10)
            expected.append((200, str(i % 10).encode()))
        elif kind == 3:
            data += b"HEAD /json HTTP/1.1\r\nHost: h\r\n\r\n"
            expected.append((200, b""))
        else:
            data += b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            expected.append((200, b"hello, file\n"))
        methods.append(["GET", "POST", "POST", "HEAD", "GET"][kind])
    return data, methods, expected


def test_100_pipelined_requests_are_answered_in_order(app: App) -> None:
    data, methods, expected = pipelined(100)
    whole = HTTPConnection(app).receive(data)
    assert [(r.status, r.body) for r in read_replies(whole, methods)] == expected
    http = HTTPConnection(app)
    bytewise = b"".join(http.receive(data[i : i + 1]) for i in range(len(data)))
    assert bytewise == whole
    assert not http.closing


def test_pipelined_requests_split_at_every_byte(app: App) -> None:
    data, _, _ = pipelined(10)
    whole = HTTPConnection(app).receive(data)
    for i in range(len(data) + 1):
        http = HTTPConnection(app)
        assert http.receive(data[:i]) + http.receive(data[i:]) == whole


@pytest.mark.parametrize(
    ("request_head", "connection", "closing"),
    [
        (b"GET /plaintext HTTP/1.1\r\nHost: h\r\n", None, False),
        (b"GET /plaintext HTTP/1.1\r\nHost: h\r\nConnection: close\r\n", "close", True),
        (b"GET /plaintext HTTP/1.0\r\n", "close", True),
        (b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n", "keep-alive", False),
        (b"GET /hello.txt HTTP/1.0\r\n", "close", True),
        (b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n", "keep-alive", False),
        (b"GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n", "close", True),
        (b"HEAD /json HTTP/1.0\r\n", "close", True),
    ],
)
def test_keep_alive_and_close(app: App, request_head: bytes, connection: str | None, closing: bool) -> None:
    http = HTTPConnection(app)
    method = request_head.split(b" ")[0].decode()
    out = http.receive(request_head + b"\r\n" + GET_PLAINTEXT)
    if closing:
        [r] = read_replies(out, [method], closed=True)
    else:
        r, _ = read_replies(out, [method, "GET"])
    assert r.headers.get("connection") == connection
    assert http.closing is closing
    after = http.receive(GET_PLAINTEXT)
    assert after == b"" if closing else one_reply(after).status == 200


def test_requests_before_a_bad_one_are_answered_then_the_connection_closes(app: App) -> None:
    http = HTTPConnection(app)
    out = http.receive(GET_PLAINTEXT + b"GET /json HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/2.0\r\n\r\n" + GET_PLAINTEXT)
    r1, r2, r3 = read_replies(out, ["GET", "GET", "GET"], closed=True)
    assert (r1.status, r2.status, r3.status) == (200, 200, 505)
    assert r3.headers["connection"] == "close"
    assert b"HTTP/2.0" in r3.body
    assert http.closing
    assert http.receive(GET_PLAINTEXT) == b""


def test_body_over_the_limit_is_refused_before_it_is_read(app: App) -> None:
    http = HTTPConnection(app)
    out = http.receive(b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1025\r\n\r\n")
    r = one_reply(out)
    assert (r.status, r.informational) == (413, [])
    assert http.closing


def test_100_continue(app: App) -> None:
    http = HTTPConnection(app)
    out = http.receive(b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert out == b"HTTP/1.1 100 Continue\r\n\r\n"
    out += http.receive(b"ab")
    out += http.receive(b"cd")
    r = one_reply(out, "POST")
    assert (r.informational, r.status, r.body) == ([100], 200, b"abcd")


def test_100_continue_is_not_sent_when_the_body_came_with_the_head(app: App) -> None:
    http = HTTPConnection(app)
    out = http.receive(b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab")
    assert one_reply(out, "POST").informational == []


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def big_file(app: App, name: str, size: int) -> bytes:
    data = os.urandom(size)
    Path(app.static.root, name).write_bytes(data)
    return data


def test_a_large_file_is_streamed_piece_by_piece(app: App) -> None:
    data = big_file(app, "big.bin", 3 * CHUNK + 17)
    fds = open_fds()
    http = HTTPConnection(app)
    out = http.receive(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n" + GET_PLAINTEXT)
    assert (http.streaming, open_fds()) == (True, fds + 1)
    assert len(out) < CHUNK + 1024  # the head and one piece
    assert not http.wants_more(LOW_WATER)  # the transport still holds enough
    assert http.receive(b"GET /json HTTP/1.1\r\nHost: h\r\n\r\n") == b""  # waits behind the stream
    pieces = 0
    while http.streaming:
        assert http.wants_more(0)
        assert not http.wants_more(0)  # asked once per piece
        out += http.resume()
        pieces += 1
    assert pieces == 3
    big, plain, json = read_replies(out, ["GET", "GET", "GET"])
    assert (big.status, big.headers["content-length"], big.body == data) == (200, str(len(data)), True)
    assert (plain.body, json.status) == (b"Hello, World!", 200)
    assert open_fds() == fds
    assert not http.closing


def test_a_streamed_response_to_a_closing_request_closes_after_its_last_piece(app: App) -> None:
    big_file(app, "big.bin", CHUNK + 1)
    http = HTTPConnection(app)
    out = http.receive(b"GET /big.bin HTTP/1.0\r\n\r\n")
    assert (http.closing, http.streaming) == (False, True)
    out += http.resume()
    assert (http.closing, http.streaming) == (True, False)
    assert len(read_replies(out, ["GET"], closed=True)[0].body) == CHUNK + 1


def test_closing_a_connection_mid_stream_releases_the_file(app: App) -> None:
    big_file(app, "big.bin", 2 * CHUNK + 1)
    fds = open_fds()
    http = HTTPConnection(app)
    http.receive(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
    assert open_fds() == fds + 1
    http.close()
    assert open_fds() == fds and http.closing and not http.streaming
    assert http.resume() == b""


def test_a_file_that_shrinks_mid_stream_closes_the_connection(app: App) -> None:
    big_file(app, "big.bin", 3 * CHUNK)
    http = HTTPConnection(app)
    http.receive(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
    os.truncate(Path(app.static.root, "big.bin"), CHUNK + 10)
    assert len(http.resume()) == 10
    assert http.resume() == b""
    assert http.closing and not http.streaming


def test_a_client_piling_up_requests_behind_a_stream_is_cut_off(app: App) -> None:
    big_file(app, "big.bin", 2 * CHUNK)
    http = HTTPConnection(app)
    http.receive(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
    for _ in range(200):
        http.receive(GET_PLAINTEXT * 100)
        if http.closing:
            break
    assert http.closing and not http.streaming


def test_a_fifo_is_not_opened(app: App) -> None:
    # Opening a FIFO for reading blocks until a writer comes: it must be refused first.
    os.mkfifo(os.path.join(app.static.root, "pipe"))
    assert one_reply(HTTPConnection(app).receive(b"GET /pipe HTTP/1.1\r\nHost: h\r\n\r\n")).status == 404


def test_a_unix_socket_file_is_not_served(app: App) -> None:
    path = os.path.join(app.static.root, "sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert one_reply(HTTPConnection(app).receive(b"GET /sock HTTP/1.1\r\nHost: h\r\n\r\n")).status == 404
