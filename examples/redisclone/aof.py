"""The append-only file: every write command in RESP, replayed at start, fsync'ed once a second."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, List

from .resp import Command, PureReader

logger = logging.getLogger("redisclone")

#: How often buffered writes reach the disk, at most this many seconds apart.
FSYNC_INTERVAL = 1.0
_READ_CHUNK = 1 << 20


class AOFError(Exception):
    """The file is not an append-only file this server can load."""


def encode_command(args: Command) -> bytes:
    """`args` as a RESP array of bulk strings: how a command is stored."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class AppendOnlyFile:
    """Write commands logged in RESP to `path`.

    `log` buffers a command; `write` hands the buffer to the OS, before the
    replies to those commands go out, so a killed process loses nothing that
    was acknowledged; `sync` fsyncs at most `FSYNC_INTERVAL` after a write, so
    a power cut loses at most about a second.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._buf: List[bytes] = []
        self._dirty = False
        self._synced_at = time.monotonic()

    def load(self, replay: Callable[[Command], None]) -> int:
        """Replay the file's commands through `replay`, then open it for appending; returns the count.

        A command cut short at the end (a crash mid-write) is logged, and the
        file is truncated to the last whole command. Malformed content
        elsewhere raises `AOFError` and leaves the file as it is.
        """
        count = 0
        size = 0
        reader = PureReader()
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                while True:
                    chunk = f.read(_READ_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    for cmd in reader.feed(chunk):
                        replay(cmd)
                        count += 1
                    if reader.error is not None:
                        raise AOFError(
                            f"{self.path}: bad append-only file after {count} commands "
                            f"(Protocol error: {reader.error.decode('latin-1')}); not starting"
                        )
            if reader.pending:
                good = size - reader.pending
                logger.warning(
                    "%s: the last command is incomplete (%d bytes at offset %d, a crash mid-write?); "
                    "cutting it off and loading the %d commands before it",
                    self.path,
                    reader.pending,
                    good,
                    count,
                )
                os.truncate(self.path, good)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return count

    def log(self, args: Command) -> None:
        """Buffer a write command."""
        self._buf.append(encode_command(args))

    @property
    def pending(self) -> bool:
        """Whether commands were logged and not written yet."""
        return bool(self._buf)

    def write(self) -> None:
        """Hand the buffered commands to the OS."""
        if not self._buf:
            return
        data = memoryview(b"".join(self._buf))
        self._buf.clear()
        while data:
            data = data[os.write(self._fd, data) :]
        self._dirty = True

    def sync(self, force: bool = False) -> None:
        """fsync what was written, if the last fsync is `FSYNC_INTERVAL` old (or `force`)."""
        self.write()
        now = time.monotonic()
        if self._dirty and (force or now - self._synced_at >= FSYNC_INTERVAL * 0.9):
            os.fsync(self._fd)
            self._dirty = False
            self._synced_at = now
        elif not self._dirty:
            self._synced_at = now

    def close(self) -> None:
        """Write, fsync and close the file."""
        if self._fd < 0:
            return
        try:
            self.sync(force=True)
        finally:
            os.close(self._fd)
            self._fd = -1
