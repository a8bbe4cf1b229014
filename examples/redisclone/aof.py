"""The append-only file: every write command in RESP, written before its reply, replayed at start, rewritten compact.

- **Writing.** Records are buffered while a run of write commands executes
  and handed to the OS in one `write` before any reply to them goes out. A
  write that fails (ENOSPC, EIO, EFBIG) or comes up short is cut off again
  with `ftruncate`, so the file holds whole records only; the caller takes
  the commands back and answers `-MISCONF`, as do all write commands (and
  PING, as in Redis) until a probe written once a second goes through.
- **fsync.** `appendfsync everysec` (the default) fsyncs from a background
  thread once a second, never on the loop's thread; `always` fsyncs after
  every write, before the replies; `no` leaves it to the OS.
- **Loading.** Only RESP arrays of bulk strings, as Redis's loader: anything
  else is an error naming its offset. A record cut short at the end (a crash
  mid-write), or a MULTI without its EXEC, is cut off with a warning.
- **Rewriting.** `rewrite` forks a child that writes the keyspace as a compact
  file beside the AOF while the parent goes on serving and appending to the
  old file; when the child is done, the parent appends what was logged
  meanwhile, fsyncs, and renames the new file over the old one. A crash at
  any moment leaves one whole file at the path.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import threading
import time
from typing import Callable, Iterable, List, Tuple

from .resp import MAX_ARGS, Command, parse_int

logger = logging.getLogger("redisclone")

#: How often buffered writes reach the disk with `appendfsync everysec`, at most this many seconds apart.
FSYNC_INTERVAL = 1.0
#: The fsync policies Redis knows.
FSYNC_POLICIES = ("always", "everysec", "no")
#: How long to wait between probes while the last write failed.
RETRY_INTERVAL = 1.0
#: After a rewrite failed, automatic rewrites wait this many seconds.
AUTO_REWRITE_PAUSE = 60.0
_READ_CHUNK = 1 << 20
#: A header line longer than this without its end is not a header.
_MAX_LINE = 64 * 1024
#: The longest bulk string a record may hold (Redis's loader has no limit of its own; this is its LONG_MAX in spirit).
_MAX_RECORD_BULK = 1 << 62


class AOFError(Exception):
    """The file is not an append-only file this server can load."""


def encode_command(args: Command) -> bytes:
    """`args` as a RESP array of bulk strings: how a command is stored."""
    parts: List[bytes] = []
    _add_record(parts, args)
    return b"".join(parts)


def _add_record(parts: List[bytes], args: Command) -> None:
    """Append the pieces of `args` as a RESP array to `parts`: headers and the arguments themselves, uncopied."""
    parts.append(b"*%d\r\n" % len(args))
    for arg in args:
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")


MULTI_RECORD = encode_command([b"MULTI"])
EXEC_RECORD = encode_command([b"EXEC"])
#: What a probe appends while writes fail: harmless on replay, as in Redis's own files.
PROBE_RECORD = encode_command([b"SELECT", b"0"])


class _Bad(Exception):
    def __init__(self, at: int, what: str) -> None:
        super().__init__(what)
        self.at = at
        self.what = what


def _shown(byte: bytes) -> str:
    return repr(byte.decode("latin-1"))[1:-1] if byte else "end of file"


def parse_record(buf: bytes, pos: int) -> Tuple[Command | None, int]:
    """One record at `buf[pos:]`, strictly: `*N` then N bulk strings, each followed by CRLF.

    Returns `(args, end)` for a whole record, or `(None, need)` when `buf`
    ends first (`need`: how many bytes from `pos` the record needs at least,
    0 when a line end is awaited). Raises `_Bad` at malformed input.
    """
    end = len(buf)
    if pos >= end:
        return None, 1
    if buf[pos] != 42:  # '*'
        raise _Bad(pos, f"expected '*', got '{_shown(buf[pos : pos + 1])}'")
    find = buf.find
    nl = find(b"\r\n", pos)
    if nl < 0:
        if end - pos > _MAX_LINE:
            raise _Bad(pos, "invalid multibulk length")
        return None, 0
    count = parse_int(buf[pos + 1 : nl])
    if count is None or count < 1 or count > MAX_ARGS:
        raise _Bad(pos, "invalid multibulk length")
    p = nl + 2
    args: Command = []
    for _ in range(count):
        if p >= end:
            return None, 0
        if buf[p] != 36:  # '$'
            raise _Bad(p, f"expected '$', got '{_shown(buf[p : p + 1])}'")
        nl = find(b"\r\n", p)
        if nl < 0:
            if end - p > _MAX_LINE:
                raise _Bad(p, "invalid bulk length")
            return None, 0
        n = parse_int(buf[p + 1 : nl])
        if n is None or n < 0 or n > _MAX_RECORD_BULK:
            raise _Bad(p, "invalid bulk length")
        start = nl + 2
        stop = start + n
        if stop + 2 > end:
            return None, stop + 2 - pos
        if buf[stop : stop + 2] != b"\r\n":
            raise _Bad(stop, "expected CRLF after a bulk string")
        args.append(buf[start:stop])
        p = stop + 2
    return args, p


class AppendOnlyFile:
    """Write commands logged in RESP to `path`; see the module's notes.

    `size` is the length of the file's whole records: where a failed write is
    cut back to. `error` is the reason writes are refused (the last failed
    write's or fsync's error, in words), or None.
    """

    def __init__(
        self,
        path: str,
        fsync: str = "everysec",
        rewrite_percentage: int = 100,
        rewrite_min_size: int = 64 * 1024 * 1024,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        self.rewrite_percentage = rewrite_percentage
        self.rewrite_min_size = rewrite_min_size
        self._fd = -1
        self._buf: List[bytes] = []
        self.size = 0
        #: The size after the last load or rewrite: auto-aof-rewrite measures growth from it.
        self.base_size = 0
        self.write_error: str | None = None
        self.fsync_error: str | None = None
        #: A failed write could not be cut off: nothing is appended until it is.
        self._torn = False
        self._retry_at = 0.0
        # The fsync thread (everysec): it fsyncs `_fd` when `_written` moved past what it synced last.
        self._lock = threading.Lock()
        self._written = 0
        self._synced = 0
        self._retired: List[int] = []
        self._stop = threading.Event()
        self._fsync_thread: threading.Thread | None = None
        # The rewrite child: (pid, temporary file, the offset of the old file it started from, start time).
        self._child: Tuple[int, str, int, float] | None = None
        self.rewrites = 0
        self.last_rewrite_ok = True
        self._no_auto_until = 0.0
        self.last_rewrite_secs = -1

    # ---- loading ---------------------------------------------------------------

    def load(self, replay: Callable[[Command], None]) -> int:
        """Replay the file's commands through `replay`, then open it for appending; returns the count.

        A record cut short at the end (a crash mid-write), or a transaction
        without its EXEC, is logged and cut off. Anything else malformed
        raises `AOFError` naming the offset, and leaves the file as it is.
        """
        self._remove_stale_rewrites()
        count = 0
        cut = -1
        if os.path.exists(self.path):
            count, cut = self._replay(replay)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if cut >= 0:
            os.ftruncate(self._fd, cut)
        self.size = self.base_size = os.fstat(self._fd).st_size
        if self.fsync == "everysec":
            self._fsync_thread = threading.Thread(target=self._fsync_loop, name="aof-fsync", daemon=True)
            self._fsync_thread.start()
        return count

    def _replay(self, replay: Callable[[Command], None]) -> Tuple[int, int]:
        """Replay the file; returns (commands replayed, offset to cut the file at or -1)."""
        count = 0
        multi_at = -1  # the offset of an open MULTI
        queued: List[Command] = []
        buf = b""
        base = 0  # the file offset of buf[0]
        pos = 0
        eof = False
        with open(self.path, "rb") as f:
            while True:
                try:
                    cmd, end = parse_record(buf, pos)
                except _Bad as bad:
                    raise AOFError(
                        f"Bad file format reading the append only file {self.path} at offset {base + bad.at} "
                        f"(after {count} commands): {bad.what}; not starting"
                    ) from None
                if cmd is None:
                    if eof:
                        break
                    chunk = f.read(max(_READ_CHUNK, end - (len(buf) - pos)))
                    if not chunk:
                        eof = True
                        continue
                    buf = buf[pos:] + chunk
                    base += pos
                    pos = 0
                    continue
                at = base + pos
                pos = end
                name = cmd[0].upper()
                if name == b"MULTI" and len(cmd) == 1 and multi_at < 0:
                    multi_at = at
                elif name == b"EXEC" and len(cmd) == 1 and multi_at >= 0:
                    for queued_cmd in queued:
                        replay(queued_cmd)
                    count += len(queued)
                    queued = []
                    multi_at = -1
                elif name == b"SELECT":
                    if cmd[1:] != [b"0"]:
                        raise AOFError(f"{self.path} at offset {at}: SELECT of a database other than 0; not starting")
                elif multi_at >= 0:
                    queued.append(cmd)
                else:
                    replay(cmd)
                    count += 1
        whole = base + pos
        size = base + len(buf)
        if whole < size:
            logger.warning(
                "%s: the last command is incomplete (%d bytes at offset %d, a crash mid-write?); "
                "cutting it off and loading the %d commands before it",
                self.path,
                size - whole,
                whole,
                count,
            )
        if multi_at >= 0:
            logger.warning(
                "%s: Revert incomplete MULTI/EXEC transaction in AOF file (%d commands at offset %d)",
                self.path,
                len(queued),
                multi_at,
            )
            return count, multi_at
        return count, (whole if whole < size else -1)

    def _temp_prefix(self) -> str:
        folder, name = os.path.split(os.path.abspath(self.path))
        return os.path.join(folder, f"temp-rewriteaof-{name}-")

    def _remove_stale_rewrites(self) -> None:
        """Remove temporary files that a rewrite killed with its server left behind."""
        prefix = self._temp_prefix()
        folder, name = os.path.split(prefix)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        pattern = re.compile(re.escape(name) + r"(\d+)\.aof\Z")
        for other in names:
            m = pattern.match(other)
            if m is None or _alive(int(m.group(1))):
                continue
            try:
                os.unlink(os.path.join(folder, other))
                logger.warning("removed %s, left by a rewrite that did not finish", other)
            except OSError:
                pass

    # ---- writing ---------------------------------------------------------------------

    def log(self, args: Command) -> None:
        """Buffer a write command's record (as pieces: the arguments are copied once, when written)."""
        _add_record(self._buf, args)

    def log_set(self, name: bytes, key: bytes, value: bytes) -> None:
        """Buffer the record of `name key value` (a SET, `name` spelt as sent): `log([name, key, value])`, faster."""
        head = b"*3\r\n$3\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n" % (name, len(key), key, len(value))
        self._buf += (head, value, b"\r\n")

    @property
    def pending(self) -> bool:
        """Whether records were logged and not written yet."""
        return bool(self._buf)

    def mark(self) -> int:
        """Where the buffer ends now (between records): give it to `wrap_transaction` after a transaction ran."""
        return len(self._buf)

    def wrap_transaction(self, mark: int) -> None:
        """Put the records logged since `mark` between MULTI and EXEC: replayed whole or not at all."""
        if len(self._buf) > mark:
            self._buf.insert(mark, MULTI_RECORD)
            self._buf.append(EXEC_RECORD)

    def discard(self) -> None:
        """Drop the records not written yet."""
        self._buf.clear()

    @property
    def error(self) -> str | None:
        """Why writes are refused now (in words), or None."""
        return self.write_error or self.fsync_error

    def misconf(self) -> bytes:
        """Redis's reply to a write command while the AOF cannot be written."""
        return b"-MISCONF Errors writing to the AOF file: %s\r\n" % (self.error or "unknown error").encode()

    def write(self) -> bool:
        """Hand the buffered records to the OS in one write (and fsync them with `always`).

        `False` when that failed: the file is cut back to its last whole
        record, the records are dropped, and `error` says why.
        """
        buf = self._buf
        if not buf:
            return True
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        return self._append(data)

    def _append(self, data: bytes) -> bool:
        if self._torn and not self._cut_back():
            return False
        fd = self._fd
        try:
            n = os.write(fd, data)
            while n < len(data):  # a short write: the rest, or the error that cut it short
                more = os.write(fd, memoryview(data)[n:])
                if not more:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                n += more
            if self.fsync == "always":
                os.fsync(fd)
        except OSError as err:
            self._failed(err)
            return False
        self.size += len(data)
        self._written += len(data)
        return True

    def _failed(self, err: OSError) -> None:
        reason = err.strerror or str(err)
        if self.write_error is None:
            logger.warning("Error writing to the AOF file: %s", reason)
        self.write_error = reason
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        self._cut_back()

    def _cut_back(self) -> bool:
        """Cut the file back to its whole records after a failed write."""
        try:
            os.ftruncate(self._fd, self.size)
        except OSError as err:
            if not self._torn:
                logger.warning("Could not remove short write from the append-only file (ftruncate: %s)", err)
            self._torn = True
            return False
        self._torn = False
        return True

    def retry(self) -> None:
        """While the last write failed: once a second, try a probe; writes are accepted again once it goes through."""
        if self.write_error is None or time.monotonic() < self._retry_at:
            return
        if self._append(PROBE_RECORD):
            self.write_error = None
            logger.warning("AOF write error looks solved, Redis can write again.")

    # ---- fsync ----------------------------------------------------------------------

    def _fsync_loop(self) -> None:
        while not self._stop.wait(FSYNC_INTERVAL):
            self._fsync_once()

    def _fsync_once(self) -> None:
        """fsync the file if it was written since the last fsync (on the fsync thread)."""
        with self._lock:
            fd, written = self._fd, self._written
            retired, self._retired = self._retired, []
        for old in retired:  # files replaced by a rewrite: closed here, where they may still be in use
            try:
                os.fsync(old)
            except OSError:
                pass
            os.close(old)
        if fd < 0 or written == self._synced:
            return
        try:
            os.fsync(fd)
        except OSError as err:
            if self.fsync_error is None:
                logger.warning("Error syncing the AOF file: %s", err.strerror or err)
            self.fsync_error = err.strerror or str(err)
            return
        self._synced = written
        if self.fsync_error is not None:
            self.fsync_error = None
            logger.warning("AOF fsync error looks solved, Redis can write again.")

    # ---- rewriting -------------------------------------------------------------------

    @property
    def rewriting(self) -> bool:
        """Whether a rewrite child is running."""
        return self._child is not None

    def rewrite_started_at(self) -> float | None:
        return None if self._child is None else self._child[3]

    def rewrite(self, records: Callable[[], Iterable[Command]]) -> bool:
        """Start a rewrite: a child writes `records()` to a new file. `False` if one runs already, or fork failed."""
        if self._child is not None:
            return False
        tmp = f"{self._temp_prefix()}{os.getpid()}.aof"
        offset = self.size
        parent = os.getpid()
        prctl = _prctl()  # looked up before the fork: the child imports nothing
        try:
            pid = os.fork()
        except OSError as err:
            logger.warning("Can't rewrite append only file in background: fork: %s", err.strerror or err)
            self._rewrite_failed()
            return False
        if pid == 0:  # the child: write, fsync, and leave without running any of the parent's clean-up
            code = 1
            try:
                _write_snapshot(tmp, records, parent, prctl)
                code = 0
            except BaseException as err:
                try:
                    os.write(2, f"redis clone: AOF rewrite failed: {err}\n".encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        self._child = (pid, tmp, offset, time.monotonic())
        logger.info("Background append only file rewriting started by pid %d", pid)
        return True

    def _rewrite_failed(self) -> None:
        self.last_rewrite_ok = False
        self._no_auto_until = time.monotonic() + AUTO_REWRITE_PAUSE

    def due_for_rewrite(self) -> bool:
        """Redis's auto-aof-rewrite rule: at least the minimum size, grown by the percentage since the last rewrite."""
        if self._child is not None or not self.rewrite_percentage or self._fd < 0 or self.size < self.rewrite_min_size:
            return False
        if time.monotonic() < self._no_auto_until:
            return False  # the last rewrite failed: not again at once
        growth = self.size * 100 // (self.base_size or 1) - 100
        return growth >= self.rewrite_percentage

    def poll_rewrite(self) -> None:
        """If the rewrite child has finished, put its file in place (on the loop's thread, from `tick`)."""
        child = self._child
        if child is None:
            return
        pid, tmp, offset, started = child
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 1 << 8
        if done == 0:
            return
        self._child = None
        self.last_rewrite_secs = int(time.monotonic() - started)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            logger.info("Background AOF rewrite terminated with success")
            if self._install(tmp, offset):
                self.last_rewrite_ok = True
            else:
                self._rewrite_failed()
        else:
            logger.warning("Background AOF rewrite terminated with error (status %d)", status)
            self._rewrite_failed()
        _unlink(tmp)

    def _install(self, tmp: str, offset: int) -> bool:
        """Append what was logged since the child forked, fsync, rename over the AOF, and write to it from now on."""
        new = -1
        try:
            new = os.open(tmp, os.O_RDWR | os.O_APPEND)
            diff = 0
            if self._fd >= 0:
                while offset + diff < self.size:
                    chunk = os.pread(self._fd, min(_READ_CHUNK, self.size - offset - diff), offset + diff)
                    if not chunk:
                        raise OSError(errno.EIO, "the AOF is shorter than it was written")
                    _write_all(new, chunk)
                    diff += len(chunk)
            os.fsync(new)
            os.rename(tmp, self.path)
            _fsync_folder(self.path)
        except OSError as err:
            logger.warning("Background AOF rewrite failed: %s", err.strerror or err)
            if new >= 0:
                os.close(new)
            return False
        logger.info("Residual parent diff successfully flushed to the rewritten AOF (%.2f MB)", diff / (1 << 20))
        if self._fd < 0:  # BGREWRITEAOF with appendonly no: the file is written, not kept open
            os.close(new)
        else:
            size = os.fstat(new).st_size
            with self._lock:
                old, self._fd = self._fd, new
                if self._fsync_thread is not None:
                    self._retired.append(old)  # closed by the fsync thread, which may be using it
                    self._synced = self._written  # the new file was just fsync'ed
                else:
                    os.close(old)
            self.size = self.base_size = size
            self._torn = False
        self.rewrites += 1
        logger.info("Background AOF rewrite finished successfully")
        return True

    def _kill_rewrite(self) -> None:
        child = self._child
        if child is None:
            return
        self._child = None
        logger.warning("There is a child rewriting the AOF. Killing it!")
        try:
            os.kill(child[0], signal.SIGKILL)
            os.waitpid(child[0], 0)
        except OSError:
            pass
        _unlink(child[1])

    def close(self) -> None:
        """Stop a rewrite, write what is buffered, fsync and close the file."""
        self._kill_rewrite()
        if self._fsync_thread is not None:
            self._stop.set()
            self._fsync_thread.join()
            self._fsync_thread = None
        if self._fd < 0:
            return
        try:
            if self.write_error is None:
                self.write()
            os.fsync(self._fd)
        except OSError as err:
            logger.warning("fsync of the AOF at shutdown failed: %s", err.strerror or err)
        finally:
            os.close(self._fd)
            self._fd = -1
            for old in self._retired:
                os.close(old)
            self._retired = []


def _write_snapshot(
    path: str, records: Callable[[], Iterable[Command]], parent: int, prctl: Callable[..., int] | None
) -> None:
    """In the rewrite child: write `records()` to `path` and fsync it."""
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a SIGKILL'ed server leaves no writer behind
    if os.getppid() != parent:
        return  # the parent died before that took effect
    _close_inherited()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        parts: List[bytes] = []
        size = 0
        for args in records():
            record = encode_command(args)
            parts.append(record)
            size += len(record)
            if size >= _READ_CHUNK:
                _write_all(fd, b"".join(parts))
                parts.clear()
                size = 0
        _write_all(fd, b"".join(parts))
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        wrote = os.write(fd, view)  # not inside the slice: compiled by mypyc, that would call it twice
        view = view[wrote:]


_PRCTL: List[Callable[..., int] | None] = []


def _prctl() -> Callable[..., int] | None:
    """Linux's prctl(2) through ctypes, where there is one."""
    if not _PRCTL:
        try:
            import ctypes

            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError, ImportError):
            _PRCTL.append(None)
    return _PRCTL[0]


def _close_inherited() -> None:
    """Close the descriptors the child inherited (sockets above all: a client the parent closes must see it close)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, 65536)
        return
    for fd in fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def _fsync_folder(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
