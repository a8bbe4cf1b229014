"""`Conn`, the handle the loop gives to events for a connection (`evio.server` has the server's).

Every method is safe from any thread. It checks what it can check at once
(the state, the arguments), then either does its work through the loop, on
the loop's thread, or posts the call to the loop's inbox from any other
thread, where the loop carries it out in call order.
"""

from __future__ import annotations

import socket
from collections import deque
from threading import get_ident
from typing import TYPE_CHECKING, Any, Callable, Tuple, Union

from .checks import Buffer, as_buffer
from .state import READING, WRITABLE, State, Trigger, move

if TYPE_CHECKING:
    from .loop import Loop
    from .server import Server
    from .timers import Timer

#: An address as the socket module reports it: a tuple for TCP, a path for unix.
SockAddr = Union[Tuple[Any, ...], str]


class Conn:
    """One connection, accepted by a listener or made by `Server.dial`.

    `id` is unique for the server's life. `remote_addr` and `local_addr` are
    as the socket module reports them (for a dialled connection that is not
    up yet, `remote_addr` is the address dialled and `local_addr` is empty).
    `addr_index` is the position, in `serve`'s arguments, of the address that
    accepted it, or -1 for a dialled one. `outbound` is true for a dialled
    connection. `server` is the `Server` it belongs to. `context` is a free
    slot for the user.

    Every method is safe from any thread: on the loop's thread it takes
    effect at once, from another it is queued and carried out promptly, in
    call order.
    """

    __slots__ = (
        "_close_posted",
        "_close_timer",
        "_delivered",
        "_dial",
        "_eof_sent",
        "_fd",
        "_half_close",
        "_hold",
        "_idle",
        "_idle_queued",
        "_idle_timer",
        "_loop",
        "_mask",
        "_max_pending",
        "_out",
        "_outlen",
        "_paused",
        "_posted",
        "_recv_into",
        "_reuse",
        "_seen",
        "_send",
        "_shut",
        "_since",
        "_sock",
        "_state",
        "_wake_posted",
        "_written",
        "addr_index",
        "context",
        "id",
        "local_addr",
        "outbound",
        "remote_addr",
        "server",
    )

    def __init__(self, loop: Loop, id: int, remote_addr: SockAddr, addr_index: int, outbound: bool) -> None:
        #: Unique for the server's life.
        self.id = id
        #: The peer's address as the socket module reports it; for a dial not up yet, the address dialled.
        self.remote_addr = remote_addr
        #: This end's address as the socket module reports it; empty for a dial not up yet.
        self.local_addr: SockAddr = "" if isinstance(remote_addr, str) else ("", 0)
        #: The position, in `serve`'s arguments, of the address that accepted it; -1 for a dial.
        self.addr_index = addr_index
        #: True for a connection made by `Server.dial`.
        self.outbound = outbound
        #: The `Server` this connection belongs to.
        self.server: Server = loop.server
        #: A free slot for the user; `None` at first.
        self.context: Any = None
        self._loop = loop
        self._state = State.CONNECTING if outbound else State.OPEN
        self._sock: socket.socket | None = None
        self._fd = -1
        self._recv_into: Callable[[Any], int] = _not_connected
        self._send: Callable[[Any], int] = _not_connected
        #: The poller interest registered for the socket: 0 (not registered), IN, OUT or both.
        self._mask = 0
        #: Output the socket did not take yet, in chunks; `None` when there is none.
        self._out: deque[memoryview] | None = None
        self._outlen = 0
        #: Bytes other threads wrote that the loop has not queued yet (so `pending` counts them).
        self._posted = 0
        #: Whether the pending output holds back reading: it does when this connection's own events returned it.
        self._hold = False
        self._paused = False
        self._eof_sent = False
        #: Another thread asked to close or shut the write side: its later writes are refused;
        #: and asked to close: its later close() too.
        self._shut = False
        self._close_posted = False
        #: The last call queued for this connection from another thread is a wake: a later wake joins
        #: it (`Inbox.post`), so however fast threads wake a connection, one wake waits between two
        #: other calls.
        self._wake_posted = False
        #: While dialling: the `Dial` in progress (`evio.dialer`).
        self._dial: Any = None
        #: When the connection last received or sent bytes, on the loop's clock.
        self._seen = 0.0
        self._idle: float | None = None
        self._idle_timer: Timer | None = None
        self._idle_queued = -1  # the kernel's send queue at the last idle check, while output is pending
        self._max_pending: int | None = None
        self._half_close = False
        self._reuse = False
        #: While closing: the timer that looks at the peer's progress, when it last made some,
        #: bytes handed to the kernel since closing began, and how many of them the peer had taken.
        self._close_timer: Timer | None = None
        self._since = 0.0
        self._written = 0
        self._delivered: int | None = None

    def _attach(self, sock: socket.socket) -> None:
        """Bind this handle to its connected socket."""
        self._sock = sock
        self._fd = sock.fileno()
        # Bound methods kept once per connection: the hot path then skips an
        # attribute look-up on the socket per event.
        self._recv_into = sock.recv_into
        self._send = sock.send

    def write(self, out: Buffer) -> bool:
        """Send `out`, behind whatever is pending, as if one of this connection's events had returned it.

        Returns `False` (and sends nothing) when the connection is closed,
        closing or detached, or its write side was shut with `write_eof`. A
        mutable buffer is copied before this returns.
        """
        if self._state not in WRITABLE or self._shut:
            return False
        if type(out) is not bytes:
            out = as_buffer(self, out)
        loop = self._loop
        if get_ident() == loop._thread_id:  # on the loop's thread: at once (the common case, kept short)
            loop._write(self, out, False)
            return self._state is not State.GONE
        data = out if type(out) is bytes else bytes(out)  # a mutable buffer is copied now
        return loop.post(loop.posted_write, self, data, len(data))

    def close(self) -> bool:
        """Close as `Action.CLOSE` does: pending output is written first, then `closed(conn, None)` fires.

        Returns `False` when the connection is already closed, closing or
        detached (after `write_eof`, it closes at once, without waiting for
        the peer's end of input).
        """
        return self._request(Trigger.CLOSE, self._loop.close)

    def abort(self) -> bool:
        """Close at once, dropping what is pending (asyncio's name): for a peer that will not read.

        `closed(conn, None)` fires once the running event returns. Unread input
        makes the kernel send a reset. Returns `False` when the connection is
        already closed or detached.
        """
        if self._state is State.GONE or self._state is State.DETACHING:
            return False
        loop = self._loop
        if loop.on_loop():
            loop.abort(self)
            return True
        self._shut = self._close_posted = True
        return loop.post(loop.abort, self, None)

    def write_eof(self) -> bool:
        """Once pending output is written, shut down the write side: the peer reads end of input.

        The connection keeps reading until the peer closes too, then closes
        with `closed(conn, None)`. Returns `False` when it is closed, closing,
        detached or already shut for writing.
        """
        return self._request(Trigger.WRITE_EOF, self._loop.write_eof)

    def _request(self, trigger: Trigger, action: Callable[[Conn, object], None]) -> bool:
        """Ask for `close` or `write_eof`: at once on the loop's thread, else through its inbox.

        The state table says whether the request means something now; from
        another thread, what this thread asked before (queued, not yet carried
        out) counts too, so its calls keep their order.
        """
        if move(self._state, trigger) is None or self._close_posted or (trigger is Trigger.WRITE_EOF and self._shut):
            return False
        loop = self._loop
        if loop.on_loop():
            action(self, None)
            return True
        self._shut = True  # this thread's later writes (and write_eof) are refused, in call order
        self._close_posted = trigger is Trigger.CLOSE
        return loop.post(action, self, None)

    def pause_reading(self) -> None:
        """Stop reading this connection's input until `resume_reading` (idempotent).

        The kernel's buffer fills and TCP holds the peer back. A paused
        connection still writes, and reports a reset or end of input when it
        resumes.
        """
        self._set_paused(True)

    def resume_reading(self) -> None:
        """Read this connection's input again after `pause_reading` (idempotent)."""
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        loop = self._loop
        if loop.on_loop():
            loop.set_paused(self, paused)
        else:
            loop.post(loop.set_paused, self, paused)

    def is_closing(self) -> bool:
        """Whether the connection is closed, closing or detached, or its write side is shut (asyncio's name)."""
        return self._state not in WRITABLE or self._shut

    def is_reading(self) -> bool:
        """Whether the loop reads this connection's input: not paused, and not at or past its end."""
        return self._state in READING and not self._paused

    @property
    def pending(self) -> int:
        """Bytes written to this connection that the socket has not taken yet (from another thread, a recent value)."""
        return self._outlen + self._posted

    def wake(self) -> bool:
        """Ask for `Events.data(conn, None)` soon; safe from any thread.

        Returns `False` when the connection is connecting, closed, closing or
        detached. Several wakes before the loop gets to them may fire `data`
        once.
        """
        return self._loop.wake(self.id)

    def __repr__(self) -> str:
        kind = "outbound" if self.outbound else f"index={self.addr_index}"
        return f"<evio.Conn id={self.id} remote={self.remote_addr!r} {kind} {self._state.name}>"


def _not_connected(_buf: Any) -> int:
    raise OSError("not connected")
