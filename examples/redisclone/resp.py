"""RESP request parsing: a pure-Python reader, and a hiredis-backed one with the same interface.

A reader takes bytes as they arrive, in pieces of any size, and hands back
every command they complete, each a list of `bytes` arguments. Requests are
RESP arrays of bulk strings or inline commands (`PING\\r\\n`), in any mix,
as Redis accepts them. After malformed input, `error` holds the Redis wording
of the protocol error (`b"invalid bulk length"`); the commands before it are
still handed back, and the reader takes nothing more.

`PureReader` parses each packet where it lies and keeps only what is
unfinished (a cut line, or the pieces of a cut bulk string), so a 100 MB value
arriving in 64 KB packets is copied once, into its own bytes. `HiredisReader`
hands whole packets to hiredis's C parser, checks with one look per element
that hiredis read what Redis would, and falls back to `PureReader` for what
hiredis does not judge the way Redis does (inline commands, limits, error
wording, RESP3 types).
"""

from __future__ import annotations

import importlib
import re
from itertools import chain, repeat
from typing import Any, List, Union


def _load_hiredis() -> Any:
    try:
        return importlib.import_module("hiredis")
    except ImportError:  # PyPy, or hiredis not installed: PureReader is the parser
        return None


_hiredis: Any = _load_hiredis()
_HiredisReader: Any = _hiredis.Reader if _hiredis is not None else None

#: Whether `HiredisReader` can be used here.
HAVE_HIREDIS = _hiredis is not None

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
    """A RESP request reader in pure Python: the fast path on PyPy.

    It never rescans and never copies a packet whole: it parses each packet
    where it lies, and keeps of it only what is unfinished. A line cut between
    packets (a header, an inline command) is kept and completed with the first
    line end of the next packet; a bulk string cut between packets is kept as
    the pieces that came, joined once it is whole, so a 100 MB value arriving
    in 64 KB packets is copied once into its own bytes and never again.
    """

    __slots__ = (
        "_args",
        "_crlf",
        "_done",
        "_left",
        "_max_bulk",
        "_parts",
        "_tail",
        "_vleft",
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
        #: Bytes of that array taken so far: its header, whole arguments, and the bulk string being received.
        self._done = 0
        #: An unfinished line (a header, or an inline command), from the packets that brought it.
        self._tail = b""
        #: The pieces of a bulk string cut between packets, or None.
        self._parts: List[bytes] | None = None
        #: Bytes of that bulk string still missing, and of the CRLF after it.
        self._vleft = 0
        self._crlf = 0
        #: The protocol error, once there was one.
        self.error: bytes | None = None
        #: After `feed(data, until_idle=True)`: the offset in `data` where parsing stopped.
        self.stopped = 0

    @property
    def busy(self) -> bool:
        """Whether a command was begun and not finished."""
        return self._args is not None or len(self._tail) > 0

    @property
    def pending(self) -> int:
        """Bytes received that belong to no complete command yet."""
        return self._done + len(self._tail)

    def feed(self, data: Input, until_idle: bool = False, start: int = 0) -> List[Command]:
        """Take `data[start:]` and return the commands it completes, in order.

        With `until_idle`, stop at the first command boundary after the
        unfinished command: `stopped` tells where, and the rest of `data` is
        left to the caller.
        """
        self.stopped = len(data)
        if self.error is not None or start >= len(data):
            return []
        if type(data) is not bytes:
            data = bytes(data)
        out: List[Command] = []
        pos = start
        if self._parts is not None:
            pos = self._take_bulk(data, pos)
            if pos < 0:
                return out  # all of `data` was more of the bulk string
            if not self._left:
                self._end_command(out)
                if until_idle:
                    self.stopped = pos
                    return out
        elif self._tail:
            pos = self._finish_line(data, pos, out)
            if pos < 0:
                return out  # no line end yet, or an error
            if self._in_bulk():  # the line was a bulk string's header: its data follows
                pos = self._take_bulk(data, pos)
                if pos < 0:
                    return out
                if not self._left:
                    self._end_command(out)
            if until_idle and self._args is None and not self._tail:
                self.stopped = pos
                return out
        if pos < len(data):
            self._parse(data, pos, out, until_idle)
        return out

    def _in_bulk(self) -> bool:
        """Whether a bulk string is being received (a method: mypy would keep `_parts` narrowed to None)."""
        return self._parts is not None

    def _end_command(self, out: List[Command]) -> None:
        args = self._args
        assert args is not None
        out.append(args)
        self._args = None
        self._done = 0

    def _take_bulk(self, data: bytes, pos: int) -> int:
        """More of the bulk string being received, from `data[pos:]`: where it ended in `data`, or -1 if it goes on."""
        parts = self._parts
        assert parts is not None
        end = len(data)
        vleft = self._vleft
        if vleft and pos < end:
            take = min(vleft, end - pos)
            parts.append(data if take == end else data[pos : pos + take])
            vleft -= take
            pos += take
            self._vleft = vleft
            self._done += take
        if not vleft and pos < end:
            skip = min(self._crlf, end - pos)  # like Redis, the two bytes after the data are taken unchecked
            self._crlf -= skip
            self._done += skip
            pos += skip
        if vleft or self._crlf:
            return -1
        args = self._args
        assert args is not None
        args.append(parts[0] if len(parts) == 1 else b"".join(parts))
        self._parts = None
        self._left -= 1
        return pos

    def _finish_line(self, data: bytes, pos: int, out: List[Command]) -> int:
        """Complete the line kept from earlier packets with `data[pos:]` and parse it; returns where it ended.

        -1 when `data` holds no line end either (the line is kept, unless it
        grew past what Redis allows) or the line was an error.
        """
        tail = self._tail
        if self._args is not None or tail[0] == 42:  # an array or bulk header: ends with CRLF
            if tail[-1] == 13 and data[pos] == 10:
                stop = pos + 1
            else:
                nl = data.find(b"\r\n", pos)
                stop = nl + 2 if nl >= 0 else -1
        else:  # an inline command: ends with LF
            nl = data.find(b"\n", pos)
            stop = nl + 1 if nl >= 0 else -1
        if stop < 0:
            self._tail = b""
            self._keep_line(tail + data[pos:] if pos else tail + data, out)
            return -1
        self._tail = b""
        line = tail + data[pos:stop]
        self._parse(line, 0, out, False)
        if self.error is not None:
            return -1
        return stop

    def _keep_line(self, line: bytes, out: List[Command]) -> None:
        """Keep `line`, which holds no line end, unless it is already longer than Redis allows."""
        if len(line) > MAX_LINE:
            if self._args is not None:
                what = b"too big bulk count string"
            elif line[0] == 42:
                what = b"too big mbulk count string"
            else:
                what = b"too big inline request"
            self._fail(what)
            return
        self._tail = line

    def _fail(self, what: bytes) -> None:
        self.error = what
        self._args = None
        self._tail = b""
        self._parts = None
        self._left = self._done = self._vleft = self._crlf = 0

    def _parse(self, buf: bytes, pos: int, out: List[Command], until_idle: bool) -> None:
        """Parse `buf[pos:]`: commands go to `out`, what is unfinished stays in the reader."""
        small = _SMALL
        find = buf.find
        end = len(buf)
        args = self._args
        left = self._left
        begun = pos - self._done  # where the unfinished array started, relative to buf
        max_bulk = self._max_bulk
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
                            self._fail(b"invalid multibulk length")
                            return
                    begun = pos
                    pos = nl + 2
                    if count <= 0:
                        if until_idle:
                            break
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
                        self._fail(b"unbalanced quotes in request")
                        return
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
                    self._fail(b"expected '$', got '" + buf[pos : pos + 1] + b"'")
                    return
                nl = find(b"\r\n", pos)
                if nl < 0:
                    break
                n = small.get(buf[pos + 1 : nl])
                if n is None:
                    n = parse_int(buf[pos + 1 : nl])
                    if n is None or n < 0 or n > max_bulk:
                        self._fail(b"invalid bulk length")
                        return
                start = nl + 2
                stop = start + n
                if stop + 2 > end:
                    # The bulk string goes on in the next packets: keep what came of it, uncopied if it is all.
                    if stop <= end:
                        first = buf[start:stop]
                        self._vleft = 0
                        self._crlf = stop + 2 - end
                    else:
                        first = buf[start:]
                        self._vleft = stop - end
                        self._crlf = 2
                    self._parts = [first] if first else []
                    self._args = args
                    self._left = left
                    self._done = end - begun
                    return
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
        if until_idle and args is None:
            self.stopped = pos
        if pos < end:
            if until_idle and args is None:
                return  # the rest is the caller's
            self._keep_line(buf[pos:] if pos else buf, out)


def _canonical_end(commands: List[Command], data: bytes, start: int) -> int:
    """Where `commands` end in `data` if `data[start:]` spells them as RESP arrays of bulk strings, else -1.

    hiredis checks every length and every line end but takes a status, a
    big number or a verbatim string inside an array for a bulk string, and a
    set or an attribute for an array; Redis refuses them all. The commands'
    lengths give where each element of a canonical encoding starts, so one
    look at each element's type byte tells: the first element written any
    other way is where that look fails, as everything before it was where
    expected. Nothing but the type bytes is read: the cost follows the number
    of elements, not the bytes. An element that is not bytes (an integer, a
    null, a nested map) fails too.
    """
    pos = start
    heads = _HEAD_SIZE
    sizes = _BULK_SIZE
    try:
        for cmd in commands:
            if data[pos] != 42:  # '*'
                return -1
            pos += heads[len(cmd)]
            for arg in cmd:
                if data[pos] != 36:  # '$'
                    return -1
                pos += sizes[len(arg)]
    except IndexError:  # a length past the tables (a value of 64 KB or more), or past the data
        return _canonical_end_slowly(commands, data, start)
    except TypeError:  # not bytes
        return -1
    return pos


def _canonical_end_slowly(commands: List[Command], data: bytes, start: int) -> int:
    """`_canonical_end` for any lengths."""
    pos = start
    end = len(data)
    try:
        for cmd in commands:
            if pos >= end or data[pos] != 42:
                return -1
            pos += len(str(len(cmd))) + 3
            for arg in cmd:
                if type(arg) is not bytes or pos >= end or data[pos] != 36:
                    return -1
                n = len(arg)
                pos += len(str(n)) + 5 + n
    except TypeError:
        return -1
    return pos if pos <= end else -1


#: The encoded size of a bulk string of each length below 64 KB ("$N\r\n" + data + "\r\n"), and of an array
#: header of each count ("*N\r\n"): the lengths `_canonical_end` steps by.
_BULK_SIZE = [len(str(n)) + 5 + n for n in range(1 << 16)]
_HEAD_SIZE = [len(str(n)) + 3 for n in range(1 << 16)]


#: Up to this many bytes per element, a packet hiredis read is checked by `_plain` (loops in C, a scan
#: of the bytes for each RESP3 mark) before `_canonical_end` (a look at each element, in Python).
_CHECKED_IN_C = 64
#: Type bytes of what hiredis hands back as bytes or a plain list, though Redis refuses it inside a request.
_MARKS = (b"+", b"=", b"(", b">", b"~", b"|", b"%")


def _plain(commands: List[Command], data: bytes, start: int) -> bool:
    """Whether `commands`, hiredis's reading of all of `data[start:]`, are arrays of bulk strings for sure.

    Every command is a list (the caller checked); every element must be bytes.
    A status, verbatim or big-number element also comes back as bytes, and a
    set, push or attribute as a list, so a packet holding any of their type
    bytes anywhere is not judged here (False: `_canonical_end` looks at each
    element).
    """
    if set(map(type, chain.from_iterable(commands))) != {bytes}:
        return False
    return max(map(data.find, _MARKS, repeat(start))) < 0  # looped in C too


#: A packet shorter than this holds a command or two: the pure reader beats hiredis's
#: fixed cost per packet there (measured on CPython 3.11).
SMALL_PACKET = 96

#: Type bytes of what hiredis makes a list for, as long as the header's count says, when it reads
#: the header: arrays, sets, pushes, and attributes (twice the count: keys and values). A map's
#: dict is not sized up front.
_AGGREGATES = ((b"*", 1), (b"~", 1), (b">", 1), (b"|", 2))
#: For each, the type byte before two digits or more (a one-digit count cannot reserve more than
#: 9 slots for the 4 bytes of its header); 18 digits at most, so `int` always takes them.
_COUNTED = {mark: re.compile(re.escape(mark) + rb"([0-9]{2,18})") for mark, _ in _AGGREGATES}
#: Bytes per type byte found above which a search for each (memchr, then a call) costs less than
#: the regular expression's walk over every byte (measured with callgrind on CPython 3.11).
_SPARSE = 512


def _bounded_aggregates(data: bytes, start: int) -> bool:
    """Whether the aggregate headers in `data[start:]` announce no more elements than it has bytes.

    hiredis makes an array's list when it reads the header, as long as the
    header says, before a single element came, and keeps it while it waits
    for them. A header of two billion elements costs nothing then (the pages
    are not touched), but the list is freed element by element (8 s here),
    and a push's is walked as it is read (a minute); headers of a few digits
    nested a thousand deep add up the same way. Complete commands hold at
    least four bytes per element, so a packet whose headers announce more
    elements than it has bytes (counting only headers of two digits or more:
    those of one digit reserve at most 9 slots for 4 bytes, a bounded
    multiple of the packet's size whatever their number) goes to the pure reader,
    which makes room as elements come; so does a command too big for one
    packet. The type bytes are found one by one while they are sparse (large
    values: a search each) and by one pass of a regular expression once they
    are dense (every command starts with one), so the cost stays a fraction
    of what hiredis spends. Only a value holding such a byte before digits
    adds to the count; it sends its packet the slower way only if it holds
    as many as the packet has bytes.
    """
    n = len(data)
    budget = n - start
    find = data.find
    for mark, slots in _AGGREGATES:
        counted = _COUNTED[mark]
        i = find(mark, start)
        hits, since = 0, i
        while i >= 0:
            if i + 2 < n and data[i + 2] != 13:  # not a one-digit header: read its count
                m = counted.match(data, i)
                if m is not None:
                    budget -= slots * int(m.group(1))
                    if budget < 0:
                        return False
            hits += 1
            if hits == 8:
                if i - since < 8 * _SPARSE:  # dense: the rest in one pass
                    budget -= slots * sum(map(int, counted.findall(data, i + 1)))
                    if budget < 0:
                        return False
                    break
                hits, since = 0, i
            i = find(mark, i + 1)
    return True


#: An element of this many bytes or more among the first of a packet sends the packet to the pure
#: reader: it takes a long value with one slice, where hiredis's checks here cost by the byte and by
#: what the value holds (its type bytes and digits). Measured with callgrind on CPython 3.11, per SET
#: through this reader, 16 to a packet, values of redis-benchmark's random characters: through
#: hiredis 21,901 instructions at 640 bytes, 23,433 at 768, 30,544 at 1,000; sent to the pure reader
#: (the look at the headers included) 23,755 at 768, 24,004 at 1,000. Values of one repeated byte
#: cost hiredis less (15,493 at 768): this is where random-looking values break even.
LARGE_ELEMENT = 768
#: How many elements of a packet `_large_first` looks at: enough for the value of a SET or an APPEND.
_PEEKED = 4


def _large_first(data: bytes, start: int) -> bool:
    """Whether one of the first few elements of `data[start:]`, a packet that begins a command, is large.

    A second command starting within `LARGE_ELEMENT` bytes means short
    values: one bounded search tells, and spares the rest. Otherwise it reads
    the elements' headers only, stepping over what they announce, so its
    cost does not follow the packet's size. It looks at up to `_PEEKED`
    elements whatever the array's count, so it may look into the next
    command: that only sends a packet to the pure reader, which is never
    wrong. A packet it cannot read that far (an element that is not a bulk
    string, a header cut off or not a length) is not judged large: hiredis
    and its checks take it as before.
    """
    if data.find(b"\r\n*", start, start + LARGE_ELEMENT) >= 0:
        return False
    m = _ARRAY_HEAD.match(data, start)
    if m is None:
        return False
    pos = m.end()
    bulk = _BULK_HEAD.match
    for _ in range(_PEEKED):
        m = bulk(data, pos)
        if m is None:
            return False
        n = int(m.group(1))
        if n >= LARGE_ELEMENT:
            return True
        pos = m.end() + n + 2
    return False


_ARRAY_HEAD = re.compile(rb"\*[0-9]{1,18}\r\n")
_BULK_HEAD = re.compile(rb"\$([0-9]{1,18})\r\n")


class HiredisReader:
    """The `PureReader` interface, with hiredis parsing whole packets of arrays.

    hiredis parses replies, not requests: it knows no inline commands, no
    512 MB limit, and takes nested arrays, integers, nulls and RESP3 types
    inside an array. So a packet goes to hiredis only when it starts a
    command with '*', and what hiredis makes of it counts only if it spells
    exactly the same commands as RESP arrays of bulk strings: one look at each
    element's type byte (`_canonical_end`) tells, at a cost that follows the
    number of elements, not of bytes. A packet with anything Redis would judge
    otherwise (an error, a nested array, an integer) goes whole to a
    `PureReader`, which words the error as Redis does. When hiredis stops
    inside a command, the rest of the packet, from that command's first byte,
    goes to the `PureReader`, which keeps what it needs of it until it finishes
    that command; the next packet that starts afresh goes to hiredis again.

    hiredis makes an array's list as long as its header says when it reads
    the header, so a packet whose headers announce more elements than it has
    bytes goes to the pure reader (`_bounded_aggregates`); and a hiredis
    reader that stopped inside an array is dropped at once, not kept for the
    next packet. A packet whose first elements hold a long value
    (`LARGE_ELEMENT` bytes or more) goes to the pure reader too, whatever
    follows it: the checks above cost by the byte there, the pure reader by
    the element.
    """

    __slots__ = ("_max_bulk", "_pure", "_reader", "_small")

    def __init__(self, small_packet: int = SMALL_PACKET, max_bulk: int = MAX_BULK) -> None:
        """`small_packet`: packets shorter than this go to the pure reader; `max_bulk`: proto-max-bulk-len.

        hiredis itself knows no limit, so a packet longer than `max_bulk`
        (which might hold a whole bulk string over it) goes to the pure reader.
        """
        if _HiredisReader is None:
            raise RuntimeError("HiredisReader needs the hiredis package")
        self._pure = PureReader(max_bulk)
        self._max_bulk = max_bulk
        self._reader = _HiredisReader()
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
        if type(data) is not bytes:
            data = bytes(data)
        pure = self._pure
        if not pure.busy:
            return self._feed(data, 0)
        # Finish the command begun in an earlier packet; then the rest is hiredis's again.
        finished = pure.feed(data, True)
        rest = pure.stopped
        if rest < len(data) and pure.pending == 0 and pure.error is None:
            finished += self._feed(data, rest)
        return finished

    def _feed(self, data: bytes, start: int) -> List[Command]:
        """`data[start:]`, which begins between commands."""
        pure = self._pure
        n = len(data) - start
        if n <= 0:
            return []
        if n < self._small or n > self._max_bulk or pure.error is not None or data[start] != 42:
            return pure.feed(data, False, start)
        if _large_first(data, start):
            return pure.feed(data, False, start)  # long values: the pure reader takes each with one slice
        if not _bounded_aggregates(data, start):
            return pure.feed(data, False, start)  # hiredis would size lists by the headers, not by what came
        reader = self._reader
        reader.feed(data, start)
        try:
            out: List[Command] = list(iter(reader.gets, False))  # gets() until False, looped in C
        except Exception:  # a protocol error, or a map keyed by a list: the pure reader judges
            self._reader = _HiredisReader()
            return pure.feed(data, False, start)
        arrays = all(out)  # no empty or null arrays
        # Then only lists (hiredis's arrays), and how many elements they hold.
        if arrays and set(map(type, out)) == {list} and n <= _CHECKED_IN_C * sum(map(len, out)):
            # Small elements: checks looped in C cost less than a look at each element in Python.
            try:
                reader.feed(b"*0\r\n")  # comes back alone only if hiredis stopped between commands
                whole = reader.gets() == [] and not reader.has_data()
            except Exception:
                whole = False
            if whole and _plain(out, data, start):
                return out
            if not whole:
                self._reader = reader = _HiredisReader()  # it took the probe inside an array
        end = _canonical_end(out, data, start) if arrays else -1
        if end == len(data):
            return out  # the common case: hiredis took it all, and holds nothing
        self._reader = _HiredisReader()
        if end < 0:
            return pure.feed(data, False, start)  # nothing of this packet ran yet: the pure reader takes it all
        # A command cut short: the pure reader takes the rest, from its first byte.
        out += pure.feed(data, False, end)
        return out


def make_reader(pure: bool = False, max_bulk: int = MAX_BULK) -> Union[PureReader, HiredisReader]:
    """The fastest reader available: hiredis-backed when it is installed, unless `pure`.

    `max_bulk` is Redis's proto-max-bulk-len: a longer bulk string is the
    protocol error "invalid bulk length".
    """
    if pure or _HiredisReader is None:
        return PureReader(max_bulk)
    return HiredisReader(max_bulk=max_bulk)
