"""`Server`, the handle the loop gives to events for the server: dial, timers, shutdown.

Every method is safe from any thread, as `Conn`'s are. Nothing here is on a
per-byte path, so the compiled build leaves this module interpreted: its
arguments are then checked here, with messages naming the argument, rather
than by mypyc's own terser type checks.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .checks import seconds
from .conn import Conn, SockAddr

if TYPE_CHECKING:
    from .loop import Loop
    from .timers import Timer


class Server:
    """The running server, given to `Events.serving` and reachable as `Conn.server`.

    `addrs` holds the bound addresses in `serve`'s argument order, as
    `getsockname()` reports them (the real port where port 0 was asked for).
    `num_loops` is the number of event loops (1). `conns` maps the id of each
    open connection (accepted or dialled) to its `Conn`: read it on the loop's
    thread, or copy it (`dict(server.conns)`) from another.

    Every method is safe from any thread.
    """

    __slots__ = ("_loop", "addrs", "conns", "num_loops")

    def __init__(self, loop: Loop, addrs: tuple[SockAddr, ...], conns: dict[int, Conn]) -> None:
        self._loop = loop
        #: The bound addresses in `serve`'s order, as `getsockname()` reports them.
        self.addrs = addrs
        #: The number of event loops (1).
        self.num_loops = 1
        #: The open connections by id; one leaves when its `closed` (or `detached`) fires, never mid-event.
        self.conns: Mapping[int, Conn] = MappingProxyType(conns)

    def dial(self, addr: str, *, timeout: float | None = 10.0, context: Any = None) -> Conn:
        """Connect to `addr` on this loop; the `Conn` comes back at once, with `context` set.

        `addr` uses `serve`'s syntax without options (`tcp://host:port`,
        `tcp4://`, `tcp6://`, `unix://path`); a malformed one is a `ValueError`.
        When the connection is made, `opened(conn)` fires as for an accepted
        one (with `addr_index == -1`); when it cannot be made within `timeout`
        seconds (`None`: no limit), `closed(conn, err)` fires with the
        `OSError` or `TimeoutError` and `opened` never does. Writes made
        before the connection is up are sent once it is. A host name is
        resolved off the loop's thread; its addresses are tried in order.
        Raises `RuntimeError` once the server is shutting down.
        """
        loop = self._loop
        address = loop.dialer.parse(addr)
        if timeout is not None and not seconds("dial()'s timeout", timeout) > 0:
            raise ValueError(f"dial()'s timeout must be a positive number of seconds or None, not {timeout!r}")
        self._refuse_if_stopping(f"dial {addr!r}")
        c = loop.new_conn(loop.dialer.target(address), -1, True)
        c.context = context
        if loop.on_loop():
            loop.dial(c, (address, timeout))
        elif not loop.post(loop.dial, c, (address, timeout)):
            self._refuse_if_stopping(f"dial {addr!r}", force=True)
        return c

    def after(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Call `callback()` on the loop's thread once, `delay` seconds from now.

        Returns a `Timer` whose `cancel()` stops it (from any thread). An
        exception raised by `callback` is logged and the loop goes on; what it
        returns is ignored (an `Action` is logged: use `shutdown()` or a
        connection's methods). Timers still pending at shutdown do not run.
        Raises `RuntimeError` once the server is shutting down.
        """
        secs = seconds("after()'s delay", delay)
        if not callable(callback):
            raise TypeError(f"after() needs a callable, not {callback!r}")
        self._refuse_if_stopping("schedule a timer")
        loop = self._loop
        timer = loop.new_timer(secs, callback)
        if loop.on_loop():
            loop.add_timer(None, timer)
        elif not loop.post(loop.add_timer, None, timer):
            self._refuse_if_stopping("schedule a timer", force=True)
        return timer

    def shutdown(self) -> None:
        """Stop serving, as `Action.SHUTDOWN` does; from any thread or a signal handler, and idempotent."""
        loop = self._loop
        if loop.on_loop():
            loop.shutdown()
        else:
            loop.post(loop.shutdown, None, None)

    def wake(self, id: int) -> bool:
        """Ask for `Events.data(conn, None)` on connection `id` soon; safe from any thread.

        Returns `False` for an unknown id, or a connection that is not open.
        """
        return self._loop.wake(id)

    def _refuse_if_stopping(self, what: str, force: bool = False) -> None:
        if force or self._loop.stopping:
            raise RuntimeError(f"cannot {what}: the server is shutting down")

    def __repr__(self) -> str:
        return f"<evio.Server addrs={self.addrs!r}>"
