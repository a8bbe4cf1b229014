"""The programs in the README and the docs are what they claim: complete, and clean under `mypy --strict`."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _is_program(block: str) -> bool:
    return re.search(r"^import evio$", block, flags=re.M) is not None


def readme_programs() -> list[str]:
    """Every fenced Python block of the README that is a program (it imports evio)."""
    return [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if _is_program(b)]


def docs_programs() -> dict[str, str]:
    """Every `.. code-block:: python` of the docs that is a program, by page and line."""
    found = {}
    for page in sorted(DOCS.glob("*.rst")):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != ".. code-block:: python":
                continue
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                body.append(following)
            code = textwrap.dedent("\n".join(ln for ln in body if not re.match(r"\s+:\w[\w-]*:", ln)))
            if _is_program(code):
                found[f"{page.name}:{i + 1}"] = code.strip() + "\n"
    return found


def test_the_readme_shows_the_echo_server_and_the_docs_the_tutorial_and_recipes() -> None:
    assert any("class Echo" in p for p in readme_programs())
    docs = "\n".join(docs_programs().values())
    for name in ("class Chat", "class Proxy", "class Quiet", "class Hasher", "class Ping"):
        assert name in docs, name


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the lint extra)")
def test_readme_and_docs_programs_pass_mypy_strict(tmp_path: Path) -> None:
    programs = {f"README.md #{i}": p for i, p in enumerate(readme_programs())}
    programs.update(docs_programs())
    files = []
    for n, (where, program) in enumerate(programs.items()):
        path = tmp_path / f"program_{n}.py"
        path.write_text(f"# {where}\n{program}")
        files.append(str(path))
    env = dict(os.environ, MYPYPATH=str(ROOT / "src"))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version", "3.9", *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
