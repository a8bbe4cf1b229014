"""The hello-world routes as a bare ASGI app, for uvicorn in the HTTP benchmark.

    python -m uvicorn --app-dir bench uvicorn_app:app --loop uvloop --http httptools --no-access-log

No framework on top, so the figure is uvicorn's (httptools' parser, uvloop's loop) and not a
framework's. uvicorn adds the Server and Date headers itself, as the evio example does.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ROUTES = {
    "/plaintext": (b"text/plain", b"Hello, World!"),
    "/json": (b"application/json", b'{"message":"Hello, World!"}'),
}
_NOT_FOUND = (b"text/plain", b"404 Not Found\n")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    status = 200
    ctype, body = _ROUTES.get(scope["path"], _NOT_FOUND)
    if body is _NOT_FOUND[1]:
        status = 404
    headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
