"""The incremental HTTP/1.1 request parser: bytes in, complete `Request`s out.

The parser keeps the unparsed input and how far it has already searched for
the end of what it waits for (the head, a chunk-size line, the trailers), so
a request that trickles in a byte at a time costs linear time, not quadratic.

The common case is kept cheap: a packet holding whole requests is parsed in
place, without copying it into the buffer; one regular expression checks a
whole head, the few fields that frame a request are looked for in it, and the
list of header fields is only cut out when a route asks for it.

Framing follows RFC 9112 strictly, because a lenient origin server behind a
strict proxy is how requests get smuggled: lines end in CRLF (a bare LF or CR
is an error), no whitespace before a field's colon, no line folding, one
`Content-Length` value, `Transfer-Encoding` and `Content-Length` never both.
"""

from __future__ import annotations

import re
from typing import List, NoReturn, Tuple, Union

#: The largest head (request line and header fields) accepted, in bytes.
MAX_HEAD = 64 * 1024
#: The largest chunk-size line (size and extensions) accepted, in bytes.
MAX_CHUNK_LINE = 4096
#: The default largest body accepted, in bytes.
DEFAULT_MAX_BODY = 16 * 1024 * 1024

_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_VALUE_CHARS = rb"[\t\x20-\x7e\x80-\xff]"
# One match checks a whole head (request line and fields), so the fields can
# later be cut apart with plain splits. A CR, LF or NUL inside a line,
# whitespace before a colon, or a folded line all fail it.
_REQUEST_HEAD = re.compile(
    rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) HTTP/1\.([0-9])(?:\r\n" + _TCHAR + rb"+:" + _VALUE_CHARS + rb"*)*"
).fullmatch
# The slow path, to say which line is at fault once `_REQUEST_HEAD` failed.
_REQUEST_LINE = re.compile(_TCHAR + rb"+ [\x21-\x7e]+ HTTP/1\.[0-9]").fullmatch
_ANY_VERSION = re.compile(rb"HTTP/([0-9]+)(?:\.[0-9]+)?").fullmatch
_FIELD = re.compile(_TCHAR + rb"+:" + _VALUE_CHARS + rb"*").fullmatch
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*"
    + _TCHAR
    + rb"+(?:[ \t]*=[ \t]*(?:"
    + _TCHAR
    + rb"+|"
    + _QUOTED
    + rb"))?)*[ \t]*"
).fullmatch
_DIGITS = re.compile(rb"[0-9]{1,18}").fullmatch

# The fields the parser acts on, looked for in the lower-cased head: once
# `_REQUEST_HEAD` passed, a field name can only follow a line break. Most heads
# hold only Host, which a count finds; one search tells whether any other is
# there before they are all collected.
_OTHER_FRAMING = re.compile(rb"\n(?:content-length|transfer-encoding|connection|expect):").search
_FRAMING_FIELDS = re.compile(rb"\n(content-length|transfer-encoding|connection|expect):[ \t]*([^\r]*)").findall

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _BROKEN = range(7)

Headers = List[Tuple[bytes, bytes]]


class ProtocolError(Exception):
    """The client broke the protocol: answer with `status`, then close the connection.

    `reason` says what was wrong, naming the offending line or value.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class Request:
    """One complete request.

    `method` and `target` are the raw bytes of the request line; `minor` is
    the HTTP/1 minor version (0 or 1; 1.2 and above count as 1). `keep_alive`
    is the connection's fate by the version and `Connection` rules; `body` is
    the whole body (chunked bodies de-chunked, trailers dropped).
    """

    __slots__ = ("_head", "_headers", "body", "expect_continue", "keep_alive", "method", "minor", "target")

    def __init__(self, method: bytes, target: bytes, minor: int, head: bytes) -> None:
        self.method = method
        self.target = target
        self.minor = minor
        self.keep_alive = minor == 1
        self.expect_continue = False
        self.body = b""
        self._head = head
        self._headers: Headers | None = None

    @property
    def headers(self) -> Headers:
        """`(lower-cased name, value)` pairs in arrival order.

        Cut from the head on first use: the hello-world routes never ask.
        """
        if self._headers is None:
            lines = self._head.split(b"\r\n")
            del lines[0]
            self._headers = [
                (name.lower(), value.strip(b" \t")) for name, _, value in (x.partition(b":") for x in lines)
            ]
        return self._headers

    def header(self, name: bytes) -> bytes | None:
        """The value of the first field called `name` (lower case), or `None`."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<Request {self.method.decode('latin-1')} {self.target.decode('latin-1')} HTTP/1.{self.minor}>"


def _excerpt(line: bytes | bytearray) -> str:
    """A short, printable form of a bad line for an error message."""
    return repr(bytes(line[:80])) + ("..." if len(line) > 80 else "")


def _request_line_error(line: bytes) -> ProtocolError:
    """Why `line`, which the fast pattern refused, is not a request line."""
    parts = line.split(b" ")
    if len(parts) == 3 and parts[0] and parts[1]:
        m = _ANY_VERSION(parts[2])
        if m is not None and m.group(1) != b"1":
            return ProtocolError(505, f"HTTP version {parts[2].decode('ascii')} is not supported; expected HTTP/1.x")
    return ProtocolError(400, f"malformed request line {_excerpt(line)}; expected 'METHOD target HTTP/1.x'")


def _head_error(head: bytes) -> ProtocolError:
    """Why `head`, which the fast pattern refused, is not a request head.

    A bare LF comes first, as it does while a head is still arriving
    (`_head_incomplete`): the verdict must not depend on how the head was cut.
    """
    bare = head.find(b"\n")
    while bare >= 0:
        if bare == 0 or head[bare - 1] != 13:
            return ProtocolError(400, f"bare LF at byte {bare} of the request head; lines must end in CRLF")
        bare = head.find(b"\n", bare + 1)
    lines = head.split(b"\r\n")
    if _REQUEST_LINE(lines[0]) is None:
        return _request_line_error(lines[0])
    for line in lines[1:]:
        if _FIELD(line) is None:
            return ProtocolError(400, f"malformed header line {_excerpt(line)}; expected 'Name: value'")
    return ProtocolError(400, "malformed request head")  # unreachable while the patterns agree


def parse_head(head: bytes, max_body: int) -> tuple[Request, int]:
    """Parse a head (without its final CRLF CRLF) into a `Request` and its framing.

    The framing is the body's length, or -1 for a chunked body.
    """
    m = _REQUEST_HEAD(head)
    if m is None:
        raise _head_error(head)
    method, target, version = m.groups()
    minor = 0 if version == b"0" else 1
    req = Request(method, target, minor, head)
    lowered = head.lower()
    hosts = lowered.count(b"\nhost:")
    if hosts != 1 and (hosts or minor == 1):
        raise ProtocolError(400, "more than one Host header" if hosts else "an HTTP/1.1 request needs a Host header")
    if _OTHER_FRAMING(lowered) is None:
        return req, 0
    length: bytes | None = None
    codings: list[bytes] | None = None
    expect = close = False
    for name, value in _FRAMING_FIELDS(lowered):
        value = value.rstrip(b" \t")
        if name == b"connection":
            tokens = [t.strip() for t in value.split(b",")]
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                req.keep_alive = True
        elif name == b"content-length":
            if _DIGITS(value) is None:
                if value.isdigit():
                    raise ProtocolError(413, f"Content-Length {value.decode('ascii')} is over the limit")
                raise ProtocolError(400, f"malformed Content-Length {_excerpt(value)}; expected digits")
            if length is not None and value != length:
                raise ProtocolError(400, "conflicting Content-Length values")
            length = value
        elif name == b"transfer-encoding":
            if codings is None:
                codings = []
            codings.extend(c.strip() for c in value.split(b","))
        elif value == b"100-continue":
            expect = True
    if close:
        req.keep_alive = False
    if codings is not None:
        if length is not None:
            raise ProtocolError(400, "both Transfer-Encoding and Content-Length; only one may frame the body")
        for coding in codings:
            if not coding:
                raise ProtocolError(400, "empty coding in Transfer-Encoding")
            if coding != b"chunked":
                raise ProtocolError(501, f"transfer coding {_excerpt(coding)} is not implemented; only chunked")
        if len(codings) != 1:
            raise ProtocolError(400, "Transfer-Encoding must be chunked, exactly once")
        if minor == 0:
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            req.keep_alive = False
        req.expect_continue = expect and minor == 1
        return req, -1
    size = int(length) if length is not None else 0
    if size > max_body:
        raise ProtocolError(413, f"Content-Length {size} is over the limit of {max_body} bytes")
    req.expect_continue = expect and minor == 1 and size > 0
    return req, size


class RequestParser:
    """Turns a connection's byte stream into `Request`s.

    Call `feed(data)` with each packet, then `next_request()` until it returns
    `None` (more bytes needed). A `ProtocolError` from `next_request` means
    the stream cannot be parsed further: answer it and close.
    """

    __slots__ = (
        "_body",
        "_buf",
        "_pos",
        "_received",
        "_remaining",
        "_request",
        "_searched",
        "_state",
        "continue_wanted",
        "max_body",
    )

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        #: Input not parsed yet starts at `_pos`: the packet itself when it
        #: held only whole requests, else a bytearray that grows.
        self._buf: Union[bytes, bytearray] = b""
        self._pos = 0
        #: `_buf` was searched, up to here, for what the state waits for.
        self._searched = 0
        self._state = _HEAD
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._remaining = 0  # bytes left in the body or the current chunk
        self._received = 0  # body bytes so far, for the limit on chunked bodies
        #: True once a head asked for `100 Continue` and its body is not in yet.
        self.continue_wanted = False

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed."""
        return len(self._buf) - self._pos

    @property
    def in_body(self) -> bool:
        """Whether a head was parsed and its body (or a chunk of it, or its trailers) is not all in yet."""
        return self._state != _HEAD and self._state != _BROKEN

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes that arrived on the connection."""
        if self._state == _BROKEN or not data:
            return
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = self._searched = 0
            return
        if isinstance(buf, bytearray):
            del buf[:pos]  # amortised O(1) at the front of a bytearray
        else:
            buf = self._buf = bytearray(memoryview(buf)[pos:])
        self._searched -= pos
        self._pos = 0
        buf += data

    def next_request(self) -> Request | None:
        """The next complete request, or `None` until more bytes arrive."""
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            if self._state == _BROKEN:
                raise ProtocolError(400, "the request stream was already broken")
            return None
        if self._state == _HEAD:
            start = self._searched - 3
            end = buf.find(b"\r\n\r\n", start if start > pos else pos)
            if end < 0:
                self._head_incomplete(buf, pos)
                return None
            if buf[pos] == 13 and buf.startswith(b"\r\n", pos):
                # RFC 9112 2.2: ignore empty lines before a request line. The
                # match may have been among them, so search again past them.
                while buf.startswith(b"\r\n", pos):
                    pos += 2
                self._pos = pos
                return self.next_request()
            if end - pos > MAX_HEAD:
                self._fail(431, f"request head of {end - pos} bytes is over the limit of {MAX_HEAD}")
            head = buf[pos:end]
            self._pos = self._searched = end + 4
            try:
                req, framing = parse_head(head if type(head) is bytes else bytes(head), self.max_body)
            except ProtocolError:
                self._break()
                raise
            if not framing:
                return req
            self._request = req
            self._body = []
            self._received = 0
            if framing > 0:
                self._remaining = framing
                self._state = _LENGTH
            else:
                self._state = _CHUNK_SIZE
            self.continue_wanted = req.expect_continue
        return self._next_body_part()

    def _head_incomplete(self, buf: bytes | bytearray, pos: int) -> None:
        """Check the partial head searched so far, and remember how far that was."""
        end = len(buf)
        if end - pos >= MAX_HEAD + 4:
            self._fail(431, f"request head over the limit of {MAX_HEAD} bytes")
        # A bare LF would leave the client waiting for an answer that cannot
        # come (its head never ends in CRLF CRLF): refuse it as it arrives.
        i = buf.find(b"\n", max(self._searched, pos))
        while i >= 0:
            if i == pos or buf[i - 1] != 13:
                self._fail(400, f"bare LF at byte {i - pos} of the request head; lines must end in CRLF")
            i = buf.find(b"\n", i + 1)
        self._searched = end

    def _next_body_part(self) -> Request | None:
        """Advance through the body; the request once its body is complete."""
        buf = self._buf
        while True:
            state = self._state
            pos = self._pos
            if state in (_LENGTH, _CHUNK_DATA):
                take = min(self._remaining, len(buf) - pos)
                if take:
                    self._body.append(bytes(buf[pos : pos + take]))
                    self._pos = pos + take
                    self._remaining -= take
                if self._remaining:
                    return None
                if state == _LENGTH:
                    return self._complete()
                self._state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                i = buf.find(b"\r\n", max(pos, self._searched - 1))
                if i < 0:
                    if len(buf) - pos > MAX_CHUNK_LINE:
                        self._fail(400, f"chunk-size line over {MAX_CHUNK_LINE} bytes")
                    self._searched = len(buf)
                    return None
                line = bytes(buf[pos:i])
                m = _CHUNK_LINE(line)
                if m is None:
                    self._fail(400, f"malformed chunk-size line {_excerpt(line)}; expected hex digits")
                size = int(m.group(1), 16)
                self._pos = self._searched = i + 2
                if size == 0:
                    self._state = _TRAILERS
                    continue
                self._received += size
                if self._received > self.max_body:
                    self._fail(413, f"chunked body over the limit of {self.max_body} bytes")
                self._remaining = size
                self._state = _CHUNK_DATA
            elif state == _CHUNK_END:
                if len(buf) - pos < 2:
                    return None
                if not buf.startswith(b"\r\n", pos):
                    self._fail(400, f"chunk data not followed by CRLF at {_excerpt(buf[pos : pos + 2])}")
                self._pos = self._searched = pos + 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if len(buf) - pos < 2:
                    return None
                if buf.startswith(b"\r\n", pos):
                    self._pos = self._searched = pos + 2
                    return self._complete()
                end = buf.find(b"\r\n\r\n", max(pos, self._searched - 3))
                if end < 0:
                    if len(buf) - pos >= MAX_HEAD + 4:
                        self._fail(431, f"trailer section over the limit of {MAX_HEAD} bytes")
                    self._searched = len(buf)
                    return None
                for line in bytes(buf[pos:end]).split(b"\r\n"):
                    if _FIELD(line) is None:
                        self._fail(400, f"malformed trailer line {_excerpt(line)}; expected 'Name: value'")
                self._pos = self._searched = end + 4
                return self._complete()
            else:
                raise AssertionError(f"parser state {state}")

    def _complete(self) -> Request:
        req = self._request
        assert req is not None
        body = self._body
        req.body = body[0] if len(body) == 1 else b"".join(body)
        self._request = None
        self._body = []
        self._state = _HEAD
        self.continue_wanted = False
        return req

    def _fail(self, status: int, reason: str) -> NoReturn:
        self._break()
        raise ProtocolError(status, reason)

    def _break(self) -> None:
        """Nothing more can be parsed: drop the input, now and to come."""
        self._state = _BROKEN
        self._buf = b""
        self._pos = 0
        self._request = None
        self._body = []
