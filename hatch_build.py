"""The wheel's build hook: with EVIO_COMPILE set, compile with mypyc.

    EVIO_COMPILE=1 python -m build --wheel          # evio compiled: what a user of the compiled build gets
    EVIO_COMPILE=examples python -m build --wheel   # evio and the examples' packages (`make compiled`)

Without EVIO_COMPILE (a plain `pip install .`, `make package`) this hook asks
for nothing and does nothing: the wheel is pure Python. With it, the build
environment gets mypy (mypyc comes with it) and setuptools; the modules are
copied to a temporary folder and compiled there (nothing is written into the
source tree), and the extension modules go into the wheel beside the sources,
which Python then no longer imports. The source stays plain Python: it is
what PyPy and the plain build run.

`examples` also compiles the examples' protocol packages (`redisclone`,
`minihttp`, `tcplb`) into the wheel as top-level packages, so that the
examples, their tests and their benchmarks can run compiled. That wheel is
for this repository's own compiled test run and benchmarks, never published:
the examples are not part of the library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The mypy (and so mypyc) the compiled build is made with: the range the type check runs.
MYPY = "mypy>=1.10,<2"
#: The library: the package, and where its sources are, from the project's root.
LIBRARY = {"evio": "src/evio"}
#: Modules left interpreted in a compiled build (mypyc still reads them, to type the rest). They hold
#: what users construct and call with arguments of their own (`Events`, `Options`, `Action`, `Server`),
#: nothing on a per-byte path: interpreted, their arguments are checked by our code, whose messages name
#: the argument at fault, where mypyc's checks of the declared types would answer first, more tersely.
#: And the inbox: the interpreter runs a Python signal handler only between two bytecodes, and compiled
#: code has none, so a signal taken by another thread (it only wakes the poll through the inbox's
#: descriptor) would wait for the next interpreted call; the loop's call of `Inbox.take` is that call.
INTERPRETED = {"evio/events.py", "evio/server.py", "evio/inbox.py"}
#: The examples' packages, compiled too with EVIO_COMPILE=examples.
EXAMPLES = {"redisclone": "examples/redisclone", "minihttp": "examples/minihttp", "tcplb": "examples/tcplb"}

SETUP = """
from mypyc.build import mypycify
from setuptools import setup

setup(name="evio-compiled", ext_modules=mypycify({files!r}, opt_level="3"))
"""


def enabled() -> bool:
    """Whether this build compiles: EVIO_COMPILE set to anything but empty or 0."""
    return os.environ.get("EVIO_COMPILE", "") not in ("", "0")


def packages() -> dict[str, str]:
    """What this build compiles: the library, and with EVIO_COMPILE=examples the examples' packages too."""
    setting = os.environ.get("EVIO_COMPILE", "")
    if setting == "examples":
        return {**LIBRARY, **EXAMPLES}
    if setting not in ("1", "yes", "true"):
        raise RuntimeError(f"EVIO_COMPILE={setting!r}: expected 1 (the library) or examples (the examples too)")
    return dict(LIBRARY)


class CompileHook(BuildHookInterface):
    """Compile the packages with mypyc when `enabled()`."""

    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return [MYPY, "setuptools>=64"] if enabled() else []

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or not enabled():
            return
        if version == "editable":
            raise RuntimeError("EVIO_COMPILE=1 builds a wheel to install, not an editable install")
        self._work = work = Path(tempfile.mkdtemp(prefix="evio-mypyc-"))
        root = Path(self.root)
        files = []
        compiled = packages()
        for package, source in compiled.items():
            (work / package).mkdir()
            for module in sorted((root / source).glob("*.py")):
                shutil.copy2(module, work / package / module.name)
                if f"{package}/{module.name}" not in INTERPRETED:
                    files.append(f"{package}/{module.name}")
        (work / "setup.py").write_text(SETUP.format(files=files))
        built = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise RuntimeError(f"mypyc could not compile the packages:\n{built.stdout[-20000:]}")
        include = build_data["force_include"]
        for extension in sorted(work.rglob("*.so")) + sorted(work.rglob("*.pyd")):
            relative = extension.relative_to(work)
            if relative.parts[0] != "build":
                include[str(extension)] = str(relative)
        for package, source in compiled.items():
            if package not in LIBRARY:  # the library's sources are in the wheel already
                for module in sorted((root / source).glob("*.py")):
                    include[str(module)] = f"{package}/{module.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
