"""Reusable pieces of the benchmark suites: server processes, CPU and memory sampling, idle connections, results.

Nothing here knows about Redis or HTTP. A suite starts each server under test with `ServerProcess`
(its own process group, pinned with `taskset`, ready once its port accepts connections), runs a load
generator with `run_client` on another CPU, reads the server's CPU time and memory from `/proc`
around each run, and writes what it found with `write_json`, `markdown_table` and `bar_chart`.
Linux only: the figures come from `/proc`.
"""

from __future__ import annotations

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of utime and stime in /proc/PID/stat


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


# -- /proc ------------------------------------------------------------------------------------------------------


def parse_proc_stat_ticks(text: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/PID/stat.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
    fields are counted from the last ')'. utime and stime are fields 14 and 15.
    """
    after_name = text[text.rindex(")") + 2 :].split()
    return int(after_name[11]) + int(after_name[12])


def parse_proc_status_kib(text: str) -> dict[str, int]:
    """The `Vm*` sizes, in KiB, from the text of /proc/PID/status (e.g. {"VmRSS": 10240, "VmHWM": 12288})."""
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.startswith("Vm") and value.strip().endswith("kB"):
            sizes[name] = int(value.split()[0])
    return sizes


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, all its live threads together.

    It is read in nanoseconds from each thread's /proc/PID/task/TID/schedstat (the run time that
    utime and stime are scaled from), where the kernel has it: /proc/PID/stat counts in clock
    ticks of 10 ms, too coarse for runs of a second. A thread that has exited no longer counts;
    the servers measured here run one thread.
    """
    if not Path(f"/proc/{pid}/schedstat").exists():
        return parse_proc_stat_ticks(Path(f"/proc/{pid}/stat").read_text()) / CLOCK_TICKS
    total_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # the thread ended just now
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total_ns / 1e9


def memory_kib(pid: int) -> dict[str, int]:
    """Process `pid`'s memory sizes in KiB: VmRSS is the resident set now, VmHWM its peak so far."""
    return parse_proc_status_kib(Path(f"/proc/{pid}/status").read_text())


@dataclass(frozen=True)
class CpuTimes:
    """What some CPUs have done since boot, in seconds, from /proc/stat."""

    busy: float  # user, nice, system, irq and softirq time: anything but idle, iowait and steal
    steal: float  # time the hypervisor gave the CPUs to another guest

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy - earlier.busy, self.steal - earlier.steal)


def parse_proc_stat_cpus(text: str, cpus: Sequence[int]) -> CpuTimes:
    """Busy and stolen time of `cpus` together from the text of /proc/stat (counted in clock ticks there)."""
    wanted = {f"cpu{n}" for n in cpus}
    busy = steal = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if name in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, stolen = (int(f) for f in fields[:8])
            busy += user + nice + system + irq + softirq
            steal += stolen
    return CpuTimes(busy / CLOCK_TICKS, steal / CLOCK_TICKS)


def cpu_times(cpus: Sequence[int]) -> CpuTimes:
    """Busy and stolen time of `cpus` so far; around a run, with a pinned server's own CPU time, it tells
    how much else ran on the server's CPU (other processes, interrupts) and how much the hypervisor took."""
    return parse_proc_stat_cpus(Path("/proc/stat").read_text(), cpus)


_KERNEL_THREAD = 0x00200000  # PF_KTHREAD in the flags field of /proc/PID/stat


def process_cpu_seconds() -> dict[int, float]:
    """CPU time so far of every user-space process on the machine, by pid (kernel threads left out).

    Two snapshots around a run tell how much CPU other people's processes took meanwhile: on a
    shared machine, the difference between a clean measurement and a skewed one. Kernel threads
    are left out because they do the benchmark's own network work (softirqs) too.
    """
    times: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:  # ended just now
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if not int(fields[6]) & _KERNEL_THREAD:
            times[int(name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def others_cpu_seconds(before: Mapping[int, float], after: Mapping[int, float], mine: Iterable[int]) -> float:
    """CPU time that processes other than `mine` used between two `process_cpu_seconds` snapshots.

    A process that started in between counts in full; one that ended in between is missed.
    """
    skip = set(mine)
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in skip)


def wait_until_quiet(cpus: Sequence[int], *, below: float, timeout: float, sample: float = 1.0) -> float:
    """Wait up to `timeout` seconds for `cpus` to be busy less than `below` of a `sample`-second window.

    Returns the busy share last seen (per CPU, 0.0 to 1.0), whether or not it got below. Busy time
    includes kernel threads, interrupts and the benchmark's own processes; `wait_for_others` counts
    only processes that are not the benchmark's.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = cpu_times(cpus)
        time.sleep(sample)
        share = (cpu_times(cpus) - before).busy / sample / max(len(cpus), 1)
        if share < below or time.monotonic() >= deadline:
            return share


def wait_for_others(mine: Iterable[int], *, below: float, timeout: float, sample: float = 1.0) -> float:
    """Wait up to `timeout` seconds for processes other than `mine` to use less than `below` of a CPU.

    Returns the share last seen (of one CPU, over a `sample`-second window), whether or not it got
    below: on a shared machine a benchmark had better run when no one else is running one, and say
    so when it could not.
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
    memory_mib = 0
    with contextlib.suppress(OSError, ValueError):
        memory_mib = (
            parse_proc_status_kib(Path("/proc/meminfo").read_text().replace("MemTotal", "VmTotal"))["VmTotal"] // 1024
        )
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


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """A GitHub Markdown table; columns whose index is in `right` are right-aligned."""
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")  # tab10


@dataclass(frozen=True)
class Panel:
    """One chart of a figure: a group of bars per category, one bar per series in each group."""

    title: str
    ylabel: str
    categories: Sequence[str]
    series: Mapping[str, Sequence[float]]  # series name -> one value per category (nan: no bar)
    reference: float | None = None  # draw a dashed line at this height (e.g. 1.0 for "as fast as the baseline")
    log: bool = False


def bar_chart(path: Path, panels: Sequence[Panel], *, title: str, note: str = "", columns: int = 2) -> bool:
    """Draw `panels` as grouped bar charts into the PNG at `path`; False (and nothing written) without matplotlib."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("matplotlib is not installed: no chart drawn (pip install matplotlib)", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    colors = PALETTE
    legend_handles: dict[str, Any] = {}
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        names = list(panel.series)
        width = 0.8 / max(len(names), 1)
        for n, name in enumerate(names):
            xs = [c + (n - (len(names) - 1) / 2) * width for c in range(len(panel.categories))]
            bars = ax.bar(xs, panel.series[name], width, label=name, color=colors[n % len(colors)])
            legend_handles.setdefault(name, bars)
        if panel.reference is not None:
            ax.axhline(panel.reference, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(panel.categories)))
        ax.set_xticklabels(panel.categories)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        if panel.log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    fig.legend(
        list(legend_handles.values()),
        list(legend_handles),
        loc="lower center",
        ncol=min(len(legend_handles), 4),
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(title, fontsize=11)
    if note:
        fig.text(0.5, 0.935, note, ha="center", fontsize=8, color="dimgray")
    legend_rows = (len(legend_handles) + 3) // 4
    fig.tight_layout(rect=(0, 0.04 * legend_rows, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
