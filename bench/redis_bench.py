"""The Redis benchmark: redis-benchmark against redis-server, the evio clone, and asyncio and uvloop servers.

    python bench/redis_bench.py [--rounds N] [--requests N] [--quick] [--servers a,b] [--out DIR]

Every server runs on loopback, pinned to one CPU, with redis-benchmark pinned to the other. Each
round runs every test against every server back to back (in a rotated order, `rounds.py`), so slow
drift on a shared machine hits all servers alike; the report gives medians over rounds and ratios
to the redis-server measured in the same run. The loads: PING, SET and GET at -P 128 and -P 1 (50
and 1,000 clients); SET and GET at -P 16 with values of 3, 1,000 and 100,000 bytes; SET and GET
with an append-only file (fsync every second), against a redis-server with one. Server CPU time
comes from /proc around each redis-benchmark run; memory from a fresh server holding 1,000 idle
connections. The clone runs on CPython, on PyPy, and compiled with mypyc where `make compiled` has
built `.venv-compiled`. Results go to redis.json, and from it redis.md and redis.png (`report.py`),
in --out (docs/bench by default).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import report
from harness import (
    COMPILED_PYTHON,
    LOOPBACK,
    BenchError,
    Pinning,
    Sample,
    ServerProcess,
    add_disturbance_arguments,
    choose_contenders,
    compiled_build_problem,
    display_command,
    free_port,
    idle_connections,
    interpreter_info,
    log,
    machine_info,
    measure_run,
    median,
    plan_pinning,
    quick_defaults,
    raise_fd_limit,
    run_benchmark,
    source_revision,
    write_json,
)
from rounds import Case, Disturbance, run_rounds, samples_json, summarize

REPO = Path(__file__).resolve().parent.parent
TESTS = ("PING_INLINE", "PING_MBULK", "SET", "GET")
VALUE_TESTS = ("SET", "GET")
IDLE_REQUEST = b"*1\r\n$4\r\nPING\r\n"
COMPILED_MODULES = ("evio.loop", "redisclone.resp")  # compiled in a mypyc build: extension modules

_RESULT_LINE = re.compile(r"^\s*(?P<test>[^:\r\n]+?): (?P<rps>\d+(?:\.\d+)?) requests per second")


def parse_benchmark_output(text: str) -> dict[str, float]:
    """Requests per second per test from `redis-benchmark -q` output.

    The result lines ("SET: 123456.79 requests per second, p50=0.103 msec") come after progress
    lines that end in '\\r' rather than '\\n', so the text is split at both.
    """
    results: dict[str, float] = {}
    for segment in re.split(r"[\r\n]+", text):
        match = _RESULT_LINE.match(segment)
        if match:
            results[match["test"].strip()] = float(match["rps"])
    return results


@dataclass(frozen=True)
class Load:
    """One redis-benchmark configuration: clients, pipeline depth, requests per test, the tests and value size.

    An `aof` load runs against the servers started with an append-only file, and its ratios are to the
    redis-server started with one.
    """

    key: str
    clients: int
    pipeline: int
    requests: int
    tests: tuple[str, ...] = TESTS
    data_size: int | None = None  # redis-benchmark's -d (None: its default, 3 bytes)
    aof: bool = False

    @property
    def label(self) -> str:
        size = f", -d {self.data_size:,}" if self.data_size is not None else ""
        return f"-P {self.pipeline}, {self.clients:,} clients{size}" + (", AOF everysec" if self.aof else "")

    @property
    def values(self) -> bool:
        """Whether this is a value-size or AOF load, measured only for redis-server and the clone."""
        return self.data_size is not None or self.aof

    def argv(self, port: int, test: str, requests: int | None = None) -> list[str]:
        argv = ["redis-benchmark", "-h", LOOPBACK, "-p", str(port), "-t", test.lower(), "-q"]
        argv += [
            "-c",
            str(self.clients),
            "-P",
            str(self.pipeline),
            "-n",
            str(self.requests if requests is None else requests),
        ]
        if self.data_size is not None:
            argv += ["-d", str(self.data_size)]
        return argv

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "clients": self.clients,
            "pipeline": self.pipeline,
            "requests_per_test": self.requests,
            "tests": list(self.tests),
            "data_size": self.data_size,
            "aof": self.aof,
        }


PIPELINED_FACTOR = 30  # -P 128 runs this many times the requests of -P 1, to last about as long
VALUE_PIPELINE = 16
#: The value sizes measured at -P 16, each with its requests as a multiple of -P 1's, to last a few seconds.
VALUE_SIZES = ((3, 15.0), (1000, 5.0), (100_000, 0.25))
AOF_FACTOR = 15.0


def make_loads(requests: int, *, values: bool = True) -> tuple[Load, ...]:
    """The loads; `requests` is per test at -P 1, the others run a multiple of it, to last about as long.

    With `values`: SET and GET at -P 16 with each of VALUE_SIZES, and with an AOF (3-byte values).
    """
    loads = [
        Load("P128", clients=50, pipeline=128, requests=PIPELINED_FACTOR * requests),
        Load("P1", clients=50, pipeline=1, requests=requests),
        Load("P1_C1000", clients=1000, pipeline=1, requests=requests),
    ]
    if values:
        for size, factor in VALUE_SIZES:
            n = max(1000, int(factor * requests))
            loads.append(Load(f"D{size}", 50, VALUE_PIPELINE, n, VALUE_TESTS, data_size=size))
        loads.append(Load("AOF", 50, VALUE_PIPELINE, max(1000, int(AOF_FACTOR * requests)), VALUE_TESTS, aof=True))
    return tuple(loads)


@dataclass
class Contender:
    """A server under test: how to start it on a port, and what it is."""

    key: str
    label: str
    argv: list[str]  # "{port}" stands for the port, "{dir}" for a fresh folder of its own (its AOF)
    loop: str = ""  # the event loop, for the report
    env: dict[str, str] = field(default_factory=dict)
    pure_parser: bool = False  # parses with pure Python even where hiredis is installed
    default: bool = True  # measured unless --servers says otherwise
    values: bool = False  # measured in the value-size loads too
    aof: bool = False  # started with an AOF: measured in the AOF load only
    variant: str = "source"  # how the code it runs was built: "source", "compiled (mypyc)" or "C"
    description: dict[str, str] = field(default_factory=dict)

    def command(self, port: int, workdir: str = "") -> list[str]:
        return [word.replace("{port}", str(port)).replace("{dir}", workdir) for word in self.argv]

    def display(self) -> str:
        """The command as a person would type it in the repository's root."""
        return display_command(self.argv, self.env, REPO, (("{port}", "PORT"), ("{dir}", "DIR")))

    def runs(self, load: Load) -> bool:
        """Whether this server is measured under `load`."""
        if load.aof:
            return self.aof
        return not self.aof and (self.values or not load.values)


def find_contenders(
    wanted: Sequence[str] | None, compiled_python: Path = COMPILED_PYTHON
) -> tuple[list[Contender], dict[str, str]]:
    """The servers to measure, and why any of the others is left out.

    `compiled_python` is the interpreter of the compiled build (`make compiled`): evio and the clone's
    protocol package compiled with mypyc and installed there. It runs the clone with -I, so that the
    script's folder (examples/, with the source of `redisclone`) is not put on the path and the
    compiled `redisclone` is the one imported.
    """
    python = sys.executable
    compiled = str(compiled_python)
    pypy = shutil.which("pypy3")
    clone = str(REPO / "examples" / "redis_server.py")
    asyncio_server = str(REPO / "bench" / "redis_asyncio_server.py")
    pypy_env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "examples")])}
    redis = ["redis-server", "--port", "{port}", "--bind", LOOPBACK, "--save", ""]
    evio = [clone, "--port", "{port}"]
    no_aof = ["--appendonly", "no"]
    aof = ["--appendonly", "yes", "--appendfsync", "everysec"]

    def clones(suffix: str, label: str, extra: list[str], with_aof: bool) -> list[Contender]:
        common: dict[str, Any] = {"loop": "evio epoll", "values": True, "aof": with_aof}
        return [
            Contender("evio" + suffix, "evio (CPython)" + label, [python, *evio, *extra], **common),
            Contender(
                "evio-compiled" + suffix,
                "evio, CPython, compiled (mypyc)" + label,
                [compiled, "-I", *evio, *extra],
                variant="compiled (mypyc)",
                **common,
            ),
            Contender(
                "evio-pypy" + suffix, "evio (PyPy)" + label, [pypy or "pypy3", *evio, *extra], env=pypy_env, **common
            ),
        ]

    every = [
        Contender("redis", "redis-server", [*redis, *no_aof], loop="ae (epoll)", values=True, variant="C"),
        *clones("", "", no_aof, False),
        Contender(
            "evio-stdlib",
            "evio --stdlib (CPython)",
            [python, *evio, *no_aof, "--stdlib"],
            loop="evio portable (selectors)",
        ),
        Contender(
            "evio-pure",
            "evio --pure-parser (CPython)",
            [python, *evio, *no_aof, "--pure-parser"],
            loop="evio epoll",
            pure_parser=True,
            default=False,
        ),
        Contender(
            "asyncio",
            "asyncio (CPython)",
            [python, asyncio_server, "--port", "{port}"],
            loop="asyncio (selector event loop)",
        ),
        Contender(
            "uvloop", "uvloop (CPython)", [python, asyncio_server, "--port", "{port}", "--uvloop"], loop="uvloop"
        ),
        Contender(
            "redis-aof", "redis-server, AOF", [*redis, *aof, "--dir", "{dir}"], loop="ae (epoll)", aof=True, variant="C"
        ),
        *clones("-aof", ", AOF", [*aof, "--appendfilename", "{dir}/appendonly.aof"], True),
    ]
    missing = {}
    if shutil.which("redis-server") is None:
        missing["redis"] = missing["redis-aof"] = "redis-server is not installed"
    if not Path(clone).exists():
        missing.update({c.key: "examples/redis_server.py does not exist" for c in every if c.key.startswith("evio")})
    if pypy is None:
        missing["evio-pypy"] = missing["evio-pypy-aof"] = "pypy3 is not installed"
    problem = compiled_build_problem(compiled, COMPILED_MODULES, REPO)
    if problem:
        missing["evio-compiled"] = missing["evio-compiled-aof"] = problem
    if not Path(asyncio_server).exists():
        missing["asyncio"] = missing["uvloop"] = "bench/redis_asyncio_server.py does not exist"
    if importlib.util.find_spec("uvloop") is None:
        missing["uvloop"] = f"uvloop is not installed for {python}"
    chosen, skipped = choose_contenders(every, missing, wanted, reference="redis", reference_label="redis-server")
    if any(c.aof for c in chosen) and not any(c.key == "redis-aof" for c in chosen):
        # The AOF load's ratios are to redis-server with an AOF: without it, the AOF servers are left out.
        skipped.update({c.key: "redis-aof, the reference of the AOF load, is not measured" for c in chosen if c.aof})
        chosen = [c for c in chosen if not c.aof]
    return chosen, skipped


def describe(contender: Contender) -> dict[str, str]:
    """What runs: the interpreter (version, build), how the code was built, the parser and the event loop."""
    if contender.variant == "C":
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
        fields = dict(word.split("=", 1) for word in version.split() if "=" in word)
        return {
            "software": f"redis-server {fields.get('v', '?')} (C, {fields.get('malloc', 'libc')})",
            "build": version.strip(),
            "variant": contender.variant,
            "parser": "C (redis)",
            "loop": contender.loop,
        }
    executable = contender.argv[0]
    info = interpreter_info(executable, contender.env)
    probe = subprocess.run(
        [executable, "-c", "import hiredis"], capture_output=True, env={**os.environ, **contender.env}, check=False
    )
    return {
        "software": f"{info['implementation']} {info['version']}",
        "build": info["build"],
        "variant": contender.variant,
        "parser": "hiredis" if probe.returncode == 0 and not contender.pure_parser else "pure Python",
        "loop": contender.loop,
    }


def measure(
    server: ServerProcess, load: Load, test: str, pinning: Pinning, mine: Sequence[int], requests: int | None = None
) -> Sample:
    """Run one redis-benchmark test against `server`, reading the server's CPU time before and after.

    `mine` are the benchmark's other processes (the idle servers): their CPU time is not a disturbance.
    """
    n = load.requests if requests is None else requests
    measured = measure_run(server, load.argv(server.port, test, n), pinning, mine, timeout=120 + n / 2000)
    run = measured.client
    rps = parse_benchmark_output(run.stdout).get(test)
    if rps is None:
        raise BenchError(
            f"redis-benchmark printed no {test} result against {server.name}\n"
            f"stdout: {run.stdout[-500:]!r}\nstderr: {run.stderr[-500:]!r}"
        )
    return Sample(rps, measured.server_cpu_seconds, n, run.seconds, measured.others_seconds, measured.steal_seconds)


def measure_idle_memory(contender: Contender, pinning: Pinning, idle: int) -> dict[str, int]:
    """A fresh server's RSS at start and with `idle` connections open (each has sent a PING), in KiB."""
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="redis-bench-memory-") as workdir,
        ServerProcess(
            contender.label,
            contender.command(port, workdir),
            port=port,
            cpus=pinning.server_cpus,
            env=contender.env,
            cwd=workdir,
        ) as server,
    ):
        server.start()
        start = server.memory_kib()["VmRSS"]
        with idle_connections(port, idle, IDLE_REQUEST, lambda got: got.endswith(b"\r\n")):
            held = server.memory_kib()
        return {"rss_start_kib": start, "rss_idle_kib": held["VmRSS"], "peak_idle_kib": held["VmHWM"]}


def cases(loads: Sequence[Load]) -> list[Case]:
    """Every test of every load, in order: the round driver's cases, keyed (load key, test)."""
    return [Case((load.key, test), f"{load.label} {test}") for load in loads for test in load.tests]


def reference(case_key: tuple[str, ...]) -> str:
    """The server every ratio of a case is to: redis-server, with an AOF for the AOF load."""
    return "redis-aof" if case_key[0] == "AOF" else "redis"


# -- the run ----------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    wanted = args.servers.split(",") if args.servers else None
    contenders, skipped = find_contenders(wanted, Path(args.compiled))
    for key, why in skipped.items():
        log(f"skipping {key}: {why}")
    loads = make_loads(args.requests, values=not args.no_values)
    loads = tuple(load for load in loads if any(c.runs(load) for c in contenders))
    by_key = {load.key: load for load in loads}
    pinning = plan_pinning(enabled=not args.no_pin)
    raise_fd_limit(max(4096, 2 * max(load.clients for load in loads) + args.idle + 256))
    log(f"pinning: {pinning.describe()}")
    revision = source_revision(
        REPO, ["src", "examples/redis_server.py", "examples/redisclone", "bench/harness.py", "bench/redis_*.py"]
    )
    log(f"measuring commit {revision}")
    for c in contenders:
        c.description = {**describe(c), "command": c.display()}
        log(f"{c.label}: {c.description['software']}, {c.description['variant']}, {c.description['parser']}")

    memory: dict[str, list[dict[str, int]]] = {c.key: [] for c in contenders if not c.aof}
    servers: dict[str, ServerProcess] = {}
    peak: dict[str, int] = {}
    workdir = tempfile.mkdtemp(prefix="redis-bench-")
    try:
        for c in contenders:
            port = free_port()
            own = os.path.join(workdir, c.key)  # a fresh folder each: the AOF servers write theirs there
            os.mkdir(own)
            servers[c.key] = ServerProcess(
                c.label, c.command(port, own), port=port, cpus=pinning.server_cpus, env=c.env, cwd=own
            ).start()
        mine = [server.pid for server in servers.values()]

        def measured(c: Contender, case: Case, requests: int | None = None) -> Sample:
            return measure(servers[c.key], by_key[case.key[0]], case.key[1], pinning, mine, requests)

        def warm(c: Contender, case: Case) -> Sample:
            load = by_key[case.key[0]]
            return measured(c, case, max(min(1000, load.requests), int(load.requests * args.warmup)))

        def memory_round(r: int, order: list[Contender]) -> None:
            for c in order:
                if not c.aof:
                    memory[c.key].append(measure_idle_memory(c, pinning, args.idle))
            log(
                f"round {r + 1}/{args.rounds} memory: "
                + ", ".join(f"{key} {m[-1]['rss_idle_kib'] / 1024:.1f} MiB" for key, m in memory.items())
            )

        rounds = run_rounds(
            contenders,
            cases(loads),
            measured,
            rounds=args.rounds,
            mine=mine,
            disturbance=Disturbance.from_args(args),
            runs=lambda c, case: c.runs(by_key[case.key[0]]),
            warm=warm,
            after_round=memory_round,
        )
        for c in contenders:
            peak[c.key] = servers[c.key].memory_kib()["VmHWM"]
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    per_server = {key: {"loads": figures} for key, figures in summarize(rounds.samples, reference).items()}
    for key, mem in memory.items():
        per_server[key]["memory"] = {
            name: median([m[name] for m in mem]) for name in ("rss_start_kib", "rss_idle_kib", "peak_idle_kib")
        }
    result: dict[str, Any] = {
        "meta": {
            "benchmark": "redis",
            "date": datetime.date.today().isoformat(),
            "machine": machine_info(),
            "pinning": pinning.describe(),
            "revision": revision,
            "redis_benchmark": subprocess.run(
                ["redis-benchmark", "--version"], capture_output=True, text=True, check=True
            ).stdout.strip(),
            "rounds": args.rounds,
            "quick": args.quick,
            "idle_connections": args.idle,
            "warmup_fraction": args.warmup,
            **rounds.meta(),
            "loads": [load.as_json() for load in loads],
            "tests": list(TESTS),
            "command": " ".join(["python", "bench/redis_bench.py", *sys.argv[1:]]),
        },
        "servers": {c.key: {"label": c.label, **c.description} for c in contenders},
        "skipped": skipped,
        "summary": {"servers": per_server},
        "peak_under_load_kib": peak,
        "samples": samples_json(rounds.samples),
        "memory_samples": memory,
    }
    out = Path(args.out)
    write_json(out / "redis.json", result)
    written = report.render(out / "redis.json")
    log("wrote " + ", ".join(str(p) for p in [out / "redis.json", *written]))
    print(written[0].read_text())
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="measured rounds (default 5; 1 with --quick)")
    parser.add_argument(
        "--requests",
        type=int,
        help=f"requests per test at -P 1; -P 128 runs {PIPELINED_FACTOR} times as many, the value loads "
        "a multiple each too (default 20000; 5000 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test of a few minutes; writes to a temporary directory"
    )
    parser.add_argument(
        "--servers",
        help="comma-separated servers from redis,evio,evio-compiled,evio-pypy,evio-stdlib,evio-pure,asyncio,uvloop,"
        "redis-aof,evio-aof,evio-compiled-aof,evio-pypy-aof (default: all that are available but evio-pure)",
    )
    parser.add_argument(
        "--compiled",
        metavar="PYTHON",
        default=str(COMPILED_PYTHON),
        help="the interpreter of the compiled build (default .venv-compiled/bin/python, which `make compiled` builds)",
    )
    parser.add_argument("--no-values", action="store_true", help="leave out the value-size and AOF loads")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure (default 1000)")
    parser.add_argument(
        "--warmup", type=float, default=0.3, help="warm-up requests as a fraction of a round's (default 0.3)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and redis-benchmark to CPUs")
    add_disturbance_arguments(parser)
    parser.add_argument("--out", help="directory for redis.json, redis.md, redis.png (default docs/bench)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.requests is None:
        args.requests = 5_000 if args.quick else 20_000
    quick_defaults(args, REPO)
    if args.rounds < 1 or args.requests < 1000 or args.idle < 1:
        parser.error("--rounds must be >= 1, --requests >= 1000, --idle >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
