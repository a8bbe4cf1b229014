"""The Redis clone's request readers on their own: the pure one, and the hiredis-backed one."""

from __future__ import annotations

import time
from typing import Callable, List, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redisclone.aof import encode_command
from redisclone.resp import (
    HAVE_HIREDIS,
    LARGE_ELEMENT,
    MAX_BULK,
    HiredisReader,
    PureReader,
    _bounded_aggregates,
    _large_first,
    parse_int,
    split_inline,
)

Reader = Union[PureReader, HiredisReader]
READERS = ["pure", "hiredis"]


def _make(kind: str) -> Reader:
    if kind == "hiredis":
        if not HAVE_HIREDIS:
            pytest.skip("hiredis is not installed")
        return HiredisReader(small_packet=0)  # hiredis even for the shortest packets
    return PureReader()


@pytest.fixture(params=READERS)
def make_reader(request: pytest.FixtureRequest) -> Callable[[], Reader]:
    """A factory of the reader under test; every reader test runs on both."""
    kind = str(request.param)
    _make(kind)  # skip early when it is not available
    return lambda: _make(kind)


def feed_all(reader: Reader, pieces: List[bytes]) -> List[List[bytes]]:
    out: List[List[bytes]] = []
    for piece in pieces:
        out.extend(reader.feed(piece))
    return out


# ---- valid streams ---------------------------------------------------------

_arg = st.binary(max_size=40) | st.sampled_from([b"", b"\r\n", b"\r", b"\n", b"*1\r\n", b"$3\r\n", b"a b"])
_word: st.SearchStrategy[bytes] = st.binary(min_size=1, max_size=12).filter(
    lambda b: not any(c in b" \t\r\n\v\f\"'" for c in b) and not b.startswith(b"*")
)


@st.composite
def _stream(draw: st.DrawFn) -> tuple[bytes, List[List[bytes]]]:
    """RESP arrays and inline commands mixed, and the commands they hold."""
    parts: List[bytes] = []
    commands: List[List[bytes]] = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            args = draw(st.lists(_arg, min_size=1, max_size=5))
            parts.append(encode_command(args))
        else:
            args = draw(st.lists(_word, min_size=1, max_size=4))
            parts.append(b" ".join(args) + draw(st.sampled_from([b"\r\n", b"\n"])))
        commands.append(args)
    return b"".join(parts), commands


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_stream(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_parses_as_the_whole(
    make_reader: Callable[[], Reader], case: tuple[bytes, List[List[bytes]]], cuts: List[int]
) -> None:
    stream, commands = case
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    whole = make_reader()
    assert feed_all(whole, [stream]) == commands
    split = make_reader()
    assert feed_all(split, pieces) == commands
    assert split.error is None and not split.busy and split.pending == 0


def test_byte_by_byte(make_reader: Callable[[], Reader]) -> None:
    stream = encode_command([b"SET", b"k", b"v\r\nwith\r\nbreaks"]) + b"PING\r\n" + encode_command([b"GET", b"k"])
    reader = make_reader()
    assert feed_all(reader, [stream[i : i + 1] for i in range(len(stream))]) == [
        [b"SET", b"k", b"v\r\nwith\r\nbreaks"],
        [b"PING"],
        [b"GET", b"k"],
    ]


def test_a_pipeline_in_one_packet(make_reader: Callable[[], Reader]) -> None:
    packet = encode_command([b"SET", b"key", b"xxx"]) * 1000
    assert make_reader().feed(packet) == [[b"SET", b"key", b"xxx"]] * 1000


def test_empty_and_null_arrays_and_blank_lines_are_skipped(make_reader: Callable[[], Reader]) -> None:
    assert make_reader().feed(b"*0\r\n*-1\r\n*-5\r\n\r\n   \r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_inline_quotes_as_redis_splits_them(make_reader: Callable[[], Reader]) -> None:
    reader = make_reader()
    line = b"set \"a b\" 'c d' \"\\x41\\n\\\"\" 'it\\'s'\r\n"
    assert reader.feed(line) == [[b"set", b"a b", b"c d", b'A\n"', b"it's"]]


def test_split_inline() -> None:
    assert split_inline(b"  get   key  \r") == [b"get", b"key"]
    assert split_inline(b'"') is None
    assert split_inline(b'"a"b') is None  # a closing quote must be followed by a space
    assert split_inline(b"'a") is None
    assert split_inline(b'""') == [b""]


def test_a_large_value_in_small_pieces_is_not_copied_again_and_again(make_reader: Callable[[], Reader]) -> None:
    value = bytes(range(256)) * 1200  # 300 KB: quadratic copying would take many seconds
    stream = encode_command([b"SET", b"big", value])
    reader = make_reader()
    start = time.monotonic()
    out = feed_all(reader, [stream[i : i + 1] for i in range(len(stream))])
    assert out == [[b"SET", b"big", value]]
    assert time.monotonic() - start < 5.0


def test_pending_counts_an_incomplete_command(make_reader: Callable[[], Reader]) -> None:
    reader = make_reader()
    head = encode_command([b"PING"])
    partial = encode_command([b"SET", b"k", b"value"])[:-4]
    assert reader.feed(head + partial) == [[b"PING"]]
    assert reader.busy and reader.pending == len(partial)


# ---- malformed input ------------------------------------------------------------

PROTOCOL_ERRORS = [
    (b"*1\r\n+PING\r\n", b"expected '$', got '+'"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"expected '$', got ':'"),
    (b"*1\r\n*1\r\n$1\r\na\r\n", b"expected '$', got '*'"),
    (b"*1\r\n$-1\r\n", b"invalid bulk length"),
    (b"*1\r\n$03\r\nabc\r\n", b"invalid bulk length"),
    (b"*1\r\n$+3\r\nabc\r\n", b"invalid bulk length"),
    (b"*1\r\n$ 3\r\nabc\r\n", b"invalid bulk length"),
    (b"*1\r\n$x\r\n", b"invalid bulk length"),
    (b"*1\r\n$%d\r\n" % (MAX_BULK + 1), b"invalid bulk length"),
    (b"*1\r\n$99999999999999999999\r\n", b"invalid bulk length"),
    (b"*x\r\n", b"invalid multibulk length"),
    (b"*01\r\n", b"invalid multibulk length"),
    (b"*3000000000\r\n", b"invalid multibulk length"),
    (b"*99999999999999999999999\r\n", b"invalid multibulk length"),
    (b'set k "v\r\n', b"unbalanced quotes in request"),
    (b"x" * 70_000, b"too big inline request"),
    (b"*" + b"1" * 70_000, b"too big mbulk count string"),
    (b"*1\r\n$" + b"1" * 70_000, b"too big bulk count string"),
]


@pytest.mark.parametrize(("data", "error"), PROTOCOL_ERRORS)
def test_protocol_errors_are_worded_as_redis_words_them(
    make_reader: Callable[[], Reader], data: bytes, error: bytes
) -> None:
    reader = make_reader()
    good = encode_command([b"PING"])
    assert reader.feed(good + data) == [[b"PING"]]  # what came before the error still counts
    assert reader.error == error
    assert reader.feed(good) == []  # and nothing after it


@pytest.mark.parametrize(("data", "error"), PROTOCOL_ERRORS)
def test_protocol_errors_in_pieces(make_reader: Callable[[], Reader], data: bytes, error: bytes) -> None:
    reader = make_reader()
    step = max(1, len(data) // 7)
    feed_all(reader, [data[i : i + step] for i in range(0, len(data), step)])
    assert reader.error == error


def test_an_oversized_bulk_is_refused_from_its_header(make_reader: Callable[[], Reader]) -> None:
    reader = make_reader()
    assert reader.feed(b"*2\r\n$3\r\nSET\r\n$600000000\r\n") == []
    assert reader.error == b"invalid bulk length"
    assert reader.pending == 0


def test_a_long_array_header_reserves_nothing(make_reader: Callable[[], Reader]) -> None:
    # 2^31 - 1 arguments is allowed; the reader must not make room for them up front.
    reader = make_reader()
    assert reader.feed(b"*2147483647\r\n$1\r\na\r\n") == []
    assert reader.error is None and reader.busy


#: Packets whose headers announce billions of elements: at the top, after a whole command, nested, as
#: a RESP3 set, push or attribute (which Redis refuses, but hiredis reads), followed by a protocol
#: error; and a thousand nested headers of four digits (ten million elements in 7 KB).
HUGE_HEADERS = [
    b"*2147483647\r\n" + b"$1\r\na\r\n" * 20,
    b"*1\r\n$4\r\nPING\r\n" * 8 + b"*2147483647\r\n$1\r\na\r\n",
    b"*2\r\n$1\r\na\r\n*2147483647\r\n" + b"*1\r\n" * 30,
    b"*1\r\n~2147483647\r\n" + b"$1\r\n*\r\n" * 20,
    b"*1\r\n>2147483647\r\n" + b"$1\r\na\r\n" * 20,
    b"*1\r\n|2147483647\r\n" + b"$1\r\na\r\n" * 20,
    b"*2147483647\r\n?",
    b"*1\r\n" + b">9999\r\n" * 1000,
]


class _Refuses:
    """A stand-in for hiredis's reader that fails the test when fed."""

    def feed(self, *args: object) -> None:
        raise AssertionError("hiredis was fed the packet")


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
@pytest.mark.parametrize(
    "packet", HUGE_HEADERS, ids=["top", "after", "nested", "set", "push", "attribute", "error", "nested-small"]
)
def test_a_huge_header_never_reaches_hiredis(packet: bytes) -> None:
    """hiredis sizes lists by headers as it reads them: freeing one of 2^31 took 8 s here, a push's a minute."""
    assert not _bounded_aggregates(packet, 0)
    reader = HiredisReader(small_packet=0)
    reader._reader = _Refuses()
    before = [[b"PING"]] * 8 if packet.startswith(b"*1\r\n$4\r\nPING") else []
    assert reader.feed(packet) == before
    assert reader.busy or reader.error is not None  # the pure reader holds the command, or refused it


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
def test_a_reader_fed_a_huge_header_goes_at_once() -> None:
    reader = HiredisReader(small_packet=0)
    started = time.monotonic()
    reader.feed(HUGE_HEADERS[0])
    del reader
    # Without the check this took 8 s here: 2 s leaves a loaded machine room.
    assert time.monotonic() - started < 2.0


def test_only_headers_announcing_more_elements_than_bytes_keep_a_packet_from_hiredis() -> None:
    mset = b"*2001\r\n$4\r\nMSET\r\n" + b"$1\r\nk\r\n$1\r\nv\r\n" * 1000
    assert _bounded_aggregates(mset, 0)  # a big command, whole
    assert _bounded_aggregates(mset[:4000], 0)  # its first 4,000 bytes: 2,001 announced, hiredis may
    assert not _bounded_aggregates(mset[:1500], 0)  # its first 1,500: the pure reader carries it over
    assert _bounded_aggregates(b"*1\r\n" * 100 + b"*9\r\n" * 100, 0)  # one digit: at most 9 for 4 bytes
    assert _bounded_aggregates(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n" + b">" * 2000 + b"\r\n", 0)
    assert _bounded_aggregates(b"*1\r\n$4\r\nPING\r\n" * 200, 0)
    assert not _bounded_aggregates(b"*1\r\n$4\r\nPING\r\n" * 200 + b"*10000\r\n", 0)  # dense: the regex
    assert _bounded_aggregates(b"*1\r\n$4\r\nPING\r\n" * 200 + b"*1000\r\n", 0)
    assert not _bounded_aggregates(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\n*99999\r\n", 0)  # in a value too
    assert _bounded_aggregates(b"*2\r\n$3\r\nGET\r\n$5\r\n12345\r\n", 0)  # digits after no type byte
    assert _bounded_aggregates(b"*2\r\n$3\r\nGET\r\n$5\r\n12345\r\n*12", 0)  # a header still cut short


def test_the_sparse_search_counts_every_header() -> None:
    """Large values: more than 8 type bytes, 512 bytes apart or more, each found by a search."""
    big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n" + b"x" * 1000 + b"\r\n"
    assert _bounded_aggregates(big * 20, 0)
    assert not _bounded_aggregates(big * 12 + b"*99999\r\n" + big * 3, 0)
    assert not _bounded_aggregates(big * 12 + b"*1\r\n" + b"*999\r\n" * 30 + big, 0)  # turns dense


def _set(value: bytes) -> bytes:
    return encode_command([b"SET", b"k", value])


def test_large_first_reads_the_first_elements_headers() -> None:
    assert _large_first(_set(b"v" * LARGE_ELEMENT), 0)
    assert _large_first(_set(b"v" * LARGE_ELEMENT)[:40], 0)  # the header is enough: the value may follow
    assert _large_first(b"*1\r\n$100000\r\n", 0)
    assert not _large_first(_set(b"v" * (LARGE_ELEMENT - 1)), 0)
    assert not _large_first(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" + _set(b"v" * 1000), 0)  # the next command's
    assert not _large_first(b"*5\r\n" + b"$1\r\nx\r\n" * 4 + b"$1000\r\n", 0)  # past the first four
    assert not _large_first(b"*3\r\n$3\r\nSET\r\n:1\r\n$1000\r\n", 0)  # not bulk strings: hiredis's checks judge
    assert not _large_first(b"*3\r\n$3\r\nSET\r\n$-1\r\n", 0)
    assert not _large_first(b"*3\r\n$3\r\nSE", 0)
    packet = b"PING\r\n" + _set(b"v" * LARGE_ELEMENT)
    assert _large_first(packet, 6) and not _large_first(packet, 0)


class _Counts:
    """hiredis's reader, counting the packets it is fed."""

    def __init__(self, reader: object) -> None:
        self.reader = reader
        self.fed = 0

    def feed(self, *args: object) -> None:
        self.fed += 1
        self.reader.feed(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.reader, name)


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
def test_packets_of_long_values_go_to_the_pure_reader() -> None:
    """hiredis's checks cost by the byte of a value; the pure reader takes a long value with one slice."""
    long, short = b"a>1b" * (LARGE_ELEMENT // 4), b"a>1b" * (LARGE_ELEMENT // 4 - 1)
    reader = HiredisReader(small_packet=0)
    reader._reader = _Refuses()
    assert reader.feed(_set(long) * 3) == [[b"SET", b"k", long]] * 3
    assert reader.feed(_set(long)[:100]) == []  # a long value cut short: carried over by the pure reader
    # The pure reader finishes that command, and the next one, from the middle of the packet, is long too.
    assert reader.feed(_set(long)[100:] + _set(long)) == [[b"SET", b"k", long]] * 2
    reader = HiredisReader(small_packet=0)
    counting = reader._reader = _Counts(reader._reader)
    assert reader.feed(_set(short) * 3) == [[b"SET", b"k", short]] * 3
    assert counting.fed == 1  # values just shorter: hiredis
    # Short first, long after: hiredis, judged as the pure reader judges.
    packet = _set(b"v") + _set(long) * 2
    assert reader.feed(packet) == PureReader().feed(packet)
    assert counting.fed == 2
    # A long value holding what looks like the next command near its start: hiredis too, judged alike.
    tricky = b"\r\n*" + long[3:]
    packet = _set(tricky) * 2
    assert reader.feed(packet) == [[b"SET", b"k", tricky]] * 2
    assert counting.fed == 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    junk=st.binary(max_size=200)
    | st.lists(
        st.sampled_from([b"*", b"$", b"\r\n", b"1", b"-1", b"0", b"99999999999", b"+", b":", b"a", b" ", b'"'])
    ).map(b"".join)
)
def test_junk_parses_or_errs_never_raises(make_reader: Callable[[], Reader], junk: bytes) -> None:
    whole, split = make_reader(), make_reader()
    commands = whole.feed(junk)
    assert all(type(c) is list and c and all(type(a) is bytes for a in c) for c in commands)
    pieces = [junk[i : i + 3] for i in range(0, len(junk), 3)]
    # Split or not, the same commands come out, then the same error (or none).
    assert feed_all(split, pieces) == commands
    assert split.error == whole.error


def test_parse_int_is_as_strict_as_string2ll() -> None:
    assert parse_int(b"0") == 0
    assert parse_int(b"-12") == -12
    assert parse_int(b"9223372036854775807") == 2**63 - 1
    assert parse_int(b"-9223372036854775808") == -(2**63)
    for bad in (b"", b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1_0", b"9223372036854775808", b"1.5", b"\xd9\xa1"):
        assert parse_int(bad) is None, bad


_PIECES = [b"*1\r\n", b"*2\r\n", b"$1\r\n", b"$3\r\n", b"a\r\n", b"abc\r\n", b"+OK\r\n", b":1\r\n", b"=5\r\n"]
_PIECES += [b"(1\r\n", b">1\r\n", b"_\r\n", b"*-1\r\n", b"*0\r\n", b"$-1\r\n", b"%1\r\n"]
_PIECES += [b"PING\r\n", b"*1\r\n$4\r\nPING\r\n", b"~1\r\n", b"|1\r\n", b",1.5\r\n", b"#t\r\n", b"!3\r\nERR\r\n"]
# Long values, which take the pure reader's way from the first element's header on.
_PIECES += [b"$800\r\n", b"v" * 800 + b"\r\n", _set(b"v" * 800)]


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
@settings(max_examples=300, deadline=None)
@given(
    junk=st.lists(
        st.sampled_from(_PIECES),
        max_size=12,
    ).map(b"".join),
    cut=st.integers(0, 2000),
)
def test_the_hiredis_reader_judges_as_the_pure_one(junk: bytes, cut: int) -> None:
    pure, fast = PureReader(), HiredisReader(small_packet=0)
    pieces = [junk[:cut], junk[cut:]]
    assert feed_all(fast, pieces) == feed_all(pure, pieces)
    assert fast.error == pure.error
    assert fast.pending == pure.pending


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
def test_hiredis_takes_over_again_after_a_command_cut_between_packets() -> None:
    command = [b"SET", b"key", b"value"]
    stream = encode_command(command) * 20_000  # 540 KB: packets end inside commands
    reader = HiredisReader()
    out = feed_all(reader, [stream[i : i + 65536] for i in range(0, len(stream), 65536)])
    assert out == [command] * 20_000
    # The pure reader finished the command cut at the last packet's start, nothing more.
    assert reader._pure.stopped < len(encode_command(command))


def test_the_canonical_end_is_the_canonical_length() -> None:
    from redisclone.resp import _canonical_end

    commands = [[b"SET", b"k" * 70_000, b"v"], [b"GET", b"x" * 9], [b"a" * 10], [b"MSET", *([b"y" * 99] * 12)]]
    data = b"".join(encode_command(c) for c in commands)
    assert _canonical_end(commands, data, 0) == len(data)
    first = len(encode_command(commands[0]))
    assert _canonical_end(commands[1:], data, first) == len(data)


def test_small_plain_commands_are_judged_in_c_and_anything_marked_is_left_to_the_walk() -> None:
    from redisclone.resp import _CHECKED_IN_C, _plain

    commands = [[b"SET", b"key", b"abc"], [b"GET", b"key"], [b"PING"]] * 40
    data = b"".join(encode_command(c) for c in commands)
    assert len(data) <= _CHECKED_IN_C * sum(map(len, commands))  # what HiredisReader sends to _plain
    assert _plain(commands, data, 0)
    assert not _plain(commands, data + b"+", 0)  # a status's type byte anywhere: looked at element by element
    assert not _plain([[b"SET", b"key", 1]], data, 0)  # type: ignore[list-item]
    assert _plain(commands[1:], b"+" + data[: len(data) - 1], 1)  # only from `start` on


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
@pytest.mark.parametrize(
    "stream",
    [
        b"*1\r\n$1\r\na\r\n~1\r\n$3\r\nabc\r\n",  # a RESP3 set: a list to hiredis, inline text to Redis
        b"*1\r\n$1\r\na\r\n|1\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n$4\r\nPING\r\n",  # an attribute
        b"*1\r\n$1\r\na\r\n%1\r\n$1\r\na\r\n$1\r\nb\r\n",  # a map: a dict to hiredis
        b"*1\r\n$1\r\na\r\n>1\r\n$4\r\nPING\r\n",  # a push
        b"*1\r\n$1\r\na\r\n+PING\r\n",  # a status line
        b"*2\r\n$1\r\na\r\n=8\r\ntxt:PING\r\n",  # a verbatim string inside an array
        b"*2\r\n$1\r\na\r\n(12\r\n",  # a big number inside an array
        b"*1\r\n$1\r\na\r\n:0\r\n:5\r\n_\r\n#t\r\n,1.5\r\n",  # integers, null, boolean, double
        b"*1\r\n$1\r\na\r\n*0\r\n*-1\r\n*1\r\n$-1\r\n",  # empty and null arrays, a null bulk
    ],
)
def test_what_hiredis_takes_and_redis_refuses(stream: bytes) -> None:
    pure, fast = PureReader(), HiredisReader(small_packet=0)
    assert fast.feed(stream) == pure.feed(stream)
    assert fast.error == pure.error


@pytest.mark.skipif(not HAVE_HIREDIS, reason="hiredis is not installed")
def test_values_that_look_like_resp3_are_still_values() -> None:
    commands = [[b"SET", b"k+%~|", b"a=b(c)>d"], [b"GET", b"~1\r\n$3\r\nabc"]] * 50
    stream = b"".join(encode_command(c) for c in commands)
    reader = HiredisReader(small_packet=0)
    assert reader.feed(stream) == commands
    assert reader.error is None and not reader.busy


@pytest.mark.parametrize("kind", READERS)
def test_proto_max_bulk_len_is_the_readers_limit(kind: str) -> None:
    if kind == "hiredis" and not HAVE_HIREDIS:
        pytest.skip("hiredis is not installed")
    limit = 1 << 20

    def make() -> Reader:
        return HiredisReader(small_packet=0, max_bulk=limit) if kind == "hiredis" else PureReader(limit)

    at = encode_command([b"SET", b"k", b"x" * limit])
    reader = make()
    got = [c for i in range(0, len(at), 65536) for c in reader.feed(at[i : i + 65536])]
    assert got == [[b"SET", b"k", b"x" * limit]] and reader.error is None
    over = make()
    assert over.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (limit + 1)) == []
    assert over.error == b"invalid bulk length"
    whole = make()  # a packet holding a whole bulk over the limit: refused too (hiredis knows no limit)
    assert whole.feed(encode_command([b"SET", b"k", b"y" * (limit + 1)])) == []
    assert whole.error == b"invalid bulk length"
