"""The figures the benchmarks aim at, as one table, and how a report checks its results against them.

Each target bounds one figure of some contenders, in some cases, relative to the reference of the
same run (redis-server, nginx, HAProxy), or to another contender when `versus` names one. The reports
(`report.py`) check every result against this table when they are rendered, so changing a bound here
and rebuilding a report from its JSON shows the new verdicts without measuring again.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
#: What each benchmark's ratios are to.
REFERENCES = {"redis": "redis-server", "http": "nginx", "proxy": "HAProxy"}


@dataclass(frozen=True)
class Target:
    """A bound on one figure: `figure <op> bound` in every case of `cases`, for each of `servers`.

    A case is the path below a contender's summary to the figures (e.g. ("loads", "P128", "SET")).
    Without `versus` the figure is a ratio to the reference already (`rps_ratio`, `cpu_ratio`); with
    it, the figure is divided by the same figure of the `versus` contender (the ratio of medians).
    """

    benchmark: str  # "redis", "http" or "proxy": the report it belongs to
    servers: tuple[str, ...]  # the contenders' keys it applies to
    what: str  # as the report lists it
    figure: str
    op: str  # ">=", "<=" or "<"
    bound: float
    cases: tuple[tuple[str, ...], ...]
    versus: str = ""  # another contender's key, or "" for the reference

    @property
    def label(self) -> str:
        against = f"{self.versus}'s" if self.versus else REFERENCES[self.benchmark]
        bound = f"{self.bound:.1f}" if self.bound == int(self.bound) else f"{self.bound:g}"
        return f"{self.what} {self.op} {bound}x {against}"

    def met(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.bound)


def _cases(group: str, loads: Sequence[str], tests: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple((group, load, test) for load in loads for test in tests)


PING_SET_GET = ("PING_INLINE", "PING_MBULK", "SET", "GET")
SET_GET = ("SET", "GET")
CPYTHON_CLONES = ("evio", "evio-compiled")
PYPY_CLONES = ("evio-pypy",)
ALL_CLONES = (*CPYTHON_CLONES, *PYPY_CLONES)
UNPIPELINED = _cases("loads", ("P1", "P1_C1000"), PING_SET_GET)

TARGETS: tuple[Target, ...] = (
    # The Redis clone against redis-server (the reference) and the same protocol on asyncio and uvloop.
    Target("redis", ALL_CLONES, "-P 128: requests/s", "rps_ratio", ">=", 1.0, _cases("loads", ("P128",), PING_SET_GET)),
    Target("redis", ALL_CLONES, "-P 1: CPU per request", "cpu_ratio", "<=", 1.25, UNPIPELINED),
    Target("redis", ALL_CLONES, "-P 1: CPU per request", "cpu_us_per_request", "<", 1.0, UNPIPELINED, "asyncio"),
    Target("redis", ALL_CLONES, "-P 1: CPU per request", "cpu_us_per_request", "<", 1.0, UNPIPELINED, "uvloop"),
    Target(
        "redis",
        CPYTHON_CLONES,
        "-P 16 -d 1000: requests/s",
        "rps_ratio",
        ">=",
        0.8,
        _cases("loads", ("D1000",), SET_GET),
    ),
    Target(
        "redis",
        PYPY_CLONES,
        "-P 16, every value size: requests/s",
        "rps_ratio",
        ">=",
        1.0,
        _cases("loads", ("D3", "D1000", "D100000"), SET_GET),
    ),
    Target("redis", ALL_CLONES, "RSS with idle connections", "rss_idle_kib", "<", 1.0, (("memory",),), "asyncio"),
    # The HTTP example against nginx (the reference) and uvicorn.
    Target(
        "http",
        ("evio", "evio-compiled", "evio-pypy"),
        "no pipelining: requests/s",
        "rps_ratio",
        ">=",
        1.0,
        (("loads", "plain"),),
    ),
    Target(
        "http",
        ("evio", "evio-compiled", "evio-pypy"),
        "no pipelining: CPU per request",
        "cpu_ratio",
        "<=",
        1.15,
        (("loads", "plain"),),
    ),
    Target(
        "http",
        ("evio", "evio-compiled", "evio-pypy"),
        "16-deep pipelining: requests/s",
        "rps_ratio",
        ">=",
        1.0,
        (("loads", "pipe16"),),
    ),
    Target(
        "http",
        ("evio", "evio-compiled", "evio-pypy"),
        "no pipelining: requests/s",
        "rps",
        ">=",
        4.0,
        (("loads", "plain"),),
        "uvicorn",
    ),
    # The TCP proxy on CPython, plain and compiled, against HAProxy (the reference).
    Target(
        "proxy",
        ("evio", "evio-compiled"),
        "requests/s",
        "rps_ratio",
        ">=",
        1.0,
        _cases("tests", ("P1", "P128"), SET_GET),
    ),
    Target(
        "proxy",
        ("evio", "evio-compiled"),
        "-P 1: proxy CPU per request",
        "cpu_ratio",
        "<=",
        1.1,
        _cases("tests", ("P1",), SET_GET),
    ),
    Target(
        "proxy",
        ("evio", "evio-compiled"),
        "bandwidth, MB/s",
        "mb_per_s_ratio",
        ">=",
        1.0,
        (("tests", "bandwidth", "push"), ("tests", "bandwidth", "pull")),
    ),
)


def _lookup(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def check(benchmark: str, summary: Mapping[str, Any], table: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """Every result of `benchmark`'s `summary` (figures by contender key) that a target of `table` bounds.

    Each check is {"server", "target" (its label), "case" (the path), "value", "met"}. A case or a
    contender that was not measured (`versus` included) is left out, not counted as missed.
    """
    checks: list[dict[str, Any]] = []
    for target in table:
        if target.benchmark != benchmark:
            continue
        for server in target.servers:
            if server not in summary or (target.versus and target.versus not in summary):
                continue
            for case in target.cases:
                figures = _lookup(summary[server], case)
                if not isinstance(figures, Mapping) or target.figure not in figures:
                    continue
                value = float(figures[target.figure])
                if target.versus:
                    peer = _lookup(summary[target.versus], case)
                    if not isinstance(peer, Mapping) or not peer.get(target.figure):
                        continue
                    value /= float(peer[target.figure])
                checks.append(
                    {
                        "server": server,
                        "target": target.label,
                        "case": list(case),
                        "value": value,
                        "met": target.met(value),
                    }
                )
    return checks
