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
write keeps the rest and asks the poller for writability.

*Reading pauses while output is pending.* A connection with unsent output
is watched for writability only, not readability, until the output drains.
A client that sends but does not read is then held back by TCP's own flow
control, and the server never buffers more than one read's worth of replies
beyond what the kernel holds. The same rule orders replies: new input is
only read once earlier replies are out.

*Hot path.* Poll, receive, `data`, send: attribute look-ups are hoisted into
locals, events the user did not override are never called, and a reply of
`bytes` goes straight to `send` without being copied.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable

from .addresses import Listener, bind_all, parse
from .conn import Conn, Server, apply_options
from .events import Action, Events, Options, overridden
from .pollers import IN, OUT, make_poller
from .waker import Waker

try:
    import fcntl
    import termios
except ImportError:  # not POSIX
    fcntl = termios = None  # type: ignore[assignment]

logger = logging.getLogger("evio")

#: A closing connection whose peer reads nothing for this long is dropped.
CLOSE_TIMEOUT = 30.0
#: How long to stop accepting after the process ran out of descriptors.
ACCEPT_PAUSE = 0.25
#: Connections accepted per readiness event of a listener, at most.
ACCEPTS_PER_EVENT = 128
#: Bytes read per readiness event, at most.
READ_SIZE = 65536

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
    try:
        listeners = bind_all(parsed)
    except BaseException:
        poller.close()
        raise
    Loop(events, listeners, poller).run()


def _bad_return(event: str, value: object, expected: str) -> TypeError:
    return TypeError(f"{event} returned {value!r}; expected {expected}")


def _unsent(c: Conn) -> int | None:
    """Bytes in the kernel's send queue for `c` that the peer has not taken, where the OS tells."""
    if _TIOCOUTQ is None:
        return None
    try:
        return struct.unpack("i", fcntl.ioctl(c._fd, _TIOCOUTQ, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
    except OSError:
        return None


def _check_out(event: str, out: object) -> bytes | bytearray | memoryview:
    if type(out) is memoryview and (out.itemsize != 1 or not out.c_contiguous):
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


class Loop:
    """One event loop over one poller: connections, listeners, the waker and the timers."""

    def __init__(self, events: Events, listeners: list[Listener], poller: Any) -> None:
        self._events = events
        self._listeners = {lst.fd: lst for lst in listeners}
        self._poller = poller
        self._waker = Waker()
        self._conns: dict[int, Conn] = {}  # by descriptor
        self._by_id: dict[int, Conn] = {}
        self._next_id = 1
        self._closing: set[Conn] = set()  # CLOSING or DETACHING, with a deadline
        self._local_wakes: list[int] = []
        self._thread = 0
        self._stopping = False
        self._next_tick: float | None = None
        self._accept_resume: float | None = None
        self._out_of_fds_logged = False
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
            while not self._stopping:
                self._turn()
        finally:
            self._teardown()

    def _turn(self) -> None:
        """One poll and everything it reported, then the timers that are due."""
        conns_get = self._conns.get
        data_cb = self._data
        buf, view = self._buf, self._view
        hooks = self._prewrite is not None or self._postwrite is not None
        timeout = self._timeout()
        for fd, _mask in self._poller.poll(timeout):
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
                if type(r) is bytes and not hooks:
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
                else:
                    self._reply(c, "data", r)
            if self._stopping:
                return
        if self._local_wakes:
            wakes, self._local_wakes = self._local_wakes, []
            self._deliver_wakes(wakes)
        if self._next_tick is not None or self._closing or self._accept_resume is not None:
            self._run_timers()

    def _timeout(self) -> float:
        if self._local_wakes:
            return 0
        if self._next_tick is None and not self._closing and self._accept_resume is None:
            return -1
        due = [c._deadline for c in self._closing]
        if self._next_tick is not None:
            due.append(self._next_tick)
        if self._accept_resume is not None:
            due.append(self._accept_resume)
        return max(0.0, min(due) - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        if self._accept_resume is not None and now >= self._accept_resume:
            self._accept_resume = None
            for fd in self._listeners:
                self._poller.register(fd, IN)
        for c in [c for c in self._closing if now >= c._deadline]:
            queued = _unsent(c)
            if queued is not None and queued != c._unsent:
                # The peer took bytes from the kernel's queue: it reads, if slowly.
                c._unsent = queued
                c._deadline = now + CLOSE_TIMEOUT
                continue
            self._close(c, TimeoutError(f"connection {c.id}: the peer read nothing for {CLOSE_TIMEOUT:g} s"))
        if self._next_tick is not None and now >= self._next_tick and not self._stopping:
            self._run_tick()

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
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay != delay:
            raise _bad_return("tick", r, "a delay in seconds, (delay, action) or None")
        self._next_tick = time.monotonic() + max(0.0, float(delay))
        self._loop_action("tick", action)

    def _loop_action(self, event: str, action: object) -> None:
        """Act on what `serving`, `tick`, `closed` or `detached` returned: only SHUTDOWN means something there."""
        if _check_action(event, action) == Action.SHUTDOWN:
            self._stopping = True

    # ---- listeners and wakes -------------------------------------------

    def _ready_other(self, fd: int) -> None:
        listener = self._listeners.get(fd)
        if listener is not None:
            self._accept(listener)
        elif fd == self._waker.fd:
            self._deliver_wakes(self._waker.take())
        # Otherwise a stale report for a descriptor closed earlier in this batch.

    def _accept(self, listener: Listener) -> None:
        accept = listener.sock.accept
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, addr = accept()
            except (BlockingIOError, InterruptedError):
                # The backlog is drained: any shortage of descriptors is over.
                self._out_of_fds_logged = False
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
        if not self._out_of_fds_logged:
            self._out_of_fds_logged = True
            logger.warning("evio: cannot accept (%s); pausing accepts, existing connections are served", err)
        for fd in self._listeners:
            self._poller.unregister(fd)
        self._accept_resume = time.monotonic() + ACCEPT_PAUSE

    def _open(self, sock: socket.socket, addr: Any, listener: Listener) -> None:
        try:
            sock.setblocking(False)
            if not listener.is_unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
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
        if not len(out) or c._state == GONE:
            return
        if c._out is not None:
            c._out += out
            return
        if self._prewrite is not None and self._hook_action(c, self._prewrite(c, len(out))):
            return
        try:
            sent = c._send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._close(c, err)
            return
        if sent < len(out):
            self._keep(c, out, sent)
        if self._postwrite is not None:
            self._hook_action(c, self._postwrite(c, sent, len(c._out) if c._out is not None else 0))

    def _keep(self, c: Conn, out: bytes | bytearray | memoryview, sent: int) -> None:
        """Copy what `send` did not take and watch for writability instead of input."""
        c._out = bytearray(memoryview(out)[sent:])
        self._poller.modify(c._fd, OUT)

    def _hook_action(self, c: Conn, action: object) -> bool:
        """Act on what `prewrite`/`postwrite` returned; True when the connection is gone."""
        act = _check_action("prewrite/postwrite", action)
        if act == Action.CLOSE:
            self._close(c, None)
            return True
        if act == Action.SHUTDOWN:
            self._stopping = True
        elif act == Action.DETACH:
            self._act(c, act)
        return c._state == GONE

    def _flush(self, c: Conn) -> None:
        """The socket is writable (or failed): send what is pending."""
        out = c._out
        assert out is not None
        try:
            if self._prewrite is not None and self._hook_action(c, self._prewrite(c, len(out))):
                return
            try:
                sent = c._send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as err:
                self._close(c, err)
                return
            if sent:
                del out[:sent]
                if c._state != OPEN:
                    c._deadline = time.monotonic() + CLOSE_TIMEOUT
            if self._postwrite is not None and self._hook_action(c, self._postwrite(c, sent, len(out))):
                return
        except Exception as err:
            self._fail(c, "prewrite/postwrite", err)
            return
        if out or c._out is not out:
            return
        c._out = None
        if c._state == OPEN:
            self._poller.modify(c._fd, IN)
        elif c._state == CLOSING:
            self._close(c, None)
        elif c._state == DETACHING:
            self._detach(c)

    def _act(self, c: Conn, act: int) -> None:
        if act == Action.SHUTDOWN:
            self._stopping = True
        elif c._state == GONE:
            return
        elif act == Action.CLOSE or act == Action.DETACH:
            if c._out is None:
                self._close(c, None) if act == Action.CLOSE else self._detach(c)
            elif c._state == OPEN:
                c._state = CLOSING if act == Action.CLOSE else DETACHING
                c._deadline = time.monotonic() + CLOSE_TIMEOUT
                self._closing.add(c)

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
        if not self._call_ending("detached", self._detached, c, sock):
            sock.close()  # nobody took it over

    def _call_ending(self, event: str, fn: Callable[[Conn, Any], object], c: Conn, arg: Any) -> bool:
        """Call `closed` or `detached`, logging what it raises; False when it raised."""
        try:
            self._loop_action(event, fn(c, arg))
        except Exception:
            logger.exception("evio: %s raised for connection %d", event, c.id)
            return False
        return True

    def _fail(self, c: Conn, event: str, err: Exception) -> None:
        logger.error("evio: %s raised for connection %d; closing it", event, c.id, exc_info=err)
        self._close(c, err)

    def _teardown(self) -> None:
        """Write what each connection can take at once, close them all, then the listeners."""
        conns = list(self._conns.values())
        try:
            for c in conns:
                if c._out and c._state != GONE:
                    try:
                        c._send(c._out)
                    except OSError:
                        pass
                self._close(c, None)
        finally:
            for c in conns:
                c._sock.close()
            for listener in self._listeners.values():
                listener.close()
            self._waker.close()
            self._poller.close()
