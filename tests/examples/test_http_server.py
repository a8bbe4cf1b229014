"""examples/http_server.py as a real process, on both backends, with real
clients: http.client, urllib, curl, and raw sockets; h11 parses every
response the tests receive (for http.client and urllib, from a copy of the
bytes they read).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import h11
import pytest
from support import (
    BAD,
    ESCAPES,
    HTTP_EXAMPLE,
    SECRET,
    WAIT,
    HttpServer,
    Reply,
    open_fds,
    pipelined,
    proc_status_kb,
    read_replies,
)

CURL = "/usr/bin/curl"
HELLO = b"hello, file\n"


class Server(HttpServer):
    """The example, with raw clients whose responses h11 reads."""

    def client(self) -> Client:
        return Client(socket.create_connection((self.host, self.port), timeout=WAIT))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(HELLO)
    return root


@pytest.fixture
def start_http(backend: str, root: Path) -> Iterator[Callable[..., Server]]:
    """Start the example on the backend under test; every server is stopped
    after the test, and must then exit with 0 and have logged no error.
    """
    started: list[Server] = []

    def start(*args: str, nofile: int | None = None) -> Server:
        extra = ["--stdlib"] if backend == "portable" else []
        server = Server(["--root", str(root), *extra, *args], nofile=nofile)
        started.append(server)
        return server

    try:
        yield start
        codes = [server.stop() for server in started]
        for server, code in zip(started, codes):
            assert code == 0, f"server exited with {code}: {server.describe()}"
            if not server.stderr_expected:
                assert server.log() == "", "the server logged errors"
    finally:
        for server in started:
            server.close()


@pytest.fixture
def server(start_http: Callable[..., Server]) -> Server:
    return start_http()


class Client:
    """A raw socket to the server; each response is parsed by h11."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, method: str = "GET", on_data: Callable[[bytes], None] | None = None) -> Reply:
        """The next response, to a request sent with `method`.

        With `on_data`, the body is handed over piece by piece instead of kept.
        """
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
        conn.send(h11.EndOfMessage())
        info: list[int] = []
        head: h11.Response | None = None
        body: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self.sock.recv(1 << 20))
            elif isinstance(event, h11.InformationalResponse):
                info.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                if on_data is None:
                    body.append(bytes(event.data))
                else:
                    on_data(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r} while reading a response")
        assert head is not None
        headers = {k.decode(): v.decode("latin-1") for k, v in head.headers}
        return Reply(head.status_code, headers, b"".join(body), info)

    def request(self, target: str, method: str = "GET") -> Reply:
        self.send(f"{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        return self.reply(method)

    def assert_closed(self) -> None:
        """The server said it closes, then closed, and sent nothing more."""
        assert self.h11.their_state is h11.MUST_CLOSE, "the response did not say Connection: close"
        assert self.sock.recv(1024) == b""


class _RecordingReader(io.RawIOBase):
    """The socket's bytes as http.client reads them, copied into `record`."""

    def __init__(self, sock: socket.socket, record: bytearray) -> None:
        self._sock, self._record = sock, record

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._sock.recv_into(b)
        self._record += memoryview(b)[:n]
        return n


class _RecordingSocket:
    """A socket whose `makefile` records what is read through it."""

    def __init__(self, sock: socket.socket, record: bytearray) -> None:
        self._sock, self._record = sock, record

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_RecordingReader(self._sock, self._record))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RecordingHTTPConnection(http.client.HTTPConnection):
    """http.client's connection, keeping the bytes of every response for h11 to parse as well."""

    record: bytearray

    def connect(self) -> None:
        super().connect()
        self.record = bytearray()
        self.sock = _RecordingSocket(self.sock, self.record)


def h11_replies(raw: bytes, methods: list[str]) -> list[tuple[int, bytes]]:
    """Status and body of each response in `raw` (to requests sent with `methods`), as h11 reads them."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    replies = []
    for method in methods:
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
        conn.send(h11.EndOfMessage())
        status, body = 0, b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA, "h11 needs more bytes than the client received"
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        replies.append((status, body))
    assert conn.next_event() in (h11.NEED_DATA, h11.PAUSED), "bytes left over after the last response"
    return replies


class RecordingHandler(urllib.request.HTTPHandler):
    """urllib's handler over `RecordingHTTPConnection`, remembering each connection."""

    def __init__(self) -> None:
        super().__init__()
        self.conns: list[RecordingHTTPConnection] = []

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def connection(host: str, **kwargs: Any) -> RecordingHTTPConnection:
            conn = RecordingHTTPConnection(host, **kwargs)
            self.conns.append(conn)
            return conn

        return self.do_open(connection, req)


def test_http_client_keep_alive(server: Server) -> None:
    conn = RecordingHTTPConnection(server.host, server.port, timeout=WAIT)
    seen: list[tuple[int, bytes]] = []
    try:
        for path, ctype, body in [
            ("/plaintext", "text/plain", b"Hello, World!"),
            ("/json", "application/json", b'{"message":"Hello, World!"}'),
            ("/plaintext", "text/plain", b"Hello, World!"),
        ]:
            conn.request("GET", path)
            resp = conn.getresponse()
            seen.append((resp.status, resp.read()))
            assert seen[-1] == (200, body)
            assert resp.getheader("Content-Type") == ctype
            assert resp.getheader("Server") == "evio"
            assert resp.getheader("Content-Length") == str(len(body))
            date = email.utils.parsedate_to_datetime(resp.getheader("Date") or "")
            assert abs(date.timestamp() - time.time()) < 5
            assert not resp.will_close
        conn.request("POST", "/echo", body=iter([b"chunk one, ", b"chunk two"]), encode_chunked=True)
        resp = conn.getresponse()
        seen.append((resp.status, resp.read()))
        assert seen[-1] == (200, b"chunk one, chunk two")
        assert h11_replies(bytes(conn.record), ["GET", "GET", "GET", "POST"]) == seen
    finally:
        conn.close()


def test_date_is_refreshed_by_tick(server: Server) -> None:
    with server.client() as c:
        first = c.request("/plaintext").headers["date"]
        deadline = time.monotonic() + 3
        while c.request("/plaintext").headers["date"] == first:
            assert time.monotonic() < deadline, "Date did not change in 3 s"
            time.sleep(0.05)


def test_urllib(server: Server) -> None:
    handler = RecordingHandler()
    opener = urllib.request.build_opener(handler)
    with opener.open(server.url("/hello.txt"), timeout=WAIT) as resp:
        assert (resp.status, resp.read(), resp.headers["Content-Type"]) == (200, HELLO, "text/plain")
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(server.url("/missing"), timeout=WAIT)
    with info.value:
        assert info.value.code == 404
        missing_body = info.value.read()
    req = urllib.request.Request(server.url("/echo"), data=b"posted", method="POST")
    with opener.open(req, timeout=WAIT) as resp:
        assert resp.read() == b"posted"
    # Every response urllib received, read again by h11.
    expected = [(200, HELLO), (404, missing_body), (200, b"posted")]
    methods = ["GET", "GET", "POST"]
    assert [h11_replies(bytes(c.record), [m])[0] for c, m in zip(handler.conns, methods)] == expected


def curl(*args: str) -> bytes:
    """curl's output with the response heads included (-i), for h11 to parse."""
    done = subprocess.run([CURL, "-sS", "-i", "--max-time", str(WAIT), *args], capture_output=True, timeout=WAIT * 2)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_curl(server: Server, root: Path, tmp_path: Path) -> None:
    [r] = read_replies(curl(server.url("/plaintext")), ["GET"])
    assert (r.status, r.body) == (200, b"Hello, World!")
    [r] = read_replies(curl("-I", server.url("/hello.txt")), ["HEAD"])
    assert (r.status, r.headers["content-length"], r.body) == (200, str(len(HELLO)), b"")
    [r] = read_replies(curl("-r", "2-4", server.url("/hello.txt")), ["GET"])
    assert (r.status, r.body, r.headers["content-range"]) == (206, HELLO[2:5], f"bytes 2-4/{len(HELLO)}")
    [r] = read_replies(curl("-z", r.headers["last-modified"], server.url("/hello.txt")), ["GET"])
    assert r.status == 304
    [r] = read_replies(curl("--http1.0", server.url("/json")), ["GET"], closed=True)
    assert (r.status, r.headers["connection"]) == (200, "close")
    [r] = read_replies(curl("-L", server.url("")), ["GET"])  # the root: no index.html, and no --autoindex
    assert r.status == 403
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(3 << 20))
    # A large upload makes curl ask for 100 Continue; chunked or not.
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        out = curl("-H", "Expect: 100-continue", "--data-binary", f"@{upload}", *extra, server.url("/echo"))
        [r] = read_replies(out, ["POST"])
        assert (r.informational, r.status, r.body == upload.read_bytes()) == ([100], 200, True)


def test_curl_reuses_a_connection(server: Server) -> None:
    out = curl("-v", server.url("/plaintext"), server.url("/json"), server.url("/hello.txt"))
    replies = read_replies(out, ["GET", "GET", "GET"])
    assert [r.body for r in replies] == [b"Hello, World!", b'{"message":"Hello, World!"}', HELLO]


def test_100_pipelined_requests_sent_a_byte_at_a_time(server: Server, root: Path) -> None:
    data, methods, expected = pipelined(100)
    with server.client() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            c.send(data[i : i + 1])
        assert [(r.status, r.body) for r in (c.reply(m) for m in methods)] == expected
        # All at once too: one packet in, the answers out together.
        c.send(data)
        assert [(r.status, r.body) for r in (c.reply(m) for m in methods)] == expected


def test_chunked_body_with_extensions_and_trailers(server: Server) -> None:
    with server.client() as c:
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4;a=1;b="quoted;\\"x\\""\r\nabcd\r\n'
            b"A\r\n0123456789\r\n"
            b"0;last\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n"
            b"GET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        assert c.reply("POST").body == b"abcd0123456789"
        assert c.reply().body == b"Hello, World!"


@pytest.mark.parametrize(
    ("request_head", "kept"),
    [
        (b"GET /plaintext HTTP/1.0\r\n", False),
        (b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n", True),
        (b"GET /hello.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n", True),
        (b"GET /plaintext HTTP/1.1\r\nHost: h\r\n", True),
        (b"GET /plaintext HTTP/1.1\r\nHost: h\r\nConnection: close\r\n", False),
        (b"GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n", False),
    ],
)
def test_keep_alive_and_close(server: Server, request_head: bytes, kept: bool) -> None:
    with server.client() as c:
        c.send(request_head + b"\r\n")
        c.reply()
        if kept:
            assert c.request("/json").status == 200
        else:
            c.assert_closed()


def test_bad_input_is_answered_and_closed_while_others_are_served(server: Server) -> None:
    cases = [(data, status) for data, status in BAD if status != 413] + [
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 16777217\r\n\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\n", 413),
    ]
    with server.client() as bystander:
        assert bystander.request("/plaintext").status == 200
        for data, status in cases:
            with server.client() as c:
                c.send(data)
                r = c.reply()
                assert r.status == status, f"{data[:60]!r} answered {r.status}, not {status}"
                assert r.headers["connection"] == "close"
                assert str(status).encode() in r.body
                c.assert_closed()
            assert bystander.request("/plaintext").status == 200


def test_max_body(start_http: Callable[..., Server]) -> None:
    server = start_http("--max-body", "10")
    with server.client() as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789")
        assert c.reply("POST").body == b"0123456789"
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n0123456789a")
        assert c.reply("POST").status == 413
        c.assert_closed()


def test_paths_escaping_the_root(server: Server, root: Path) -> None:
    (root.parent / "secret.txt").write_bytes(SECRET)
    (root.parent / "secret").mkdir()
    (root.parent / "secret" / "secret.txt").write_bytes(SECRET)
    os.symlink("../secret", root / "link-dir")
    os.symlink("../secret.txt", root / "link-file.txt")
    os.symlink(str(root.parent / "secret.txt"), root / "link-abs.txt")
    with server.client() as c:
        for target in ESCAPES:
            r = c.request(target)
            assert r.status in (403, 404), f"{target} answered {r.status}"
            assert SECRET not in r.body
        assert c.request("/hello.txt").body == HELLO


def test_unix_socket(start_http: Callable[..., Server], tmp_path: Path) -> None:
    path = str(tmp_path / "http.sock")
    server = start_http("--unixsocket", path)
    assert server.addrs[1] == f"unix:{path}"
    [r] = read_replies(curl("--unix-socket", path, "http://localhost/plaintext"), ["GET"])
    assert r.body == b"Hello, World!"
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(WAIT)
    sock.connect(path)
    with Client(sock) as c:
        assert c.request("/hello.txt").body == HELLO
    server.stop()
    assert not os.path.exists(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_server_cleanly(server: Server, root: Path, sig: int) -> None:
    with open(root / "big.bin", "wb") as f:
        f.truncate(64 << 20)
    with server.client() as idle, server.client() as streaming:
        idle.request("/plaintext")
        streaming.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        assert streaming.sock.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n")
        assert server.stop(sig) == 0
        assert idle.sock.recv(1024) == b""
    assert server.log() == ""


def test_bad_flags_are_reported() -> None:
    done = subprocess.run(
        [sys.executable, str(HTTP_EXAMPLE), "--root", "/no/such/folder"], capture_output=True, timeout=WAIT * 2
    )
    assert done.returncode == 2
    assert b"/no/such/folder" in done.stderr


def test_a_port_in_use_is_reported(server: Server) -> None:
    done = subprocess.run(
        [sys.executable, str(HTTP_EXAMPLE), "--port", str(server.port)], capture_output=True, timeout=WAIT * 2
    )
    assert done.returncode == 1
    assert f"127.0.0.1:{server.port}".encode() in done.stderr


def test_a_client_leaving_mid_stream_releases_the_file(server: Server, root: Path) -> None:
    with open(root / "big.bin", "wb") as f:
        f.truncate(256 << 20)
    with server.client() as c:
        c.request("/plaintext")
        fds = open_fds(server.pid)
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        assert c.sock.recv(1 << 16).startswith(b"HTTP/1.1 200 OK")
        assert open_fds(server.pid) == fds + 1  # the file
    deadline = time.monotonic() + WAIT
    while open_fds(server.pid) != fds - 1:  # the file and the connection are gone
        assert time.monotonic() < deadline, "the server kept the file or the connection"
        time.sleep(0.02)
    with server.client() as c:
        assert c.request("/hello.txt").body == HELLO


GIB = 1 << 30
RSS_LIMIT_KB = 64 * 1024


@pytest.mark.slow
def test_1gib_file_to_a_slow_reader_with_flat_memory(server: Server, root: Path) -> None:
    path = root / "big.bin"
    marks = {0: b"first bytes", 123_456_789: b"a mark", GIB // 2: b"the middle", GIB - 9: b"last byte"}
    with open(path, "wb") as f:
        f.truncate(GIB)  # sparse: zeros that take no disk
        for offset, mark in marks.items():
            f.seek(offset)
            f.write(mark)
    expected = hashlib.sha256()
    with open(path, "rb") as src:
        while piece := src.read(1 << 22):
            expected.update(piece)

    with server.client() as warm:
        warm.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9999999\r\n\r\n")
        assert len(warm.reply().body) == 10_000_000
    baseline = proc_status_kb(server.pid, "VmRSS")
    peak = [baseline]

    def sample() -> None:
        peak[0] = max(peak[0], proc_status_kb(server.pid, "VmRSS"))

    got = hashlib.sha256()
    received = [0]
    slow_until = time.monotonic() + 1.5
    other: dict[str, Any] = {}

    def on_data(data: bytes) -> None:
        got.update(data)
        before = received[0]
        received[0] += len(data)
        if time.monotonic() < slow_until:
            time.sleep(0.01)  # about 1.6 MB/s while h11 hands over 16 KiB at a time
            sample()
            if "thread" not in other and before > 1 << 20:
                other["thread"] = threading.Thread(target=second_client)
                other["thread"].start()
        elif before >> 26 != received[0] >> 26:
            sample()  # every 64 MiB

    def second_client() -> None:
        start = time.monotonic()
        with server.client() as c:
            other["plaintext"] = c.request("/plaintext").body
            other["file"] = c.request("/hello.txt").body
        other["seconds"] = time.monotonic() - start

    with server.client() as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n")
        c.sock.settimeout(WAIT)
        r = c.reply(on_data=on_data)
    other["thread"].join(WAIT)
    assert (r.status, r.headers["content-length"], received[0]) == (200, str(GIB), GIB)
    assert got.hexdigest() == expected.hexdigest()
    assert other["plaintext"] == b"Hello, World!" and other["file"] == HELLO
    assert other["seconds"] < 2, f"a second client waited {other['seconds']:.1f} s"
    assert peak[0] - baseline < RSS_LIMIT_KB, f"RSS grew by {(peak[0] - baseline) // 1024} MiB"
    assert proc_status_kb(server.pid, "VmHWM") - baseline < RSS_LIMIT_KB
