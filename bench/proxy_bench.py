"""The TCP load-balancer benchmark: the evio proxy (CPython and PyPy) against HAProxy, and no proxy at all.

    python bench/proxy_bench.py [--rounds N] [--requests N] [--quick] [--servers a,b] [--checks] [--out DIR]

Each proxy runs alone on one CPU; the backends (one redis-server, and a small "bulk peer" that sinks or
sources bytes) and the load generators share the other. Each round runs every test through every proxy
back to back (in a rotated order), so drift on a shared machine hits all alike; the report gives medians
over rounds and ratios to the HAProxy measured in the same round. The tests: redis-benchmark SET and GET
at -P 1 and -P 128 with 50 clients (requests/s, and the proxy's CPU time per request from /proc); short
connections (-k 0: a connection per request); 1 GiB pushed through to the backend and 1 GiB pulled back
(MB/s, and the proxy's peak RSS); and the RSS of a fresh proxy holding 1,000 idle client connections.
"direct" is redis-benchmark (or the bulk client) talking to the backend itself: its CPU figure is then the
backend's. Results go to proxy.json, proxy.md and proxy.png in --out (docs/bench by default).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
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
    disturbance_figures,
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
    spread,
    this_interpreter,
    write_json,
)
from redis_bench import Load
from redis_bench import measure as measure_requests
from rounds import Case, Disturbance, run_rounds, samples_json, summarize

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
REFERENCE = "haproxy"  # every ratio is to HAProxy's figure in the same round
TESTS = ("SET", "GET")
CONNECT_TEST = "GET"  # the command each short connection sends
CLIENTS = 50
PIPELINED_FACTOR = 30  # -P 128 runs this many times the requests of -P 1, to last about as long
IDLE_REQUEST = b"*1\r\n$4\r\nPING\r\n"
IDLE_REPLY = b"+PONG\r\n"
DIRECTIONS = ("push", "pull")  # client to backend, backend to client
DIRECTION_LABELS = {"push": "client → backend", "pull": "backend → client"}
HEALTH_INTERVAL = 2  # seconds between health checks, with --checks (the evio proxy's default)
MAXCONN = 4096  # HAProxy's maxconn: far above the idle connections and clients of any test
SOURCE_SIZE = 64 << 20  # the file both bulk ends send from, over and over
HEADER = 32  # the bulk protocol's request: b"PUSH n" or b"PULL n", space-padded to this length, newline-ended


@dataclass(frozen=True)
class ShortLoad(Load):
    """redis-benchmark with `-k 0`: every request on a new connection, so requests/s are connections/s."""

    @property
    def label(self) -> str:
        return f"-k 0 (a connection per request), {self.clients:,} clients"

    def argv(self, port: int, test: str, requests: int | None = None) -> list[str]:
        return [*super().argv(port, test, requests), "-k", "0"]


def make_loads(requests: int, connections: int) -> tuple[Load, ...]:
    """-P 1 and -P 128 with 50 clients (`requests` per test at -P 1), then short connections."""
    return (
        Load("P1", clients=CLIENTS, pipeline=1, requests=requests),
        Load("P128", clients=CLIENTS, pipeline=128, requests=PIPELINED_FACTOR * requests),
        ShortLoad("connect", clients=CLIENTS, pipeline=1, requests=connections),
    )


HAPROXY_CONFIG = """# One thread, TCP mode, the evio proxy's time-outs and redispatch; no logging, no stats.
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 1
    option redispatch

frontend proxy
    bind {host}:{port}
    default_backend backends

backend backends
    balance roundrobin
    server backend {host}:{backend}{check}
"""


def haproxy_config(port: int | str, backend: int | str, *, checks: bool, host: str = LOOPBACK) -> str:
    """HAProxy's configuration: listen on `port`, forward to `backend`, health checks every 2 s if `checks`."""
    check = f" check inter {HEALTH_INTERVAL}s rise 2 fall 3" if checks else ""
    return HAPROXY_CONFIG.format(maxconn=MAXCONN, host=host, port=port, backend=backend, check=check)


@dataclass
class Contender:
    """A proxy under test (or "direct": none): how to start one in front of a backend."""

    key: str
    label: str
    # "{port}" stands for the proxy's port, "{backend}" for the backend's, "{config}" for HAProxy's config file.
    argv: list[str]
    loop: str = ""  # the event loop, for the report
    env: dict[str, str] = field(default_factory=dict)
    default: bool = True
    description: dict[str, str] = field(default_factory=dict)

    @property
    def is_proxy(self) -> bool:
        return bool(self.argv)

    def command(self, port: int, backend: int, config: Path) -> list[str]:
        subs = {"{port}": str(port), "{backend}": str(backend), "{config}": str(config)}
        words = []
        for word in self.argv:
            for placeholder, value in subs.items():
                word = word.replace(placeholder, value)
            words.append(word)
        return words

    def display(self) -> str:
        """The command as a person would type it in the repository's root."""
        if not self.is_proxy:
            return "(none: the load generator connects to the backend)"
        return display_command(
            self.argv, self.env, REPO, (("{port}", "PORT"), ("{backend}", "BACKEND"), ("{config}", "haproxy.cfg"))
        )


#: Modules that are extension modules in the compiled build (`make compiled`).
COMPILED_MODULES = ("evio.loop", "tcplb.balance")


def find_contenders(
    wanted: Sequence[str] | None, *, checks: bool, compiled_python: Path = COMPILED_PYTHON
) -> tuple[list[Contender], dict[str, str]]:
    """The proxies to measure, and why any of the others is left out.

    The compiled build runs the proxy with -I, so that the script's folder (examples/, with the
    source of `tcplb`) is not put on the path and the compiled `tcplb` is the one imported.
    """
    python = sys.executable
    compiled = str(compiled_python)
    pypy = shutil.which("pypy3")
    script = str(REPO / "examples" / "proxy.py")
    interval = str(HEALTH_INTERVAL) if checks else "0"
    evio = [script, "--listen", f"tcp://{LOOPBACK}:{{port}}", "--backend", f"tcp://{LOOPBACK}:{{backend}}"]
    evio += ["--check-interval", interval]
    every = [
        Contender("direct", "direct (no proxy)", [], loop="—"),
        Contender("haproxy", "HAProxy", ["haproxy", "-f", "{config}", "-db"], loop="epoll, nbthread 1"),
        Contender("evio", "evio proxy (CPython)", [python, *evio], loop="evio epoll"),
        Contender(
            "evio-compiled", "evio proxy (CPython, compiled with mypyc)", [compiled, "-I", *evio], loop="evio epoll"
        ),
        Contender(
            "evio-pypy",
            "evio proxy (PyPy)",
            [pypy or "pypy3", *evio],
            loop="evio epoll",
            env={"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "examples")])},
        ),
    ]
    missing = {}
    if shutil.which("haproxy") is None:
        missing["haproxy"] = "haproxy is not installed"
    if not Path(script).exists():
        missing["evio"] = missing["evio-pypy"] = missing["evio-compiled"] = "examples/proxy.py does not exist"
    if pypy is None:
        missing["evio-pypy"] = "pypy3 is not installed"
    problem = compiled_build_problem(compiled, COMPILED_MODULES, REPO)
    if problem:
        missing["evio-compiled"] = problem
    return choose_contenders(every, missing, wanted, reference=REFERENCE, reference_label="HAProxy")


def describe(contender: Contender) -> dict[str, str]:
    """What runs: the software (version, build) and its event loop."""
    if contender.key == "direct":
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True).stdout
        fields = dict(word.split("=", 1) for word in version.split() if "=" in word)
        return {
            "software": f"redis-server {fields.get('v', '?')} itself; the bulk peer ({this_interpreter()})",
            "build": version.strip(),
            "loop": contender.loop,
        }
    if contender.key == "haproxy":
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=True).stdout
        first = out.splitlines()[0] if out else "HAProxy ?"
        version = first.split()[2] if len(first.split()) > 2 else "?"
        return {"software": f"HAProxy {version} (C)", "build": first.strip(), "loop": contender.loop}
    info = interpreter_info(contender.argv[0], contender.env)
    return {
        "software": f"{info['implementation']} {info['version']}",
        "build": info["build"],
        "loop": contender.loop,
    }


# -- the bulk peer and client -----------------------------------------------------------------------------------
#
# The bandwidth test's two ends, run as `python bench/proxy_bench.py --bulk-peer PORT SOURCE` (the backend)
# and `--bulk-client push|pull PORT BYTES SOURCE` (the load generator). The client sends a request of
# HEADER bytes: "PUSH n" is followed by n bytes, which the peer drains and answers with b"OK\n"; after
# "PULL n" the peer sends n bytes and closes. Both ends move bytes in the kernel where Linux lets them
# (sendfile from SOURCE, splice into /dev/null), so that they, on the load generator's CPU, cost as little
# as they can and the proxy in between is what limits the rate.


def bulk_request(verb: str, nbytes: int) -> bytes:
    """The client's request: `verb` and the byte count, padded to HEADER bytes."""
    text = f"{verb} {nbytes}".encode()
    if len(text) >= HEADER:
        raise ValueError(f"byte count too large: {nbytes}")
    return text.ljust(HEADER - 1) + b"\n"


def parse_bulk_request(header: bytes) -> tuple[str, int]:
    """(verb, byte count) from a request; ValueError when it is not one."""
    verb, count = header.decode("ascii").split()
    if verb not in ("PUSH", "PULL") or not count.isdigit():
        raise ValueError(f"not a bulk request: {header!r}")
    return verb, int(count)


def _pour(sock: socket.socket, source: int, size: int, nbytes: int) -> None:
    """Send `nbytes` from the file `source` (of `size` bytes, over and over) with sendfile."""
    out, left, offset = sock.fileno(), nbytes, 0
    while left:
        sent = os.sendfile(out, source, offset, min(left, size - offset))
        if not sent:
            raise ConnectionError(f"the socket took no more bytes with {left} still to send")
        left -= sent
        offset = (offset + sent) % size


def _drain(sock: socket.socket, nbytes: int) -> None:
    """Read and discard `nbytes`: spliced into /dev/null where the interpreter can, else recv_into."""
    splice = getattr(os, "splice", None)
    if splice is None:
        buf = bytearray(1 << 20)
        left = nbytes
        while left:
            got = sock.recv_into(buf, min(left, len(buf)))
            if not got:
                raise ConnectionError(f"closed with {left} bytes still to come")
            left -= got
        return
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        capacity = 1 << 16
        set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux, Python 3.10 and later
        if set_size is not None:
            with contextlib.suppress(OSError):
                capacity = fcntl.fcntl(w, set_size, 1 << 20)
        fd, left = sock.fileno(), nbytes
        while left:
            got = splice(fd, w, min(left, capacity))
            if not got:
                raise ConnectionError(f"closed with {left} bytes still to come")
            left -= got
            while got:
                got -= splice(r, null, got)
    finally:
        for descriptor in (r, w, null):
            os.close(descriptor)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _bulk_session(conn: socket.socket, source: int, size: int) -> None:
    with conn:
        header = _recv_exactly(conn, HEADER)
        if len(header) < HEADER:
            return  # a health check, or the readiness probe: connect and close
        verb, nbytes = parse_bulk_request(header)
        if verb == "PUSH":
            _drain(conn, nbytes)
            conn.sendall(b"OK\n")
        else:
            _pour(conn, source, size, nbytes)


PEER_THREADS = 4  # connections the bulk peer serves at once (a transfer, and health checks beside it)


def bulk_peer(port: int, source_path: str) -> None:
    """Serve bulk requests on `port` for ever, on a few threads that live as long as the process.

    A thread per connection would take its CPU time with it when it ends: /proc counts live threads only.
    """
    source = os.open(source_path, os.O_RDONLY)
    size = os.fstat(source).st_size
    accepted: queue.Queue[socket.socket] = queue.Queue()

    def work() -> None:
        while True:
            conn = accepted.get()
            try:
                _bulk_session(conn, source, size)
            except (OSError, ValueError) as err:
                print(f"bulk peer: {err}", file=sys.stderr, flush=True)

    for _ in range(PEER_THREADS):
        threading.Thread(target=work, daemon=True).start()
    listener = socket.create_server((LOOPBACK, port), backlog=1024)
    print(f"bulk peer listening on {LOOPBACK}:{port}", flush=True)
    while True:
        accepted.put(listener.accept()[0])


def bulk_client(direction: str, port: int, nbytes: int, source_path: str) -> dict[str, float]:
    """Push `nbytes` to the peer through `port` (until its OK) or pull them; {"bytes", "seconds"}."""
    source = os.open(source_path, os.O_RDONLY)
    try:
        with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
            sock.settimeout(None)  # blocking: sendfile and splice on a socket with a timeout get EAGAIN
            started = time.perf_counter()
            if direction == "push":
                sock.sendall(bulk_request("PUSH", nbytes))
                _pour(sock, source, os.fstat(source).st_size, nbytes)
                if _recv_exactly(sock, 3) != b"OK\n":
                    raise ConnectionError("the peer did not acknowledge the bytes pushed")
            else:
                sock.sendall(bulk_request("PULL", nbytes))
                _drain(sock, nbytes)
            seconds = time.perf_counter() - started
    finally:
        os.close(source)
    return {"bytes": nbytes, "seconds": seconds}


def make_source(workdir: Path) -> Path:
    """The file the bulk ends send from: SOURCE_SIZE zero bytes (written, so it is in the page cache)."""
    path = workdir / "source.bin"
    chunk = bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(SOURCE_SIZE // len(chunk)):
            f.write(chunk)
    return path


# -- measuring --------------------------------------------------------------------------------------------------


@dataclass
class TransferSample(Sample):
    """One transfer through a proxy: a byte counts as a request, so `rps` is bytes/s and `requests` the bytes."""

    direction: str = "push"

    @property
    def mb_per_s(self) -> float:
        return self.rps / 1e6

    @property
    def cpu_seconds_per_gib(self) -> float:
        return self.cpu_seconds / self.requests * (1 << 30)

    def brief(self) -> str:
        return f"{self.mb_per_s:,.0f} MB/s {self.cpu_seconds_per_gib:.2f}s/GiB"

    @classmethod
    def figures(cls, runs: Sequence[Sample], ref: Sequence[Sample]) -> dict[str, Any]:
        """A proxy's figures for one direction: medians over rounds, and ratios to HAProxy's paired by round."""
        mb_per_s = [s.rps / 1e6 for s in runs]
        return {
            "mb_per_s": median(mb_per_s),
            "mb_per_s_spread": spread(mb_per_s),
            "mb_per_s_ratio": median([s.rps / r.rps for s, r in zip(runs, ref)]),
            "cpu_seconds_per_gib": median([s.cpu_seconds / s.requests * (1 << 30) for s in runs]),
            "cpu_ratio": median([s.cpu_seconds / r.cpu_seconds for s, r in zip(runs, ref)]),
            "server_busy": median([s.server_busy for s in runs]),
            **disturbance_figures(runs),
        }


def measure_transfer(
    server: ServerProcess, direction: str, nbytes: int, source: Path, pinning: Pinning, mine: Sequence[int]
) -> TransferSample:
    """Push or pull `nbytes` through `server` (a proxy in front of the bulk peer, or the peer itself)."""
    argv = [sys.executable, str(THIS), "--bulk-client", direction, str(server.port), str(nbytes), str(source)]
    measured = measure_run(server, argv, pinning, mine, timeout=120 + nbytes / 20e6)
    try:
        got = json.loads(measured.client.stdout)
    except ValueError:
        raise BenchError(f"the bulk client printed no result: {measured.client.stdout[-500:]!r}") from None
    if got["bytes"] != nbytes or got["seconds"] <= 0:
        raise BenchError(f"{server.name}: a {direction} of {nbytes} bytes came back as {got}")
    return TransferSample(
        nbytes / got["seconds"],
        measured.server_cpu_seconds,
        nbytes,
        measured.client.seconds,
        measured.others_seconds,
        measured.steal_seconds,
        direction=direction,
    )


def measure_idle_memory(
    contender: Contender, backend: int, pinning: Pinning, idle: int, workdir: Path, checks: bool
) -> dict[str, int]:
    """A fresh proxy's RSS at start and with `idle` client connections through it to redis-server, in KiB.

    Each connection sends a PING and gets its PONG back, so the proxy holds both of its sockets.
    "direct" measures a fresh redis-server with `idle` clients instead.
    """
    port = free_port()
    if contender.is_proxy:
        server = ServerProcess(
            contender.label,
            contender.command(port, backend, write_config(workdir, port, backend, checks=checks)),
            port=port,
            cpus=pinning.server_cpus,
            env=contender.env,
            cwd=str(workdir),
        )
    else:
        server = ServerProcess("redis-server", redis_argv(port), port=port, cpus=pinning.client_cpus, cwd=str(workdir))
    with server:
        server.start()
        start = server.memory_kib()["VmRSS"]
        with idle_connections(port, idle, IDLE_REQUEST, lambda got: got.endswith(b"\r\n")):
            held = server.memory_kib()
        return {"rss_start_kib": start, "rss_idle_kib": held["VmRSS"], "peak_idle_kib": held["VmHWM"]}


def redis_argv(port: int) -> list[str]:
    return ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]


def write_config(workdir: Path, port: int, backend: int, *, checks: bool) -> Path:
    """HAProxy's configuration for one instance, written into `workdir` (the evio proxy ignores it)."""
    path = workdir / f"haproxy-{port}.cfg"
    path.write_text(haproxy_config(port, backend, checks=checks))
    return path


# -- the run ----------------------------------------------------------------------------------------------------


def describe_pinning(pinning: Pinning) -> str:
    if not pinning.server_cpus:
        return "not pinned (taskset missing or fewer than 2 CPUs)"
    proxy = ",".join(map(str, pinning.server_cpus))
    rest = ",".join(map(str, pinning.client_cpus))
    return (
        f"each proxy alone on CPU {proxy}; redis-server, the bulk peer and the load generator (redis-benchmark, "
        f"the bulk client) on CPU {rest}"
    )


def run(args: argparse.Namespace) -> int:
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            raise SystemExit(f"cannot run the benchmark: {tool} is not installed (apt-get install redis-server)")
    wanted = args.servers.split(",") if args.servers else None
    contenders, skipped = find_contenders(wanted, checks=args.checks)
    for key, why in skipped.items():
        log(f"skipping {key}: {why}")
    loads = make_loads(args.requests, args.connections)
    pinning = plan_pinning(enabled=not args.no_pin)
    raise_fd_limit(max(4096, 4 * args.idle + 1024))
    log(f"pinning: {describe_pinning(pinning)}")
    revision = source_revision(
        REPO, ["src", "examples/proxy.py", "examples/tcplb", "bench/harness.py", "bench/proxy_bench.py"]
    )
    log(f"measuring commit {revision}")
    for c in contenders:
        c.description = {**describe(c), "command": c.display()}
        log(f"{c.label}: {c.description['software']}")

    nbytes = args.transfer_mib << 20
    warm_bytes = max(16 << 20, int(nbytes * args.warmup))
    by_key = {load.key: load for load in loads}
    cases = [
        Case((load.key, test), f"{load.label} {test}")
        for load in loads
        for test in ((CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS)
    ]
    cases += [Case(("bandwidth", d), DIRECTION_LABELS[d]) for d in DIRECTIONS]
    memory: dict[str, list[dict[str, int]]] = {c.key: [] for c in contenders}
    peaks: dict[str, dict[str, int]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="evio-proxy-bench-"))
    started: list[ServerProcess] = []

    def start(server: ServerProcess) -> ServerProcess:
        started.append(server)
        return server.start()

    try:
        source = make_source(workdir)
        redis_port, bulk_port = free_port(), free_port()
        backend = start(
            ServerProcess("redis-server (backend)", redis_argv(redis_port), port=redis_port, cpus=pinning.client_cpus)
        )
        bulk = start(
            ServerProcess(
                "bulk peer",
                [sys.executable, str(THIS), "--bulk-peer", str(bulk_port), str(source)],
                port=bulk_port,
                cpus=pinning.client_cpus,
            )
        )
        # Per contender: the server redis-benchmark talks to, and the one the bulk client talks to.
        requests_to: dict[str, ServerProcess] = {}
        bulk_to: dict[str, ServerProcess] = {}
        for c in contenders:
            if not c.is_proxy:
                requests_to[c.key], bulk_to[c.key] = backend, bulk
                continue
            for table, behind, what in ((requests_to, redis_port, "requests"), (bulk_to, bulk_port, "bandwidth")):
                port = free_port()
                config = write_config(workdir, port, behind, checks=args.checks)
                table[c.key] = start(
                    ServerProcess(
                        f"{c.label} ({what})",
                        c.command(port, behind, config),
                        port=port,
                        cpus=pinning.server_cpus,
                        env=c.env,
                        cwd=str(workdir),
                    )
                )
            peaks[c.key] = {"start_kib": bulk_to[c.key].memory_kib()["VmRSS"]}
        mine = [s.pid for s in started]

        def measured(c: Contender, case: Case, warm: bool = False) -> Sample:
            group, test = case.key
            if group == "bandwidth":
                n = warm_bytes if warm else nbytes
                return measure_transfer(bulk_to[c.key], test, n, source, pinning, mine)
            load = by_key[group]
            n = max(1000, int(load.requests * args.warmup)) if warm else None
            return measure_requests(requests_to[c.key], load, test, pinning, mine, n)

        def memory_round(r: int, order: list[Contender]) -> None:
            for c in order:
                memory[c.key].append(measure_idle_memory(c, redis_port, pinning, args.idle, workdir, args.checks))
            log(
                f"round {r + 1}/{args.rounds} memory with {args.idle:,} idle clients: "
                + ", ".join(f"{key} {m[-1]['rss_idle_kib'] / 1024:.1f} MiB" for key, m in memory.items())
            )

        rounds = run_rounds(
            contenders,
            cases,
            measured,
            rounds=args.rounds,
            mine=mine,
            disturbance=Disturbance.from_args(args),
            warm=lambda c, case: measured(c, case, warm=True),
            after_round=memory_round,
        )
        for c in contenders:
            if c.is_proxy:
                peaks[c.key]["peak_kib"] = bulk_to[c.key].memory_kib()["VmHWM"]
                peaks[c.key]["requests_peak_kib"] = requests_to[c.key].memory_kib()["VmHWM"]
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    per_server: dict[str, dict[str, Any]] = {}
    for key, figures in summarize(rounds.samples, lambda case: REFERENCE).items():
        mem = memory[key]
        per_server[key] = {
            "tests": figures,
            "memory": {
                name: median([m[name] for m in mem]) for name in ("rss_start_kib", "rss_idle_kib", "peak_idle_kib")
            },
            "peak_rss": peaks.get(key, {}),
        }
    result: dict[str, Any] = {
        "meta": {
            "benchmark": "proxy",
            "date": datetime.date.today().isoformat(),
            "machine": machine_info(),
            "pinning": describe_pinning(pinning),
            "revision": revision,
            "redis_benchmark": subprocess.run(
                ["redis-benchmark", "--version"], capture_output=True, text=True, check=True
            ).stdout.strip(),
            "backend": subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True)
            .stdout.split(" sha=")[0]
            .strip(),
            "rounds": args.rounds,
            "quick": args.quick,
            "checks": args.checks,
            "haproxy_config": haproxy_config("PORT", "BACKEND", checks=args.checks),
            "idle_connections": args.idle,
            "transfer_bytes": nbytes,
            "warmup_fraction": args.warmup,
            **rounds.meta(),
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
            "command": " ".join(["python", "bench/proxy_bench.py", *sys.argv[1:]]),
        },
        "servers": {c.key: {"label": c.label, **c.description} for c in contenders},
        "skipped": skipped,
        "summary": {"servers": per_server},
        "samples": samples_json(rounds.samples),
        "memory_samples": memory,
    }
    out = Path(args.out)
    write_json(out / "proxy.json", result)
    written = report.render(out / "proxy.json")
    log("wrote " + ", ".join(str(p) for p in [out / "proxy.json", *written]))
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
        help=f"requests per test at -P 1; -P 128 runs {PIPELINED_FACTOR} times as many "
        "(default 30000; 10000 with --quick)",
    )
    parser.add_argument("--connections", type=int, help="connections per -k 0 run (default 10000; 3000 with --quick)")
    parser.add_argument(
        "--transfer-mib", type=int, help="MiB pushed, and pulled, per transfer (default 1024; 256 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test of under 3 minutes; writes to a temporary directory"
    )
    parser.add_argument(
        "--servers",
        help="comma-separated proxies from direct,haproxy,evio,evio-compiled,evio-pypy (default: all available)",
    )
    parser.add_argument(
        "--checks",
        action="store_true",
        help=f"health checks every {HEALTH_INTERVAL} s on both HAProxy and the evio proxy (default: off on both)",
    )
    parser.add_argument("--idle", type=int, default=1000, help="idle clients for the memory figure (default 1000)")
    parser.add_argument(
        "--warmup", type=float, default=0.3, help="warm-up work as a fraction of a round's (default 0.3)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin proxies, backends and clients to CPUs")
    add_disturbance_arguments(parser)
    parser.add_argument("--out", help="directory for proxy.json, proxy.md, proxy.png (default docs/bench)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.requests is None:
        args.requests = 10_000 if args.quick else 30_000
    if args.connections is None:
        args.connections = 3_000 if args.quick else 10_000
    if args.transfer_mib is None:
        args.transfer_mib = 256 if args.quick else 1024
    quick_defaults(args, REPO)
    if args.rounds < 1 or args.requests < 1000 or args.connections < 100 or args.transfer_mib < 1 or args.idle < 1:
        parser.error("--rounds must be >= 1, --requests >= 1000, --connections >= 100, --transfer-mib and --idle >= 1")
    return args


def peer_main(argv: Sequence[str]) -> int:
    """The bulk ends: `--bulk-peer PORT SOURCE` serves for ever; `--bulk-client DIR PORT BYTES SOURCE` prints JSON."""
    if argv[0] == "--bulk-peer" and len(argv) == 3:
        bulk_peer(int(argv[1]), argv[2])
        return 0
    if argv[0] == "--bulk-client" and len(argv) == 5 and argv[1] in DIRECTIONS:
        print(json.dumps(bulk_client(argv[1], int(argv[2]), int(argv[3]), argv[4])))
        return 0
    print(f"usage: {THIS.name} --bulk-peer PORT SOURCE | --bulk-client push|pull PORT BYTES SOURCE", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("--bulk-peer", "--bulk-client"):
        return peer_main(argv)
    args = parse_args(argv)
    return run_benchmark(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
