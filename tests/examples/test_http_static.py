"""Static files through `HTTPConnection`: types, dates, ranges, listings,
dot-files, errors from the OS, and paths that try to leave the root.
"""

from __future__ import annotations

import email.utils
import errno
import os
from pathlib import Path
from typing import Any

import pytest
from minihttp import App, HTTPConnection, static
from support import ESCAPES, SECRET, Reply, one_reply, open_fds, read_replies

TEXT = b"0123456789abcdefghij"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root folder next to a folder and a file holding a secret."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "secret.txt").write_bytes(SECRET)
    (root / "text.txt").write_bytes(TEXT)
    (root / "sub").mkdir()
    (root / "sub" / "inner.json").write_bytes(b"{}")
    return root


def get(
    root: Path, target: str | bytes, *fields: str, method: str = "GET", autoindex: bool = False, dotfiles: bool = False
) -> Reply:
    """The answer to one request, from an `App` with `autoindex` and `dotfiles` as given."""
    raw = target.encode() if isinstance(target, str) else target
    head = b"%s %s HTTP/1.1\r\nHost: h\r\n" % (method.encode(), raw)
    head += b"".join(f.encode() + b"\r\n" for f in fields)
    http = HTTPConnection(App(str(root), autoindex=autoindex, dotfiles=dotfiles))
    out = http.receive(head + b"\r\n")
    while http.working:  # a listing of a large folder is built in steps
        out += http.resume()
    return one_reply(out, method)


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.txt", "text/plain"),
        ("a.html", "text/html"),
        ("a.json", "application/json"),
        ("a.png", "image/png"),
        ("a.tar.gz", "application/gzip"),
        ("no-extension", "application/octet-stream"),
    ],
)
def test_content_type_from_mimetypes(root: Path, name: str, ctype: str) -> None:
    (root / name).write_bytes(b"x")
    r = get(root, "/" + name)
    assert (r.status, r.headers["content-type"], r.body) == (200, ctype, b"x")


def test_a_file_and_its_headers(root: Path) -> None:
    r = get(root, "/text.txt")
    assert (r.status, r.body) == (200, TEXT)
    mtime = os.stat(root / "text.txt").st_mtime
    assert r.headers["last-modified"] == email.utils.formatdate(mtime, usegmt=True)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(len(TEXT))
    head = get(root, "/text.txt", method="HEAD")
    assert (head.status, head.body, head.headers) == (200, b"", {**r.headers, "date": head.headers["date"]})


def test_if_modified_since(root: Path) -> None:
    modified = get(root, "/text.txt").headers["last-modified"]
    r = get(root, "/text.txt", f"If-Modified-Since: {modified}")
    assert (r.status, r.body, r.headers["last-modified"]) == (304, b"", modified)
    assert "content-length" not in r.headers
    assert get(root, "/text.txt", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT").status == 200
    assert get(root, "/text.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT").status == 304
    assert get(root, "/text.txt", "If-Modified-Since: yesterday").status == 200


@pytest.mark.parametrize(
    ("spec", "status", "body", "content_range"),
    [
        ("bytes=0-4", 206, TEXT[0:5], "bytes 0-4/20"),
        ("bytes=5-", 206, TEXT[5:], "bytes 5-19/20"),
        ("bytes=-3", 206, TEXT[-3:], "bytes 17-19/20"),
        ("bytes=-100", 206, TEXT, "bytes 0-19/20"),
        ("bytes=10-1000", 206, TEXT[10:], "bytes 10-19/20"),
        ("bytes=19-19", 206, TEXT[19:], "bytes 19-19/20"),
        ("BYTES = 1-2", 206, TEXT[1:3], "bytes 1-2/20"),
        ("bytes=20-", 416, None, "bytes */20"),
        ("bytes=-0", 416, None, "bytes */20"),
        ("bytes=0-1,5-6", 200, TEXT, None),  # several ranges: ignored, the whole file
        ("bytes=5-1", 200, TEXT, None),  # invalid: ignored
        ("bytes=x-1", 200, TEXT, None),
        ("lines=1-2", 200, TEXT, None),
    ],
)
def test_single_range(root: Path, spec: str, status: int, body: bytes | None, content_range: str | None) -> None:
    r = get(root, "/text.txt", f"Range: {spec}")
    assert r.status == status
    assert r.headers.get("content-range") == content_range
    if body is not None:
        assert r.body == body
        assert r.headers["content-length"] == str(len(body))


def test_if_range(root: Path) -> None:
    modified = get(root, "/text.txt").headers["last-modified"]
    assert get(root, "/text.txt", "Range: bytes=0-0", f"If-Range: {modified}").status == 206
    assert get(root, "/text.txt", "Range: bytes=0-0", 'If-Range: "some-etag"').status == 200


def test_range_of_a_large_file_is_streamed(root: Path) -> None:
    data = os.urandom(600_000)
    (root / "big.bin").write_bytes(data)
    http = HTTPConnection(App(str(root)))
    out = http.receive(b"GET /big.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=1000-\r\n\r\n")
    while http.streaming:
        assert http.wants_more(0)
        out += http.resume()
    r = one_reply(out)
    assert (r.status, r.headers["content-range"], r.body == data[1000:]) == (206, "bytes 1000-599999/600000", True)


def test_folder_index_lists_files_escaped_and_linked(root: Path) -> None:
    (root / "<b>&.txt").write_bytes(b"")
    (root / "a b.txt").write_bytes(b"")
    r = get(root, "/", autoindex=True)
    assert (r.status, r.headers["content-type"]) == (200, "text/html; charset=utf-8")
    page = r.body.decode()
    assert '<a href="%3Cb%3E%26.txt">&lt;b&gt;&amp;.txt</a>' in page
    assert '<a href="a%20b.txt">a b.txt</a>' in page
    assert '<a href="sub/">sub/</a>' in page
    assert page.index("a%20b.txt") < page.index("sub/") < page.index("text.txt")
    assert "../" not in page
    sub = get(root, "/sub/", autoindex=True).body.decode()
    assert '<a href="../">../</a>' in sub and '<a href="inner.json">inner.json</a>' in sub
    assert get(root, "/a%20b.txt").status == 200
    head = get(root, "/", method="HEAD", autoindex=True)
    assert (head.body, head.headers["content-length"]) == (b"", str(len(r.body)))


def test_file_names_that_are_not_utf8(root: Path) -> None:
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1 name")
    page = get(root, "/", autoindex=True).body.decode()
    assert '<a href="caf%E9.txt">caf\ufffd.txt</a>' in page
    assert get(root, "/caf%E9.txt").body == b"latin-1 name"


def test_folder_index_html_is_served(root: Path) -> None:
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>")
    r = get(root, "/sub/")
    assert (r.status, r.headers["content-type"], r.body) == (200, "text/html", b"<p>index</p>")


def test_folder_without_slash_redirects(root: Path) -> None:
    r = get(root, "/sub?x=1")
    assert (r.status, r.headers["location"]) == (301, "/sub/?x=1")
    (root / "example.com").mkdir()
    assert get(root, "//example.com").headers["location"] == "/example.com/"
    (root / "a b").mkdir()
    assert get(root, "/./a%20b").headers["location"] == "/a%20b/"


def test_missing_and_bad_targets(root: Path) -> None:
    assert get(root, "/nothing-here").status == 404
    assert get(root, "/text.txt/more").status == 404
    assert get(root, "text.txt").status == 400
    assert get(root, "*", method="OPTIONS").status == 405
    assert get(root, "/text.txt?query=ignored").body == TEXT
    assert get(root, "http://example.com/text.txt").body == TEXT
    assert get(root, "HTTP://example.com", autoindex=True).status == 200  # the root's listing


@pytest.mark.parametrize("target", ESCAPES)
def test_paths_escaping_the_root_are_refused(root: Path, target: str) -> None:
    os.symlink("../secret", root / "link-dir")
    os.symlink("../secret.txt", root / "link-file.txt")
    os.symlink(str(root.parent / "secret.txt"), root / "link-abs.txt")
    r = get(root, target)
    assert r.status in (403, 404), f"{target} answered {r.status}"
    assert SECRET not in r.body
    assert b"secret.txt" not in r.body


def test_symlinks_inside_the_root_are_followed(root: Path) -> None:
    os.symlink("text.txt", root / "alias.txt")
    os.symlink("sub", root / "alias-dir")
    assert get(root, "/alias.txt").body == TEXT
    assert get(root, "/alias-dir/inner.json").body == b"{}"


def test_the_root_itself_may_be_a_symlink(root: Path) -> None:
    link = root.parent / "root-link"
    os.symlink(root, link)
    assert get(link, "/text.txt").body == TEXT
    assert get(link, "/../secret.txt").status == 403


def test_folders_are_not_listed_without_autoindex(root: Path) -> None:
    for target in ("/", "/sub/", "HTTP://example.com"):
        r = get(root, target)
        assert (r.status, r.body) == (403, b"403 Forbidden\r\n"), target  # nginx's answer with autoindex off
        assert "inner.json" not in r.body.decode()
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>")
    assert get(root, "/sub/").body == b"<p>index</p>"  # an index is served all the same


DOT_TARGETS = [
    "/.env",
    "/.git/config",
    "/.git/",
    "/.git",
    "/sub/.hidden",
    "/%2egit/config",
    "/%2Eenv",
    "/sub/%2ehidden",
    "/./.env",
    "http://h/.env",
    "/alias-env",  # a symlink to .env
    "/alias-git/config",  # a symlink to .git
]


@pytest.fixture
def dotted(root: Path) -> Path:
    (root / ".env").write_bytes(b"SECRET_KEY=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core]")
    (root / "sub" / ".hidden").write_bytes(b"hidden")
    os.symlink(".env", root / "alias-env")
    os.symlink(".git", root / "alias-git")
    return root


@pytest.mark.parametrize("target", DOT_TARGETS)
def test_dot_files_and_folders_are_refused(dotted: Path, target: str) -> None:
    r = get(dotted, target)
    assert r.status == 403, f"{target} answered {r.status}"
    assert b"SECRET_KEY" not in r.body and b"[core]" not in r.body


def test_dot_files_are_served_with_dotfiles_allowed(dotted: Path) -> None:
    assert get(dotted, "/.env", dotfiles=True).body == b"SECRET_KEY=1"
    assert get(dotted, "/%2egit/config", dotfiles=True).body == b"[core]"
    assert get(dotted, "/alias-env", dotfiles=True).body == b"SECRET_KEY=1"
    assert get(dotted, "/sub/.hidden", dotfiles=True).body == b"hidden"


def test_listings_leave_dot_entries_out(dotted: Path) -> None:
    page = get(dotted, "/", autoindex=True).body.decode()
    assert "text.txt" in page and ".env" not in page and ".git" not in page
    assert "hidden" not in get(dotted, "/sub/", autoindex=True).body.decode()
    shown = get(dotted, "/", autoindex=True, dotfiles=True).body.decode()
    assert '<a href=".env">.env</a>' in shown and '<a href=".git/">.git/</a>' in shown


def test_a_large_folder_is_listed_in_steps_in_order(root: Path) -> None:
    big = root / "big"
    big.mkdir()
    names = [f"f{i:05d}" for i in range(2 * static.LISTING_SLICE + 345)]
    for name in reversed(names):
        (big / name).write_bytes(b"")
    http = HTTPConnection(App(str(root), autoindex=True))
    out = http.receive(b"GET /big/ HTTP/1.1\r\nHost: h\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (out, http.busy, http.working) == (b"", True, True)
    assert http.receive(b"GET /json HTTP/1.1\r\nHost: h\r\n\r\n") == b""  # waits its turn
    steps = 0
    while http.working:
        out += http.resume()
        steps += 1
    # A step per slice of 1,000 entries, read or rendered: the first slice was read at once,
    # with the request; then the second; the last 345 read and 1,000 rendered; 1,000; 345.
    assert steps == 4
    assert not http.busy
    listing, plain, json = read_replies(out, ["GET", "GET", "GET"])
    page = listing.body.decode()
    shown = [line.split('"')[1] for line in page.splitlines() if line.startswith('<li><a href="f')]
    assert shown == names
    assert (plain.body, json.status) == (b"Hello, World!", 200)


def test_a_listing_stops_at_max_listing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(static, "MAX_LISTING", 3)
    for name in "abcdef":
        (root / "sub" / name).write_bytes(b"")
    page = get(root, "/sub/", autoindex=True).body.decode()
    assert page.count('<li><a href="') == 4  # ../ and three entries
    assert "Only the first 3 entries are listed." in page


def test_a_connection_closed_mid_listing_releases_the_folder(root: Path) -> None:
    for i in range(static.LISTING_SLICE + 1):
        (root / "sub" / str(i)).write_bytes(b"")
    fds = open_fds()
    http = HTTPConnection(App(str(root), autoindex=True))
    http.receive(b"GET /sub/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (http.working, open_fds()) == (True, fds + 1)  # the folder, being read
    http.close()
    assert not http.working and open_fds() == fds


def _failing(error: int) -> Any:
    def fail(*args: object, **kwargs: object) -> Any:
        raise OSError(error, os.strerror(error))

    return fail


@pytest.mark.parametrize(
    ("error", "status", "closes"),
    [
        (errno.EMFILE, 503, True),  # out of descriptors: the file is there (nginx: 500)
        (errno.ENFILE, 503, True),
        (errno.ENOMEM, 503, True),
        (errno.EACCES, 403, False),
        (errno.ENOENT, 404, False),
        (errno.EIO, 500, True),
    ],
)
def test_errors_from_the_os(root: Path, monkeypatch: pytest.MonkeyPatch, error: int, status: int, closes: bool) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "open", _failing(error))
        http = HTTPConnection(App(str(root)))
        out = http.receive(b"GET /text.txt HTTP/1.1\r\nHost: h\r\n\r\n")
    with monkeypatch.context() as m:
        m.setattr(os, "scandir", _failing(error))
        listing = HTTPConnection(App(str(root), autoindex=True))
        out_listing = listing.receive(b"GET /sub/ HTTP/1.1\r\nHost: h\r\n\r\n")
    for connection, data in ((http, out), (listing, out_listing)):
        [r] = read_replies(data, ["GET"], closed=closes)
        assert r.status == status
        assert connection.closing is closes
        assert (r.headers.get("retry-after") == "1") is (status == 503)
