"""Every seed of the fuzz corpus, and every input a fuzzer once found, replayed through its target."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_targets import TARGETS

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
CASES = sorted(
    (kind, target, path)
    for kind in ("corpus", "regressions")
    for target in TARGETS
    for path in (FUZZ / kind / target).glob("*")
    if path.is_file()
)


def test_every_target_has_seeds() -> None:
    for target in TARGETS:
        assert any(t == target and k == "corpus" for k, t, _ in CASES), f"no seeds for {target}"


@pytest.mark.parametrize(("kind", "target", "path"), CASES, ids=[f"{k}/{t}/{p.name}" for k, t, p in CASES])
def test_replay(kind: str, target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())
