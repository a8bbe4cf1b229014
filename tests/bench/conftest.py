"""The benchmark suite's tests need psutil, which the `test` extra installs on CPython only.

On PyPy (whose psutil would be built from source) these tests are left out, and the run's header
says so: never silently.
"""

from __future__ import annotations

import importlib.util

import pytest

HAVE_PSUTIL = importlib.util.find_spec("psutil") is not None
collect_ignore_glob = [] if HAVE_PSUTIL else ["test_*.py"]


def pytest_report_header(config: pytest.Config) -> str | None:
    if HAVE_PSUTIL:
        return None
    return "tests/bench: skipped, psutil is not installed for this interpreter (the `test` extra has it on CPython)"
