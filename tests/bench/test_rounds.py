"""The round driver: every case against every contender, in a rotated order, disturbed runs measured again.

The contenders are tiny Python servers on loopback; a "measurement" is a few round trips to one.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness import Sample, ServerProcess, free_port
from rounds import Case, Disturbance, run_rounds, samples_json, summarize

ECHO_SERVER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
while True:
    conn = listener.accept()[0]
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
"""


@dataclass
class Fake:
    key: str
    server: ServerProcess


@pytest.fixture
def fakes() -> Iterator[list[Fake]]:
    started = []
    try:
        for key in ("ref", "a", "b"):
            port = free_port()
            server = ServerProcess(key, [sys.executable, "-c", ECHO_SERVER, str(port)], port=port)
            started.append(Fake(key, server.start(timeout=20)))
        yield started
    finally:
        for fake in started:
            fake.server.stop()


def round_trips(fake: Fake, case: Case) -> Sample:
    """`int(case.key[1])` echoes of a few bytes, one after the other: requests/s and the server's CPU time."""
    n = int(case.key[1])
    before, started = fake.server.cpu_seconds(), time.monotonic()
    with socket.create_connection(("127.0.0.1", fake.server.port)) as sock:
        for _ in range(n):
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
    seconds = time.monotonic() - started
    return Sample(n / seconds, max(fake.server.cpu_seconds() - before, 1e-6), n, seconds)


QUIET = Disturbance(wait_quiet=0.0, max_other=10.0, retries=0)


def test_every_case_runs_against_every_contender_in_a_rotated_order(fakes: list[Fake]) -> None:
    cases = [Case(("echo", "50"), "50 echoes"), Case(("echo", "20"), "20 echoes")]
    warmed: list[tuple[str, tuple[str, ...]]] = []
    rounds_seen: list[tuple[int, list[str]]] = []
    result = run_rounds(
        fakes,
        cases,
        round_trips,
        rounds=3,
        mine=[f.server.pid for f in fakes],
        disturbance=QUIET,
        runs=lambda fake, case: not (fake.key == "b" and case.key[1] == "20"),
        warm=lambda fake, case: warmed.append((fake.key, case.key)),
        after_round=lambda r, order: rounds_seen.append((r, [f.key for f in order])),
    )
    assert result.order == [["ref", "a", "b"], ["a", "b", "ref"], ["b", "ref", "a"]]
    assert rounds_seen == [(r, order) for r, order in enumerate(result.order)]
    assert len(warmed) == 5 and ("b", ("echo", "20")) not in warmed
    assert {key: {case: len(runs) for case, runs in per.items()} for key, per in result.samples.items()} == {
        "ref": {("echo", "50"): 3, ("echo", "20"): 3},
        "a": {("echo", "50"): 3, ("echo", "20"): 3},
        "b": {("echo", "50"): 3},
    }
    assert result.meta()["runs_measured_again"] == 0
    summary = summarize(result.samples, lambda case: "ref")
    assert summary["ref"]["echo"]["50"]["rps_ratio"] == 1.0
    assert summary["a"]["echo"]["20"]["rps"] > 0 and "20" not in summary["b"]["echo"]
    as_json = samples_json(result.samples)
    assert len(as_json["a"]["echo"]["50"]) == 3 and as_json["a"]["echo"]["50"][0]["requests"] == 50


def test_a_disturbed_run_is_measured_again(fakes: list[Fake]) -> None:
    calls: list[str] = []

    def measure(fake: Fake, case: Case) -> Sample:
        calls.append(fake.key)
        sample = round_trips(fake, case)
        if fake.key == "a" and calls.count("a") == 1:
            sample.others_seconds = sample.wall_seconds  # someone else used a whole CPU meanwhile
        return sample

    result = run_rounds(
        fakes[:2],
        [Case(("echo", "10"), "10 echoes")],
        measure,
        rounds=1,
        mine=[f.server.pid for f in fakes],
        disturbance=Disturbance(wait_quiet=5.0, max_other=0.5, retries=2),
    )
    assert calls == ["ref", "a", "a"]
    assert result.runs_measured_again == 1 and result.runs_still_disturbed == 0
    assert result.samples["a"][("echo", "10")][0].others_seconds == 0.0
