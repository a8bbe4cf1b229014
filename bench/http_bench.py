"""The HTTP benchmark: wrk against nginx, the evio example on CPython and PyPy, and uvicorn.

    python bench/http_bench.py [--rounds N] [--duration S] [--quick] [--servers a,b] [--out DIR]

Every server runs on loopback, pinned to one CPU, with wrk (one thread, 100 connections) pinned to
the other. `/plaintext` is measured without pipelining and 16 requests deep (a wrk Lua script).
Each round runs every load against every server in turn, in a rotated order (`rounds.py`), so drift on a shared
machine hits all alike; the report gives medians over rounds and ratios to the nginx measured in
the same round. Server CPU time comes from /proc around each wrk run. A 1 GiB file is then
downloaded with curl from nginx and from the evio example: MB/s and server CPU seconds.
The example runs on CPython, on PyPy, and with evio compiled by mypyc where `make compiled`
has built `.venv-compiled`. Results go to http.json, and from it http.md and http.png
(`report.py`), in --out (docs/bench by default).
"""

from __future__ import annotations

import argparse
import datetime
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
    interpreter_info,
    log,
    machine_info,
    measure_run,
    median,
    plan_pinning,
    quick_defaults,
    raise_fd_limit,
    run_benchmark,
    run_client,
    source_revision,
    write_json,
)
from rounds import Case, Disturbance, run_rounds, samples_json, summarize

REPO = Path(__file__).resolve().parent.parent
CONNECTIONS = 100
PIPELINE_DEPTH = 16
BIG_FILE = 1 << 30

COMPILED_MODULES = ("evio.loop", "minihttp.parser")  # compiled in a mypyc build: extension modules

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
    files: bool = False  # serves the large file
    default: bool = True
    variant: str = "source"  # how the code it runs was built: "source", "compiled (mypyc)" or "C"
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


def find_contenders(
    wanted: Sequence[str] | None, compiled_python: Path = COMPILED_PYTHON
) -> tuple[list[Contender], dict[str, str]]:
    """The servers to measure, and why any of the others is left out.

    `compiled_python` is the interpreter of the compiled build (`make compiled`): evio and the
    example's HTTP package compiled with mypyc and installed there. It runs the example with -I, so
    that the script's folder (examples/, with the source of `minihttp`) is not put on the path and the
    compiled `minihttp` is the one imported, as the Redis benchmark runs its clone.
    """
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
            variant="C",
        ),
        Contender("evio", "evio (CPython)", [python, *evio], "evio epoll", "minihttp", files=True),
        Contender(
            "evio-compiled",
            "evio, CPython, compiled (mypyc)",
            [str(compiled_python), "-I", *evio],
            "evio epoll",
            "minihttp",
            files=True,
            variant="compiled (mypyc)",
        ),
        Contender(
            "evio-pypy",
            "evio (PyPy)",
            [pypy or "pypy3", *evio],
            "evio epoll",
            "minihttp",
            env={"PYTHONPATH": str(REPO / "src")},
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
    problem = compiled_build_problem(str(compiled_python), COMPILED_MODULES, REPO)
    if problem:
        missing["evio-compiled"] = problem
    for module in ("uvicorn", "httptools", "uvloop"):
        if importlib.util.find_spec(module) is None:
            missing["uvicorn"] = f"{module} is not installed for {python} (pip install -e '.[bench]')"
    return choose_contenders(every, missing, wanted, reference="nginx", reference_label="nginx")


def describe(contender: Contender) -> dict[str, str]:
    """What runs: the software and its build, how the code was built, the parser and the event loop."""
    if contender.key == "nginx":
        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=True).stderr.strip()
        return {
            "software": version.split(": ")[-1],
            "build": version,
            "variant": contender.variant,
            "parser": contender.parser,
            "loop": "epoll",
        }
    info = interpreter_info(contender.argv[0], contender.env)
    software = f"{info['implementation']} {info['version']}"
    if contender.key == "uvicorn":
        probe = (
            "import uvicorn, httptools, uvloop; print(uvicorn.__version__, httptools.__version__, uvloop.__version__)"
        )
        versions = subprocess.run([contender.argv[0], "-c", probe], capture_output=True, text=True, check=True)
        uv, ht, ul = versions.stdout.split()
        software += f", uvicorn {uv}, httptools {ht}, uvloop {ul}"
    return {
        "software": software,
        "build": info["build"],
        "variant": contender.variant,
        "parser": contender.parser,
        "loop": contender.loop,
    }


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

    @classmethod
    def own_figures(cls, runs: Sequence[Sample], ref: Sequence[Sample]) -> dict[str, Any]:
        return {"errors": sum(s.errors for s in runs if isinstance(s, WrkSample))}


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
    contenders, skipped = find_contenders(wanted, Path(args.compiled))
    for key, why in skipped.items():
        log(f"skipping {key}: {why}")
    pinning = plan_pinning(enabled=not args.no_pin)
    raise_fd_limit(4096)
    log(f"pinning: {pinning.describe()}")
    revision = source_revision(
        REPO, ["src", "examples/http_server.py", "examples/minihttp", "bench/harness.py", "bench/http_*.py"]
    )
    for c in contenders:
        c.description = {**describe(c), "command": c.display()}
        log(f"{c.label}: {c.description['software']}, {c.description['variant']}")

    workdir = make_workdir()
    lua = workdir / "pipeline.lua"
    lua.write_text(PIPELINE_LUA)
    by_key = {load.key: load for load in LOADS}
    downloads: dict[str, list[Download]] = {c.key: [] for c in contenders if c.files}
    servers: dict[str, ServerProcess] = {}
    try:
        for c in contenders:
            port = free_port()
            servers[c.key] = ServerProcess(
                c.label, c.command(port, workdir), port=port, cpus=pinning.server_cpus, env=c.env, cwd=str(workdir)
            ).start()
        mine = [server.pid for server in servers.values()]
        rounds = run_rounds(
            contenders,
            [Case((load.key,), load.label) for load in LOADS],
            lambda c, case: measure(servers[c.key], by_key[case.key[0]], pinning, args.duration, lua, mine),
            rounds=args.rounds,
            mine=mine,
            disturbance=Disturbance.from_args(args),
            warm=lambda c, case: measure(servers[c.key], by_key[case.key[0]], pinning, args.warmup, lua, mine),
        )
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

    per_server: dict[str, dict[str, Any]] = {
        key: {"loads": figures} for key, figures in summarize(rounds.samples, lambda case: "nginx").items()
    }
    for key, got in downloads.items():
        per_server[key]["large_file"] = {
            "mb_per_s": median([d.mb_per_s for d in got]),
            "cpu_seconds": median([d.cpu_seconds for d in got]),
            "mb_per_s_ratio": median([d.mb_per_s / r.mb_per_s for d, r in zip(got, downloads["nginx"])]),
        }
    result: dict[str, Any] = {
        "meta": {
            "benchmark": "http",
            "date": datetime.date.today().isoformat(),
            "machine": machine_info(),
            "pinning": pinning.describe(),
            "revision": revision,
            "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" Copyright")[0],
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "downloads": args.downloads,
            "quick": args.quick,
            "connections": CONNECTIONS,
            "pipeline_depth": PIPELINE_DEPTH,
            **rounds.meta(),
            "loads": [{"key": load.key, "label": load.label, "pipeline": load.pipeline} for load in LOADS],
            "command": " ".join(["python", "bench/http_bench.py", *sys.argv[1:]]),
        },
        "servers": {c.key: {"label": c.label, **c.description} for c in contenders},
        "skipped": skipped,
        "summary": {"servers": per_server},
        "samples": samples_json(rounds.samples),
        "downloads": {k: [vars(d) for d in runs] for k, runs in downloads.items()},
    }
    out = Path(args.out)
    write_json(out / "http.json", result)
    written = report.render(out / "http.json")
    log("wrote " + ", ".join(str(p) for p in [out / "http.json", *written]))
    print(written[0].read_text())
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
        help="comma-separated servers from nginx,evio,evio-compiled,evio-pypy,evio-stdlib,uvicorn "
        "(default: all that are available but evio-stdlib)",
    )
    parser.add_argument(
        "--compiled",
        metavar="PYTHON",
        default=str(COMPILED_PYTHON),
        help="the interpreter of the compiled build (default .venv-compiled/bin/python, which `make compiled` builds)",
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
