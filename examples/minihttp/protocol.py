"""`HTTPConnection`: one client connection's HTTP/1.1 state, without I/O.

Bytes go in (`receive`), response bytes come out, and `closing` says when
the transport must close once those bytes are sent. Pipelined requests are
answered in order, all the answers to one packet joined in one `bytes` so
the transport sends them with one call.

A large file is streamed: `receive` returns the head and the first piece,
and later requests wait behind it. The transport reports how much output it
still holds (`wants_more`); when that runs low it calls `resume` for the
next piece. So a connection holds about two pieces of a file in memory
however large the file and however slow the client.
"""

from __future__ import annotations

from .app import App
from .parser import MAX_HEAD, ProtocolError, RequestParser
from .static import CHUNK, FileStream

#: Ask for the next piece of a stream when the transport holds less than this.
LOW_WATER = CHUNK

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HTTPConnection:
    """The server side of one HTTP/1.1 connection."""

    __slots__ = ("_close_after_stream", "_parser", "_refill_asked", "_stream", "app", "closing", "streaming")

    def __init__(self, app: App) -> None:
        self.app = app
        self._parser = RequestParser(app.max_body)
        #: Set once the transport must close after sending what it was given.
        self.closing = False
        #: Whether a response body is still being streamed: a plain attribute,
        #: since the transport checks it after every write.
        self.streaming = False
        self._stream: FileStream | None = None
        self._close_after_stream = False
        self._refill_asked = False

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the client; return what to send, in request order."""
        parser = self._parser
        parser.feed(data)
        if self.streaming:
            # Requests wait behind the stream; a client piling up more than
            # one request's worth meanwhile is not reading what it asked for.
            if parser.buffered > MAX_HEAD + self.app.max_body:
                self.close()
            return b""
        if self.closing:
            return b""
        return self._answer()

    def wants_more(self, buffered: int) -> bool:
        """Told that the transport holds `buffered` unsent bytes: should it call
        `resume` for the next piece of the stream? True once per piece.
        """
        if not self.streaming or self._refill_asked or buffered >= LOW_WATER:
            return False
        self._refill_asked = True
        return True

    def resume(self) -> bytes:
        """The next piece of the stream, then the answers to requests that waited behind it."""
        self._refill_asked = False
        stream = self._stream
        if stream is None or self.closing:
            return b""
        try:
            piece = stream.read()
        except OSError:
            piece = b""
        if not piece:
            # The file shrank or failed: the promised length cannot be met,
            # so only a close tells the client the body is incomplete.
            self.close()
            return b""
        if stream.remaining:
            return piece
        stream.close()
        self._stream = None
        self.streaming = False
        if self._close_after_stream:
            self.closing = True
            return piece
        rest = self._answer()
        return piece + rest if rest else piece

    def close(self) -> None:
        """Release the stream's file; the connection is to close (or has closed)."""
        self.closing = True
        if self._stream is not None:
            self._stream.close()
            self._stream = None
            self.streaming = False

    def _answer(self) -> bytes:
        """Answer every complete request buffered, until a stream or a close."""
        parser = self._parser
        app = self.app
        out: list[bytes] = []
        try:
            while True:
                req = parser.next_request()
                if req is None:
                    if parser.continue_wanted:
                        parser.continue_wanted = False
                        out.append(_CONTINUE)
                    break
                r = app.respond(req)
                if isinstance(r, bytes):
                    out.append(r)
                    if not req.keep_alive:
                        self.closing = True
                        break
                else:
                    first, self._stream = r
                    self.streaming = True
                    self._close_after_stream = not req.keep_alive
                    out.append(first)
                    break
        except ProtocolError as err:
            out.append(app.error(err))
            self.closing = True
        if len(out) == 1:
            return out[0]
        return b"".join(out)
