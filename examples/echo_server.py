"""The seed's echo server on evio.

Every packet comes back as it was sent. A line `quit` closes your connection;
`shutdown` stops the server (the process exits 0).

    python examples/echo_server.py --port 9999
    telnet localhost 9999
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Union

import evio

WELCOME = b"Welcome to the echo server!\nEnter 'quit' to close your connection or 'shutdown' to close the server.\n"

log = logging.getLogger("echo")


class EchoServer(evio.Events):
    """Echo with a welcome line, `quit` and `shutdown`."""

    def __init__(self, trace: bool = False) -> None:
        self.trace = trace

    def serving(self, server: evio.Server) -> evio.Action | None:
        for addr in server.addrs:
            where = f"port {addr[1]}" if isinstance(addr, tuple) else f"unix socket {addr}"
            print(f"echo server started on {where}", flush=True)
        return None

    def opened(self, conn: evio.Conn) -> evio.events.OpenedResult:
        if self.trace:
            log.info("conn %d opened from %r", conn.id, conn.remote_addr)
        return WELCOME

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        if self.trace:
            log.info("conn %d closed%s", conn.id, f": {err}" if err else "")
        return None

    def data(self, conn: evio.Conn, data: Union[bytes, memoryview, None]) -> evio.events.DataResult:
        if data is None:
            return None
        if self.trace:
            log.info("conn %d: %d bytes %r", conn.id, len(data), bytes(data[:64]))
        line = (data if isinstance(data, bytes) else bytes(data)).strip()
        if line == b"quit":
            return b"bye\n", evio.Action.CLOSE
        if line == b"shutdown":
            return b"shutting down\n", evio.Action.SHUTDOWN
        return data


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9999, help="TCP port, on every interface (default 9999)")
    parser.add_argument("--unix", metavar="PATH", help="also listen on this unix socket")
    parser.add_argument("--reuseport", action="store_true", help="set SO_REUSEPORT on the TCP listener")
    parser.add_argument("--stdlib", action="store_true", help="use the portable selectors backend")
    parser.add_argument("--trace", action="store_true", help="log every connection and packet to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.trace else logging.WARNING, format="%(message)s")

    net = "-net" if args.stdlib else ""
    addrs = [f"tcp{net}://:{args.port}" + ("?reuseport=true" if args.reuseport else "")]
    if args.unix:
        addrs.append(f"unix{net}://{args.unix}")
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up as Ctrl-C does
    try:
        evio.serve(EchoServer(trace=args.trace), *addrs)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as err:
        print(f"echo server: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
