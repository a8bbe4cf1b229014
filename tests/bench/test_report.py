"""The reports, rendered from JSON alone: the stored results in docs/bench, and a made-up Redis run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import report
from harness import Sample
from redis_bench import make_loads
from rounds import CaseKey, summarize
from targets import Target, check

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bench"

MACHINE = {
    "cpu_model": "Test CPU",
    "cpus": 2,
    "virtualized": "",
    "memory_mib": 1024,
    "kernel": "Linux 6",
    "os": "Debian",
}


@pytest.mark.parametrize("kind", ["redis", "http", "proxy"])
def test_the_stored_results_render(kind: str, tmp_path: Path) -> None:
    source = tmp_path / f"{kind}.json"
    shutil.copy(DOCS / f"{kind}.json", source)
    written = report.render(source, tmp_path / "out")
    text = written[0].read_text()
    assert written[0] == tmp_path / "out" / f"{kind}.md"
    for heading in ("## Servers" if kind != "proxy" else "## Proxies", "## Targets", "## What was measured"):
        assert heading in text, heading
    assert "| server | runs on | build |" in text or "| proxy | runs on | build |" in text
    assert "issue" not in text.lower()
    # The stored Markdown is what rendering the stored JSON gives.
    assert text == (DOCS / f"{kind}.md").read_text()


def test_the_command_line_rebuilds_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(DOCS / "http.json", tmp_path / "http.json")
    assert report.main([str(tmp_path / "http.json")]) == 0
    assert (tmp_path / "http.md").exists() and str(tmp_path / "http.md") in capsys.readouterr().out
    (tmp_path / "other.json").write_text(json.dumps({"meta": {"benchmark": "nope"}}))
    with pytest.raises(SystemExit, match="not a benchmark report"):
        report.main([str(tmp_path / "other.json")])


SPEED = {"redis": 1.0, "evio": 0.9, "evio-pypy": 1.3, "asyncio": 0.5, "redis-aof": 1.0, "evio-aof": 0.7}


def made_up_redis_report() -> dict[str, Any]:
    loads = make_loads(1000)
    samples: dict[str, dict[CaseKey, list[Sample]]] = {key: {} for key in SPEED}
    for load in loads:
        for key, speed in SPEED.items():
            if load.aof != key.endswith("-aof") or (key == "asyncio" and load.values):
                continue
            for test in load.tests:
                samples[key][(load.key, test)] = [Sample(100_000 * speed, 1.0 / speed, 100_000, 1.0) for _ in range(2)]
    per_server: dict[str, Any] = {
        key: {"loads": figures}
        for key, figures in summarize(samples, lambda case: "redis-aof" if case[0] == "AOF" else "redis").items()
    }
    for key in ("redis", "evio", "evio-pypy", "asyncio"):
        per_server[key]["memory"] = {"rss_start_kib": 8192, "rss_idle_kib": 16384 * SPEED[key], "peak_idle_kib": 20000}
    servers = {
        key: {
            "label": key,
            "software": "CPython 3.11.7" if key.startswith(("evio", "asyncio")) else "redis-server 7.0.15 (C)",
            "build": "3.11.7 (main)",
            "variant": "source" if key.startswith(("evio", "asyncio")) else "C",
            "parser": "hiredis",
            "loop": "epoll",
            "command": f"{key} --port PORT",
        }
        for key in SPEED
    }
    meta = {
        "benchmark": "redis",
        "date": "2026-12-03",
        "machine": MACHINE,
        "pinning": "server on CPU 0, load generator on CPU 1",
        "revision": "abc1234",
        "redis_benchmark": "redis-benchmark 7.0.15",
        "rounds": 2,
        "quick": True,
        "idle_connections": 1000,
        "others_before": 0.0,
        "max_other": 0.2,
        "retries": 2,
        "runs_measured_again": 0,
        "runs_still_disturbed": 0,
        "loads": [load.as_json() for load in loads],
        "tests": ["PING_INLINE", "PING_MBULK", "SET", "GET"],
    }
    skipped = {"evio-compiled": "no compiled build at .venv-compiled/bin/python (`make compiled` builds one)"}
    result = {"meta": meta, "servers": servers, "skipped": skipped, "summary": {"servers": per_server}}
    result["peak_under_load_kib"] = {key: 30000 for key in SPEED}
    loaded: dict[str, Any] = json.loads(json.dumps(result))  # what the JSON file holds
    return loaded


def test_the_redis_report_shows_value_sizes_the_aof_and_what_was_skipped() -> None:
    text, chart = report.render_redis(made_up_redis_report())
    for heading in ("-P 16, 50 clients, -d 3", "-P 16, 50 clients, -d 1,000", "-P 16, 50 clients, -d 100,000"):
        assert f"## {heading}: requests per second" in text, heading
    assert "## -P 16, 50 clients, AOF everysec: requests per second" in text
    assert "| server | SET | GET |" in text
    aof_table = text.split("AOF everysec: requests per second")[1].split("##")[0]
    assert "| evio-aof |" in aof_table and "(0.70x)" in aof_table and "| evio |" not in aof_table
    assert "Not measured: evio-compiled (no compiled build at .venv-compiled/bin/python" in text
    assert "| evio | CPython 3.11.7 | source | hiredis | epoll |" in text
    assert "-P 16 -d 1000: requests/s >= 0.8x redis-server | ✅ 2 of 2 met" in text  # 0.9x
    assert "-P 16, every value size: requests/s >= 1.0x redis-server | ✅ 6 of 6 met" in text
    assert "values of 1,000 bytes" in text and "appendfsync everysec" in text
    assert len(chart.panels) == 8  # a panel per load, and memory


def test_targets_are_checked_against_the_table() -> None:
    summary = {
        "a": {"loads": {"x": {"rps_ratio": 1.2, "cpu_us_per_request": 2.0}}},
        "peer": {"loads": {"x": {"rps_ratio": 1.0, "cpu_us_per_request": 4.0}}},
    }
    table = [
        Target("redis", ("a", "missing"), "rps", "rps_ratio", ">=", 1.25, (("loads", "x"), ("loads", "y"))),
        Target("redis", ("a",), "cpu", "cpu_us_per_request", "<", 1.0, (("loads", "x"),), versus="peer"),
        Target("redis", ("a",), "cpu", "cpu_us_per_request", "<", 1.0, (("loads", "x"),), versus="absent"),
        Target("http", ("a",), "rps", "rps_ratio", ">=", 1.0, (("loads", "x"),)),
    ]
    checks = check("redis", summary, table)
    assert [(c["target"], c["case"], c["value"], c["met"]) for c in checks] == [
        ("rps >= 1.25x redis-server", ["loads", "x"], 1.2, False),
        ("cpu < 1.0x peer's", ["loads", "x"], 0.5, True),
    ]
