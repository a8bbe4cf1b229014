"""The HTTP benchmark: wrk against nginx, the evio example on CPython and PyPy, and uvicorn.

    python bench/http_bench.py [--rounds N] [--duration S] [--quick] [--servers a,b] [--out DIR]

Every server runs on loopback, pinned to one CPU, with wrk (one thread, 100 connections) pinned to
the other. `/plaintext` is measured without pipelining and 16 requests deep (a wrk Lua script).
Each round runs every load against every server in turn, in a rotated order, so drift on a shared
machine hits all alike; the report gives medians over rounds and ratios to the nginx measured in
the same round. Server CPU time comes from /proc around each wrk run. A 1 GiB file is then
downloaded with curl from nginx and from the evio example: MB/s and server CPU seconds.
Results go to http.json, http.md and http.png in --out (docs/bench by default).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
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
    run_client,
    run_figures,
    run_on,
    servers_section,
    shared_machine,
    short_rps,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
CONNECTIONS = 100
PIPELINE_DEPTH = 16
BIG_FILE = 1 << 30

# The targets the issue sets, checked in every report.
RPS_TARGET = 1.0  # evio's requests/s as a multiple of nginx's (both loads): at least this
CPU_TARGET = 1.15  # evio's CPU per request without pipelining as a multiple of nginx's: at most this
UVICORN_TARGET = 4.0  # evio's requests/s without pipelining as a multiple of uvicorn's: at least this

PIPELINE_LUA = f"""-- {PIPELINE_DEPTH} requests per write; wrk counts each response.
init = function(args)
  local r = {{}}
  for i = 1, {PIPELINE_DEPTH} do r[i] = wrk.format(nil, wrk.path) end
  req = table.concat(r)
end
request = function() return req end
"""

NGINX_CONF = """# One process serving, as the evio example does: no master, one worker.
master_process off;
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  types {{ application/octet-stream bin; }}
  server {{
    listen {host}:{{port}};
    root {dir}/root;
    location = /plaintext {{ default_type text/plain; return 200 "Hello, World!"; }}
    location = /json {{ default_type application/json; return 200 '{{"message":"Hello, World!"}}'; }}
  }}
}}
"""


@dataclass(frozen=True)
class Load:
    """One wrk configuration."""

    key: str
    label: str
    pipeline: int


LOADS = (Load("plain", "no pipelining", 1), Load("pipe16", f"{PIPELINE_DEPTH}-deep pipelining", PIPELINE_DEPTH))


@dataclass
class Contender:
    """A server under test: how to start it on a port, and what it is."""

    key: str
    label: str
    argv: list[str]  # "{port}" stands for the port, "{conf}" for nginx's configuration file
    loop: str
    parser: str
    env: dict[str, str] = field(default_factory=dict)
    targeted: bool = False
    files: bool = False  # serves the large file
    default: bool = True
    description: dict[str, str] = field(default_factory=dict)

    def command(self, port: int, workdir: Path) -> list[str]:
        if self.key == "nginx":
            conf = workdir / f"nginx-{port}.conf"
            conf.write_text(NGINX_CONF.format(dir=workdir, host=LOOPBACK).replace("{port}", str(port)))
            return [w.replace("{conf}", str(conf)).replace("{dir}", str(workdir)) for w in self.argv]
        return [w.replace("{port}", str(port)).replace("{dir}", str(workdir)) for w in self.argv]

    def display(self) -> str:
        """The command as a person would type it in the repository's root."""
        placeholders = (("{conf}", "{dir}/nginx.conf"), ("{port}", "PORT"), ("{dir}", "DIR"))
        return display_command(self.argv, self.env, REPO, placeholders)


def find_contenders(wanted: Sequence[str] | None) -> tuple[list[Contender], dict[str, str]]:
    """The servers to measure, and why any of the others is left out."""
    python = sys.executable
    pypy = shutil.which("pypy3")
    example = str(REPO / "examples" / "http_server.py")
    evio = [example, "--port", "{port}", "--root", "{dir}/root"]
    every = [
        Contender(
            "nginx",
            "nginx (1 worker)",
            ["nginx", "-p", "{dir}", "-e", "{dir}/error.log", "-c", "{conf}"],
            loop="epoll",
            parser="C (nginx)",
            files=True,
        ),
        Contender(
            "evio", "evio (CPython)", [python, *evio], "evio epoll", "minihttp", targeted=True, files=True
        ),
        Contender(
            "evio-pypy",
            "evio (PyPy)",
            [pypy or "pypy3", *evio],
            "evio epoll",
            "minihttp",
            env={"PYTHONPATH": str(REPO / "src")},
            targeted=True,
            files=True,
        ),
        Contender("evio-stdlib", "evio --stdlib (CPython)", [python, *evio, "--stdlib"], "evio selectors", "minihttp",
                  default=False),
        Contender(
            "uvicorn",
            "uvicorn (CPython)",
            [
                python, "-m", "uvicorn", "--app-dir", str(REPO / "bench"), "uvicorn_app:app", "--host", LOOPBACK,
                "--port", "{port}", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--lifespan", "off",
            ],
            "uvloop",
            "httptools",
        ),
    ]  # fmt: skip
    missing: dict[str, str] = {}
    if shutil.which("nginx") is None:
        missing["nginx"] = "nginx is not installed (Debian: nginx-light)"
    if pypy is None:
        missing["evio-pypy"] = "pypy3 is not installed"
    for module in ("uvicorn", "httptools", "uvloop"):
        if importlib.util.find_spec(module) is None:
            missing["uvicorn"] = f"{module} is not installed for {python} (pip install -e '.[bench]')"
    return choose_contenders(every, missing, wanted, reference="nginx", reference_label="nginx")


def describe(contender: Contender) -> dict[str, str]:
    """What runs: the software and its build, the parser and the event loop."""
    if contender.key == "nginx":
        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=True).stderr.strip()
        return {"software": version.split(": ")[-1], "build": version, "parser": contender.parser, "loop": "epoll"}
    info = interpreter_info(contender.argv[0], contender.env)
    software = f"{info['implementation']} {info['version']}"
    if contender.key == "uvicorn":
        probe = (
            "import uvicorn, httptools, uvloop; print(uvicorn.__version__, httptools.__version__, uvloop.__version__)"
        )
        versions = subprocess.run([contender.argv[0], "-c", probe], capture_output=True, text=True, check=True)
        uv, ht, ul = versions.stdout.split()
        software += f", uvicorn {uv}, httptools {ht}, uvloop {ul}"
    return {"software": software, "build": info["build"], "parser": contender.parser, "loop": contender.loop}


_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(text: str) -> tuple[int, float, int]:
    """Requests, seconds and errors (socket errors and non-2xx responses) from wrk's report."""
    m = _WRK_REQUESTS.search(text)
    if m is None:
        raise BenchError(f"no 'N requests in T' line in wrk's output:\n{text[-1000:]}")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    errors = sum(int(n) for n in _WRK_ERRORS.findall(text)[0]) if _WRK_ERRORS.search(text) else 0
    non_2xx = _WRK_NON_2XX.search(text)
    return int(m.group(1)), float(m.group(2)) * unit, errors + (int(non_2xx.group(1)) if non_2xx else 0)


@dataclass
class WrkSample(Sample):
    """One wrk run against one server."""

    errors: int = 0  # socket errors and responses other than 2xx or 3xx


def measure(
    server: ServerProcess, load: Load, pinning: Pinning, duration: float, lua: Path, mine: Sequence[int]
) -> WrkSample:
    """One wrk run of `load` against `server`, reading the server's CPU time before and after.

    `mine` are the benchmark's other processes (the idle servers): their CPU time is not a disturbance.
    """
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s"]
    if load.pipeline > 1:
        argv += ["-s", str(lua)]
    argv.append(f"http://{LOOPBACK}:{server.port}/plaintext")
    measured = measure_run(server, argv, pinning, mine, timeout=duration + 60)
    requests, seconds, errors = parse_wrk(measured.client.stdout)
    if not requests:
        raise BenchError(f"wrk completed no request against {server.name}:\n{measured.client.stdout[-1000:]}")
    return WrkSample(
        requests / seconds,
        measured.server_cpu_seconds,
        requests,
        seconds,
        others_seconds=measured.others_seconds,
        steal_seconds=measured.steal_seconds,
        errors=errors,
    )


@dataclass
class Download:
    """One download of the large file."""

    mb_per_s: float
    cpu_seconds: float
    seconds: float


def download(server: ServerProcess, pinning: Pinning) -> Download:
    """Fetch the large file with curl into /dev/null; BenchError unless every byte arrived."""
    server.check_alive()
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    argv.append(f"http://{LOOPBACK}:{server.port}/big.bin")
    before = server.cpu_seconds()
    run = run_client(argv, cpus=pinning.client_cpus, timeout=600)
    cpu = server.cpu_seconds() - before
    code, size, seconds = run.stdout.split()
    if code != "200" or int(size) != BIG_FILE:
        raise BenchError(f"{server.name}: the large file came back as {code} with {size} of {BIG_FILE} bytes")
    return Download(BIG_FILE / float(seconds) / 1e6, cpu, float(seconds))


def summarize(
    contenders: Sequence[Contender],
    samples: dict[str, dict[str, list[WrkSample]]],
    downloads: dict[str, list[Download]],
) -> dict[str, Any]:
    """Medians, ratios to nginx (paired by round), and the targets met or missed."""
    per_server: dict[str, Any] = {}
    for c in contenders:
        loads: dict[str, Any] = {}
        for load in LOADS:
            runs = samples[c.key][load.key]
            loads[load.key] = run_figures(runs, samples["nginx"][load.key], errors=sum(s.errors for s in runs))
        out: dict[str, Any] = {"loads": loads}
        if downloads.get(c.key):
            got = downloads[c.key]
            out["large_file"] = {
                "mb_per_s": median([d.mb_per_s for d in got]),
                "cpu_seconds": median([d.cpu_seconds for d in got]),
                "mb_per_s_ratio": median([d.mb_per_s / r.mb_per_s for d, r in zip(got, downloads["nginx"])]),
            }
        per_server[c.key] = out
    return {"servers": per_server, "targets": check_targets(contenders, samples, per_server)}


def check_targets(
    contenders: Sequence[Contender], samples: dict[str, dict[str, list[WrkSample]]], per_server: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each target of the issue, per evio server: {"server", "target", "value", "met"}."""
    checks: list[dict[str, Any]] = []
    for c in (c for c in contenders if c.targeted):
        plain, piped = per_server[c.key]["loads"]["plain"], per_server[c.key]["loads"]["pipe16"]
        checks += [
            {
                "server": c.key,
                "target": f"no pipelining: requests/s >= {RPS_TARGET}x nginx",
                "value": plain["rps_ratio"],
                "met": plain["rps_ratio"] >= RPS_TARGET,
            },
            {
                "server": c.key,
                "target": f"no pipelining: CPU/request <= {CPU_TARGET}x nginx",
                "value": plain["cpu_ratio"],
                "met": plain["cpu_ratio"] <= CPU_TARGET,
            },
            {
                "server": c.key,
                "target": f"{PIPELINE_DEPTH}-deep pipelining: requests/s >= {RPS_TARGET}x nginx",
                "value": piped["rps_ratio"],
                "met": piped["rps_ratio"] >= RPS_TARGET,
            },
        ]
        if "uvicorn" in per_server:
            ratio = median([s.rps / u.rps for s, u in zip(samples[c.key]["plain"], samples["uvicorn"]["plain"])])
            checks.append(
                {
                    "server": c.key,
                    "target": f"no pipelining: requests/s >= {UVICORN_TARGET:g}x uvicorn",
                    "value": ratio,
                    "met": ratio >= UVICORN_TARGET,
                }
            )
    return checks


# -- report -----------------------------------------------------------------------------------------------------


NOTES = (
    "Measured: wrk's requests/s for GET /plaintext (13-byte body) with one wrk thread and 100 connections, "
    f"without pipelining and {PIPELINE_DEPTH} requests deep; the server's user+system CPU time over each run "
    "(from /proc: the schedstat run time of its threads, in ns), divided by the requests; the time curl took "
    "to download a 1 GiB file (sparse, so read from the page cache) into /dev/null, and the server's CPU time "
    "meanwhile.",
    "Not measured: /json, other paths or methods, TLS, latency percentiles, more than one server core, clients "
    "on another machine, real network cards, or files not already in the page cache.",
    "nginx runs one process (master_process off, so its CPU time is the one process's) with access logs off, "
    "keepalive_requests raised so that it never closes wrk's connections, and sendfile on, as it is usually "
    "run: its large-file figure is the kernel copying pages to the socket, while the evio example reads each "
    "piece into Python and sends it (evio has no sendfile).",
    "One load generator on one CPU: without pipelining it saturates before the faster servers do (see "
    "'server busy'), so requests/s there say as much about wrk as about the server; CPU per request is the "
    "fairer figure.",
    "uvicorn serves a bare ASGI app (bench/uvicorn_app.py) with httptools and uvloop, one process, access "
    "log off; it does not serve the large file.",
    "PyPy runs after a warm-up (every load once, unmeasured, given to every server alike), so its JIT has "
    "compiled the hot paths.",
    "A shared, virtual 2-CPU machine is noisy: look at the ± spread and at ratios (measured side by side) "
    "rather than at absolute figures.",
)


def render_markdown(report: dict[str, Any], contenders: Sequence[Contender]) -> str:
    """The report as Markdown: setup, targets, one table per load, the large file, and what was not measured."""
    meta = report["meta"]
    summary = report["summary"]["servers"]
    out = [
        "# HTTP benchmark: the evio example against nginx and uvicorn",
        "",
        run_on(meta)
        + f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''} of {meta['duration']:g} s per load and server, "
        "interleaved (every load against every server in turn, in a rotated order); figures are medians over "
        "rounds; a ratio is the median over rounds of the server's figure divided by nginx's in the same round. "
        f"Pinning: {meta['pinning']}. Load generator: {meta['wrk']}, 1 thread, {CONNECTIONS} connections, "
        "on loopback.",
        "",
        shared_machine(meta),
        "",
    ]
    if meta["quick"]:
        out += ["**Quick run** (`--quick`): short runs, one round; a smoke test, not a result.", ""]
    out += servers_section(report, {c.key: c.label for c in contenders})

    labels = {c.key: c.label for c in contenders}
    rows = [
        [labels[t["server"]], t["target"], f"{check_mark(t['met'])} {t['value']:.2f}x"]
        for t in report["summary"]["targets"]
    ]
    out += ["## Targets", "", markdown_table(["server", "target", "result"], rows), ""]

    for load in LOADS:
        out += [
            f"## /plaintext, {load.label}",
            "",
            "Cells: requests/s (± half the range over rounds) and its ratio to nginx; server CPU µs per request "
            "and its ratio to nginx; the share of the run the server spent on its CPU (near 100%: the server "
            "was the bottleneck).",
            "",
        ]
        rows = []
        for c in contenders:
            f = summary[c.key]["loads"][load.key]
            rows.append(
                [
                    c.label,
                    f"{short_rps(f['rps'])} ±{f['rps_spread'] * 100:.0f}%",
                    f"{f['rps_ratio']:.2f}x",
                    f"{f['cpu_us_per_request']:.2f} µs",
                    f"{f['cpu_ratio']:.2f}x",
                    f"{f['server_busy']:.0%}",
                ]
                + ([f"{f['errors']} errors"] if f["errors"] else [])
            )
        headers = ["server", "requests/s", "vs nginx", "CPU/request", "vs nginx", "server busy"]
        if any(len(r) > len(headers) for r in rows):
            headers.append("wrk errors")
            rows = [r + [""] * (len(headers) - len(r)) for r in rows]
        out += [markdown_table(headers, rows, right=(1, 2, 3, 4, 5)), ""]
        every = [summary[c.key]["loads"][load.key] for c in contenders]
        out += [
            f"Processes outside the benchmark used {median([f['others_cpu_share'] for f in every]):.0%} of a CPU "
            f"during these runs (median), the hypervisor took {median([f['steal_share'] for f in every]):.0%}.",
            "",
        ]

    rows = []
    for c in contenders:
        f = summary[c.key].get("large_file")
        if f is not None:
            rows.append(
                [c.label, f"{f['mb_per_s']:,.0f} MB/s", f"{f['mb_per_s_ratio']:.2f}x", f"{f['cpu_seconds']:.2f} s"]
            )
    out += [
        "## A 1 GiB file",
        "",
        f"curl downloads a 1 GiB file into /dev/null, {meta['downloads']} times per server, interleaved, after "
        "one unmeasured download each (the first fills the page cache); medians.",
        "",
        markdown_table(["server", "throughput", "vs nginx", "server CPU"], rows, right=(1, 2, 3)),
        "",
        "## What was measured and what was not",
        "",
        *[f"- {line}" for line in NOTES],
        "",
    ]
    return "\n".join(out)


def chart(report: dict[str, Any], contenders: Sequence[Contender], path: Path) -> bool:
    """Requests/s and CPU per request for both loads, and the large file's throughput."""
    summary = report["summary"]["servers"]
    cats = [load.label for load in LOADS]
    panels = [
        Panel(
            "/plaintext: requests/s (higher is better)",
            "requests/s",
            cats,
            {c.label: [summary[c.key]["loads"][load.key]["rps"] for load in LOADS] for c in contenders},
        ),
        Panel(
            "/plaintext: server CPU per request (lower is better)",
            "µs per request",
            cats,
            {c.label: [summary[c.key]["loads"][load.key]["cpu_us_per_request"] for load in LOADS] for c in contenders},
        ),
        Panel(
            "/plaintext: requests/s relative to nginx (higher is better)",
            "x nginx",
            cats,
            {c.label: [summary[c.key]["loads"][load.key]["rps_ratio"] for load in LOADS] for c in contenders},
            reference=1.0,
        ),
        Panel(
            "1 GiB file download (higher is better)",
            "MB/s",
            ["throughput"],
            {c.label: [summary[c.key]["large_file"]["mb_per_s"]] for c in contenders if "large_file" in summary[c.key]},
        ),
    ]
    return bar_chart(
        path,
        panels,
        title="evio HTTP example vs nginx and uvicorn (wrk -t1 -c100, loopback)",
        note=chart_note(report["meta"]),
    )


# -- the run ----------------------------------------------------------------------------------------------------


def make_workdir() -> Path:
    """A folder with the large (sparse) file under root/, for nginx's files and the servers' roots."""
    workdir = Path(tempfile.mkdtemp(prefix="evio-http-bench-"))
    root = workdir / "root"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:
        f.truncate(BIG_FILE)
    return workdir


def run(args: argparse.Namespace) -> int:
    wanted = args.servers.split(",") if args.servers else None
    contenders, skipped = find_contenders(wanted)
    for key, why in skipped.items():
        log(f"skipping {key}: {why}")
    pinning = plan_pinning(enabled=not args.no_pin)
    raise_fd_limit(4096)
    log(f"pinning: {pinning.describe()}")
    for c in contenders:
        c.description = {**describe(c), "command": c.display()}
        log(f"{c.label}: {c.description['software']}")

    workdir = make_workdir()
    lua = workdir / "pipeline.lua"
    lua.write_text(PIPELINE_LUA)
    samples: dict[str, dict[str, list[WrkSample]]] = {c.key: {load.key: [] for load in LOADS} for c in contenders}
    downloads: dict[str, list[Download]] = {c.key: [] for c in contenders if c.files}
    servers: dict[str, ServerProcess] = {}
    try:
        for c in contenders:
            port = free_port()
            servers[c.key] = ServerProcess(
                c.label, c.command(port, workdir), port=port, cpus=pinning.server_cpus, env=c.env, cwd=str(workdir)
            ).start()
        mine = [server.pid for server in servers.values()]
        # --wait-quiet is also the patience, in all, for waiting for quiet before measuring disturbed runs again.
        disturbed = DisturbedRuns(mine, max_other=args.max_other, retries=args.retries, patience=args.wait_quiet)
        busy_before = disturbed.wait_for_quiet(args.wait_quiet)
        log(f"other processes used {busy_before:.0%} of a CPU; warm-up: every load once against every server")
        for load in LOADS:
            for c in contenders:
                measure(servers[c.key], load, pinning, args.warmup, lua, mine)
        for r in range(args.rounds):
            for load in LOADS:
                line = []
                for c in rotated(contenders, r):
                    s = disturbed.measure(
                        c.key, functools.partial(measure, servers[c.key], load, pinning, args.duration, lua, mine)
                    )
                    samples[c.key][load.key].append(s)
                    line.append(f"{c.key} {short_rps(s.rps)}/s {s.cpu_us_per_request:.2f}µs")
                log(f"round {r + 1}/{args.rounds} {load.label}: " + ", ".join(line))
        # The first read of the file fills the page cache: a warm-up download per server, unmeasured.
        for n in range(-1, args.downloads):
            for c in contenders:
                if c.files:
                    d = download(servers[c.key], pinning)
                    if n >= 0:
                        downloads[c.key].append(d)
                    which = f"{n + 1}/{args.downloads}" if n >= 0 else "warm-up"
                    log(f"large file {which} {c.key}: {d.mb_per_s:,.0f} MB/s, {d.cpu_seconds:.2f} s CPU")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report: dict[str, Any] = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "machine": machine_info(),
            "pinning": pinning.describe(),
            "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" Copyright")[0],
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "downloads": args.downloads,
            "quick": args.quick,
            "connections": CONNECTIONS,
            "pipeline_depth": PIPELINE_DEPTH,
            "others_before": busy_before,
            "max_other": args.max_other,
            "runs_measured_again": disturbed.retried,
            "runs_still_disturbed": disturbed.still_disturbed(
                s for per in samples.values() for runs in per.values() for s in runs
            ),
            "command": " ".join(["python", "bench/http_bench.py", *sys.argv[1:]]),
        },
        "servers": {c.key: {"label": c.label, **c.description} for c in contenders},
        "skipped": skipped,
        "summary": summarize(contenders, samples, downloads),
        "samples": {k: {lk: [s.as_json() for s in runs] for lk, runs in per.items()} for k, per in samples.items()},
        "downloads": {k: [vars(d) for d in runs] for k, runs in downloads.items()},
    }
    out = Path(args.out)
    write_json(out / "http.json", report)
    (out / "http.md").write_text(render_markdown(report, contenders))
    drawn = chart(report, contenders, out / "http.png")
    log(f"wrote {out / 'http.json'}, {out / 'http.md'}" + (f", {out / 'http.png'}" if drawn else ""))
    print((out / "http.md").read_text())
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="measured rounds (default 5; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5; 2 with --quick)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of the unmeasured warm-up run (default 3)")
    parser.add_argument("--downloads", type=int, help="large-file downloads per server (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke test; writes to a temporary directory")
    parser.add_argument(
        "--servers",
        help="comma-separated servers from nginx,evio,evio-pypy,evio-stdlib,uvicorn "
        "(default: all that are available but evio-stdlib)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk to CPUs")
    add_disturbance_arguments(parser)
    parser.add_argument("--out", help="directory for http.json, http.md, http.png (default docs/bench)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.downloads is None:
        args.downloads = 1 if args.quick else 3
    quick_defaults(args, REPO)
    if args.rounds < 1 or args.duration <= 0 or args.downloads < 1:
        parser.error("--rounds and --downloads must be >= 1, --duration > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
