"""RESP request parsing: a pure-Python reader, and a hiredis-backed one with the same interface.

A reader takes bytes as they arrive, in pieces of any size, and hands back
every command they complete, each a list of `bytes` arguments. Requests are
RESP arrays of bulk strings or inline commands (`PING\\r\\n`), in any mix,
as Redis accepts them. After malformed input, `error` holds the Redis wording
of the protocol error (`b"invalid bulk length"`); the commands before it are
still handed back, and the reader takes nothing more.

`PureReader` never rescans: it keeps the unparsed tail with what it has
learnt about it (the arguments read so far, the bytes a bulk string still
needs, how far a line was searched), so a 100 MB value arriving in 64 KB
packets costs one join, not one copy per packet. `HiredisReader` hands whole
packets to hiredis's C parser and falls back to `PureReader` for what hiredis
does not judge the way Redis does (inline commands, limits, error wording).
"""

from __future__ import annotations

import re
from itertools import chain
from typing import List, Union

try:
    import hiredis
except ImportError:  # PyPy, or hiredis not installed: PureReader is the parser
    hiredis = None  # type: ignore[assignment]

#: Whether `HiredisReader` can be used here.
HAVE_HIREDIS = hiredis is not None

Command = List[bytes]
Input = Union[bytes, bytearray, memoryview]

#: Redis's proto-max-bulk-len: a longer bulk string is a protocol error, refused from its header.
MAX_BULK = 512 * 1024 * 1024
#: Redis's PROTO_INLINE_MAX_SIZE: an inline command or a header line may not grow past it unended.
MAX_LINE = 64 * 1024
#: Redis refuses an array header above INT_MAX.
MAX_ARGS = 2**31 - 1

# Lengths and counts parse by one dict look-up: faster than int() and strict by construction
# (no sign, no spaces, no leading zeros), as Redis's string2ll is.
_SMALL = {b"%d" % i: i for i in range(1 << 12)}


def parse_int(s: bytes) -> int | None:
    """`s` as a 64-bit signed integer written the way Redis's string2ll accepts, else None."""
    n = _SMALL.get(s)
    if n is not None:
        return n
    digits = s[1:] if s[:1] == b"-" else s
    if not digits.isdigit() or digits[0] == 48:  # no '+', spaces, leading zeros or "-0"
        return None
    n = int(digits)
    if digits is not s:
        n = -n
    return n if -(2**63) <= n < 2**63 else None


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def _split_quoted(line: bytes) -> Command | None:
    """Split an inline command with quotes as Redis's sdssplitargs does; None when unbalanced."""
    args: Command = []
    i, n = 0, len(line)
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
    while True:
        while i < n and line[i] in b" \t\n\r\v\f":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        quote = 0  # 0, or the quote byte we are inside of
        while True:
            if i >= n:
                if quote:
                    return None
                break
            c = line[i]
            if quote == 34:  # "...": backslash escapes, \xHH
                if c == 92 and line[i + 1 : i + 2] == b"x" and _is_hex(line[i + 2 : i + 4]):
                    cur.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(escapes.get(line[i], line[i]))
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        return None  # a closing quote must be followed by a space
                    i += 1
                    break
                else:
                    cur.append(c)
            elif quote == 39:  # '...': only \' is an escape
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            elif c in b" \t\n\r\v\f":
                break
            elif c == 34 or c == 39:
                quote = c
            else:
                cur.append(c)
            i += 1
        args.append(bytes(cur))


def split_inline(line: bytes) -> Command | None:
    """The arguments of an inline command line; None for unbalanced quotes."""
    if 34 in line or 39 in line:
        return _split_quoted(line)
    return line.split()


class PureReader:
    """A RESP request reader in pure Python: the fast path on PyPy."""

    __slots__ = (
        "_args",
        "_chunks",
        "_done",
        "_have",
        "_left",
        "_max_bulk",
        "_need",
        "_scan",
        "_tail",
        "error",
        "stopped",
    )

    def __init__(self, max_bulk: int = MAX_BULK) -> None:
        #: Redis's proto-max-bulk-len: a longer bulk string is refused from its header.
        self._max_bulk = max_bulk
        #: The arguments of the array being read, or None between commands.
        self._args: Command | None = None
        #: How many arguments that array still lacks.
        self._left = 0
        #: Bytes of that array parsed already (its header and whole arguments).
        self._done = 0
        #: Bytes received and not parsed yet.
        self._tail = b""
        #: Packets received while a bulk string is incomplete, joined once it is whole.
        self._chunks: List[bytes] = []
        #: len(_tail) plus the length of every chunk.
        self._have = 0
        #: How many bytes must be held before parsing can go on; 0 while a line end is awaited.
        self._need = 0
        #: How much of `_tail` was searched for a line end already.
        self._scan = 0
        #: The protocol error, once there was one.
        self.error: bytes | None = None
        #: After `feed(data, until_idle=True)`: the offset in `data` where parsing stopped.
        self.stopped = 0

    @property
    def busy(self) -> bool:
        """Whether a command was begun and not finished."""
        return self._have > 0 or self._args is not None

    @property
    def pending(self) -> int:
        """Bytes received that belong to no complete command yet."""
        return self._have + self._done

    def feed(self, data: Input, until_idle: bool = False) -> List[Command]:
        """Take `data` and return the commands it completes, in order.

        With `until_idle`, stop at the first command boundary after the
        unfinished command: `stopped` tells where, and the rest of `data` is
        left to the caller.
        """
        self.stopped = len(data)
        if self.error is not None or not data:
            return []
        if type(data) is not bytes:
            data = bytes(data)
        if not self._have:
            return self._parse(data, 0, until_idle)
        if self._need:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join([self._tail, *self._chunks])
        else:
            buf = self._tail + data
            if buf.find(b"\n", self._scan) < 0:
                return self._wait_line(buf)
        self._chunks = []
        return self._parse(buf, len(buf) - len(data), until_idle)

    def _wait_line(self, buf: bytes) -> List[Command]:
        """Keep `buf`, which holds no line end, unless it is already longer than Redis allows."""
        if len(buf) > MAX_LINE:
            if self._args is not None:
                what = b"too big bulk count string"
            elif buf[0] == 42:
                what = b"too big mbulk count string"
            else:
                what = b"too big inline request"
            return self._fail([], what)
        self._tail = buf
        self._have = len(buf)
        self._need = 0
        self._scan = len(buf)
        return []

    def _fail(self, out: List[Command], what: bytes) -> List[Command]:
        self.error = what
        self._args = None
        self._tail = b""
        self._chunks = []
        self._have = self._need = self._left = self._done = 0
        return out

    def _parse(self, buf: bytes, fed_at: int, until_idle: bool) -> List[Command]:
        """Parse `buf`, whose bytes from `fed_at` on are the new packet."""
        out: List[Command] = []
        small = _SMALL
        find = buf.find
        end = len(buf)
        pos = 0
        args = self._args
        left = self._left
        begun = -self._done  # where the unfinished array started, relative to buf
        max_bulk = self._max_bulk
        need = 0  # set when a bulk string is cut short: bytes it needs from `pos`
        while pos < end:
            if args is None:
                if buf[pos] == 42:  # '*': an array of bulk strings
                    nl = find(b"\r\n", pos)
                    if nl < 0:
                        break
                    count = small.get(buf[pos + 1 : nl])
                    if count is None:
                        count = parse_int(buf[pos + 1 : nl])
                        if count is None or count > MAX_ARGS:
                            return self._fail(out, b"invalid multibulk length")
                    begun = pos
                    pos = nl + 2
                    if count <= 0:
                        continue  # Redis skips empty and null arrays
                    args = []
                    left = count
                else:
                    # Inline commands: every whole line before the next array, split in C.
                    nxt = find(b"\n*", pos)
                    stop = nxt + 1 if nxt >= 0 else buf.rfind(b"\n", pos) + 1
                    if stop > pos:
                        run = buf[pos:stop]
                        if 34 not in run and 39 not in run:  # no quotes: whitespace splits it
                            out += [argv for argv in map(bytes.split, run.split(b"\n")[:-1]) if argv]
                            pos = stop
                            if until_idle:
                                break
                            continue
                    nl = find(b"\n", pos)
                    if nl < 0:
                        break
                    argv = split_inline(buf[pos:nl])
                    if argv is None:
                        return self._fail(out, b"unbalanced quotes in request")
                    pos = nl + 1
                    if argv:
                        out.append(argv)
                    if until_idle:
                        break
                    continue
            while left:
                if pos >= end:
                    break
                if buf[pos] != 36:  # '$'
                    return self._fail(out, b"expected '$', got '" + buf[pos : pos + 1] + b"'")
                nl = find(b"\r\n", pos)
                if nl < 0:
                    break
                n = small.get(buf[pos + 1 : nl])
                if n is None:
                    n = parse_int(buf[pos + 1 : nl])
                    if n is None or n < 0 or n > max_bulk:
                        return self._fail(out, b"invalid bulk length")
                start = nl + 2
                stop = start + n
                if stop + 2 > end:
                    need = stop + 2 - pos
                    break
                # Like Redis, the two bytes after the data are taken to be CRLF unchecked.
                args.append(buf[start:stop])
                pos = stop + 2
                left -= 1
            if left:
                break
            out.append(args)
            args = None
            if until_idle:
                break
        self._args = args
        self._left = left
        self._done = pos - begun if args is not None else 0
        if until_idle and args is None and pos >= fed_at:
            self.stopped = pos - fed_at
            self._tail = b""
            self._have = self._need = 0
            return out
        if pos >= end:
            self._tail = b""
            self._have = self._need = 0
            return out
        tail = buf[pos:] if pos else buf
        if need:
            self._tail = tail
            self._have = len(tail)
            self._need = need
            return out
        self._wait_line(tail)
        return out


# Decimal digits of every number below 65536, for `_encoded_size`: indexing in C beats str().
_DIGITS = bytes(len(str(i)) for i in range(1 << 16))


def _encoded_size(commands: List[Command]) -> int:
    """Bytes that `commands` took as canonical RESP arrays: how hiredis accepts them."""
    lens = list(map(len, chain.from_iterable(commands)))
    counts = list(map(len, commands))
    try:
        digits = sum(map(_DIGITS.__getitem__, lens)) + sum(map(_DIGITS.__getitem__, counts))
    except IndexError:  # a value of 64 KB or more
        digits = sum(len(str(n)) for n in lens) + sum(len(str(n)) for n in counts)
    # "*N\r\n" per command, "$L\r\n" + data + "\r\n" per argument
    return digits + 3 * len(counts) + sum(lens) + 5 * len(lens)


def _spelt_as_arrays(commands: List[Command], data: bytes) -> bool:
    """Whether `data` is exactly `commands` as RESP arrays of bulk strings: each type byte checked."""
    pos = 0
    try:
        for cmd in commands:
            if data[pos] != 42:  # '*'
                return False
            pos += len(str(len(cmd))) + 3
            for arg in cmd:
                if data[pos] != 36:  # '$'
                    return False
                n = len(arg)
                pos += len(str(n)) + 5 + n
    except IndexError:
        return False
    return pos == len(data)


#: A packet shorter than this holds a command or two: the pure reader beats hiredis's
#: fixed cost per packet there (measured on CPython 3.11).
SMALL_PACKET = 96

# hiredis allocates an array's list when it reads the header: "*2000000000" would reserve
# 16 GB. A packet that may hold a header of a million elements or more goes to PureReader,
# which grows a command's list only as its arguments arrive.
_huge_array = re.compile(rb"\*[0-9]{7}").search


class HiredisReader:
    """The `PureReader` interface, with hiredis parsing whole packets of arrays.

    hiredis parses replies, not requests: it knows no inline commands, no
    512 MB limit, and takes nested arrays, integers or nulls inside an array.
    So a packet goes to hiredis only when it starts a command with '*', and
    every command it yields is checked to be a non-empty list of bytes. A
    packet with anything Redis would judge otherwise (an error, a nested array,
    an integer) goes whole to a `PureReader`, which words the error as Redis
    does. When hiredis stops inside a command, the rest of the packet, from
    that command's first byte, goes to the `PureReader`: hiredis accepts only
    canonical arrays of bulk strings, so the offset follows from the commands.
    The `PureReader` keeps the input until it finishes that command, and the
    next packet that starts afresh goes to hiredis again.
    """

    __slots__ = ("_max_bulk", "_pure", "_reader", "_small")

    def __init__(self, small_packet: int = SMALL_PACKET, max_bulk: int = MAX_BULK) -> None:
        """`small_packet`: packets shorter than this go to the pure reader; `max_bulk`: proto-max-bulk-len.

        hiredis itself knows no limit, so a packet longer than `max_bulk`
        (which might hold a whole bulk string over it) goes to the pure reader.
        """
        if hiredis is None:
            raise RuntimeError("HiredisReader needs the hiredis package")
        self._pure = PureReader(max_bulk)
        self._max_bulk = max_bulk
        self._reader = hiredis.Reader()
        self._small = small_packet

    @property
    def error(self) -> bytes | None:
        """The protocol error, once there was one."""
        return self._pure.error

    @property
    def busy(self) -> bool:
        """Whether a command was begun and not finished."""
        return self._pure.busy

    @property
    def pending(self) -> int:
        """Bytes received that belong to no complete command yet."""
        return self._pure.pending

    def feed(self, data: Input) -> List[Command]:
        """Take `data` and return the commands it completes, in order."""
        pure = self._pure
        if type(data) is not bytes:
            data = bytes(data)
        if pure.busy:
            # Finish the command begun in an earlier packet; then the rest is hiredis's again.
            finished = pure.feed(data, until_idle=True)
            rest = pure.stopped
            if rest < len(data) and pure.pending == 0 and pure.error is None:
                finished.extend(self.feed(data[rest:]))
            return finished
        n = len(data)
        if (
            n < self._small
            or n > self._max_bulk
            or pure.error is not None
            or data[:1] != b"*"
            or _huge_array(data) is not None
        ):
            return pure.feed(data)
        reader = self._reader
        reader.feed(data)
        gets = reader.gets
        try:
            out: List[Command] = list(iter(gets, False))  # gets() until False, looped in C
            # hiredis cannot tell whether it stopped between commands or inside an
            # array whose elements so far are whole; an empty array fed now tells: it
            # comes back alone only in the first case.
            reader.feed(b"*0\r\n")
            whole = gets() == [] and not reader.has_data()
        except Exception:  # a protocol error, or a map keyed by a list: the pure reader judges
            out, whole = [], False
        try:
            # Also looped in C: all() refuses an empty array or a null; join refuses
            # anything but a list (or a map) of bytes.
            valid = all(out) and _join(map(_join, out)) is not None
        except TypeError:
            valid = False
        if valid and any(map(data.__contains__, _RESP3_MARKS)):
            # hiredis takes status, verbatim and big-number elements as bytes too, a push,
            # set or attribute as an array, a map as a dict; Redis refuses them all. Then
            # the packet's type bytes are checked one by one (skipping the data).
            valid = whole and _spelt_as_arrays(out, data)
        if whole and valid:
            return out
        self._reader = hiredis.Reader()
        if not valid:
            return pure.feed(data)  # nothing of this packet ran yet: the pure reader takes it all
        # A command cut short: the pure reader takes the rest, from its first byte.
        out.extend(pure.feed(data[_encoded_size(out) :]))
        return out


_join = b"".join
# Type bytes of what hiredis may hand back as bytes or a list, though Redis refuses it.
_RESP3_MARKS = (b"+", b"=", b"(", b">", b"%", b"~", b"|")


def make_reader(pure: bool = False, max_bulk: int = MAX_BULK) -> Union[PureReader, HiredisReader]:
    """The fastest reader available: hiredis-backed when it is installed, unless `pure`.

    `max_bulk` is Redis's proto-max-bulk-len: a longer bulk string is the
    protocol error "invalid bulk length".
    """
    if pure or hiredis is None:
        return PureReader(max_bulk)
    return HiredisReader(max_bulk=max_bulk)
