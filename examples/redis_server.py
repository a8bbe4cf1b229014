"""A Redis clone on evio: strings with expiry, pipelining, AOF persistence, Redis's limits.

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
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple, Union

from redisclone import CLOSE, AOFError, AppendOnlyFile, Database, RedisProtocol, make_reader
from redisclone.aof import FSYNC_POLICIES
from redisclone.memory import Purger

import evio

logger = logging.getLogger("redisclone")

#: Seconds between ticks: the expiry sweep, the AOF's rewrites and retries, the signal check.
TICK = 0.1
#: Replies one step of a client's commands may produce before the rest wait for them to be written.
STEP = 1 << 20
#: When a waiting client's unsent output falls to this, its next step runs.
LOW_WATER = 256 * 1024
#: Descriptors kept free beside the clients (Redis's CONFIG_MIN_RESERVED_FDS): listeners, the AOF, a rewrite.
RESERVED_FDS = 32
#: Below this many free descriptors a new client is turned away, so the next one can still be told why.
SPARE_FDS = 4
MAX_CLIENTS_REPLY = b"-ERR max number of clients reached\r\n"
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1


@dataclass
class OutputLimit:
    """Redis's client-output-buffer-limit for normal clients: bytes, bytes, seconds (0: off)."""

    hard: int = 0
    soft: int = 0
    soft_seconds: int = 0


class RedisServer(evio.Events):
    """The evio glue: one `RedisProtocol` per connection, the `Database` ticked, Redis's limits enforced."""

    def __init__(
        self,
        db: Database,
        pure_parser: bool = False,
        *,
        maxclients: int = 10000,
        timeout: int = 0,
        max_bulk: int = 512 * 1024 * 1024,
        output_limit: OutputLimit | None = None,
    ) -> None:
        self.db = db
        self.pure_parser = pure_parser
        self.stop_requested = False
        self.maxclients = maxclients
        self.max_bulk = max_bulk
        limit = output_limit or OutputLimit()
        self.soft_limit = limit.soft
        self.soft_seconds = limit.soft_seconds
        self.options = evio.Options(idle_timeout=float(timeout) or None, max_pending=limit.hard or None)
        #: Held open so that `opened` can tell, with one dup(), whether descriptors are running out.
        self._probe_fd = os.open(os.devnull, os.O_RDONLY)
        #: When each client over the soft output limit went over it (by connection id).
        self._soft_since: Dict[int, float] = {}

    def close(self) -> None:
        if self._probe_fd >= 0:
            os.close(self._probe_fd)
            self._probe_fd = -1

    def serving(self, server: evio.Server) -> evio.Action | None:
        print("redis clone listening on " + ", ".join(_show(a) for a in server.addrs), flush=True)
        return None

    def opened(self, conn: evio.Conn) -> evio.OpenedResult:
        if self.db.clients >= self.maxclients or self._out_of_descriptors():
            self.db.rejected_connections += 1
            return MAX_CLIENTS_REPLY, evio.Action.CLOSE
        reader = make_reader(pure=self.pure_parser, max_bulk=self.max_bulk)
        conn.context = RedisProtocol(self.db, reader, step=STEP)
        return None, self.options, None

    def _out_of_descriptors(self) -> bool:
        """Whether fewer than `SPARE_FDS` descriptors are left: dup() gives the lowest free one, if any."""
        try:
            fd = os.dup(self._probe_fd)
        except OSError:
            return True
        os.close(fd)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # read each time: it may be lowered while serving
        return limit != resource.RLIM_INFINITY and fd >= limit - SPARE_FDS

    def closed(self, conn: evio.Conn, err: BaseException | None) -> evio.Action | None:
        proto: RedisProtocol | None = conn.context
        if proto is None:
            return None  # turned away by maxclients
        proto.connection_lost()
        self._soft_since.pop(conn.id, None)
        if isinstance(err, BufferError):
            logger.warning(
                "Client id=%d addr=%s closed for overcoming of output buffer limits (%s)",
                proto.id,
                _show(conn.remote_addr),
                err,
            )
        return None

    def data(self, conn: evio.Conn, data: Union[bytes, memoryview, None]) -> evio.events.DataResult:
        proto: RedisProtocol = conn.context
        out = proto.resume() if data is None else proto.feed(data)
        if proto.backlog:
            conn.pause_reading()  # the rest of its input waits in the kernel: TCP holds the client back
        elif data is None:
            conn.resume_reading()
        if self.soft_limit and self._over_soft_limit(conn, proto, len(out)):
            return out, evio.Action.CLOSE
        if proto.verdict:
            if proto.verdict != CLOSE:
                return out, evio.Action.SHUTDOWN
            if proto.close_reason:
                logger.warning(
                    "Closing client that reached max query buffer length: id=%d addr=%s %s",
                    proto.id,
                    _show(conn.remote_addr),
                    proto.close_reason,
                )
            return out, evio.Action.CLOSE
        return out

    def _over_soft_limit(self, conn: evio.Conn, proto: RedisProtocol, adding: int) -> bool:
        """Redis's soft output limit: over `soft` bytes for `soft_seconds` in a row closes the client."""
        if conn.pending + adding <= self.soft_limit:
            self._soft_since.pop(conn.id, None)
            return False
        now = time.monotonic()
        since = self._soft_since.setdefault(conn.id, now)
        if now - since < self.soft_seconds:
            return False
        self._soft_since.pop(conn.id, None)
        logger.warning(
            "Client id=%d addr=%s scheduled to be closed ASAP for overcoming of output buffer limits.",
            proto.id,
            _show(conn.remote_addr),
        )
        return True

    def postwrite(self, conn: evio.Conn, amount: int, remaining: int) -> evio.Action | None:
        if remaining <= LOW_WATER:
            proto: RedisProtocol | None = conn.context
            if proto is not None and proto.backlog:
                conn.wake()  # its next step: data(conn, None)
        return None

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


# ---- Redis's ways of writing settings ------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def memory(text: str) -> int:
    """A size as Redis reads one (memtoull): bytes, or k/kb/m/mb/g/gb (k = 1000, kb = 1024), any case."""
    m = re.fullmatch(r"([0-9]+)([a-zA-Z]*)", text.strip())
    if m is None or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError("argument must be a memory value")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _bounded(parse: Any, low: int, high: int) -> Any:
    def check(text: str) -> int:
        try:
            value = int(parse(text))
        except ValueError:
            raise argparse.ArgumentTypeError("argument couldn't be parsed into an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"argument must be between {low} and {high} inclusive")
        return value

    return check


def _octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError("argument couldn't be parsed as an octal number") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError("argument must be between 0 and 4095 inclusive")
    return value


def output_limits(words: List[str]) -> Tuple[OutputLimit, str]:
    """`client-output-buffer-limit` as Redis reads it: groups of `class hard soft seconds`.

    Returns the normal class's limit and the whole setting as CONFIG GET
    reports it (the replica and pub/sub classes are accepted and reported,
    though this server has neither).
    """
    tokens = " ".join(words).split()
    if not tokens or len(tokens) % 4:
        raise ValueError("Wrong number of arguments in buffer limit configuration.")
    classes = {"normal": (0, 0, 0), "slave": (268435456, 67108864, 60), "pubsub": (33554432, 8388608, 60)}
    for i in range(0, len(tokens), 4):
        name = tokens[i].lower()
        name = "slave" if name == "replica" else name
        if name not in classes:
            raise ValueError("Invalid client class specified in buffer limit configuration.")
        try:
            hard, soft = memory(tokens[i + 1]), memory(tokens[i + 2])
            seconds = int(tokens[i + 3])
        except (argparse.ArgumentTypeError, ValueError):
            raise ValueError("Error in hard, soft or soft_seconds setting in buffer limit configuration.") from None
        if seconds < 0:
            raise ValueError("Error in hard, soft or soft_seconds setting in buffer limit configuration.")
        classes[name] = (hard, soft, seconds)
    shown = " ".join(f"{name} {h} {s} {t}" for name, (h, s, t) in classes.items())
    return OutputLimit(*classes["normal"]), shown


def adjust_open_files(maxclients: int) -> int:
    """Redis's adjustOpenFilesLimit: raise RLIMIT_NOFILE to maxclients + 32, or lower maxclients to fit.

    Returns the maxclients that fits; raises SystemExit when not even 33
    descriptors can be had.
    """
    want = maxclients + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= want:
        return maxclients
    if soft == resource.RLIM_INFINITY:
        return maxclients
    best = want if hard == resource.RLIM_INFINITY else min(want, hard)
    failure = ""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (best, hard))
    except (OSError, ValueError) as err:
        failure = str(err)
        best = soft
    if best >= want:
        logger.info("Increased maximum number of open files to %d (it was originally set to %d).", best, soft)
        return maxclients
    if best <= RESERVED_FDS:
        logger.warning(
            "Your current 'ulimit -n' of %d is not enough for the server to start. "
            "Please increase your open file limit to at least %d. Exiting.",
            soft,
            want,
        )
        raise SystemExit(1)
    reduced = best - RESERVED_FDS
    logger.warning("You requested maxclients of %d requiring at least %d max file descriptors.", maxclients, want)
    logger.warning(
        "Server can't set maximum open files to %d because of OS error: %s.",
        want,
        failure or "Operation not permitted (the hard limit is lower)",
    )
    logger.warning(
        "Current maximum open files is %d. maxclients has been reduced to %d to compensate for low ulimit. "
        "If you need higher maxclients increase 'ulimit -n'.",
        best,
        reduced,
    )
    return reduced


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
    parser.add_argument(
        "--unixsocketperm",
        type=_octal,
        default=0,
        metavar="OCTAL",
        help="the unix socket's permissions, as 700 (default 0: the umask decides)",
    )
    parser.add_argument("--appendonly", choices=("yes", "no"), default="no", help="log writes to the AOF (default no)")
    parser.add_argument("--appendfilename", default="appendonly.aof", help="the AOF's path (default appendonly.aof)")
    parser.add_argument(
        "--appendfsync", choices=FSYNC_POLICIES, default="everysec", help="fsync the AOF: always, everysec, no"
    )
    parser.add_argument(
        "--auto-aof-rewrite-percentage",
        type=_bounded(int, 0, _INT_MAX),
        default=100,
        metavar="PERCENT",
        help="rewrite the AOF when it grew this much since the last rewrite (default 100; 0: never)",
    )
    parser.add_argument(
        "--auto-aof-rewrite-min-size",
        type=_bounded(memory, 0, _LONG_MAX),
        default=64 * 1024 * 1024,
        metavar="SIZE",
        help="but not below this size (default 64mb)",
    )
    parser.add_argument(
        "--maxclients",
        type=_bounded(int, 1, 2**32 - 1),
        default=10000,
        help="clients at once; one more gets an error (default 10000)",
    )
    parser.add_argument(
        "--timeout", type=_bounded(int, 0, _INT_MAX), default=0, help="close clients idle this many seconds (0: off)"
    )
    parser.add_argument(
        "--proto-max-bulk-len",
        type=_bounded(memory, 1024 * 1024, _LONG_MAX),
        default=512 * 1024 * 1024,
        metavar="SIZE",
        help="the longest bulk string a client may send (default 512mb)",
    )
    parser.add_argument(
        "--client-query-buffer-limit",
        type=_bounded(memory, 1024 * 1024, _LONG_MAX),
        default=1024 * 1024 * 1024,
        metavar="SIZE",
        help="input a client may have sent that is not executed yet (default 1gb)",
    )
    parser.add_argument(
        "--client-output-buffer-limit",
        nargs="+",
        default=["normal", "0", "0", "0"],
        metavar="CLASS HARD SOFT SECONDS",
        help="as Redis: 'normal HARD SOFT SECONDS' bounds the output a client leaves unread (default 0 0 0: off)",
    )
    parser.add_argument("--stdlib", action="store_true", help="use evio's portable selectors backend")
    parser.add_argument("--pure-parser", action="store_true", help="parse with pure Python even where hiredis is")
    args = parser.parse_args(argv)
    try:
        output_limit, output_shown = output_limits(args.client_output_buffer_limit)
    except ValueError as err:
        parser.error(f"argument --client-output-buffer-limit: {err}")
    logging.basicConfig(level=logging.WARNING, format="redis clone: %(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit is an EFBIG from write(), not a kill

    try:
        maxclients = adjust_open_files(args.maxclients)
    except SystemExit as exiting:
        return int(exiting.code or 1)
    net = "-net" if args.stdlib else ""
    addrs = [_tcp(host, args.port, net) for host in args.bind.split()]
    if args.unixsocket:
        mode = f"?mode={args.unixsocketperm:04o}" if args.unixsocketperm else ""
        addrs.append(f"unix{net}://{args.unixsocket}{mode}")
    aof = None
    if args.appendonly == "yes":
        aof = AppendOnlyFile(
            args.appendfilename,
            fsync=args.appendfsync,
            rewrite_percentage=args.auto_aof_rewrite_percentage,
            rewrite_min_size=args.auto_aof_rewrite_min_size,
        )
    config = {
        "port": str(args.port),
        "bind": args.bind,
        "appendfsync": args.appendfsync,
        "appendfilename": os.path.basename(args.appendfilename),
        "auto-aof-rewrite-percentage": str(args.auto_aof_rewrite_percentage),
        "auto-aof-rewrite-min-size": str(args.auto_aof_rewrite_min_size),
        "maxclients": str(maxclients),
        "timeout": str(args.timeout),
        "proto-max-bulk-len": str(args.proto_max_bulk_len),
        "client-query-buffer-limit": str(args.client_query_buffer_limit),
        "client-output-buffer-limit": output_shown,
        "unixsocket": args.unixsocket or "",
        "unixsocketperm": f"{args.unixsocketperm:o}",
        "dir": os.path.dirname(os.path.abspath(args.appendfilename)),
    }
    db = Database(aof, config)
    db.query_buffer_limit = args.client_query_buffer_limit
    try:
        loaded = db.load()
    except (AOFError, ValueError, OSError) as err:
        print(f"redis clone: {err}", file=sys.stderr)
        db.close()
        return 1
    if aof is not None:
        print(f"redis clone: {loaded} commands loaded from {aof.path}", file=sys.stderr, flush=True)
    events = RedisServer(
        db,
        pure_parser=args.pure_parser,
        maxclients=maxclients,
        timeout=args.timeout,
        max_bulk=args.proto_max_bulk_len,
        output_limit=output_limit,
    )

    def stop(signum: int, frame: object) -> None:
        events.stop_requested = True  # the next tick shuts down: no command is cut in half

    signal.signal(signal.SIGTERM, stop)
    purger = Purger()  # freed memory goes back to the system, as with Redis's allocator
    purger.start()
    try:
        evio.serve(events, *addrs)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as err:
        print(f"redis clone: {err}", file=sys.stderr)
        return 1
    finally:
        purger.stop()
        events.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
