"""Static files under a root folder: safe path resolution, conditional and range
requests, folder listings, and large files streamed a chunk at a time.

Safety: a request path is percent-decoded once, then split into segments; a
`..` segment is refused outright (403) rather than normalised, and a NUL byte
makes the path unknown (404). A segment starting with a dot (`.git`, `.env`)
is refused (403) unless dot-files are allowed, and so is a path whose real
path has one below the root (a symlink to a dot-file). The joined path is
then resolved with `realpath` and must still lie under the root's real path,
so a symlink that points outside the root is not followed (404). Only
regular files are opened (a FIFO or device would block the loop), with
`O_NOFOLLOW` so a symlink swapped in after the check is not followed either.

A folder without `index.html` is listed only with `autoindex` (nginx's word;
403 without). A listing is built `LISTING_SLICE` entries per step, so a huge
folder does not stall the loop, and lists at most `MAX_LISTING` entries.

Errors from the OS are answered as nginx does (404 for a missing file, 403
for a refused one), except that a server out of descriptors or memory
answers 503 (nginx: 500) and closes the connection, which frees one.

Files are read on the loop's thread. That is fast for files in the page
cache; a cold disk stalls every connection for the duration of one read.
"""

from __future__ import annotations

import errno
import heapq
import html
import mimetypes
import os
import stat
from email.utils import parsedate_to_datetime
from typing import Generator, List, Optional, Tuple, Union
from urllib.parse import quote, unquote_to_bytes

from .parser import Request
from .responses import SERVER, build, connection_field, http_date, status_line

#: A file up to this size is sent whole; a larger one is streamed in pieces of this size.
CHUNK = 256 * 1024
#: A folder listing reads, and renders, this many entries per step.
LISTING_SLICE = 1000
#: A folder listing shows at most this many entries.
MAX_LISTING = 100_000

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_TEXT = b"Content-Type: text/plain; charset=utf-8\r\n"
_HTML = b"Content-Type: text/html; charset=utf-8\r\n"
_ALLOW = b"Allow: GET, HEAD\r\n"
_COMPRESSED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


class FileStream:
    """The part of a file still to be sent as a response body.

    Owns an open descriptor until `close`; `read` returns the next piece, or
    `b""` when the file ended early (it shrank while being sent).
    """

    __slots__ = ("_fd", "offset", "remaining")

    def __init__(self, fd: int, offset: int, remaining: int) -> None:
        self._fd = fd
        self.offset = offset
        self.remaining = remaining

    def read(self, size: int = CHUNK) -> bytes:
        data = os.pread(self._fd, min(size, self.remaining), self.offset)
        self.offset += len(data)
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


#: Work done in steps: `next` does one step and gives `None`, or the response bytes once done.
Job = Generator[Optional[bytes], None, None]
#: A response: its bytes, the first bytes and the stream that follows them, or a `Job`.
Response = Union[bytes, Tuple[bytes, FileStream], Job]

#: Errors that say the server, not the file, is short of something: 503.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_MISSING = {errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP}
_REFUSED = {errno.EACCES, errno.EPERM}


class StaticFiles:
    """Serves GET and HEAD for the files under `root`.

    `autoindex`: list a folder that has no `index.html` (else 403).
    `dotfiles`: serve names starting with a dot (else 403, and listings leave them out).
    """

    def __init__(self, root: str, *, autoindex: bool = False, dotfiles: bool = False) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"static root {root!r} is not a folder")
        self._prefix = self.root if self.root.endswith(os.sep) else self.root + os.sep
        self.autoindex = autoindex
        self.dotfiles = dotfiles

    def respond(self, req: Request, date: bytes) -> Response:
        """The response to `req`, whose target is a path under the root."""
        if req.method != b"GET" and req.method != b"HEAD":
            return _plain(405, req, date, _ALLOW)
        target = req.target
        if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            # Absolute form (RFC 9112 3.2.2): the path starts after the authority.
            slash = target.find(b"/", target.find(b"//") + 2)
            target = target[slash:] if slash >= 0 else b"/"
        path, _, query = target.partition(b"?")
        if not path.startswith(b"/"):
            return _plain(400, req, date, body=b"400 Bad Request: the target must be a path starting with /\n")
        raw = unquote_to_bytes(path)
        if b"\0" in raw:
            return _plain(404, req, date)
        segments = [s for s in os.fsdecode(raw).split("/") if s and s != "."]
        if ".." in segments:
            return _plain(403, req, date)
        if not self.dotfiles and any(s[0] == "." for s in segments):
            return _plain(403, req, date)
        real = os.path.realpath(os.path.join(self.root, *segments))
        if real != self.root and not real.startswith(self._prefix):
            return _plain(404, req, date)  # a symlink leads outside the root
        if not self._allowed(real):
            return _plain(403, req, date)  # a symlink leads to a dot-file
        try:
            st = os.stat(real)
        except OSError as err:
            return _failed(err, req, date)
        if stat.S_ISDIR(st.st_mode):
            if not path.endswith(b"/"):
                # Rebuilt from the segments: "//host/dir" must not become a link to another host.
                location = "".join("/" + quote(s, errors="surrogateescape") for s in segments) + "/"
                query = b"?" + query if query else b""
                return _plain(301, req, date, b"Location: %s%s\r\n" % (location.encode("ascii"), query))
            index = os.path.join(real, "index.html")
            if os.path.isfile(index):
                index = os.path.realpath(index)
                if index.startswith(self._prefix) and self._allowed(index):
                    return self._file(req, date, index)
            if not self.autoindex:
                return _plain(403, req, date)  # nginx's answer for a folder it may not list
            return self._listing(req, date, real, os.fsdecode(raw))
        if not stat.S_ISREG(st.st_mode):
            return _plain(404, req, date)
        return self._file(req, date, real)

    def _allowed(self, real: str) -> bool:
        """Whether `real`, a real path under the root, may be served: no dot-segment below the root."""
        if self.dotfiles or real == self.root:
            return True
        return "/." not in "/" + real[len(self._prefix) :].replace(os.sep, "/")

    def _file(self, req: Request, date: bytes, real: str) -> Response:
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as err:
            return _failed(err, req, date)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return _plain(404, req, date)
            size = st.st_size
            modified = http_date(st.st_mtime)
            ctype = _content_type(real)
            fields = b"Content-Type: %s\r\nLast-Modified: %s\r\nAccept-Ranges: bytes\r\n" % (ctype, modified)
            if _not_modified(req, st.st_mtime):
                # No body and no Content-Length: it would have to be the 200's (RFC 9110 8.6).
                return b"%sServer: %s\r\nDate: %s\r\nLast-Modified: %s\r\n%s\r\n" % (
                    status_line(304),
                    SERVER,
                    date,
                    modified,
                    connection_field(req),
                )
            status, offset, length = 200, 0, size
            spec = req.header(b"range")
            if spec is not None and req.header(b"if-range") in (None, modified):
                wanted = _byte_range(spec, size)
                if wanted == _UNSATISFIABLE:
                    return _plain(416, req, date, b"Content-Range: bytes */%d\r\n" % size)
                if wanted is not None:
                    status, (offset, length) = 206, wanted
                    fields += b"Content-Range: bytes %d-%d/%d\r\n" % (offset, offset + length - 1, size)
            conn = connection_field(req)
            if req.method == b"HEAD":
                return build(status, date, fields, b"", conn, length=length)
            body = os.pread(fd, min(length, CHUNK), offset)
            if len(body) == length:
                return build(status, date, fields, body, conn)
            if len(body) < min(length, CHUNK):
                # The file shrank since fstat: better an error than a short body.
                req.keep_alive = False
                return _plain(500, req, date, body=b"500 Internal Server Error: the file changed while read\n")
            stream = FileStream(fd, offset + len(body), length - len(body))
            fd = -1  # the stream owns it now
            return build(status, date, fields, b"", conn, length=length) + body, stream
        finally:
            if fd >= 0:
                os.close(fd)

    def _listing(self, req: Request, date: bytes, real: str, shown: str) -> Job:
        """The folder's listing, built in steps: `LISTING_SLICE` entries read, then
        rendered, per step. Each slice is sorted as it is read and the slices
        merged while rendering, so no step sorts the whole folder.
        """
        try:
            entries = os.scandir(real)
        except OSError as err:
            yield _failed(err, req, date)
            return
        slices: List[List[str]] = []
        count = 0
        more = False
        with entries:  # closed however the job ends, also when the connection closes mid-way
            batch: List[str] = []
            try:
                for entry in entries:
                    name = entry.name
                    if name[0] == "." and not self.dotfiles:
                        continue
                    if count == MAX_LISTING:
                        more = True
                        break
                    batch.append(name + "/" if _is_dir(entry) else name)
                    count += 1
                    if len(batch) == LISTING_SLICE:
                        batch.sort()
                        slices.append(batch)
                        batch = []
                        yield None
            except OSError as err:
                yield _failed(err, req, date)
                return
            batch.sort()
            slices.append(batch)
        title = html.escape(_printable(shown))
        items = [] if real == self.root else ['<li><a href="../">../</a></li>']
        for i, name in enumerate(heapq.merge(*slices), 1):
            href = html.escape(quote(name, errors="surrogateescape"))
            items.append(f'<li><a href="{href}">{html.escape(_printable(name))}</a></li>')
            if i % LISTING_SLICE == 0:
                yield None
        cut = f"<p>Only the first {MAX_LISTING:,} entries are listed.</p>\n" if more else ""
        page = (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of {title}</title></head>\n'
            f"<body><h1>Index of {title}</h1>\n<ul>\n" + "\n".join(items) + f"\n</ul>\n{cut}</body></html>\n"
        ).encode("utf-8")
        if req.method == b"HEAD":
            yield build(200, date, _HTML, b"", connection_field(req), length=len(page))
        else:
            yield build(200, date, _HTML, page, connection_field(req))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _failed(err: OSError, req: Request, date: bytes) -> bytes:
    """The answer when the OS refused to stat, open or list a path."""
    if err.errno in _MISSING:
        return _plain(404, req, date)
    if err.errno in _REFUSED:
        return _plain(403, req, date)
    req.keep_alive = False
    if err.errno in _EXHAUSTED:
        # Out of descriptors or memory: the file is there, the server cannot serve it now.
        return _plain(503, req, date, b"Retry-After: 1\r\n")
    return _plain(500, req, date)


def _printable(name: str) -> str:
    """`name` for display: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _plain(status: int, req: Request, date: bytes, fields: bytes = b"", body: bytes | None = None) -> bytes:
    """A short text response; HEAD gets the same fields and no body."""
    if body is None:
        body = status_line(status)[9:]  # "404 Not Found\r\n"
    if req.method == b"HEAD":
        return build(status, date, fields + _TEXT, b"", connection_field(req), length=len(body))
    return build(status, date, fields + _TEXT, body, connection_field(req))


def _content_type(path: str) -> bytes:
    ctype, encoding = mimetypes.guess_type(path)
    if encoding is not None:
        ctype = _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    return (ctype or "application/octet-stream").encode("latin-1")


def _not_modified(req: Request, mtime: float) -> bool:
    value = req.header(b"if-modified-since")
    if value is None:
        return False
    try:
        since = parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # an invalid date is ignored (RFC 9110 13.1.3)
    return int(mtime) <= since


# Compared with ==, not `is`: compiled with mypyc, a tuple of ints is a value, and loses its identity.
_UNSATISFIABLE = (-1, -1)


def _byte_range(spec: bytes, size: int) -> tuple[int, int] | None:
    """`(offset, length)` of the one range in a `Range` value, `None` to ignore
    it (malformed, another unit, or several ranges), or `_UNSATISFIABLE`.
    """
    unit, _, ranges = spec.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in ranges:
        return None
    first, dash, last = ranges.strip().partition(b"-")
    if not dash or not (first.isdigit() or (not first and last.isdigit())) or (last and not last.isdigit()):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        start = max(0, size - suffix)
        return start, size - start
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored (RFC 9110 14.1.1)
    if start >= size:
        return _UNSATISFIABLE
    end = min(int(last), size - 1) if last else size - 1
    return start, end - start + 1
