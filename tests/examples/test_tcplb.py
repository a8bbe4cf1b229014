"""The load balancer's plain objects (`examples/tcplb`), without sockets: parse_backend, Balancer, the PROXY header.

The PROXY protocol bytes are checked against HAProxy's specification
(https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt), built here
from the text of the specification rather than from the module's constants,
and decoded back by a small parser written from the same text.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, List, Tuple, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tcplb import POLICIES, Backend, Balancer, parse_backend, proxy_header_v1, proxy_header_v2

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: The v2 signature, byte by byte as section 2.2 lists it.
Addr = Union[Tuple[Any, ...], str]
SIGNATURE = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def backends(*weights: int) -> List[Backend]:
    return [Backend(f"tcp://127.0.0.1:{7001 + i}", w) for i, w in enumerate(weights)]


def names(balancer: Balancer, picks: List[Union[Backend, None]]) -> str:
    """Picks as letters: the first backend is A, the second B, and so on; `-` for None."""
    return "".join("-" if b is None else "ABCDEFGH"[balancer.backends.index(b)] for b in picks)


# ---- parse_backend ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "addr", "weight"),
    [
        ("tcp://127.0.0.1:6379", "tcp://127.0.0.1:6379", 1),
        ("tcp://127.0.0.1:6379,weight=3", "tcp://127.0.0.1:6379", 3),
        ("unix:///run/app.sock,weight=256", "unix:///run/app.sock", 256),
        ("tcp://[::1]:80,weight=1", "tcp://[::1]:80", 1),
    ],
)
def test_parse_backend(text: str, addr: str, weight: int) -> None:
    b = parse_backend(text)
    assert (b.addr, b.weight, b.up, b.active, b.total) == (addr, weight, True, 0, 0)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no address"),
        (",weight=2", "no address"),
        ("tcp://127.0.0.1:1,weight=0", "weight must be a whole number from 1 to 256"),
        ("tcp://127.0.0.1:1,weight=257", "weight must be a whole number from 1 to 256"),
        ("tcp://127.0.0.1:1,weight=-1", "weight must be a whole number from 1 to 256"),
        ("tcp://127.0.0.1:1,weight=1.5", "weight must be a whole number from 1 to 256"),
        ("tcp://127.0.0.1:1,weight=", "weight must be a whole number from 1 to 256"),
        ("tcp://127.0.0.1:1,weight=\u00b2", "weight must be a whole number from 1 to 256"),  # a superscript two
        ("tcp://127.0.0.1:1,weight", "unknown option 'weight'"),
        ("tcp://127.0.0.1:1,backup", "unknown option 'backup'"),
        ("tcp://127.0.0.1:1,maxconn=5", "unknown option 'maxconn=5'"),
    ],
)
def test_parse_backend_errors_name_the_text(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_backend(text)
    message = str(info.value)
    assert why in message
    assert repr(text) in message


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"backends": []}, "at least one backend"),
        ({"policy": "random"}, "unknown balance 'random'"),
        ({"rise": 0}, "rise and fall must be at least 1"),
        ({"fall": 0}, "rise and fall must be at least 1"),
    ],
)
def test_balancer_refuses_bad_settings(kwargs: dict[str, Any], why: str) -> None:
    args: dict[str, Any] = {"backends": backends(1)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=why):
        Balancer(**args)


def test_policies_are_haproxys_names() -> None:
    assert POLICIES == ("roundrobin", "leastconn", "source")


# ---- roundrobin -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "order"),
    [
        ((1, 1, 1), "ABCABCABC"),
        ((3, 1), "AABAAABA"),
        # nginx's example of smooth weighted round robin: never five A in a row.
        ((5, 1, 1), "AABACAAAABACAA"),
        ((1, 2), "BABBAB"),
    ],
)
def test_roundrobin_is_smooth_and_weighted(weights: Tuple[int, ...], order: str) -> None:
    bal = Balancer(backends(*weights), "roundrobin")
    assert names(bal, [bal.pick() for _ in order]) == order


def test_roundrobin_gives_each_backend_its_weight_per_cycle() -> None:
    weights = (4, 3, 2, 1)
    bal = Balancer(backends(*weights), "roundrobin")
    for _ in range(5):  # every cycle of sum(weights) picks, exactly
        counts = Counter(names(bal, [bal.pick() for _ in range(sum(weights))]))
        assert [counts[c] for c in "ABCD"] == list(weights)


def test_roundrobin_skips_backends_that_are_down_and_takes_them_back() -> None:
    bal = Balancer(backends(1, 1, 1), "roundrobin", fall=1, rise=1)
    b = bal.backends[1]
    bal.report(b, False)
    assert not b.up
    assert names(bal, [bal.pick() for _ in range(6)]) == "ACACAC"
    bal.report(b, True)
    assert Counter(names(bal, [bal.pick() for _ in range(6)])) == {"A": 2, "B": 2, "C": 2}


# ---- leastconn --------------------------------------------------------------------------------------


def test_leastconn_counts_active_connections_for_their_weight() -> None:
    bal = Balancer(backends(1, 2), "leastconn")
    a, b = bal.backends
    picks: List[Union[Backend, None]] = []
    for _ in range(6):  # every connection stays open
        pick = bal.pick()
        assert pick is not None
        bal.connected(pick)
        picks.append(pick)
    assert names(bal, picks) == "ABBABB"
    assert (a.active, b.active) == (2, 4)  # one each per unit of weight
    bal.disconnected(a)
    bal.disconnected(a)
    assert a.active == 0 and a.total == 2
    # A now has the fewest for its weight (0/1 against 4/2), then 1/1 against 4/2.
    nxt = [bal.pick(), None]
    assert nxt[0] is not None
    bal.connected(nxt[0])
    nxt[1] = bal.pick()
    assert names(bal, nxt) == "AA"


def test_leastconn_ties_go_round_robin() -> None:
    bal = Balancer(backends(1, 1, 1), "leastconn")
    assert names(bal, [bal.pick() for _ in range(7)]) == "ABCABCA"  # nobody connected: always a tie
    # Equal load for the weight is a tie too: 2/2 and 1/1.
    bal = Balancer(backends(2, 1), "leastconn")
    a, b = bal.backends
    a.active, b.active = 2, 1
    assert names(bal, [bal.pick() for _ in range(4)]) == "ABAB"


def test_leastconn_ties_go_round_robin_when_a_backend_is_down() -> None:
    bal = Balancer(backends(1, 1, 1), "leastconn", fall=1)
    bal.report(bal.backends[1], False)
    assert names(bal, [bal.pick() for _ in range(6)]) == "ACACAC"
    bal.report(bal.backends[0], False)
    assert names(bal, [bal.pick() for _ in range(3)]) == "CCC"


# ---- source -----------------------------------------------------------------------------------------


def test_source_keeps_a_client_on_its_backend_whatever_its_port() -> None:
    bal = Balancer(backends(1, 1, 1), "source")
    for i in range(50):
        host = f"10.1.{i}.7"
        first = bal.pick((host, 40000))
        assert all(bal.pick((host, port)) is first for port in (1, 2, 65535))
    # IPv6 addresses come as 4-tuples: the host alone counts there too.
    v6 = bal.pick(("2001:db8::1", 1, 0, 0))
    assert bal.pick(("2001:db8::1", 2, 7, 0)) is v6


def test_source_spreads_clients_by_weight() -> None:
    bal = Balancer(backends(1, 1, 2), "source")
    counts = Counter(names(bal, [bal.pick((f"10.{i // 256}.{i % 256}.1", 5)) for i in range(4000)]))
    # Expected 1000, 1000 and 2000: a hash that spreads at all lands well within a quarter of that.
    assert 750 <= counts["A"] <= 1250 and 750 <= counts["B"] <= 1250 and 1500 <= counts["C"] <= 2500


def test_source_only_moves_clients_when_the_set_of_backends_up_changes() -> None:
    bal = Balancer(backends(1, 1, 1), "source", fall=1, rise=1)
    clients = [(f"192.168.0.{i}", 1234) for i in range(100)]
    before = [bal.pick(c) for c in clients]
    down = bal.backends[0]
    bal.report(down, False)
    during = [bal.pick(c) for c in clients]
    assert down not in during
    assert during != before  # the clients of A moved
    bal.report(down, True)
    assert [bal.pick(c) for c in clients] == before  # the same set again: the same backends


def test_source_hash_is_the_same_in_every_process() -> None:
    """Python's `hash` of a str changes per process; the balancer must not use it."""
    code = (
        "from tcplb import Balancer, Backend\n"
        "bal = Balancer([Backend(str(i)) for i in range(7)], 'source')\n"
        "print(','.join(bal.pick((f'10.0.0.{i}', 1)).addr for i in range(40)))\n"
    )
    here = Balancer([Backend(str(i)) for i in range(7)], "source")
    expected = ",".join(b.addr for b in (here.pick((f"10.0.0.{i}", 1)) for i in range(40)) if b is not None)
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(EXAMPLES))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected


# ---- health: rise and fall --------------------------------------------------------------------------


def test_fall_failed_checks_in_a_row_mark_a_backend_down_and_rise_good_ones_up() -> None:
    changes: List[Tuple[str, bool]] = []
    bal = Balancer(backends(1), fall=3, rise=2, on_change=lambda b: changes.append((b.addr, b.up)))
    (b,) = bal.backends
    addr = b.addr

    def state() -> Tuple[bool, List[Tuple[str, bool]]]:
        return b.up, list(changes)

    for _ in range(2):
        bal.report(b, False)
    assert state() == (True, [])
    bal.report(b, True)  # a good check breaks the run of failures
    for _ in range(2):
        bal.report(b, False)
    assert state() == (True, [])
    bal.report(b, False)  # the third in a row
    assert state() == (False, [(addr, False)])
    assert bal.pick() is None
    bal.report(b, False)  # still down: no second change
    bal.report(b, True)
    assert state() == (False, [(addr, False)])
    bal.report(b, False)  # a failure breaks the run of good checks
    bal.report(b, True)
    assert state() == (False, [(addr, False)])
    bal.report(b, True)  # the second in a row
    assert state() == (True, [(addr, False), (addr, True)])
    assert bal.pick() is b
    bal.report(b, True)  # already up: no change
    assert state() == (True, [(addr, False), (addr, True)])


@pytest.mark.parametrize("policy", POLICIES)
def test_pick_is_none_when_every_backend_is_down(policy: str) -> None:
    bal = Balancer(backends(1, 2), policy, fall=1)
    for b in bal.backends:
        bal.report(b, False)
    assert bal.pick(("127.0.0.1", 1)) is None
    bal.report(bal.backends[1], True)
    bal.report(bal.backends[1], True)  # rise=2 by default
    assert bal.pick(("127.0.0.1", 1)) is bal.backends[1]


@pytest.mark.parametrize("policy", POLICIES)
def test_exclude_is_never_picked_for_a_redispatch(policy: str) -> None:
    bal = Balancer(backends(1, 1, 1), policy, fall=1)
    a, b, c = bal.backends
    for i in range(30):
        assert bal.pick((f"10.0.0.{i}", 1), exclude=b) in (a, c)
    bal.report(a, False)
    assert all(bal.pick((f"10.0.0.{i}", 1), exclude=b) is c for i in range(10))
    bal.report(c, False)
    assert bal.pick(("10.0.0.1", 1), exclude=b) is None  # the only one up is the one that failed
    assert bal.pick(("10.0.0.1", 1)) is b


def test_counters_and_describe() -> None:
    bal = Balancer(backends(2), fall=1)
    (b,) = bal.backends
    bal.connected(b)
    bal.connected(b)
    bal.disconnected(b)
    b.bytes_in, b.bytes_out = 10, 20
    assert b.describe() == "backend tcp://127.0.0.1:7001 weight=2 UP active=1 total=2 bytes_in=10 bytes_out=20"
    bal.report(b, False)
    assert " DOWN active=1 " in b.describe()


# ---- the PROXY header, version 1 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "line"),
    [
        (("192.168.0.1", 56324), ("192.168.0.11", 443), b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
        (("::1", 1, 0, 0), ("2001:db8::7", 65535, 0, 0), b"PROXY TCP6 ::1 2001:db8::7 1 65535\r\n"),
        # A dual-stack listener's view of an IPv4 client: sent as IPv4, as the backend would have seen it.
        (("::ffff:10.0.0.1", 4000, 0, 0), ("::ffff:10.0.0.2", 80, 0, 0), b"PROXY TCP4 10.0.0.1 10.0.0.2 4000 80\r\n"),
        # A link-local address's scope is not part of the address.
        (("fe80::1%lo", 9, 0, 1), ("fe80::2%lo", 10, 0, 1), b"PROXY TCP6 fe80::1 fe80::2 9 10\r\n"),
    ],
)
def test_v1_tcp(src: Tuple[Any, ...], dst: Tuple[Any, ...], line: bytes) -> None:
    assert proxy_header_v1(src, dst) == line


def test_v1_only_one_side_mapped_stays_ipv6() -> None:
    # How `::ffff:10.0.0.1` is spelt differs between Python versions (`::ffff:a00:1` before 3.13): compare addresses.
    proto, src, dst, sport, dport = parse_v1(proxy_header_v1(("::ffff:10.0.0.1", 4000, 0, 0), ("::1", 80, 0, 0)))
    assert (proto, sport, dport) == ("TCP6", 4000, 80)
    assert ipaddress.ip_address(src) == ipaddress.ip_address("::ffff:10.0.0.1")
    assert ipaddress.ip_address(dst) == ipaddress.ip_address("::1")


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (("127.0.0.1", 1), ("::1", 2, 0, 0)),  # mixed families
        (("::1", 2, 0, 0), ("127.0.0.1", 1)),
        ("", "/run/proxy.sock"),  # a unix listener (an unnamed client)
        ("/tmp/client.sock", "/run/proxy.sock"),
        (("127.0.0.1", 1), "/run/proxy.sock"),
    ],
)
def test_v1_unknown_for_mixed_families_and_unix(src: Addr, dst: Addr) -> None:
    assert proxy_header_v1(src, dst) == b"PROXY UNKNOWN\r\n"


def test_v1_longest_line_fits_the_specifications_107_bytes() -> None:
    widest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = proxy_header_v1((widest, 65535, 0, 0), (widest, 65535, 0, 0))
    assert len(line) == 104 and len(line) <= 107
    assert line.endswith(b"\r\n") and line.count(b"\r\n") == 1


def parse_v1(line: bytes) -> Tuple[str, str, str, int, int]:
    """Section 2.1: PROXY, a space, the protocol, then addresses and ports separated by single spaces."""
    assert line.endswith(b"\r\n") and len(line) <= 107
    words = line[:-2].decode("ascii").split(" ")
    assert words[0] == "PROXY" and len(words) == 6
    proto, src, dst, sport, dport = words[1:]
    assert proto in ("TCP4", "TCP6")
    for port in (sport, dport):
        assert port.isdigit() and (port == "0" or not port.startswith("0"))  # no leading zeroes
    family = socket.AF_INET if proto == "TCP4" else socket.AF_INET6
    socket.inet_pton(family, src)
    socket.inet_pton(family, dst)
    return proto, src, dst, int(sport), int(dport)


ports = st.integers(0, 65535)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), ports, ports)
def test_v1_ipv4_round_trip(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sport: int, dport: int) -> None:
    line = proxy_header_v1((str(src), sport), (str(dst), dport))
    assert parse_v1(line) == ("TCP4", str(src), str(dst), sport, dport)


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), ports, ports)
def test_v1_ipv6_round_trip(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, sport: int, dport: int) -> None:
    line = proxy_header_v1((str(src), sport, 0, 0), (str(dst), dport, 0, 0))
    if src.ipv4_mapped is not None and dst.ipv4_mapped is not None:
        assert parse_v1(line) == ("TCP4", str(src.ipv4_mapped), str(dst.ipv4_mapped), sport, dport)
    else:
        proto, a, b, p, q = parse_v1(line)
        assert (proto, ipaddress.ip_address(a), ipaddress.ip_address(b), p, q) == ("TCP6", src, dst, sport, dport)


# ---- the PROXY header, version 2 --------------------------------------------------------------------


def test_v2_tcp4_bytes() -> None:
    header = proxy_header_v2(("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert header == (
        SIGNATURE
        + b"\x21"  # version 2 (high nibble), command PROXY (low nibble)
        + b"\x11"  # AF_INET, STREAM
        + b"\x00\x0c"  # 12 bytes of addresses follow, big-endian
        + bytes([192, 168, 0, 1])
        + bytes([192, 168, 0, 11])
        + bytes([56324 >> 8, 56324 & 0xFF])
        + bytes([443 >> 8, 443 & 0xFF])
    )
    assert len(header) == 16 + 12


def test_v2_tcp6_bytes() -> None:
    header = proxy_header_v2(("2001:db8::1", 1, 0, 0), ("::1", 65535, 0, 0))
    src = bytes([0x20, 0x01, 0x0D, 0xB8] + [0] * 11 + [1])
    dst = bytes([0] * 15 + [1])
    assert header == SIGNATURE + b"\x21\x21\x00\x24" + src + dst + b"\x00\x01\xff\xff"
    assert len(header) == 16 + 36


def test_v2_ipv4_mapped_is_sent_as_ipv4() -> None:
    header = proxy_header_v2(("::ffff:127.0.0.2", 5000, 0, 0), ("::ffff:127.0.0.1", 7000, 0, 0))
    ports = struct.pack("!HH", 5000, 7000)
    assert header == SIGNATURE + b"\x21\x11\x00\x0c" + bytes([127, 0, 0, 2, 127, 0, 0, 1]) + ports


def test_v2_unix_bytes() -> None:
    header = proxy_header_v2("/tmp/client.sock", "/run/proxy.sock")
    src = b"/tmp/client.sock" + b"\0" * (108 - 16)
    dst = b"/run/proxy.sock" + b"\0" * (108 - 15)
    assert header == SIGNATURE + b"\x21\x31\x00\xd8" + src + dst  # 0xd8 = 216 = 108 + 108
    # An unnamed client (the usual unix client): its address is empty, all zeroes.
    assert proxy_header_v2("", "/run/proxy.sock") == SIGNATURE + b"\x21\x31\x00\xd8" + b"\0" * 108 + dst


def test_v2_unix_path_too_long_is_cut_and_stays_nul_terminated() -> None:
    header = proxy_header_v2("/" + "x" * 200, "/s")
    block = header[16:]
    assert len(block) == 216
    assert block[:107] == b"/" + b"x" * 106 and block[107] == 0


def test_v2_mixed_families_are_unspec_with_no_addresses() -> None:
    # Section 2.2: AF_UNSPEC with PROXY: the receiver uses the connection's own addresses.
    assert proxy_header_v2(("127.0.0.1", 1), ("::1", 2, 0, 0)) == SIGNATURE + b"\x21\x00\x00\x00"
    assert proxy_header_v2(("127.0.0.1", 1), "/run/proxy.sock") == SIGNATURE + b"\x21\x00\x00\x00"


def parse_v2(header: bytes) -> Tuple[int, Any, Any]:
    """Section 2.2, as a receiver reads it: (family byte, source, destination)."""
    assert header[:12] == SIGNATURE
    ver_cmd, fam, length = header[12], header[13], int.from_bytes(header[14:16], "big")
    assert ver_cmd >> 4 == 2 and ver_cmd & 0xF == 1  # version 2, PROXY
    block = header[16:]
    assert len(block) == length
    if fam == 0x11:
        assert length == 12
        return (
            fam,
            (socket.inet_ntop(socket.AF_INET, block[0:4]), int.from_bytes(block[8:10], "big")),
            (
                socket.inet_ntop(socket.AF_INET, block[4:8]),
                int.from_bytes(block[10:12], "big"),
            ),
        )
    if fam == 0x21:
        assert length == 36
        return (
            fam,
            (socket.inet_ntop(socket.AF_INET6, block[0:16]), int.from_bytes(block[32:34], "big")),
            (
                socket.inet_ntop(socket.AF_INET6, block[16:32]),
                int.from_bytes(block[34:36], "big"),
            ),
        )
    assert fam == 0x31 and length == 216
    return fam, block[:108].rstrip(b"\0").decode(), block[108:].rstrip(b"\0").decode()


@given(st.ip_addresses(v=4), st.ip_addresses(v=4), ports, ports)
def test_v2_ipv4_round_trip(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sport: int, dport: int) -> None:
    header = proxy_header_v2((str(src), sport), (str(dst), dport))
    assert parse_v2(header) == (0x11, (str(src), sport), (str(dst), dport))


@given(st.ip_addresses(v=6), st.ip_addresses(v=6), ports, ports)
def test_v2_ipv6_round_trip(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, sport: int, dport: int) -> None:
    fam, (a, p), (b, q) = parse_v2(proxy_header_v2((str(src), sport, 0, 0), (str(dst), dport, 0, 0)))
    if src.ipv4_mapped is not None and dst.ipv4_mapped is not None:
        assert (fam, a, b) == (0x11, str(src.ipv4_mapped), str(dst.ipv4_mapped))
    else:
        assert (fam, ipaddress.ip_address(a), ipaddress.ip_address(b)) == (0x21, src, dst)
    assert (p, q) == (sport, dport)


@given(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=100),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=100),
)
def test_v2_unix_round_trip(src: str, dst: str) -> None:
    assert parse_v2(proxy_header_v2("/" + src, "/" + dst)) == (0x31, "/" + src, "/" + dst)
