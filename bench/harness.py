"""Reusable pieces of the benchmark suites: server processes, CPU and memory sampling, idle connections.

Nothing here knows about Redis or HTTP. A suite starts each server under test with `ServerProcess`
(its own process group, pinned with `taskset`, ready once its port accepts connections) and runs a
load generator on another CPU with `measure_run`, which reads the server's CPU time and other
processes' (with psutil) around the run; `rounds.py` drives the rounds and `report.py` renders what
was found. Linux only: a server's CPU time comes from its threads' schedstat, in nanoseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import psutil

LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """A server or load generator did not do what the benchmark needs; the message says which and why."""


# -- CPUs -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Which CPUs servers and load generators run on; empty tuples mean "wherever the kernel likes"."""

    server_cpus: tuple[int, ...]
    client_cpus: tuple[int, ...]

    def prefix(self, cpus: Sequence[int]) -> list[str]:
        """The `taskset` words that run a command on `cpus` (none when not pinning)."""
        return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []

    def describe(self) -> str:
        """One line for a report."""
        if not self.server_cpus:
            return "not pinned (taskset missing or fewer than 2 CPUs)"
        return f"server on CPU {_cpu_list(self.server_cpus)}, load generator on CPU {_cpu_list(self.client_cpus)}"


def _cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(map(str, cpus))


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the interpreter cannot tell, as on PyPy 3.9)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_pinning(*, enabled: bool = True) -> Pinning:
    """Put servers on the first CPU this process may use and clients on the second, if `taskset` is there."""
    allowed = usable_cpus()
    if not enabled or len(allowed) < 2 or shutil.which("taskset") is None:
        return Pinning((), ())
    return Pinning((allowed[0],), (allowed[1],))


# -- CPU time and memory ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, all its live threads together.

    It is read in nanoseconds from each thread's /proc/PID/task/TID/schedstat (the run time that
    utime and stime are scaled from), where the kernel has it: psutil's figures count clock ticks
    of 10 ms, too coarse for runs of a second. A thread that has exited no longer counts; the
    servers measured here run one thread.
    """
    if not Path(f"/proc/{pid}/schedstat").exists():
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    total_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # the thread ended just now
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total_ns / 1e9


def peak_rss_kib(pid: int) -> int:
    """The peak resident set of process `pid` so far, in KiB (VmHWM: psutil does not read it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM line in /proc/{pid}/status")


def memory_kib(pid: int) -> dict[str, int]:
    """Process `pid`'s memory sizes in KiB: VmRSS is the resident set now, VmHWM its peak so far."""
    return {"VmRSS": int(psutil.Process(pid).memory_info().rss) // 1024, "VmHWM": peak_rss_kib(pid)}


@dataclass(frozen=True)
class CpuTimes:
    """What some CPUs have done since boot, in seconds."""

    busy: float  # user, nice, system, irq and softirq time: anything but idle, iowait and steal
    steal: float  # time the hypervisor gave the CPUs to another guest

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy - earlier.busy, self.steal - earlier.steal)


def cpu_times(cpus: Sequence[int]) -> CpuTimes:
    """Busy and stolen time of `cpus` so far; around a run, with a pinned server's own CPU time, it tells
    how much else ran on the server's CPU (other processes, interrupts) and how much the hypervisor took."""
    per_cpu = psutil.cpu_times(percpu=True)
    busy = steal = 0.0
    for n in cpus:
        t = per_cpu[n]
        busy += t.user + t.nice + t.system + t.irq + t.softirq
        steal += t.steal
    return CpuTimes(busy, steal)


KTHREADD = 2  # the kernel's thread daemon: every kernel thread is it or its child


def process_cpu_seconds() -> dict[int, float]:
    """CPU time so far of every user-space process on the machine, by pid (kernel threads left out).

    Two snapshots around a run tell how much CPU other people's processes took meanwhile: on a
    shared machine, the difference between a clean measurement and a skewed one. Kernel threads
    are left out because they do the benchmark's own network work (softirqs) too.
    """
    times: dict[int, float] = {}
    for proc in psutil.process_iter(["ppid", "cpu_times"]):
        info = proc.info
        if proc.pid == KTHREADD or info["ppid"] == KTHREADD or info["cpu_times"] is None:
            continue
        times[proc.pid] = info["cpu_times"].user + info["cpu_times"].system
    return times


def others_cpu_seconds(before: Mapping[int, float], after: Mapping[int, float], mine: Iterable[int]) -> float:
    """CPU time that processes other than `mine` used between two `process_cpu_seconds` snapshots.

    A process that started in between counts in full; one that ended in between is missed.
    """
    skip = set(mine)
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in skip)


def wait_for_others(mine: Iterable[int], *, below: float, timeout: float, sample: float = 1.0) -> float:
    """Wait up to `timeout` seconds for processes other than `mine` to use less than `below` of a CPU.

    Returns the share last seen (of one CPU, over a `sample`-second window), whether or not it got
    below: on a shared machine a benchmark had better run when no one else is running one, and say
    so when it could not. Kernel threads do not count: they do the benchmark's own network work.
    """
    mine = [os.getpid(), *mine]
    deadline = time.monotonic() + timeout
    while True:
        before = process_cpu_seconds()
        time.sleep(sample)
        share = others_cpu_seconds(before, process_cpu_seconds(), mine) / sample
        if share < below or time.monotonic() >= deadline:
            return share


def raise_fd_limit(want: int) -> int:
    """Raise this process's open-file limit towards `want` (children inherit it); returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# -- processes --------------------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    """Stop `proc` and everything in its process group: SIGTERM, then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Whatever else the group started goes too, even when the leader is gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class ServerProcess:
    """One server under test, in its own process group so that stopping it stops all it started.

    `argv` must make the server listen on `host`:`port`; `start` returns once a TCP connection
    to that address succeeds. Output goes to a log file, quoted in errors. `pid` is the server's own
    pid (`taskset` execs the command), so CPU time and memory read from /proc are the server's.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        host: str = LOOPBACK,
        cpus: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.host = host
        self.port = port
        self.cpus = tuple(cpus)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int:
        """The server's process id (BenchError if it was not started)."""
        if self._proc is None:
            raise BenchError(f"{self.name}: not started")
        return self._proc.pid

    @property
    def command(self) -> str:
        """The command line, as a person would type it."""
        return shlex.join(self.argv)

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and wait until it accepts connections; BenchError (with its log) if it does not."""
        pin = ["taskset", "-c", _cpu_list(self.cpus)] if self.cpus else []
        env = {**os.environ, **self.env} if self.env is not None else None
        fd, name = tempfile.mkstemp(prefix=f"bench-{_slug(self.name)}-", suffix=".log")
        self._log_path = Path(name)
        try:
            self._proc = subprocess.Popen(
                pin + self.argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise BenchError(
                    f"{self.name} exited with status {self._proc.returncode} before listening on "
                    f"{self.host}:{self.port}\ncommand: {self.command}\n{tail}"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=1.0).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise BenchError(
                        f"{self.name} did not accept connections on {self.host}:{self.port} within "
                        f"{timeout:.0f} s\ncommand: {self.command}\n{tail}"
                    ) from None
                time.sleep(0.05)

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """BenchError, with the log, if the server has died."""
        if not self.alive():
            code = self._proc.returncode if self._proc is not None else None
            raise BenchError(f"{self.name} is not running (exit status {code})\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far."""
        return cpu_seconds(self.pid)

    def memory_kib(self) -> dict[str, int]:
        """The server's VmRSS (now) and VmHWM (peak) in KiB."""
        return memory_kib(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote."""
        if self._log_path is None or not self._log_path.exists():
            return "  (no output)"
        text = self._log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in text) if text else "  (no output)"

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server and its process group; safe to call twice or before `start`."""
        if self._proc is not None:
            _stop_group(self._proc, grace)
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


@dataclass(frozen=True)
class ClientRun:
    """What a load generator printed and how long it took."""

    stdout: str
    stderr: str
    seconds: float
    cpu_seconds: float  # the load generator's own CPU time (user + system)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_client(argv: Sequence[str], *, cpus: Sequence[int] = (), timeout: float = 300.0) -> ClientRun:
    """Run a load generator to completion on `cpus`; BenchError if it fails or outlives `timeout` seconds.

    It runs in its own process group, killed whatever happens (Ctrl-C included).
    """
    pin = ["taskset", "-c", _cpu_list(cpus)] if cpus else []
    started, children_before = time.monotonic(), _children_cpu_seconds()
    proc = subprocess.Popen(
        pin + list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} did not finish within {timeout:.0f} s: {' '.join(argv)}") from None
    finally:
        _stop_group(proc, grace=1.0)
    seconds, cpu = time.monotonic() - started, _children_cpu_seconds() - children_before
    run = ClientRun(out.decode(errors="replace"), err.decode(errors="replace"), seconds, cpu)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with status {proc.returncode}\n{run.stderr[-2000:]}")
    return run


@contextlib.contextmanager
def terminate_becomes_interrupt() -> Iterator[None]:
    """Within this block SIGTERM raises KeyboardInterrupt, so `finally` clauses stop what was started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- measured runs ----------------------------------------------------------------------------------------------

QUIET = 0.1  # other processes using less than this share of a CPU: the machine is quiet enough to measure


@dataclass
class Sample:
    """One load-generator run against one server: requests/s, the server's CPU time, and what disturbed it."""

    rps: float
    cpu_seconds: float
    requests: int
    wall_seconds: float
    # While it ran: CPU time of processes that are not part of the benchmark (someone else's work on a
    # shared machine), and time the hypervisor took from the CPUs we use.
    others_seconds: float = 0.0
    steal_seconds: float = 0.0

    @property
    def disturbance(self) -> float:
        """Other processes' CPU time during the run, as a share of one CPU."""
        return self.others_seconds / self.wall_seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6

    def brief(self) -> str:
        """The run in a few words, for the progress log."""
        return f"{short_rps(self.rps)}/s {self.cpu_us_per_request:.2f}µs"

    @property
    def server_busy(self) -> float:
        """The share of the run's wall time the server spent on a CPU: near 1.0, the server was the bottleneck."""
        return self.cpu_seconds / self.wall_seconds

    def as_json(self) -> dict[str, Any]:
        """The fields for a report: a subclass's own fields come before the two about disturbance."""
        disturbance = ("others_seconds", "steal_seconds")
        own = {name: value for name, value in vars(self).items() if name not in disturbance}
        return {**own, **{name: getattr(self, name) for name in disturbance}}

    @classmethod
    def figures(cls, runs: Sequence[Sample], ref: Sequence[Sample]) -> dict[str, Any]:
        """The report's figures for one server's `runs` of one case: medians over rounds, and ratios to `ref`.

        `ref` are the reference server's runs, round by round. Ratios pair each run with the reference's
        in the same round, a few seconds apart, so that the machine's drift over the whole run cancels
        out; their median is the figure reported. A subclass's own figures go before the two about
        disturbance.
        """
        return {
            "rps": median([s.rps for s in runs]),
            "rps_spread": spread([s.rps for s in runs]),
            "rps_ratio": median([s.rps / r.rps for s, r in zip(runs, ref)]),
            "cpu_us_per_request": median([s.cpu_us_per_request for s in runs]),
            "cpu_ratio": median([s.cpu_us_per_request / r.cpu_us_per_request for s, r in zip(runs, ref)]),
            "server_busy": median([s.server_busy for s in runs]),
            **cls.own_figures(runs, ref),
            **disturbance_figures(runs),
        }

    @classmethod
    def own_figures(cls, runs: Sequence[Sample], ref: Sequence[Sample]) -> dict[str, Any]:
        """A subclass's figures beside the common ones (none here)."""
        return {}


def disturbance_figures(runs: Sequence[Sample]) -> dict[str, float]:
    """How much others disturbed `runs`: their CPU share and the hypervisor's steal, medians over the runs."""
    return {
        "others_cpu_share": median([s.disturbance for s in runs]),
        "steal_share": median([s.steal_seconds / s.wall_seconds for s in runs]),
    }


def median(values: Sequence[float]) -> float:
    """The median of `values`; nan when there are none."""
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> float:
    """Half the range of `values` relative to their median: 0.03 means within ±3%."""
    return (max(values) - min(values)) / 2 / median(values) if len(values) > 1 and median(values) else 0.0


@dataclass(frozen=True)
class MeasuredRun:
    """A load generator's run, the server's CPU time over it, and what else used the machine meanwhile."""

    client: ClientRun
    server_cpu_seconds: float
    others_seconds: float  # CPU time of processes outside the benchmark
    steal_seconds: float  # time the hypervisor took from the server's and the load generator's CPUs


def measure_run(
    server: ServerProcess, argv: Sequence[str], pinning: Pinning, mine: Iterable[int], *, timeout: float
) -> MeasuredRun:
    """Run the load generator `argv` against `server`, reading the server's CPU time before and after.

    `mine` are the benchmark's other processes (the idle servers): their CPU time is not a disturbance.
    BenchError if the server is not running before or after the run.
    """
    server.check_alive()
    cpus = sorted({*pinning.server_cpus, *pinning.client_cpus})
    others_before, cpus_before, before = process_cpu_seconds(), cpu_times(cpus), server.cpu_seconds()
    run = run_client(argv, cpus=pinning.client_cpus, timeout=timeout)
    after, on_cpus, others_after = server.cpu_seconds(), cpu_times(cpus) - cpus_before, process_cpu_seconds()
    server.check_alive()
    others = others_cpu_seconds(others_before, others_after, [os.getpid(), *mine])
    return MeasuredRun(run, after - before, others, on_cpus.steal)


# -- idle connections -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def idle_connections(
    port: int,
    count: int,
    request: bytes,
    reply_done: Callable[[bytes], bool],
    *,
    host: str = LOOPBACK,
    batch: int = 100,
    timeout: float = 30.0,
) -> Iterator[list[socket.socket]]:
    """Open `count` connections, send `request` on each and wait for a whole reply, then hold them open.

    Connections are opened `batch` at a time and each batch is answered before the next, so the
    server has accepted and served every one of them when the block runs; they close after it.
    `reply_done(received)` says when the bytes received on one connection form the whole reply.
    """
    socks: list[socket.socket] = []
    try:
        for first in range(0, count, batch):
            group = []
            for _ in range(min(batch, count - first)):
                sock = socket.create_connection((host, port), timeout=timeout)
                socks.append(sock)
                group.append(sock)
            _exchange(group, request, reply_done, host, port, timeout)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _exchange(
    socks: list[socket.socket],
    request: bytes,
    reply_done: Callable[[bytes], bool],
    host: str,
    port: int,
    timeout: float,
) -> None:
    received = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.sendall(request)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, sock)
        deadline = time.monotonic() + timeout
        waiting = len(socks)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"{waiting} of {len(socks)} connections to {host}:{port} got no whole reply "
                    f"to {request[:40]!r} within {timeout:.0f} s"
                )
            for key, _ in sel.select(left):
                conn: socket.socket = key.data
                data = conn.recv(65536)
                if not data:
                    raise BenchError(f"{host}:{port} closed an idle connection after {received[conn]!r}")
                received[conn] += data
                if reply_done(received[conn]):
                    sel.unregister(conn)
                    waiting -= 1
    for sock in socks:
        sock.setblocking(True)


# -- the machine and interpreters ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The CPU model, how many CPUs, memory, kernel and OS: what a reader needs to weigh the numbers."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory_mib = int(psutil.virtual_memory().total) >> 20
    os_name = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip('"')
    virtual = ""
    with contextlib.suppress(OSError):
        if " hypervisor" in Path("/proc/cpuinfo").read_text():
            virtual = "virtual machine"
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_mib": memory_mib,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "os": os_name,
        "virtualized": virtual,
    }


_INTERPRETER_PROBE = """
import json, platform, sys
print(json.dumps({"implementation": platform.python_implementation(), "version": platform.python_version(),
                  "build": " ".join(sys.version.split()), "executable": sys.executable}))
"""


def interpreter_info(executable: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Implementation, version and build string of the Python at `executable`, asked by running it."""
    out = subprocess.run(
        [executable, "-c", _INTERPRETER_PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env} if env else None,
        timeout=60,
    ).stdout
    info: dict[str, str] = json.loads(out)
    return info


#: The interpreter of the compiled build that `make compiled` makes, where the benchmarks look for it.
COMPILED_PYTHON = Path(__file__).resolve().parent.parent / ".venv-compiled" / "bin" / "python"


def compiled_build_problem(python: str, modules: Sequence[str], cwd: Path) -> str:
    """Why the compiled build at `python` cannot be measured ("" when it can).

    It can when `python` runs and imports each of `modules` from an extension module (what mypyc
    builds), with -I so that neither the current folder nor PYTHONPATH brings in the source.
    """
    if not os.access(python, os.X_OK):
        return f"no compiled build at {python} (`make compiled` builds one)"
    probe = "import importlib, sys; print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))"
    try:
        run = subprocess.run(
            [python, "-I", "-c", probe, *modules], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} does not run: {e}"
    if run.returncode != 0:
        return f"{python} cannot import {', '.join(modules)}: {run.stderr.strip().splitlines()[-1:]}"
    interpreted = [m for m, f in zip(modules, run.stdout.split()) if not f.endswith((".so", ".pyd"))]
    if interpreted:
        return f"{python} imports {', '.join(interpreted)} from source, not compiled (rebuild with `make compiled`)"
    return ""


def source_revision(repo: Path, paths: Sequence[str] = ()) -> str:
    """The git commit measured, e.g. 'a1b2c3d', with ' (+ uncommitted changes)' when `paths` differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", *paths],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (+ uncommitted changes)" if dirty else "")


def this_interpreter() -> str:
    """The Python running the benchmark, e.g. 'CPython 3.11.7'."""
    return f"{platform.python_implementation()} {platform.python_version()}"


# -- results ----------------------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def short_rps(rps: float) -> str:
    """Requests per second in a few characters: '1.23M', '456k', '7.8k'."""
    return f"{rps / 1e6:.2f}M" if rps >= 1e6 else f"{rps / 1e3:.0f}k" if rps >= 1e4 else f"{rps / 1e3:.1f}k"


# -- the runners ------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    """A progress line, on stderr (stdout gets the report)."""
    print(message, file=sys.stderr, flush=True)


class Contender(Protocol):
    """What `choose_contenders` needs of a server under test."""

    key: str
    default: bool  # measured unless --servers says otherwise


C = TypeVar("C", bound=Contender)


def choose_contenders(
    every: Sequence[C],
    missing: Mapping[str, str],
    wanted: Sequence[str] | None,
    *,
    reference: str,
    reference_label: str,
) -> tuple[list[C], dict[str, str]]:
    """The servers to measure, and why any of those asked for is left out.

    `wanted` are the keys --servers names (None: every default one); `missing` says why a server
    cannot run here. SystemExit for unknown keys, and when the `reference` server, which every ratio
    is to, is not asked for or cannot run.
    """
    known = {c.key for c in every}
    if wanted is not None:
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise SystemExit(f"unknown server(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
        if reference not in wanted:
            raise SystemExit(
                f"--servers must include {reference}: every ratio is to the {reference_label} of the same run"
            )
    selected = {c.key for c in every if (c.key in wanted if wanted is not None else c.default)}
    chosen = [c for c in every if c.key in selected and c.key not in missing]
    skipped = {key: why for key, why in missing.items() if key in selected}
    if reference in skipped:
        raise SystemExit(f"cannot run the benchmark: {skipped[reference]}")
    return chosen, skipped


def display_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    repo: Path,
    placeholders: Sequence[tuple[str, str]] = (("{port}", "PORT"),),
) -> str:
    """A server's command as a person would type it in `repo`, the repository's root.

    This interpreter shows as 'python', the program without its folder, paths in `repo` relative to
    it; each placeholder is replaced in turn (e.g. '{port}' by 'PORT').
    """
    inside = str(repo) + os.sep
    words = []
    for i, word in enumerate(argv):
        word = "python" if word == sys.executable else os.path.basename(word) if i == 0 else word
        word = word.replace(inside, "")
        for placeholder, shown in placeholders:
            word = word.replace(placeholder, shown)
        words.append(word)
    return shlex.join([f"{k}={v.replace(inside, '')}" for k, v in env.items()] + words)


def add_disturbance_arguments(parser: argparse.ArgumentParser) -> None:
    """--wait-quiet, --max-other and --retries: how `DisturbedRuns` deals with other people's load."""
    parser.add_argument(
        "--wait-quiet",
        type=float,
        help="seconds to wait at the start for other processes to be idle, and again in all before measuring "
        "disturbed runs again (default 300; 10 with --quick)",
    )
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.2,
        help="measure a run again (up to --retries times) when processes outside the benchmark used more than "
        "this share of a CPU during it (default 0.2)",
    )
    parser.add_argument("--retries", type=int, default=2, help="how often to measure a disturbed run again (default 2)")


def quick_defaults(args: argparse.Namespace, repo: Path) -> None:
    """Fill in --wait-quiet and --out where they were not given: shorter and a temporary folder with --quick."""
    if args.wait_quiet is None:
        args.wait_quiet = 10.0 if args.quick else 300.0
    if args.out is None:
        args.out = str(Path(tempfile.gettempdir()) / "evio-bench-quick") if args.quick else str(repo / "docs" / "bench")


def run_benchmark(run: Callable[[], int]) -> int:
    """Call `run` with SIGTERM turned into Ctrl-C: exit status 1 when it fails, 130 when it is interrupted."""
    try:
        with terminate_becomes_interrupt():
            return run()
    except BenchError as e:
        log(f"benchmark failed: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: every server started has been stopped")
        return 130
