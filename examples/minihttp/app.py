"""The routes: `/plaintext` and `/json` (TechEmpower's hello-world tests),
`/echo` (returns a POSTed body), and static files for every other path.

The hello-world responses are prebuilt bytes, rebuilt once a second with a
new `Date` by `refresh`, so answering one is a dictionary look-up.
"""

from __future__ import annotations

import time

from .parser import DEFAULT_MAX_BODY, ProtocolError, Request
from .responses import build, connection_field, error, http_date
from .static import Response, StaticFiles
from .timeouts import Timeouts

PLAINTEXT = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'

_FIXED = {
    b"/plaintext": (b"Content-Type: text/plain\r\n", PLAINTEXT),
    b"/json": (b"Content-Type: application/json\r\n", JSON),
}
_TEXT = b"Content-Type: text/plain; charset=utf-8\r\n"


class App:
    """What the server answers, and the limits it holds clients to.

    `respond(request)` gives the response bytes, or the first bytes and a
    `FileStream` for a large file, or a job that builds a folder listing in
    steps. `autoindex` and `dotfiles` go to `StaticFiles`; `timeouts` are
    for `HTTPConnection`.
    """

    def __init__(
        self,
        root: str,
        max_body: int = DEFAULT_MAX_BODY,
        *,
        timeouts: Timeouts | None = None,
        autoindex: bool = False,
        dotfiles: bool = False,
    ) -> None:
        self.static = StaticFiles(root, autoindex=autoindex, dotfiles=dotfiles)
        self.max_body = max_body
        self.timeouts = Timeouts() if timeouts is None else timeouts
        self.date = b""
        #: GET on a fixed route, HTTP/1.1, kept alive: the whole response, by target.
        self._fast: dict[bytes, bytes] = {}
        self.refresh()

    def refresh(self, now: float | None = None) -> None:
        """Rebuild the cached `Date` and the prebuilt responses for `now` (default: now)."""
        date = http_date(time.time() if now is None else now)
        if date == self.date:
            return
        self.date = date
        self._fast = {t: build(200, date, f, body, b"") for t, (f, body) in _FIXED.items()}

    def respond(self, req: Request) -> Response:
        if req.method == b"GET" and req.keep_alive and req.minor:
            fast = self._fast.get(req.target)
            if fast is not None:
                return fast
        fixed = _FIXED.get(req.target)
        if fixed is not None:
            fields, body = fixed
            if req.method == b"GET":
                return build(200, self.date, fields, body, connection_field(req))
            if req.method == b"HEAD":
                return build(200, self.date, fields, b"", connection_field(req), length=len(body))
            return self._not_allowed(req, b"GET, HEAD")
        if req.target == b"/echo":
            if req.method != b"POST":
                return self._not_allowed(req, b"POST")
            return build(200, self.date, b"Content-Type: application/octet-stream\r\n", req.body, connection_field(req))
        return self.static.respond(req, self.date)

    def error(self, err: ProtocolError) -> bytes:
        """The answer to a request that broke the protocol, before the connection closes."""
        return error(err, self.date)

    def _not_allowed(self, req: Request, allow: bytes) -> bytes:
        fields = b"Allow: %s\r\n%s" % (allow, _TEXT)
        body = b"405 Method Not Allowed\n"
        if req.method == b"HEAD":
            return build(405, self.date, fields, b"", connection_field(req), length=len(body))
        return build(405, self.date, fields, body, connection_field(req))
