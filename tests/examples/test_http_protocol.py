"""`HTTPConnection` and the routes, without I/O: bytes in, and every response
read back by h11, an HTTP parser written by others.
"""

from __future__ import annotations

import email.utils
import math
import os
import socket
import stat
from pathlib import Path

import pytest
from minihttp import CHUNK, LOW_WATER, OUTPUT_BOUND, App, HTTPConnection, Timeouts, Wait, parse_time
from support import GET_PLAINTEXT, one_reply, open_fds, pipelined, read_replies


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


def test_pipelined_answers_are_made_in_bounded_steps(app: App) -> None:
    data = big_file(app, "quarter.bin", CHUNK)  # sent whole, not streamed
    http = HTTPConnection(app)
    requests = b"GET /quarter.bin HTTP/1.1\r\nHost: h\r\n\r\n" * 200 + GET_PLAINTEXT
    out = http.receive(requests)  # 200 requests, 50 MiB of answers
    assert OUTPUT_BOUND <= len(out) < OUTPUT_BOUND + CHUNK + 1024
    assert (http.busy, http.working, http.streaming) == (True, False, False)
    assert http.receive(b"GET /json HTTP/1.1\r\nHost: h\r\n\r\n") == b""  # waits its turn
    assert not http.wants_more(LOW_WATER)  # the transport still holds enough
    steps = 1
    while http.busy:
        assert http.wants_more(LOW_WATER - 1)
        assert not http.wants_more(0)  # asked once per step
        piece = http.resume()
        assert len(piece) < OUTPUT_BOUND + CHUNK + 1024
        out += piece
        steps += 1
    assert steps == math.ceil(202 / 4)  # four answers a step, each a little over a quarter MiB
    replies = read_replies(out, ["GET"] * 202)
    assert all(r.body == data for r in replies[:200])
    assert (replies[200].body, replies[201].status) == (b"Hello, World!", 200)
    assert not http.closing and http.resume() == b""


class Clock:
    """A time-out schedule checked step by step, without waiting."""

    def __init__(self, http: HTTPConnection) -> None:
        self.http = http

    def check(self, pending: int, wait: Wait, deadline: float) -> None:
        assert self.http.deadline(pending) == (deadline, wait)


TIMEOUTS = Timeouts(header=10, body=20, keepalive=30, send=40)


@pytest.fixture
def timed(tmp_path: Path) -> App:
    root = tmp_path / "root"
    root.mkdir()
    return App(str(root), timeouts=TIMEOUTS)


def test_a_new_connection_has_the_header_time_out_from_its_accept(timed: App) -> None:
    http = HTTPConnection(timed, now=100.0)
    assert http.deadline(0) == (110.0, Wait.HEADER)
    http.receive(b"GET /plaintext HT", now=105.0)
    http.receive(b"TP/1.1\r\nHo", now=109.0)
    assert http.deadline(0) == (110.0, Wait.HEADER)  # bytes do not move it: the whole head is due
    out = http.time_out(Wait.HEADER)
    r = one_reply(out)
    assert (r.status, r.headers["connection"]) == (408, "close")
    assert b"did not arrive in full within 10 s" in r.body
    assert http.closing and http.deadline(0) == (math.inf, Wait.NOTHING)


def test_a_connection_that_sent_nothing_is_closed_without_an_answer(timed: App) -> None:
    http = HTTPConnection(timed, now=100.0)
    assert http.time_out(Wait.HEADER) == b""  # as nginx: nothing was asked, nothing is answered
    assert http.closing


def test_keep_alive_then_the_next_head(timed: App) -> None:
    http = HTTPConnection(timed, now=100.0)
    assert one_reply(http.receive(GET_PLAINTEXT, now=101.0)).status == 200
    assert http.deadline(0) == (131.0, Wait.KEEPALIVE)
    http.active = 101.5  # the transport: the response went out
    assert http.deadline(0) == (131.5, Wait.KEEPALIVE)
    assert http.receive(b"GET /json", now=120.0) == b""
    assert http.deadline(0) == (130.0, Wait.HEADER)  # from the head's first byte
    assert http.receive(b" HTTP/1.1\r\n", now=125.0) == b""
    assert http.deadline(0) == (130.0, Wait.HEADER)
    assert http.time_out(Wait.KEEPALIVE) == b""  # an idle connection is closed without an answer


def test_the_head_after_a_pipelined_answer_starts_its_time_out_then(timed: App) -> None:
    http = HTTPConnection(timed, now=100.0)
    http.receive(b"GET /plaint", now=101.0)
    http.receive(b"ext HTTP/1.1\r\nHost: h\r\n\r\nGET /json HTTP/1.1\r\n", now=108.0)
    assert http.deadline(0) == (118.0, Wait.HEADER)


def test_the_body_time_out_runs_between_two_reads(timed: App) -> None:
    http = HTTPConnection(timed, now=100.0)
    http.receive(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab", now=101.0)
    assert http.deadline(0) == (121.0, Wait.BODY)
    http.receive(b"cd", now=115.0)
    assert http.deadline(0) == (135.0, Wait.BODY)
    r = one_reply(http.time_out(Wait.BODY))
    assert (r.status, r.headers["connection"]) == (408, "close")
    assert b"no more of the request body arrived within 20 s" in r.body


def test_the_send_time_out_runs_while_output_is_pending(timed: App) -> None:
    big_file(timed, "big.bin", 3 * CHUNK)
    http = HTTPConnection(timed, now=100.0)
    http.receive(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n", now=101.0)
    assert http.deadline(CHUNK) == (141.0, Wait.SEND)
    http.active = 130.0  # the transport: the client took some
    assert http.deadline(CHUNK) == (170.0, Wait.SEND)
    assert http.deadline(0) == (170.0, Wait.SEND)  # a stream is under way even with nothing pending
    http.resume(now=131.0)
    assert http.time_out(Wait.SEND) == b""  # a client that does not read gets nothing more
    assert http.closing and not http.streaming


def test_a_listing_being_built_waits_for_nothing(timed: App) -> None:
    folder = Path(timed.static.root, "many")
    folder.mkdir()
    for i in range(1500):
        (folder / str(i)).write_bytes(b"")
    http = HTTPConnection(App(timed.static.root, timeouts=TIMEOUTS, autoindex=True), now=100.0)
    http.receive(b"GET /many/ HTTP/1.1\r\nHost: h\r\n\r\n", now=101.0)
    assert (http.working, http.deadline(0)) == (True, (math.inf, Wait.NOTHING))
    out = b""
    while http.working:
        assert http.deadline(0) == (math.inf, Wait.NOTHING)
        out += http.resume(now=102.0)
    assert http.deadline(len(out)) == (142.0, Wait.SEND)
    assert http.deadline(0) == (132.0, Wait.KEEPALIVE)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60", 60.0), ("60s", 60.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("0.25", 0.25), (" 1S ", 1.0)],
)
def test_times_are_read_as_nginx_writes_them(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "1x", "", "ms", "inf", "nan", "1e400"])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time(text)


def test_timeouts_default_to_nginxs() -> None:
    t = Timeouts()
    assert (t.header, t.body, t.keepalive, t.send) == (60, 60, 75, 60)  # nginx 1.22's defaults
    assert t.shortest == 60
    with pytest.raises(ValueError, match="send time-out"):
        Timeouts(send=0)
