"""The compiled build's run really runs compiled code (`make pytest-compiled` sets EVIO_EXPECT_COMPILED=1).

Without that variable these tests check the opposite: the plain run imports
evio's Python sources, so a stray extension module in the tree cannot pass
itself off as the plain build.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPECT_COMPILED = os.environ.get("EVIO_EXPECT_COMPILED", "") not in ("", "0")
REPO = Path(__file__).resolve().parents[2]
LIBRARY = ["evio", "evio.loop", "evio.conn", "evio.state"]
#: Left interpreted in the compiled build too (hatch_build.INTERPRETED): what users construct and call,
#: and the inbox, whose interpreted call lets Python run the signal handlers that woke the loop.
INTERPRETED = ["evio.events", "evio.server", "evio.inbox"]
EXAMPLES = ["redisclone.protocol", "redisclone.resp", "minihttp.parser", "tcplb.balance"]


def _compiled(module: str) -> bool:
    path = importlib.import_module(module).__file__
    assert path is not None
    return not path.endswith(".py")


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_is_the_build_under_test(module: str) -> None:
    assert _compiled(module) == EXPECT_COMPILED, importlib.import_module(module).__file__


@pytest.mark.parametrize("module", INTERPRETED)
def test_the_modules_meant_to_stay_interpreted_do(module: str) -> None:
    assert not _compiled(module), importlib.import_module(module).__file__


@pytest.mark.parametrize("module", EXAMPLES)
def test_the_examples_packages_are_the_build_under_test(module: str) -> None:
    assert _compiled(module) == EXPECT_COMPILED, importlib.import_module(module).__file__


def test_an_example_script_imports_the_build_under_test() -> None:
    """What a test's subprocess runs (`python examples/redis_server.py`) imports the same build.

    `-c` run in examples/ puts that folder first on the path, as running a
    script there does (unless PYTHONSAFEPATH is set, as the compiled run sets it).
    """
    out = subprocess.run(
        [sys.executable, "-c", "import redisclone.protocol as p; print(p.__file__)"],
        cwd=REPO / "examples",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.endswith(".py") != EXPECT_COMPILED, out


def test_a_subclass_of_events_works_compiled_or_not() -> None:
    """mypyc closes a compiled class to Python subclasses unless it says otherwise; Events says so."""
    import evio
    from evio.events import overridden

    class Echo(evio.Events):
        def data(self, conn: evio.Conn, data: bytes | memoryview | None) -> bytes | None:
            return bytes(data or b"")

    echo = Echo()
    assert overridden(echo, "data")
    assert not overridden(echo, "prewrite") and not overridden(echo, "detached")
