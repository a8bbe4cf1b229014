"""The time-outs a connection is held to, with nginx's names and defaults.

| here        | nginx                   | default | what it bounds                                        |
|-------------|-------------------------|---------|-------------------------------------------------------|
| `header`    | `client_header_timeout` | 60 s    | the whole request head, from its first byte (from the |
|             |                         |         | accept on a new connection)                           |
| `body`      | `client_body_timeout`   | 60 s    | the wait between two reads of a request body          |
| `keepalive` | `keepalive_timeout`     | 75 s    | an idle connection between requests                   |
| `send`      | `send_timeout`          | 60 s    | the wait between two writes of a pending response     |

`HTTPConnection.deadline` says which one the connection is waiting on and
until when; `HTTPConnection.time_out` says what to send before closing.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Wait(enum.Enum):
    """What a connection waits for, and so which time-out applies."""

    #: A request head: nothing yet on a new connection, or part of one.
    HEADER = "header"
    #: More of a request body.
    BODY = "body"
    #: The next request on an idle kept-alive connection.
    KEEPALIVE = "keepalive"
    #: The client, to take some of a response that is pending.
    SEND = "send"
    #: Nothing from the client: the server is busy, or the connection is closing.
    NOTHING = "nothing"


@dataclass(frozen=True)
class Timeouts:
    """Seconds, each positive (`math.inf`: no limit)."""

    header: float = 60.0
    body: float = 60.0
    keepalive: float = 75.0
    send: float = 60.0

    def __post_init__(self) -> None:
        for name in ("header", "body", "keepalive", "send"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"the {name} time-out must be a positive number of seconds, not {value!r}")

    @property
    def shortest(self) -> float:
        """The shortest time-out: no wait that starts later can end before `now + shortest`."""
        return min(self.header, self.body, self.keepalive, self.send)

    def of(self, wait: Wait) -> float:
        """The time-out for `wait` (infinite for `Wait.NOTHING`)."""
        return math.inf if wait is Wait.NOTHING else float(getattr(self, wait.value))


def parse_time(text: str) -> float:
    """An nginx-style time: `60`, `60s`, `500ms`, `2m` or `1h`, in seconds."""
    value = text.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if value.endswith(suffix):
            value, factor = value[: -len(suffix)], scale
            break
    else:
        factor = 1.0
    try:
        seconds = float(value) * factor
    except ValueError:
        raise ValueError(f"{text!r} is not a time; expected seconds, or a number with ms, s, m or h") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{text!r} is not a positive time")
    return seconds
