"""The event loop: `serve`, and the one thread that runs every event.

Design notes
------------
*Level-triggered.* The poller reports a socket for as long as it is ready,
so the loop can read once per readiness event (one `recv_into`) and leave
the rest for the next turn: a busy connection cannot starve the others, and
nothing is lost if an event closes or detaches a connection mid-stream.
Edge-triggered polling would force a drain-until-EAGAIN loop per event and
an extra failing syscall each time.

*Write at once.* What an event returns, or `Conn.write` is given, is sent
before the loop moves on. A request/response protocol almost always fits in
the socket buffer, so the common case costs one `send` and no `modify` of
the poller. Only a short write keeps the rest and asks the poller for
writability. The rest is kept as a queue of chunks of at most `SEND_CHUNK`
bytes: `bytes` are sliced without a copy, mutable buffers are copied once,
and no `send` is handed a huge buffer (PyPy copies the whole buffer it is
given on every call).

*Replies hold back reading.* While output that a connection's own events
returned is unsent, the loop does not read from that connection, only waits
for it to drain. A client that sends but does not read is then held back by
TCP's own flow control, and replies keep their order. Output written with
`Conn.write` does not pause reading: a proxy writes one side's input to the
other, and if pending output on a side stopped that side's reading, two
peers that both write before they read would wait for each other for ever.
Such programs pace themselves with `pending`, `pause_reading` and
`resume_reading`, and bound a peer that does not read with
`Options.max_pending`.

*Nothing fires inside another event.* An event may write to, close or pause
any connection. Writes and pauses happen at once; whatever would fire an
event (a close, a `closed` after a failed write) is deferred until the
running event returns. Calls from other threads go through the `Inbox` and
are carried out in call order, one wake of the loop per batch.

*Closing without a reset.* Closing a socket that still has unread input
makes the kernel send a reset, and a reset makes the peer's kernel discard
replies it has not handed to the application yet. So `Action.CLOSE` ends
with a lingering close: shut down our side, then read and discard until the
peer closes too (or `LINGER_TIMEOUT` passes). `closed` fires when our side
is done; the lingering is invisible to events.

*One heap of timers.* `tick`, `Server.after`, idle and connect time-outs,
the closing time-out, lingering sockets and the pause after running out of
descriptors are all entries in one `TimerHeap`; the poll waits until the
earliest. An idle time-out costs one timer per time-out period, not per
byte: a read stamps the connection with the loop's clock, and the timer,
when it fires, either closes the connection or moves itself to the new
deadline.

*Connection states* (`evio.state` holds the table; `_settle` does what a
state asks once output has drained; DETACH leads to DETACHING the way CLOSE
leads to CLOSING)::

          dial()                                   accept
            |                                        |
            v               connected                v
        CONNECTING ------------------------------> OPEN
          |    |                                 /   |   \\
          |    | write_eof            write_eof /    |    \\ peer EOF, with half_close
          |    v                               v     |     v
          |  HALF_CLOSED_LOCAL <---------------'     |   HALF_CLOSED_REMOTE
          |    |                                     |     |
    close |    | close, peer EOF      close, or peer |     | close, write_eof
          |    |                      EOF without    |     |
          v    v                      half_close     v     v
        ================================ CLOSING =============
                                            |
                                            | output drained: closed(conn, None)
                                            v
        failed, reset, timed out, aborted -> GONE

*Hot path.* Poll, receive, `data`, send: attribute look-ups are hoisted into
locals, events the user did not override are never called, and a reply of
`bytes` goes straight to `send` without being copied. A connection whose
registered interest is anything but "input only" (output pending, paused,
connecting) takes the slow path, `_ready`.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import math
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, List, Tuple

from .acceptor import Acceptor
from .addresses import Address, parse
from .checks import Buffer, bad_return, check_action, check_out
from .conn import Conn, SockAddr
from .dialer import Dialer
from .events import Action, Events, Options, overridden
from .inbox import Inbox
from .linger import Lingering
from .listeners import Listener, bind_all
from .pollers import ERR, IN, OUT, Poller, make_poller
from .server import Server
from .state import READING, WAKEABLE, WRITABLE, State, Trigger, move
from .timers import Timer, TimerHeap

try:
    import fcntl
    import termios
except ImportError:  # not POSIX
    fcntl = termios = None  # type: ignore[assignment]

logger = logging.getLogger("evio")

#: A closing connection whose peer reads nothing for this long is dropped.
CLOSE_TIMEOUT = 30.0
#: Bytes read per readiness event, at most.
READ_SIZE = 65536
#: Pending output is kept, and sent, in chunks of at most this many bytes.
SEND_CHUNK = 256 * 1024
# epoll and poll take a timeout in milliseconds as a C int: stay well inside it.
_MAX_WAIT = 86400.0

GONE, CLOSING, DETACHING, HALF_CLOSED_LOCAL = State.GONE, State.CLOSING, State.DETACHING, State.HALF_CLOSED_LOCAL
# Linux's ioctl for the unsent bytes of a socket: our own writes lag behind the
# peer's reads (writability is reported only once a third of the buffer is free).
_TIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") and termios else None

#: Work put off until the running event returns: `function(argument)`.
Deferred = List[Tuple[Callable[[Any], None], Any]]


def serve(events: Events, *addrs: str) -> None:
    """Serve `events` on every address in `addrs`, on the calling thread.

    Returns when an event returns `Action.SHUTDOWN` or `Server.shutdown()` is
    called, after every connection and listener is closed. With no address,
    the loop only dials out. Raises `ValueError` for a malformed address
    before anything binds, and `OSError` naming the address when one cannot
    be bound (nothing stays open then). An exception from `serving` or
    `tick`, or a `KeyboardInterrupt`, closes everything and propagates.
    """
    if not isinstance(events, Events):
        raise TypeError(f"serve() needs an evio.Events instance, not {type(events).__name__}")
    parsed = tuple(parse(a) for a in addrs)
    max_connections = _max_connections(events)
    poller = make_poller(portable=_portable(events) or any(a.portable for a in parsed))
    inbox: Inbox | None = None
    listeners: list[Listener] = []
    try:
        # On the main thread the inbox is also the signal wakeup descriptor: a Python signal
        # handler then runs at once, even when its signal lands just as the loop goes to sleep.
        inbox = Inbox(signals=threading.current_thread() is threading.main_thread())
        listeners = bind_all(parsed)
        loop = Loop(events, listeners, poller, inbox, max_connections)
    except BaseException:
        for listener in listeners:
            listener.close()
        if inbox is not None:
            inbox.close()
        poller.close()
        raise
    loop.run()


def _queued(c: Conn) -> int | None:
    """Bytes in `c`'s kernel send queue that the peer has not acknowledged, where the OS tells.

    A peer that does not read stops acknowledging once its receive window is
    full; one that reads, however slowly, keeps this number moving.
    """
    if _TIOCOUTQ is None:
        return None
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(c._fd, _TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return None
    return queued


def _delivered(c: Conn) -> int | None:
    """Bytes written since `c` began closing that the peer has taken, where the OS tells."""
    queued = _queued(c)
    return None if queued is None else c._written - queued


def _next_look(since: float, now: float) -> float:
    """When to look again at a closing connection whose peer last made progress at `since`.

    Where the kernel's queue can be read, look a few times per time-out, so a
    peer that stalls is dropped close to `CLOSE_TIMEOUT` after it stalled.
    """
    if _TIOCOUTQ is None:
        return since + CLOSE_TIMEOUT
    return min(now + CLOSE_TIMEOUT / 4, since + CLOSE_TIMEOUT)


def _max_connections(events: Events) -> int | None:
    """`events.max_connections`, checked."""
    # Looked up by name, as Python looks it up: compiled with mypyc, `events.max_connections` would read
    # the base class's slot and miss a subclass's class attribute.
    limit: object = getattr(events, "max_connections", None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{type(events).__name__}.max_connections must be a positive int or None, not {limit!r}")
    return limit if isinstance(limit, int) else None


def _portable(events: Events) -> bool:
    """`events.portable`, checked (looked up by name, as `max_connections` is)."""
    portable: object = getattr(events, "portable", False)
    if not isinstance(portable, bool):
        raise TypeError(f"{type(events).__name__}.portable must be True or False, not {portable!r}")
    return portable


def _chunks(out: Buffer, start: int) -> list[memoryview]:
    """`out[start:]` in chunks of `SEND_CHUNK`: views of immutable bytes, copies of anything else."""
    view = memoryview(out)
    end = len(view)
    step = SEND_CHUNK
    if type(out) is bytes:
        return [view[i : i + step] for i in range(start, end, step)]
    return [memoryview(view[i : i + step].tobytes()) for i in range(start, end, step)]


class Loop:
    """One event loop over one poller: connections, listeners, dials, the inbox and the timers."""

    def __init__(
        self, events: Events, listeners: list[Listener], poller: Poller, inbox: Inbox, max_connections: int | None
    ) -> None:
        self._events = events
        self._poller = poller
        self._inbox = inbox
        self._timers = TimerHeap()
        self._conns: dict[int, Conn] = {}  # by descriptor: every socket of a connection the poller knows
        self._by_id: dict[int, Conn] = {}  # the open connections, as `Server.conns`
        self._ids = itertools.count(1)
        self._lingering = Lingering(poller, self._call_later)
        self._acceptor = Acceptor(listeners, poller, self._open, self._call_later, max_connections)
        self._deferred: Deferred = []
        self._local_wakes: list[int] = []
        self._thread_id = 0
        self._stopping = False
        self._now = time.monotonic()  # the loop's clock, read once per turn
        self._tick_timer: Timer | None = None
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        on = {n: overridden(events, n) for n in ("opened", "closed", "detached", "data", "prewrite", "postwrite")}
        # Typed as returning `object`: what a user's event returns is checked here, with messages that
        # say how to fix it; compiled with mypyc, the declared return types would be checked first, tersely.
        self._opened: Callable[[Conn], object] | None = events.opened if on["opened"] else None
        self._closed: Callable[[Conn, Any], object] | None = events.closed if on["closed"] else None
        self._detached: Callable[[Conn, Any], object] | None = events.detached if on["detached"] else None
        self._data: Callable[[Conn, Any], object] | None = events.data if on["data"] else None
        self._prewrite: Callable[[Conn, int], object] | None = events.prewrite if on["prewrite"] else None
        self._postwrite: Callable[[Conn, int, int], object] | None = events.postwrite if on["postwrite"] else None
        self._tick: Callable[[], object] = events.tick
        self._serving: Callable[[Server], object] = events.serving
        self._ticks = overridden(events, "tick")
        # Bound once: a wake from another thread then makes no bound method of its own.
        self._wake_call = self._posted_wake
        self.server = Server(self, tuple(lst.name for lst in listeners), self._by_id)
        self.dialer = Dialer(self)

    # ---- running -------------------------------------------------------

    def run(self) -> None:
        """Serve until shutdown; always closes every connection and listener."""
        try:
            self._thread_id = threading.get_ident()
            poller = self._poller
            poller.register(self._inbox.fd, IN)
            self._acceptor.start()
            if overridden(self._events, "serving"):
                self._loop_action("serving", self._serving(self.server))
                self._run_deferred()
            if self._ticks and not self._stopping:
                self._run_tick()
            self._serve()
        finally:
            self._teardown()

    def _serve(self) -> None:
        """Poll and handle what is ready until shutdown: the hot path."""
        poll = self._poller.poll
        conns_get = self._conns.get
        data_cb = self._data
        buf, view = self._buf, self._view
        prewrite, postwrite = self._prewrite, self._postwrite
        deferred = self._deferred
        next_due = self._timers.next_due
        monotonic = time.monotonic
        now = self._now = monotonic()
        while not self._stopping:
            due = next_due()
            if self._local_wakes:
                timeout = 0.0
            elif due is None:
                timeout = -1.0
            else:
                # `now` is as old as this turn's work: a timer may fire that much late, never early,
                # and the clock is read once per turn.
                timeout = min(max(0.0, due - now), _MAX_WAIT)
            ready = poll(timeout)
            self._now = now = monotonic()
            for fd, bits in ready:
                if deferred:
                    self._run_deferred()
                if self._stopping:  # set by an event: mypy cannot see that
                    break  # type: ignore[unreachable]
                c = conns_get(fd)
                if c is None:
                    self._ready_other(fd)
                elif c._mask != IN:
                    self._ready(c, bits)
                else:
                    try:
                        n = c._recv_into(buf)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as err:
                        self._close(c, err)
                        continue
                    c._seen = now
                    if not n:
                        self._peer_eof(c)
                        continue
                    if data_cb is None:
                        continue
                    try:
                        r = data_cb(c, view[:n] if c._reuse else bytes(view[:n]))
                    except Exception as err:
                        self._fail(c, "data", err)
                        continue
                    if r is None:
                        continue
                    if type(r) is bytes and prewrite is None and c._out is None:
                        # The common reply: sent whole, with no copy and no poller call.
                        if not r:
                            continue
                        try:
                            sent = c._send(r)
                        except (BlockingIOError, InterruptedError):
                            sent = 0
                        except OSError as err:
                            self._close(c, err)
                            continue
                        if sent < len(r):
                            self._keep(c, r, sent, True)
                        if postwrite is not None and c._state is not GONE:
                            try:
                                act = postwrite(c, sent, c._outlen)
                                if act:
                                    self._after_write(c, check_action("postwrite", act))
                            except Exception as err:
                                self._fail(c, "postwrite", err)
                    else:
                        self._reply(c, "data", r)
            if deferred:
                self._run_deferred()
            if self._stopping:
                return  # type: ignore[unreachable]
            if self._local_wakes:
                wakes, self._local_wakes = self._local_wakes, []
                self._deliver_wakes(wakes)
            if due is not None and due <= now:
                self._run_timers(now)

    def _ready(self, c: Conn, bits: int) -> None:
        """The slow path: a connection with output pending, paused, or still connecting."""
        if c._dial is not None:
            self.dialer.ready(c)
            return
        if c._mask & OUT and bits & (OUT | ERR):
            self._flush(c)
            if c._state is GONE or self._stopping:
                return
        if c._mask & IN and bits & (IN | ERR):
            self._read(c)

    def _read(self, c: Conn) -> None:
        """One read and its `data` event (the hot path has its own copy of this)."""
        try:
            n = c._recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._close(c, err)
            return
        c._seen = self._now
        if not n:
            self._peer_eof(c)
            return
        if self._data is None:
            return
        try:
            r = self._data(c, self._view[:n] if c._reuse else bytes(self._view[:n]))
        except Exception as err:
            self._fail(c, "data", err)
            return
        if r is not None:
            self._reply(c, "data", r)

    def _peer_eof(self, c: Conn) -> None:
        """The peer ended its input: with `half_close`, tell `data`; without, close once output drains."""
        if not c._half_close:
            if c._out is None:
                self._close(c, None)  # nothing to write, nothing unread: no lingering needed
                return
            self._move(c, Trigger.PEER_EOF)
            self._settle(c)
            return
        self._move(c, Trigger.PEER_HALF_CLOSE)
        self._update_interest(c)
        if self._data is not None:
            try:
                r = self._data(c, b"")
            except Exception as err:
                self._fail(c, "data", err)
                return
            if r is not None:
                self._reply(c, "data", r)
        if c._state is CLOSING:
            self._settle(c)

    def _run_deferred(self) -> None:
        """Carry out what events put off until they returned, including what that in turn puts off."""
        deferred = self._deferred
        while deferred:
            batch = deferred[:]
            deferred.clear()
            for function, arg in batch:
                function(arg)

    # ---- timers --------------------------------------------------------

    def _run_timers(self, now: float) -> None:
        deferred = self._deferred
        for timer in self._timers.pop_due(now):
            callback = timer._callback
            if callback is None:
                continue  # cancelled by a timer that ran before it in this turn
            timer._callback = None
            if timer._user:
                try:
                    r = callback()
                    if isinstance(r, Action):
                        raise bad_return(f"the timer callback {callback!r}", r, "None: call server.shutdown()")
                except Exception:
                    logger.exception("timer callback %r raised", callback)
            else:
                callback()
            if deferred:
                self._run_deferred()
            if self._stopping:
                return

    def _call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """One of the loop's own timers, `delay` seconds from the loop's clock."""
        return self._timers.call_at(self._now + delay, callback)

    def _run_tick(self) -> None:
        self._tick_timer = None
        r = self._tick()
        if r is None:
            return
        delay: object = r
        action: object = None
        if type(r) is tuple:
            if len(r) != 2:
                raise bad_return("tick", r, "a delay, (delay, action) or None")
            delay, action = r
        if isinstance(delay, Action):  # an IntEnum: it would pass for a delay of 0 to 3 seconds
            raise bad_return("tick", r, "the delay first: a number of seconds; an action goes in (delay, action)")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or math.isnan(delay):
            raise bad_return("tick", r, "a delay in seconds, (delay, action) or None")
        self._tick_timer = self._timers.call_at(time.monotonic() + max(0.0, float(delay)), self._run_tick)
        self._loop_action("tick", action)
        self._run_deferred()

    def _loop_action(self, event: str, action: object) -> None:
        """Act on what `serving`, `tick`, `closed` or `detached` returned: only SHUTDOWN means something there."""
        act = check_action(event, action)
        if act == Action.SHUTDOWN:
            self._stopping = True
        elif act:
            raise TypeError(f"{event} returned {Action(act)!r}; only Action.SHUTDOWN (or None) means something there")

    # ---- listeners, lingering sockets and the inbox --------------------

    def _ready_other(self, fd: int) -> None:
        listener = self._acceptor.listeners.get(fd)
        if listener is not None:
            self._acceptor.accept(listener, self._keep_accepting)
        elif fd in self._lingering:
            self._lingering.readable(fd)
        elif fd == self._inbox.fd:
            self._drain_inbox()
        # Otherwise a stale report for a descriptor closed earlier in this batch.

    def _keep_accepting(self) -> bool:
        """After each accepted connection: carry out what its `opened` put off; go on unless stopping."""
        self._run_deferred()
        return not self._stopping

    def _open(self, sock: socket.socket, addr: Any, listener: Listener) -> None:
        try:
            sock.setblocking(False)
            if not listener.is_unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = listener.name if listener.name_is_local else sock.getsockname()
        except OSError:
            sock.close()  # the peer left before we could look at it
            return
        c = self.new_conn(addr, listener.index, False)
        c._attach(sock)
        c.local_addr = local
        c._seen = time.monotonic()  # not the turn's clock: a burst of accepts takes a while
        self._conns[c._fd] = c
        self._by_id[c.id] = c
        self._acceptor.gained()
        self._fire_opened(c)
        # Registered once `opened` has said what it wants (a greeting pending, reading paused...).
        self._update_interest(c)

    def _fire_opened(self, c: Conn) -> None:
        """Call `opened` and act on what it returns: `out`, `(out, action)` or `(out, options, action)`."""
        if self._opened is None:
            return
        try:
            r = self._opened(c)
            out: object = r
            action: object = None
            if type(r) is tuple:
                if len(r) == 2:
                    out, action = r
                    if isinstance(action, Options):
                        raise bad_return("opened", r, "an evio.Action as the second item; options go in the 3-tuple")
                    check_action("opened", action, r)
                elif len(r) == 3:
                    out, opts, action = r
                    check_action("opened", action, r)
                    if opts is not None:
                        if not isinstance(opts, Options):
                            raise bad_return("opened", r, "(out, options, action) with an evio.Options")
                        self._apply_options(c, opts)
                else:
                    raise bad_return("opened", r, "out, (out, action) or (out, options, action)")
            if c._state is not GONE:
                self._write_and_act(c, "opened", out, action, False)
        except Exception as err:
            self._fail(c, "opened", err)

    def _apply_options(self, c: Conn, opts: Options) -> None:
        """Set what `opts` asks for on `c`: socket options, time-outs and limits."""
        c._reuse = bool(opts.reuse_input_buffer)
        c._half_close = bool(opts.half_close)
        c._max_pending = opts.max_pending
        ka = opts.tcp_keepalive
        if ka is not None:
            sock = c._sock
            assert sock is not None
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                raise ValueError(f"Options.tcp_keepalive needs a TCP connection, not {c.local_addr!r}")
            secs = max(1, round(ka))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            # Linux and most BSDs name the idle time TCP_KEEPIDLE; macOS names it TCP_KEEPALIVE.
            idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
            if idle is not None:
                sock.setsockopt(socket.IPPROTO_TCP, idle, secs)
            if hasattr(socket, "TCP_KEEPINTVL"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, secs)
        if c._idle_timer is not None:
            c._idle_timer.cancel()
            c._idle_timer = None
        c._idle = opts.idle_timeout
        if c._idle is not None:
            c._idle_timer = self._call_later(c._idle, functools.partial(self._check_idle, c))
        if c._max_pending is not None and c._outlen > c._max_pending:
            self._overflow(c, 0)

    def _check_idle(self, c: Conn) -> None:
        """An idle time-out came due: close the connection, or wait until its new deadline."""
        c._idle_timer = None
        if c._state is GONE or c._idle is None:
            return
        if c._paused:
            # The program chose not to read: that is not the peer's idleness. The clock restarts on resume.
            c._idle_timer = self._timers.call_at(self._now + c._idle, functools.partial(self._check_idle, c))
            return
        deadline = c._seen + c._idle
        if self._now >= deadline and c._out is not None:
            # Nothing sent for a while may only mean the kernel's queue is full: if the peer
            # took some of it since the last look, it is reading, however slowly.
            queued = _queued(c)
            if queued is not None and queued != c._idle_queued:
                c._idle_queued = queued
                c._seen = self._now
                deadline = c._seen + c._idle
        if self._now >= deadline:
            err = TimeoutError(errno.ETIMEDOUT, f"connection {c.id} was idle for {c._idle:g} s")
            if c._out is None:
                self._close_gracefully(c, err)
            else:
                self._close(c, err)  # the peer does not read: what is pending cannot go
        else:
            c._idle_timer = self._timers.call_at(deadline, functools.partial(self._check_idle, c))

    def _drain_inbox(self) -> None:
        """Carry out the calls other threads posted, in order (repeated wakes were joined when posted)."""
        deferred = self._deferred
        for function, conn, arg in self._inbox.take():
            function(conn, arg)
            if deferred:
                self._run_deferred()

    # ---- what Conn and Server ask of the loop (on its thread) --------------

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.get_ident() == self._thread_id

    def post(self, function: Callable[[Any, Any], None], conn: Any, arg: Any, posted: int = 0) -> bool:
        """From another thread: have the loop call `function(conn, arg)` soon; `False` once it has stopped."""
        return self._inbox.post(function, conn, arg, posted)

    @property
    def stopping(self) -> bool:
        return self._stopping or self._inbox.closed

    def new_conn(self, remote_addr: SockAddr, addr_index: int, outbound: bool) -> Conn:
        return Conn(self, next(self._ids), remote_addr, addr_index, outbound)

    def posted_write(self, c: Conn, data: bytes) -> None:
        self._inbox.settle(c, len(data))
        if c._state in WRITABLE:
            self._write(c, data, False)

    def close(self, c: Conn, _: object = None) -> None:
        if self._move(c, Trigger.CLOSE):
            self._deferred.append((self._settle, c))

    def abort(self, c: Conn, _: object = None) -> None:
        if c._dial is not None:
            self.dialer.cancel(c)
        elif c._state is not DETACHING:
            self._close(c, None)

    def write_eof(self, c: Conn, _: object = None) -> None:
        if self._move(c, Trigger.WRITE_EOF):
            self._deferred.append((self._settle, c))

    def set_paused(self, c: Conn, paused: bool) -> None:
        if c._paused is not paused:
            c._paused = paused
            if not paused:
                c._seen = time.monotonic()  # time spent paused is not idle time
            self._update_interest(c)

    def wake(self, id: int) -> bool:
        """Deliver `data(conn, None)` to connection `id` soon; safe from any thread."""
        c = self._by_id.get(id)
        if c is None or c._state not in WAKEABLE:
            return False
        if self.on_loop():
            self._local_wakes.append(id)
            return True
        return self._inbox.post(self._wake_call, c, id, wake=True)

    def _posted_wake(self, c: Conn, id: int) -> None:
        # Before `data`: a wake posted while it runs gets a `data` of its own. Unlocked: a thread that
        # still saw True joined this very call, whose `data` comes after that thread's wake.
        c._wake_posted = False
        self._deliver_wakes([id])

    def _deliver_wakes(self, ids: list[int]) -> None:
        data_cb = self._data
        for id in dict.fromkeys(ids):
            c = self._by_id.get(id)
            if c is None or c._state not in WAKEABLE or data_cb is None:
                continue
            try:
                r = data_cb(c, None)
                if r is not None:
                    self._reply(c, "data", r)
            except Exception as err:
                self._fail(c, "data", err)
            self._run_deferred()
            if self._stopping:
                return

    def dial(self, c: Conn, arg: tuple[Address, float | None]) -> None:
        self.dialer.start(c, *arg)

    def new_timer(self, delay: float, callback: Callable[[], object]) -> Timer:
        """A user's timer, `delay` seconds from now (not scheduled yet: `add_timer` does that)."""
        return Timer(self._timers, time.monotonic() + delay, callback, True)

    def add_timer(self, _: None, timer: Timer) -> None:
        self._timers.push(timer)

    def shutdown(self, _: object = None, __: object = None) -> None:
        self._stopping = True
        if self.on_loop():
            self._inbox.nudge()  # a signal handler's call: the interrupted poll must not resume

    # ---- dialled connections (the dialer's results) ----------------------

    def connected(self, c: Conn, sock: socket.socket, peer: SockAddr, tcp: bool) -> None:
        """A dial succeeded: `c` becomes an open connection and `opened` fires (unless it was closed meanwhile)."""
        c._attach(sock)
        c.remote_addr = peer
        try:
            if tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.local_addr = sock.getsockname()
        except OSError as err:
            self._close(c, err)
            return
        c._seen = time.monotonic()
        self._by_id[c.id] = c
        # A dial closed before it was up sends what was written, then closes, without `opened`.
        if self._move(c, Trigger.CONNECTED) or c._state is HALF_CLOSED_LOCAL:
            self._fire_opened(c)
        if c._out is not None and c._state is not GONE:
            self._flush(c)  # what was written before the connection was up, then what opened returned
        self._settle(c)

    def dial_failed(self, c: Conn, err: BaseException | None) -> None:
        """A dial could not be made: `closed(conn, err)` fires; `opened` never did."""
        self._move(c, Trigger.END)
        c._out = None
        c._outlen = 0
        self._ended(c, err)

    # ---- output and actions --------------------------------------------

    def _reply(self, c: Conn, event: str, r: object) -> None:
        """Write and act on what `data` returned: `out` or `(out, action)`."""
        try:
            if type(r) is tuple:
                if len(r) != 2:
                    raise bad_return(event, r, "out or (out, action)")
                check_action(event, r[1], r)
                self._write_and_act(c, event, r[0], r[1], True)
            else:
                self._write_and_act(c, event, r, None, True)
        except Exception as err:
            self._fail(c, event, err)

    def _write_and_act(self, c: Conn, event: str, out: object, action: object, reply: bool) -> None:
        act = check_action(event, action)
        if out is not None:
            self._write(c, check_out(event, out), reply)
        if act:
            self._act(c, act)

    def _write(self, c: Conn, out: Buffer, reply: bool) -> None:
        """Send `out` now, or queue it behind output that is already waiting.

        `reply` is true for output the connection's own events returned: while
        it is pending, the connection is not read (see the design notes).
        """
        size = len(out)
        if not size or c._state is GONE:
            return
        if c._eof_sent:
            raise RuntimeError(f"output for connection {c.id} after its write side was shut down (write_eof)")
        if c._out is not None or c._dial is not None:
            limit = c._max_pending
            if limit is not None and c._outlen + size > limit:
                self._overflow(c, size)
                return
            if c._out is None:
                c._out = deque()
            c._out.extend(_chunks(out, 0))
            c._outlen += size
            if reply and not c._hold:
                c._hold = True
                self._update_interest(c)
            return
        detach_after = False if self._prewrite is None else self._before_write(c, size)
        if detach_after is None:
            return
        try:
            sent = c._send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._close(c, err)
            return
        if sent:
            c._seen = self._now
        if sent < size:
            self._keep(c, out, sent, reply)
            if c._state is GONE:
                return
        if self._postwrite is not None:
            act = self._postwrite(c, sent, c._outlen)
            if act:  # None and Action.NONE: nothing to check or do
                self._after_write(c, check_action("postwrite", act))
        if detach_after:
            self._act(c, Action.DETACH)

    def _before_write(self, c: Conn, amount: int) -> bool | None:
        """Call `prewrite` if overridden: `None` when it closed the connection, else whether to detach after."""
        if self._prewrite is None:
            return False
        act = check_action("prewrite", self._prewrite(c, amount))
        if act == Action.CLOSE:
            self._close(c, None)
            return None
        if act == Action.SHUTDOWN:
            self._stopping = True
        return act == Action.DETACH

    def _keep(self, c: Conn, out: Buffer, sent: int, reply: bool) -> None:
        """Queue what `send` did not take and watch for writability."""
        left = len(out) - sent
        limit = c._max_pending
        if limit is not None and left > limit:
            self._overflow(c, left)
            return
        c._out = deque(_chunks(out, sent))
        c._outlen = left
        c._hold = reply
        self._update_interest(c)

    def _overflow(self, c: Conn, adding: int) -> None:
        """A write would pass `max_pending`: drop the connection, as Redis drops a client that does not read."""
        err = BufferError(
            f"connection {c.id}: {c._outlen + adding} bytes would be pending, over max_pending={c._max_pending}"
        )
        self._close(c, err)

    def _after_write(self, c: Conn, act: int) -> None:
        """Act on what `postwrite` returned: CLOSE drops what remains."""
        if act == Action.CLOSE:
            self._close(c, None)
        elif act:
            self._act(c, act)

    def _flush(self, c: Conn) -> None:
        """The socket is writable (or failed): send what is pending, chunk by chunk."""
        out = c._out
        assert out is not None
        try:
            detach_after = self._before_write(c, c._outlen)
            if detach_after is None:
                return
            send = c._send
            sent = 0
            try:
                while out:
                    head = out[0]
                    n = send(head)
                    sent += n
                    if n < len(head):
                        out[0] = head[n:]
                        break
                    out.popleft()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as err:
                self._close(c, err)
                return
            c._outlen -= sent
            if sent:
                c._seen = self._now
                if c._state is CLOSING or c._state is DETACHING:
                    c._written += sent
                    c._since = time.monotonic()
            if self._postwrite is not None:
                act = self._postwrite(c, sent, c._outlen)
                if act:
                    self._after_write(c, check_action("postwrite", act))
            if detach_after:
                self._act(c, Action.DETACH)
        except Exception as err:
            self._fail(c, "prewrite/postwrite", err)
            return
        if out or c._out is not out:
            return
        c._out = None
        c._hold = False
        self._settle(c)

    def _act(self, c: Conn, act: int) -> None:
        if act == Action.SHUTDOWN:
            self._stopping = True
        elif act == Action.CLOSE:
            if self._move(c, Trigger.CLOSE):
                self._settle(c)
        elif act == Action.DETACH and self._move(c, Trigger.DETACH):
            self._settle(c)

    def _move(self, c: Conn, trigger: Trigger) -> bool:
        """Apply `trigger` to `c`'s state; `False` when it means nothing in that state."""
        new = move(c._state, trigger)
        if new is None:
            return False
        c._state = new
        return True

    def _settle(self, c: Conn) -> None:
        """Do what `c`'s state asks for once its output has drained; until then, watch it drain."""
        state = c._state
        if state is GONE:
            return
        if c._out is not None or c._dial is not None:
            if (state is CLOSING or state is DETACHING) and c._close_timer is None and c._dial is None:
                self._watch_closing(c)
            self._update_interest(c)
        elif state is CLOSING:
            self._close_gracefully(c, None)
        elif state is DETACHING:
            self._detach(c)
        elif state is HALF_CLOSED_LOCAL and not c._eof_sent:
            c._eof_sent = True
            sock = c._sock
            assert sock is not None
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError as err:
                self._close(c, err)
                return
            self._update_interest(c)
        else:
            self._update_interest(c)

    def _update_interest(self, c: Conn) -> None:
        """Register with the poller what `c` waits for now: output to drain, input to read, or nothing."""
        if c._state is GONE or c._dial is not None:
            return
        want = 0 if c._out is None else OUT
        if c._state in READING and not c._paused and not (c._hold and want):
            want |= IN
        have = c._mask
        if want == have:
            return
        if not have:
            self._poller.register(c._fd, want)
        elif not want:
            self._poller.unregister(c._fd)
        else:
            self._poller.modify(c._fd, want)
        c._mask = want

    def _watch_closing(self, c: Conn) -> None:
        """A connection began closing with output pending: give up on it if the peer stops reading."""
        c._since = now = time.monotonic()
        c._written = 0
        c._delivered = _delivered(c)
        c._close_timer = self._timers.call_at(_next_look(now, now), functools.partial(self._look_at_closing, c))

    def _look_at_closing(self, c: Conn) -> None:
        c._close_timer = None
        if c._state is not CLOSING and c._state is not DETACHING:
            return
        now = time.monotonic()
        delivered = _delivered(c)
        if delivered is not None and delivered != c._delivered:
            # The peer took bytes from the kernel's queue: it reads, if slowly.
            c._delivered = delivered
            c._since = now
        if now - c._since >= CLOSE_TIMEOUT:
            why = f"connection {c.id}: the peer read nothing for {CLOSE_TIMEOUT:g} s"
            self._close(c, TimeoutError(errno.ETIMEDOUT, why))
        else:
            look = functools.partial(self._look_at_closing, c)
            c._close_timer = self._timers.call_at(_next_look(c._since, now), look)

    # ---- endings -------------------------------------------------------

    def _forget(self, c: Conn) -> None:
        if not c.outbound and c._sock is not None:
            self._acceptor.lost()
        c._state = GONE
        c._out = None
        c._outlen = 0
        self._conns.pop(c._fd, None)
        # It stays in `Server.conns` until its `closed` or `detached` fires: an event may be
        # looping over that mapping right now.
        for timer in (c._idle_timer, c._close_timer):
            if timer is not None:
                timer.cancel()
        c._idle_timer = c._close_timer = None
        # The caller decides what becomes of the poller's registration (`c._mask` says if there is one).

    def _ended(self, c: Conn, err: BaseException | None) -> None:
        """`closed(conn, err)` fires once the running event (if any) returns."""
        self._deferred.append((self._fire_closed, (c, err)))

    def _fire_closed(self, arg: tuple[Conn, BaseException | None]) -> None:
        c, err = arg
        self._by_id.pop(c.id, None)
        if self._closed is not None:
            self._call_ending("closed", self._closed, c, err)

    def _close(self, c: Conn, err: BaseException | None) -> None:
        """Close at once, dropping pending output: for errors, resets and misbehaving peers."""
        if c._state is GONE:
            return
        self._forget(c)
        if c._mask:
            self._poller.discard(c._fd)
            c._mask = 0
        if c._sock is not None:
            c._sock.close()
        self._ended(c, err)

    def _close_gracefully(self, c: Conn, err: BaseException | None) -> None:
        """Close after all output went out, without a reset: see "Closing without a reset"."""
        if c._state is GONE:
            return
        sock = c._sock
        assert sock is not None
        for _ in range(16):  # discard what the peer sent after the request that closed it
            try:
                if not c._recv_into(self._buf):
                    self._close(c, err)  # the peer is done too: nothing can cause a reset
                    return
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(c, err)
                return
        self._forget(c)
        registered, c._mask = c._mask, 0
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            if registered:
                self._poller.discard(c._fd)
            sock.close()
        else:
            self._lingering.add(sock, bool(registered))
        self._ended(c, err)

    def _detach(self, c: Conn) -> None:
        """Stop watching `c`'s socket; `detached` gets it once the running event (if any) returns."""
        self._forget(c)
        if c._mask:
            self._poller.unregister(c._fd)
            c._mask = 0
        self._deferred.append((self._hand_over, c))

    def _hand_over(self, c: Conn) -> None:
        self._by_id.pop(c.id, None)
        sock = c._sock
        assert sock is not None
        if self._detached is None:
            sock.close()
            return
        try:
            sock.setblocking(True)
        except OSError as err:
            sock.close()
            self._fire_closed((c, err))
            return
        try:
            action = self._detached(c, sock)
        except Exception:
            logger.exception("detached raised for connection %d; closing its socket", c.id)
            sock.close()  # nobody took it over
            return
        try:
            self._loop_action("detached", action)
        except TypeError:
            logger.exception("detached returned a bad value for connection %d", c.id)

    def _call_ending(self, event: str, fn: Callable[[Conn, Any], object], c: Conn, arg: Any) -> None:
        """Call `closed`, logging what it raises."""
        try:
            self._loop_action(event, fn(c, arg))
        except Exception:
            logger.exception("%s raised for connection %d", event, c.id)

    def _fail(self, c: Conn, event: str, err: Exception) -> None:
        logger.error("%s raised for connection %d; closing it", event, c.id, exc_info=err)
        self._close(c, err)

    def _teardown(self) -> None:
        """Carry out what other threads posted, write what each connection can take at once, close everything."""
        self._stopping = True
        try:
            for function, conn, arg in self._inbox.close():
                function(conn, arg)
            self.dialer.abort_all()
            self._run_deferred()
            for c in list(self._conns.values()):
                if c._state is GONE or c._dial is not None:
                    continue
                out = c._out
                try:
                    while out:
                        head = out[0]
                        if c._send(head) < len(head):
                            break
                        out.popleft()
                    # Unread input would turn the close into a reset: end our side first, so a
                    # peer stops sending, then read what it sent meanwhile.
                    assert c._sock is not None
                    c._sock.shutdown(socket.SHUT_WR)
                    for _ in range(16):
                        if not c._recv_into(self._buf):
                            break
                except OSError:
                    pass
                self._close(c, None)
            self._run_deferred()
        finally:
            for c in list(self._conns.values()):
                if c._sock is not None:
                    c._sock.close()
            self._lingering.close()
            self._acceptor.close()
            self.dialer.close()
            self._poller.close()


__all__ = ["Loop", "SockAddr", "serve"]
