"""The event loop: `serve`, and the one thread that runs every event.

Design notes
------------
*Level-triggered.* The poller reports a socket for as long as it is ready,
so the loop can read once per readiness event (one `recv_into`) and leave
the rest for the next turn: a busy connection cannot starve the others, and
nothing is lost if an event closes or detaches a connection mid-stream.
Edge-triggered polling would force a drain-until-EAGAIN loop per event and
an extra failing syscall each time.

*Write at once.* What an event returns is sent before the loop moves on. A
request/response protocol almost always fits in the socket buffer, so the
common case costs one `send` and no `modify` of the poller. Only a short
write keeps the rest and asks the poller for writability. The rest is kept
as a queue of chunks of at most `SEND_CHUNK` bytes: `bytes` are sliced
without a copy, mutable buffers are copied once, and no `send` is handed a
huge buffer (PyPy copies the whole buffer it is given on every call).

*Reading pauses while output is pending.* A connection with unsent output
is watched for writability only, not readability, until the output drains.
A client that sends but does not read is then held back by TCP's own flow
control, and the server never buffers more than one read's worth of replies
beyond what the kernel holds. The same rule orders replies: new input is
only read once earlier replies are out.

*Closing without a reset.* Closing a socket that still has unread input
makes the kernel send a reset, and a reset makes the peer's kernel discard
replies it has not handed to the application yet. So `Action.CLOSE` ends
with a lingering close: shut down our side, then read and discard until the
peer closes too (or `LINGER_TIMEOUT` passes). `closed` fires when our side
is done; the lingering is invisible to events.

*Hot path.* Poll, receive, `data`, send: attribute look-ups are hoisted into
locals, events the user did not override are never called, and a reply of
`bytes` goes straight to `send` without being copied.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from .addresses import Listener, bind_all, parse
from .conn import Conn, Server, apply_options
from .events import Action, Events, Options, overridden
from .pollers import IN, OUT, EpollPoller, SelectorPoller, make_poller
from .waker import Waker

try:
    import fcntl
    import termios
except ImportError:  # not POSIX
    fcntl = termios = None  # type: ignore[assignment]

logger = logging.getLogger("evio")

#: A closing connection whose peer reads nothing for this long is dropped.
CLOSE_TIMEOUT = 30.0
#: How long a closed connection waits for the peer's end of input before the socket goes.
LINGER_TIMEOUT = 5.0
#: How long to stop accepting after the process ran out of descriptors.
ACCEPT_PAUSE = 0.25
#: A shortage of descriptors is one episode (logged once) until none is seen for this long.
OUT_OF_FDS_EPISODE = 10.0
#: Connections accepted per readiness event of a listener, at most.
ACCEPTS_PER_EVENT = 128
#: Bytes read per readiness event, at most.
READ_SIZE = 65536
#: Pending output is kept, and sent, in chunks of at most this many bytes.
SEND_CHUNK = 256 * 1024
# epoll and poll take a timeout in milliseconds as a C int: stay well inside it.
_MAX_WAIT = 86400.0

OPEN, CLOSING, DETACHING, GONE = 0, 1, 2, 3
_NO_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_OUT_TYPES = (bytes, bytearray, memoryview)
# Linux's ioctl for the unsent bytes of a socket: our own writes lag behind the
# peer's reads (writability is reported only once a third of the buffer is free).
_TIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") and termios else None


def serve(events: Events, *addrs: str) -> None:
    """Serve `events` on every address in `addrs`, on the calling thread.

    Returns when an event returns `Action.SHUTDOWN`, after every connection
    and listener is closed. Raises `ValueError` for a missing or malformed
    address before anything binds, and `OSError` naming the address when one
    cannot be bound (nothing stays open then). An exception from `serving` or
    `tick`, or a `KeyboardInterrupt`, closes everything and propagates.
    """
    if not isinstance(events, Events):
        raise TypeError(f"serve() needs an evio.Events instance, not {type(events).__name__}")
    if not addrs:
        raise ValueError("serve() needs at least one address, as 'tcp://127.0.0.1:9999'")
    parsed = tuple(parse(a) for a in addrs)
    poller = make_poller(portable=any(a.portable for a in parsed))
    waker: Waker | None = None
    try:
        waker = Waker()
        listeners = bind_all(parsed)
    except BaseException:
        if waker is not None:
            waker.close()
        poller.close()
        raise
    Loop(events, listeners, poller, waker).run()


def _bad_return(event: str, value: object, expected: str) -> TypeError:
    return TypeError(f"{event} returned {value!r}; expected {expected}")


def _delivered(c: Conn) -> int | None:
    """Bytes written since `c` began closing that the peer has taken, where the OS tells.

    The kernel's send queue holds what the peer has not acknowledged; a peer
    that does not read stops acknowledging once its receive window is full.
    """
    if _TIOCOUTQ is None:
        return None
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(c._fd, _TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return None
    return c._written - queued


def _next_look(since: float, now: float) -> float:
    """When to look again at a closing connection whose peer last made progress at `since`.

    Where the kernel's queue can be read, look a few times per time-out, so a
    peer that stalls is dropped close to `CLOSE_TIMEOUT` after it stalled.
    """
    if _TIOCOUTQ is None:
        return since + CLOSE_TIMEOUT
    return min(now + CLOSE_TIMEOUT / 4, since + CLOSE_TIMEOUT)


def _check_out(event: str, out: object) -> bytes | bytearray | memoryview:
    """`out` as a flat byte buffer, or a `TypeError` naming the event."""
    if type(out) is memoryview and (out.ndim != 1 or out.itemsize != 1 or not out.c_contiguous):
        # len() of such a view counts items or rows, not bytes.
        return out.cast("B") if out.c_contiguous else out.tobytes()
    if not isinstance(out, _OUT_TYPES):
        raise _bad_return(event, out, "bytes, bytearray, memoryview or None as output")
    return out


def _check_action(event: str, action: object) -> int:
    if action is None:
        return 0
    if isinstance(action, int) and not isinstance(action, bool) and 0 <= action <= 3:
        return int(action)
    raise _bad_return(event, action, "an evio.Action")


def _chunks(out: bytes | bytearray | memoryview, start: int) -> list[memoryview]:
    """`out[start:]` in chunks of `SEND_CHUNK`: views of immutable bytes, copies of anything else."""
    view = memoryview(out)
    end = len(view)
    step = SEND_CHUNK
    if type(out) is bytes:
        return [view[i : i + step] for i in range(start, end, step)]
    return [memoryview(view[i : i + step].tobytes()) for i in range(start, end, step)]


class Loop:
    """One event loop over one poller: connections, listeners, the waker and the timers."""

    def __init__(
        self, events: Events, listeners: list[Listener], poller: EpollPoller | SelectorPoller, waker: Waker
    ) -> None:
        self._events = events
        self._listeners = {lst.fd: lst for lst in listeners}
        self._poller = poller
        self._waker = waker
        self._conns: dict[int, Conn] = {}  # by descriptor
        self._by_id: dict[int, Conn] = {}
        self._next_id = 1
        self._closing: set[Conn] = set()  # CLOSING or DETACHING, each with a deadline
        self._lingering: dict[int, tuple[socket.socket, float]] = {}  # fd: (socket, deadline)
        self._sweep_at: float | None = None  # when to look at closing and lingering deadlines
        self._local_wakes: list[int] = []
        self._thread = 0
        self._stopping = False
        self._next_tick: float | None = None
        self._accept_resume: float | None = None
        self._out_of_fds_at = -math.inf  # when accept last failed for want of descriptors
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        on = {n: overridden(events, n) for n in ("opened", "closed", "detached", "data", "prewrite", "postwrite")}
        self._opened = events.opened if on["opened"] else None
        self._closed = events.closed if on["closed"] else None
        self._detached = events.detached if on["detached"] else None
        self._data = events.data if on["data"] else None
        self._prewrite = events.prewrite if on["prewrite"] else None
        self._postwrite = events.postwrite if on["postwrite"] else None
        self._ticks = overridden(events, "tick")
        self._server = Server(tuple(lst.name for lst in listeners), self.wake)

    # ---- running -------------------------------------------------------

    def run(self) -> None:
        """Serve until shutdown; always closes every connection and listener."""
        self._thread = threading.get_ident()
        try:
            poller = self._poller
            poller.register(self._waker.fd, IN)
            for fd in self._listeners:
                poller.register(fd, IN)
            if overridden(self._events, "serving"):
                self._loop_action("serving", self._events.serving(self._server))
            if self._ticks and not self._stopping:
                self._next_tick = time.monotonic()
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
        monotonic = time.monotonic
        while not self._stopping:
            if self._local_wakes:
                timeout = 0.0
            else:
                due = self._next_due()
                timeout = -1.0 if due is None else min(max(0.0, due - monotonic()), _MAX_WAIT)
            for fd, _mask in poll(timeout):
                c = conns_get(fd)
                if c is None:
                    self._ready_other(fd)
                elif c._out is not None:
                    self._flush(c)
                else:
                    try:
                        n = c._recv_into(buf)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as err:
                        self._close(c, err)
                        continue
                    if not n:
                        self._close(c, None)  # end of input; nothing is pending here
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
                    if type(r) is bytes and prewrite is None:
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
                            self._keep(c, r, sent)
                        if postwrite is not None:
                            try:
                                self._after_write(c, _check_action("postwrite", postwrite(c, sent, c._outlen)))
                            except Exception as err:
                                self._fail(c, "postwrite", err)
                    else:
                        self._reply(c, "data", r)
                if self._stopping:  # set by an event: mypy cannot see that
                    return  # type: ignore[unreachable]
            if self._local_wakes:
                wakes, self._local_wakes = self._local_wakes, []
                self._deliver_wakes(wakes)
            if self._next_tick is not None or self._sweep_at is not None or self._accept_resume is not None:
                self._run_timers()

    def _next_due(self) -> float | None:
        """The earliest timer, or `None` when nothing is scheduled."""
        due: float | None = self._next_tick
        for t in (self._sweep_at, self._accept_resume):
            if t is not None and (due is None or t < due):
                due = t
        return due

    def _run_timers(self) -> None:
        now = time.monotonic()
        if self._accept_resume is not None and now >= self._accept_resume:
            self._accept_resume = None
            for fd in self._listeners:
                self._poller.register(fd, IN)
        if self._sweep_at is not None and now >= self._sweep_at:
            self._sweep(now)
        if self._next_tick is not None and now >= self._next_tick and not self._stopping:
            self._run_tick()

    def _schedule_sweep(self, deadline: float) -> None:
        if self._sweep_at is None or deadline < self._sweep_at:
            self._sweep_at = deadline

    def _sweep(self, now: float) -> None:
        """Drop closing connections whose peer stopped reading, and lingering sockets past their time."""
        for c in [c for c in self._closing if now >= c._deadline]:
            delivered = _delivered(c)
            if delivered is not None and delivered != c._delivered:
                # The peer took bytes from the kernel's queue: it reads, if slowly.
                c._delivered = delivered
                c._since = now
            if now - c._since >= CLOSE_TIMEOUT:
                self._close(c, TimeoutError(f"connection {c.id}: the peer read nothing for {CLOSE_TIMEOUT:g} s"))
            else:
                c._deadline = _next_look(c._since, now)
        for fd in [fd for fd, (_, deadline) in self._lingering.items() if now >= deadline]:
            self._end_linger(fd)
        deadlines = [c._deadline for c in self._closing] + [d for _, d in self._lingering.values()]
        self._sweep_at = min(deadlines) if deadlines else None

    def _run_tick(self) -> None:
        r = self._events.tick()
        if r is None:
            self._next_tick = None
            return
        delay: object = r
        action: object = None
        if type(r) is tuple:
            if len(r) != 2:
                raise _bad_return("tick", r, "a delay, (delay, action) or None")
            delay, action = r
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or math.isnan(delay):
            raise _bad_return("tick", r, "a delay in seconds, (delay, action) or None")
        self._next_tick = time.monotonic() + max(0.0, float(delay))
        self._loop_action("tick", action)

    def _loop_action(self, event: str, action: object) -> None:
        """Act on what `serving`, `tick`, `closed` or `detached` returned: only SHUTDOWN means something there."""
        if _check_action(event, action) == Action.SHUTDOWN:
            self._stopping = True

    # ---- listeners, lingering sockets and wakes ------------------------

    def _ready_other(self, fd: int) -> None:
        listener = self._listeners.get(fd)
        if listener is not None:
            self._accept(listener)
        elif fd in self._lingering:
            self._linger_read(fd)
        elif fd == self._waker.fd:
            self._deliver_wakes(self._waker.take())
        # Otherwise a stale report for a descriptor closed earlier in this batch.

    def _accept(self, listener: Listener) -> None:
        accept = listener.sock.accept
        for _ in range(ACCEPTS_PER_EVENT):
            if self._accept_resume is not None:
                return  # paused by an earlier listener in this batch
            try:
                sock, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in _NO_RESOURCES:
                    self._pause_accepting(err)
                    return
                # ECONNABORTED and friends: that one client is gone; the next may be there.
                continue
            self._open(sock, addr, listener)
            if self._stopping:
                return

    def _pause_accepting(self, err: OSError) -> None:
        now = time.monotonic()
        if now - self._out_of_fds_at > OUT_OF_FDS_EPISODE:
            logger.warning("evio: cannot accept (%s); pausing accepts, existing connections are served", err)
        self._out_of_fds_at = now
        for fd in self._listeners:
            self._poller.unregister(fd)
        self._accept_resume = now + ACCEPT_PAUSE

    def _open(self, sock: socket.socket, addr: Any, listener: Listener) -> None:
        try:
            sock.setblocking(False)
            if not listener.is_unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = listener.name if listener.name_is_local else sock.getsockname()
        except OSError:
            sock.close()  # the peer left before we could look at it
            return
        c = Conn(self._next_id, sock, addr, local, listener.index, self.wake)
        self._next_id += 1
        self._conns[c._fd] = c
        self._by_id[c.id] = c
        self._poller.register(c._fd, IN)
        if self._opened is None:
            return
        try:
            r = self._opened(c)
            out: object = r
            action: object = None
            if type(r) is tuple:
                if len(r) == 2:
                    out, action = r
                elif len(r) == 3:
                    out, opts, action = r
                    if opts is not None:
                        if not isinstance(opts, Options):
                            raise _bad_return("opened", r, "(out, options, action) with an evio.Options")
                        apply_options(c, opts)
                else:
                    raise _bad_return("opened", r, "out, (out, action) or (out, options, action)")
            self._write_and_act(c, "opened", out, action)
        except Exception as err:
            self._fail(c, "opened", err)

    def wake(self, id: int) -> bool:
        """Deliver `data(conn, None)` to connection `id` soon; safe from any thread."""
        c = self._by_id.get(id)
        if c is None or c._state != OPEN:
            return False
        if threading.get_ident() == self._thread:
            self._local_wakes.append(id)
            return True
        return self._waker.wake(id)

    def _deliver_wakes(self, ids: list[int]) -> None:
        data_cb = self._data
        for id in dict.fromkeys(ids):
            c = self._by_id.get(id)
            if c is None or c._state != OPEN or data_cb is None:
                continue
            try:
                r = data_cb(c, None)
                if r is not None:
                    self._reply(c, "data", r)
            except Exception as err:
                self._fail(c, "data", err)
            if self._stopping:
                return

    # ---- output and actions --------------------------------------------

    def _reply(self, c: Conn, event: str, r: object) -> None:
        """Write and act on what `data` returned: `out` or `(out, action)`."""
        try:
            if type(r) is tuple:
                if len(r) != 2:
                    raise _bad_return(event, r, "out or (out, action)")
                self._write_and_act(c, event, r[0], r[1])
            else:
                self._write_and_act(c, event, r, None)
        except Exception as err:
            self._fail(c, event, err)

    def _write_and_act(self, c: Conn, event: str, out: object, action: object) -> None:
        act = _check_action(event, action)
        if out is not None:
            self._write(c, _check_out(event, out))
        if act:
            self._act(c, act)

    def _write(self, c: Conn, out: bytes | bytearray | memoryview) -> None:
        """Send `out` now, or queue it behind output that is already waiting."""
        size = len(out)
        if not size or c._state == GONE:
            return
        if c._out is not None:
            c._out.extend(_chunks(out, 0))
            c._outlen += size
            return
        detach_after = self._before_write(c, size)
        if detach_after is None:
            return
        try:
            sent = c._send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._close(c, err)
            return
        if sent < size:
            self._keep(c, out, sent)
        if self._postwrite is not None:
            self._after_write(c, _check_action("postwrite", self._postwrite(c, sent, c._outlen)))
        if detach_after:
            self._act(c, Action.DETACH)

    def _before_write(self, c: Conn, amount: int) -> bool | None:
        """Call `prewrite` if overridden: `None` when it closed the connection, else whether to detach after."""
        if self._prewrite is None:
            return False
        act = _check_action("prewrite", self._prewrite(c, amount))
        if act == Action.CLOSE:
            self._close(c, None)
            return None
        if act == Action.SHUTDOWN:
            self._stopping = True
        return act == Action.DETACH

    def _keep(self, c: Conn, out: bytes | bytearray | memoryview, sent: int) -> None:
        """Queue what `send` did not take and watch for writability instead of input."""
        c._out = deque(_chunks(out, sent))
        c._outlen = len(out) - sent
        self._poller.modify(c._fd, OUT)

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
            if sent and c._state != OPEN:
                c._written += sent
                c._since = time.monotonic()
            if self._postwrite is not None:
                self._after_write(c, _check_action("postwrite", self._postwrite(c, sent, c._outlen)))
            if detach_after:
                self._act(c, Action.DETACH)
        except Exception as err:
            self._fail(c, "prewrite/postwrite", err)
            return
        if out or c._out is not out:
            return
        c._out = None
        if c._state == OPEN:
            self._poller.modify(c._fd, IN)
        elif c._state == CLOSING:
            self._close_gracefully(c)
        elif c._state == DETACHING:
            self._detach(c)

    def _act(self, c: Conn, act: int) -> None:
        if act == Action.SHUTDOWN:
            self._stopping = True
        elif c._state == GONE:
            return
        elif act == Action.CLOSE or act == Action.DETACH:
            if c._out is None:
                if act == Action.CLOSE:
                    self._close_gracefully(c)
                else:
                    self._detach(c)
            elif c._state == OPEN:
                c._state = CLOSING if act == Action.CLOSE else DETACHING
                c._since = now = time.monotonic()
                c._deadline = _next_look(now, now)
                c._written = 0
                c._delivered = _delivered(c)
                self._closing.add(c)
                self._schedule_sweep(c._deadline)

    # ---- endings -------------------------------------------------------

    def _forget(self, c: Conn) -> None:
        c._state = GONE
        c._out = None
        del self._conns[c._fd]
        del self._by_id[c.id]
        self._closing.discard(c)
        self._poller.unregister(c._fd)

    def _close(self, c: Conn, err: BaseException | None) -> None:
        if c._state == GONE:
            return
        self._forget(c)
        c._sock.close()
        if self._closed is not None:
            self._call_ending("closed", self._closed, c, err)

    def _close_gracefully(self, c: Conn) -> None:
        """Close after all output went out, without a reset: see "Closing without a reset"."""
        if c._state == GONE:
            return
        sock = c._sock
        for _ in range(16):  # discard what the peer sent after the request that closed it
            try:
                if not c._recv_into(self._buf):
                    self._close(c, None)  # the peer is done too: nothing can cause a reset
                    return
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(c, None)
                return
        self._forget(c)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
        else:
            deadline = time.monotonic() + LINGER_TIMEOUT
            self._lingering[c._fd] = (sock, deadline)
            self._poller.register(c._fd, IN)
            self._schedule_sweep(deadline)
        if self._closed is not None:
            self._call_ending("closed", self._closed, c, None)

    def _linger_read(self, fd: int) -> None:
        sock = self._lingering[fd][0]
        try:
            if sock.recv_into(self._buf):
                return  # discarded; keep waiting for the peer's end of input
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger(fd)

    def _end_linger(self, fd: int) -> None:
        sock, _ = self._lingering.pop(fd)
        self._poller.unregister(fd)
        sock.close()

    def _detach(self, c: Conn) -> None:
        self._forget(c)
        sock = c._sock
        if self._detached is None:
            sock.close()
            return
        try:
            sock.setblocking(True)
        except OSError as err:
            sock.close()
            if self._closed is not None:
                self._call_ending("closed", self._closed, c, err)
            return
        try:
            action = self._detached(c, sock)
        except Exception:
            logger.exception("evio: detached raised for connection %d; closing its socket", c.id)
            sock.close()  # nobody took it over
            return
        try:
            self._loop_action("detached", action)
        except TypeError:
            logger.exception("evio: detached returned a bad value for connection %d", c.id)

    def _call_ending(self, event: str, fn: Callable[[Conn, Any], object], c: Conn, arg: Any) -> None:
        """Call `closed`, logging what it raises."""
        try:
            self._loop_action(event, fn(c, arg))
        except Exception:
            logger.exception("evio: %s raised for connection %d", event, c.id)

    def _fail(self, c: Conn, event: str, err: Exception) -> None:
        logger.error("evio: %s raised for connection %d; closing it", event, c.id, exc_info=err)
        self._close(c, err)

    def _teardown(self) -> None:
        """Write what each connection can take at once, close them all, then the listeners."""
        conns = list(self._conns.values())
        try:
            for c in conns:
                if c._state == GONE:
                    continue
                out = c._out
                try:
                    while out:
                        head = out[0]
                        if c._send(head) < len(head):
                            break
                        out.popleft()
                    for _ in range(16):  # unread input would turn the close into a reset
                        if not c._recv_into(self._buf):
                            break
                except OSError:
                    pass
                self._close(c, None)
        finally:
            for c in conns:
                c._sock.close()
            for sock, _ in self._lingering.values():
                sock.close()
            self._lingering.clear()
            for listener in self._listeners.values():
                listener.close()
            self._waker.close()
            self._poller.close()
