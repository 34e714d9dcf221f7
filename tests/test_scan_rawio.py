"""The C path (portkit.scan._rawio) against the pure-Python path, packet by packet.

The C module must build byte-identical probes, compute the same cookie, and accept exactly
the replies the Python driver accepts (`RawScanner._take` on the pure parsers), with the same
probe key, try number, response code and TTL. Replies are crafted (hypothesis) and delivered
through a datagram socket pair, which recvmmsg reads like a raw socket.
The lab tests (test_scan_vs_nmap.py) run real scans both ways against nmap.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import needs_root
from portkit.scan._accel import V4_ICMP, V4_TCP, V6_ICMP
from portkit.scan._hosts import HostTable
from portkit.scan._packets import (
    ACK,
    RST,
    SYN,
    Cookie,
    TcpProbeBuilder,
    parse_icmp6,
    parse_ipv4_icmp,
    parse_ipv4_tcp,
)
from portkit.scan._raw import RawScanner
from portkit.scan._schedule import Schedule
from portkit.scan._states import RESPONSE_CODE, Response, ScanType
from portkit.scan._targets import parse_targets
from portkit.scan._timing import template

rawio = pytest.importorskip("portkit.scan._rawio", reason="the C module was not built (no compiler?)")

PORTS = [1, 22, 80, 443, 8080, 31337, 65535]
FIN, PSH = 0x01, 0x08


@given(st.binary(min_size=16, max_size=16), st.integers(0, 2**128 - 1), st.integers(0, 65535))
def test_cookie_is_pythons(secret: bytes, address: int, port: int) -> None:
    cookie = Cookie(secret)
    assert rawio.cookie(hash(cookie.host_key(address)), port) == cookie(address, port)


@given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 65535))
def test_cookie_is_the_tuple_hash(key: int, port: int) -> None:
    assert rawio.cookie(hash(key), port) == hash((key, port)) & 0xFFFFFFFF


@pytest.mark.parametrize("flags", [SYN, ACK])
@given(src=st.integers(0, 2**32 - 1), dst=st.integers(0, 2**32 - 1), base=st.integers(1024, 65535 - 15))
def test_probes_are_byte_identical(flags: int, src: int, dst: int, base: int) -> None:
    cookie = Cookie(b"s" * 16)
    builder = TcpProbeBuilder(src, dst, flags)
    with_ack = flags == ACK
    lane = hash(cookie.host_key(dst))
    expected = b""
    for port in PORTS:
        seq = cookie(dst, port)
        expected += builder.build(base, port, seq, seq if with_ack else 0)
    keys = list(range(len(PORTS)))
    ports = struct.pack(f"={len(PORTS)}H", *PORTS)
    built = rawio.build_tcp(keys, ports, 0, lane, builder.base + base, base, flags, with_ack)
    assert built == expected
    # IPv6: the kernel fills the checksum in (IPV6_CHECKSUM), so the C leaves it zero.
    v6 = rawio.build_tcp(keys, ports, 0, lane, -1, base, flags, with_ack)
    plain = TcpProbeBuilder(0, 0, flags, checksum=False)
    assert v6 == b"".join(
        plain.build(base, p, cookie(dst, p), cookie(dst, p) if with_ack else 0) for p in PORTS
    )


def test_a_key_of_another_host_is_refused() -> None:
    ports = struct.pack("=2H", 80, 443)
    with pytest.raises(ValueError, match="probe key 7"):
        rawio.build_tcp([0, 7], ports, 0, 1, 0, 40000, SYN, False)


# -- replies: the C's verdict against RawScanner._take on the pure parsers ---------------------


class _Settles:
    """Stands in for the Schedule: every probe is pending, every answer is noted."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, int]] = []

    def answered(self, key: int, tryno: int, now: float) -> bool:
        self.answers.append((key, tryno))
        return True


def _scanner(address: str, scan_type: ScanType) -> RawScanner:
    hosts = HostTable(parse_targets([address]))
    schedule = Schedule(iter(()), len(PORTS), template(4))
    scanner = RawScanner(scan_type, hosts, PORTS, schedule, lambda key, code, ttl: None)
    assert scanner.io_path == "c"
    return scanner


def python_verdicts(scanner: RawScanner, kind: int, packets: list[bytes]) -> list[tuple[int, int, int, int]]:
    settles, recorded = _Settles(), []
    scanner.schedule = settles  # type: ignore[assignment]
    scanner.record = lambda key, code, ttl: recorded.append((code, ttl))
    for packet in packets:
        if kind == V4_TCP:
            scanner._take(parse_ipv4_tcp(packet), 0.0)
        elif kind == V4_ICMP:
            quoted: Any = parse_ipv4_icmp(packet)
            if quoted is not None and quoted[0] == socket.IPPROTO_TCP:
                scanner._take(quoted[1], 0.0)
        else:
            quoted = parse_icmp6(packet, 0)  # no hop limit over a socket pair: 0 both ways
            if quoted is not None and quoted[0] == socket.IPPROTO_TCP:
                scanner._take(quoted[1], 0.0)
    return [
        (key, tryno, code, ttl) for (key, tryno), (code, ttl) in zip(settles.answers, recorded, strict=True)
    ]


def c_verdicts(scanner: RawScanner, kind: int, packets: list[bytes]) -> list[tuple[int, int, int, int]]:
    io = scanner._io
    assert io is not None
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with reader, writer:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for packet in packets:
            writer.send(packet)
        icmp = io.icmp6 if kind == V6_ICMP else io.icmp4
        keys, trynos, codes, ttls = rawio.drain(
            reader.fileno(),
            kind,
            io.address,
            io.index_of,
            io.offset,
            io.lane,
            io.our_port,
            io.rst,
            io.syn_ack,
            icmp,
        )
    return list(zip(keys, trynos, codes, ttls, strict=True))


def ipv4(proto: int, src: bytes, dst: bytes, payload: bytes, ttl: int, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), 0, 0, ttl, proto, 0, src, dst)
    return head + options + payload


LOOPBACK = socket.inet_aton("127.0.0.1")
ELSEWHERE = socket.inet_aton("127.0.0.2")
FLAGS = st.sampled_from([SYN | ACK, RST, RST | ACK, ACK, SYN, FIN | ACK, PSH | ACK, RST | SYN | ACK])


@st.composite
def tcp_replies(draw: st.DrawFn, scanner: RawScanner) -> bytes:
    number = scanner.hosts.get(0).number  # type: ignore[union-attr]
    port = draw(st.sampled_from(PORTS) | st.integers(0, 65535))
    tryno = draw(st.integers(0, 17))
    our_port = (scanner.our_port + tryno) & 0xFFFF if draw(st.booleans()) else draw(st.integers(0, 65535))
    cookie = scanner.cookie(number, port)
    seq = draw(st.sampled_from([cookie, cookie - 1, 0]) | st.integers(0, 2**32 - 1)) & 0xFFFFFFFF
    ack = draw(st.sampled_from([cookie + 1, cookie, 0]) | st.integers(0, 2**32 - 1)) & 0xFFFFFFFF
    flags = draw(FLAGS)
    options = draw(st.sampled_from([b"", b"\x01" * 4, b"\x01" * 40]))
    segment = struct.pack("!HHIIBBHHH", port, our_port, seq, ack, 0x50, flags, 1024, 0, 0)
    segment += draw(st.sampled_from([b"", b"\x02\x04\x05\xb4"]))
    src = draw(st.sampled_from([LOOPBACK, LOOPBACK, ELSEWHERE]))
    proto = draw(st.sampled_from([6, 6, 17]))
    return ipv4(proto, src, LOOPBACK, segment, draw(st.integers(1, 255)), options)


@st.composite
def icmp_errors(draw: st.DrawFn, scanner: RawScanner) -> bytes:
    number = scanner.hosts.get(0).number  # type: ignore[union-attr]
    port = draw(st.sampled_from(PORTS) | st.integers(0, 65535))
    tryno = draw(st.integers(0, 17))
    cookie = scanner.cookie(number, port)
    seq = draw(st.sampled_from([cookie, cookie, 0]) | st.integers(0, 2**32 - 1))
    quoted = struct.pack("!HHI", (scanner.our_port + tryno) & 0xFFFF, port, seq)
    inner_dst = draw(st.sampled_from([LOOPBACK, LOOPBACK, ELSEWHERE]))
    inner = ipv4(draw(st.sampled_from([6, 6, 17])), LOOPBACK, inner_dst, quoted, 64)
    icmp = struct.pack("!BBHI", draw(st.sampled_from([3, 3, 11, 0])), draw(st.integers(0, 15)), 0, 0)
    cut = draw(st.sampled_from([len(inner), len(inner), len(inner) - 1, 20]))
    return ipv4(1, ELSEWHERE, LOOPBACK, icmp + inner[:cut], draw(st.integers(1, 255)))


@st.composite
def icmp6_errors(draw: st.DrawFn, scanner: RawScanner) -> bytes:
    number = scanner.hosts.get(0).number  # type: ignore[union-attr]
    port = draw(st.sampled_from(PORTS) | st.integers(0, 65535))
    tryno = draw(st.integers(0, 17))
    cookie = scanner.cookie(number, port)
    seq = draw(st.sampled_from([cookie, cookie, 1]) | st.integers(0, 2**32 - 1))
    dst = draw(st.sampled_from([socket.inet_pton(socket.AF_INET6, "::1")] * 2 + [bytes(15) + b"\x02"]))
    header = struct.pack("!IHBB16s16s", 0x60000000, 20, draw(st.sampled_from([6, 6, 17])), 64, bytes(16), dst)
    quoted = struct.pack("!HHI", (scanner.our_port + tryno) & 0xFFFF, port, seq)
    icmp = struct.pack("!BBHI", draw(st.sampled_from([1, 1, 3])), draw(st.integers(0, 6)), 0, 0)
    cut = draw(st.sampled_from([48, 48, 47]))
    return (icmp + header + quoted)[: cut + 8]


@needs_root
@pytest.mark.parametrize("scan_type", [ScanType.SYN, ScanType.ACK])
def test_tcp_replies_are_judged_alike(scan_type: ScanType) -> None:
    scanner = _scanner("127.0.0.1", scan_type)
    try:

        @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
        @given(st.lists(tcp_replies(scanner), max_size=40))
        def check(packets: list[bytes]) -> None:
            assert c_verdicts(scanner, V4_TCP, packets) == python_verdicts(scanner, V4_TCP, packets)

        check()
        # And the common case for sure: a SYN-ACK and a RST to first tries are taken.
        number = scanner.hosts.get(0).number  # type: ignore[union-attr]
        cookie = scanner.cookie(number, 80)
        replies = [
            ipv4(
                6,
                LOOPBACK,
                LOOPBACK,
                struct.pack("!HHIIBBHHH", 80, scanner.our_port, 5, cookie + 1, 0x50, f, 0, 0, 0),
                64,
            )
            for f in (SYN | ACK, RST | ACK)
        ]
        assert len(c_verdicts(scanner, V4_TCP, replies)) == (2 if scan_type is ScanType.SYN else 1)
    finally:
        scanner.close()


@needs_root
def test_icmp_errors_are_judged_alike() -> None:
    scanner = _scanner("127.0.0.1", ScanType.SYN)
    try:

        @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
        @given(st.lists(icmp_errors(scanner), max_size=40))
        def check(packets: list[bytes]) -> None:
            verdicts = c_verdicts(scanner, V4_ICMP, packets)
            assert verdicts == python_verdicts(scanner, V4_ICMP, packets)

        check()
        number = scanner.hosts.get(0).number  # type: ignore[union-attr]
        quoted = struct.pack("!HHI", scanner.our_port + 2, 443, scanner.cookie(number, 443))
        error = ipv4(
            1,
            ELSEWHERE,
            LOOPBACK,
            struct.pack("!BBHI", 3, 13, 0, 0) + ipv4(6, LOOPBACK, LOOPBACK, quoted, 64),
            60,
        )
        admin = RESPONSE_CODE[Response.ICMP_ADMIN_PROHIBITED]
        assert c_verdicts(scanner, V4_ICMP, [error]) == [(PORTS.index(443), 2, admin, 60)]
    finally:
        scanner.close()


@needs_root
def test_icmp6_errors_are_judged_alike() -> None:
    scanner = _scanner("::1", ScanType.SYN)
    try:

        @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
        @given(st.lists(icmp6_errors(scanner), max_size=40))
        def check(packets: list[bytes]) -> None:
            assert c_verdicts(scanner, V6_ICMP, packets) == python_verdicts(scanner, V6_ICMP, packets)

        check()
        number = scanner.hosts.get(0).number  # type: ignore[union-attr]
        loopback6 = socket.inet_pton(socket.AF_INET6, "::1")
        header = struct.pack("!IHBB16s16s", 0x60000000, 20, 6, 64, loopback6, loopback6)
        quoted = struct.pack("!HHI", scanner.our_port, 22, scanner.cookie(number, 22))
        error = struct.pack("!BBHI", 1, 4, 0, 0) + header + quoted
        unreach = RESPONSE_CODE[Response.ICMP_PORT_UNREACH]
        assert c_verdicts(scanner, V6_ICMP, [error]) == [(PORTS.index(22), 0, unreach, 0)]
    finally:
        scanner.close()


@needs_root
def test_pure_python_switch() -> None:
    hosts = HostTable(parse_targets(["127.0.0.1"]))
    for pure, path in ((True, "python"), (False, "c")):
        schedule = Schedule(iter(()), len(PORTS), template(4))
        scanner = RawScanner(ScanType.SYN, hosts, PORTS, schedule, print, pure_python=pure)
        try:
            assert scanner.io_path == path
        finally:
            scanner.close()


# -- adversarial calls: the C must refuse, never read out of bounds ---------------------------


class _ShrinkingKey:
    """A key whose __index__ (run by the C's int conversion) empties the list being read."""

    def __init__(self, keys: list[Any], keep: int) -> None:
        self.keys, self.keep = keys, keep

    def __index__(self) -> int:
        del self.keys[self.keep :]
        return 0


@pytest.mark.parametrize("keep", [0, 1])
def test_a_list_of_keys_that_shrinks_is_refused(keep: int) -> None:
    # keep=0 also frees the key itself while its __index__ result is still being used.
    keys: list[Any] = []
    keys += [_ShrinkingKey(keys, keep)] + [0] * 5000
    ports = struct.pack("=2H", 80, 443)
    with pytest.raises(RuntimeError, match="changed size"):
        rawio.build_tcp(keys, ports, 0, 1, 0, 40000, SYN, False)
    keys = []
    keys += [_ShrinkingKey(keys, keep)] + [0] * 5000
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with reader, writer, pytest.raises(RuntimeError, match="changed size"):
        rawio.send_tcp(writer.fileno(), b"", keys, ports, 0, 1, 0, 40000, SYN, False)


def test_tables_need_no_alignment() -> None:
    # Any buffer will do (a memoryview at an odd offset included): the C copies values out.
    ports = struct.pack(f"={len(PORTS)}H", *PORTS)
    keys = list(range(len(PORTS)))
    aligned = rawio.build_tcp(keys, ports, 0, 5, 1000, 40000, SYN, False)
    assert rawio.build_tcp(keys, memoryview(b"\0" + ports)[1:], 0, 5, 1000, 40000, SYN, False) == aligned
    index_of = struct.pack("=65536i", *([-1] * 65536))
    index_of = index_of[: 4 * 80] + struct.pack("=i", 2) + index_of[4 * 81 :]
    segment = struct.pack("!HHIIBBHHH", 80, 40000, 0, rawio.cookie(5, 80) + 1, 0x50, SYN | ACK, 0, 0, 0)
    packet = ipv4(6, LOOPBACK, LOOPBACK, segment, 64)
    icmp = bytes([0xFF]) * 256
    for table in (index_of, memoryview(b"\0" + index_of)[1:]):
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with reader, writer:
            writer.send(packet)
            got = rawio.drain(reader.fileno(), V4_TCP, LOOPBACK, table, 10, 5, 40000, 1, 2, icmp)
        assert got == ([12], b"\0", b"\2", b"\x40")


@needs_root
@pytest.mark.parametrize(("vihl", "our_port", "port"), [(0x44, 0x7F00, 1), (0xA0, 0xA000, 80)])
def test_a_quoted_header_shorter_than_20_bytes_is_refused_alike(vihl: int, our_port: int, port: int) -> None:
    # An ICMP error's quoted IPv4 header claims IHL 4 (or 0, version 10): read as it says, its
    # "ports" would be its own destination address (or its first bytes). Both paths drop it.
    hosts = HostTable(parse_targets(["127.0.0.1"]))
    schedule = Schedule(iter(()), len(PORTS), template(4))
    scanner = RawScanner(ScanType.SYN, hosts, PORTS, schedule, lambda key, code, ttl: None, our_port=our_port)
    try:
        number = scanner.hosts.get(0).number  # type: ignore[union-attr]
        seq = scanner.cookie(number, port)
        if vihl == 0x44:  # "ports" = the destination 127.0.0.1 (32512, 1), "seq" = the 4 bytes after
            inner = ipv4(6, LOOPBACK, LOOPBACK, struct.pack("!I4x", seq), 64)
            inner = bytes([vihl]) + inner[1:]
        else:  # "ports" = version/IHL and TOS (0xA000), total length; "seq" = ID and fragment field
            inner = struct.pack("!BBHI", vihl, 0, port, seq) + bytes([64, 6, 0, 0]) + LOOPBACK * 2 + bytes(8)
        error = ipv4(1, ELSEWHERE, LOOPBACK, struct.pack("!BBHI", 3, 3, 0, 0) + inner, 60)
        assert c_verdicts(scanner, V4_ICMP, [error]) == []
        assert python_verdicts(scanner, V4_ICMP, [error]) == []
    finally:
        scanner.close()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 3),
    st.lists(st.binary(max_size=260), max_size=8),
    st.sampled_from([0x45, 0x4F, 0x41, 0x60]),
)
def test_any_bytes_are_read_safely(kind: int, packets: list[bytes], head: int) -> None:
    # Short, truncated, oversized (past the 192-byte slot) and malformed datagrams of every
    # kind: nothing is read outside them, and noise is never taken for a reply.
    address = LOOPBACK if kind < 2 else socket.inet_pton(socket.AF_INET6, "::1")
    index_of = struct.pack("=65536i", *range(65536))
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with reader, writer:
        for packet in packets:
            if len(packet) >= 20:  # mostly an IPv4 header of TCP or ICMP from the host
                packet = bytes([head]) + packet[1:9] + bytes([6 if kind == V4_TCP else 1]) + packet[10:]
            writer.send(packet)
        keys, *_ = rawio.drain(reader.fileno(), kind, address, index_of, 0, 7, 40000, 1, 2, bytes(256))
    assert keys == []


def test_every_path_releases_its_buffers() -> None:
    # A bytearray cannot be resized while a buffer of it is held (see test_sockets_accel).
    held = bytearray(200)
    table = bytearray(4 * 65536)
    calls: list[Callable[[], object]] = [
        lambda: rawio.build_tcp([0], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.build_tcp([99], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.build_tcp(["x"], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.build_tcp([0], held, 0, 1, 0, 70000, SYN, False),
        lambda: rawio.send_tcp(-1, held, [0], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.send_tcp(-1, bytearray(300), [0], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.send_tcp(-1, b"", ["x"], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.send_tcp(-1, b"", [0], held, 0, 1, 0, 40000, SYN, False),
        lambda: rawio.drain(-1, 9, held, table, 0, 0, 0, 1, 2, held),
        lambda: rawio.drain(-1, V4_TCP, LOOPBACK, table, 0, 0, 0, 1, 2, held),
        lambda: rawio.drain(-1, V4_TCP, LOOPBACK, table, 0, 0, 0, 1, 300, held),
    ]
    for call in calls:
        with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):
            call()
        for buffer in (held, table):
            buffer.append(0)
            buffer.pop()
