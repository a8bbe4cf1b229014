"""The connection state machine: every state a `Conn` can be in, and every move between them.

Everything that changes a connection's state goes through `move`; the loop
then does what the new state asks for (see `Loop._settle`). The drawing is
in the loop's design notes (`evio.loop`).

A state says what the *user* may still do with a connection. Output that is
already queued drains in every state but GONE; what happens once it has
drained depends on the state:

- CONNECTING, OPEN, HALF_CLOSED_REMOTE: nothing, the connection waits.
- HALF_CLOSED_LOCAL: the write side is shut down (the peer reads end of input).
- CLOSING: the socket closes, without a reset, and `closed` fires.
- DETACHING: the socket goes to `detached`.
"""

from __future__ import annotations

import enum


class State(enum.IntEnum):
    """Where a connection is in its life."""

    #: Made by `dial` and not connected yet (resolving, or connecting): writes are queued.
    CONNECTING = 0
    #: Reading and writing.
    OPEN = 1
    #: `write_eof()` was called: no more writes; the write side shuts once output drains; still reading.
    HALF_CLOSED_LOCAL = 2
    #: The peer ended its input and the connection asked for `half_close`: still writing, no more reading.
    HALF_CLOSED_REMOTE = 3
    #: Closing: no more writes or reads; pending output drains, then the socket closes.
    CLOSING = 4
    #: Detaching: pending output drains, then the socket is handed to `Events.detached`.
    DETACHING = 5
    #: Closed or detached: `closed` (or `detached`) has fired or is about to.
    GONE = 6


class Trigger(enum.IntEnum):
    """What moves a connection from one state to another (ints, so the table's keys hash in C)."""

    CONNECTED = 0  # a dial's connect succeeded
    CLOSE = 1  # Action.CLOSE or conn.close()
    DETACH = 2  # Action.DETACH
    WRITE_EOF = 3  # conn.write_eof()
    PEER_EOF = 4  # the peer ended its input, on a connection without half_close
    PEER_HALF_CLOSE = 5  # the peer ended its input, on a connection with half_close
    END = 6  # closed, detached, failed or reset: nothing more happens


S, T = State, Trigger

#: (state, trigger) -> new state. A pair that is missing means the trigger does nothing in that state.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (S.CONNECTING, T.CONNECTED): S.OPEN,
    (S.CONNECTING, T.CLOSE): S.CLOSING,  # connects, sends what was written, then closes
    (S.CONNECTING, T.WRITE_EOF): S.HALF_CLOSED_LOCAL,
    (S.OPEN, T.CLOSE): S.CLOSING,
    (S.OPEN, T.DETACH): S.DETACHING,
    (S.OPEN, T.WRITE_EOF): S.HALF_CLOSED_LOCAL,
    (S.OPEN, T.PEER_EOF): S.CLOSING,
    (S.OPEN, T.PEER_HALF_CLOSE): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_LOCAL, T.CLOSE): S.CLOSING,
    (S.HALF_CLOSED_LOCAL, T.DETACH): S.DETACHING,
    (S.HALF_CLOSED_LOCAL, T.PEER_EOF): S.CLOSING,  # both directions are done
    (S.HALF_CLOSED_LOCAL, T.PEER_HALF_CLOSE): S.CLOSING,
    (S.HALF_CLOSED_REMOTE, T.CLOSE): S.CLOSING,
    (S.HALF_CLOSED_REMOTE, T.DETACH): S.DETACHING,
    (S.HALF_CLOSED_REMOTE, T.WRITE_EOF): S.CLOSING,  # both directions are done
}
for _state in State:
    if _state is not S.GONE:
        TRANSITIONS[_state, T.END] = S.GONE
del _state

#: States in which `Conn.write` (and `close`, `write_eof`) are accepted.
WRITABLE = frozenset({S.CONNECTING, S.OPEN, S.HALF_CLOSED_REMOTE})
#: States in which the loop reads the connection's input (unless it is paused).
READING = frozenset({S.OPEN, S.HALF_CLOSED_LOCAL})
#: States in which a wake delivers `data(conn, None)`.
WAKEABLE = frozenset({S.OPEN, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE})


def move(state: State, trigger: Trigger) -> State | None:
    """The state `trigger` leads to from `state`, or `None` when it does nothing there."""
    return TRANSITIONS.get((state, trigger))
