"""An HTTP/1.1 server on evio: `/plaintext`, `/json`, `/echo`, and static files.

    python examples/http_server.py --port 8080 --root ./public

The HTTP logic lives in the `minihttp` package next to this script, free of
I/O; this file is the command line and the evio glue. Large files are
streamed: `postwrite` reports how much output is still buffered, and when it
runs low a wake fetches the next piece, so memory stays flat.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import Sequence, Union

from minihttp import App, HTTPConnection
from minihttp.parser import DEFAULT_MAX_BODY
from minihttp.responses import seconds_to_next_second

import evio

DataResult = Union[bytes, "tuple[bytes, evio.Action]"]


class HTTPServer(evio.Events):
    """Each connection's `context` is its `HTTPConnection`."""

    def __init__(self, app: App) -> None:
        self.app = app

    def serving(self, server: evio.Server) -> None:
        names = [f"unix:{a}" if isinstance(a, str) else _host_port(a) for a in server.addrs]
        print("http server listening on " + ", ".join(names), flush=True)

    def opened(self, conn: evio.Conn) -> None:
        conn.context = HTTPConnection(self.app)

    def data(self, conn: evio.Conn, data: bytes | memoryview | None) -> DataResult:
        http: HTTPConnection = conn.context
        out = http.resume() if data is None else http.receive(data)  # type: ignore[arg-type]
        if http.closing:
            return out, evio.Action.CLOSE
        return out

    def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> None:
        http: HTTPConnection = conn.context
        if http.streaming and http.wants_more(remaining):
            conn.wake()

    def closed(self, conn: evio.Conn, err: BaseException | None) -> None:
        conn.context.close()

    def tick(self) -> float:
        self.app.refresh()
        return seconds_to_next_second()


def _host_port(addr: tuple[object, ...]) -> str:
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def _size(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a byte count of 0 or more, not {text}")
    return value


def _folder(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return text


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="An HTTP/1.1 server on evio: hello-world routes and static files.")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port; default 8080)")
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        help="TCP address to listen on: 127.0.0.1 (default) serves this machine only, 0.0.0.0 or :: every interface",
    )
    p.add_argument("--root", type=_folder, default=".", help="folder of the static files (default: the current one)")
    p.add_argument("--unixsocket", metavar="PATH", help="also listen on this unix socket")
    p.add_argument("--stdlib", action="store_true", help="use the portable selectors backend instead of epoll")
    p.add_argument(
        "--max-body", type=_size, default=DEFAULT_MAX_BODY, help="largest request body in bytes (default 16 MiB)"
    )
    args = p.parse_args(argv)

    net = "-net" if args.stdlib else ""
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    addrs = [f"tcp{net}://{host}:{args.port}"]
    if args.unixsocket:
        addrs.append(f"unix{net}://{args.unixsocket}")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        evio.serve(HTTPServer(App(args.root, args.max_body)), *addrs)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as err:
        print(f"http_server: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
