"""Probe packets and reply parsing: checksums, cookies, and stateless matching."""

from __future__ import annotations

import struct

from portkit.scan._packets import (
    ACK,
    RST,
    SYN,
    Cookie,
    TcpProbeBuilder,
    parse_ipv4_icmp,
    parse_ipv4_tcp,
    parse_ipv4_udp,
    udp_probe,
)
from portkit.scan._states import RESPONSE_CODE, Response

SRC, DST = 0xC0000201, 0xC0000202  # 192.0.2.1 -> 192.0.2.2


def checksum_ok(src: int, dst: int, segment: bytes) -> bool:
    data = struct.pack("!IIBBH", src, dst, 0, 6, len(segment)) + segment
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def ipv4(proto: int, src: int, dst: int, payload: bytes, ttl: int = 64) -> bytes:
    return struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(payload), 0, 0, ttl, proto, 0, src, dst) + payload


def test_tcp_probe_checksums_are_valid() -> None:
    builder = TcpProbeBuilder(SRC, DST, SYN)
    for sport, dport, seq in ((40000, 1, 0), (40001, 80, 0xFFFFFFFF), (65535, 65535, 123456789)):
        assert checksum_ok(SRC, DST, builder.build(sport, dport, seq, 0))
    ack = TcpProbeBuilder(SRC, DST, ACK)
    assert checksum_ok(SRC, DST, ack.build(40000, 443, 77, 77))


def test_cookie_is_keyed() -> None:
    a, b = Cookie(b"k" * 16), Cookie(b"j" * 16)
    assert a(DST, 80) == Cookie(b"k" * 16)(DST, 80)
    assert a(DST, 80) != b(DST, 80)
    assert a(DST, 80) != a(DST, 81)
    assert a.tcp_seq(DST, 80) == a(DST, 80)
    assert a.udp_sport(DST, 53, 1) != a.udp_sport(DST, 53, 0)


def test_syn_ack_and_rst_replies_point_back_at_the_probe() -> None:
    seq = 0x12345670
    syn_ack = struct.pack("!HHIIBBHHH", 80, 40000, 999, seq + 1, 0x50, SYN | ACK, 1024, 0, 0)
    reply = parse_ipv4_tcp(ipv4(6, DST, SRC, syn_ack, ttl=61))
    assert reply == (DST, 80, 40000, seq, RESPONSE_CODE[Response.SYN_ACK], 61)
    rst_ack = struct.pack("!HHIIBBHHH", 81, 40000, 0, seq + 1, 0x50, RST | ACK, 0, 0, 0)
    assert parse_ipv4_tcp(ipv4(6, DST, SRC, rst_ack))[3] == seq  # type: ignore[index]
    # A RST answering an ACK probe carries the probe's ack number as its seq.
    rst = struct.pack("!HHIIBBHHH", 81, 40000, seq, 0, 0x50, RST, 0, 0, 0)
    assert parse_ipv4_tcp(ipv4(6, DST, SRC, rst))[3] == seq  # type: ignore[index]
    bare_syn = struct.pack("!HHIIBBHHH", 81, 40000, seq, 0, 0x50, SYN, 0, 0, 0)
    assert parse_ipv4_tcp(ipv4(6, DST, SRC, bare_syn)) is None


def test_icmp_errors_quote_the_probe() -> None:
    probe = ipv4(6, SRC, DST, TcpProbeBuilder(SRC, DST, SYN).build(40000, 84, 0xABCDEF0, 0))
    for code, response in ((3, Response.ICMP_PORT_UNREACH), (13, Response.ICMP_ADMIN_PROHIBITED)):
        icmp = struct.pack("!BBHI", 3, code, 0, 0) + probe[:28]
        proto, reply = parse_ipv4_icmp(ipv4(1, DST, SRC, icmp))  # type: ignore[misc]
        assert proto == 6
        assert reply == (DST, 84, 40000, 0xABCDEF0, RESPONSE_CODE[response], 64)
    echo_reply = struct.pack("!BBHI", 0, 0, 0, 0) + probe[:28]
    assert parse_ipv4_icmp(ipv4(1, DST, SRC, echo_reply)) is None


def test_udp_probe_and_reply() -> None:
    probe = udp_probe(33001, 53, b"\x00\x01")
    assert struct.unpack("!HHHH", probe[:8]) == (33001, 53, 10, 0)
    reply = parse_ipv4_udp(ipv4(17, DST, SRC, struct.pack("!HHHH", 53, 33001, 8, 0)))
    assert reply == (DST, 53, 33001, 0, RESPONSE_CODE[Response.UDP_REPLY], 64)
