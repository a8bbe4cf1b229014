"""A Redis clone on evio: strings with expiry, pipelining, AOF persistence.

    python examples/redis_server.py                  # 127.0.0.1:6380, no persistence
    python examples/redis_server.py --appendonly yes # log writes to appendonly.aof, replay at start
    redis-cli -p 6380 set greeting hello

The protocol lives in the `redisclone` package beside this file (sans I/O);
this script is the command line and the evio glue. It prints one line,
`redis clone listening on ADDR[, ADDR]`, once it accepts connections.
SHUTDOWN, SIGTERM and Ctrl-C stop it cleanly (exit status 0), the AOF
written and fsync'ed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any, List, Union

from redisclone import CLOSE, AOFError, AppendOnlyFile, Database, RedisProtocol, make_reader

import evio

#: Seconds between ticks: the expiry sweep, the AOF fsync check, the signal check.
TICK = 0.1


class RedisServer(evio.Events):
    """The evio glue: one `RedisProtocol` per connection, the `Database` ticked."""

    def __init__(self, db: Database, pure_parser: bool = False) -> None:
        self.db = db
        self.pure_parser = pure_parser
        self.stop_requested = False

    def serving(self, server: evio.Server) -> evio.Action | None:
        print("redis clone listening on " + ", ".join(_show(a) for a in server.addrs), flush=True)
        return None

    def opened(self, conn: evio.Conn) -> evio.events.OpenedResult:
        conn.context = RedisProtocol(self.db, make_reader(pure=self.pure_parser))
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        conn.context.connection_lost()
        return None

    def data(self, conn: evio.Conn, data: Union[bytes, memoryview, None]) -> evio.events.DataResult:
        if data is None:
            return None
        proto: RedisProtocol = conn.context
        out = proto.feed(data)
        if proto.verdict:
            return out, (evio.Action.CLOSE if proto.verdict == CLOSE else evio.Action.SHUTDOWN)
        return out

    def tick(self) -> evio.events.TickResult:
        self.db.tick()
        if self.stop_requested:
            return 0.0, evio.Action.SHUTDOWN
        return TICK


def _show(addr: Any) -> str:
    if isinstance(addr, str):
        return addr
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tcp(host: str, port: int, net: str) -> str:
    return f"tcp{net}://[{host}]:{port}" if ":" in host else f"tcp{net}://{host}:{port}"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=6380, help="TCP port (default 6380; 0 lets the kernel choose)")
    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        help="addresses to listen on, space-separated (default 127.0.0.1, loopback only; "
        "'0.0.0.0' or '::' opens it to the network: there is no authentication)",
    )
    parser.add_argument("--unixsocket", metavar="PATH", help="also listen on this unix socket")
    parser.add_argument("--appendonly", choices=("yes", "no"), default="no", help="log writes to the AOF (default no)")
    parser.add_argument("--appendfilename", default="appendonly.aof", help="the AOF's path (default appendonly.aof)")
    parser.add_argument("--stdlib", action="store_true", help="use evio's portable selectors backend")
    parser.add_argument("--pure-parser", action="store_true", help="parse with pure Python even where hiredis is")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="redis clone: %(message)s", stream=sys.stderr)

    net = "-net" if args.stdlib else ""
    addrs = [_tcp(host, args.port, net) for host in args.bind.split()]
    if args.unixsocket:
        addrs.append(f"unix{net}://{args.unixsocket}")
    aof = AppendOnlyFile(args.appendfilename) if args.appendonly == "yes" else None
    db = Database(aof, {"port": str(args.port), "bind": args.bind})
    try:
        loaded = db.load()
    except (AOFError, ValueError, OSError) as err:
        print(f"redis clone: {err}", file=sys.stderr)
        return 1
    if aof is not None:
        db.config["dir"] = os.path.dirname(os.path.abspath(aof.path))
        print(f"redis clone: {loaded} commands loaded from {aof.path}", file=sys.stderr, flush=True)
    events = RedisServer(db, pure_parser=args.pure_parser)

    def stop(signum: int, frame: object) -> None:
        events.stop_requested = True  # the next tick shuts down: no command is cut in half

    signal.signal(signal.SIGTERM, stop)
    try:
        evio.serve(events, *addrs)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as err:
        print(f"redis clone: {err}", file=sys.stderr)
        return 1
    finally:
        if aof is not None:
            aof.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
