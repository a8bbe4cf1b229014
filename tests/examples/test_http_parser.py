"""The HTTP request parser alone: framing, limits and errors, fed in every split."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minihttp.parser import MAX_HEAD, ProtocolError, Request, RequestParser
from support import BAD

Parsed = tuple[bytes, bytes, int, bool, bytes]


def summary(req: Request) -> Parsed:
    return (req.method, req.target, req.minor, req.keep_alive, req.body)


def parse_pieces(pieces: list[bytes], max_body: int = 1 << 20) -> list[Parsed]:
    """Feed `pieces` one by one, collecting every request as it completes."""
    parser = RequestParser(max_body)
    out: list[Parsed] = []
    for piece in pieces:
        parser.feed(piece)
        while True:
            req = parser.next_request()
            if req is None:
                break
            out.append(summary(req))
    assert parser.buffered == 0
    return out


def parse_error(data: bytes, max_body: int = 1 << 20, *, bytewise: bool = False) -> ProtocolError:
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    with pytest.raises(ProtocolError) as info:
        parse_pieces(pieces, max_body)
    return info.value


def every_split(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(len(data) + 1)]


def test_a_request_and_its_fields() -> None:
    parser = RequestParser()
    parser.feed(b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Thing:  two  words \t\r\nACCEPT:\r\n\r\n")
    req = parser.next_request()
    assert req is not None
    assert (req.method, req.target, req.minor, req.keep_alive, req.body) == (b"GET", b"/a?b=c", 1, True, b"")
    assert req.headers == [(b"host", b"example.com"), (b"x-thing", b"two  words"), (b"accept", b"")]
    assert req.header(b"x-thing") == b"two  words"
    assert req.header(b"missing") is None
    assert parser.next_request() is None


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, CLOSE", False),
        (b"1.1", b"keep-alive", True),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
        (b"1.0", b"upgrade, keep-alive", True),
        (b"1.0", b"close", False),
        (b"1.9", None, True),  # a later 1.x minor is answered as 1.1 (RFC 9110 6.2)
    ],
)
def test_keep_alive_rules(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    head = b"GET / HTTP/" + version + b"\r\nHost: h\r\n"
    if connection is not None:
        head += b"Connection: " + connection + b"\r\n"
    [(_, _, _, got, _)] = parse_pieces([head + b"\r\n"])
    assert got is keep_alive


def test_separate_connection_headers_close_wins() -> None:
    data = b"GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"
    assert parse_pieces([data])[0][3] is False


def test_connection_close_does_not_hide_the_framing_fields_after_it() -> None:
    data = b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\nHost: h\r\n\r\nabc"
    assert parse_pieces([data]) == [(b"POST", b"/", 1, False, b"abc")]
    data = b"POST / HTTP/1.1\r\nConnection: close\r\nHost: h\r\nHost: h\r\n\r\n"
    assert parse_error(data).status == 400


def test_http10_needs_no_host() -> None:
    assert parse_pieces([b"GET / HTTP/1.0\r\n\r\n"]) == [(b"GET", b"/", 0, False, b"")]


def test_empty_lines_before_a_request_are_ignored() -> None:
    data = b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
    expected = [(b"GET", b"/", 1, True, b""), (b"GET", b"/2", 1, True, b"")]
    for pieces in every_split(data):
        assert parse_pieces(pieces) == expected


CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value;flag\r\nhello\r\n"
    b'1A ; quoted="a \\"b\\" c"\r\n' + b"x" * 26 + b"\r\n"
    b"000\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n"
)


def test_chunked_body_with_extensions_and_trailers() -> None:
    expected = [(b"POST", b"/echo", 1, True, b"hello" + b"x" * 26)]
    for pieces in every_split(CHUNKED):
        assert parse_pieces(pieces) == expected


def test_content_length_body() -> None:
    data = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world"
    for pieces in every_split(data):
        assert parse_pieces(pieces) == [(b"PUT", b"/x", 1, True, b"hello world")]


def test_duplicate_equal_content_lengths_are_one() -> None:
    data = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"
    assert parse_pieces([data])[0][4] == b"ab"


def test_http10_chunked_body_is_read_then_the_connection_closes() -> None:
    data = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n1\r\na\r\n0\r\n\r\n"
    assert parse_pieces([data]) == [(b"POST", b"/", 0, False, b"a")]


def test_expect_100_continue_is_flagged_until_the_body_arrives() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")
    assert parser.next_request() is None
    assert parser.continue_wanted
    parser.feed(b"abc")
    req = parser.next_request()
    assert req is not None and req.body == b"abc" and req.expect_continue
    assert not parser.continue_wanted


def pipeline(count: int) -> tuple[bytes, list[Parsed]]:
    """`count` requests of every framing, and what they parse to."""
    data = b""
    expected: list[Parsed] = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            data += b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n"
            expected.append((b"GET", b"/plaintext", 1, True, b""))
        elif kind == 1:
            body = str(i).encode()
            data += b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            expected.append((b"POST", b"/echo", 1, True, body))
        elif kind == 2:
            data += b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            data += b"2;x=y\r\nab\r\n0\r\nT: v\r\n\r\n"
            expected.append((b"POST", b"/echo", 1, True, b"ab"))
        else:
            data += b"HEAD /f%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i
            expected.append((b"HEAD", b"/f%d" % i, 0, True, b""))
    return data, expected


def test_pipelined_requests_split_at_every_byte() -> None:
    data, expected = pipeline(12)  # every framing, three times over
    assert parse_pieces([data]) == expected
    for pieces in every_split(data):
        assert parse_pieces(pieces) == expected


def test_100_pipelined_requests_a_byte_at_a_time() -> None:
    data, expected = pipeline(100)
    assert parse_pieces([data[i : i + 1] for i in range(len(data))]) == expected


@st.composite
def request_stream(draw: st.DrawFn) -> tuple[bytes, list[Parsed]]:
    data = b""
    expected: list[Parsed] = []
    token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
    value = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F))
    for _ in range(draw(st.integers(1, 6))):
        method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"X-CUSTOM"]))
        target = b"/" + draw(st.binary(max_size=20).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E)))
        head = b"%s %s HTTP/1.1\r\nHost: h\r\n" % (method, target)
        for _ in range(draw(st.integers(0, 3))):
            name = draw(token).encode()
            if name.lower() in (b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"):
                name = b"x-" + name
            head += b"%s:%s%s%s\r\n" % (name, draw(st.sampled_from([b"", b" ", b"\t "])), draw(value), b" ")
        body = draw(st.binary(max_size=40))
        framing = draw(st.sampled_from(["none", "length", "chunked"]))
        if framing == "none":
            body = b""
            data += head + b"\r\n"
        elif framing == "length":
            data += head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        else:
            cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
            chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a]
            data += head + b"Transfer-Encoding: chunked\r\n\r\n"
            data += b"".join(b"%x;e=1\r\n%s\r\n" % (len(c), c) for c in chunks)
            data += b"0\r\n" + (b"Trailer-Field: x\r\n" if draw(st.booleans()) else b"") + b"\r\n"
        expected.append((method, target, 1, True, body))
    return data, expected


@settings(max_examples=200, deadline=None)
@given(request_stream(), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_of_valid_requests_parses_the_same(stream: tuple[bytes, list[Parsed]], cuts: list[int]) -> None:
    data, expected = stream
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    assert parse_pieces(pieces) == expected


@pytest.mark.parametrize(("data", "status"), BAD, ids=[f"{s}-{i}" for i, (_, s) in enumerate(BAD)])
def test_bad_input_is_refused_with_its_status(data: bytes, status: int) -> None:
    assert parse_error(data, max_body=1024).status == status
    assert parse_error(data, max_body=1024, bytewise=True).status == status


def test_error_messages_name_the_offending_line() -> None:
    err = parse_error(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n")
    assert "b'Bad Header: x'" in err.reason
    assert "HTTP/2.0" in parse_error(b"GET / HTTP/2.0\r\n\r\n").reason


def test_a_broken_stream_stays_broken() -> None:
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.next_request()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(ProtocolError):
        parser.next_request()


def test_head_limit_is_exact() -> None:
    line = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    fits = line + b"a" * (MAX_HEAD - len(line))
    assert len(parse_pieces([fits + b"\r\n\r\n"])) == 1
    assert parse_error(fits + b"a\r\n\r\n").status == 431


def test_an_endless_head_is_refused_before_it_ends() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    with pytest.raises(ProtocolError) as info:
        for _ in range(MAX_HEAD // len(filler) + 2):
            parser.feed(filler)
            assert parser.next_request() is None
    assert info.value.status == 431


def test_a_head_fed_a_byte_at_a_time_costs_linear_time() -> None:
    # About 10,000 lines: searching them again on every byte would take minutes.
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"A: b\r\n" * ((MAX_HEAD - 100) // 6)
    parser = RequestParser()
    start = time.process_time()
    for i in range(len(head)):
        parser.feed(head[i : i + 1])
        assert parser.next_request() is None
    parser.feed(b"\r\n")
    assert parser.next_request() is not None
    assert time.process_time() - start < 10
