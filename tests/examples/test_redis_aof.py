"""The Redis clone's AOF as a real process: a full disk, a file-size limit, the loader, rewrites, crashes.

A full disk is a small tmpfs the test mounts where it may (as root), else a
file-size limit (RLIMIT_FSIZE): either way the server's writes fail for
real. redis-server 7.0 gets the same input where the clone claims to answer
as it does. Every server is stopped (or killed) when its test ends.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, List

import pytest
import redis
from redisclone.aof import encode_command, parse_record
from support import CLONE, WAIT, Processes, RedisClone, RedisPeer, RedisServer, clone_argv, info, needs_redis, wait_for

Start = Callable[..., RedisClone]


@pytest.fixture
def start(processes: Processes) -> Start:
    """Start clones (`start(aof_path, *args)`, with the AOF on) for one test; each is stopped when it ends."""

    def run(aof: Path, *args: str, preexec: Callable[[], None] | None = None) -> RedisClone:
        argv = clone_argv(["--appendonly", "yes", "--appendfilename", str(aof), *args])
        return processes.add(RedisClone(argv, preexec=preexec))

    return run


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path | None]:
    """A tmpfs of `size` mounted for the test, or None where this process may not mount one."""
    where = Path(f"/tmp/redisclone-tmpfs-{uuid.uuid4().hex}")
    where.mkdir()
    try:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, check=False
            ).returncode
            == 0
        )
    except FileNotFoundError:
        mounted = False
    try:
        yield where if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        where.rmdir()


def fill(folder: Path) -> Path:
    """Take every free byte of the file system at `folder`; returns the filler, to delete for room."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    return filler


def records(path: Path) -> List[List[bytes]]:
    """Every record of an AOF, parsed strictly: fails on a torn or malformed one."""
    data = path.read_bytes()
    pos, out = 0, []
    while pos < len(data):
        cmd, end = parse_record(data, pos)
        assert cmd is not None, f"a torn record at offset {pos}"
        out.append(cmd)
        pos = end
    return out


def send(peer: RedisPeer, *commands: List[bytes]) -> List[bytes]:
    """Send commands on one connection and read one reply line each (values are short)."""
    with peer.connect() as sock:
        sock.sendall(b"".join(encode_command(c) for c in commands))
        buf = b""
        replies: List[bytes] = []
        while len(replies) < len(commands):
            chunk = sock.recv(1 << 16)
            assert chunk, f"closed after {replies}"
            buf += chunk
            while b"\r\n" in buf and len(replies) < len(commands):
                line, _, rest = buf.partition(b"\r\n")
                if line.startswith(b"$") and line != b"$-1":
                    n = int(line[1:])
                    if len(rest) < n + 2:
                        break
                    line, rest = line + b"\r\n" + rest[:n], rest[n + 2 :]
                replies.append(line + b"\r\n")
                buf = rest
    return replies


MISCONF_ENOSPC = b"-MISCONF Errors writing to the AOF file: No space left on device\r\n"
EXECABORT = b"-EXECABORT Transaction discarded because of previous errors.\r\n"
BIG = b"x" * 64 * 1024  # more than a tmpfs page has left after the first records


def _full_disk_session(peer: RedisPeer, folder: Path) -> List[List[bytes]]:
    """SET, fill the disk, a big SET, then the same commands; room again and a SET. The replies of each step."""
    replies = [send(peer, [b"SET", b"a", b"1"])]
    filler = fill(folder)
    replies.append(send(peer, [b"SET", b"big", BIG]))
    replies.append(send(peer, [b"SET", b"b", b"2"], [b"GET", b"a"], [b"PING"], [b"ECHO", b"e"], [b"INCR", b"n"]))
    replies.append(send(peer, [b"MULTI"], [b"SET", b"c", b"1"], [b"EXEC"]))
    filler.unlink()
    wait_for(lambda: info(peer, "persistence")["aof_last_write_status"] == "ok", "the AOF's recovery", every=0.01)
    replies.append(send(peer, [b"SET", b"d", b"4"], [b"GET", b"big"]))
    return replies


def test_a_full_disk_answers_misconf_loses_nothing_and_the_file_loads(start: Start, tmp_path: Path) -> None:
    with small_tmpfs("1m") as folder:
        if folder is None:
            pytest.skip("cannot mount a tmpfs here (not root): test_a_file_size_limit_does_the_same covers it")
        aof = folder / "a.aof"
        server = start(aof)
        replies = _full_disk_session(server, folder)
        assert replies[0] == [b"+OK\r\n"]
        assert replies[1] == [MISCONF_ENOSPC]  # the write that failed: not applied, not acknowledged
        assert replies[2] == [MISCONF_ENOSPC, b"$1\r\n1\r\n", MISCONF_ENOSPC, b"$1\r\ne\r\n", MISCONF_ENOSPC]
        assert replies[3] == [
            b"+OK\r\n",
            MISCONF_ENOSPC,
            b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        ]
        assert replies[4] == [b"+OK\r\n", b"$-1\r\n"]  # writable again; the refused value never appeared
        assert "Error writing to the AOF file: No space left on device" in server.log()
        assert "AOF write error looks solved" in server.log()
        server.kill()
        assert [c for c in records(aof) if c[0] != b"SELECT"] == [[b"SET", b"a", b"1"], [b"SET", b"d", b"4"]]
        again = start(aof)
        assert send(again, [b"MGET", b"a", b"big", b"b", b"c", b"d"])[0] == b"*5\r\n"
        client = again.client()
        try:
            assert client.mget("a", "big", "b", "c", "d", "n") == [b"1", None, None, None, b"4", None]
        finally:
            client.close()


@needs_redis
def test_a_full_disk_gets_redis_words_and_redis_refusals(tmp_path: Path) -> None:
    """What redis-server 7.0 answers in the same session: the same words, except for the write that failed."""
    with small_tmpfs("1m") as folder:
        if folder is None:
            pytest.skip("cannot mount a tmpfs here (not root)")
        with RedisServer(["--appendonly", "yes", "--dir", str(folder)], tmp_path) as peer:
            replies = _full_disk_session(peer, folder)
    assert replies[0] == [b"+OK\r\n"]
    # Redis acknowledges the write whose AOF record it could not write (it keeps it to retry);
    # the clone refuses it instead, so an acknowledged write is always in the file.
    assert replies[1] == [b"+OK\r\n"]
    assert replies[2] == [MISCONF_ENOSPC, b"$1\r\n1\r\n", MISCONF_ENOSPC, b"$1\r\ne\r\n", MISCONF_ENOSPC]
    assert replies[3] == [
        b"+OK\r\n",
        MISCONF_ENOSPC,
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    ]
    assert replies[4][0] == b"+OK\r\n"


def _fsize(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return preexec


def test_a_file_size_limit_does_the_same(start: Start, tmp_path: Path) -> None:
    aof = tmp_path / "a.aof"
    server = start(aof, preexec=_fsize(4096))
    too_big = b"-MISCONF Errors writing to the AOF file: File too large\r\n"
    assert send(server, [b"SET", b"a", b"1"]) == [b"+OK\r\n"]
    assert send(server, [b"SET", b"big", b"x" * 5000], [b"GET", b"big"], [b"SET", b"b", b"2"]) == [
        too_big,
        b"$-1\r\n",
        too_big,
    ]
    # A pipeline of writes that crosses the limit is taken back whole; what came before it stays.
    pipeline = [[b"SET", b"p%d" % i, b"y" * 100] for i in range(50)]
    wait_for(lambda: info(server, "persistence")["aof_last_write_status"] == "ok", "the probe", every=0.01)
    assert set(send(server, *pipeline)) == {too_big}
    assert send(server, [b"EXISTS", b"p0"]) == [b":0\r\n"]
    server.kill()
    assert [c for c in records(aof) if c[0] != b"SELECT"] == [[b"SET", b"a", b"1"]]
    again = start(aof)
    assert send(again, [b"DBSIZE"], [b"GET", b"a"]) == [b":1\r\n", b"$1\r\n1\r\n"]


# ---- the loader -------------------------------------------------------------------


def _start_fails(aof: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(CLONE), "--port", "0", "--appendonly", "yes", "--appendfilename", str(aof)],
        capture_output=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert proc.returncode == 1
    return proc.stderr.decode()


def test_inline_text_in_the_aof_is_refused_naming_its_offset(start: Start, tmp_path: Path) -> None:
    aof = tmp_path / "a.aof"
    server = start(aof)
    client = server.client()
    client.set("a", "1")
    client.close()
    assert server.stop() == 0
    good = aof.read_bytes()
    with open(aof, "ab") as f:
        f.write(b"FLUSHALL\r\n")  # appended by hand: not a record
    err = _start_fails(aof)
    assert f"Bad file format reading the append only file {aof} at offset {len(good)}" in err
    assert "expected '*', got 'F'" in err
    assert aof.read_bytes() == good + b"FLUSHALL\r\n"  # left as it was


def test_a_value_holding_a_command_stays_a_value_after_a_crash(start: Start, tmp_path: Path) -> None:
    aof = tmp_path / "a.aof"
    server = start(aof)
    sneaky = b"\r\n" * 100 + b"*1\r\n$8\r\nFLUSHALL\r\n"
    client = server.client()
    for i in range(5):
        client.set(f"k{i}", i)
    client.set("sneaky", sneaky)
    client.close()
    server.kill()
    again = start(aof)
    client = again.client()
    try:
        assert client.get("sneaky") == sneaky
        assert client.mget([f"k{i}" for i in range(5)]) == [b"%d" % i for i in range(5)]
    finally:
        client.close()


# ---- rewrites ----------------------------------------------------------------------------


def _fill_keyspace(server: RedisClone, keys: int, rounds: int) -> None:
    client = server.client()
    try:
        for r in range(rounds):
            pipe = client.pipeline(transaction=False)
            for i in range(keys):
                pipe.set(f"key:{i}", f"value {r} {i}")
            pipe.execute()
    finally:
        client.close()


def test_bgrewriteaof_compacts_the_file_and_keeps_writes_made_meanwhile(start: Start, tmp_path: Path) -> None:
    aof = tmp_path / "a.aof"
    server = start(aof)
    _fill_keyspace(server, 20_000, 5)
    before = aof.stat().st_size
    client = server.client()
    try:
        assert client.bgrewriteaof() is True
        with pytest.raises(redis.ResponseError, match="Background append only file rewriting already in progress"):
            client.bgrewriteaof()
        writes = 0
        while info(server, "persistence")["aof_rewrite_in_progress"] == "1":
            client.incr("during")  # served while the child writes; kept in the new file
            writes += 1
        client.incr("during")
        writes += 1
        persistence = info(server, "persistence")
        assert persistence["aof_last_bgrewrite_status"] == "ok" and persistence["aof_rewrites"] == "1"
        assert int(persistence["aof_base_size"]) <= aof.stat().st_size < before / 3
        client.set("after", "1")
    finally:
        client.close()
    assert "Background AOF rewrite finished successfully" in server.log()
    assert not [p for p in os.listdir(tmp_path) if p.startswith("temp-rewriteaof")]
    server.kill()
    again = start(aof)
    client = again.client()
    try:
        assert client.dbsize() == 20_002
        assert client.get("during") == str(writes).encode()
        assert client.get("key:19999") == b"value 4 19999" and client.get("after") == b"1"
    finally:
        client.close()


def test_the_aof_is_rewritten_on_its_own_past_the_growth_and_size_set(start: Start, tmp_path: Path) -> None:
    aof = tmp_path / "a.aof"
    server = start(aof, "--auto-aof-rewrite-percentage", "100", "--auto-aof-rewrite-min-size", "64kb")
    client = server.client()
    try:
        for i in range(3000):  # one key written over and over: ~110 KB of log for a 40-byte keyspace
            client.set("counter", i)
        wait_for(lambda: info(server, "persistence")["aof_rewrites"] == "1", "the automatic rewrite", every=0.01)
        assert aof.stat().st_size < 64 * 1024
        assert client.get("counter") == b"2999"
    finally:
        client.close()
    assert "Starting automatic rewriting of AOF on" in server.log()
    assert server.stop() == 0
    again = start(aof)
    assert send(again, [b"GET", b"counter"], [b"DBSIZE"]) == [b"$4\r\n2999\r\n", b":1\r\n"]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_server_stopped_mid_rewrite_leaves_a_file_that_loads(start: Start, tmp_path: Path, signum: int) -> None:
    aof = tmp_path / "a.aof"
    server = start(aof)
    _fill_keyspace(server, 100_000, 1)
    client = server.client()
    client.set("last", "1")
    assert client.bgrewriteaof() is True
    client.close()
    assert info(server, "persistence")["aof_rewrite_in_progress"] == "1"
    server.send_signal(signum)
    server.wait()
    again = start(aof)
    client = again.client()
    try:
        assert client.dbsize() == 100_001 and client.get("last") == b"1"
    finally:
        client.close()
    wait_for(
        lambda: not [p for p in os.listdir(tmp_path) if p.startswith("temp-rewriteaof")], "the temp file's removal"
    )


def test_appendfsync_always_and_no_are_accepted_and_reported(start: Start, tmp_path: Path) -> None:
    for policy in ("always", "no"):
        aof = tmp_path / f"{policy}.aof"
        server = start(aof, "--appendfsync", policy)
        client = server.client()
        try:
            assert client.config_get("appendfsync") == {"appendfsync": policy}
            client.set("k", policy)
        finally:
            client.close()
        assert server.stop() == 0
        assert records(aof) == [[b"SET", b"k", policy.encode()]]
