"""The connection state machine's table, and `InputStream`: plain objects, no sockets."""

from __future__ import annotations

import pytest

import evio
from evio.state import READING, TRANSITIONS, WAKEABLE, WRITABLE, State, Trigger, move


def test_every_state_but_gone_can_end_and_gone_is_final() -> None:
    for state in State:
        if state is State.GONE:
            assert all(move(state, t) is None for t in Trigger)
        else:
            assert move(state, Trigger.END) is State.GONE


def test_every_state_is_reachable_from_open_or_connecting() -> None:
    reached = {State.OPEN, State.CONNECTING}
    frontier = list(reached)
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)


@pytest.mark.parametrize(
    ("state", "trigger", "expected"),
    [
        (State.OPEN, Trigger.CLOSE, State.CLOSING),
        (State.OPEN, Trigger.WRITE_EOF, State.HALF_CLOSED_LOCAL),
        (State.OPEN, Trigger.PEER_HALF_CLOSE, State.HALF_CLOSED_REMOTE),
        (State.OPEN, Trigger.PEER_EOF, State.CLOSING),
        (State.HALF_CLOSED_LOCAL, Trigger.PEER_EOF, State.CLOSING),
        (State.HALF_CLOSED_REMOTE, Trigger.WRITE_EOF, State.CLOSING),
        (State.CONNECTING, Trigger.CONNECTED, State.OPEN),
        (State.CONNECTING, Trigger.CLOSE, State.CLOSING),
        (State.CLOSING, Trigger.CLOSE, None),
        (State.CLOSING, Trigger.WRITE_EOF, None),
        (State.HALF_CLOSED_LOCAL, Trigger.WRITE_EOF, None),
        (State.DETACHING, Trigger.CLOSE, None),
    ],
)
def test_moves(state: State, trigger: Trigger, expected: State | None) -> None:
    assert move(state, trigger) is expected


def test_what_each_state_allows() -> None:
    assert {State.CONNECTING, State.OPEN, State.HALF_CLOSED_REMOTE} == WRITABLE
    assert {State.OPEN, State.HALF_CLOSED_LOCAL} == READING
    assert {State.OPEN, State.HALF_CLOSED_LOCAL, State.HALF_CLOSED_REMOTE} == WAKEABLE


def test_input_stream_is_linear_in_what_it_keeps() -> None:
    """An 8 MiB message in 64 KiB packets: `begin` extends one buffer instead of copying it each time."""
    s = evio.InputStream()
    packet = b"m" * 65536
    first = s.begin(packet)
    assert first is packet, "nothing kept: the packet itself, no copy"
    s.end(first)  # nothing consumed
    buffers = set()
    for _ in range(127):
        data = s.begin(packet)
        buffers.add(id(data))
        s.end(data)  # still nothing consumed: costs nothing
    assert len(buffers) == 1, "the same buffer, grown in place, every time"
    assert len(s) == 8 << 20
    data = s.begin(None)
    s.end(memoryview(data)[len(data) - 3 :])  # consumed all but three bytes
    assert s.begin(b"!") == b"mmm!"


def test_input_stream_tails() -> None:
    s = evio.InputStream()
    data = s.begin(b"abc")
    s.end(data[1:])
    assert s.begin(bytearray(b"d")) == b"bcd"
    s.end(memoryview(b"xyz")[1:])  # any tail is copied, views of other buffers too
    assert s.begin(None) == b"yz"
    s.end(None)
    assert len(s) == 0
    assert s.begin(memoryview(b"view")) == b"view"
    assert type(s.begin(memoryview(b"view"))) is bytes
