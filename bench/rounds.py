"""The round driver every benchmark runs: each contender under each case, in a rotated order per round.

A case is one test under one load (redis-benchmark's SET at -P 128, wrk without pipelining, a 1 GiB
push through a proxy). A round runs every case against every contender back to back, the contenders
in an order rotated by one each round, so that slow drift on a shared machine hits them all alike;
a run that other people's processes disturbed is measured again (`DisturbedRuns`). What comes back
is every sample, filed by contender and case; `summarize` turns them into medians and ratios to the
reference contender of the same round, and `samples_json` into the JSON the reports are rendered from.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, TypeVar

from harness import QUIET, Sample, log, wait_for_others

T = TypeVar("T")
S = TypeVar("S", bound=Sample)
CaseKey = tuple[str, ...]


class Keyed(Protocol):
    """A contender, as the driver sees it: its key names it in logs and in the samples."""

    @property
    def key(self) -> str: ...


K = TypeVar("K", bound=Keyed)


@dataclass(frozen=True)
class Case:
    """One test under one load: `key` files its samples (e.g. ("P128", "SET")), `label` names it in the log."""

    key: CaseKey
    label: str


class DisturbedRuns:
    """Measures a run again when processes outside the benchmark disturbed it, after waiting for quiet.

    A run is disturbed when they used more than `max_other` of a CPU during it; it is measured again
    up to `retries` times, each after waiting (at most 30 s) for them to use less than QUIET. The waits
    together take at most `patience` seconds; after that, disturbed runs are kept as they are.
    """

    def __init__(self, mine: Iterable[int], *, max_other: float, retries: int, patience: float) -> None:
        self.mine = list(mine)  # the benchmark's own processes (the servers)
        self.max_other = max_other
        self.retries = retries
        self.patience = patience  # seconds of waiting left
        self.retried = 0  # runs measured again

    def wait_for_quiet(self, timeout: float) -> float:
        """Wait up to `timeout` seconds for a quiet machine before measuring; the share of a CPU others used last."""
        log(f"waiting up to {timeout:.0f} s for other processes to be idle (their load skews ours)")
        return wait_for_others(self.mine, below=QUIET, timeout=timeout)

    def measure(self, what: str, run: Callable[[], S]) -> S:
        """`run()`'s sample, measured again while it was disturbed and there are retries and patience left."""
        sample = run()
        for _ in range(self.retries):
            if sample.disturbance <= self.max_other or self.patience <= 0:
                break
            log(
                f"  {what}: other processes used {sample.disturbance:.0%} of a CPU meanwhile: "
                "waiting for quiet, then measuring again"
            )
            self.retried += 1
            waited = time.monotonic()
            wait_for_others(self.mine, below=QUIET, timeout=min(30.0, self.patience))
            self.patience -= time.monotonic() - waited
            sample = run()
        return sample

    def still_disturbed(self, samples: Iterable[Sample]) -> int:
        """How many of the runs kept were disturbed all the same."""
        return sum(s.disturbance > self.max_other for s in samples)


def rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` starting at index `by` (modulo their number): round r of a benchmark runs the servers in this order."""
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True)
class Disturbance:
    """How a run deals with other people's load: --wait-quiet, --max-other and --retries."""

    wait_quiet: float  # seconds to wait for quiet at the start; also the patience, in all, for measuring again
    max_other: float
    retries: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Disturbance:
        return cls(args.wait_quiet, args.max_other, args.retries)


@dataclass
class Rounds(Generic[S]):
    """What the driver measured: every sample by contender key and case key, and how disturbed the run was."""

    samples: dict[str, dict[CaseKey, list[S]]]
    others_before: float  # the share of a CPU others used just before the first measured run
    disturbance: Disturbance
    runs_measured_again: int = 0
    runs_still_disturbed: int = 0
    order: list[list[str]] = field(default_factory=list)  # the contenders' order in each round, for the tests

    def meta(self) -> dict[str, Any]:
        """The report's fields about disturbance."""
        return {
            "others_before": self.others_before,
            "max_other": self.disturbance.max_other,
            "retries": self.disturbance.retries,
            "runs_measured_again": self.runs_measured_again,
            "runs_still_disturbed": self.runs_still_disturbed,
        }


def run_rounds(
    contenders: Sequence[K],
    cases: Sequence[Case],
    measure: Callable[[K, Case], S],
    *,
    rounds: int,
    mine: Sequence[int],
    disturbance: Disturbance,
    runs: Callable[[K, Case], bool] = lambda contender, case: True,
    warm: Callable[[K, Case], object] | None = None,
    after_round: Callable[[int, list[K]], None] | None = None,
) -> Rounds[S]:
    """Measure every case against every contender (for which `runs(contender, case)`), `rounds` times.

    First waits for a quiet machine (up to `disturbance.wait_quiet` seconds) and, with `warm`, runs
    every case once against every contender, unmeasured (so that PyPy's JIT has compiled the hot
    paths, given to every server alike). Round r runs the cases in their order, each against the
    contenders rotated by r; `after_round(r, order)` then runs what is measured once a round (memory,
    on fresh servers). `mine` are the benchmark's own processes: their CPU time is no disturbance.
    """
    disturbed = DisturbedRuns(
        mine, max_other=disturbance.max_other, retries=disturbance.retries, patience=disturbance.wait_quiet
    )
    others_before = disturbed.wait_for_quiet(disturbance.wait_quiet)
    log(f"other processes used {others_before:.0%} of a CPU before the run")
    result: Rounds[S] = Rounds(
        {c.key: {case.key: [] for case in cases if runs(c, case)} for c in contenders}, others_before, disturbance
    )
    if warm is not None:
        log("warm-up: every case once against every server, unmeasured")
        for case in cases:
            for c in contenders:
                if runs(c, case):
                    warm(c, case)
    for r in range(rounds):
        order = rotated(contenders, r)
        result.order.append([c.key for c in order])
        for case in cases:
            line = []
            for c in order:
                if not runs(c, case):
                    continue
                sample = disturbed.measure(f"{c.key} {case.label}", functools.partial(measure, c, case))
                result.samples[c.key][case.key].append(sample)
                line.append(f"{c.key} {sample.brief()}")
            log(f"round {r + 1}/{rounds} {case.label}: " + ", ".join(line))
        if after_round is not None:
            after_round(r, order)
    result.runs_measured_again = disturbed.retried
    result.runs_still_disturbed = disturbed.still_disturbed(
        s for per_case in result.samples.values() for runs_ in per_case.values() for s in runs_
    )
    return result


def _put(tree: dict[str, Any], key: CaseKey, value: Any) -> None:
    for part in key[:-1]:
        tree = tree.setdefault(part, {})
    tree[key[-1]] = value


def summarize(
    samples: Mapping[str, Mapping[CaseKey, Sequence[Sample]]], reference: Callable[[CaseKey], str]
) -> dict[str, dict[str, Any]]:
    """Per contender, the figures of every case (nested by the parts of its key), with ratios to the reference.

    `reference(case_key)` is the contender every ratio of that case is to, measured in the same rounds.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, per_case in samples.items():
        tree: dict[str, Any] = {}
        for case_key, runs in per_case.items():
            if runs:
                _put(tree, case_key, type(runs[0]).figures(runs, samples[reference(case_key)][case_key]))
        out[key] = tree
    return out


def samples_json(samples: Mapping[str, Mapping[CaseKey, Sequence[Sample]]]) -> dict[str, dict[str, Any]]:
    """Every sample as JSON, nested by contender, then by the parts of each case's key."""
    out: dict[str, dict[str, Any]] = {}
    for key, per_case in samples.items():
        tree: dict[str, Any] = {}
        for case_key, runs in per_case.items():
            _put(tree, case_key, [s.as_json() for s in runs])
        out[key] = tree
    return out
