"""A layer-4 (TCP) load balancer on evio: round robin, least connections or source hashing, with health checks.

    python examples/proxy.py --backend tcp://127.0.0.1:6380 --backend tcp://127.0.0.1:6381,weight=2
    redis-cli -p 7000 ping

Each client gets its own connection to a backend that is up. Bytes go both
ways unchanged; a side with more than `LIMIT` bytes pending pauses the
other side's reading, so a slow reader keeps memory flat; a half-close is
passed on, and a reset on one side closes the other. The logic lives in
the `tcplb` package beside this file (no sockets there); this script is the
command line and the evio glue. It prints `proxy listening on ADDR` once it
accepts. SIGTERM and Ctrl-C stop it (exit status 0); SIGUSR1 logs a line per
backend.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from typing import Any, List, Union

from tcplb import POLICIES, Backend, Balancer, parse_backend, proxy_header_v1, proxy_header_v2

import evio
from evio.addresses import parse, parse_dial

log = logging.getLogger("proxy")

#: Bytes pending on one side before the other side stops being read.
LIMIT = 256 * 1024


class Pair:
    """A client and its connection to a backend, as both conns' `context`."""

    __slots__ = ("backend", "client", "client_gone", "client_paused", "retried", "server", "server_paused", "server_up")

    def __init__(self, client: evio.Conn, backend: Backend) -> None:
        self.client = client
        self.backend = backend
        self.server: evio.Conn | None = None  # the dial under way, then the connection
        self.server_up = False
        self.client_gone = False
        self.retried = False
        self.client_paused = True  # until the backend connection is up
        self.server_paused = False


class Check:
    """A health check's dial, as its conn's `context`."""

    __slots__ = ("backend", "up")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.up = False


class Proxy(evio.Events):
    """The evio glue: pairs clients with backends and moves bytes between them."""

    def __init__(self, balancer: Balancer, args: argparse.Namespace) -> None:
        self.balancer = balancer
        self.check_interval: float = args.check_interval
        self.timeout_connect: float = args.timeout_connect
        # Input arrives in the loop's own buffer: `Conn.write` sends it at once, or copies what waits.
        self.client_options = evio.Options(half_close=True, idle_timeout=args.timeout_client, reuse_input_buffer=True)
        self.server_options = evio.Options(half_close=True, idle_timeout=args.timeout_server, reuse_input_buffer=True)
        self.send_proxy = proxy_header_v2 if args.send_proxy_v2 else proxy_header_v1 if args.send_proxy else None
        self.server: evio.Server | None = None
        self.stop_requested = False  # SIGTERM before the server was up

    # ---- the server, and health checks ------------------------------------------------------------------

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.server = server
        if self.stop_requested:
            return evio.Action.SHUTDOWN
        print("proxy listening on " + ", ".join(_show(a) for a in server.addrs), flush=True)
        if self.check_interval > 0:
            self._check_all()
        return None

    def _check_all(self) -> None:
        assert self.server is not None
        for backend in self.balancer.backends:
            self.server.dial(
                backend.addr, timeout=min(self.timeout_connect, self.check_interval), context=Check(backend)
            )
        self.server.after(self.check_interval, self._check_all)

    def log_backends(self) -> None:
        for backend in self.balancer.backends:
            log.warning("%s", backend.describe())

    # ---- connections ------------------------------------------------------------------------------------

    def opened(self, conn: evio.Conn) -> evio.OpenedResult:
        ctx = conn.context
        if isinstance(ctx, Check):  # the backend accepted: it is up
            ctx.up = True
            self.balancer.report(ctx.backend, True)
            return None, evio.Action.CLOSE
        if isinstance(ctx, Pair):  # the backend side of a pair is up: let the client's bytes flow
            ctx.server_up = True
            self.balancer.report(ctx.backend, True)
            if ctx.client_paused:
                ctx.client_paused = False
                ctx.client.resume_reading()
            header = self.send_proxy(ctx.client.remote_addr, ctx.client.local_addr) if self.send_proxy else None
            return header, self.server_options, None
        backend = self.balancer.pick(conn.remote_addr)
        if backend is None:
            return None, evio.Action.CLOSE  # no backend is up: refuse at once, as HAProxy does
        conn.pause_reading()  # until the backend connection is up: nothing is lost if it must be redialled
        pair = Pair(conn, backend)
        conn.context = pair
        self._dial(pair)
        return None, self.client_options, None

    def _dial(self, pair: Pair) -> None:
        self.balancer.connected(pair.backend)
        pair.server = pair.client.server.dial(pair.backend.addr, timeout=self.timeout_connect, context=pair)

    def data(self, conn: evio.Conn, data: Union[bytes, memoryview, None]) -> evio.DataResult:
        pair: Pair = conn.context
        peer = pair.server if conn is pair.client else pair.client
        if peer is None or pair.client_gone:
            return None, evio.Action.CLOSE  # the other side is gone: this one goes too
        if data is None:
            return None
        if not data:
            peer.write_eof()  # end of input: pass it on; the other direction stays open
            return None
        # Counted before the write: SIGUSR1's handler may run between any two lines, and must not
        # report fewer bytes than the peer already has.
        if conn is pair.client:
            pair.backend.bytes_in += len(data)
        else:
            pair.backend.bytes_out += len(data)
        peer.write(data)
        if peer.pending > LIMIT:
            if conn is pair.client:
                pair.client_paused = True
            else:
                pair.server_paused = True
            conn.pause_reading()
        return None

    def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
        if remaining > LIMIT:
            return None
        pair = conn.context
        if not isinstance(pair, Pair):
            return None
        # This side drained: read the other side again, if it was paused for this side's sake.
        if conn is pair.client:
            if pair.server_paused and pair.server is not None:
                pair.server_paused = False
                pair.server.resume_reading()
        elif pair.client_paused:
            pair.client_paused = False
            pair.client.resume_reading()
        return None

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        ctx = conn.context
        if isinstance(ctx, Check):
            if not ctx.up:
                self.balancer.report(ctx.backend, False)
            return None
        if not isinstance(ctx, Pair):
            return None  # a client refused in opened
        if conn is ctx.client:
            ctx.client_gone = True
            if ctx.server is not None:
                ctx.server.close()  # pending output still goes; a dial under way connects, then closes
            return None
        # The backend side ended.
        if ctx.server is not conn:
            return None  # a dial abandoned for a redispatch
        self.balancer.disconnected(ctx.backend)
        if not ctx.server_up and err is not None:
            # It never connected: a failed check (when checks run: with none, nothing would bring the
            # backend back up); then one more backend, as `option redispatch` with `retries 1`.
            if self.check_interval > 0:
                self.balancer.report(ctx.backend, False)
            other = None if ctx.retried else self.balancer.pick(ctx.client.remote_addr, exclude=ctx.backend)
            if other is not None and not ctx.client_gone and not self.stop_requested:
                log.warning("cannot reach %s (%s): redispatching to %s", ctx.backend.addr, err, other.addr)
                ctx.retried = True
                ctx.backend = other
                try:
                    self._dial(ctx)
                    return None
                except RuntimeError:  # the server is shutting down
                    self.balancer.disconnected(other)
            if not ctx.client_gone:
                log.warning("cannot reach %s (%s): closing the client", ctx.backend.addr, err)
        ctx.server = None
        ctx.client.close()  # pending output still goes, even after a half-close passed on
        return None


def _show(addr: Any) -> str:
    if isinstance(addr, str):
        return addr
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="address to accept on, repeatable (default tcp://127.0.0.1:7000)",
    )
    parser.add_argument(
        "--backend",
        action="append",
        required=True,
        metavar="ADDR[,weight=N]",
        help="a backend, tcp://host:port or unix://path, repeatable",
    )
    parser.add_argument("--balance", choices=POLICIES, default="roundrobin", help="how to pick a backend")
    parser.add_argument(
        "--check-interval",
        type=float,
        default=2.0,
        help="seconds between health checks (default 2; 0: none, and backends stay up)",
    )
    parser.add_argument("--rise", type=int, default=2, help="good checks in a row to mark a backend up (default 2)")
    parser.add_argument("--fall", type=int, default=3, help="failed checks in a row to mark it down (default 3)")
    parser.add_argument("--timeout-connect", type=float, default=5.0, help="seconds to reach a backend (default 5)")
    parser.add_argument("--timeout-client", type=float, default=60.0, help="idle seconds on the client side")
    parser.add_argument("--timeout-server", type=float, default=60.0, help="idle seconds on the backend side")
    proxy = parser.add_mutually_exclusive_group()
    proxy.add_argument("--send-proxy", action="store_true", help="send a PROXY protocol v1 header to the backend")
    proxy.add_argument("--send-proxy-v2", action="store_true", help="send a PROXY protocol v2 header to the backend")
    parser.add_argument("--stdlib", action="store_true", help="use evio's portable selectors backend")
    args = parser.parse_args(argv)

    try:
        backends = [parse_backend(text) for text in args.backend]
        for backend in backends:
            parse_dial(backend.addr)
        for name in ("timeout_connect", "timeout_client", "timeout_server"):
            value = getattr(args, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number of seconds, not {value}")
        interval = args.check_interval
        if not (math.isfinite(interval) and interval >= 0):
            raise ValueError(f"--check-interval must be 0 (off) or a positive number of seconds, not {interval}")
        listen = [_portable(a) if args.stdlib else a for a in args.listen or ["tcp://127.0.0.1:7000"]]
        for addr in listen:
            parse(addr)  # a malformed address is a usage error, before anything binds

        def changed(backend: Backend) -> None:
            log.warning("backend %s is %s", backend.addr, "UP" if backend.up else "DOWN")

        balancer = Balancer(backends, args.balance, rise=args.rise, fall=args.fall, on_change=changed)
    except ValueError as err:
        print(f"proxy: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="proxy: %(message)s", stream=sys.stderr)
    events = Proxy(balancer, args)

    def stop(signum: int, frame: object) -> None:
        events.stop_requested = True
        if events.server is not None:
            events.server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, lambda signum, frame: events.log_backends())
    try:
        evio.serve(events, *listen)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as err:
        print(f"proxy: {err}", file=sys.stderr)
        return 1
    return 0


def _portable(addr: str) -> str:
    """`addr` on evio's portable backend (its scheme with `-net`)."""
    scheme, sep, rest = addr.partition("://")
    if not sep:
        return f"tcp-net://{addr}"
    return addr if scheme.lower().endswith("-net") else f"{scheme}-net://{rest}"


if __name__ == "__main__":
    sys.exit(main())
