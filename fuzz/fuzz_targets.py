"""Fuzz targets: each takes arbitrary bytes and fails (raises `Finding`, or anything else) on a bug.

- `resp`: the Redis clone's request readers. The input is cut into packets
  at places its first bytes choose; the pure reader fed those packets must
  agree with itself fed the whole input at once, and the hiredis-backed
  reader (where hiredis is installed) must agree with both: the same
  commands, in order, and the same protocol error, if any.
- `http`: the HTTP example's request parser. Cut the same way, the input
  must give the same requests (method, target, version, fields, body,
  keep-alive) and the same protocol error as the whole input at once; and
  nothing but `ProtocolError` may come out of it.

A hang is caught by the fuzzer's own per-input time-out (atheris's
`-timeout`), or by hypothesis's deadline in the fallback driver.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from minihttp.parser import ProtocolError, RequestParser
from redisclone.resp import HAVE_HIREDIS, HiredisReader, PureReader


class Finding(AssertionError):
    """The fuzzer found a bug: the message says what disagreed with what."""


def packets(data: bytes) -> Tuple[bytes, List[bytes]]:
    """`data` without its first byte, and cut into packets at lengths that byte's bits choose."""
    if not data:
        return b"", []
    seed, body = data[0], data[1:]
    sizes = [1 + ((seed >> shift) & 7) * (1 + (seed & 3) * 5) for shift in (0, 2, 4)]
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        out.append(body[i : i + n])
        i += n
        k += 1
    return body, out


def _read(reader: Any, pieces: List[bytes]) -> Tuple[List[List[bytes]], bytes | None]:
    commands: List[List[bytes]] = []
    for piece in pieces:
        commands.extend(reader.feed(piece))
        if reader.error is not None:
            break
    return commands, reader.error


def resp(data: bytes) -> None:
    whole, pieces = packets(data)
    expected = _read(PureReader(), [whole] if whole else [])
    got = _read(PureReader(), pieces)
    if got != expected:
        raise Finding(f"the pure reader in packets {pieces!r} gave {got!r}, all at once {expected!r}")
    if HAVE_HIREDIS:
        for small in (0, 64):  # hiredis for every packet, and only for packets of 64 bytes or more
            hired = _read(HiredisReader(small_packet=small), pieces)
            if hired != expected:
                raise Finding(f"the hiredis reader (small_packet={small}) gave {hired!r}, the pure one {expected!r}")


Parsed = Tuple[List[Tuple[Any, ...]], Optional[int]]


def _parse(pieces: List[bytes]) -> Parsed:
    parser = RequestParser(max_body=1 << 16)
    requests: List[Tuple[Any, ...]] = []
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                r = parser.next_request()
                if r is None:
                    break
                requests.append((r.method, r.target, r.minor, tuple(r.headers), r.body, r.keep_alive))
    except ProtocolError as err:
        return requests, err.status
    return requests, None


def http(data: bytes) -> None:
    whole, pieces = packets(data)
    expected = _parse([whole] if whole else [])
    got = _parse(pieces)
    if got != expected:
        raise Finding(f"the parser in packets {pieces!r} gave {got!r}, all at once {expected!r}")


TARGETS: Dict[str, Callable[[bytes], None]] = {"resp": resp, "http": http}
