"""An HTTP/1.1 server on evio: `/plaintext`, `/json`, `/echo`, and static files.

    python examples/http_server.py                          # serves examples/www/ on 127.0.0.1:8080
    python examples/http_server.py --root ./public --autoindex

The HTTP logic lives in the `minihttp` package next to this script, free of
I/O; this file is the command line and the evio glue:

- Bounded steps: while an `HTTPConnection` is `busy` (a stream, a listing
  being built, or answers held back by its output bound) reading pauses;
  `postwrite` reports how much output is still buffered, and when it runs
  low a wake runs the next step (a listing's steps run on wakes at once).
- Time-outs: one `Server.after` timer per connection. It does not move on
  every byte: the connection keeps the times, and when the timer fires it
  either times the connection out or moves itself to the new deadline.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import time
from types import FrameType
from typing import Sequence, Union

from minihttp import App, HTTPConnection, Timeouts, parse_time
from minihttp.parser import DEFAULT_MAX_BODY
from minihttp.responses import seconds_to_next_second
from minihttp.timeouts import Wait

import evio

DataResult = Union[bytes, "tuple[bytes, evio.Action]"]

#: What is served without `--root`: a folder shipped beside this script, never the current one.
DEFAULT_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "www")

_monotonic = time.monotonic


class HTTPServer(evio.Events):
    """Each connection's `context` is its `HTTPConnection`; its `timer` and `flushing` slots are the glue's."""

    def __init__(self, app: App, max_connections: int | None = None) -> None:
        self.app = app
        self.max_connections = max_connections
        #: The timer looks again at least this often: no wait that starts later can end sooner.
        self._recheck = app.timeouts.shortest

    def serving(self, server: evio.Server) -> None:
        names = [f"unix:{a}" if isinstance(a, str) else _host_port(a) for a in server.addrs]
        print("http server listening on " + ", ".join(names), flush=True)

    def opened(self, conn: evio.Conn) -> None:
        http = HTTPConnection(self.app, _monotonic())
        conn.context = http
        # Not at the header time-out: a shorter one may start before it ends.
        http.timer = conn.server.after(self._recheck, functools.partial(self._check, conn))

    def data(self, conn: evio.Conn, data: bytes | memoryview | None) -> DataResult:
        http: HTTPConnection = conn.context
        if data is None:
            out = http.resume(_monotonic())
            if not http.busy:
                conn.resume_reading()
        else:
            out = http.receive(data, _monotonic())  # type: ignore[arg-type]
        if http.closing:
            return out, evio.Action.CLOSE
        if http.busy:
            conn.pause_reading()  # later requests wait in the kernel, and TCP holds the client back
            if http.working:
                conn.wake()
        return out

    def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> None:
        http: HTTPConnection = conn.context
        if remaining or http.flushing:
            # Output waits for the client: what it takes starts the send time-out again. (A reply
            # sent whole, at once, needs no stamp: `data` stamped the connection a moment ago.)
            http.flushing = remaining > 0
            if amount:
                http.active = _monotonic()
        if http.busy and http.wants_more(remaining):
            conn.wake()

    def closed(self, conn: evio.Conn, err: BaseException | None) -> None:
        http: HTTPConnection = conn.context
        if http.timer is not None:
            http.timer.cancel()
        http.close()

    def tick(self) -> float:
        self.app.refresh()
        return seconds_to_next_second()

    def _check(self, conn: evio.Conn) -> None:
        """The connection's timer: time it out, or look again at its next deadline."""
        if conn.is_closing():
            return  # closing already: evio's own closing time-out looks after it
        http: HTTPConnection = conn.context
        now = _monotonic()
        deadline, wait = http.deadline(conn.pending)
        if now < deadline:
            delay = min(deadline, now + self._recheck) - now
            http.timer = conn.server.after(delay, functools.partial(self._check, conn))
            return
        if wait is Wait.SEND:
            conn.abort()  # it takes nothing: what is pending for it goes too, as nginx drops it
            return
        out = http.time_out(wait)
        if out:
            conn.write(out)
        conn.close()


def _host_port(addr: tuple[object, ...]) -> str:
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def _size(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a byte count of 0 or more, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    p.add_argument(
        "--root",
        type=_folder,
        default=DEFAULT_ROOT,
        help="folder of the static files (default: examples/www/, shipped beside this script)",
    )
    p.add_argument("--autoindex", action="store_true", help="list folders that have no index.html (default: 403)")
    p.add_argument(
        "--dotfiles",
        choices=("allow", "deny"),
        default="deny",
        help="serve names starting with a dot, such as .git or .env (default deny: 403)",
    )
    p.add_argument("--unixsocket", metavar="PATH", help="also listen on this unix socket")
    p.add_argument("--stdlib", action="store_true", help="use the portable selectors backend instead of epoll")
    p.add_argument(
        "--max-body", type=_size, default=DEFAULT_MAX_BODY, help="largest request body in bytes (default 16 MiB)"
    )
    p.add_argument(
        "--max-connections",
        type=_count,
        default=10000,
        help="stop accepting while this many clients are connected (default 10000)",
    )
    defaults = Timeouts()
    for name, nginx, what in (
        ("header", "client_header_timeout", "a whole request head, from its first byte"),
        ("body", "client_body_timeout", "between two reads of a request body"),
        ("keepalive", "keepalive_timeout", "an idle connection between requests"),
        ("send", "send_timeout", "a client that takes nothing of a pending response"),
    ):
        p.add_argument(
            f"--timeout-{name}",
            type=_time,
            default=getattr(defaults, name),
            metavar="TIME",
            help=f"{what} (nginx's {nginx}; default {getattr(defaults, name):g}s; 500ms, 30s, 2m also work)",
        )
    args = p.parse_args(argv)
    timeouts = Timeouts(args.timeout_header, args.timeout_body, args.timeout_keepalive, args.timeout_send)
    app = App(args.root, args.max_body, timeouts=timeouts, autoindex=args.autoindex, dotfiles=args.dotfiles == "allow")

    net = "-net" if args.stdlib else ""
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    addrs = [f"tcp{net}://{host}:{args.port}"]
    if args.unixsocket:
        addrs.append(f"unix{net}://{args.unixsocket}")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        evio.serve(HTTPServer(app, args.max_connections), *addrs)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as err:
        print(f"http_server: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
