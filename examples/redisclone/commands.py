"""The commands on the keyspace, and the `Database` that every connection shares.

Each command is a bound method taking the full argument list (name first)
and returning its whole reply, in RESP. `Commands.table` maps command names,
as clients send them (upper or lower case), to those methods: one dict
look-up dispatches a command. There is one `Commands` per RESP version, as
only the null reply and maps differ, so the hot path never asks which
version a connection speaks. Write commands log themselves to the AOF, with
relative expiry times rewritten as absolute ones, so replay gives a key the
deadline it had, not a new one.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Tuple

from .aof import AppendOnlyFile
from .memory import purge
from .resp import Command, parse_int
from .store import Keyspace, now_ms

Handler = Callable[[Command], bytes]

logger = logging.getLogger("redisclone")

#: The Redis version whose behaviour this server follows, as HELLO and INFO report it.
REDIS_VERSION = b"7.0.0"

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
NOT_INT = b"-ERR value is not an integer or out of range\r\n"
SYNTAX = b"-ERR syntax error\r\n"
OVERFLOW = b"-ERR increment or decrement would overflow\r\n"
_INT_MAX = 2**63 - 1
CRLF = b"\r\n"
_INTS = [b":%d\r\n" % i for i in range(-2, 1024)]
#: The header of a bulk string of each length below 1024.
BULK_HEADS = [b"$%d\r\n" % i for i in range(1024)]


def integer(n: int) -> bytes:
    """An integer reply."""
    return _INTS[n + 2] if -2 <= n < 1022 else b":%d\r\n" % n


def bulk(value: bytes) -> bytes:
    """A bulk string reply (joined: a large value is copied once)."""
    n = len(value)
    return b"".join((BULK_HEADS[n] if n < 1024 else b"$%d\r\n" % n, value, CRLF))


def error(message: str) -> bytes:
    """An error reply; Redis turns line breaks inside one into spaces."""
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode("utf-8", "surrogateescape") + b"\r\n"


def wrong_arity(name: str) -> bytes:
    """Redis's reply to a command given the wrong number of arguments."""
    return error(f"ERR wrong number of arguments for '{name}' command")


def text(arg: bytes) -> str:
    """An argument, for an error message, byte for byte."""
    return arg.decode("utf-8", "surrogateescape")


_CANNOT_REWRITE = (
    b"-ERR Can't execute an AOF background rewriting. Please check the server logs for more information.\r\n"
)
#: Redis's CONFIG GET client-output-buffer-limit, the classes after "normal" (no replicas or pub/sub here).
_OTHER_OUTPUT_LIMITS = "slave 268435456 67108864 60 pubsub 33554432 8388608 60"


class Database:
    """What every connection shares: the keyspace, the AOF, settings, limits and counters.

    `query_buffer_limit` (Redis's client-query-buffer-limit) is read by every
    connection; the other limits are the glue's to enforce and are only
    reported here, through `config`.
    """

    def __init__(self, aof: AppendOnlyFile | None = None, config: Dict[str, str] | None = None) -> None:
        self.keyspace = Keyspace()
        self.aof = aof
        self.started = time.time()
        self.clients = 0
        self.connections_received = 0
        self.rejected_connections = 0
        self.next_client_id = 1
        #: Bytes of input a client may have sent that are not executed yet; past it, it is closed.
        self.query_buffer_limit = 1024 * 1024 * 1024
        #: The rewrite of BGREWRITEAOF without an AOF (Redis writes the file anyway).
        self._rewriter: AppendOnlyFile | None = None
        self.config: Dict[str, str] = {
            "appendonly": "yes" if aof is not None else "no",
            "appendfilename": os.path.basename(aof.path) if aof is not None else "appendonly.aof",
            "appendfsync": aof.fsync if aof is not None else "everysec",
            "auto-aof-rewrite-min-size": str(aof.rewrite_min_size if aof is not None else 64 * 1024 * 1024),
            "auto-aof-rewrite-percentage": str(aof.rewrite_percentage if aof is not None else 100),
            "bind": "127.0.0.1",
            "client-output-buffer-limit": "normal 0 0 0 " + _OTHER_OUTPUT_LIMITS,
            "client-query-buffer-limit": str(self.query_buffer_limit),
            "databases": "1",
            "dir": os.getcwd(),
            "maxclients": "10000",
            "maxmemory": "0",
            "maxmemory-policy": "noeviction",
            "port": "6380",
            "proto-max-bulk-len": str(512 * 1024 * 1024),
            "save": "",
            "timeout": "0",
            "unixsocket": "",
            "unixsocketperm": "0",
        }
        if config:
            self.config.update(config)
        self.resp2 = Commands(self, resp3=False)
        self.resp3 = Commands(self, resp3=True)

    def rebind(self) -> None:
        """After FLUSHDB/FLUSHALL or an undo replaced the keyspace's tables: point the commands at the new ones."""
        for commands in (self.resp2, self.resp3):
            commands.rebind()

    def load(self) -> int:
        """Replay the AOF into the keyspace (with logging off); returns the number of commands."""
        aof = self.aof
        if aof is None:
            return 0
        self.aof = None
        self.resp2.aof = None
        try:
            table = self.resp2.table
            count = aof.load(lambda cmd: self._replay(table, cmd))
        finally:
            self.aof = aof
            self.resp2.aof = aof
        return count

    def _replay(self, table: Dict[bytes, Handler], cmd: Command) -> None:
        handler = table.get(cmd[0]) or table.get(cmd[0].lower())
        if handler is None or cmd[0].lower() not in WRITE_KEYS:
            raise ValueError(f"the AOF holds the command {text(cmd[0])!r}, not a write command this server knows")
        handler(cmd)

    def bgrewriteaof(self) -> bytes:
        """BGREWRITEAOF: a child writes the keyspace compactly, the parent keeps serving."""
        rewriter = self.aof
        if rewriter is None:
            if self._rewriter is None:
                self._rewriter = AppendOnlyFile(os.path.join(self.config["dir"], self.config["appendfilename"]))
            rewriter = self._rewriter
        if rewriter.rewriting:
            return b"-ERR Background append only file rewriting already in progress\r\n"
        if not rewriter.rewrite(self.keyspace.records):
            return _CANNOT_REWRITE
        return b"+Background append only file rewriting started\r\n"

    def tick(self) -> None:
        """Periodic work: sweep expired keys (bounded); the AOF's retries, rewrites and automatic rewrites."""
        ks = self.keyspace
        for _ in range(10):  # a few rounds while most of what is looked at is expired
            if ks.sweep(200) < 50:
                break
        aof = self.aof
        if aof is not None:
            aof.retry()
            aof.poll_rewrite()
            if aof.due_for_rewrite():
                growth = aof.size * 100 // (aof.base_size or 1) - 100
                logger.info("Starting automatic rewriting of AOF on %d%% growth", growth)
                aof.rewrite(ks.records)
        if self._rewriter is not None:
            self._rewriter.poll_rewrite()

    def close(self) -> None:
        """Stop rewrites, write and close the AOF."""
        if self._rewriter is not None:
            self._rewriter.close()
        if self.aof is not None:
            self.aof.close()

    def info(self, section: bytes = b"") -> bytes:
        """The INFO text for `section` (lower case; empty for the default sections)."""
        ks = self.keyspace
        aof = self.aof
        rewriter = aof or self._rewriter
        started = rewriter.rewrite_started_at() if rewriter is not None else None
        persistence = [
            "loading:0",
            f"aof_enabled:{1 if aof is not None else 0}",
            f"aof_rewrite_in_progress:{1 if started is not None else 0}",
            "aof_rewrite_scheduled:0",
            f"aof_last_rewrite_time_sec:{rewriter.last_rewrite_secs if rewriter is not None else -1}",
            f"aof_current_rewrite_time_sec:{int(time.monotonic() - started) if started is not None else -1}",
            f"aof_last_bgrewrite_status:{'ok' if rewriter is None or rewriter.last_rewrite_ok else 'err'}",
            f"aof_rewrites:{rewriter.rewrites if rewriter is not None else 0}",
            f"aof_last_write_status:{'err' if aof is not None and aof.error is not None else 'ok'}",
        ]
        if aof is not None:
            persistence += [
                f"aof_current_size:{aof.size}",
                f"aof_base_size:{aof.base_size}",
                "aof_pending_rewrite:0",
                "aof_buffer_length:0",
                "aof_pending_bio_fsync:0",
                "aof_delayed_fsync:0",
            ]
        sections = {
            "server": [
                f"redis_version:{REDIS_VERSION.decode()}",
                "redis_mode:standalone",
                "evio_redisclone:1",
                f"os:{platform.system()} {platform.release()} {platform.machine()}",
                "arch_bits:64",
                f"python_implementation:{platform.python_implementation()}",
                f"python_version:{platform.python_version()}",
                f"process_id:{os.getpid()}",
                f"tcp_port:{self.config['port']}",
                f"uptime_in_seconds:{int(time.time() - self.started)}",
                f"executable:{os.path.abspath(sys.argv[0])}",
            ],
            "clients": [
                f"connected_clients:{self.clients}",
                "cluster_connections:0",
                f"maxclients:{self.config['maxclients']}",
                "client_recent_max_input_buffer:0",
                "client_recent_max_output_buffer:0",
                "blocked_clients:0",
                "tracking_clients:0",
                "clients_in_timeout_table:0",
            ],
            "persistence": persistence,
            "stats": [
                f"total_connections_received:{self.connections_received}",
                f"rejected_connections:{self.rejected_connections}",
            ],
            "replication": ["role:master", "connected_slaves:0"],
            "keyspace": [f"db0:keys={len(ks)},expires={len(ks.expires)},avg_ttl=0"] if len(ks) else [],
        }
        wanted = section.decode("latin-1")
        names = list(sections) if wanted in ("", "all", "default", "everything") else [wanted]
        lines: List[str] = []
        for name in names:
            if name in sections:
                lines.append(f"# {name.capitalize()}")
                lines.extend(sections[name])
                lines.append("")
        return "\r\n".join(lines).encode()


# name: (arity as Redis states it: negative means "at least"), flags, first key, last key, step
_SPECS: Dict[str, Tuple[int, Tuple[str, ...], int, int, int]] = {
    "ping": (-1, ("fast",), 0, 0, 0),
    "echo": (2, ("fast",), 0, 0, 0),
    "get": (2, ("readonly", "fast"), 1, 1, 1),
    "set": (-3, ("write", "denyoom"), 1, 1, 1),
    "setnx": (3, ("write", "denyoom", "fast"), 1, 1, 1),
    "setex": (4, ("write", "denyoom"), 1, 1, 1),
    "psetex": (4, ("write", "denyoom"), 1, 1, 1),
    "getset": (3, ("write", "denyoom", "fast"), 1, 1, 1),
    "getdel": (2, ("write", "fast"), 1, 1, 1),
    "append": (3, ("write", "denyoom", "fast"), 1, 1, 1),
    "strlen": (2, ("readonly", "fast"), 1, 1, 1),
    "del": (-2, ("write",), 1, -1, 1),
    "unlink": (-2, ("write", "fast"), 1, -1, 1),
    "exists": (-2, ("readonly", "fast"), 1, -1, 1),
    "incr": (2, ("write", "denyoom", "fast"), 1, 1, 1),
    "decr": (2, ("write", "denyoom", "fast"), 1, 1, 1),
    "incrby": (3, ("write", "denyoom", "fast"), 1, 1, 1),
    "decrby": (3, ("write", "denyoom", "fast"), 1, 1, 1),
    "mset": (-3, ("write", "denyoom"), 1, -1, 2),
    "mget": (-2, ("readonly", "fast"), 1, -1, 1),
    "keys": (2, ("readonly",), 0, 0, 0),
    "dbsize": (1, ("readonly", "fast"), 0, 0, 0),
    "type": (2, ("readonly", "fast"), 1, 1, 1),
    "expire": (-3, ("write", "fast"), 1, 1, 1),
    "pexpire": (-3, ("write", "fast"), 1, 1, 1),
    "expireat": (-3, ("write", "fast"), 1, 1, 1),
    "pexpireat": (-3, ("write", "fast"), 1, 1, 1),
    "ttl": (2, ("readonly", "fast"), 1, 1, 1),
    "pttl": (2, ("readonly", "fast"), 1, 1, 1),
    "persist": (2, ("write", "fast"), 1, 1, 1),
    "flushdb": (-1, ("write",), 0, 0, 0),
    "flushall": (-1, ("write",), 0, 0, 0),
    "command": (-1, ("loading", "stale"), 0, 0, 0),
    "config": (-2, ("admin", "noscript", "loading", "stale"), 0, 0, 0),
    "info": (-1, ("loading", "stale"), 0, 0, 0),
    "bgrewriteaof": (1, ("admin", "noscript", "no_async_loading"), 0, 0, 0),
    "memory": (-2, (), 0, 0, 0),
    # Handled by the connection (see protocol.py), listed here for COMMAND.
    "select": (2, ("loading", "stale", "fast"), 0, 0, 0),
    "quit": (-1, ("noscript", "loading", "stale", "fast"), 0, 0, 0),
    "shutdown": (-1, ("admin", "noscript", "loading", "stale"), 0, 0, 0),
    "client": (-2, ("noscript", "loading", "stale"), 0, 0, 0),
    "hello": (-1, ("noscript", "loading", "stale", "fast"), 0, 0, 0),
    "multi": (1, ("noscript", "loading", "stale", "fast", "allow_busy"), 0, 0, 0),
    "exec": (1, ("noscript", "loading", "stale", "skip_slowlog"), 0, 0, 0),
    "discard": (1, ("noscript", "loading", "stale", "fast", "allow_busy"), 0, 0, 0),
}

#: Each command's arity as Redis states it: n exactly, or -n for at least n (the name counts).
ARITY = {name: spec[0] for name, spec in _SPECS.items()}

#: The write commands, spelt in lower and in upper case, with where their keys are: (first, last, step)
#: as COMMAND reports them (a last of -1: up to the last argument). What a failed AOF write takes back.
WRITE_KEYS: Dict[bytes, Tuple[int, int, int]] = {}
for _name, (_arity, _flags, _first, _last, _step) in _SPECS.items():
    if "write" in _flags:
        WRITE_KEYS[_name.encode()] = WRITE_KEYS[_name.upper().encode()] = (_first, _last, _step)


class Commands:
    """The keyspace commands, replying in RESP2 or, with `resp3`, in RESP3."""

    def __init__(self, db: Database, resp3: bool) -> None:
        self.db = db
        self.keyspace = db.keyspace
        self.aof = db.aof
        self._data = db.keyspace.data
        self._expires = db.keyspace.expires
        self.resp3 = resp3
        #: The null bulk string: the one reply both versions spell differently, on the hot path.
        self.null = b"_\r\n" if resp3 else b"$-1\r\n"
        self.table: Dict[bytes, Handler] = {}
        for name in _SPECS:
            method = getattr(self, "cmd_" + name, None)
            if method is not None:
                self.table[name.encode()] = method
                self.table[name.upper().encode()] = method

    def rebind(self) -> None:
        """Look up the keyspace's tables again (FLUSHDB/FLUSHALL and undo replace them)."""
        self._data = self.keyspace.data
        self._expires = self.keyspace.expires

    def map(self, pairs: List[Tuple[bytes, bytes]]) -> bytes:
        """Pairs of ready replies as a map (RESP3) or a flat array (RESP2)."""
        head = b"%%%d\r\n" % len(pairs) if self.resp3 else b"*%d\r\n" % (2 * len(pairs))
        return head + b"".join(k + v for k, v in pairs)

    def _log(self, args: Command) -> None:
        aof = self.aof
        if aof is not None:
            aof.log(args)

    # ---- connection-free commands ---------------------------------------

    def cmd_ping(self, args: Command) -> bytes:
        n = len(args)
        if n == 1:
            return PONG
        return bulk(args[1]) if n == 2 else wrong_arity("ping")

    def cmd_echo(self, args: Command) -> bytes:
        return bulk(args[1]) if len(args) == 2 else wrong_arity("echo")

    # ---- strings ---------------------------------------------------------

    def cmd_get(self, args: Command) -> bytes:
        if len(args) != 2:
            return wrong_arity("get")
        key = args[1]
        value = self._data.get(key)
        if value is None:
            return self.null
        if self._expires and key in self._expires and not self.keyspace.alive(key):
            return self.null
        return bulk(value)

    def cmd_set(self, args: Command) -> bytes:
        if len(args) != 3:
            return self._set_with_options(args)
        key = args[1]
        self._data[key] = args[2]
        if self._expires and key in self._expires:
            del self._expires[key]
        if self.aof is not None:
            self.aof.log(args)
        return OK

    def _set_with_options(self, args: Command) -> bytes:
        n = len(args)
        if n < 3:
            return wrong_arity("set")
        key, value = args[1], args[2]
        nx = xx = get = keepttl = False
        unit: bytes | None = None
        amount = 0
        i = 3
        while i < n:
            opt = args[i].upper()
            if opt == b"NX" and not xx:
                nx = True
            elif opt == b"XX" and not nx:
                xx = True
            elif opt == b"GET":
                get = True
            elif opt == b"KEEPTTL" and unit is None:
                keepttl = True
            elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and unit is None and not keepttl and i + 1 < n:
                unit = opt
                i += 1
                parsed = parse_int(args[i])
                if parsed is None:
                    return NOT_INT
                amount = parsed
            else:
                return SYNTAX
            i += 1
        when: int | None = None
        if unit is not None:
            scale = 1000 if unit in (b"EX", b"EXAT") else 1
            base = 0 if unit in (b"EXAT", b"PXAT") else now_ms()
            if amount <= 0 or amount > _INT_MAX // scale or amount * scale > _INT_MAX - base:
                return error("ERR invalid expire time in 'set' command")
            when = amount * scale + base
        ks = self.keyspace
        old = ks.get(key)
        if (nx and old is not None) or (xx and old is None):
            return (bulk(old) if old is not None else self.null) if get else self.null
        self._data[key] = value
        logged = [b"SET", key, value]
        if when is not None:
            ks.expire_at(key, when)
            logged += [b"PXAT", b"%d" % when]
        elif keepttl:
            logged.append(b"KEEPTTL")
        else:
            ks.persist(key)
        self._log(logged)
        if get:
            return bulk(old) if old is not None else self.null
        return OK

    def cmd_setnx(self, args: Command) -> bytes:
        if len(args) != 3:
            return wrong_arity("setnx")
        if self.keyspace.get(args[1]) is not None:
            return ZERO
        self._set_plain(args[1], args[2])
        return ONE

    def _setex(self, args: Command, name: str, scale: int) -> bytes:
        if len(args) != 4:
            return wrong_arity(name)
        amount = parse_int(args[2])
        if amount is None:
            return NOT_INT
        now = now_ms()
        if amount <= 0 or amount > (_INT_MAX - now) // scale:
            return error(f"ERR invalid expire time in '{name}' command")
        key, when = args[1], now + amount * scale
        self._data[key] = args[3]
        self.keyspace.expire_at(key, when)
        self._log([b"SET", key, args[3], b"PXAT", b"%d" % when])
        return OK

    def cmd_setex(self, args: Command) -> bytes:
        return self._setex(args, "setex", 1000)

    def cmd_psetex(self, args: Command) -> bytes:
        return self._setex(args, "psetex", 1)

    def cmd_getset(self, args: Command) -> bytes:
        if len(args) != 3:
            return wrong_arity("getset")
        old = self.keyspace.get(args[1])
        self._set_plain(args[1], args[2])
        return self.null if old is None else bulk(old)

    def cmd_getdel(self, args: Command) -> bytes:
        if len(args) != 2:
            return wrong_arity("getdel")
        old = self.keyspace.get(args[1])
        if old is None:
            return self.null
        self.keyspace.delete(args[1])
        self._log([b"DEL", args[1]])
        return bulk(old)

    def cmd_append(self, args: Command) -> bytes:
        if len(args) != 3:
            return wrong_arity("append")
        key = args[1]
        value = (self.keyspace.get(key) or b"") + args[2]
        self._data[key] = value  # keeps the key's deadline, as Redis does
        self._log(args)
        return integer(len(value))

    def cmd_strlen(self, args: Command) -> bytes:
        if len(args) != 2:
            return wrong_arity("strlen")
        return integer(len(self.keyspace.get(args[1]) or b""))

    def _set_plain(self, key: bytes, value: bytes) -> None:
        """SET without options: the value, no deadline, logged."""
        self._data[key] = value
        self.keyspace.persist(key)
        self._log([b"SET", key, value])

    def _incr(self, args: Command, by: int) -> bytes:
        key = args[1]
        old = self.keyspace.get(key)
        current = 0
        if old is not None:
            parsed = parse_int(old)
            if parsed is None:
                return NOT_INT
            current = parsed
        result = current + by
        if not -(2**63) <= result <= _INT_MAX:
            return OVERFLOW
        self._data[key] = b"%d" % result
        self._log(args)
        return integer(result)

    def cmd_incr(self, args: Command) -> bytes:
        return self._incr(args, 1) if len(args) == 2 else wrong_arity("incr")

    def cmd_decr(self, args: Command) -> bytes:
        return self._incr(args, -1) if len(args) == 2 else wrong_arity("decr")

    def cmd_incrby(self, args: Command) -> bytes:
        if len(args) != 3:
            return wrong_arity("incrby")
        by = parse_int(args[2])
        return NOT_INT if by is None else self._incr(args, by)

    def cmd_decrby(self, args: Command) -> bytes:
        if len(args) != 3:
            return wrong_arity("decrby")
        by = parse_int(args[2])
        if by is None:
            return NOT_INT
        if by == -(2**63):
            return error("ERR decrement would overflow")
        return self._incr(args, -by)

    def cmd_mset(self, args: Command) -> bytes:
        n = len(args)
        if n < 3 or n % 2 == 0:
            return wrong_arity("mset")
        data, ks = self._data, self.keyspace
        for i in range(1, n, 2):
            data[args[i]] = args[i + 1]
            ks.persist(args[i])
        self._log(args)
        return OK

    def cmd_mget(self, args: Command) -> bytes:
        if len(args) < 2:
            return wrong_arity("mget")
        get, null = self.keyspace.get, self.null
        parts = [b"*%d\r\n" % (len(args) - 1)]
        for key in args[1:]:
            value = get(key)
            if value is None:
                parts.append(null)
            else:
                n = len(value)
                parts += (BULK_HEADS[n] if n < 1024 else b"$%d\r\n" % n, value, CRLF)
        return b"".join(parts)

    def cmd_type(self, args: Command) -> bytes:
        if len(args) != 2:
            return wrong_arity("type")
        return b"+string\r\n" if self.keyspace.alive(args[1]) else b"+none\r\n"

    # ---- keys ------------------------------------------------------------

    def cmd_del(self, args: Command) -> bytes:
        if len(args) < 2:
            return wrong_arity("del")
        ks = self.keyspace
        deleted = 0
        for key in args[1:]:
            if ks.alive(key):
                ks.delete(key)
                deleted += 1
        if deleted:
            self._log(args)
        return integer(deleted)

    def cmd_unlink(self, args: Command) -> bytes:
        return self.cmd_del(args) if len(args) >= 2 else wrong_arity("unlink")

    def cmd_exists(self, args: Command) -> bytes:
        if len(args) < 2:
            return wrong_arity("exists")
        alive = self.keyspace.alive
        return integer(sum(1 for key in args[1:] if alive(key)))

    def cmd_keys(self, args: Command) -> bytes:
        if len(args) != 2:
            return wrong_arity("keys")
        found = self.keyspace.keys(args[1])
        return b"*%d\r\n" % len(found) + b"".join(bulk(k) for k in found)

    def cmd_memory(self, args: Command) -> bytes:
        """MEMORY PURGE: hand the allocator's free pages back to the system (see `memory`)."""
        if len(args) < 2:
            return wrong_arity("memory")
        if args[1].upper() == b"PURGE" and len(args) == 2:
            purge()
            return OK
        return error(f"ERR unknown subcommand '{text(args[1])}'. Try MEMORY HELP.")

    def cmd_dbsize(self, args: Command) -> bytes:
        return integer(len(self._data)) if len(args) == 1 else wrong_arity("dbsize")

    def _flush(self, args: Command, name: str) -> bytes:
        if len(args) > 2:
            return wrong_arity(name)
        if len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC"):
            return SYNTAX
        self.keyspace.flush()
        self.db.rebind()
        self._log(args)
        return OK

    def cmd_flushdb(self, args: Command) -> bytes:
        return self._flush(args, "flushdb")

    def cmd_flushall(self, args: Command) -> bytes:
        return self._flush(args, "flushall")

    # ---- expiry ----------------------------------------------------------

    def _expire(self, args: Command, name: str, scale: int, absolute: bool) -> bytes:
        n = len(args)
        if n < 3:
            return wrong_arity(name)
        amount = parse_int(args[2])
        if amount is None:
            return NOT_INT
        nx = xx = gt = lt = False
        for opt in args[3:]:
            o = opt.upper()
            if o == b"NX":
                nx = True
            elif o == b"XX":
                xx = True
            elif o == b"GT":
                gt = True
            elif o == b"LT":
                lt = True
            else:
                return error(f"ERR Unsupported option {text(opt)}")
        if nx and (xx or gt or lt):
            return error("ERR NX and XX, GT or LT options at the same time are not compatible")
        if gt and lt:
            return error("ERR GT and LT options at the same time are not compatible")
        now = now_ms()
        base = 0 if absolute else now
        if abs(amount) > _INT_MAX // scale or not -(2**63) <= amount * scale + base <= _INT_MAX:
            return error(f"ERR invalid expire time in '{name}' command")
        when = amount * scale + base
        ks = self.keyspace
        key = args[1]
        if not ks.alive(key):
            return ZERO
        current = ks.expires.get(key)
        if (nx and current is not None) or (xx and current is None):
            return ZERO
        if (gt and (current is None or when <= current)) or (lt and current is not None and when >= current):
            return ZERO
        if when <= now:
            ks.delete(key)
            self._log([b"DEL", key])
            return ONE
        ks.expire_at(key, when)
        self._log([b"PEXPIREAT", key, b"%d" % when])
        return ONE

    def cmd_expire(self, args: Command) -> bytes:
        return self._expire(args, "expire", 1000, False)

    def cmd_pexpire(self, args: Command) -> bytes:
        return self._expire(args, "pexpire", 1, False)

    def cmd_expireat(self, args: Command) -> bytes:
        return self._expire(args, "expireat", 1000, True)

    def cmd_pexpireat(self, args: Command) -> bytes:
        return self._expire(args, "pexpireat", 1, True)

    def _ttl(self, args: Command, name: str, scale: int) -> bytes:
        if len(args) != 2:
            return wrong_arity(name)
        ks = self.keyspace
        if not ks.alive(args[1]):
            return integer(-2)
        when = ks.expires.get(args[1])
        if when is None:
            return integer(-1)
        left = max(0, when - now_ms())
        return integer((left + scale // 2) // scale)

    def cmd_ttl(self, args: Command) -> bytes:
        return self._ttl(args, "ttl", 1000)

    def cmd_pttl(self, args: Command) -> bytes:
        return self._ttl(args, "pttl", 1)

    def cmd_persist(self, args: Command) -> bytes:
        if len(args) != 2:
            return wrong_arity("persist")
        ks = self.keyspace
        if ks.alive(args[1]) and ks.persist(args[1]):
            self._log(args)
            return ONE
        return ZERO

    # ---- server ------------------------------------------------------------

    def cmd_command(self, args: Command) -> bytes:
        sub = args[1].upper() if len(args) > 1 else b""
        if sub == b"":
            return b"*%d\r\n" % len(_SPECS) + b"".join(self._command_info(n) for n in _SPECS)
        if sub == b"COUNT":
            return integer(len(_SPECS)) if len(args) == 2 else wrong_arity("command|count")
        if sub == b"INFO":
            names = [text(a).lower() for a in args[2:]] or list(_SPECS)
            return b"*%d\r\n" % len(names) + b"".join(
                self._command_info(n) if n in _SPECS else self.null_array() for n in names
            )
        if sub == b"DOCS":
            # No documentation to give: clients (redis-cli) then go without hints.
            return self.map([])
        if sub == b"LIST":
            return b"*%d\r\n" % len(_SPECS) + b"".join(bulk(n.encode()) for n in _SPECS)
        return error(f"ERR unknown subcommand '{text(args[1])}'. Try COMMAND HELP.")

    def null_array(self) -> bytes:
        """The null array (an unknown name in COMMAND INFO)."""
        return b"_\r\n" if self.resp3 else b"*-1\r\n"

    def _command_info(self, name: str) -> bytes:
        arity, flags, first, last, step = _SPECS[name]
        flag_replies = b"".join(b"+%s\r\n" % f.encode() for f in flags)
        empty = b"*0\r\n"
        return (
            b"*10\r\n"
            + bulk(name.encode())
            + integer(arity)
            + b"*%d\r\n" % len(flags)
            + flag_replies
            + integer(first)
            + integer(last)
            + integer(step)
            + empty * 4
        )

    def cmd_config(self, args: Command) -> bytes:
        sub = args[1].upper() if len(args) > 1 else b""
        if sub == b"GET":
            if len(args) < 3:
                return wrong_arity("config|get")
            from .store import glob_to_regex

            found: Dict[str, str] = {}
            for pattern in args[2:]:
                match = glob_to_regex(pattern.lower()).match
                for key, value in self.db.config.items():
                    if match(key.encode()):
                        found[key] = value
            return self.map([(bulk(k.encode()), bulk(v.encode())) for k, v in found.items()])
        if sub == b"SET":
            if len(args) < 4 or len(args) % 2:
                return wrong_arity("config|set")
            return error(f"ERR Unknown option or number of arguments for CONFIG SET - '{text(args[2])}'")
        if sub == b"RESETSTAT":
            return OK
        if len(args) < 2:
            return wrong_arity("config")
        return error(f"ERR unknown subcommand '{text(args[1])}'. Try CONFIG HELP.")

    def cmd_bgrewriteaof(self, args: Command) -> bytes:
        return self.db.bgrewriteaof() if len(args) == 1 else wrong_arity("bgrewriteaof")

    def cmd_info(self, args: Command) -> bytes:
        return bulk(self.db.info(args[1].lower() if len(args) > 1 else b""))
