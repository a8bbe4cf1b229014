"""Address strings: parsing, binding, families, unix socket files, failures."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest
from support import Echo, Start, open_fds, with_backend

import evio
from evio.addresses import parse

# ---- parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "portable", "host", "port", "path", "reuseport"),
    [
        (":9999", "tcp", False, "", 9999, "", False),
        ("127.0.0.1:0", "tcp", False, "127.0.0.1", 0, "", False),
        ("tcp://localhost:80", "tcp", False, "localhost", 80, "", False),
        ("tcp4://:65535", "tcp4", False, "", 65535, "", False),
        ("tcp6://[::1]:5000", "tcp6", False, "::1", 5000, "", False),
        ("tcp://[::]:1", "tcp", False, "::", 1, "", False),
        ("tcp-net://:5000", "tcp", True, "", 5000, "", False),
        ("TCP4-NET://127.0.0.1:5", "tcp4", True, "127.0.0.1", 5, "", False),
        ("unix:///tmp/evio.sock", "unix", False, "", 0, "/tmp/evio.sock", False),
        ("unix-net://relative.sock", "unix", True, "", 0, "relative.sock", False),
        ("tcp://:1?reuseport=true", "tcp", False, "", 1, "", True),
        ("tcp://:1?reuseport=1", "tcp", False, "", 1, "", True),
        ("tcp://:1?reuseport=yes", "tcp", False, "", 1, "", True),
        ("tcp://:1?reuseport=no", "tcp", False, "", 1, "", False),
    ],
)
def test_parse(text: str, scheme: str, portable: bool, host: str, port: int, path: str, reuseport: bool) -> None:
    a = parse(text)
    assert (a.scheme, a.portable, a.host, a.port, a.path, a.reuseport) == (
        scheme,
        portable,
        host,
        port,
        path,
        reuseport,
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("9999", "host:port"),
        ("udp://:1", "unknown scheme"),
        ("tcp://:99999", "out of range"),
        ("tcp://:-1", "port must be"),
        ("tcp://:http", "port must be"),
        ("tcp://:", "port must be"),
        ("tcp://::1:80", "brackets"),
        ("tcp://[::1:80", "IPv6 literal"),
        ("tcp://[::1]80", ":port"),
        ("tcp://[127.0.0.1]:80", "IPv6 literal"),
        ("tcp4://[::1]:1", "tcp4 needs"),
        ("tcp6://127.0.0.1:1", "tcp6 needs"),
        ("tcp://:1?nodelay=true", "unknown option"),
        ("tcp://:1?reuseport=maybe", "reuseport takes"),
        ("tcp://:1?reuseport", "reuseport takes"),
        ("unix://", "needs a path"),
        ("unix:///tmp/a\0b", "NUL"),
        ("unix:///tmp/x.sock?reuseport=true", "TCP addresses only"),
    ],
)
def test_parse_rejects(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse(text)
    assert repr(text) in str(info.value)


def test_serve_rejects_bad_input_before_binding(tmp_path: Path) -> None:
    good = f"unix://{tmp_path / 'never.sock'}"
    with pytest.raises(ValueError, match="'tcp://:nope'"):
        evio.serve(Echo(), good, "tcp://:nope")
    assert not (tmp_path / "never.sock").exists()
    with pytest.raises(TypeError, match="Events"):
        evio.serve(object(), good)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        evio.serve(Echo(), 9999)  # type: ignore[arg-type]


# ---- binding and families ------------------------------------------------


def _echo_once(sock: socket.socket) -> None:
    with sock:
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"


def test_tcp4_tcp6_unix_and_addr_index(start_server: Start, backend: str, tmp_path: Path) -> None:
    seen: list[tuple[int, object]] = []

    class Tell(Echo):
        def opened(self, conn: evio.Conn) -> evio.events.OpenedResult:
            seen.append((conn.addr_index, conn.local_addr))
            return None

    path = str(tmp_path / "s.sock")
    st = start_server(
        Tell(),
        with_backend("tcp4://127.0.0.1:0", backend),
        with_backend("tcp6://[::1]:0", backend),
        with_backend(f"unix://{path}", backend),
    )
    a4, a6, au = st.server.addrs
    assert isinstance(a4, tuple) and isinstance(a6, tuple)
    assert a4[0] == "127.0.0.1" and a4[1] > 0
    assert a6[0] == "::1" and a6[1] > 0 and len(a6) == 4
    assert au == path
    assert st.server.num_loops == 1
    for index in (0, 1, 2):
        _echo_once(st.connect(index))
    assert [i for i, _ in seen] == [0, 1, 2]
    assert seen[2][1] == path


def test_dual_stack_accepts_both_families(start_server: Start, backend: str) -> None:
    if not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack IPv6 here")
    remotes: list[object] = []

    class Tell(Echo):
        def opened(self, conn: evio.Conn) -> evio.events.OpenedResult:
            remotes.append(conn.remote_addr)
            return None

    st = start_server(Tell(), with_backend("tcp://:0", backend))
    port = st.addr()[1]
    _echo_once(socket.create_connection(("127.0.0.1", port), timeout=5))
    _echo_once(socket.create_connection(("::1", port), timeout=5))
    assert len(remotes) == 2


def test_tcp6_is_ipv6_only(start_server: Start, backend: str) -> None:
    st = start_server(Echo(), with_backend("tcp6://:0", backend))
    port = st.addr()[1]
    _echo_once(socket.create_connection(("::1", port), timeout=5))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_host_name_resolves(start_server: Start, backend: str) -> None:
    st = start_server(Echo(), with_backend("tcp4://localhost:0", backend))
    assert st.addr()[0] == "127.0.0.1"
    _echo_once(st.connect())


def test_unresolvable_host_is_oserror_naming_it() -> None:
    with pytest.raises(OSError, match=r"no-such-host\.invalid"):
        evio.serve(Echo(), "tcp://no-such-host.invalid:0")


def test_reuseport(start_server: Start, backend: str) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT here")
    first = start_server(Echo(), with_backend("tcp4://127.0.0.1:0?reuseport=true", backend))
    port = first.addr()[1]
    second = start_server(Echo(), with_backend(f"tcp4://127.0.0.1:{port}?reuseport=yes", backend))
    assert second.addr()[1] == port
    _echo_once(first.connect())


def test_address_in_use_closes_what_was_bound(tmp_path: Path, backend: str) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    path = tmp_path / "first.sock"
    before = open_fds()
    try:
        with pytest.raises(OSError) as info:
            evio.serve(
                Echo(), with_backend(f"unix://{path}", backend), with_backend(f"tcp4://127.0.0.1:{port}", backend)
            )
        assert info.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{port}" in str(info.value)
        assert not path.exists(), "the unix listener bound first must be closed and removed"
        assert open_fds() == before
    finally:
        blocker.close()


# ---- unix socket files ---------------------------------------------------


def test_unix_stale_socket_is_replaced(start_server: Start, backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody accepts on it
    st = start_server(Echo(), with_backend(f"unix://{path}", backend))
    _echo_once(st.connect())
    st.stop()
    assert not os.path.exists(path), "serve removes its own socket file"


def test_unix_live_socket_is_in_use(start_server: Start, backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "live.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    try:
        with pytest.raises(OSError) as info:
            evio.serve(Echo(), with_backend(f"unix://{path}", backend))
        assert info.value.errno == errno.EADDRINUSE
        assert path in str(info.value)
        assert os.path.exists(path)
    finally:
        live.close()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_unix_path_holding_something_else_is_left_untouched(tmp_path: Path, backend: str, kind: str) -> None:
    target = tmp_path / "precious"
    if kind == "file":
        target.write_bytes(b"keep me")
    else:
        target.mkdir()
        (target / "inside").write_bytes(b"keep me too")
    with pytest.raises(OSError, match="precious"):
        evio.serve(Echo(), with_backend(f"unix://{target}", backend))
    if kind == "file":
        assert target.read_bytes() == b"keep me"
    else:
        assert (target / "inside").read_bytes() == b"keep me too"


def test_unix_file_replaced_by_someone_else_is_not_removed(start_server: Start, backend: str, tmp_path: Path) -> None:
    path = tmp_path / "moved.sock"
    st = start_server(Echo(), with_backend(f"unix://{path}", backend))
    os.unlink(path)
    path.write_bytes(b"another program's file")
    st.stop()
    assert path.read_bytes() == b"another program's file"


def test_unix_path_too_long_is_a_value_error(tmp_path: Path) -> None:
    path = "/tmp/" + "x" * 200 + ".sock"
    with pytest.raises(ValueError, match="at most"):
        evio.serve(Echo(), f"unix://{path}")
