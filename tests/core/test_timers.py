"""`Server.after` and `Timer`, on both backends, and `evio.timers.TimerHeap` on its own."""

from __future__ import annotations

import functools
import logging
import math
import queue
import random
import threading
import time
from typing import Any, Callable, TypeVar

import pytest
from support import WAIT, Data, ServerThread, Start, TestEvents, local, recv_exactly

import evio
from evio.events import DataResult, OpenedResult, TickResult
from evio.timers import _COMPACT_AT, Timer, TimerHeap

T = TypeVar("T")


class Quiet(TestEvents):
    """Echoes, remembers the loop's thread, runs `calls` on a wake; no polling tick: only the inbox wakes the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_thread = 0
        self.opened_conns: queue.Queue[evio.Conn] = queue.Queue()
        self.calls: queue.Queue[Callable[[], None]] = queue.Queue()

    def serving(self, server: evio.Server) -> evio.Action | None:
        self.loop_thread = threading.get_ident()
        return super().serving(server)

    def tick(self) -> TickResult:
        return None

    def opened(self, conn: evio.Conn) -> OpenedResult:
        self.opened_conns.put(conn)
        return None

    def data(self, conn: evio.Conn, data: Data) -> DataResult:
        if data is None:
            while True:
                try:
                    call = self.calls.get_nowait()
                except queue.Empty:
                    return None
                call()
        return data


class Hand:
    """Runs code on the loop's thread through a wake of a connection kept for the purpose.

    Not through a timer: timers are what is under test here.
    """

    def __init__(self, st: ServerThread, ev: Quiet) -> None:
        self.ev = ev
        self.sock = st.connect()
        self.conn = ev.opened_conns.get(timeout=WAIT)

    def run(self, fn: Callable[[], T]) -> T:
        box: queue.Queue[tuple[bool, Any]] = queue.Queue()

        def call() -> None:
            try:
                box.put((True, fn()))
            except BaseException as err:
                box.put((False, err))

        self.ev.calls.put(call)
        assert self.conn.wake()
        ok, value = box.get(timeout=WAIT)
        if not ok:
            raise value
        result: T = value
        return result

    def heap_len(self) -> int:
        """Entries in the loop's timer heap, stale ones included."""
        timers = self.conn.server._loop._timers
        return self.run(lambda: len(timers))

    def __enter__(self) -> Hand:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def noop() -> None:
    return None


# ---- TimerHeap on its own: no loop, no sockets --------------------------------


def drain(heap: TimerHeap) -> list[Timer]:
    return heap.pop_due(math.inf)


def test_heap_pops_in_deadline_order() -> None:
    heap = TimerHeap()
    rng = random.Random(1)
    whens = [rng.uniform(0, 1000) for _ in range(5000)]
    timers = [heap.call_at(w, noop) for w in whens]
    assert len(heap) == 5000
    assert heap.next_due() == min(whens)
    popped = drain(heap)
    assert [t.when for t in popped] == sorted(whens)
    assert sorted(map(id, popped)) == sorted(map(id, timers))  # each timer came back exactly once
    assert len(heap) == 0
    assert heap.next_due() is None


def test_heap_keeps_insertion_order_for_equal_deadlines() -> None:
    heap = TimerHeap()
    # Interleave three deadlines so the heap cannot keep the order by accident.
    timers = [heap.call_at(float(i % 3), noop) for i in range(300)]
    popped = drain(heap)
    expected = [t for w in (0.0, 1.0, 2.0) for t in timers if t.when == w]
    assert [id(t) for t in popped] == [id(t) for t in expected]


def test_heap_pop_due_takes_only_what_is_due() -> None:
    heap = TimerHeap()
    for w in (5.0, 1.0, 3.0, 2.0, 4.0):
        heap.call_at(w, noop)
    assert [t.when for t in heap.pop_due(2.5)] == [1.0, 2.0]
    assert heap.next_due() == 3.0
    assert heap.pop_due(2.9) == []
    assert [t.when for t in heap.pop_due(3.0)] == [3.0]  # due exactly at its deadline
    assert len(heap) == 2


def test_heap_discards_stale_entries_at_the_top() -> None:
    heap = TimerHeap()
    a = heap.call_at(1.0, noop)
    b = heap.call_at(2.0, noop)
    c = heap.call_at(3.0, noop)
    a.cancel()
    b.cancel()
    assert [a.cancelled, b.cancelled, c.cancelled] == [True, True, False]
    assert len(heap) == 3  # cancelling is O(1): the entries stay until they reach the top
    assert heap.next_due() == 3.0
    assert len(heap) == 1  # next_due dropped the two stale entries on its way
    d = heap.call_at(0.5, noop)
    d.cancel()
    assert [t.when for t in heap.pop_due(10.0)] == [3.0]  # pop_due skips stale entries too
    assert c.cancelled is False  # popped, not run: only running or cancel() marks it done
    assert len(heap) == 0


def test_heap_cancel_twice_and_push_of_a_cancelled_timer_are_no_ops() -> None:
    heap = TimerHeap()
    t = heap.call_at(1.0, noop)
    t.cancel()
    t.cancel()
    assert heap.next_due() is None
    heap.push(t)  # as the loop does with a timer another thread scheduled and cancelled at once
    assert len(heap) == 0
    assert heap.next_due() is None


def test_heap_compaction_drops_stale_entries_and_keeps_live_ones_in_order() -> None:
    heap = TimerHeap()
    n = 4 * _COMPACT_AT
    rng = random.Random(2)
    timers = [heap.call_at(rng.uniform(0, 100), noop) for _ in range(n)]
    keep = timers[::4]
    for t in timers:
        if t not in keep:
            t.cancel()
    assert len(heap) == n  # nothing reached the top yet: every entry is still there
    heap.call_at(50.0, noop)  # a push after many cancels rebuilds the heap without them
    assert len(heap) <= len(keep) + 1
    popped = drain(heap)
    assert [id(t) for t in popped if t in keep] == [id(t) for t in sorted(keep, key=lambda t: t.when)]


def test_heap_keeps_the_timer_whose_push_compacts_it() -> None:
    heap = TimerHeap()
    for t in [heap.call_at(100.0, noop) for _ in range(2 * _COMPACT_AT)]:
        t.cancel()
    # push() binds `entries = self._entries`, then _compact() makes a new list, then heappush goes to
    # the old one: the new timer is dropped with the stale entries.
    pushed = heap.call_at(1.0, noop)
    assert heap.next_due() == 1.0
    assert heap.pop_due(1.0) == [pushed]


def test_heap_does_not_grow_under_schedule_and_cancel() -> None:
    heap = TimerHeap()
    live = heap.call_at(1e9, noop)  # a long-lived timer at the bottom of the heap
    biggest = 0
    for i in range(50_000):
        heap.call_at(1000.0 + i, noop).cancel()
        biggest = max(biggest, len(heap))
    # Without compaction the heap would hold 50,001 entries; it is rebuilt once stale ones pass the threshold.
    assert biggest <= 2 * _COMPACT_AT + 2
    assert drain(heap) == [live]


class CountingFloat(float):
    """A deadline that counts how often the heap compares it."""

    compares = 0

    def __lt__(self, other: float) -> bool:
        CountingFloat.compares += 1
        return float(self) < float(other)

    def __eq__(self, other: object) -> bool:
        CountingFloat.compares += 1
        return float.__eq__(self, other)

    __hash__ = float.__hash__


@pytest.mark.skipif(
    evio.timers.__file__ is not None and not evio.timers.__file__.endswith(".py"),
    reason="compiled with mypyc, the heap compares its float deadlines natively: a float subclass cannot count them "
    "(the plain build's run checks the algorithm, which is the same source)",
)
def test_heap_costs_log_n_comparisons_per_timer() -> None:
    """Thousands of timers cost O(log n) each: count the comparisons of deadlines, not the time."""
    n = 20_000
    heap = TimerHeap()
    rng = random.Random(3)
    CountingFloat.compares = 0
    timers = [heap.call_at(CountingFloat(rng.uniform(0, 1000)), noop) for _ in range(n)]
    for t in timers[::2]:
        t.cancel()
    popped = drain(heap)
    assert len(popped) == n // 2
    # heappush and heappop compare a (when, seq, timer) tuple about log2(n) times each, and a tuple
    # comparison costs one or two comparisons of `when`; 6 * log2(n) per timer leaves room for that and
    # for compaction. A linear scan per timer would cost thousands of comparisons each.
    assert CountingFloat.compares <= 6 * n * math.log2(n)
    assert CountingFloat.compares >= n  # the counting itself works: the heap did compare these deadlines


# ---- Server.after on a running loop --------------------------------------------


def test_after_runs_once_on_the_loop_thread_not_before_its_delay(start_server: Start, backend: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    calls: list[tuple[int, float]] = []
    done = threading.Event()
    start = time.monotonic()
    t = st.server.after(0.05, lambda: calls.append((threading.get_ident(), time.monotonic())))
    assert isinstance(t, evio.Timer)
    # A later timer: when it runs, the first has had every chance to run (twice, if it were going to).
    st.server.after(0.15, done.set)
    assert done.wait(WAIT)
    assert len(calls) == 1
    thread, at = calls[0]
    assert thread == ev.loop_thread
    assert at - start >= 0.05  # never early: the deadline is on the monotonic clock
    assert not t.cancelled  # it ran: nothing cancelled it
    t.cancel()  # cancelling one that already ran is harmless
    assert not t.cancelled
    with st.connect() as c:  # and the loop goes on serving
        c.sendall(b"ping")
        assert recv_exactly(c, 4) == b"ping"
    st.stop()
    assert len(calls) == 1


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_10000_timers_half_cancelled_the_rest_run_in_deadline_order(
    start_server: Start, backend: str, where: str
) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    n = 10_000
    rng = random.Random(5)
    # The earliest is due after 0.3 s: time enough to cancel half of them before any comes due.
    delays = [rng.uniform(0.3, 0.6) for _ in range(n)]
    ran: list[int] = []
    threads: list[int] = []
    done = threading.Event()

    def record(i: int) -> None:
        ran.append(i)
        threads.append(threading.get_ident())

    def schedule() -> list[evio.Timer]:
        timers = [server.after(delays[i], functools.partial(record, i)) for i in range(n)]
        server.after(max(delays) + 0.05, done.set)  # due after every one of them
        return timers

    def cancel_half(timers: list[evio.Timer]) -> None:
        for t in timers[1::2]:
            t.cancel()

    with Hand(st, ev) as hand:
        if where == "loop":
            timers = hand.run(schedule)
            hand.run(lambda: cancel_half(timers))
        else:
            timers = schedule()
            hand.run(noop)  # the loop has taken every posted timer: the cancels below find them in its heap
            cancel_half(timers)
        # None ran yet, so every cancel stopped a timer that was due to run.
        assert time.monotonic() < min(t.when for t in timers), "too slow to cancel before the first deadline"
        assert done.wait(WAIT)
        kept = range(0, n, 2)
        assert sorted(ran) == list(kept), "exactly the timers that were not cancelled ran, once each"
        # Deadline order; equal deadlines in the order they were scheduled.
        assert ran == sorted(kept, key=lambda i: (timers[i].when, i))
        assert set(threads) == {ev.loop_thread}
        assert hand.heap_len() == 0  # the cancelled half was discarded as it reached the top


@pytest.mark.parametrize("where", ["loop", "thread"])
def test_schedule_and_cancel_over_and_over_does_not_grow_the_heap(
    start_server: Start, backend: str, where: str
) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    live = server.after(60.0, noop)  # scheduled before the churn and still due after it
    per_round, rounds = 1000, 40

    def one_round() -> None:
        for t in [server.after(60.0, noop) for _ in range(per_round)]:
            t.cancel()

    sizes: list[int] = []
    with Hand(st, ev) as hand:
        for _ in range(rounds):
            if where == "loop":
                hand.run(one_round)
            else:
                one_round()
            sizes.append(hand.heap_len())
        # 40,000 cancelled timers went through the heap; it is rebuilt without them once they pass the
        # threshold and outnumber the live ones, so it never holds much more than two rounds' worth.
        assert max(sizes) <= 2 * per_round + _COMPACT_AT + 8, sizes
        entries = server._loop._timers._entries
        assert hand.run(lambda: any(entry[2] is live for entry in entries)), "the live timer survived every rebuild"
    assert not live.cancelled
    live.cancel()


def test_timer_scheduled_after_many_cancels_still_runs(start_server: Start, backend: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    victim_ran = threading.Event()
    sentinel_ran = threading.Event()

    def churn_then_schedule() -> None:
        # 2,000 cancelled timers: more than TimerHeap's threshold, and more than half of its entries.
        for t in [server.after(60.0, noop) for _ in range(2 * per_round)]:
            t.cancel()
        server.after(0.01, victim_ran.set)  # this push compacts the heap
        server.after(0.05, sentinel_ran.set)  # this one does not (nothing is stale any more)

    per_round = _COMPACT_AT
    with Hand(st, ev) as hand:
        hand.run(churn_then_schedule)
    assert sentinel_ran.wait(WAIT)
    assert victim_ran.is_set(), "the timer due before the sentinel did not run"


@pytest.mark.parametrize("scheduled_on", ["loop", "thread"])
def test_cancel_from_another_thread_stops_the_timer(start_server: Start, backend: str, scheduled_on: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    ran: list[str] = []
    done = threading.Event()

    def schedule() -> evio.Timer:
        return server.after(0.2, lambda: ran.append("cancelled timer"))

    with Hand(st, ev) as hand:
        t = hand.run(schedule) if scheduled_on == "loop" else schedule()
    t.cancel()  # from this (non-loop) thread
    # The cancel came before the deadline, so this tests cancelling, not a race with running it.
    assert time.monotonic() < t.when, "too slow to cancel before the deadline"
    assert t.cancelled
    server.after(t.when - time.monotonic() + 0.05, done.set)  # due after the cancelled one would have run
    assert done.wait(WAIT)
    assert ran == []


def test_cancel_from_an_earlier_timer_in_the_same_turn(start_server: Start, backend: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    ran: list[str] = []
    done = threading.Event()

    def schedule() -> None:
        # Both due together; the first cancels the second (and the loop may pop both in one turn).
        victim: list[evio.Timer] = []

        def first() -> None:
            ran.append("first")
            victim[0].cancel()

        server.after(0.05, first)
        victim.append(server.after(0.05, lambda: ran.append("second")))
        server.after(0.1, done.set)

    with Hand(st, ev) as hand:
        hand.run(schedule)
    assert done.wait(WAIT)
    assert ran == ["first"]


def test_after_from_several_threads_runs_in_each_threads_call_order(start_server: Start, backend: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    ran: list[tuple[int, int]] = []
    per_thread = 500
    go = threading.Barrier(4)
    errors: list[BaseException] = []

    def schedule(k: int) -> None:
        try:
            go.wait(WAIT)
            for i in range(per_thread):
                server.after(0, functools.partial(ran.append, (k, i)))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=schedule, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    done = threading.Event()
    server.after(0, done.set)  # posted after every other call: it runs after them
    assert done.wait(WAIT)
    assert len(ran) == 4 * per_thread
    for k in range(4):
        assert [i for j, i in ran if j == k] == list(range(per_thread))


def test_after_with_a_negative_delay_runs_at_once(start_server: Start, backend: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    order: queue.Queue[str] = queue.Queue()
    st.server.after(5.0, lambda: order.put("5 s"))
    st.server.after(0.2, lambda: order.put("0.2 s"))
    st.server.after(-3.0, lambda: order.put("-3 s"))  # counts as 0: before the others, not 3 s late
    assert order.get(timeout=WAIT) == "-3 s"
    assert order.get(timeout=WAIT) == "0.2 s"


def test_raising_callback_is_logged_and_the_loop_goes_on(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    boom = RuntimeError("boom from a timer")
    later = threading.Event()

    def explode() -> None:
        raise boom

    with caplog.at_level(logging.ERROR, logger="evio"):
        st.server.after(0, explode)
        st.server.after(0.05, later.set)
        assert later.wait(WAIT), "a timer after the one that raised still runs"
    records = [r for r in caplog.records if r.name == "evio" and r.exc_info and r.exc_info[1] is boom]
    assert len(records) == 1
    assert records[0].levelno >= logging.ERROR
    assert st.thread.is_alive()
    with st.connect() as c:  # the loop still serves connections
        c.sendall(b"still here")
        assert recv_exactly(c, 10) == b"still here"


def test_callback_returning_an_action_is_logged_and_other_values_are_ignored(
    start_server: Start, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`server.after(5, conn.close)` is fine (close returns a bool); an Action returned is a mistake worth a log."""
    ev = Quiet()
    st = start_server(ev, local(backend))
    later = threading.Event()
    ran: list[str] = []

    def returns_something() -> int:
        ran.append("int")
        return 42

    def returns_an_action() -> evio.Action:
        ran.append("action")
        return evio.Action.SHUTDOWN

    with caplog.at_level(logging.ERROR, logger="evio"):
        st.server.after(0, returns_something)
        st.server.after(0, returns_an_action)
        st.server.after(0.05, later.set)
        assert later.wait(WAIT)
    assert ran == ["int", "action"]
    records = [r for r in caplog.records if r.name == "evio" and r.levelno >= logging.ERROR]
    assert len(records) == 1
    text = records[0].getMessage() + repr(records[0].exc_info[1] if records[0].exc_info else "")
    assert "returns_an_action" in text and "SHUTDOWN" in text and "server.shutdown()" in text
    assert st.thread.is_alive(), "an Action returned from a timer does not stop the server"


def test_after_once_shutting_down_or_after_serve_returned_raises(start_server: Start, backend: str) -> None:
    ev = Quiet()
    st = start_server(ev, local(backend))
    server = st.server
    seen: queue.Queue[BaseException | None] = queue.Queue()

    def stop_then_schedule() -> None:
        server.shutdown()  # on the loop's thread: takes effect at once
        try:
            server.after(0, noop)
        except BaseException as err:
            seen.put(err)
        else:
            seen.put(None)

    server.after(0, stop_then_schedule)
    err = seen.get(timeout=WAIT)
    assert isinstance(err, RuntimeError)
    st.join()
    with pytest.raises(RuntimeError, match="shutting down"):
        server.after(0, noop)
    with pytest.raises(RuntimeError):
        server.after(1.0, noop)
