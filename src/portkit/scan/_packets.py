"""Building probe packets and reading replies, as bytes; the keyed cookie that matches them.

Pure functions on bytes. A probe carries its identity in fields the reply must echo:
TCP probes put `cookie(dst, dport)` in the sequence number (a SYN-ACK or RST acks seq + 1;
a RST to an ACK probe carries our ack number as its seq, so ACK probes put the cookie in
both) and the try number in the source port (base + tryno), as nmap does: a retransmitted
SYN from the same port would hit the half-open connection of the first and draw a RST,
making an open port look closed. UDP probes derive the source port from the cookie and the
try number.
An ICMP error quotes the probe's IP header and first 8 bytes (ports and TCP seq), so it is
matched the same way. No table of sent probes is needed to tell a reply from noise.
"""

from __future__ import annotations

import os
import struct

from portkit.scan._states import ICMP6_UNREACH, ICMP_UNREACH, RESPONSE_CODE, Response

SYN = 0x02
RST = 0x04
ACK = 0x10
TRY_BITS = 4
TRY_MASK = (1 << TRY_BITS) - 1
UDP_PORT_BASE = 33000
UDP_PORT_SPAN = 16384

_TCP = struct.Struct("!HHIIBBHHH")
TCP_HEADER = _TCP  # ports, seq, ack, data offset, flags, window, checksum, urgent
_IP_PROTO_TCP = 6
_IP_PROTO_UDP = 17
_IP_PROTO_ICMP = 1


class Cookie:
    """A keyed 32-bit tag for (address, port).

    Per address, a SipHash of the secret and the address (Python's keyed bytes hash) gives a
    per-host key; the port is mixed in with the C-speed tuple hash. Unpredictable to anyone
    without the secret, and cheap enough to compute twice per probe.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or os.urandom(16)
        self._host_keys: dict[int, int] = {}

    def __call__(self, address: int, port: int) -> int:
        key = self._host_keys.get(address)
        if key is None:
            key = self.host_key(address)
        return hash((key, port)) & 0xFFFFFFFF

    def host_key(self, address: int) -> int:
        """The per-address key: `self(address, port) == hash((host_key, port)) & 0xFFFFFFFF`."""
        key = self._host_keys.get(address)
        if key is None:
            key = self._host_keys[address] = hash(self.secret + address.to_bytes(16, "big"))
        return key

    def tcp_seq(self, address: int, port: int) -> int:
        return self(address, port)

    def udp_sport(self, address: int, port: int, tryno: int) -> int:
        return UDP_PORT_BASE + (self(address, port) + tryno) % UDP_PORT_SPAN


def _fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_sum(src: int, dst: int, proto: int, length: int) -> int:
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length


class TcpProbeBuilder:
    """TCP headers (20 bytes, no options) from one source to one destination, checksummed."""

    def __init__(self, src: int, dst: int, flags: int, *, checksum: bool = True) -> None:
        self.flags = flags
        self.checksum = checksum  # IPv6 raw sockets fill it in themselves (IPV6_CHECKSUM)
        # Everything but the ports, seq and ack, summed once (RFC 1071 sums are order-free).
        self.base = pseudo_sum(src, dst, _IP_PROTO_TCP, 20) + ((5 << 12) | flags) + 1024

    def build(self, sport: int, dport: int, seq: int, ack: int) -> bytes:
        if not self.checksum:
            return _TCP.pack(sport, dport, seq, ack, 5 << 4, self.flags, 1024, 0, 0)
        total = self.base + sport + dport + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
        return _TCP.pack(sport, dport, seq, ack, 5 << 4, self.flags, 1024, _fold(total), 0)


def udp_probe(sport: int, dport: int, payload: bytes) -> bytes:
    # IPv4 allows a zero UDP checksum ("none"), which saves computing one per probe.
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


# A reply reduced to what matching needs:
# (probed address, probed port, our port as the reply shows it, the TCP seq it relates to
# (0 for UDP), response code (RESPONSE_CODE), TTL).
Reply = tuple[int, int, int, int, int, int]

_RST = RESPONSE_CODE[Response.RST]
_SYN_ACK = RESPONSE_CODE[Response.SYN_ACK]
_UDP_REPLY = RESPONSE_CODE[Response.UDP_REPLY]
_ICMP_CODES = {code: RESPONSE_CODE[r] for code, r in ICMP_UNREACH.items()}
_HEAD = struct.Struct("!HHIIBB")


def parse_ipv4_tcp(packet: bytes) -> Reply | None:
    """A TCP reply (SYN-ACK or RST) received on a raw IPv4 socket."""
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 20 or packet[9] != _IP_PROTO_TCP:
        return None
    sport, dport, seq, ack, _, flags = _HEAD.unpack_from(packet, ihl)
    src = int.from_bytes(packet[12:16], "big")
    if flags & RST:
        # A RST to a SYN acks seq+1; a RST to an ACK probe carries our ack as its seq.
        return (src, sport, dport, (ack - 1) & 0xFFFFFFFF if flags & ACK else seq, _RST, packet[8])
    if flags & SYN and flags & ACK:
        return (src, sport, dport, (ack - 1) & 0xFFFFFFFF, _SYN_ACK, packet[8])
    return None


def parse_ipv4_udp(packet: bytes) -> Reply | None:
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[9] != _IP_PROTO_UDP:
        return None
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    return (int.from_bytes(packet[12:16], "big"), sport, dport, 0, _UDP_REPLY, packet[8])


def parse_ipv4_icmp(packet: bytes) -> tuple[int, Reply] | None:
    """An ICMP destination-unreachable quoting one of our probes -> (quoted protocol, reply)."""
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 + 20 + 8 or packet[9] != _IP_PROTO_ICMP:
        return None
    icmp_type, code = packet[ihl], packet[ihl + 1]
    response = _ICMP_CODES.get(code) if icmp_type == 3 else None
    if response is None:
        return None
    inner = ihl + 8
    inner_ihl = (packet[inner] & 0x0F) * 4
    proto = packet[inner + 9]
    dst = int.from_bytes(packet[inner + 16 : inner + 20], "big")
    ports = inner + inner_ihl
    # An IHL under 5 is malformed: its "ports" would be bytes of the quoted header itself.
    if inner_ihl < 20 or len(packet) < ports + 8:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", packet, ports)
    return proto, (dst, dport, sport, seq, response, packet[8])


# -- IPv6: raw sockets deliver the transport header first, the source and hop limit aside --

_ICMP6_CODES = {code: RESPONSE_CODE[r] for code, r in ICMP6_UNREACH.items()}


def parse_tcp_segment(segment: bytes, src: int, ttl: int) -> Reply | None:
    if len(segment) < 20:
        return None
    sport, dport, seq, ack, _, flags = _HEAD.unpack_from(segment, 0)
    if flags & RST:
        return (src, sport, dport, (ack - 1) & 0xFFFFFFFF if flags & ACK else seq, _RST, ttl)
    if flags & SYN and flags & ACK:
        return (src, sport, dport, (ack - 1) & 0xFFFFFFFF, _SYN_ACK, ttl)
    return None


def parse_udp_datagram(datagram: bytes, src: int, ttl: int) -> Reply | None:
    if len(datagram) < 8:
        return None
    sport, dport = struct.unpack_from("!HH", datagram, 0)
    return (src, sport, dport, 0, _UDP_REPLY, ttl)


def parse_icmp6(message: bytes, ttl: int) -> tuple[int, Reply] | None:
    """An ICMPv6 destination-unreachable quoting one of our probes -> (quoted next header, reply)."""
    if len(message) < 8 + 40 + 8 or message[0] != 1:
        return None
    response = _ICMP6_CODES.get(message[1])
    if response is None:
        return None
    proto = message[8 + 6]
    dst = int.from_bytes(message[8 + 24 : 8 + 40], "big")
    sport, dport, seq = struct.unpack_from("!HHI", message, 48)
    return proto, (dst, dport, sport, seq, response, ttl)
