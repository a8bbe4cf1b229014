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
import functools
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
    spread,
    this_interpreter,
    write_json,
)
from redis_bench import Load
from redis_bench import measure as measure_requests

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
class Target:
    """A bound on one figure of the targeted proxies, relative to HAProxy's, in some tests."""

    what: str  # as the report lists it
    figure: str  # the key of the ratio in a test's figures
    cases: tuple[tuple[str, str], ...]  # (test group, test) pairs it applies to
    bound: float
    at_least: bool  # the ratio must be >= bound (else <= bound)

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound

    @property
    def label(self) -> str:
        return f"{self.what} {'>=' if self.at_least else '<='} {self.bound:.1f}x HAProxy's"


TARGETS = (
    Target("requests/s", "rps_ratio", (("P1", "SET"), ("P1", "GET"), ("P128", "SET"), ("P128", "GET")), 1.0, True),
    Target("-P 1: proxy CPU per request", "cpu_ratio", (("P1", "SET"), ("P1", "GET")), 1.1, False),
    Target("bandwidth, MB/s", "mb_per_s_ratio", (("bandwidth", "push"), ("bandwidth", "pull")), 1.0, True),
)
TARGETED = ("evio",)  # the targets are for the evio proxy on CPython


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
    targeted: bool = False
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


def find_contenders(wanted: Sequence[str] | None, *, checks: bool) -> tuple[list[Contender], dict[str, str]]:
    """The proxies to measure, and why any of the others is left out."""
    python = sys.executable
    pypy = shutil.which("pypy3")
    script = str(REPO / "examples" / "proxy.py")
    interval = str(HEALTH_INTERVAL) if checks else "0"
    evio = [script, "--listen", f"tcp://{LOOPBACK}:{{port}}", "--backend", f"tcp://{LOOPBACK}:{{backend}}"]
    evio += ["--check-interval", interval]
    every = [
        Contender("direct", "direct (no proxy)", [], loop="—"),
        Contender("haproxy", "HAProxy", ["haproxy", "-f", "{config}", "-db"], loop="epoll, nbthread 1"),
        Contender("evio", "evio proxy (CPython)", [python, *evio], loop="evio epoll", targeted=True),
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
        missing["evio"] = missing["evio-pypy"] = "examples/proxy.py does not exist"
    if pypy is None:
        missing["evio-pypy"] = "pypy3 is not installed"
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


# -- figures and targets ----------------------------------------------------------------------------------------


def transfer_figures(runs: Sequence[TransferSample], ref: Sequence[TransferSample]) -> dict[str, Any]:
    """A proxy's figures for one direction: medians over rounds, and ratios to HAProxy's paired by round."""
    return {
        "mb_per_s": median([s.mb_per_s for s in runs]),
        "mb_per_s_spread": spread([s.mb_per_s for s in runs]),
        "mb_per_s_ratio": median([s.rps / r.rps for s, r in zip(runs, ref)]),
        "cpu_seconds_per_gib": median([s.cpu_seconds_per_gib for s in runs]),
        "cpu_ratio": median([s.cpu_seconds / r.cpu_seconds for s, r in zip(runs, ref)]),
        "server_busy": median([s.server_busy for s in runs]),
        "others_cpu_share": median([s.disturbance for s in runs]),
        "steal_share": median([s.steal_seconds / s.wall_seconds for s in runs]),
    }


def summarize(
    contenders: Sequence[Contender],
    loads: Sequence[Load],
    samples: dict[str, dict[str, dict[str, list[Sample]]]],
    transfers: dict[str, dict[str, list[TransferSample]]],
    memory: dict[str, list[dict[str, int]]],
    peaks: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Per proxy: figures for every test (by group: load key, or "bandwidth"), memory; then the targets."""
    per_server: dict[str, Any] = {}
    for c in contenders:
        tests: dict[str, dict[str, Any]] = {}
        for load in loads:
            names = (CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS
            tests[load.key] = {
                t: run_figures(samples[c.key][load.key][t], samples[REFERENCE][load.key][t]) for t in names
            }
        tests["bandwidth"] = {d: transfer_figures(transfers[c.key][d], transfers[REFERENCE][d]) for d in DIRECTIONS}
        mem = memory[c.key]
        per_server[c.key] = {
            "tests": tests,
            "memory": {
                name: median([m[name] for m in mem]) for name in ("rss_start_kib", "rss_idle_kib", "peak_idle_kib")
            },
            "peak_rss": peaks.get(c.key, {}),
        }
    return {"servers": per_server, "targets": check_targets(contenders, per_server)}


def check_targets(contenders: Sequence[Contender], per_server: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target, per targeted proxy and test: {"server", "target", "group", "test", "value", "met"}."""
    checks: list[dict[str, Any]] = []
    for c in contenders:
        if not c.targeted:
            continue
        for target in TARGETS:
            for group, test in target.cases:
                value = per_server[c.key]["tests"][group][test][target.figure]
                checks.append(
                    {
                        "server": c.key,
                        "target": target.label,
                        "group": group,
                        "test": test,
                        "value": value,
                        "met": target.met(value),
                    }
                )
    return checks


# -- report -----------------------------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _case(group: str, test: str, loads: Sequence[Load]) -> str:
    """A test's name in a report: '-P 1 SET', 'client → backend'."""
    if group == "bandwidth":
        return DIRECTION_LABELS[test]
    load = next(load for load in loads if load.key == group)
    return f"-k 0 {test}" if isinstance(load, ShortLoad) else f"-P {load.pipeline} {test}"


NOTES = (
    "Measured: redis-benchmark's requests/s for SET and GET (its defaults: a 3-byte value, one key) through "
    "each proxy to one redis-server, with 50 clients at -P 1 and -P 128, and with -k 0 (a new connection per "
    "request: connections/s); the proxy's CPU time (user + system, from the schedstat run time of its threads "
    "in /proc, in ns) over each run, divided by the requests; the rate of a 1 GiB transfer each way through "
    "the proxy, timed by the client from its request to the last byte (or the backend's acknowledgement); "
    "resident memory (VmRSS, VmHWM).",
    "Where things run: each proxy alone on the first CPU; redis-server, the bulk peer and the load generator "
    "together on the second. With two CPUs there is no better place for the backend: on the proxy's CPU it "
    "would take the proxy's time. So the second CPU does the load generator's and the backend's work for "
    "every proxy alike, and when it is the bottleneck (see 'Who limits whom') requests/s bunch together and the "
    "proxy's CPU per request is the fairer figure. The direct row is the same load with no proxy: its CPU "
    "figure is redis-server's own (or the bulk peer's).",
    "The bulk peer and client are Python processes that keep bytes in the kernel (sendfile from a file in the "
    "page cache, splice into /dev/null), so that they cost little of the second CPU; the proxies read every "
    "byte into user space and write it out again (HAProxy's splicing is off by default, and left off).",
    "Proxy CPU time leaves out the kernel's network work done in softirqs and kernel threads (charged to no "
    "process; on loopback, the receiving side's TCP work), as in the other benchmarks; it follows the packets "
    "sent.",
    "Not measured: more than one backend, balancing, health-check failures, TLS, the PROXY protocol header, "
    "latency percentiles, real network cards, clients on another machine, more than one proxy core.",
    "PyPy runs after a warm-up pass (every test once, unmeasured, given to every proxy alike), so its JIT has "
    "compiled the hot paths. Its memory includes the JIT and a large GC nursery.",
    "A shared, virtual 2-CPU machine is noisy: figures move from round to round (the ± figures); ratios, "
    "measured side by side within a round, move less. Runs during which other people's processes used more "
    "than a set share of a CPU were measured again; the header says how many.",
)


# Where the evio proxy's time goes, from a profile taken apart from the runs (so the report can say why, not
# only how much): perf (cpu-clock), strace -c and cProfile on the proxy under the same loads, same machine.
PROFILE = (
    "Profiled on 2026-12-02 at commit 8072b13 (perf, strace -c and cProfile on the proxy under the same loads, "
    "not during the measured runs), CPython 3.11:",
    "-P 1: both proxies make the same system calls per request (two recvfrom, two sendto, and one epoll_wait "
    "for about 50 events). perf put the evio proxy's CPU per request at 51 µs against HAProxy's 27: in the "
    "kernel 32 µs against 24, in user space 19 µs (libpython, a third of its time) against 4 (HAProxy's own "
    "code and libc, an eighth). Each chunk "
    "forwarded runs about 22 calls, 12 of them Python functions: the loop's read, `Proxy.data`, `Conn.write`, "
    "the loop's `_write` and its checks, and the `postwrite` event, which the proxy overrides (to resume a "
    "paused side), so evio calls it after every write, paused or not.",
    "-k 0: a short connection costs the evio proxy about 30 system calls against HAProxy's 19 (7 epoll_ctl "
    "against 3, 6 recvfrom against 4, and getsockname, getpeername, ioctl and getsockopt calls HAProxy does not "
    "make) and about 360 Python calls: accepting, dialling (the backend's address parsed again and passed "
    "through getaddrinfo on every dial), the connection state machine (whose Enum states are hashed in "
    "Python), three timers, and the graceful close of both sides. Half of its CPU time is then in libpython.",
    "-P 128 and bandwidth (not profiled): a read carries kilobytes (about 128 requests) to 64 KiB, so the "
    "Python run per event is spread over many requests or bytes. In bandwidth the evio proxy reads up to 64 KiB "
    "per event where HAProxy's default buffers hold 16 KiB, likely why it keeps up there. It copies each chunk "
    "once more than it needs to (it does not ask evio for `reuse_input_buffer`, so every read becomes a new "
    "bytes object).",
)


def limits_paragraph(summary: dict[str, Any], contenders: Sequence[Contender], loads: Sequence[Load]) -> list[str]:
    """Who was the bottleneck in each test: each proxy's CPU busy share (near 100%: the proxy)."""
    groups = [(load.key, (CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS) for load in loads]
    groups.append(("bandwidth", DIRECTIONS))
    rows = []
    for c in contenders:
        if not c.is_proxy:
            continue
        cells = [c.label]
        for group, names in groups:
            cells += [f"{summary[c.key]['tests'][group][t]['server_busy']:.0%}" for t in names]
        rows.append(cells)
    headers = ["proxy", *[_case(g, t, loads) for g, names in groups for t in names]]
    return [
        "## Who limits whom",
        "",
        "The share of each run's wall time the proxy spent on its CPU: near 100%, the proxy was the bottleneck; "
        "well below, the other CPU (load generator and backend) was, or the round trips were.",
        "",
        markdown_table(headers, rows, right=tuple(range(1, len(headers)))),
        "",
    ]


def render_markdown(report: dict[str, Any], contenders: Sequence[Contender], loads: Sequence[Load]) -> str:
    """The report as Markdown: setup, targets, one section per test, memory, and what was and was not measured."""
    meta = report["meta"]
    summary = report["summary"]["servers"]
    labels = {c.key: c.label for c in contenders}
    met_by = {(t["server"], t["group"], t["test"], t["target"]): t["met"] for t in report["summary"]["targets"]}

    def marks(key: str, group: str, test: str, figure: str) -> str:
        found = [
            met_by[(key, group, test, t.label)]
            for t in TARGETS
            if t.figure == figure and (group, test) in t.cases and (key, group, test, t.label) in met_by
        ]
        return "".join(f" {check_mark(m)}" for m in found)

    checks = "every 2 s on both (HAProxy `check inter 2s rise 2 fall 3`, evio `--check-interval 2`)"
    out = [
        "# TCP load-balancer benchmark: the evio proxy against HAProxy",
        "",
        run_on(meta) + f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}, interleaved "
        "(every test through every proxy in turn, in a rotated order); figures are medians over rounds; a ratio "
        "is the median over rounds of the proxy's figure divided by HAProxy's in the same round. "
        f"Pinning: {meta['pinning']}. Backend: {meta['backend']}, one for all. Load generator: "
        f"{meta['redis_benchmark']}, {CLIENTS} clients, on loopback. Health checks: "
        + (
            checks
            if meta["checks"]
            else "off on both (HAProxy's server line has no `check`; evio `--check-interval 0`)"
        )
        + f". Code measured: commit {meta['revision']}.",
        "",
        shared_machine(meta),
        "",
    ]
    if meta["quick"]:
        out += ["**Quick run** (`--quick`): short runs, one round; a smoke test, not a result.", ""]
    out += servers_section(report, labels, (("runs on", "software"), ("event loop", "loop")), title="Proxies")
    out += [
        "HAProxy's configuration (BACKEND is redis-server's port, or the bulk peer's):",
        "",
        "```",
        haproxy_config("PORT", "BACKEND", checks=meta["checks"]).rstrip(),
        "```",
        "",
    ]

    rows = []
    for c in contenders:
        if not c.targeted:
            continue
        for target in TARGETS:
            got = [t for t in report["summary"]["targets"] if t["server"] == c.key and t["target"] == target.label]
            hits = sum(t["met"] for t in got)
            misses = ", ".join(f"{_case(t['group'], t['test'], loads)} {t['value']:.2f}x" for t in got if not t["met"])
            result = f"{check_mark(hits == len(got))} {hits} of {len(got)} met" + (
                f" (missed: {misses})" if misses else ""
            )
            rows.append([c.label, target.label, result])
    out += [
        "## Targets",
        "",
        markdown_table(["proxy", "target", "result"], rows),
        "",
        "The targets are for the evio proxy on CPython; PyPy's ratios are in the tables below. Connection rate "
        "and memory have no target.",
        "",
    ]

    request_loads = [load for load in loads if not isinstance(load, ShortLoad)]
    cases = [(load.key, t) for load in request_loads for t in TESTS]
    headers = ["proxy", *[_case(g, t, loads) for g, t in cases]]
    rps_rows, cpu_rows = [], []
    for c in contenders:
        rps_cells, cpu_cells = [c.label], [c.label]
        for group, test in cases:
            f = summary[c.key]["tests"][group][test]
            rps_cells.append(
                f"{short_rps(f['rps'])} ±{f['rps_spread'] * 100:.0f}% ({f['rps_ratio']:.2f}x)"
                + marks(c.key, group, test, "rps_ratio")
            )
            cpu_cells.append(
                f"{f['cpu_us_per_request']:.2f} µs ({f['cpu_ratio']:.2f}x)" + marks(c.key, group, test, "cpu_ratio")
            )
        rps_rows.append(rps_cells)
        cpu_rows.append(cpu_cells)
    right = tuple(range(1, len(headers)))
    out += [
        f"## Request rate: redis-benchmark -t set,get, {CLIENTS} clients",
        "",
        "Requests/s (± half the range over rounds) and the ratio to HAProxy:",
        "",
        markdown_table(headers, rps_rows, right=right),
        "",
        "CPU µs per request of the proxy (for the direct row: of redis-server) and the ratio to HAProxy's:",
        "",
        markdown_table(headers, cpu_rows, right=right),
        "",
    ]
    every = [summary[c.key]["tests"][g][t] for c in contenders for g, t in cases]
    out += [
        f"Processes outside the benchmark used {median([f['others_cpu_share'] for f in every]):.0%} of a CPU during "
        f"these runs (median; {max(f['others_cpu_share'] for f in every):.0%} in the worst test's median), the "
        f"hypervisor took {median([f['steal_share'] for f in every]):.0%}.",
        "",
    ]

    for load in loads:
        if not isinstance(load, ShortLoad):
            continue
        rows = []
        for c in contenders:
            f = summary[c.key]["tests"][load.key][CONNECT_TEST]
            rows.append(
                [
                    c.label,
                    f"{f['rps']:,.0f} ±{f['rps_spread'] * 100:.0f}%",
                    f"{f['rps_ratio']:.2f}x",
                    f"{f['cpu_us_per_request']:.1f} µs",
                    f"{f['cpu_ratio']:.2f}x",
                ]
            )
        out += [
            f"## Connection rate: redis-benchmark -t {CONNECT_TEST.lower()} {load.label}",
            "",
            f"{load.requests:,} connections per run, each sending one {CONNECT_TEST} and closing after its reply.",
            "",
            markdown_table(
                ["proxy", "connections/s", "vs HAProxy", "CPU per connection", "vs HAProxy"], rows, right=(1, 2, 3, 4)
            ),
            "",
        ]

    size = meta["transfer_bytes"]
    rows = []
    for c in contenders:
        cells = [c.label]
        for d in DIRECTIONS:
            f = summary[c.key]["tests"]["bandwidth"][d]
            cells += [
                f"{f['mb_per_s']:,.0f} MB/s ±{f['mb_per_s_spread'] * 100:.0f}%",
                f"{f['mb_per_s_ratio']:.2f}x" + marks(c.key, "bandwidth", d, "mb_per_s_ratio"),
            ]
        cells.append(
            " / ".join(f"{summary[c.key]['tests']['bandwidth'][d]['cpu_seconds_per_gib']:.2f} s" for d in DIRECTIONS)
        )
        peak = summary[c.key]["peak_rss"]
        cells += [_mib(peak["start_kib"]), _mib(peak["peak_kib"])] if c.is_proxy and peak else ["—", "—"]
        rows.append(cells)
    out += [
        f"## Bandwidth: {size / (1 << 30):g} GiB each way",
        "",
        f"One connection; {size / (1 << 30):g} GiB pushed from the client to the bulk peer, then "
        f"{size / (1 << 30):g} GiB pulled back, through a proxy of each kind that serves only these transfers "
        "(its own instance, in front of the bulk peer). CPU per GiB is the proxy's (the direct row's: the bulk "
        "peer's). Peak RSS is that proxy's VmHWM after every transfer of the run (warm-up included); RSS at start "
        "is read when it first accepts.",
        "",
        markdown_table(
            [
                "proxy",
                DIRECTION_LABELS["push"],
                "vs HAProxy",
                DIRECTION_LABELS["pull"],
                "vs HAProxy",
                "CPU per GiB (each way)",
                "RSS at start",
                "peak RSS",
            ],
            rows,
            right=(1, 2, 3, 4, 5, 6, 7),
        ),
        "",
    ]

    idle = meta["idle_connections"]
    rows = []
    for c in contenders:
        mem = summary[c.key]["memory"]
        per_conn = (mem["rss_idle_kib"] - mem["rss_start_kib"]) / idle
        rows.append([c.label, _mib(mem["rss_start_kib"]), _mib(mem["rss_idle_kib"]), f"{per_conn:.1f} KiB"])
    out += [
        f"## Memory: {idle:,} idle client connections ({2 * idle:,} sockets)",
        "",
        f"A fresh proxy of each kind; {idle:,} clients connect through it, each sends one PING and gets its PONG "
        "from redis-server (so the proxy holds both sockets of every pair), then all stay open while the proxy's "
        f"VmRSS is read. The direct row is a fresh redis-server holding {idle:,} clients.",
        "",
        markdown_table(
            ["proxy", "RSS at start", f"RSS with {idle:,} clients", "per client"],
            rows,
            right=(1, 2, 3),
        ),
        "",
    ]
    out += limits_paragraph(summary, contenders, loads)
    out += ["## What limits the evio proxy", "", PROFILE[0], "", *[f"- {line}" for line in PROFILE[1:]], ""]
    out += ["## What was measured and what was not", "", *[f"- {line}" for line in NOTES], ""]
    return "\n".join(out)


def chart(report: dict[str, Any], contenders: Sequence[Contender], loads: Sequence[Load], path: Path) -> bool:
    """Request and connection rates relative to HAProxy, proxy CPU per request, bandwidth, and memory."""
    summary = report["summary"]["servers"]
    cases = [(load.key, (CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS) for load in loads]
    flat = [(g, t) for g, names in cases for t in names]
    cats = [_case(g, t, loads) for g, t in flat]
    nan = float("nan")

    def proxy_only(c: Contender, values: list[float]) -> list[float]:
        """A proxy's bars; none for the direct row (kept in the series so that colours match across panels)."""
        return values if c.is_proxy else [nan] * len(values)

    panels = [
        Panel(
            "Requests (connections at -k 0) per second relative to HAProxy (higher is better)",
            "x HAProxy",
            cats,
            {c.label: [summary[c.key]["tests"][g][t]["rps_ratio"] for g, t in flat] for c in contenders},
            reference=1.0,
        ),
        Panel(
            "Proxy CPU per request (per connection at -k 0; lower is better)",
            "µs",
            cats,
            {
                c.label: proxy_only(c, [summary[c.key]["tests"][g][t]["cpu_us_per_request"] for g, t in flat])
                for c in contenders
            },
            log=True,
        ),
        Panel(
            f"Bandwidth, {report['meta']['transfer_bytes'] / (1 << 30):g} GiB each way (higher is better)",
            "MB/s",
            [DIRECTION_LABELS[d] for d in DIRECTIONS],
            {c.label: [summary[c.key]["tests"]["bandwidth"][d]["mb_per_s"] for d in DIRECTIONS] for c in contenders},
        ),
        Panel(
            "Proxy resident memory (lower is better)",
            "MiB",
            (f"{report['meta']['idle_connections']:,} idle clients", "peak, bandwidth test"),
            {
                c.label: proxy_only(
                    c,
                    [
                        summary[c.key]["memory"]["rss_idle_kib"] / 1024,
                        summary[c.key]["peak_rss"].get("peak_kib", nan) / 1024,
                    ],
                )
                for c in contenders
            },
        ),
    ]
    return bar_chart(
        path,
        panels,
        title="evio TCP proxy vs HAProxy (redis-benchmark and 1 GiB transfers through the proxy, loopback)",
        note=chart_note(report["meta"]),
    )


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
    samples: dict[str, dict[str, dict[str, list[Sample]]]] = {
        c.key: {load.key: {t: [] for t in (*TESTS, CONNECT_TEST)} for load in loads} for c in contenders
    }
    transfers: dict[str, dict[str, list[TransferSample]]] = {c.key: {d: [] for d in DIRECTIONS} for c in contenders}
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
        # --wait-quiet is also the patience, in all, for waiting for quiet before measuring disturbed runs again.
        disturbed = DisturbedRuns(mine, max_other=args.max_other, retries=args.retries, patience=args.wait_quiet)
        busy_before = disturbed.wait_for_quiet(args.wait_quiet)
        log(f"other processes used {busy_before:.0%} of a CPU before the run")

        def requests(c: Contender, load: Load, test: str, n: int | None = None) -> Sample:
            return measure_requests(requests_to[c.key], load, test, pinning, mine, n)

        def transfer(c: Contender, direction: str, n: int) -> TransferSample:
            return measure_transfer(bulk_to[c.key], direction, n, source, pinning, mine)

        log(f"warm-up: every test once through every proxy ({args.warmup:.0%} of a round's work)")
        for load in loads:
            for test in (CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS:
                for c in contenders:
                    requests(c, load, test, max(1000, int(load.requests * args.warmup)))
        for direction in DIRECTIONS:
            for c in contenders:
                transfer(c, direction, warm_bytes)

        for r in range(args.rounds):
            order = rotated(contenders, r)
            for load in loads:
                for test in (CONNECT_TEST,) if isinstance(load, ShortLoad) else TESTS:
                    line = []
                    for c in order:
                        s = disturbed.measure(f"{c.key} {test}", functools.partial(requests, c, load, test))
                        samples[c.key][load.key][test].append(s)
                        line.append(f"{c.key} {short_rps(s.rps)}/s {s.cpu_us_per_request:.2f}µs")
                    log(f"round {r + 1}/{args.rounds} {load.label} {test}: " + ", ".join(line))
            for direction in DIRECTIONS:
                line = []
                for c in order:
                    t = disturbed.measure(f"{c.key} {direction}", functools.partial(transfer, c, direction, nbytes))
                    transfers[c.key][direction].append(t)
                    line.append(f"{c.key} {t.mb_per_s:,.0f} MB/s {t.cpu_seconds_per_gib:.2f}s/GiB")
                log(f"round {r + 1}/{args.rounds} {DIRECTION_LABELS[direction]}: " + ", ".join(line))
            for c in order:
                memory[c.key].append(measure_idle_memory(c, redis_port, pinning, args.idle, workdir, args.checks))
            log(
                f"round {r + 1}/{args.rounds} memory with {args.idle:,} idle clients: "
                + ", ".join(f"{key} {_mib(m[-1]['rss_idle_kib'])}" for key, m in memory.items())
            )
        for c in contenders:
            if c.is_proxy:
                peaks[c.key]["peak_kib"] = bulk_to[c.key].memory_kib()["VmHWM"]
                peaks[c.key]["requests_peak_kib"] = requests_to[c.key].memory_kib()["VmHWM"]
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    all_samples: list[Sample] = [
        s for per in samples.values() for t in per.values() for runs in t.values() for s in runs
    ]
    all_samples += [s for per in transfers.values() for runs in per.values() for s in runs]
    report: dict[str, Any] = {
        "meta": {
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
            "idle_connections": args.idle,
            "transfer_bytes": nbytes,
            "warmup_fraction": args.warmup,
            "others_before": busy_before,
            "max_other": args.max_other,
            "retries": args.retries,
            "runs_measured_again": disturbed.retried,
            "runs_still_disturbed": disturbed.still_disturbed(all_samples),
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
        "summary": summarize(contenders, loads, samples, transfers, memory, peaks),
        "samples": {
            key: {
                lk: {t: [s.as_json() for s in runs] for t, runs in tests.items() if runs} for lk, tests in per.items()
            }
            for key, per in samples.items()
        },
        "transfer_samples": {
            key: {d: [s.as_json() for s in runs] for d, runs in per.items()} for key, per in transfers.items()
        },
        "memory_samples": memory,
    }
    out = Path(args.out)
    write_json(out / "proxy.json", report)
    (out / "proxy.md").write_text(render_markdown(report, contenders, loads))
    drawn = chart(report, contenders, loads, out / "proxy.png")
    log(f"wrote {out / 'proxy.json'}, {out / 'proxy.md'}" + (f", {out / 'proxy.png'}" if drawn else ""))
    print((out / "proxy.md").read_text())
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
        "--servers", help="comma-separated proxies from direct,haproxy,evio,evio-pypy (default: all available)"
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
