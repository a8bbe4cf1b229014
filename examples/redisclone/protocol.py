"""`RedisProtocol`: one client connection, sans I/O. Bytes in; reply bytes and a verdict out.

The event loop (evio, asyncio, anything) calls `feed` with what the socket
read and writes what it returns; after each call, `verdict` says whether to
keep the connection (`KEEP`), write the reply and close it (`CLOSE`), or
write it and stop the whole server (`SHUTDOWN`). Commands of one packet are
parsed together and their replies joined into one bytes: a pipelined packet
costs one parse call, one join and one send.

Replies come in bounded steps when the protocol is made with `step`: once
the replies of a packet pass `step` bytes, the rest of its commands wait
(`backlog` is true) until the loop has written what it got and calls
`resume`; meanwhile the loop should stop reading this client, so a small
packet that asks for gigabytes of replies costs `step` bytes at a time.

With an AOF, a run of write commands is executed, then its records are
written in one `write` before any reply to them is returned, and before any
other command runs. If that write fails, the run's changes are taken back
and each of its write commands answers `-MISCONF`; so does every write
command after it (and PING, as in Redis) until the AOF can be written again.
"""

from __future__ import annotations

import functools
import sys
from itertools import islice
from typing import Any, Callable, Dict, List, Tuple, Union

from .commands import (
    ARITY,
    BULK_HEADS,
    CRLF,
    PONG,
    REDIS_VERSION,
    SYNTAX,
    WRITE_KEYS,
    Commands,
    Database,
    bulk,
    error,
    integer,
    text,
    wrong_arity,
)
from .resp import Command, HiredisReader, Input, PureReader, make_reader, parse_int

KEEP, CLOSE, SHUTDOWN = 0, 1, 2
OK = b"+OK\r\n"


class RedisProtocol:
    """The state of one client: its parser, RESP version, name and verdict.

    Commands that concern the connection (QUIT, HELLO, CLIENT, SELECT,
    SHUTDOWN) are methods here; the rest go to the shared `Commands` table
    of the connection's RESP version. `step` (bytes, or None for no bound):
    see the module's notes. After a `CLOSE` verdict with no reply,
    `close_reason` says why (the query buffer limit), for the log.
    """

    __slots__ = (
        "_aborted",
        "_aof",
        "_backlog",
        "_commands",
        "_db",
        "_next",
        "_queued",
        "_reader",
        "_step",
        "_table",
        "close_reason",
        "id",
        "lib_name",
        "lib_ver",
        "name",
        "resp",
        "verdict",
    )

    def __init__(
        self, db: Database, reader: Union[PureReader, HiredisReader] | None = None, *, step: int | None = None
    ) -> None:
        self._db = db
        self._aof = db.aof
        self._reader = reader if reader is not None else make_reader()
        self._commands: Commands = db.resp2
        #: Where commands are looked up: the commands' table, or an empty one inside MULTI.
        self._table = self._commands.table
        #: The commands of an open MULTI, or None.
        self._queued: List[Tuple[Callable[[Command], bytes], Command]] | None = None
        self._aborted = False
        self._step = step if step is not None else sys.maxsize
        #: Commands parsed and not executed yet (from `_next` on), or None.
        self._backlog: List[Command] | None = None
        self._next = 0
        self.resp = 2
        self.verdict = KEEP
        self.close_reason = ""
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.id = db.next_client_id
        db.next_client_id += 1
        db.clients += 1
        db.connections_received += 1

    def connection_lost(self) -> None:
        """Call once when the connection is gone."""
        self._db.clients -= 1

    @property
    def backlog(self) -> bool:
        """Whether commands wait for the replies before them to be written (then call `resume`)."""
        return self._backlog is not None

    @property
    def unparsed(self) -> int:
        """Bytes received that belong to no complete command yet."""
        return self._reader.pending

    def feed(self, data: Input) -> bytes:
        """Execute the commands that `data` completes (up to `step` bytes of replies); return their replies."""
        if self.verdict != KEEP:
            return b""  # closing: what a client sends after QUIT or an error is not read
        reader = self._reader
        commands = reader.feed(data)
        if reader.pending > self._db.query_buffer_limit:
            # As Redis: the client is closed at once, nothing it sent in this read runs, nothing is answered.
            self.verdict = CLOSE
            self.close_reason = f"qbuf={reader.pending}"
            self._backlog = None
            return b""
        backlog = self._backlog
        if backlog is not None:  # input while replies wait: it queues behind the commands already waiting
            commands = backlog[self._next :] + commands
        if self._aof is not None:
            return self._run_logged(commands, 0)
        return self._run(commands, 0)

    def resume(self) -> bytes:
        """Execute the next step of the waiting commands; return their replies."""
        backlog = self._backlog
        if backlog is None or self.verdict != KEEP:
            return b""
        if self._aof is not None:
            return self._run_logged(backlog, self._next)
        return self._run(backlog, self._next)

    def _run(self, commands: List[Command], start: int) -> bytes:
        """Execute `commands[start:]` until their replies pass the step: the hot path.

        GET, SET and PING, spelt in upper or lower case, run right here: their
        names are compared, not hashed, and no handler is called. A GET's
        reply goes out as its parts (header, the value itself, CRLF), joined
        once with every other reply: a value is copied once on its way out.
        Anything else is looked up in the table; after it, what it may have
        changed (the tables of the keyspace, the RESP version, MULTI) is read
        again.
        """
        table = self._table
        keyspace = self._db.keyspace
        data = keyspace.data
        expires = keyspace.expires
        null = self._commands.null
        fast = self._queued is None  # inside MULTI every command is queued
        out: List[bytes] = []
        append = out.append
        # Only replies whose size the request does not bound are counted: a SET's is shorter than the
        # command, a PING's at most a byte longer, so what they add is bounded by the input (which the
        # loop bounds: it reads no more while commands wait), and they skip the count.
        size = 0
        done = start
        step = self._step
        for done, cmd in enumerate(islice(commands, start, None) if start else commands, start + 1):  # noqa: B007 (read after the loop)
            name = cmd[0]
            n = len(cmd)
            if fast:
                if n == 3 and (name == b"SET" or name == b"set"):
                    key = cmd[1]
                    data[key] = cmd[2]
                    if expires and key in expires:
                        del expires[key]
                    append(OK)
                    continue
                if n == 2 and (name == b"GET" or name == b"get"):
                    key = cmd[1]
                    value = data.get(key)
                    if value is None or (expires and key in expires and not keyspace.alive(key)):
                        append(null)
                        size += 5
                    else:
                        m = len(value)
                        append(BULK_HEADS[m] if m < 1024 else b"$%d\r\n" % m)
                        append(value)
                        append(CRLF)
                        size += m + 5
                    if size > step:
                        break
                    continue
                if n == 1 and (name == b"PING" or name == b"ping"):
                    append(PONG)
                    continue
            handler = table.get(name)
            if handler is not None:
                reply = handler(cmd)
            else:
                reply = self._other(cmd)
                if self.verdict != KEEP:
                    append(reply)
                    break
                table = self._table  # HELLO or MULTI may have switched it
                null = self._commands.null
                fast = self._queued is None
            data = keyspace.data  # FLUSHDB and FLUSHALL replace the tables
            expires = keyspace.expires
            append(reply)
            size += len(reply)
            if size > step:
                break
        self._settle(commands, done, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def _settle(self, commands: List[Command], done: int, out: List[bytes]) -> None:
        """After a step: keep what is left to execute, or end with the protocol error that stopped the input."""
        if self.verdict == KEEP and done < len(commands):
            self._backlog = commands
            self._next = done
            return
        self._backlog = None
        if self.verdict == KEEP and self._reader.error is not None:
            # Redis words these with the offending byte; a CR or LF there would end the line early.
            reason = self._reader.error.replace(b"\r", b" ").replace(b"\n", b" ")
            out.append(b"-ERR Protocol error: " + reason + b"\r\n")
            self.verdict = CLOSE

    def _run_logged(self, commands: List[Command], start: int) -> bytes:
        """`_run` with an AOF: runs of write commands are journaled, then written before anything else."""
        aof = self._aof
        assert aof is not None
        keyspace = self._db.keyspace
        journal: List[Tuple[Any, ...]] = []
        keyspace.journal = journal
        out: List[bytes] = []
        append = out.append
        size = 0
        step = self._step
        run = -1  # where in `out` the replies of the writes not yet in the AOF begin
        done = start
        data = keyspace.data
        expires = keyspace.expires
        try:
            for cmd in islice(commands, start, None):
                done += 1
                name = cmd[0]
                if len(cmd) == 3 and (name == b"SET" or name == b"set") and self._queued is None and aof.error is None:
                    # SET without options, as `Commands.cmd_set` does it, journaled and logged.
                    if run < 0:
                        run = len(out)
                    key = cmd[1]
                    journal.append((key, data.get(key), expires.get(key)))
                    data[key] = cmd[2]
                    if expires and key in expires:
                        del expires[key]
                    aof.log_set(name, key, cmd[2])
                    append(OK)
                    size += 5
                    if size > step:
                        break
                    continue
                keys = WRITE_KEYS.get(name)
                if keys is None and not (name.islower() or name.isupper()):
                    keys = WRITE_KEYS.get(name.upper())
                queued = self._queued
                if queued is not None:  # inside MULTI only EXEC changes anything
                    keys = None
                    if name.upper() == b"EXEC" and any(q[1][0].lower() in WRITE_KEYS for q in queued):
                        keys = (0, 0, 0)  # EXEC journals its commands' keys itself
                if keys is None:
                    if run >= 0:
                        self._commit(out, run)
                        run = -1
                    if aof.error is not None and queued is None and name.upper() == b"PING":
                        reply = aof.misconf()  # as Redis: PING is refused too while writes are
                    else:
                        reply = self._execute(cmd)
                elif aof.error is not None:
                    if queued is not None:
                        self._end_transaction()
                    reply = aof.misconf()
                else:
                    if run < 0:
                        run = len(out)
                    first, last, every = keys
                    if first:
                        keyspace.save(cmd[first : (last + 1 if last > 0 else None) : every])
                    reply = self._execute(cmd)
                data = keyspace.data  # FLUSHDB and FLUSHALL replace the tables
                expires = keyspace.expires
                append(reply)
                if self.verdict != KEEP:
                    break
                size += len(reply)
                if size > step:
                    break
            if run >= 0:
                self._commit(out, run)
        finally:
            keyspace.journal = None
        self._settle(commands, done, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def _execute(self, cmd: Command) -> bytes:
        handler = self._table.get(cmd[0])
        return handler(cmd) if handler is not None else self._other(cmd)

    def _commit(self, out: List[bytes], run: int) -> None:
        """Write the AOF records of the writes whose replies are `out[run:]`; if that fails, take them back."""
        aof = self._aof
        assert aof is not None
        keyspace = self._db.keyspace
        if aof.write():
            if keyspace.journal:
                keyspace.journal.clear()
            return
        keyspace.undo()
        self._db.rebind()
        refused = aof.misconf()
        for i in range(run, len(out)):
            out[i] = refused

    def _other(self, cmd: Command) -> bytes:
        """A command not found as spelt: the connection's own, or in another letter case, or unknown."""
        name = cmd[0].upper()
        if self._queued is not None:
            return self._queue(name, cmd)
        own = _CONNECTION_COMMANDS.get(name)
        if own is not None:
            return own(self, cmd)
        handler = self._table.get(name.lower())
        if handler is not None:
            return handler(cmd)
        return unknown_command(cmd)

    # ---- the connection's own commands ------------------------------------

    def _quit(self, cmd: Command) -> bytes:
        self.verdict = CLOSE
        return OK

    def _shutdown(self, cmd: Command) -> bytes:
        for opt in cmd[1:]:
            if opt.upper() not in (b"NOSAVE", b"SAVE", b"NOW", b"FORCE"):
                return SYNTAX
        # Like Redis: no reply, the connection just closes.
        self.verdict = SHUTDOWN
        return b""

    def _select(self, cmd: Command) -> bytes:
        if len(cmd) != 2:
            return wrong_arity("select")
        index = parse_int(cmd[1])
        if index is None:
            return b"-ERR value is not an integer or out of range\r\n"
        return OK if index == 0 else b"-ERR DB index is out of range\r\n"

    def _hello(self, cmd: Command) -> bytes:
        version = self.resp
        if len(cmd) > 1:
            parsed = parse_int(cmd[1])
            if parsed is None:
                return b"-ERR Protocol version is not an integer or out of range\r\n"
            if parsed not in (2, 3):
                return b"-NOPROTO unsupported protocol version\r\n"
            version = parsed
        name: bytes | None = None
        i = 2
        while i < len(cmd):
            opt = cmd[i].upper()
            if opt == b"AUTH" and i + 2 < len(cmd):
                # There are no passwords: the default user takes any, as Redis's nopass user does.
                if cmd[i + 1] != b"default":
                    return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                i += 3
            elif opt == b"SETNAME" and i + 1 < len(cmd):
                name = cmd[i + 1]
                i += 2
            else:
                return error(f"ERR Syntax error in HELLO option '{text(cmd[i])}'")
        if name is not None:
            if not _valid_name(name):
                return _BAD_NAME
            self.name = name
        self.resp = version
        commands = self._db.resp3 if version == 3 else self._db.resp2
        self._commands = commands
        if self._queued is None:
            self._table = commands.table
        return commands.map(
            [
                (bulk(b"server"), bulk(b"redis")),
                (bulk(b"version"), bulk(REDIS_VERSION)),
                (bulk(b"proto"), integer(version)),
                (bulk(b"id"), integer(self.id)),
                (bulk(b"mode"), bulk(b"standalone")),
                (bulk(b"role"), bulk(b"master")),
                (bulk(b"modules"), b"*0\r\n"),
            ]
        )

    # ---- transactions -----------------------------------------------------------

    def _multi(self, cmd: Command) -> bytes:
        if len(cmd) != 1:
            return wrong_arity("multi")
        self._queued = []
        self._aborted = False
        self._table = _NOTHING  # every command now comes to _other, which queues it
        return OK

    def _queue(self, name: bytes, cmd: Command) -> bytes:
        """Inside MULTI: queue `cmd`, or run the transaction, or drop it."""
        queued = self._queued
        assert queued is not None
        if name == b"EXEC":
            return self._exec_queued(cmd)
        if name == b"DISCARD":
            self._end_transaction()
            return OK
        if name == b"MULTI":
            return b"-ERR MULTI calls can not be nested\r\n"
        if name == b"WATCH":
            return b"-ERR WATCH inside MULTI is not allowed\r\n"
        if name == b"QUIT":
            self._end_transaction()
            return self._quit(cmd)
        own = _CONNECTION_COMMANDS.get(name)
        handler = functools.partial(own, self) if own is not None else self._commands.table.get(name.lower())
        if handler is None:
            self._aborted = True
            return unknown_command(cmd)
        lower = name.lower().decode("latin-1")
        arity = ARITY[lower]
        if (arity >= 0 and len(cmd) != arity) or len(cmd) < -arity:
            self._aborted = True
            return wrong_arity(lower)
        aof = self._aof
        if aof is not None and aof.error is not None and (name in WRITE_KEYS or name == b"PING"):
            self._aborted = True  # as Redis: refused now, and EXEC then discards the transaction
            return aof.misconf()
        queued.append((handler, cmd))
        return b"+QUEUED\r\n"

    def _exec_queued(self, cmd: Command) -> bytes:
        queued, aborted = self._queued, self._aborted
        self._end_transaction()
        if len(cmd) != 1:
            return wrong_arity("exec")
        if aborted or queued is None:
            return b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        aof = self._aof
        if aof is None:
            replies = [handler(args) for handler, args in queued]
        else:
            # Each write's keys journaled (a failed AOF write takes the whole transaction back),
            # and its records kept between MULTI and EXEC: replayed whole or not at all.
            save = self._db.keyspace.save
            mark = aof.mark()
            replies = []
            for handler, args in queued:
                keys = WRITE_KEYS.get(args[0].lower())
                if keys is not None and keys[0]:
                    first, last, every = keys
                    save(args[first : (last + 1 if last > 0 else None) : every])
                replies.append(handler(args))
            aof.wrap_transaction(mark)
        return b"*%d\r\n" % len(replies) + b"".join(replies)

    def _end_transaction(self) -> None:
        self._queued = None
        self._aborted = False
        self._table = self._commands.table

    def _client(self, cmd: Command) -> bytes:
        if len(cmd) < 2:
            return wrong_arity("client")
        sub = cmd[1].upper()
        n = len(cmd)
        if sub == b"SETNAME":
            if n != 3:
                return wrong_arity("client|setname")
            if not _valid_name(cmd[2]):
                return _BAD_NAME
            self.name = cmd[2]
            return OK
        if sub == b"GETNAME":
            if n != 2:
                return wrong_arity("client|getname")
            return bulk(self.name) if self.name else (b"_\r\n" if self.resp == 3 else b"$-1\r\n")
        if sub == b"ID":
            return integer(self.id) if n == 2 else wrong_arity("client|id")
        if sub == b"SETINFO":
            if n != 4:
                return wrong_arity("client|setinfo")
            attr = cmd[2].upper()
            if attr == b"LIB-NAME":
                self.lib_name = cmd[3]
            elif attr == b"LIB-VER":
                self.lib_ver = cmd[3]
            else:
                return error(f"ERR Unrecognized option '{text(cmd[2])}'")
            return OK
        if sub == b"INFO":
            return bulk(self._describe())
        if sub == b"LIST":
            return bulk(self._describe() + b"\n")
        if sub in (b"NO-EVICT", b"NO-TOUCH"):
            if n != 3 or cmd[2].upper() not in (b"ON", b"OFF"):
                return SYNTAX
            return OK
        return error(f"ERR unknown subcommand '{text(cmd[1])}'. Try CLIENT HELP.")

    def _describe(self) -> bytes:
        return b"id=%d name=%s db=0 resp=%d lib-name=%s lib-ver=%s" % (
            self.id,
            self.name,
            self.resp,
            self.lib_name,
            self.lib_ver,
        )


_BAD_NAME = b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"


def _valid_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


_NOTHING: Dict[bytes, Callable[[Command], bytes]] = {}

_CONNECTION_COMMANDS = {
    b"MULTI": RedisProtocol._multi,
    b"EXEC": lambda self, cmd: b"-ERR EXEC without MULTI\r\n",
    b"DISCARD": lambda self, cmd: b"-ERR DISCARD without MULTI\r\n",
    b"QUIT": RedisProtocol._quit,
    b"SHUTDOWN": RedisProtocol._shutdown,
    b"SELECT": RedisProtocol._select,
    b"HELLO": RedisProtocol._hello,
    b"CLIENT": RedisProtocol._client,
}


def unknown_command(cmd: Command) -> bytes:
    """Redis's reply to a command it does not know, quoting up to 128 characters of arguments."""
    quoted = ""
    for arg in cmd[1:]:
        if len(quoted) >= 128:
            break
        quoted += "'" + text(arg)[: 128 - len(quoted)] + "' "
    return error(f"ERR unknown command '{text(cmd[0])[:128]}', with args beginning with: {quoted}")
