"""The Redis clone's protocol object served by asyncio, or by uvloop with --uvloop.

A benchmark peer of `examples/redis_server.py`: the same `RedisProtocol`,
`Database` and parser, only the event loop differs, so a comparison measures
loops, not protocol code. No AOF. It prints `redis clone listening on
HOST:PORT` once it accepts connections; SHUTDOWN, SIGTERM and Ctrl-C stop it
(exit status 0).

    python bench/redis_asyncio_server.py --port 6381 [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Coroutine, List, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from redisclone import SHUTDOWN, Database, RedisProtocol, make_reader

TICK = 0.1


class RedisConnection(asyncio.Protocol):
    """One client: bytes to `RedisProtocol.feed`, its replies to the transport."""

    def __init__(self, db: Database, stop: asyncio.Event) -> None:
        self.db = db
        self.stop = stop
        self.proto: RedisProtocol | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.proto = RedisProtocol(self.db, make_reader())

    def data_received(self, data: bytes) -> None:
        proto, transport = self.proto, self.transport
        assert proto is not None and transport is not None
        out = proto.feed(data)
        if out:
            transport.write(out)
        if proto.verdict:
            if proto.verdict == SHUTDOWN:
                self.stop.set()
            transport.close()  # after what was written

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.proto is not None:
            self.proto.connection_lost()


async def serve(host: str, port: int) -> None:
    """Serve until SHUTDOWN, SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    db = Database(config={"port": str(port), "bind": host})
    stop = asyncio.Event()
    server = await loop.create_server(lambda: RedisConnection(db, stop), host, port, backlog=4096)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    addrs = [sock.getsockname() for sock in server.sockets]
    print("redis clone listening on " + ", ".join(f"{a[0]}:{a[1]}" for a in addrs), flush=True)

    async def tick() -> None:
        while True:
            db.tick()
            await asyncio.sleep(TICK)

    ticker = loop.create_task(tick())
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        server.close()


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=6381, help="TCP port (default 6381; 0 lets the kernel choose)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's own loop")
    args = parser.parse_args(argv)
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if args.uvloop:
        # Imported by name: uvloop is a benchmark extra, absent where the type checker runs.
        run = importlib.import_module("uvloop").run
    run(serve(args.bind, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
