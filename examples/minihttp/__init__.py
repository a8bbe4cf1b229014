"""minihttp: the HTTP/1.1 server behind `examples/http_server.py`, free of I/O.

- `parser`: `RequestParser`, incremental, bytes in and `Request`s out.
- `protocol`: `HTTPConnection`, one connection's state: requests in, response
  bytes and keep/close decisions out, large files streamed piece by piece.
- `app`: `App`, the routes (`/plaintext`, `/json`, `/echo`, then static files).
- `static`: `StaticFiles`, files under a root folder.
- `responses`: status lines, the `Date` cache, response bytes.

Any event loop can drive an `HTTPConnection`; the evio glue is in the script.
"""

from .app import App
from .parser import MAX_HEAD, ProtocolError, Request, RequestParser
from .protocol import HTTPConnection
from .static import CHUNK, FileStream, StaticFiles

__all__ = [
    "CHUNK",
    "MAX_HEAD",
    "App",
    "FileStream",
    "HTTPConnection",
    "ProtocolError",
    "Request",
    "RequestParser",
    "StaticFiles",
]
