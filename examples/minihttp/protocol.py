"""`HTTPConnection`: one client connection's HTTP/1.1 state, without I/O.

Bytes go in (`receive`), response bytes come out, and `closing` says when
the transport must close once those bytes are sent. Pipelined requests are
answered in order, all the answers of one call joined in one `bytes` so the
transport sends them with one call.

Work is done in bounded steps, so a few bytes of requests cannot make the
server build megabytes of responses, nor stall everyone else:

- One call answers requests until its output passes `OUTPUT_BOUND`; the
  rest of the input waits, unparsed.
- A large file is streamed, a piece per step.
- A folder listing is built a slice of entries per step.

While one of these is under way `busy` is set and later requests wait; the
transport should stop reading meanwhile (TCP then holds the client back).
It calls `resume` for the next step: when its pending output runs low
(`wants_more`) or, while `working` (a listing, which has no output to wait
for), at once. Memory per connection stays about `OUTPUT_BOUND` plus a
piece, whatever the client asks for and however slowly it reads.

Time-outs: the connection keeps the times it needs (`active`, when the
wait for a head began), given by the transport's clock as `now`.
`deadline(pending)` says what it waits for and until when; when that passes,
`time_out` gives what to send (a 408 when a request was under way) before
the transport closes the connection.
"""

from __future__ import annotations

import math
from typing import Any

from .app import App
from .parser import MAX_HEAD, ProtocolError, RequestParser
from .static import CHUNK, FileStream, Job
from .timeouts import Wait

#: One step answers requests until its output passes this many bytes; the rest waits.
OUTPUT_BOUND = 1 << 20
#: Ask for the next step when the transport holds less than this.
LOW_WATER = CHUNK

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HTTPConnection:
    """The server side of one HTTP/1.1 connection.

    `now` (here and in `receive` and `resume`) is the transport's clock in
    seconds, as `time.monotonic()` gives it.
    """

    __slots__ = (
        "_close_after",
        "_head_at",
        "_job",
        "_parser",
        "_refill_asked",
        "_stream",
        "active",
        "app",
        "busy",
        "closing",
        "flushing",
        "timer",
        "working",
    )

    def __init__(self, app: App, now: float = 0.0) -> None:
        self.app = app
        self._parser = RequestParser(app.max_body)
        #: Set once the transport must close after sending what it was given.
        self.closing = False
        #: Answers wait behind a stream, a listing, or output over the bound: see the module's notes.
        self.busy = False
        #: A listing is being built: call `resume` again at once, there is no output to wait for.
        self.working = False
        #: When the client last sent bytes, took some output, or a step ran.
        self.active = now
        #: When the wait for the current request head began; `None` between requests.
        self._head_at: float | None = now
        self._stream: FileStream | None = None
        self._job: Job | None = None
        self._close_after = False
        self._refill_asked = False
        #: Free slots for the transport (the evio glue keeps its time-out timer there, and
        #: whether output is waiting for the client).
        self.timer: Any = None
        self.flushing = False

    @property
    def streaming(self) -> bool:
        """Whether a response body is being streamed."""
        return self._stream is not None

    def receive(self, data: bytes, now: float = 0.0) -> bytes:
        """Feed bytes from the client; return what to send, in request order."""
        self.active = now
        parser = self._parser
        parser.feed(data)
        if self.busy:
            # Requests wait their turn. A transport that kept reading meanwhile
            # (it should not) gets cut off past one request's worth.
            if parser.buffered > MAX_HEAD + self.app.max_body:
                self.close()
            return b""
        if self.closing:
            return b""
        return self._answer(0)

    def wants_more(self, buffered: int) -> bool:
        """Told that the transport holds `buffered` unsent bytes: should it call
        `resume` for the next step? True once per step.
        """
        if not self.busy or self.working or self._refill_asked or buffered >= LOW_WATER:
            return False
        self._refill_asked = True
        return True

    def resume(self, now: float = 0.0) -> bytes:
        """The next step: a piece of the stream, a slice of the listing, or more
        answers; once the step ends what held answers back, the answers that waited.
        """
        self._refill_asked = False
        self.active = now
        if self.closing or not self.busy:
            return b""
        if self._job is not None:
            return self._step_job(self._job)
        if self._stream is not None:
            return self._next_piece(self._stream)
        self.busy = False  # answers were held back by the bound: go on
        return self._answer(0)

    def close(self) -> None:
        """Release the stream's file or the listing; the connection is to close (or has closed)."""
        self.closing = True
        self.busy = self.working = False
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._job is not None:
            self._job.close()
            self._job = None

    def deadline(self, pending: int) -> tuple[float, Wait]:
        """What the connection waits for, and until when (`math.inf`: no limit).

        `pending` is how many bytes the transport still holds for the client.
        """
        timeouts = self.app.timeouts
        if self.closing:
            return math.inf, Wait.NOTHING
        if pending or (self.busy and not self.working):
            return self.active + timeouts.send, Wait.SEND
        if self.working:
            return math.inf, Wait.NOTHING
        if self._parser.in_body:
            return self.active + timeouts.body, Wait.BODY
        if self._head_at is not None:
            return self._head_at + timeouts.header, Wait.HEADER
        return self.active + timeouts.keepalive, Wait.KEEPALIVE

    def time_out(self, wait: Wait) -> bytes:
        """The wait `deadline` gave timed out: what to send before the transport closes.

        A 408 when part of a request arrived; nothing for a connection that
        sent nothing, an idle kept-alive one, or one that does not read.
        """
        started = wait is Wait.BODY or (wait is Wait.HEADER and self._parser.buffered > 0)
        self.close()
        if not started:
            return b""
        limit = self.app.timeouts.of(wait)
        if wait is Wait.BODY:
            reason = f"no more of the request body arrived within {limit:g} s"
        else:
            reason = f"the request head did not arrive in full within {limit:g} s"
        return self.app.error(ProtocolError(408, reason))

    def _next_piece(self, stream: FileStream) -> bytes:
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
        return self._finish(piece)

    def _step_job(self, job: Job) -> bytes:
        response = next(job, None)
        if response is None:
            return b""
        job.close()
        self._job = None
        self.working = False
        return self._finish(response)

    def _finish(self, last: bytes) -> bytes:
        """What held answers back has sent its `last` bytes: then the answers that waited."""
        self.busy = False
        if self._close_after:
            self.closing = True
            return last
        rest = self._answer(len(last))
        return last + rest if rest else last

    def _answer(self, size: int) -> bytes:
        """Answer the complete requests buffered, until a stream, a listing, a
        close, or `size` (bytes already out in this step) passing the bound.
        """
        parser = self._parser
        app = self.app
        out: list[bytes] = []
        try:
            while True:
                if size >= OUTPUT_BOUND:
                    self.busy = True  # the rest waits for the transport to send this
                    break
                req = parser.next_request()
                if req is None:
                    if parser.continue_wanted:
                        parser.continue_wanted = False
                        out.append(_CONTINUE)
                    break
                self._head_at = None
                r = app.respond(req)
                if not isinstance(r, bytes):
                    self.busy = True
                    self._close_after = not req.keep_alive
                    if isinstance(r, tuple):
                        first, self._stream = r
                        out.append(first)
                        break
                    step = next(r, None)  # a job's first step at once: a small folder needs no other
                    if step is None:
                        self._job = r
                        self.working = True
                        break
                    r.close()
                    self.busy = False
                    r = step
                out.append(r)
                size += len(r)
                if not req.keep_alive:
                    self.closing = True
                    break
        except ProtocolError as err:
            out.append(app.error(err))
            self.closing = True
        # Part of the next head is in: its time-out starts. (`parser.buffered` without the
        # property's call, as this runs once per packet.)
        if self._head_at is None and len(parser._buf) != parser._pos and not self.busy and not parser.in_body:
            self._head_at = self.active
        if len(out) == 1:
            return out[0]
        return b"".join(out)
