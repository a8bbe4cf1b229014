"""Response bytes: status lines, the cached `Date`, and the common header block."""

from __future__ import annotations

import http
import time
from email.utils import formatdate

from .parser import ProtocolError, Request

SERVER = b"evio"

_REASONS = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}


def http_date(timestamp: float | None = None) -> bytes:
    """`timestamp` (default: now) as an HTTP date, `Sun, 06 Nov 1994 08:49:37 GMT`."""
    return formatdate(timestamp, usegmt=True).encode("ascii")


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


def connection_field(req: Request) -> bytes:
    """The `Connection` field that tells `req`'s client what happens next.

    HTTP/1.1 keeps the connection by default; an HTTP/1.0 client is told
    when it is kept, since it would otherwise expect a close.
    """
    if not req.keep_alive:
        return b"Connection: close\r\n"
    return b"" if req.minor else b"Connection: keep-alive\r\n"


def build(
    status: int, date: bytes, fields: bytes, body: bytes, connection: bytes, *, length: int | None = None
) -> bytes:
    """A whole response: status line, `Server`, `Date`, `fields` (CRLF-terminated
    lines), `Content-Length` (of `body`, or `length` when given), `connection`,
    and `body`. A HEAD response passes `length` and an empty `body`.
    """
    return b"%sServer: %s\r\nDate: %s\r\n%sContent-Length: %d\r\n%s\r\n%s" % (
        status_line(status),
        SERVER,
        date,
        fields,
        len(body) if length is None else length,
        connection,
        body,
    )


def error(err: ProtocolError, date: bytes) -> bytes:
    """The answer to a request that broke the protocol; the connection closes after it."""
    body = b"%d %s: %s\n" % (err.status, _REASONS.get(err.status, b"Error"), err.reason.encode("utf-8", "replace"))
    return build(err.status, date, b"Content-Type: text/plain; charset=utf-8\r\n", body, b"Connection: close\r\n")


def seconds_to_next_second() -> float:
    """How long until the wall clock's next whole second, when `Date` changes."""
    return 1.0 - time.time() % 1.0
