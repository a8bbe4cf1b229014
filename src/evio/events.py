"""The user-facing vocabulary: the `Events` to override, `Action` and `Options`."""

from __future__ import annotations

import enum
import math
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, Union

if TYPE_CHECKING:
    from .conn import Conn
    from .server import Server


def _no_attrs(*attrs: str, **kwattrs: object) -> Callable[[Any], Any]:
    """What `mypy_extensions.mypyc_attr` does at run time: nothing (mypyc reads it when compiling)."""
    return lambda cls: cls


try:
    from mypy_extensions import mypyc_attr
except ImportError:  # only mypyc needs it, when it compiles this module
    mypyc_attr = _no_attrs


#: What an event may hand back to be written: `None` means nothing.
Out = Union[bytes, bytearray, memoryview, None]


class Action(enum.IntEnum):
    """What the loop should do after an event returns."""

    #: Carry on.
    NONE = 0
    #: Write what is pending, stop watching the socket, hand it to `Events.detached`.
    DETACH = 1
    #: Write what is pending, then close the connection.
    CLOSE = 2
    #: Close every connection and listener; `serve` returns.
    SHUTDOWN = 3


@dataclass(frozen=True)
class Options:
    """Per-connection settings, returned from `Events.opened` (for accepted and dialled connections).

    `tcp_keepalive`: seconds of idleness before keep-alive probes start (and
    between probes); `None` leaves the OS default (off).
    `reuse_input_buffer`: when true, `Events.data` gets a `memoryview` into a
    buffer the loop reuses, valid only during the call (no copy per read).
    `idle_timeout`: seconds; a connection that neither received nor sent a
    byte for that long is closed with `closed(conn, TimeoutError(...))`
    (time spent paused with `Conn.pause_reading` does not count).
    `max_pending`: bytes; a write that would leave more than this many bytes
    pending closes the connection at once with `closed(conn, BufferError(...))`.
    `half_close`: when true, the peer's end of input fires `data(conn, b"")`
    and the connection stays open for writing until it is closed; when false,
    end of input closes it once pending output is written.
    """

    tcp_keepalive: float | None = None
    reuse_input_buffer: bool = False
    idle_timeout: float | None = None
    max_pending: int | None = None
    half_close: bool = False

    def __post_init__(self) -> None:
        for name in ("tcp_keepalive", "idle_timeout"):
            secs = getattr(self, name)
            if secs is None:
                continue
            if isinstance(secs, bool) or not isinstance(secs, (int, float)):
                raise TypeError(f"Options.{name} must be seconds or None, not {secs!r}")
            if not (math.isfinite(secs) and secs > 0):
                raise ValueError(f"Options.{name} must be a positive number of seconds, not {secs!r}")
        limit = self.max_pending
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"Options.max_pending must be a number of bytes or None, not {limit!r}")
            if limit < 0:
                raise ValueError(f"Options.max_pending must be at least 0 bytes, not {limit!r}")


#: What `opened` may return: `out`, `(out, action)` or `(out, options, action)`.
OpenedResult = Union[Out, Tuple[Out, Optional[Action]], Tuple[Out, Optional[Options], Optional[Action]]]
#: What `data` may return: `out` or `(out, action)`.
DataResult = Union[Out, Tuple[Out, Optional[Action]]]
#: What `tick` may return: a delay in seconds, `(delay, action)`, or `None` to stop ticking.
TickResult = Union[float, Tuple[float, Optional[Action]], None]


# Compiled with mypyc, a class is closed to Python subclasses unless it says otherwise.
@mypyc_attr(allow_interpreted_subclasses=True)
class Events:
    """Subclass this and override the events you need.

    Every event runs on the thread that called `serve`, and may return `None`
    for "nothing to do". An event a subclass does not override is never
    called, so it costs nothing. Overriding `__init__` without calling
    `super().__init__()` is fine.

    `max_connections` (a class attribute, or set on the instance before
    `serve`): while that many accepted connections are open, the listeners
    stop accepting; new clients wait in the kernel's backlog until one
    closes. Dialled connections do not count. `None`: no limit.

    `portable` (likewise): `True` runs the loop on the portable `selectors`
    backend even where epoll exists, as an address's ``-net`` suffix does;
    for a loop with no address (one that only dials out), the way to ask for it.
    """

    max_connections: int | None = None
    portable: bool = False

    def serving(self, server: Server) -> Action | None:
        """Fires once, when every listener is ready to accept (with none, when the loop starts)."""
        return None

    def opened(self, conn: Conn) -> OpenedResult:
        """Fires when a connection was accepted, or a dial connected (`conn.outbound`).

        Return `out`, `(out, action)` or `(out, options, action)`: `out` is
        written at once (for a dial, after what was written before it was
        up); `options` (an `Options` or `None`) applies to this connection.
        """
        return None

    def closed(self, conn: Conn, err: BaseException | None) -> Action | None:
        """Fires when a connection is gone, once for every connection `opened` saw or `dial` returned.

        `err` is `None` for a clean close or end of input, else the exception:
        a reset, a time-out (`TimeoutError`), `max_pending` passed
        (`BufferError`), a dial that failed (an `OSError` naming the address),
        or what one of this connection's events raised.
        """
        return None

    def detached(self, conn: Conn, sock: socket.socket) -> Action | None:
        """Fires after `Action.DETACH`, once pending output is written.

        `sock` is in blocking mode and no longer watched: the caller owns it
        and must close it. `closed` does not fire for a detached connection.
        When this event is not overridden, or raises, the socket is closed.
        """
        return None

    def data(self, conn: Conn, data: bytes | memoryview | None) -> DataResult:
        """Fires when bytes arrived, with `None` after a wake, and with `b""` at end of input
        on a connection whose options ask for `half_close`.

        Return `out` or `(out, action)`. While output an event returned is
        unsent, the connection is not read (output from `Conn.write` does not
        hold reading back).
        """
        return None

    def prewrite(self, conn: Conn, amount: int) -> Action | None:
        """Fires before each write attempt of `amount` bytes.

        `Action.CLOSE` skips the write and closes at once, dropping what was
        pending.
        """
        return None

    def postwrite(self, conn: Conn, amount: int, remaining: int) -> Action | None:
        """Fires after each write attempt: `amount` written, `remaining` still buffered.

        `Action.CLOSE` closes after this attempt, dropping what remains.
        """
        return None

    def tick(self) -> TickResult:
        """Fires right after `serving`, then again after the delay it returns.

        Return the delay in seconds (negative counts as 0), `(delay, action)`,
        or `None` to stop ticking. `(delay, Action.SHUTDOWN)` stops the server
        at once.
        """
        return None


def overridden(events: Events, name: str) -> bool:
    """Whether `events` replaces the base class's no-op event `name` (in its class, or on the instance).

    Looked up on the class, not through a bound method: compiled with mypyc,
    the base's methods are built-in methods, which have no `__func__`.
    """
    try:
        if name in vars(events):
            return True
    except TypeError:  # no instance dictionary
        pass
    return getattr(type(events), name) is not getattr(Events, name)
