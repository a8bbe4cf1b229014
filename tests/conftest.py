"""Fixtures: a real server on a thread, run once per backend; child processes stopped when a test ends.

The helpers behind them are in `support.py`, where test modules import them from.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from typing import Callable

import pytest
from support import BACKENDS, Processes, ServerThread, TestEvents


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_fd_limit()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: every behaviour test runs on both."""
    if request.param == "epoll" and not hasattr(__import__("select"), "epoll"):
        pytest.skip("no epoll on this platform")
    return str(request.param)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerThread]]:
    """Start servers for a test; every one is stopped when the test ends."""
    started: list[ServerThread] = []

    def start(events: TestEvents, *addrs: str) -> ServerThread:
        st = ServerThread(events, *addrs)
        started.append(st)
        return st.start()

    yield start
    for st in started:
        if st.thread.is_alive():
            st.stop()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Child processes for a test (`processes.add(ServerProcess(...))`): every one is stopped when the test ends."""
    group = Processes()
    try:
        yield group
    finally:
        group.close()
