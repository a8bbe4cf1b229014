"""Checking the values users hand to the loop: what events return, and what handles are given.

Every error names the event or the call at fault and shows the value, so a
mistake in a handler reads as what it is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .conn import Conn

#: A flat byte buffer, as the loop sends it.
Buffer = Union[bytes, bytearray, memoryview]

_OUT_TYPES = (bytes, bytearray, memoryview)


def bad_return(event: str, value: object, expected: str) -> TypeError:
    return TypeError(f"{event} returned {value!r}; expected {expected}")


def check_out(event: str, out: object) -> Buffer:
    """`out` as a flat byte buffer, or a `TypeError` naming the event."""
    if type(out) is memoryview and (out.ndim != 1 or out.itemsize != 1 or not out.c_contiguous):
        # len() of such a view counts items or rows, not bytes.
        return out.cast("B") if out.c_contiguous else out.tobytes()
    if not isinstance(out, _OUT_TYPES):
        raise bad_return(event, out, "bytes, bytearray, memoryview or None as output")
    return out


def as_buffer(c: Conn, out: object) -> Buffer:
    """What `Conn.write` was given, as a flat byte buffer, or a `TypeError` naming the connection."""
    if type(out) is memoryview and out.ndim == 1 and out.itemsize == 1 and out.c_contiguous:
        return out  # a proxy's usual case (a view of the loop's input buffer), checked in one go
    if not isinstance(out, _OUT_TYPES):
        raise TypeError(f"Conn.write() on connection {c.id} takes bytes, bytearray or memoryview, not {out!r}")
    return check_out("write", out)


def check_action(event: str, action: object, whole: object = None) -> int:
    """`action` as an int, or a `TypeError` naming the event and what it returned (`whole`, if a tuple)."""
    if action is None:
        return 0
    if isinstance(action, int) and not isinstance(action, bool) and 0 <= action <= 3:
        return int(action)
    if whole is None:
        raise bad_return(event, action, "an evio.Action")
    raise bad_return(event, whole, "an evio.Action as the last item of the tuple")


def seconds(what: str, value: object) -> float:
    """A delay in seconds as a float (negative counts as 0), or a `TypeError` naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{what} must be a number of seconds, not {value!r}")
    return max(0.0, float(value))
