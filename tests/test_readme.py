"""The README's programs are what they claim: complete, and clean under `mypy --strict` as written."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def programs() -> list[str]:
    """Every fenced Python block of the README that is a program (it imports evio)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if re.search(r"^import evio$", b, flags=re.M)]


def test_the_readme_shows_the_echo_server_and_the_recipes() -> None:
    found = programs()
    assert len(found) >= 6, "the echo server and the recipes"
    assert any("class Echo" in p for p in found)
    for name in ("class Chat", "class Proxy", "class Quiet", "class Hasher", "class Ping"):
        assert any(name in p for p in found), name


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the lint extra)")
def test_readme_programs_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for i, program in enumerate(programs()):
        path = tmp_path / f"readme_program_{i}.py"
        path.write_text(program)
        files.append(str(path))
    env = dict(os.environ, MYPYPATH=str(README.parent / "src"))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
