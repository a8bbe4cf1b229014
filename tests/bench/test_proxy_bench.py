"""The load-balancer benchmark's own pieces: HAProxy's config, the loads, the bulk ends, figures and the report."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from harness import Sample, free_port
from proxy_bench import (
    CONNECT_TEST,
    DIRECTIONS,
    TESTS,
    Contender,
    ShortLoad,
    TransferSample,
    _bulk_session,
    bulk_client,
    bulk_request,
    find_contenders,
    haproxy_config,
    make_loads,
    parse_args,
    parse_bulk_request,
)
from report import render_proxy
from rounds import CaseKey, summarize
from targets import TARGETS, check


def test_haproxy_config_is_one_thread_tcp_with_the_proxys_timeouts() -> None:
    text = haproxy_config(7000, 6379, checks=False)
    lines = [line.strip() for line in text.splitlines()]
    for wanted in (
        "nbthread 1",
        "mode tcp",
        "timeout connect 5s",
        "timeout client 60s",
        "timeout server 60s",
        "bind 127.0.0.1:7000",
        "server backend 127.0.0.1:6379",
    ):
        assert wanted in lines, wanted
    assert not any(line.startswith("log") for line in lines), "no logging to a socket that may not exist"
    assert "check" not in text.split("server backend", 1)[1]
    checked = haproxy_config(7000, 6379, checks=True)
    assert "server backend 127.0.0.1:6379 check inter 2s rise 2 fall 3" in checked


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    for checks in (False, True):
        path = tmp_path / "haproxy.cfg"
        path.write_text(haproxy_config(free_port(), free_port(), checks=checks))
        done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


def test_loads_and_the_short_connection_flag() -> None:
    single, pipelined, short = make_loads(1000, 500)
    assert (single.pipeline, single.clients, pipelined.pipeline, pipelined.clients) == (1, 50, 128, 50)
    assert pipelined.requests > single.requests == 1000
    assert isinstance(short, ShortLoad) and short.requests == 500
    argv = short.argv(7000, CONNECT_TEST)
    assert argv[argv.index("-k") + 1] == "0" and argv[argv.index("-p") + 1] == "7000"
    assert "-k" not in single.argv(7000, "SET")


def test_contenders_substitute_ports_and_config() -> None:
    every, _ = find_contenders(None, checks=False)
    keys = [c.key for c in every]
    assert keys[0] == "direct" and "haproxy" in keys
    evio = next(c for c in every if c.key == "evio")
    argv = evio.command(7001, 6380, Path("/tmp/x.cfg"))
    assert "tcp://127.0.0.1:7001" in argv and "tcp://127.0.0.1:6380" in argv
    assert argv[argv.index("--check-interval") + 1] == "0"
    checked = next(c for c in find_contenders(None, checks=True)[0] if c.key == "evio")
    assert checked.command(1, 2, Path("c"))[-1] == "2"
    haproxy = Contender("haproxy", "HAProxy", ["haproxy", "-f", "{config}", "-db"])
    assert haproxy.command(1, 2, Path("/w/h.cfg")) == ["haproxy", "-f", "/w/h.cfg", "-db"]
    assert haproxy.display() == "haproxy -f haproxy.cfg -db"
    assert not Contender("direct", "direct", []).is_proxy
    with pytest.raises(SystemExit):
        find_contenders(["evio"], checks=False)  # no HAProxy: no ratios


def test_bulk_request_round_trips() -> None:
    header = bulk_request("PUSH", 1 << 30)
    assert len(header) == 32 and header.endswith(b"\n")
    assert parse_bulk_request(header) == ("PUSH", 1 << 30)
    with pytest.raises(ValueError):
        parse_bulk_request(b"GET / HTTP/1.1".ljust(31) + b"\n")


def test_bulk_ends_push_and_pull_through_a_socket(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, sent over and over
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count: int) -> None:
        fd = open(source, "rb")  # noqa: SIM115 (closed below)
        try:
            for _ in range(count):
                conn, _ = listener.accept()
                _bulk_session(conn, fd.fileno(), source.stat().st_size)
        finally:
            fd.close()

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()
    socket.create_connection(("127.0.0.1", port)).close()  # a health check: connect and close
    for direction in DIRECTIONS:
        got = bulk_client(direction, port, 5 << 20 | 123, str(source))
        assert got["bytes"] == 5 << 20 | 123 and got["seconds"] > 0
    thread.join(10)
    assert not thread.is_alive()
    listener.close()


def test_bulk_client_runs_as_a_command(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(1 << 16))
    port = free_port()
    bench = Path(__file__).resolve().parents[2] / "bench" / "proxy_bench.py"
    # As the benchmark runs it: a script whose folder is on the path (the compiled run sets PYTHONSAFEPATH).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    peer = subprocess.Popen(
        [sys.executable, str(bench), "--bulk-peer", str(port), str(source)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert peer.stdout is not None and "listening" in peer.stdout.readline()
        done = subprocess.run(
            [sys.executable, str(bench), "--bulk-client", "pull", str(port), str(1 << 20), str(source)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["bytes"] == 1 << 20
    finally:
        peer.kill()
        peer.wait()
        if peer.stdout is not None:
            peer.stdout.close()


def test_quick_args_write_to_a_temporary_directory() -> None:
    args = parse_args(["--quick"])
    assert args.rounds == 1 and args.transfer_mib < 1024 and "evio-bench-quick" in args.out
    full = parse_args([])
    assert full.rounds > 1 and full.transfer_mib == 1024 and full.out.endswith("docs/bench")


# -- figures and the report from made-up samples ------------------------------------------------------------------

KEYS = ("direct", "haproxy", "evio", "evio-pypy")
SPEED = {"direct": 1.2, "haproxy": 1.0, "evio": 0.8, "evio-pypy": 1.1}  # requests/s relative to HAProxy
COST = {"direct": 3.0, "haproxy": 5.0, "evio": 5.4, "evio-pypy": 4.0}  # CPU µs per request


def fake_summary() -> dict[str, Any]:
    """The summary of two rounds of made-up samples, as the runner builds it."""
    samples: dict[str, dict[CaseKey, list[Sample]]] = {}
    for key in KEYS:
        samples[key] = {}
        for load in make_loads(1000, 500):
            for t in (CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS:
                samples[key][(load.key, t)] = [
                    Sample(50_000 * SPEED[key] * (1 + r / 10), COST[key] * 0.1, 100_000, 2.0) for r in range(2)
                ]
        for d in DIRECTIONS:
            samples[key][("bandwidth", d)] = [
                TransferSample(1e9 * SPEED[key], 0.5 * COST[key] / 5, 1 << 30, 1.1, direction=d) for _ in range(2)
            ]
    per_server: dict[str, Any] = {}
    for key, tests in summarize(samples, lambda case: "haproxy").items():
        per_server[key] = {
            "tests": tests,
            "memory": {"rss_start_kib": 10_240, "rss_idle_kib": 20_480, "peak_idle_kib": 21_000},
            "peak_rss": {} if key == "direct" else {"start_kib": 10_000, "peak_kib": 12_000},
        }
    return per_server


def test_summary_ratios_and_targets() -> None:
    summary = fake_summary()
    evio = summary["evio"]["tests"]
    assert evio["P1"]["SET"]["rps_ratio"] == pytest.approx(0.8)
    assert evio["P1"]["GET"]["cpu_ratio"] == pytest.approx(5.4 / 5.0)
    assert evio["bandwidth"]["pull"]["mb_per_s"] == pytest.approx(800)
    assert evio["bandwidth"]["push"]["mb_per_s_ratio"] == pytest.approx(0.8)
    assert summary["haproxy"]["tests"]["connect"][CONNECT_TEST]["rps_ratio"] == pytest.approx(1.0)
    checks = check("proxy", summary)
    assert {c["server"] for c in checks} == {"evio"}
    assert len(checks) == sum(len(t.cases) for t in TARGETS if t.benchmark == "proxy")
    by_case = {(*c["case"], c["target"]): c["met"] for c in checks}
    assert not by_case[("tests", "P128", "GET", "requests/s >= 1.0x HAProxy")]  # 0.8x HAProxy's requests/s
    assert by_case[("tests", "P1", "SET", "-P 1: proxy CPU per request <= 1.1x HAProxy")]  # 1.08x: within 1.1x
    assert check("proxy", {k: v for k, v in summary.items() if k != "evio"}) == []


def test_report_renders_every_section_from_json() -> None:
    loads = make_loads(1000, 500)
    report = {
        "meta": {
            "benchmark": "proxy",
            "date": "2026-12-02",
            "machine": {
                "cpu_model": "Test CPU",
                "cpus": 2,
                "virtualized": "",
                "memory_mib": 1024,
                "kernel": "Linux 6",
                "os": "Debian",
            },
            "pinning": "each proxy alone on CPU 0",
            "revision": "abc1234",
            "redis_benchmark": "redis-benchmark 7.0.15",
            "backend": "Redis server v=7.0.15",
            "rounds": 2,
            "quick": True,
            "checks": False,
            "haproxy_config": haproxy_config("PORT", "BACKEND", checks=False),
            "idle_connections": 1000,
            "transfer_bytes": 1 << 30,
            "others_before": 0.01,
            "max_other": 0.2,
            "runs_measured_again": 3,
            "runs_still_disturbed": 0,
            "loads": [
                {
                    "key": load.key,
                    "label": load.label,
                    "clients": load.clients,
                    "pipeline": load.pipeline,
                    "requests_per_test": load.requests,
                    "keepalive": not isinstance(load, ShortLoad),
                }
                for load in loads
            ],
            "tests": list(TESTS),
        },
        "servers": {
            key: {"label": key, "software": f"{key} 1.0", "build": f"{key} build", "loop": "epoll", "command": "x"}
            for key in KEYS
        },
        "skipped": {"evio-stdlib": "not asked for"},
        "summary": {"servers": fake_summary()},
    }
    report = json.loads(json.dumps(report))  # what the JSON file holds
    text, chart = render_proxy(report)
    headings = ("## Proxies", "## Targets", "## Request rate", "## Connection rate", "## Bandwidth", "## Memory")
    for heading in (*headings, "## Who limits whom", "## What limits the evio proxy"):
        assert heading in text, heading
    assert "nbthread 1" in text and "**Quick run**" in text and "3 runs were measured again" in text
    assert "❌ 0 of 4 met (missed: -P 1 SET 0.80x" in text
    assert "✅ 2 of 2 met" in text  # CPU per request at -P 1: 1.08x
    assert "800 MB/s" in text and "20.0 MiB" in text and "10.2 KiB" in text
    assert "Not measured: evio-stdlib (not asked for)." in text
    assert len(chart.panels) == 4
