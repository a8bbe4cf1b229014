"""The echo example, run as a user runs it: a real process and real clients."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from echo_server import WELCOME
from support import WAIT, Processes, ServerProcess, cpu_seconds, recv_exactly, recv_until_closed

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "echo_server.py"


class EchoServer(ServerProcess):
    """`examples/echo_server.py ARGS`, ready once it printed the line of its port (and of its unix socket)."""

    def __init__(self, *args: str) -> None:
        super().__init__([sys.executable, str(SCRIPT), *args], ready=r"echo server started on port (\d+)")
        assert self.ready_match is not None
        self.port = int(self.ready_match.group(1))
        if "--unix" in args:
            self.wait_stdout(r"echo server started on unix socket .*")
        self.lines = self.stdout().splitlines(keepends=True)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        assert recv_exactly(s, len(WELCOME)) == WELCOME
        return s


@pytest.fixture
def echo(processes: Processes) -> Callable[..., EchoServer]:
    """Start echo servers for one test; each is stopped when it ends."""
    return lambda *args: processes.add(EchoServer(*args))


@pytest.mark.parametrize("flags", [(), ("--stdlib",)])
def test_welcome_echo_quit_shutdown(echo: Callable[..., EchoServer], flags: tuple[str, ...]) -> None:
    server = echo("--port", "0", *flags)
    with server.connect() as a, server.connect() as b:
        a.sendall(b"hello\r\n")
        assert recv_exactly(a, 7) == b"hello\r\n"
        a.sendall(b"quit\r\n")
        assert recv_until_closed(a) == b"bye\n"
        b.sendall(b"shutdown\n")
        assert recv_until_closed(b) == b"shutting down\n"
    assert server.wait() == 0


def test_unix_listener_trace_and_sigterm(echo: Callable[..., EchoServer], tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    server = echo("--port", "0", "--unix", str(path), "--trace")
    assert server.lines[1].strip() == f"echo server started on unix socket {path}"
    with socket.socket(socket.AF_UNIX) as u:
        u.settimeout(WAIT)
        u.connect(str(path))
        assert recv_exactly(u, len(WELCOME)) == WELCOME
        u.sendall(b"over unix")
        assert recv_exactly(u, 9) == b"over unix"
    assert server.stop(signal.SIGTERM) == 0
    assert not path.exists()
    log = server.log()
    assert "opened" in log and "9 bytes b'over unix'" in log


def test_reuseport_lets_two_servers_share_a_port(echo: Callable[..., EchoServer]) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT here")
    first = echo("--port", "0", "--reuseport")
    second = echo("--port", str(first.port), "--reuseport")
    assert second.port == first.port
    with second.connect() as c:
        c.sendall(b"x")
        assert c.recv(1) == b"x"


def test_port_in_use_is_a_clear_error(echo: Callable[..., EchoServer]) -> None:
    first = echo("--port", "0")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--port", str(first.port)], capture_output=True, text=True, timeout=WAIT
    )
    assert proc.returncode == 1
    assert f":{first.port}" in proc.stderr and "in use" in proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("flags", [(), ("--stdlib",)])
def test_an_idle_server_uses_no_cpu(echo: Callable[..., EchoServer], flags: tuple[str, ...]) -> None:
    server = echo("--port", "0", *flags)
    clients = [server.connect() for _ in range(10)]
    try:
        time.sleep(0.3)
        before = cpu_seconds(server.pid)
        time.sleep(1.5)
        assert cpu_seconds(server.pid) - before <= 0.05
    finally:
        for c in clients:
            c.close()
