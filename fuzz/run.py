"""Run the fuzz targets for a bounded time each: coverage-guided with atheris where it is installed, else hypothesis.

    python fuzz/run.py                 # every target, 60 s each
    python fuzz/run.py --seconds 300 resp

Each target starts from its seeds in `fuzz/corpus/<target>/` (read only:
what the fuzzer learns goes to a temporary folder) and from every input in
`fuzz/regressions/<target>/`. A crash, a hang (an input taking over 10 s)
or a disagreement (`fuzz_targets.Finding`) stops it, writes the input to
`fuzz/findings/`, prints how to reproduce it, and the run fails (exit 1).
Copy a finding into `fuzz/regressions/<target>/` once fixed:
`tests/examples/test_fuzz_regressions.py` replays every file there.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "examples"), str(ROOT / "src")]

#: An input that takes longer than this is a hang.
HANG_SECONDS = 10


class Hang(Exception):
    """An input ran longer than `HANG_SECONDS`."""


def _hang(signum: int, frame: object) -> None:
    raise Hang(f"an input took over {HANG_SECONDS} s")


def _seeds(target: str) -> list[Path]:
    return [d for d in (HERE / "corpus" / target, HERE / "regressions" / target) if d.is_dir()]


def run_atheris(target: str, seconds: int) -> int:
    """Run `target` under libFuzzer (via atheris) in a child process; its exit status."""
    findings = HERE / "findings"
    findings.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"evio-fuzz-{target}-") as work:
        argv = [
            sys.executable,
            __file__,
            "--child",
            target,
            work,
            *map(str, _seeds(target)),
            f"-max_total_time={seconds}",
            f"-timeout={HANG_SECONDS}",
            f"-artifact_prefix={findings}/{target}-",
            "-print_final_stats=1",
        ]
        return subprocess.call(argv, cwd=ROOT)


def child(target: str, argv: list[str]) -> None:
    """In the child: instrument the code under test, then hand over to libFuzzer."""
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    with atheris.instrument_imports():
        import fuzz_targets

    atheris.Setup([sys.argv[0], *argv], fuzz_targets.TARGETS[target])
    atheris.Fuzz()


def run_hypothesis(target: str, seconds: int) -> int:
    """The fallback: hypothesis-generated inputs (seeded with the corpus) for `seconds`."""
    import fuzz_targets
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    fn = fuzz_targets.TARGETS[target]
    seeds = [p.read_bytes() for d in _seeds(target) for p in sorted(d.iterdir()) if p.is_file()]
    for seed in seeds:
        fn(seed)
    mutated = st.sampled_from(seeds or [b""]).flatmap(
        lambda s: st.builds(lambda cut, extra: s[:cut] + extra, st.integers(0, len(s)), st.binary(max_size=64))
    )
    deadline = time.monotonic() + seconds

    @settings(max_examples=2000, deadline=HANG_SECONDS * 1000, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=512), mutated))
    def check(data: bytes) -> None:
        # hypothesis's deadline is checked only once an input returns: a timer interrupts one that never does.
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            fn(data)
        except Exception:
            findings = HERE / "findings"
            findings.mkdir(exist_ok=True)
            (findings / f"{target}-{abs(hash(data)):x}").write_bytes(data)
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    signal.signal(signal.SIGALRM, _hang)
    rounds = 0
    while time.monotonic() < deadline:
        check()
        rounds += 1
    print(f"{target}: {rounds * 2000} hypothesis examples in {seconds} s, no finding")
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("targets", nargs="*", help="which targets (default: all)")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    parser.add_argument("--hypothesis", action="store_true", help="use hypothesis even where atheris is installed")
    args = parser.parse_args()
    import fuzz_targets

    names = args.targets or list(fuzz_targets.TARGETS)
    unknown = set(names) - set(fuzz_targets.TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(fuzz_targets.TARGETS)}")
    use_atheris = not args.hypothesis and importlib.util.find_spec("atheris") is not None
    engine = "atheris (libFuzzer)" if use_atheris else "hypothesis (atheris is not installed)"
    failed = []
    for name in names:
        print(f"== fuzzing {name} for {args.seconds} s with {engine}", flush=True)
        status = run_atheris(name, args.seconds) if use_atheris else run_hypothesis(name, args.seconds)
        if status:
            failed.append(name)
    if failed:
        print(f"fuzzing found something in {', '.join(failed)}: see fuzz/findings/", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
