"""The benchmark harness's own pieces: output parsing, CPU and memory figures, server processes, idle connections."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import (
    BenchError,
    Sample,
    ServerProcess,
    compiled_build_problem,
    cpu_seconds,
    cpu_times,
    display_command,
    free_port,
    idle_connections,
    memory_kib,
    others_cpu_seconds,
    process_cpu_seconds,
    run_client,
    usable_cpus,
)
from redis_bench import parse_benchmark_output
from report import markdown_table
from rounds import DisturbedRuns, rotated

# What `redis-benchmark -t ping,set -q -P 16` printed, shortened: progress lines end in '\r', results in '\n'.
PROGRESS = " " * 78
BENCHMARK_OUTPUT = (
    f"\rPING_INLINE: rps=0.0 (overall: 0.0) avg_msec=-nan (overall: -nan)\r{PROGRESS}"
    f"\rPING_INLINE: rps=311905.2 (overall: 310677.2) avg_msec=2.066 (overall: 2.066)\r{PROGRESS}"
    "\rPING_INLINE: 227445.03 requests per second, p50=2.199 msec\n"
    f" \rPING_MBULK: rps=151174.6 (overall: 211644.4) avg_msec=2.746 (overall: 2.746)\r{PROGRESS}"
    "\rPING_MBULK: 242718.45 requests per second, p50=1.863 msec\n"
    f" \rSET: rps=158087.7 (overall: 211063.8) avg_msec=3.180 (overall: 3.180)\r{PROGRESS}"
    "\rSET: 403768.53 requests per second, p50=1.407 msec\n"
    "\rMSET (10 keys): 98765.43 requests per second, p50=4.000 msec\n\n"
)

# A real server for the process tests: answers every chunk it reads with +PONG, never closes first.
PONG_SERVER = """
import socket, sys, threading
def serve(conn):
    while conn.recv(65536):
        conn.sendall(b"+PONG\\r\\n")
    conn.close()
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=1024)
print("listening", flush=True)
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""


# A process that listens, then burns CPU: someone else's benchmark on a shared machine.
SPINNER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    pass
"""


def test_benchmark_output_parses_results_and_skips_progress() -> None:
    assert parse_benchmark_output(BENCHMARK_OUTPUT) == {
        "PING_INLINE": 227445.03,
        "PING_MBULK": 242718.45,
        "SET": 403768.53,
        "MSET (10 keys)": 98765.43,
    }


def test_benchmark_output_without_results_is_empty() -> None:
    assert parse_benchmark_output("WARNING: Could not fetch server CONFIG\nError: Server closed the connection\n") == {}


def test_memory_and_cpu_figures_come_from_psutil_and_schedstat() -> None:
    mine = memory_kib(os.getpid())
    assert 0 < mine["VmRSS"] <= mine["VmHWM"]
    times = cpu_times(usable_cpus())
    assert times.busy > 0 and times.steal >= 0
    assert (times - times).busy == 0


def test_a_compiled_build_is_checked_before_it_is_measured(tmp_path: Path) -> None:
    missing = compiled_build_problem(str(tmp_path / "python"), ("evio.loop",), tmp_path)
    assert "no compiled build at" in missing and "make compiled" in missing
    # This interpreter imports evio from source (a .py file): not a compiled build.
    interpreted = compiled_build_problem(sys.executable, ("json",), tmp_path)
    assert "from source, not compiled" in interpreted
    assert "cannot import" in compiled_build_problem(sys.executable, ("no_such_module_here",), tmp_path)


def test_others_cpu_seconds_counts_processes_not_ours() -> None:
    before = process_cpu_seconds()
    assert os.getpid() in before and 1 in before
    assert 2 not in before  # kthreadd: kernel threads are left out
    port = free_port()
    with ServerProcess("spinner", [sys.executable, "-c", SPINNER, str(port)], port=port) as spinner:
        spinner.start(timeout=20)
        start = process_cpu_seconds()
        time.sleep(0.5)
        now = process_cpu_seconds()
        with_spinner = others_cpu_seconds(start, now, [os.getpid()])
        without = others_cpu_seconds(start, now, [os.getpid(), spinner.pid])
        assert with_spinner - without >= 0.2  # the spinner's own time, whatever else the machine ran


def test_run_client_counts_the_clients_cpu_time() -> None:
    code = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass"
    assert run_client([sys.executable, "-c", code]).cpu_seconds >= 0.25


def test_cpu_seconds_grow_with_work() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.05


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [["1", "x|y"]], right=(1,)) == "| a | b |\n| --- | ---: |\n| 1 | x\\|y |"


def test_server_process_serves_idle_connections_and_stops() -> None:
    port = free_port()
    server = ServerProcess("pong", [sys.executable, "-c", PONG_SERVER, str(port)], port=port)
    try:
        server.start(timeout=20)
        rss_before = server.memory_kib()["VmRSS"]
        with idle_connections(port, 150, b"PING\r\n", lambda got: got.endswith(b"\r\n"), batch=40) as socks:
            assert len(socks) == 150
            assert server.memory_kib()["VmRSS"] > rss_before  # a thread per connection costs memory
        assert server.cpu_seconds() > 0
        pid = server.pid
    finally:
        server.stop()
    assert not server.alive()
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped


def test_server_that_exits_early_is_reported_with_its_output() -> None:
    port = free_port()
    code = "print('cannot bind: no such address'); raise SystemExit(3)"
    server = ServerProcess("broken", [sys.executable, "-c", code], port=port)
    with pytest.raises(BenchError, match=r"(?s)broken exited with status 3.*cannot bind: no such address"):
        server.start(timeout=20)
    server.stop()


def test_run_client_returns_output_and_fails_loudly() -> None:
    run = run_client([sys.executable, "-c", "print('PING_INLINE: 1.00 requests per second')"])
    assert parse_benchmark_output(run.stdout) == {"PING_INLINE": 1.0}
    with pytest.raises(BenchError, match="exited with status 2"):
        run_client([sys.executable, "-c", "import sys; sys.stderr.write('bad'); sys.exit(2)"])


def test_disturbed_runs_are_measured_again_until_quiet_or_out_of_retries() -> None:
    runs = iter([Sample(1.0, 0.5, 10, 1.0, others_seconds=0.9), Sample(2.0, 0.5, 10, 1.0, others_seconds=0.05)])
    disturbed = DisturbedRuns([], max_other=0.2, retries=2, patience=1.0)
    kept = disturbed.measure("test", lambda: next(runs))
    assert (kept.rps, disturbed.retried) == (2.0, 1)
    assert disturbed.still_disturbed([kept, Sample(1.0, 0.5, 10, 1.0, others_seconds=0.3)]) == 1
    out_of_patience = DisturbedRuns([], max_other=0.2, retries=2, patience=0.0)
    assert out_of_patience.measure("test", lambda: Sample(1.0, 0.5, 10, 1.0, others_seconds=0.9)).rps == 1.0
    assert out_of_patience.retried == 0


def test_sample_figures_keep_the_disturbance_last() -> None:
    @dataclass
    class Counted(Sample):
        errors: int = 0

    runs = [Counted(200.0, 0.5, 100, 1.0, 0.1, 0.0, errors=3), Counted(100.0, 0.5, 100, 1.0)]
    assert list(runs[0].as_json()) == [
        "rps",
        "cpu_seconds",
        "requests",
        "wall_seconds",
        "errors",
        "others_seconds",
        "steal_seconds",
    ]
    figures = Sample.figures(runs, [Sample(100.0, 1.0, 100, 1.0)] * 2)
    assert list(figures)[-2:] == ["others_cpu_share", "steal_share"]
    assert (figures["rps"], figures["rps_spread"], figures["rps_ratio"], figures["cpu_ratio"]) == (150, 1 / 3, 1.5, 0.5)


def test_rotated_and_display_command() -> None:
    assert [rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    repo = Path("/srv/repo")
    argv = [sys.executable, "/srv/repo/examples/x.py", "--port", "{port}", "-c", "{conf}"]
    placeholders = (("{conf}", "{dir}/x.conf"), ("{port}", "PORT"), ("{dir}", "DIR"))
    shown = display_command(argv, {"PYTHONPATH": "/srv/repo/src"}, repo, placeholders)
    assert shown == "PYTHONPATH=src python examples/x.py --port PORT -c DIR/x.conf"
