"""The benchmarks' reports: the Markdown and the chart, rendered from a run's JSON and nothing else.

    python bench/report.py docs/bench/redis.json [docs/bench/http.json ...] [--out DIR]

rebuilds redis.md and redis.png beside the JSON (or in --out) without measuring: the runners write the
JSON and then call `render`. Which report a file holds is its `meta.benchmark` ("redis", "http",
"proxy"; older files are known by their name). Every result is checked against the targets in
`targets.py` as it is rendered.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import median, short_rps
from targets import check

# -- pieces every report uses -----------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """A GitHub Markdown table; columns whose index is in `right` are right-aligned."""
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines)


def check_mark(met: bool) -> str:
    """A target met or missed, as the reports show it."""
    return "✅" if met else "❌"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def run_on(meta: Mapping[str, Any]) -> str:
    """The sentence that opens a report: when and on what machine it ran (ends in '. ')."""
    m = meta["machine"]
    return (
        f"Run on {meta['date']} on {m['cpu_model']} ({m['cpus']} CPUs"
        f"{', ' + m['virtualized'] if m['virtualized'] else ''}, {m['memory_mib']:,} MiB), {m['kernel']}, {m['os']}. "
    )


def rounds_sentence(meta: Mapping[str, Any], what: str, reference: str) -> str:
    """How the rounds ran and what a figure and a ratio are."""
    rounds = meta["rounds"]
    return (
        f"{rounds} round{'s' if rounds != 1 else ''}, interleaved ({what}, in a rotated order); figures are "
        f"medians over rounds; a ratio is the median over rounds of the figure divided by {reference}'s in the "
        "same round. "
    )


def shared_machine(meta: Mapping[str, Any], aside: str = "") -> str:
    """The paragraph on how busy others kept the machine and how many runs were measured again."""
    return (
        f"The machine was shared: processes outside the benchmark used {meta['others_before']:.0%} of a CPU just "
        f"before the run; {meta['runs_measured_again']} runs were measured again because processes outside the "
        f"benchmark used more than {meta['max_other']:.0%} of a CPU during them, and "
        f"{meta['runs_still_disturbed']} of the runs kept were disturbed all the same" + (f" {aside}" if aside else "")
    ) + "."


def quick_warning(meta: Mapping[str, Any]) -> list[str]:
    if not meta["quick"]:
        return []
    return ["**Quick run** (`--quick`): short runs, few rounds; a smoke test, not a result.", ""]


def build_of(server: Mapping[str, Any]) -> str:
    """How the server's code was built: 'compiled (mypyc)', 'source' for an interpreter running it, or 'C'."""
    if "variant" in server:
        return str(server["variant"])
    return "source" if server["software"].startswith(("CPython", "PyPy")) else "C"


SERVER_COLUMNS = (("runs on", "software"), ("parser", "parser"), ("event loop", "loop"))


def servers_section(
    report: Mapping[str, Any], columns: Sequence[tuple[str, str]] = SERVER_COLUMNS, *, title: str = "Servers"
) -> list[str]:
    """What each contender runs on and how its code was built, the interpreters' builds, and what was skipped.

    `columns` are the table's columns between the build and the command: (heading, key in the server's entry).
    """
    rows = []
    for d in report["servers"].values():
        software, *rest = [d[key] for _, key in columns]
        rows.append([d["label"], software, build_of(d), *rest, f"`{d['command']}`"])
    headings = ["server", columns[0][0], "build", *[heading for heading, _ in columns[1:]], "command"]
    out = [f"## {title}", "", markdown_table(headings, rows), ""]
    builds = sorted({d["build"] for d in report["servers"].values()})
    out += ["Interpreter and program builds:", "", *[f"- `{b}`" for b in builds], ""]
    if report["skipped"]:
        out += ["Not measured: " + "; ".join(f"{k} ({why})" for k, why in report["skipped"].items()) + ".", ""]
    return out


def targets_section(
    report: Mapping[str, Any], checks: Sequence[Mapping[str, Any]], case_name: Callable[[Sequence[str]], str]
) -> list[str]:
    """A row per contender and target: met or missed, with the figures that missed."""
    labels = {key: d["label"] for key, d in report["servers"].items()}
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in checks:
        groups.setdefault((c["server"], c["target"]), []).append(c)
    order = {key: n for n, key in enumerate(labels)}
    rows = []
    for (server, target), got in sorted(groups.items(), key=lambda item: order[item[0][0]]):
        hits = sum(c["met"] for c in got)
        if len(got) == 1:
            result = f"{check_mark(got[0]['met'])} {got[0]['value']:.2f}x"
        else:
            misses = ", ".join(f"{case_name(c['case'])} {c['value']:.2f}x" for c in got if not c["met"])
            result = f"{check_mark(hits == len(got))} {hits} of {len(got)} met" + (
                f" (missed: {misses})" if misses else ""
            )
        rows.append([labels[server], target, result])
    if not rows:
        return ["## Targets", "", "No contender with a target was measured.", ""]
    return ["## Targets", "", markdown_table(["server", "target", "result"], rows), ""]


def marks(checks: Sequence[Mapping[str, Any]]) -> Callable[[str, Sequence[str]], str]:
    """A cell's mark: ✅ when every target on that contender's case is met, ❌ when one is missed, else nothing."""
    by_cell: dict[tuple[str, tuple[str, ...]], list[bool]] = {}
    for c in checks:
        by_cell.setdefault((c["server"], tuple(c["case"])), []).append(c["met"])

    def mark(server: str, case: Sequence[str]) -> str:
        got = by_cell.get((server, tuple(case)))
        return f" {check_mark(all(got))}" if got else ""

    return mark


def chart_note(meta: Mapping[str, Any]) -> str:
    """The line under a chart's title: date, machine, rounds, and whether it was a quick run."""
    m = meta["machine"]
    return (
        f"{meta['date']} · {m['cpu_model']}, {m['cpus']} CPUs · {m['kernel']} · medians of {meta['rounds']} rounds"
        + (" · QUICK RUN" if meta["quick"] else "")
    )


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class Panel:
    """One chart of a figure: a group of bars per category, one bar per series in each group."""

    title: str
    ylabel: str
    categories: Sequence[str]
    series: Mapping[str, Sequence[float]]  # series name -> one value per category (nan: no bar)
    reference: float | None = None  # draw a dashed line at this height (e.g. 1.0 for "as fast as the baseline")
    log: bool = False


@dataclass(frozen=True)
class Chart:
    """A report's figure: its panels and title."""

    title: str
    panels: Sequence[Panel]


def bar_chart(path: Path, chart: Chart, *, note: str = "", columns: int = 2) -> bool:
    """Draw `chart` as grouped bar charts into the PNG at `path`; False (and nothing written) without matplotlib.

    A series keeps its colour in every panel, whichever series a panel leaves out.
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("matplotlib is not installed: no chart drawn (pip install matplotlib)", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    panels = chart.panels
    colors: dict[str, str] = {}
    for panel in panels:
        for name in panel.series:
            colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    legend_handles: dict[str, Any] = {}
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        names = list(panel.series)
        width = 0.8 / max(len(names), 1)
        for n, name in enumerate(names):
            xs = [c + (n - (len(names) - 1) / 2) * width for c in range(len(panel.categories))]
            bars = ax.bar(xs, panel.series[name], width, label=name, color=colors[name])
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
    fig.suptitle(chart.title, fontsize=11)
    if note:
        fig.text(0.5, 0.935, note, ha="center", fontsize=8, color="dimgray")
    legend_rows = (len(legend_handles) + 3) // 4
    fig.tight_layout(rect=(0, 0.04 * legend_rows, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def bullets(lines: Sequence[str]) -> list[str]:
    return [f"- {line}" for line in lines]


# -- the Redis benchmark ----------------------------------------------------------------------------------------


def _redis_loads(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The loads, each with its tests, value size (None: redis-benchmark's 3 bytes) and whether with an AOF."""
    default_tests = meta.get("tests", ["PING_INLINE", "PING_MBULK", "SET", "GET"])
    return [
        {"tests": default_tests, "data_size": None, "aof": False, **load}  # older files: the first three loads
        for load in meta["loads"]
    ]


def _redis_reference(load: Mapping[str, Any]) -> str:
    return "redis-server with an AOF" if load["aof"] else "redis-server"


def render_redis(report: Mapping[str, Any]) -> tuple[str, Chart]:
    """The Redis report: setup, targets, one table per load, memory, and what was and was not measured."""
    meta = report["meta"]
    summary = report["summary"]["servers"]
    servers = report["servers"]
    loads = _redis_loads(meta)
    label_of = {load["key"]: load["label"] for load in loads}
    checks = check("redis", summary)
    mark = marks(checks)

    def case_name(case: Sequence[str]) -> str:
        return f"{label_of.get(case[1], case[1])} {case[2]}" if len(case) == 3 else "RSS"

    out = [
        "# Redis benchmark: the evio clone against redis-server, asyncio and uvloop",
        "",
        run_on(meta)
        + rounds_sentence(meta, "every test against every server in turn", "redis-server")
        + f"Pinning: {meta['pinning']}. Load generator: {meta['redis_benchmark']}, on loopback. "
        f"Code measured: commit {meta['revision']}.",
        "",
        shared_machine(meta, "(see the notes under each table)"),
        "",
        *quick_warning(meta),
        *servers_section(report),
        *targets_section(report, checks, case_name),
        "Ratios are to redis-server's figure (to redis-server's with an AOF for the AOF load), or to the peer "
        "named; a ratio to a peer is that of the medians.",
        "",
    ]
    for load in loads:
        runners = [key for key in servers if load["key"] in summary[key].get("loads", {})]
        if not runners:
            continue
        tests = load["tests"]
        ref = _redis_reference(load)
        if load["pipeline"] == 1:
            out += [
                f"## {load['label']}: server CPU per request",
                "",
                "At -P 1 redis-benchmark, on its one CPU, is near its limit (and so are the slower servers), so "
                "requests/s bunch together; server CPU time per request is the fair figure. Cells: CPU µs per request "
                f"(ratio to {ref}; mark: the targets, where there are some), then requests/s.",
                "",
            ]
        else:
            if load["data_size"] is not None:
                what = f"values of {load['data_size']:,} bytes"
            elif load["aof"]:
                what = "an append-only file, fsync'ed every second, for every server (each in a fresh folder)"
            else:
                what = "redis-benchmark's default 3-byte values"
            out += [
                f"## {load['label']}: requests per second",
                "",
                f"With {what}. Cells: requests/s (± half the range over rounds), ratio to {ref}; mark: the "
                "targets, where there are some. Then server CPU µs per request.",
                "",
            ]
        rows = []
        for key in runners:
            cells = [servers[key]["label"]]
            for test in tests:
                f = summary[key]["loads"][load["key"]][test]
                m = mark(key, ("loads", load["key"], test))
                if load["pipeline"] == 1:
                    cells.append(
                        f"{f['cpu_us_per_request']:.2f} µs ({f['cpu_ratio']:.2f}x){m} · {short_rps(f['rps'])}/s"
                    )
                else:
                    cells.append(
                        f"{short_rps(f['rps'])} ±{f['rps_spread'] * 100:.0f}% ({f['rps_ratio']:.2f}x){m} · "
                        f"{f['cpu_us_per_request']:.2f} µs"
                    )
            rows.append(cells)
        out += [markdown_table(["server", *tests], rows), ""]
        figures = [summary[key]["loads"][load["key"]][t] for key in runners for t in tests]
        busy = ", ".join(
            f"{servers[key]['label']} "
            f"{median([summary[key]['loads'][load['key']][t]['server_busy'] for t in tests]):.0%}"
            for key in runners
        )
        out += [
            f"Server CPU busy during these runs (median over tests; near 100%: the server was the bottleneck): {busy}. "
            f"Processes outside the benchmark used {median([f['others_cpu_share'] for f in figures]):.0%} of a CPU "
            f"during the runs (median; {max(f['others_cpu_share'] for f in figures):.0%} in the worst test's "
            f"median), the hypervisor took {median([f['steal_share'] for f in figures]):.0%}.",
            "",
        ]

    idle = meta["idle_connections"]
    with_memory = [key for key in servers if "memory" in summary[key]]
    rows = []
    for key in with_memory:
        mem = summary[key]["memory"]
        per_conn = (mem["rss_idle_kib"] - mem["rss_start_kib"]) / idle
        peak = report["peak_under_load_kib"].get(key)
        rows.append(
            [
                servers[key]["label"],
                mib(mem["rss_start_kib"]),
                mib(mem["rss_idle_kib"]) + mark(key, ("memory",)),
                f"{per_conn:.1f} KiB",
                mib(peak) if peak is not None else "—",
            ]
        )
    out += [
        f"## Memory: {idle:,} idle connections",
        "",
        f"A fresh server of each kind; {idle:,} connections opened, each sends one PING and gets its PONG, then "
        "all stay open while the server's VmRSS is read. Peak under load is the VmHWM of the servers that ran "
        "the benchmark, read at the end.",
        "",
        markdown_table(
            ["server", "RSS at start", f"RSS with {idle:,} connections", "per connection", "peak RSS under load"],
            rows,
            right=(1, 2, 3, 4),
        ),
        "",
        "## What was measured and what was not",
        "",
        *bullets(redis_notes(loads)),
        "",
    ]
    return "\n".join(out), redis_chart(report, loads)


def redis_notes(loads: Sequence[Mapping[str, Any]]) -> list[str]:
    sizes = [load["data_size"] for load in loads if load["data_size"] is not None]
    aof = any(load["aof"] for load in loads)
    measured = (
        "Measured: redis-benchmark's requests/s for PING_INLINE, PING_MBULK, SET and GET (its defaults: a 3-byte "
        "value, one key) at -P 128 and -P 1"
    )
    if sizes:
        measured += ", SET and GET at -P 16 with values of " + ", ".join(f"{s:,}" for s in sizes) + " bytes"
    if aof:
        measured += (
            ", SET and GET with an append-only file (appendfsync everysec, a fresh folder per server) for "
            "redis-server and the clone alike"
        )
    measured += (
        "; client and server on one machine over loopback; the server's CPU time (user + system, from the "
        "schedstat run time of its threads in /proc, in ns) over each run, divided by the requests; resident "
        "memory (VmRSS, VmHWM)."
    )
    not_measured = (
        "Not measured: other commands, many keys, expiry, "
        + ("appendfsync always" if aof else "persistence (AOF off for every server)")
        + (", other value sizes" if sizes else ", values other than 3 bytes")
        + ", latency percentiles, clients on another machine, real network cards, or more than one server core "
        "(every server here runs one event loop on one CPU; redis-server 7 runs its I/O on the main thread too)."
    )
    return [
        measured,
        not_measured,
        "Builds: a 'source' server runs the repository's Python as it is; 'compiled (mypyc)' runs evio and the "
        "clone's protocol package compiled with mypyc from the same source (`make compiled`), on CPython. PyPy "
        "always runs the source.",
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
    ]


def redis_chart(report: Mapping[str, Any], loads: Sequence[Mapping[str, Any]]) -> Chart:
    """Throughput relative to redis-server, -P 1 CPU per request, and memory."""
    summary = report["summary"]["servers"]
    servers = report["servers"]
    panels = []
    for load in loads:
        runners = [key for key in servers if load["key"] in summary[key].get("loads", {})]
        tests = load["tests"]
        if load["pipeline"] == 1:
            panels.append(
                Panel(
                    f"{load['label']}: server CPU per request (lower is better)",
                    "µs per request",
                    tests,
                    {
                        servers[k]["label"]: [summary[k]["loads"][load["key"]][t]["cpu_us_per_request"] for t in tests]
                        for k in runners
                    },
                )
            )
        else:
            ref = _redis_reference(load)
            panels.append(
                Panel(
                    f"{load['label']}: requests/s relative to {ref} (higher is better)",
                    f"x {ref}",
                    tests,
                    {
                        servers[k]["label"]: [summary[k]["loads"][load["key"]][t]["rps_ratio"] for t in tests]
                        for k in runners
                    },
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
                servers[k]["label"]: [
                    summary[k]["memory"]["rss_start_kib"] / 1024,
                    summary[k]["memory"]["rss_idle_kib"] / 1024,
                ]
                for k in servers
                if "memory" in summary[k]
            },
        )
    )
    return Chart("evio Redis clone vs redis-server, asyncio, uvloop (redis-benchmark, loopback)", panels)


# -- the HTTP benchmark -----------------------------------------------------------------------------------------

HTTP_LOADS = ({"key": "plain", "label": "no pipelining"}, {"key": "pipe16", "label": "16-deep pipelining"})


def render_http(report: Mapping[str, Any]) -> tuple[str, Chart]:
    """The HTTP report: setup, targets, one table per load, the large file, and what was not measured."""
    meta = report["meta"]
    summary = report["summary"]["servers"]
    servers = report["servers"]
    loads = meta.get("loads", HTTP_LOADS)
    label_of = {load["key"]: load["label"] for load in loads}
    checks = check("http", summary)
    out = [
        "# HTTP benchmark: the evio example against nginx and uvicorn",
        "",
        run_on(meta)
        + f"{meta['duration']:g} s per load and server. "
        + rounds_sentence(meta, "every load against every server in turn", "nginx")
        + f"Pinning: {meta['pinning']}. Load generator: {meta['wrk']}, 1 thread, {meta['connections']} connections, "
        "on loopback." + (f" Code measured: commit {meta['revision']}." if "revision" in meta else ""),
        "",
        shared_machine(meta),
        "",
        *quick_warning(meta),
        *servers_section(report),
        *targets_section(report, checks, lambda case: label_of.get(case[-1], case[-1])),
    ]
    for load in loads:
        out += [
            f"## /plaintext, {load['label']}",
            "",
            "Cells: requests/s (± half the range over rounds) and its ratio to nginx; server CPU µs per request "
            "and its ratio to nginx; the share of the run the server spent on its CPU (near 100%: the server "
            "was the bottleneck).",
            "",
        ]
        rows = []
        for key in servers:
            f = summary[key]["loads"][load["key"]]
            rows.append(
                [
                    servers[key]["label"],
                    f"{short_rps(f['rps'])} ±{f['rps_spread'] * 100:.0f}%",
                    f"{f['rps_ratio']:.2f}x",
                    f"{f['cpu_us_per_request']:.2f} µs",
                    f"{f['cpu_ratio']:.2f}x",
                    f"{f['server_busy']:.0%}",
                ]
                + ([f"{f['errors']} errors"] if f.get("errors") else [])
            )
        headers = ["server", "requests/s", "vs nginx", "CPU/request", "vs nginx", "server busy"]
        if any(len(r) > len(headers) for r in rows):
            headers.append("wrk errors")
            rows = [r + [""] * (len(headers) - len(r)) for r in rows]
        out += [markdown_table(headers, rows, right=(1, 2, 3, 4, 5)), ""]
        every = [summary[key]["loads"][load["key"]] for key in servers]
        out += [
            f"Processes outside the benchmark used {median([f['others_cpu_share'] for f in every]):.0%} of a CPU "
            f"during these runs (median), the hypervisor took {median([f['steal_share'] for f in every]):.0%}.",
            "",
        ]
    rows = []
    for key in servers:
        f = summary[key].get("large_file")
        if f is not None:
            rows.append(
                [
                    servers[key]["label"],
                    f"{f['mb_per_s']:,.0f} MB/s",
                    f"{f['mb_per_s_ratio']:.2f}x",
                    f"{f['cpu_seconds']:.2f} s",
                ]
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
        *bullets(http_notes(meta)),
        "",
    ]
    return "\n".join(out), http_chart(report, loads)


def http_notes(meta: Mapping[str, Any]) -> list[str]:
    depth = meta["pipeline_depth"]
    return [
        f"Measured: wrk's requests/s for GET /plaintext (13-byte body) with one wrk thread and {meta['connections']} "
        f"connections, without pipelining and {depth} requests deep; the server's user+system CPU time over each "
        "run (from /proc: the schedstat run time of its threads, in ns), divided by the requests; the time curl "
        "took to download a 1 GiB file (sparse, so read from the page cache) into /dev/null, and the server's CPU "
        "time meanwhile.",
        "Not measured: /json, other paths or methods, TLS, latency percentiles, more than one server core, clients "
        "on another machine, real network cards, or files not already in the page cache.",
        "Builds: a 'source' server runs the repository's Python as it is; 'compiled (mypyc)' runs evio compiled "
        "with mypyc from the same source (`make compiled`; the example's HTTP package stays interpreted), on "
        "CPython. PyPy always runs the source.",
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
    ]


def http_chart(report: Mapping[str, Any], loads: Sequence[Mapping[str, Any]]) -> Chart:
    """Requests/s and CPU per request for both loads, and the large file's throughput."""
    summary = report["summary"]["servers"]
    servers = report["servers"]
    cats = [load["label"] for load in loads]

    def series(figure: str) -> dict[str, list[float]]:
        return {servers[k]["label"]: [summary[k]["loads"][load["key"]][figure] for load in loads] for k in servers}

    return Chart(
        "evio HTTP example vs nginx and uvicorn (wrk -t1 -c100, loopback)",
        [
            Panel("/plaintext: requests/s (higher is better)", "requests/s", cats, series("rps")),
            Panel(
                "/plaintext: server CPU per request (lower is better)",
                "µs per request",
                cats,
                series("cpu_us_per_request"),
            ),
            Panel(
                "/plaintext: requests/s relative to nginx (higher is better)",
                "x nginx",
                cats,
                series("rps_ratio"),
                reference=1.0,
            ),
            Panel(
                "1 GiB file download (higher is better)",
                "MB/s",
                ["throughput"],
                {
                    servers[k]["label"]: [summary[k]["large_file"]["mb_per_s"]]
                    for k in servers
                    if "large_file" in summary[k]
                },
            ),
        ],
    )


# -- the proxy benchmark ----------------------------------------------------------------------------------------

DIRECTION_LABELS = {"push": "client → backend", "pull": "backend → client"}


def _proxy_groups(meta: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], list[str]]]:
    """Each load with its tests: SET and GET with keep-alive, the connect test (GET) without."""
    return [(load, list(meta["tests"]) if load.get("keepalive", True) else ["GET"]) for load in meta["loads"]]


def render_proxy(report: Mapping[str, Any]) -> tuple[str, Chart]:
    """The proxy report: setup, targets, one section per test, memory, and what was and was not measured."""
    meta = report["meta"]
    summary = report["summary"]["servers"]
    servers = report["servers"]
    loads = {load["key"]: load for load in meta["loads"]}
    checks = check("proxy", summary)
    mark = marks(checks)
    clients = loads[next(iter(loads))]["clients"]

    def case_name(case: Sequence[str]) -> str:
        group, test = case[-2], case[-1]
        if group == "bandwidth":
            return DIRECTION_LABELS[test]
        load = loads[group]
        return f"-k 0 {test}" if not load.get("keepalive", True) else f"-P {load['pipeline']} {test}"

    checks_on = "every 2 s on both (HAProxy `check inter 2s rise 2 fall 3`, evio `--check-interval 2`)"
    out = [
        "# TCP load-balancer benchmark: the evio proxy against HAProxy",
        "",
        run_on(meta)
        + rounds_sentence(meta, "every test through every proxy in turn", "HAProxy")
        + f"Pinning: {meta['pinning']}. Backend: {meta['backend']}, one for all. Load generator: "
        f"{meta['redis_benchmark']}, {clients} clients, on loopback. Health checks: "
        + (
            checks_on
            if meta["checks"]
            else "off on both (HAProxy's server line has no `check`; evio `--check-interval 0`)"
        )
        + f". Code measured: commit {meta['revision']}.",
        "",
        shared_machine(meta),
        "",
        *quick_warning(meta),
        *servers_section(report, (("runs on", "software"), ("event loop", "loop")), title="Proxies"),
        "HAProxy's configuration (BACKEND is redis-server's port, or the bulk peer's):",
        "",
        "```",
        meta["haproxy_config"].rstrip(),
        "```",
        "",
        *targets_section(report, checks, case_name),
        "Connection rate and memory have no target; the tables below have every proxy's ratios.",
        "",
    ]

    cases = [(load["key"], t) for load, tests in _proxy_groups(meta) if load.get("keepalive", True) for t in tests]
    headers = ["proxy", *[case_name(c) for c in cases]]
    rps_rows, cpu_rows = [], []
    for key in servers:
        rps_cells, cpu_cells = [servers[key]["label"]], [servers[key]["label"]]
        for group, test in cases:
            f = summary[key]["tests"][group][test]
            m = mark(key, ("tests", group, test))
            rps_cells.append(f"{short_rps(f['rps'])} ±{f['rps_spread'] * 100:.0f}% ({f['rps_ratio']:.2f}x){m}")
            cpu_cells.append(f"{f['cpu_us_per_request']:.2f} µs ({f['cpu_ratio']:.2f}x)")
        rps_rows.append(rps_cells)
        cpu_rows.append(cpu_cells)
    right = tuple(range(1, len(headers)))
    every = [summary[k]["tests"][g][t] for k in servers for g, t in cases]
    out += [
        f"## Request rate: redis-benchmark -t set,get, {clients} clients",
        "",
        "Requests/s (± half the range over rounds) and the ratio to HAProxy (mark: the targets on that cell):",
        "",
        markdown_table(headers, rps_rows, right=right),
        "",
        "CPU µs per request of the proxy (for the direct row: of redis-server) and the ratio to HAProxy's:",
        "",
        markdown_table(headers, cpu_rows, right=right),
        "",
        f"Processes outside the benchmark used {median([f['others_cpu_share'] for f in every]):.0%} of a CPU during "
        f"these runs (median; {max(f['others_cpu_share'] for f in every):.0%} in the worst test's median), the "
        f"hypervisor took {median([f['steal_share'] for f in every]):.0%}.",
        "",
    ]

    for load, tests in _proxy_groups(meta):
        if load.get("keepalive", True):
            continue
        test = tests[0]
        rows = []
        for key in servers:
            f = summary[key]["tests"][load["key"]][test]
            rows.append(
                [
                    servers[key]["label"],
                    f"{f['rps']:,.0f} ±{f['rps_spread'] * 100:.0f}%",
                    f"{f['rps_ratio']:.2f}x",
                    f"{f['cpu_us_per_request']:.1f} µs",
                    f"{f['cpu_ratio']:.2f}x",
                ]
            )
        out += [
            f"## Connection rate: redis-benchmark -t {test.lower()} {load['label']}",
            "",
            f"{load['requests_per_test']:,} connections per run, each sending one {test} and closing after its reply.",
            "",
            markdown_table(
                ["proxy", "connections/s", "vs HAProxy", "CPU per connection", "vs HAProxy"], rows, right=(1, 2, 3, 4)
            ),
            "",
        ]

    size = meta["transfer_bytes"]
    rows = []
    for key in servers:
        cells = [servers[key]["label"]]
        for d in DIRECTION_LABELS:
            f = summary[key]["tests"]["bandwidth"][d]
            cells += [
                f"{f['mb_per_s']:,.0f} MB/s ±{f['mb_per_s_spread'] * 100:.0f}%",
                f"{f['mb_per_s_ratio']:.2f}x" + mark(key, ("tests", "bandwidth", d)),
            ]
        cells.append(
            " / ".join(
                f"{summary[key]['tests']['bandwidth'][d]['cpu_seconds_per_gib']:.2f} s" for d in DIRECTION_LABELS
            )
        )
        peak = summary[key]["peak_rss"]
        cells += [mib(peak["start_kib"]), mib(peak["peak_kib"])] if peak else ["—", "—"]
        rows.append(cells)
    gib = f"{size / (1 << 30):g} GiB"
    out += [
        f"## Bandwidth: {gib} each way",
        "",
        f"One connection; {gib} pushed from the client to the bulk peer, then {gib} pulled back, through a proxy of "
        "each kind that serves only these transfers (its own instance, in front of the bulk peer). CPU per GiB is "
        "the proxy's (the direct row's: the bulk peer's). Peak RSS is that proxy's VmHWM after every transfer of "
        "the run (warm-up included); RSS at start is read when it first accepts.",
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
    for key in servers:
        mem = summary[key]["memory"]
        per_conn = (mem["rss_idle_kib"] - mem["rss_start_kib"]) / idle
        rows.append([servers[key]["label"], mib(mem["rss_start_kib"]), mib(mem["rss_idle_kib"]), f"{per_conn:.1f} KiB"])
    out += [
        f"## Memory: {idle:,} idle client connections ({2 * idle:,} sockets)",
        "",
        f"A fresh proxy of each kind; {idle:,} clients connect through it, each sends one PING and gets its PONG "
        "from redis-server (so the proxy holds both sockets of every pair), then all stay open while the proxy's "
        f"VmRSS is read. The direct row is a fresh redis-server holding {idle:,} clients.",
        "",
        markdown_table(["proxy", "RSS at start", f"RSS with {idle:,} clients", "per client"], rows, right=(1, 2, 3)),
        "",
    ]

    groups = [(load["key"], tests) for load, tests in _proxy_groups(meta)] + [("bandwidth", list(DIRECTION_LABELS))]
    rows = []
    for key in servers:
        if key == "direct":
            continue
        rows.append(
            [servers[key]["label"]]
            + [f"{summary[key]['tests'][g][t]['server_busy']:.0%}" for g, tests in groups for t in tests]
        )
    busy_headers = ["proxy", *[case_name((g, t)) for g, tests in groups for t in tests]]
    out += [
        "## Who limits whom",
        "",
        "The share of each run's wall time the proxy spent on its CPU: near 100%, the proxy was the bottleneck; "
        "well below, the other CPU (load generator and backend) was, or the round trips were.",
        "",
        markdown_table(busy_headers, rows, right=tuple(range(1, len(busy_headers)))),
        "",
        "## What limits the evio proxy",
        "",
        PROXY_PROFILE[0],
        "",
        *bullets(PROXY_PROFILE[1:]),
        "",
        "## What was measured and what was not",
        "",
        *bullets(PROXY_NOTES),
        "",
    ]
    return "\n".join(out), proxy_chart(report, groups, case_name)


PROXY_NOTES = (
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
PROXY_PROFILE = (
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
    "Since that profile (commit 10433bd, measured in the runs above): the proxy asks for `reuse_input_buffer` "
    "and writes the loop's buffer straight out; `Conn.write` on the loop's thread goes straight to the loop's "
    "write; `postwrite` returning None costs no check; a new connection is registered with the poller once, and a "
    "closed one is not unregistered first (fewer epoll_ctl calls); a dial's address is parsed once, and an IP "
    "literal is not passed to getaddrinfo. callgrind counted 42,100 instructions per proxied -P 1 request, from "
    "51,100.",
)


def proxy_chart(
    report: Mapping[str, Any],
    groups: Sequence[tuple[str, Sequence[str]]],
    case_name: Callable[[Sequence[str]], str],
) -> Chart:
    """Request and connection rates relative to HAProxy, proxy CPU per request, bandwidth, and memory."""
    summary = report["summary"]["servers"]
    servers = report["servers"]
    meta = report["meta"]
    flat = [(g, t) for g, tests in groups if g != "bandwidth" for t in tests]
    cats = [case_name(c) for c in flat]
    nan = math.nan

    def proxy_only(key: str, values: list[float]) -> list[float]:
        """A proxy's bars; none for the direct row (kept in the series so that colours match across panels)."""
        return values if key != "direct" else [nan] * len(values)

    return Chart(
        "evio TCP proxy vs HAProxy (redis-benchmark and 1 GiB transfers through the proxy, loopback)",
        [
            Panel(
                "Requests (connections at -k 0) per second relative to HAProxy (higher is better)",
                "x HAProxy",
                cats,
                {servers[k]["label"]: [summary[k]["tests"][g][t]["rps_ratio"] for g, t in flat] for k in servers},
                reference=1.0,
            ),
            Panel(
                "Proxy CPU per request (per connection at -k 0; lower is better)",
                "µs",
                cats,
                {
                    servers[k]["label"]: proxy_only(
                        k, [summary[k]["tests"][g][t]["cpu_us_per_request"] for g, t in flat]
                    )
                    for k in servers
                },
                log=True,
            ),
            Panel(
                f"Bandwidth, {meta['transfer_bytes'] / (1 << 30):g} GiB each way (higher is better)",
                "MB/s",
                list(DIRECTION_LABELS.values()),
                {
                    servers[k]["label"]: [summary[k]["tests"]["bandwidth"][d]["mb_per_s"] for d in DIRECTION_LABELS]
                    for k in servers
                },
            ),
            Panel(
                "Proxy resident memory (lower is better)",
                "MiB",
                (f"{meta['idle_connections']:,} idle clients", "peak, bandwidth test"),
                {
                    servers[k]["label"]: proxy_only(
                        k,
                        [
                            summary[k]["memory"]["rss_idle_kib"] / 1024,
                            summary[k]["peak_rss"].get("peak_kib", nan) / 1024,
                        ],
                    )
                    for k in servers
                },
            ),
        ],
    )


# -- rendering a file -------------------------------------------------------------------------------------------

RENDERERS: dict[str, Callable[[Mapping[str, Any]], tuple[str, Chart]]] = {
    "redis": render_redis,
    "http": render_http,
    "proxy": render_proxy,
}


def benchmark_of(report: Mapping[str, Any], path: Path) -> str:
    """Which benchmark a report is: its `meta.benchmark`, else its file's name (redis.json)."""
    kind = str(report["meta"].get("benchmark", path.stem))
    if kind not in RENDERERS:
        raise SystemExit(
            f"{path}: not a benchmark report (meta.benchmark is {kind!r}; expected one of {sorted(RENDERERS)})"
        )
    return kind


def render_text(report: Mapping[str, Any], kind: str) -> tuple[str, Chart]:
    """The Markdown and the chart of a report of benchmark `kind`."""
    return RENDERERS[kind](report)


def render(path: Path, out: Path | None = None) -> list[Path]:
    """Write the Markdown and the chart of the report in the JSON at `path` into `out` (default: beside it).

    Returns the files written (the chart is left out without matplotlib).
    """
    report = json.loads(path.read_text())
    kind = benchmark_of(report, path)
    markdown, chart = render_text(report, kind)
    folder = out if out is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{kind}.md"]
    written[0].write_text(markdown)
    png = folder / f"{kind}.png"
    if bar_chart(png, chart, note=chart_note(report["meta"])):
        written.append(png)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="a benchmark's JSON (redis.json, http.json, proxy.json)")
    parser.add_argument("--out", type=Path, help="folder for the .md and the .png (default: beside each JSON)")
    args = parser.parse_args(argv)
    for path in args.json:
        for written in render(path, args.out):
            print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
