"""minihttp: the HTTP/1.1 server behind `examples/http_server.py`, free of I/O.

- `parser`: `RequestParser`, incremental, bytes in and `Request`s out.
- `protocol`: `HTTPConnection`, one connection's state: requests in, response
  bytes and keep/close decisions out, work done in bounded steps, and which
  time-out applies.
- `app`: `App`, the routes (`/plaintext`, `/json`, `/echo`, then static files).
- `static`: `StaticFiles`, files under a root folder.
- `timeouts`: `Timeouts`, nginx's four time-outs.
- `responses`: status lines, the `Date` cache, response bytes.

Any event loop can drive an `HTTPConnection`; the evio glue is in the script.
"""

from .app import App
from .parser import MAX_HEAD, ProtocolError, Request, RequestParser
from .protocol import LOW_WATER, OUTPUT_BOUND, HTTPConnection
from .static import CHUNK, FileStream, StaticFiles
from .timeouts import Timeouts, Wait, parse_time

__all__ = [
    "CHUNK",
    "LOW_WATER",
    "MAX_HEAD",
    "OUTPUT_BOUND",
    "App",
    "FileStream",
    "HTTPConnection",
    "ProtocolError",
    "Request",
    "RequestParser",
    "StaticFiles",
    "Timeouts",
    "Wait",
    "parse_time",
]
