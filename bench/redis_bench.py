"""The Redis benchmark: redis-benchmark against redis-server, the evio clone, and asyncio and uvloop servers.

    python bench/redis_bench.py [--rounds N] [--requests N] [--quick] [--servers a,b] [--out DIR]

Every server runs on loopback, pinned to one CPU, with redis-benchmark pinned to the other. Each
round runs every test against every server back to back (in a rotated order), so slow drift on a
shared machine hits all servers alike; the report gives medians over rounds and ratios to the
redis-server measured in the same run. Server CPU time comes from /proc/PID/stat around each
redis-benchmark run; memory from /proc/PID/status on a fresh server holding 1,000 idle connections.
Results go to redis.json, redis.md and redis.png in --out (docs/bench by default).
"""

from __future__ import annotations

import argparse
import datetime
import functools
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

from harness import (
    LOOPBACK,
    BenchError,
    DisturbedRuns,
    Panel,
    Pinning,
    Sample,
    ServerProcess,
    add_disturbance_arguments,
    bar_chart,
    chart_note,
    check_mark,
    choose_contenders,
    display_command,
    free_port,
    idle_connections,
    interpreter_info,
    log,
    machine_info,
    markdown_table,
    measure_run,
    median,
    plan_pinning,
    quick_defaults,
    raise_fd_limit,
    rotated,
    run_benchmark,
    run_figures,
    run_on,
    servers_section,
    shared_machine,
    short_rps,
    source_revision,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
TESTS = ("PING_INLINE", "PING_MBULK", "SET", "GET")
IDLE_REQUEST = b"*1\r\n$4\r\nPING\r\n"
IDLE_REPLY = b"+PONG\r\n"

# The targets the issue sets, checked in every report.
RPS_TARGET = 1.0  # evio's requests/s at -P 128 as a multiple of redis-server's: at least this
CPU_TARGET = 1.25  # evio's CPU per request at -P 1 as a multiple of redis-server's: at most this

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
    """One redis-benchmark configuration: how many clients, how deep a pipeline, how many requests per test."""

    key: str
    clients: int
    pipeline: int
    requests: int

    @property
    def label(self) -> str:
        return f"-P {self.pipeline}, {self.clients:,} clients"

    def argv(self, port: int, test: str, requests: int | None = None) -> list[str]:
        return [
            "redis-benchmark",
            "-h",
            LOOPBACK,
            "-p",
            str(port),
            "-t",
            test.lower(),
            "-q",
            "-c",
            str(self.clients),
            "-P",
            str(self.pipeline),
            "-n",
            str(self.requests if requests is None else requests),
        ]


PIPELINED_FACTOR = 30  # -P 128 runs this many times the requests of -P 1, to last about as long


def make_loads(requests: int) -> tuple[Load, ...]:
    """The three loads of the issue; `requests` is per test at -P 1, and PIPELINED_FACTOR times that at -P 128."""
    return (
        Load("P128", clients=50, pipeline=128, requests=PIPELINED_FACTOR * requests),
        Load("P1", clients=50, pipeline=1, requests=requests),
        Load("P1_C1000", clients=1000, pipeline=1, requests=requests),
    )


@dataclass
class Contender:
    """A server under test: how to start it on a port, and what it is."""

    key: str
    label: str
    argv: list[str]  # "{port}" stands for the port
    loop: str = ""  # the event loop, for the report
    env: dict[str, str] = field(default_factory=dict)
    targeted: bool = False  # the targets apply to it
    pure_parser: bool = False  # parses with pure Python even where hiredis is installed
    default: bool = True  # measured unless --servers says otherwise
    description: dict[str, str] = field(default_factory=dict)

    def command(self, port: int) -> list[str]:
        return [word.replace("{port}", str(port)) for word in self.argv]

    def display(self) -> str:
        """The command as a person would type it in the repository's root."""
        return display_command(self.argv, self.env, REPO)


def find_contenders(wanted: Sequence[str] | None) -> tuple[list[Contender], dict[str, str]]:
    """The servers to measure, and why any of the others is left out."""
    python = sys.executable
    pypy = shutil.which("pypy3")
    clone = str(REPO / "examples" / "redis_server.py")
    asyncio_server = str(REPO / "bench" / "redis_asyncio_server.py")
    pypy_path = os.pathsep.join([str(REPO / "src"), str(REPO / "examples")])
    redis = ["redis-server", "--port", "{port}", "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    evio = [clone, "--port", "{port}", "--appendonly", "no"]
    every = [
        Contender("redis", "redis-server", redis, loop="ae (epoll)"),
        Contender("evio", "evio (CPython)", [python, *evio], loop="evio epoll", targeted=True),
        Contender(
            "evio-pypy",
            "evio (PyPy)",
            [pypy or "pypy3", *evio],
            loop="evio epoll",
            env={"PYTHONPATH": pypy_path},
            targeted=True,
        ),
        Contender(
            "evio-stdlib",
            "evio --stdlib (CPython)",
            [python, *evio, "--stdlib"],
            loop="evio portable (selectors)",
        ),
        Contender(
            "evio-pure",
            "evio --pure-parser (CPython)",
            [python, *evio, "--pure-parser"],
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
    ]
    missing = {}
    if shutil.which("redis-server") is None:
        missing["redis"] = "redis-server is not installed"
    if not Path(clone).exists():
        for key in ("evio", "evio-pypy", "evio-stdlib", "evio-pure"):
            missing[key] = "examples/redis_server.py does not exist"
    if pypy is None:
        missing["evio-pypy"] = "pypy3 is not installed"
    if not Path(asyncio_server).exists():
        missing["asyncio"] = missing["uvloop"] = "bench/redis_asyncio_server.py does not exist"
    if importlib.util.find_spec("uvloop") is None:
        missing["uvloop"] = f"uvloop is not installed for {python}"
    return choose_contenders(every, missing, wanted, reference="redis", reference_label="redis-server")


def describe(contender: Contender) -> dict[str, str]:
    """What runs: the interpreter (version, build), the parser and the event loop."""
    if contender.key == "redis":
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
        fields = dict(word.split("=", 1) for word in version.split() if "=" in word)
        return {
            "software": f"redis-server {fields.get('v', '?')} (C, {fields.get('malloc', 'libc')})",
            "build": version.strip(),
            "parser": "C (redis)",
            "loop": contender.loop,
        }
    executable = contender.argv[0]
    info = interpreter_info(executable, contender.env)
    has_hiredis = (
        subprocess.run(
            [executable, "-c", "import hiredis"],
            capture_output=True,
            env={**os.environ, **contender.env},
            check=False,
        ).returncode
        == 0
    )
    return {
        "software": f"{info['implementation']} {info['version']}",
        "build": info["build"],
        "parser": "hiredis" if has_hiredis and not contender.pure_parser else "pure Python",
        "loop": contender.loop,
    }


def measure(
    server: ServerProcess,
    load: Load,
    test: str,
    pinning: Pinning,
    mine: Sequence[int],
    requests: int | None = None,
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
    with ServerProcess(
        contender.label,
        contender.command(port),
        port=port,
        cpus=pinning.server_cpus,
        env=contender.env,
        cwd=tempfile.gettempdir(),
    ) as server:
        server.start()
        start = server.memory_kib()["VmRSS"]
        with idle_connections(port, idle, IDLE_REQUEST, lambda got: got.endswith(b"\r\n")):
            held = server.memory_kib()
        return {"rss_start_kib": start, "rss_idle_kib": held["VmRSS"], "peak_idle_kib": held["VmHWM"]}


def summarize(
    contenders: Sequence[Contender],
    loads: Sequence[Load],
    samples: dict[str, dict[str, dict[str, list[Sample]]]],
    memory: dict[str, list[dict[str, int]]],
) -> dict[str, Any]:
    """Medians, ratios to redis-server, and the targets met or missed."""
    per_server: dict[str, Any] = {}
    for c in contenders:
        loads_out: dict[str, Any] = {}
        for load in loads:
            tests_out: dict[str, Any] = {}
            for test in TESTS:
                tests_out[test] = run_figures(samples[c.key][load.key][test], samples["redis"][load.key][test])
            loads_out[load.key] = tests_out
        mem = memory[c.key]
        per_server[c.key] = {
            "loads": loads_out,
            "memory": {
                name: median([m[name] for m in mem]) for name in ("rss_start_kib", "rss_idle_kib", "peak_idle_kib")
            },
        }
    return {"servers": per_server, "targets": check_targets(contenders, loads, per_server)}


def check_targets(
    contenders: Sequence[Contender], loads: Sequence[Load], per_server: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each target of the issue, per evio server (and load and test): the figure, the bound, and whether it is met.

    A check is {"server", "group", "load", "test", "target", "value", "met"}; `group` names the target
    as the report lists it, `value` is the ratio the bound applies to.
    """
    keys = {c.key for c in contenders}
    peers = [peer for peer in ("asyncio", "uvloop") if peer in keys]
    checks: list[dict[str, Any]] = []
    for c in (c for c in contenders if c.targeted):
        for load in loads:
            for test in TESTS:
                figures = per_server[c.key]["loads"][load.key][test]
                if load.pipeline != 1:
                    group = f"{load.label}: requests/s >= {RPS_TARGET}x redis-server"
                    met, value = figures["rps_ratio"] >= RPS_TARGET, figures["rps_ratio"]
                else:
                    cpu = figures["cpu_us_per_request"]
                    group = f"{load.label}: CPU/request <= {CPU_TARGET}x redis-server" + "".join(
                        f", < {peer}'s" for peer in peers
                    )
                    met = figures["cpu_ratio"] <= CPU_TARGET and all(
                        cpu < per_server[peer]["loads"][load.key][test]["cpu_us_per_request"] for peer in peers
                    )
                    value = figures["cpu_ratio"]
                checks.append(
                    {"server": c.key, "group": group, "load": load.key, "test": test, "value": value, "met": met}
                )
        if "asyncio" in keys:
            rss = per_server[c.key]["memory"]["rss_idle_kib"]
            ref = per_server["asyncio"]["memory"]["rss_idle_kib"]
            checks.append(
                {
                    "server": c.key,
                    "group": "RSS with idle connections < asyncio's",
                    "load": None,
                    "test": None,
                    "value": rss / ref,
                    "met": rss < ref,
                }
            )
    return checks


# -- report -----------------------------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def render_markdown(report: dict[str, Any], contenders: Sequence[Contender], loads: Sequence[Load]) -> str:
    """The report as Markdown: setup, targets, one table per load, memory, and what was and was not measured."""
    meta = report["meta"]
    summary = report["summary"]["servers"]
    keys = {c.key for c in contenders}
    met_by = {(t["server"], t["load"], t["test"]): t["met"] for t in report["summary"]["targets"]}
    out = [
        "# Redis benchmark: the evio clone against redis-server, asyncio and uvloop",
        "",
        run_on(meta) + f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}, interleaved "
        "(every test against every server in turn, in a rotated order); "
        "figures are medians over rounds; a ratio is the median over rounds of the server's figure divided by "
        "redis-server's in the same round. "
        f"Pinning: {meta['pinning']}. Load generator: {meta['redis_benchmark']}, on loopback. "
        f"Code measured: commit {meta['revision']}.",
        "",
    ]
    out += [shared_machine(meta, "(see the notes under each table)"), ""]
    if meta["quick"]:
        out += ["**Quick run** (`--quick`): short runs, few rounds; a smoke test, not a result.", ""]
    out += servers_section(report, {c.key: c.label for c in contenders})

    out += ["## Targets", ""]
    rows = []
    for c in contenders:
        if not c.targeted:
            continue
        groups: dict[str, list[dict[str, Any]]] = {}
        for t in report["summary"]["targets"]:
            if t["server"] == c.key:
                groups.setdefault(t["group"], []).append(t)
        for name, checks in groups.items():
            hits = sum(t["met"] for t in checks)
            misses = ", ".join(
                f"{t['test']} {t['value']:.2f}x" if t["test"] else f"{t['value']:.2f}x asyncio's"
                for t in checks
                if not t["met"]
            )
            result = f"{check_mark(hits == len(checks))} {hits} of {len(checks)} met" + (
                f" (missed: {misses})" if misses else ""
            )
            rows.append([c.label, name, result])
    out += [
        markdown_table(["server", "target", "result"], rows),
        "",
        "Ratios are to redis-server's figure; a CPU target can also be missed by not being below asyncio's or "
        "uvloop's, shown in the tables below.",
        "",
    ]

    for load in loads:
        fair = load.pipeline == 1
        if fair:
            out += [
                f"## {load.label}: server CPU per request",
                "",
                "At -P 1 redis-benchmark, on its one CPU, is near its limit (and so are the slower servers), so "
                "requests/s bunch together; server CPU time per request is the fair figure. Cells: CPU µs per request "
                f"(ratio to redis-server; mark: <= {CPU_TARGET}x redis-server and below asyncio and uvloop), "
                "then requests/s.",
                "",
            ]
        else:
            out += [
                f"## {load.label}: requests per second",
                "",
                f"Cells: requests/s (± half the range over rounds), ratio to redis-server; mark: >= {RPS_TARGET}x. "
                "Then server CPU µs per request.",
                "",
            ]
        rows = []
        for c in contenders:
            cells = [c.label]
            for test in TESTS:
                f = summary[c.key]["loads"][load.key][test]
                met = met_by.get((c.key, load.key, test))
                mark = "" if met is None else f" {check_mark(met)}"
                if fair:
                    cells.append(
                        f"{f['cpu_us_per_request']:.2f} µs ({f['cpu_ratio']:.2f}x){mark} · {short_rps(f['rps'])}/s"
                    )
                else:
                    cells.append(
                        f"{short_rps(f['rps'])} ±{f['rps_spread'] * 100:.0f}% ({f['rps_ratio']:.2f}x){mark} · "
                        f"{f['cpu_us_per_request']:.2f} µs"
                    )
            rows.append(cells)
        out += [markdown_table(["server", *TESTS], rows), ""]
        busy = ", ".join(
            f"{c.label} {median([summary[c.key]['loads'][load.key][t]['server_busy'] for t in TESTS]):.0%}"
            for c in contenders
        )
        every = [summary[c.key]["loads"][load.key][t] for c in contenders for t in TESTS]
        others = median([f["others_cpu_share"] for f in every])
        worst = max(f["others_cpu_share"] for f in every)
        steal = median([f["steal_share"] for f in every])
        out += [
            f"Server CPU busy during these runs (median over tests; near 100%: the server was the bottleneck): {busy}. "
            f"Processes outside the benchmark used {others:.0%} of a CPU during the runs (median; {worst:.0%} in the "
            f"worst test's median), the hypervisor took {steal:.0%}.",
            "",
        ]

    idle = report["meta"]["idle_connections"]
    out += [
        f"## Memory: {idle:,} idle connections",
        "",
        f"A fresh server of each kind; {idle:,} connections opened, each sends one PING and gets its PONG, then "
        "all stay open while the server's VmRSS is read. Peak under load is the VmHWM of the servers that ran "
        "the benchmark, read at the end" + (" (mark: below asyncio's)." if "asyncio" in keys else "."),
        "",
    ]
    rows = []
    for c in contenders:
        mem = summary[c.key]["memory"]
        per_conn = (mem["rss_idle_kib"] - mem["rss_start_kib"]) / idle
        mark = ""
        if c.targeted and "asyncio" in keys:
            mark = " " + check_mark(mem["rss_idle_kib"] < summary["asyncio"]["memory"]["rss_idle_kib"])
        rows.append(
            [
                c.label,
                _mib(mem["rss_start_kib"]),
                _mib(mem["rss_idle_kib"]) + mark,
                f"{per_conn:.1f} KiB",
                _mib(report["peak_under_load_kib"][c.key]),
            ]
        )
    out += [
        markdown_table(
            ["server", "RSS at start", f"RSS with {idle:,} connections", "per connection", "peak RSS under load"],
            rows,
            right=(1, 2, 3, 4),
        ),
        "",
        "## What was measured and what was not",
        "",
        *[f"- {line}" for line in NOTES],
        "",
    ]
    return "\n".join(out)


NOTES = (
    "Measured: redis-benchmark's requests/s for PING_INLINE, PING_MBULK, SET and GET (its defaults: a 3-byte "
    "value, one key), at three loads, client and server on one machine over loopback; the server's CPU time "
    "(user + system, from the schedstat run time of its threads in /proc, in ns) over each run, divided by the "
    "requests; resident memory (VmRSS, VmHWM).",
    "Not measured: other commands, large values, many keys, expiry, persistence (AOF off for every server), "
    "latency percentiles, clients on another machine, real network cards, or more than one server core "
    "(every server here runs one event loop on one CPU; redis-server 7 runs its I/O on the main thread too).",
    "One load generator on one CPU. At -P 1 it saturates long before the servers do (see how busy each "
    "server was), so requests/s there measure redis-benchmark; at -P 128 the fastest servers approach its "
    "ceiling too, where the server CPU per request still tells them apart.",
    "Server CPU time leaves out the kernel's network work done in softirqs and kernel threads (charged to no "
    "process); it follows the packets sent and received, which are about the same for every server.",
    "At -c 1000 each client makes only a few dozen requests, so the figure includes accepting and closing "
    "1,000 connections, and redis-benchmark spends much of the run connecting (hence the low busy shares).",
    "The asyncio and uvloop servers run the same protocol object and parser as the evio clone; only the event "
    "loop differs. redis-server is the real one, written in C.",
    "A shared, virtual 2-CPU machine is noisy: figures move by tens of percent from round to round (the ± "
    "column); ratios, measured side by side within a round, move less. Runs during which other people's "
    "processes used more than a set share of a CPU were measured again; the header says how many.",
    "PyPy runs after a warm-up pass (every test once, unmeasured) given to every server alike, so its JIT has "
    "compiled the hot paths. Its memory at start includes the JIT and a large GC nursery, hence its RSS.",
)


def chart(report: dict[str, Any], contenders: Sequence[Contender], loads: Sequence[Load], path: Path) -> bool:
    """The bar chart: -P 128 throughput relative to redis-server, -P 1 CPU per request, and memory."""
    summary = report["summary"]["servers"]
    panels = []
    for load in loads:
        if load.pipeline == 1:
            panels.append(
                Panel(
                    f"{load.label}: server CPU per request (lower is better)",
                    "µs per request",
                    TESTS,
                    {
                        c.label: [summary[c.key]["loads"][load.key][t]["cpu_us_per_request"] for t in TESTS]
                        for c in contenders
                    },
                )
            )
        else:
            panels.append(
                Panel(
                    f"{load.label}: requests/s relative to redis-server (higher is better)",
                    "x redis-server",
                    TESTS,
                    {c.label: [summary[c.key]["loads"][load.key][t]["rps_ratio"] for t in TESTS] for c in contenders},
                    reference=1.0,
                )
            )
    idle = report["meta"]["idle_connections"]
    panels.append(
        Panel(
            "Resident memory, fresh server (lower is better)",
            "MiB",
            ("at start", f"{idle:,} idle connections"),
            {
                c.label: [
                    summary[c.key]["memory"]["rss_start_kib"] / 1024,
                    summary[c.key]["memory"]["rss_idle_kib"] / 1024,
                ]
                for c in contenders
            },
        )
    )
    return bar_chart(
        path,
        panels,
        title="evio Redis clone vs redis-server, asyncio, uvloop (redis-benchmark, loopback)",
        note=chart_note(report["meta"]),
    )


# -- the run ----------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    wanted = args.servers.split(",") if args.servers else None
    contenders, skipped = find_contenders(wanted)
    for key, why in skipped.items():
        log(f"skipping {key}: {why}")
    loads = make_loads(args.requests)
    pinning = plan_pinning(enabled=not args.no_pin)
    raise_fd_limit(max(4096, 2 * max(load.clients for load in loads) + args.idle + 256))
    log(f"pinning: {pinning.describe()}")
    descriptions = {c.key: {**describe(c), "command": c.display()} for c in contenders}
    revision = source_revision(
        REPO, ["src", "examples/redis_server.py", "examples/redisclone", "bench/harness.py", "bench/redis_*.py"]
    )
    log(f"measuring commit {revision}")
    for c in contenders:
        c.description = descriptions[c.key]
        log(f"{c.label}: {c.description['software']}, {c.description['parser']}, {c.description['loop']}")

    samples: dict[str, dict[str, dict[str, list[Sample]]]] = {
        c.key: {load.key: {t: [] for t in TESTS} for load in loads} for c in contenders
    }
    memory: dict[str, list[dict[str, int]]] = {c.key: [] for c in contenders}
    servers: dict[str, ServerProcess] = {}
    peak: dict[str, int] = {}
    try:
        for c in contenders:
            port = free_port()
            servers[c.key] = ServerProcess(
                c.label, c.command(port), port=port, cpus=pinning.server_cpus, env=c.env, cwd=tempfile.gettempdir()
            ).start()
        mine = [server.pid for server in servers.values()]
        # --wait-quiet is also the patience, in all, for waiting for quiet before measuring disturbed runs again.
        disturbed = DisturbedRuns(mine, max_other=args.max_other, retries=args.retries, patience=args.wait_quiet)
        busy_before = disturbed.wait_for_quiet(args.wait_quiet)
        log(f"other processes used {busy_before:.0%} of a CPU before the run")
        log(f"warm-up: every test once against every server ({args.warmup:.0%} of a round's requests)")
        for load in loads:
            for test in TESTS:
                for c in contenders:
                    measure(servers[c.key], load, test, pinning, mine, max(1000, int(load.requests * args.warmup)))
        for r in range(args.rounds):
            order_r = rotated(contenders, r)
            for load in loads:
                for test in TESTS:
                    line = []
                    for c in order_r:
                        s = disturbed.measure(
                            f"{c.key} {test}", functools.partial(measure, servers[c.key], load, test, pinning, mine)
                        )
                        samples[c.key][load.key][test].append(s)
                        line.append(f"{c.key} {short_rps(s.rps)}/s {s.cpu_us_per_request:.2f}µs")
                    log(f"round {r + 1}/{args.rounds} {load.label} {test}: " + ", ".join(line))
            for c in order_r:
                memory[c.key].append(measure_idle_memory(c, pinning, args.idle))
            log(
                f"round {r + 1}/{args.rounds} memory: "
                + ", ".join(f"{key} {_mib(m[-1]['rss_idle_kib'])}" for key, m in memory.items())
            )
        for c in contenders:
            peak[c.key] = servers[c.key].memory_kib()["VmHWM"]
    finally:
        for server in servers.values():
            server.stop()

    report: dict[str, Any] = {
        "meta": {
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
            "others_before": busy_before,
            "max_other": args.max_other,
            "retries": args.retries,
            "runs_measured_again": disturbed.retried,
            "runs_still_disturbed": disturbed.still_disturbed(
                s for per_load in samples.values() for t in per_load.values() for runs in t.values() for s in runs
            ),
            "loads": [
                {
                    "key": load.key,
                    "label": load.label,
                    "clients": load.clients,
                    "pipeline": load.pipeline,
                    "requests_per_test": load.requests,
                }
                for load in loads
            ],
            "tests": list(TESTS),
            "command": " ".join(["python", "bench/redis_bench.py", *sys.argv[1:]]),
        },
        "servers": {c.key: {"label": c.label, **c.description} for c in contenders},
        "skipped": skipped,
        "summary": summarize(contenders, loads, samples, memory),
        "peak_under_load_kib": peak,
        "samples": {
            key: {lk: {t: [s.as_json() for s in runs] for t, runs in tests.items()} for lk, tests in per_load.items()}
            for key, per_load in samples.items()
        },
        "memory_samples": memory,
    }
    out = Path(args.out)
    write_json(out / "redis.json", report)
    (out / "redis.md").write_text(render_markdown(report, contenders, loads))
    drawn = chart(report, contenders, loads, out / "redis.png")
    log(f"wrote {out / 'redis.json'}, {out / 'redis.md'}" + (f", {out / 'redis.png'}" if drawn else ""))
    print((out / "redis.md").read_text())
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="measured rounds (default 5; 1 with --quick)")
    parser.add_argument(
        "--requests",
        type=int,
        help="requests per test at -P 1; -P 128 runs "
        f"{PIPELINED_FACTOR} times as many (default 20000; 10000 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test of under 2 minutes; writes to a temporary directory"
    )
    parser.add_argument(
        "--servers",
        help="comma-separated servers from redis,evio,evio-pypy,evio-stdlib,evio-pure,asyncio,uvloop "
        "(default: all that are available but evio-pure)",
    )
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
        args.requests = 10_000 if args.quick else 20_000
    quick_defaults(args, REPO)
    if args.rounds < 1 or args.requests < 1000 or args.idle < 1:
        parser.error("--rounds must be >= 1, --requests >= 1000, --idle >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
