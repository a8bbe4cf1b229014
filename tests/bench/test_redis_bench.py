"""The Redis benchmark's own pieces: its loads' redis-benchmark arguments and its contenders."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis_bench
from redis_bench import find_contenders, make_loads, parse_args, reference


def test_loads_and_their_redis_benchmark_arguments() -> None:
    loads = {load.key: load for load in make_loads(1000)}
    assert list(loads) == ["P128", "P1", "P1_C1000", "D3", "D1000", "D100000", "AOF"]
    p128, single, many = loads["P128"], loads["P1"], loads["P1_C1000"]
    assert (p128.pipeline, p128.clients, single.pipeline, single.clients, many.clients) == (128, 50, 1, 50, 1000)
    assert p128.requests > single.requests == many.requests == 1000
    argv = p128.argv(7000, "PING_MBULK")
    assert argv[:5] == ["redis-benchmark", "-h", "127.0.0.1", "-p", "7000"]
    assert argv[argv.index("-t") + 1] == "ping_mbulk" and argv[argv.index("-P") + 1] == "128"
    assert "-d" not in argv
    kilobyte = loads["D1000"].argv(7000, "SET")
    assert " ".join(kilobyte).endswith("-P 16 -n 5000 -d 1000")
    assert loads["D1000"].tests == ("SET", "GET") and loads["D3"].argv(1, "GET")[-2:] == ["-d", "3"]
    assert loads["D100000"].argv(1, "SET")[-2:] == ["-d", "100000"] and loads["D100000"].requests == 1000
    aof = loads["AOF"]
    assert aof.aof and aof.pipeline == 16 and "-d" not in aof.argv(1, "SET") and "AOF" in aof.label
    assert [load.key for load in make_loads(1000, values=False)] == ["P128", "P1", "P1_C1000"]


def test_who_runs_which_load() -> None:
    every, _ = find_contenders(None, Path("/nonexistent/python"))
    by_key = {c.key: c for c in every}
    loads = {load.key: load for load in make_loads(1000)}
    assert by_key["redis"].runs(loads["D1000"]) and not by_key["redis"].runs(loads["AOF"])
    assert by_key["evio"].runs(loads["D100000"]) and not by_key["evio"].runs(loads["AOF"])
    assert not by_key["asyncio"].runs(loads["D1000"]) and by_key["asyncio"].runs(loads["P1"])
    assert by_key["redis-aof"].runs(loads["AOF"]) and not by_key["redis-aof"].runs(loads["P128"])
    assert by_key["evio-aof"].runs(loads["AOF"]) and not by_key["evio-aof"].runs(loads["D3"])
    assert reference(("AOF", "SET")) == "redis-aof" and reference(("D1000", "GET")) == "redis"


def test_the_aof_servers_write_into_their_own_folder() -> None:
    every, _ = find_contenders(None, Path("/nonexistent/python"))
    by_key = {c.key: c for c in every}
    redis = by_key["redis-aof"].command(6400, "/w/redis-aof")
    assert " ".join(redis).endswith("--appendonly yes --appendfsync everysec --dir /w/redis-aof")
    clone = by_key["evio-aof"].command(6401, "/w/evio-aof")
    assert clone[clone.index("--appendfilename") + 1] == "/w/evio-aof/appendonly.aof"
    assert clone[clone.index("--appendfsync") + 1] == "everysec"
    assert by_key["evio"].command(6402)[-2:] == ["--appendonly", "no"]


def test_the_compiled_build_is_skipped_with_the_reason_when_absent() -> None:
    _, skipped = find_contenders(None, Path("/nonexistent/python"))
    assert "no compiled build at /nonexistent/python" in skipped["evio-compiled"]
    assert "evio-compiled-aof" in skipped
    every, _ = find_contenders(["redis", "evio"], Path("/nonexistent/python"))
    assert [c.key for c in every] == ["redis", "evio"]


def test_the_compiled_contender_keeps_the_source_off_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_bench, "compiled_build_problem", lambda python, modules, cwd: "")
    every, skipped = find_contenders(None, Path("/opt/compiled/bin/python"))
    compiled = next(c for c in every if c.key == "evio-compiled")
    assert "evio-compiled" not in skipped
    assert compiled.argv[:3] == ["/opt/compiled/bin/python", "-I", str(redis_bench.REPO / "examples/redis_server.py")]
    assert (compiled.label, compiled.variant) == ("evio, CPython, compiled (mypyc)", "compiled (mypyc)")
    assert compiled.display().startswith("python -I examples/redis_server.py --port PORT")


def test_quick_args_write_to_a_temporary_directory() -> None:
    args = parse_args(["--quick"])
    assert args.rounds == 1 and "evio-bench-quick" in args.out and args.compiled.endswith(".venv-compiled/bin/python")
    with pytest.raises(SystemExit):
        parse_args(["--requests", "10"])
