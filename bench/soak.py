"""The soak: many clients doing careless and hostile things to the Redis clone and the HTTP server, for a while.

    python bench/soak.py                                  # 10,000 connections, 60 s per server
    python bench/soak.py --connections 1000 --seconds 15  # what CI runs

Each server runs as its own process. N client connections (asyncio, in this
process) each pick, over and over until the time is up, one of: a request
whose answer is checked byte for byte, a big write, a pipeline never read,
a slow reader, a half-close, a reset, a connect-and-drop, a slow request
head. Meanwhile the server's descriptors and memory are sampled every
second. The time is shared by rounds of clients (three by default). After
each round the server must come back to the descriptors it had before the
clients came (within `SETTLE` seconds: lingering closes and time-outs take
a while), and its memory must not grow by more than `--rss-growth` from the
second round's end to the last's: the first round warms the allocator up,
and a leak shows as growth after that. Any wrong answer, descriptor left
behind or memory that grows fails the run (exit 1). The figures go to
`soak.json` and `soak.md` in `--out` (docs/bench by default; a temporary
folder with `--quick`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import os
import random
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Sequence

from harness import BenchError, ServerProcess, free_port, log, machine_info, memory_kib, raise_fd_limit
from report import markdown_table

REPO = Path(__file__).resolve().parent.parent
#: Seconds allowed, after the clients leave, for the server's descriptors to come back to where they were.
SETTLE = 20.0
#: A connection waits this long for any one answer before counting it as lost.
ANSWER = 30.0


@dataclasses.dataclass
class Tally:
    """What the clients did and saw."""

    actions: Counter[str] = dataclasses.field(default_factory=Counter)
    answered: Counter[str] = dataclasses.field(default_factory=Counter)  # checked answers that were right
    errors: Counter[str] = dataclasses.field(default_factory=Counter)  # refused, reset by the server...: allowed
    wrong: List[str] = dataclasses.field(default_factory=list)  # a wrong answer: never allowed

    def bad(self, what: str) -> None:
        if len(self.wrong) < 20:
            self.wrong.append(what)
        else:
            self.wrong[-1] = f"... and more ({what})"


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0), as a crashing client does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# ---- Redis --------------------------------------------------------------------------------------------

#: A client beyond --maxclients is told so and closed: a refusal, not a wrong answer.
FULL = b"-ERR max number of clients reached"


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


async def _bulk(reader: asyncio.StreamReader) -> bytes | None:
    line = await reader.readline()
    if line.startswith(b"$-1"):
        return None
    if not line.startswith(b"$"):
        raise ValueError(f"expected a bulk string, got {line[:60]!r}")
    n = int(line[1:])
    data = await reader.readexactly(n + 2)
    return data[:-2]


#: The bytes big values are cut from: one buffer for every client (10,000 of their own would be 10 GiB).
BIG = os.urandom(1 << 20)


async def redis_client(host: str, port: int, me: int, rng: random.Random, tally: Tally, until: float) -> None:
    big = BIG
    key = b"soak:%d" % me
    while time.monotonic() < until:
        action = rng.choices(
            ["ping", "setget", "big", "pipeline_unread", "reset", "halfclose", "slowread", "connect_drop"],
            weights=[30, 30, 5, 3, 8, 8, 4, 12],
        )[0]
        tally.actions[action] += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), ANSWER)
        except (OSError, asyncio.TimeoutError) as err:
            tally.errors[f"connect: {type(err).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            if action == "ping":
                writer.write(_resp(b"PING"))
                got = await asyncio.wait_for(reader.readline(), ANSWER)
                if got.startswith(FULL):
                    tally.errors["ping: refused, max clients"] += 1
                elif got != b"+PONG\r\n":
                    tally.bad(f"PING answered {got[:60]!r}")
                else:
                    tally.answered[action] += 1
            elif action in ("setget", "big"):
                value = big[: rng.randrange(1, 1 << 20)] if action == "big" else big[: rng.randrange(0, 4096)]
                writer.write(_resp(b"SET", key, value) + _resp(b"GET", key))
                got = await asyncio.wait_for(reader.readline(), ANSWER)
                if got.startswith(FULL):
                    tally.errors[f"{action}: refused, max clients"] += 1
                elif got != b"+OK\r\n":
                    tally.bad(f"SET answered {got[:60]!r}")
                elif (back := await asyncio.wait_for(_bulk(reader), ANSWER)) != value:
                    tally.bad(f"GET gave {len(back or b'')} bytes back for {len(value)} set")
                elif action == "big":  # a big value goes again: what the soak keeps stays small
                    writer.write(_resp(b"DEL", key))
                    if (got := await asyncio.wait_for(reader.readline(), ANSWER)) != b":1\r\n":
                        tally.bad(f"DEL answered {got[:60]!r}")
                    else:
                        tally.answered[action] += 1
                else:
                    tally.answered[action] += 1
            elif action == "pipeline_unread":
                writer.write(_resp(b"SET", key, big[: 1 << 16]) + _resp(b"GET", key) * 500)
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                _abort(writer)
                continue
            elif action == "reset":
                writer.write(_resp(b"SET", key, big[:1000])[: rng.randrange(1, 1000)])
                await writer.drain()
                _abort(writer)
                continue
            elif action == "halfclose":
                writer.write(_resp(b"ECHO", key))
                writer.write_eof()
                data = await asyncio.wait_for(reader.read(), ANSWER)
                if data.startswith(FULL):
                    tally.errors["halfclose: refused, max clients"] += 1
                elif data != b"$%d\r\n%s\r\n" % (len(key), key):
                    tally.bad(f"ECHO after a half-close answered {data[:60]!r}")
                else:
                    tally.answered[action] += 1
            elif action == "slowread":
                writer.write(_resp(b"SET", key, big) + _resp(b"GET", key))
                for _ in range(rng.randrange(5, 40)):
                    await asyncio.wait_for(reader.read(4096), ANSWER)
                    await asyncio.sleep(0.05)
            await writer.drain()
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as err:
            tally.errors[f"{action}: {type(err).__name__}"] += 1
            writer.transport.abort()


# ---- HTTP ---------------------------------------------------------------------------------------------


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def http_client(
    host: str, port: int, me: int, rng: random.Random, tally: Tally, until: float, files: Dict[str, bytes]
) -> None:
    names = sorted(files)
    while time.monotonic() < until:
        action = rng.choices(
            ["get", "keepalive", "post", "pipeline_unread", "slowloris", "reset", "halfclose", "slowread", "drop"],
            weights=[25, 20, 10, 3, 3, 8, 8, 4, 12],
        )[0]
        tally.actions[action] += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), ANSWER)
        except (OSError, asyncio.TimeoutError) as err:
            tally.errors[f"connect: {type(err).__name__}"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            if action in ("get", "keepalive", "halfclose"):
                right = True
                for _ in range(rng.randrange(2, 8) if action == "keepalive" else 1):
                    name = rng.choice(names)
                    writer.write(b"GET /%s HTTP/1.1\r\nHost: soak\r\n\r\n" % name.encode())
                    if action == "halfclose":
                        writer.write_eof()
                    status, body = await asyncio.wait_for(_response(reader), ANSWER)
                    if status != 200 or body != files[name]:
                        tally.bad(f"GET /{name} gave {status} with {len(body)} bytes for {len(files[name])}")
                        right = False
                if right:
                    tally.answered[action] += 1
            elif action == "post":
                body = BIG[: rng.randrange(0, 1 << 18)]
                writer.write(b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                status, back = await asyncio.wait_for(_response(reader), ANSWER)
                if status != 200 or back != body:
                    tally.bad(f"POST /echo gave {status} with {len(back)} bytes for {len(body)}")
                else:
                    tally.answered[action] += 1
            elif action == "pipeline_unread":
                writer.write(b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n" * 200)
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                _abort(writer)
                continue
            elif action == "slowloris":
                for byte in b"GET / HTTP/1.1\r\nHost: s"[: rng.randrange(1, 20)]:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.2)
                _abort(writer)
                continue
            elif action == "reset":
                writer.write(b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                await writer.drain()
                _abort(writer)
                continue
            elif action == "slowread":
                writer.write(b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n")
                for _ in range(rng.randrange(5, 40)):
                    await asyncio.wait_for(reader.read(4096), ANSWER)
                    await asyncio.sleep(0.05)
            await writer.drain()
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as err:
            tally.errors[f"{action}: {type(err).__name__}"] += 1
            writer.transport.abort()


# ---- the run ------------------------------------------------------------------------------------------

#: The actions whose answers are checked, and must mostly come.
CHECKED = {"ping", "setget", "big", "halfclose", "get", "keepalive", "post"}


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _drive(
    clients: Sequence[Callable[[], Awaitable[None]]], server: ServerProcess, samples: List[Dict[str, Any]]
) -> None:
    async def sample() -> None:
        start = time.monotonic()
        while True:
            samples.append(
                {
                    "t": round(time.monotonic() - start, 1),
                    "fds": _fds(server.pid),
                    "rss_kib": memory_kib(server.pid)["VmRSS"],
                }
            )
            await asyncio.sleep(1.0)

    sampler = asyncio.ensure_future(sample())
    try:
        await asyncio.gather(*(c() for c in clients))
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def soak(
    name: str, argv: List[str], client: Callable[..., Awaitable[None]], args: argparse.Namespace, **extra: Any
) -> Dict[str, Any]:
    """Soak one server with rounds of clients: start it, run each round, let it settle, judge; the figures."""
    port = free_port()
    # glibc raises its mmap threshold as big blocks are freed, then keeps later ones in a heap it
    # seldom gives back: fixed thresholds make freed memory leave the process, so what stays is held.
    env = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    tally = Tally()
    samples: List[Dict[str, Any]] = []
    afters: List[Dict[str, int]] = []
    ran = 0.0
    with ServerProcess(name, [a.replace("{port}", str(port)) for a in argv], port=port, env=env) as server:
        server.start()
        time.sleep(1.0)  # let start-up allocations settle before the baseline
        base_fds, base_rss = _fds(server.pid), memory_kib(server.pid)["VmRSS"]
        log(f"{name}: baseline {base_fds} descriptors, {base_rss // 1024} MiB")
        rng = random.Random(args.seed)
        for round_ in range(1, args.rounds + 1):
            until = time.monotonic() + args.seconds / args.rounds
            clients = [
                functools.partial(client, "127.0.0.1", port, me, random.Random(rng.random()), tally, until, **extra)
                for me in range(args.connections)
            ]
            log(f"{name}: round {round_}, {args.connections} connections for {args.seconds / args.rounds:g} s")
            began = time.monotonic()
            asyncio.run(_drive(clients, server, samples))
            ran += time.monotonic() - began
            if name == "redis":  # what the clients stored is not the server's to give back: empty the keyspace
                with socket.create_connection(("127.0.0.1", port), timeout=ANSWER) as c:
                    c.sendall(_resp(b"FLUSHALL"))
                    c.recv(16)
            settle_deadline = time.monotonic() + SETTLE
            while _fds(server.pid) > base_fds and time.monotonic() < settle_deadline:
                time.sleep(0.25)
            fds = _fds(server.pid)  # before the purge below, whose own connection may not be closed yet
            if name == "redis":
                # What the allocator keeps free is not held: MEMORY PURGE (as in Redis) hands it back now,
                # rather than at the clone's next purge, so what is measured is what the server holds.
                with socket.create_connection(("127.0.0.1", port), timeout=ANSWER) as c:
                    c.sendall(_resp(b"MEMORY", b"PURGE"))
                    c.recv(16)
            afters.append({"fds": fds, "rss_kib": memory_kib(server.pid)["VmRSS"]})
            log(f"{name}: after round {round_}: {afters[-1]['fds']} descriptors, {afters[-1]['rss_kib'] // 1024} MiB")
        server.check_alive()
    peak = max(samples, key=lambda s: s["rss_kib"]) if samples else {"rss_kib": base_rss, "fds": base_fds}
    result = {
        "server": name,
        "connections": args.connections,
        "seconds": round(ran, 1),
        "actions": dict(tally.actions),
        "answered": dict(tally.answered),
        "errors": dict(tally.errors),
        "wrong": tally.wrong,
        "baseline": {"fds": base_fds, "rss_kib": base_rss},
        "peak": {"fds": max(s["fds"] for s in samples) if samples else base_fds, "rss_kib": peak["rss_kib"]},
        "after": afters[-1],
        "after_first": afters[0],
        "samples": samples,
    }
    problems = []
    checked = sum(n for a, n in tally.actions.items() if a in CHECKED)
    right = sum(tally.answered.values())
    if right < checked / 2:
        # Refusals and time-outs are allowed, but a run where most checked requests got no answer
        # exercised nothing (an overloaded client, a server that stalls): say so.
        problems.append(f"only {right:,} of {checked:,} checked requests were answered")
    if tally.wrong:
        problems.append(f"{len(tally.wrong)} wrong answers, e.g. {tally.wrong[0]}")
    for round_, after in enumerate(afters, 1):
        if after["fds"] > base_fds:
            problems.append(f"{after['fds'] - base_fds} descriptors left open {SETTLE:g} s after round {round_}")
    # The first round warms the allocator up (what it keeps is its own, not held data); a leak then
    # shows as growth from the second round's end to the last's.
    growth = afters[-1]["rss_kib"] - afters[min(1, len(afters) - 1)]["rss_kib"]
    if growth > args.rss_growth * 1024:
        problems.append(f"memory grew {growth / 1024:.0f} MiB from the second round's end to the last's")
    result["problems"] = problems
    log(
        f"{name}: {sum(tally.actions.values()):,} actions, {len(tally.wrong)} wrong, RSS peak "
        f"{peak['rss_kib'] // 1024} MiB" + (f": FAILED: {'; '.join(problems)}" if problems else ": ok")
    )
    return result


def report(results: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    rows = []
    for r in results:
        rows.append(
            [
                r["server"],
                f"{r['connections']:,}",
                f"{r['seconds']:g} s",
                f"{sum(r['actions'].values()):,}",
                str(len(r["wrong"])),
                " / ".join(str(r[k]["fds"]) for k in ("baseline", "peak", "after_first", "after")),
                " / ".join(f"{r[k]['rss_kib'] / 1024:.0f}" for k in ("baseline", "peak", "after_first", "after"))
                + " MiB",
                "✅" if not r["problems"] else "❌ " + "; ".join(r["problems"]),
            ]
        )
    lines = [
        "# Soak: careless and hostile clients against the examples",
        "",
        f"Run on {meta['date']} on {meta['machine']['cpu_model']} ({meta['machine']['cpus']} CPUs), "
        f"CPython {meta['python']}. "
        "Each connection, until the time was up, picked one action after another: checked requests, big writes, "
        "pipelines never read, slow readers, half-closes, resets, connect-and-drops, slow request heads. "
        "Rounds of clients, sharing the time. Descriptors and memory: before the clients came / at their "
        "peak / after the first round left / after the last. The run fails on a wrong answer, a descriptor "
        "left open after a round, or memory that grew from the second round's end to the last's (the first "
        "round warms the allocator up: what it keeps is not held data).",
        "",
        markdown_table(
            ["server", "connections", "time", "actions", "wrong answers", "descriptors", "RSS", "verdict"],
            rows,
            right=[1, 2, 3, 4],
        ),
        "",
    ]
    for r in results:
        lines += [
            f"**{r['server']}**, actions (of which answered and checked): "
            + ", ".join(
                f"{k} {v:,}" + (f" ({r['answered'].get(k, 0):,})" if k in CHECKED else "")
                for k, v in sorted(r["actions"].items())
            )
            + ".",
            "Errors the clients saw (allowed: the server refused, reset or timed them out): "
            + (", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())) or "none")
            + ".",
            "",
        ]
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--connections", type=int, default=10_000, help="client connections per server (default 10,000)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients run, per server (default 60)")
    parser.add_argument("--servers", default="redis,http", help="which servers (default redis,http)")
    parser.add_argument(
        "--rss-growth",
        type=int,
        default=64,
        help="MiB the server's memory may grow from the second round's end to the last's (default 64)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the clients' random seed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of clients, sharing the time (default 3)")
    parser.add_argument("--quick", action="store_true", help="1,000 connections for 15 s each, to a temporary folder")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench", help="where soak.json and soak.md go")
    args = parser.parse_args(argv)
    # asyncio warns for each write to a connection the server has closed: that is what a careless client does.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    if args.quick:
        args.connections, args.seconds = 1000, 15.0
        args.out = Path(tempfile.mkdtemp(prefix="evio-soak-"))
    raise_fd_limit(2 * args.connections + 256)  # this process's and, inherited, each server's
    python = sys.executable
    results = []
    with tempfile.TemporaryDirectory(prefix="evio-soak-root-") as root:
        files = {"small": os.urandom(100), "page": os.urandom(20_000), "big": os.urandom(1 << 20)}
        for fname, data in files.items():
            Path(root, fname).write_bytes(data)
        for name in args.servers.split(","):
            if name == "redis":
                argv_ = [
                    python,
                    str(REPO / "examples" / "redis_server.py"),
                    "--port",
                    "{port}",
                    "--maxclients",
                    str(2 * args.connections + 100),
                ]
                results.append(soak("redis", argv_, redis_client, args))
            elif name == "http":
                argv_ = [
                    python,
                    str(REPO / "examples" / "http_server.py"),
                    "--port",
                    "{port}",
                    "--root",
                    root,
                    "--max-connections",
                    str(args.connections + 100),
                ]
                results.append(soak("http", argv_, http_client, args, files=files))
            else:
                raise BenchError(f"unknown server {name!r}; expected redis or http")
    meta = {"date": datetime.date.today().isoformat(), "machine": machine_info(), "python": sys.version.split()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    (args.out / "soak.md").write_text(report(results, meta) + "\n")
    log(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.md'}")
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
