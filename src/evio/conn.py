"""The handles the loop gives to events: `Conn` for a connection, `Server` for the server."""

from __future__ import annotations

import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Tuple, Union

if TYPE_CHECKING:
    from .events import Options

#: An address as the socket module reports it: a tuple for TCP, a path for unix.
SockAddr = Union[Tuple[Any, ...], str]


class Conn:
    """One accepted connection.

    `id` is unique for the server's life. `remote_addr` and `local_addr` are
    as the socket module reports them; `addr_index` is the position, in
    `serve`'s arguments, of the address that accepted it. `context` is a free
    slot for the user.
    """

    __slots__ = (
        "_deadline",
        "_delivered",
        "_fd",
        "_out",
        "_outlen",
        "_recv_into",
        "_reuse",
        "_send",
        "_since",
        "_sock",
        "_state",
        "_wake",
        "_written",
        "addr_index",
        "context",
        "id",
        "local_addr",
        "remote_addr",
    )

    def __init__(
        self,
        id: int,
        sock: socket.socket,
        remote_addr: SockAddr,
        local_addr: SockAddr,
        addr_index: int,
        wake: Callable[[int], bool],
    ) -> None:
        self.id = id
        self.remote_addr = remote_addr
        self.local_addr = local_addr
        self.addr_index = addr_index
        self.context: Any = None
        self._sock = sock
        self._fd = sock.fileno()
        # Bound methods kept once per connection: the hot path then skips an
        # attribute look-up on the socket per event.
        self._recv_into = sock.recv_into
        self._send = sock.send
        #: Output the socket did not take yet, in chunks; `None` when there is none.
        self._out: deque[memoryview] | None = None
        self._outlen = 0
        #: OPEN, CLOSING (flush then close), DETACHING (flush then detach) or GONE.
        self._state = 0
        #: While closing: when to look at the peer's progress next, and when it last made some.
        self._deadline = 0.0
        self._since = 0.0
        #: While closing: bytes handed to the kernel since, and how many of them the peer had taken.
        self._written = 0
        self._delivered: int | None = None
        self._reuse = False
        self._wake = wake

    def wake(self) -> bool:
        """Ask for `Events.data(conn, None)` soon; safe from any thread.

        Returns `False` when the connection is closed, closing or detached.
        Several wakes before the loop gets to them may fire `data` once.
        """
        return self._wake(self.id)

    def __repr__(self) -> str:
        return f"<evio.Conn id={self.id} remote={self.remote_addr!r} index={self.addr_index}>"


def apply_options(conn: Conn, opts: Options) -> None:
    """Set the socket options that `opts` asks for on `conn`'s socket."""
    conn._reuse = bool(opts.reuse_input_buffer)
    ka = opts.tcp_keepalive
    if ka is None:
        return
    sock = conn._sock
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError(f"Options.tcp_keepalive needs a TCP connection, not {conn.local_addr!r}")
    secs = max(1, round(ka))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux and most BSDs name the idle time TCP_KEEPIDLE; macOS names it TCP_KEEPALIVE.
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    if idle is not None:
        sock.setsockopt(socket.IPPROTO_TCP, idle, secs)
    if hasattr(socket, "TCP_KEEPINTVL"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, secs)


class Server:
    """The running server, given to `Events.serving`.

    `addrs` holds the bound addresses in `serve`'s argument order, as
    `getsockname()` reports them (the real port where port 0 was asked for).
    `num_loops` is the number of event loops (1).
    """

    __slots__ = ("_wake", "addrs", "num_loops")

    def __init__(self, addrs: tuple[SockAddr, ...], wake: Callable[[int], bool]) -> None:
        self.addrs = addrs
        self.num_loops = 1
        self._wake = wake

    def wake(self, id: int) -> bool:
        """Ask for `Events.data(conn, None)` on connection `id` soon; safe from any thread.

        Returns `False` for an unknown, closed, closing or detached id.
        """
        return self._wake(id)

    def __repr__(self) -> str:
        return f"<evio.Server addrs={self.addrs!r}>"
