"""Backends, their health, and the policies that pick one for a new client (HAProxy's names).

- `roundrobin`: smooth weighted round robin: with weights 3 and 1 the order
  is A A B A, A A B A, ..., never four in a row to one backend.
- `leastconn`: the backend with the fewest active connections for its weight;
  ties go round robin.
- `source`: a hash of the client's address picks from a table where each
  backend that is up appears `weight` times, so a client keeps its backend
  for as long as the set of backends that are up does not change.

A backend is up until `fall` checks in a row fail, then down until `rise`
checks in a row succeed. A client's connection that cannot reach the
backend counts as a failed check.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

POLICIES = ("roundrobin", "leastconn", "source")


@dataclass(eq=False)
class Backend:
    """One server behind the balancer, with its health and its counters."""

    addr: str
    weight: int = 1
    up: bool = True
    active: int = 0  # client connections paired with it now (connecting ones too)
    total: int = 0  # client connections ever sent to it
    bytes_in: int = 0  # client to backend
    bytes_out: int = 0  # backend to client
    failures: int = 0  # checks failed in a row
    successes: int = 0  # checks passed in a row
    current: int = field(default=0, repr=False)  # smooth round robin's running score

    def describe(self) -> str:
        """One line for the log: state, connections, bytes each way."""
        return (
            f"backend {self.addr} weight={self.weight} {'UP' if self.up else 'DOWN'} "
            f"active={self.active} total={self.total} bytes_in={self.bytes_in} bytes_out={self.bytes_out}"
        )


def parse_backend(text: str) -> Backend:
    """`ADDR[,weight=N]` as a `Backend`; a `ValueError` naming the text when it is malformed."""
    addr, _, options = text.partition(",")
    weight = 1
    for option in filter(None, options.split(",")):
        key, eq, value = option.partition("=")
        if key != "weight" or not eq:
            raise ValueError(f"bad backend {text!r}: unknown option {option!r}; the only option is weight=N")
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 256:
            raise ValueError(f"bad backend {text!r}: weight must be a whole number from 1 to 256, not {value!r}")
        weight = int(value)
    if not addr:
        raise ValueError(f"bad backend {text!r}: no address")
    return Backend(addr, weight)


class Balancer:
    """Picks a backend for each new client, and keeps each backend's health."""

    def __init__(
        self,
        backends: Sequence[Backend],
        policy: str = "roundrobin",
        *,
        rise: int = 2,
        fall: int = 3,
        on_change: Callable[[Backend], None] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        if policy not in POLICIES:
            raise ValueError(f"unknown balance {policy!r}; expected one of {', '.join(POLICIES)}")
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be at least 1, not {rise} and {fall}")
        self.backends = list(backends)
        self.policy = policy
        self.rise = rise
        self.fall = fall
        self._on_change = on_change
        self._next = 0  # leastconn's round robin among equals

    def pick(self, client: object = None, exclude: Backend | None = None) -> Backend | None:
        """The backend for a new client (`client` is its address, for `source`); `None` when none is up."""
        up = [b for b in self.backends if b.up and b is not exclude]
        if not up:
            return None
        if self.policy == "roundrobin":
            return self._roundrobin(up)
        if self.policy == "leastconn":
            return self._leastconn(exclude)
        return self._source(up, client)

    def _roundrobin(self, up: list[Backend]) -> Backend:
        total = 0
        best = up[0]
        for b in up:
            b.current += b.weight
            total += b.weight
            if b.current > best.current:
                best = b
        best.current -= total
        return best

    def _leastconn(self, exclude: Backend | None) -> Backend:
        # The scan starts just after the backend picked last, in the list's order (down ones skipped),
        # so that ties go round robin. Compare active/weight without division:
        # b is better when b.active * best.weight < best.active * b.weight.
        n = len(self.backends)
        best: Backend | None = None
        for i in range(n):
            b = self.backends[(self._next + i) % n]
            if not b.up or b is exclude:
                continue
            if best is None or b.active * best.weight < best.active * b.weight:
                best = b
        assert best is not None  # pick() made sure one is up
        self._next = self.backends.index(best) + 1
        return best

    def _source(self, up: list[Backend], client: object) -> Backend:
        table = [b for b in up for _ in range(b.weight)]
        return table[_address_hash(client) % len(table)]

    def connected(self, backend: Backend) -> None:
        """A client was paired with `backend`."""
        backend.active += 1
        backend.total += 1

    def disconnected(self, backend: Backend) -> None:
        """A client's pair with `backend` ended."""
        backend.active -= 1

    def report(self, backend: Backend, ok: bool) -> None:
        """A health check's outcome (or a client's connect that failed, `ok=False`)."""
        if ok:
            backend.failures = 0
            backend.successes += 1
            if not backend.up and backend.successes >= self.rise:
                self._set(backend, True)
        else:
            backend.successes = 0
            backend.failures += 1
            if backend.up and backend.failures >= self.fall:
                self._set(backend, False)

    def _set(self, backend: Backend, up: bool) -> None:
        backend.up = up
        backend.current = 0
        if self._on_change is not None:
            self._on_change(backend)


def _address_hash(client: object) -> int:
    """A hash of the client's host (not its port) that is the same in every process and run."""
    host = client[0] if isinstance(client, tuple) and client else client
    return zlib.crc32(str(host).encode())
