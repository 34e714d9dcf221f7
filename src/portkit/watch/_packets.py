"""What the watcher reads: packets of a namespace from an AF_PACKET socket, filtered in the kernel.

The socket is SOCK_DGRAM (cooked: each packet starts at its IP header whatever the link), so one
classic BPF program serves loopback, veth and Ethernet alike. The program passes only what scan
detection needs: TCP segments with SYN or RST set or with ACK clear (a connection's data and its
acknowledgements, almost all of a busy host's packets, never reach Python; probes with ACK set
are seen by the RST they draw), UDP datagrams (the
first fragment), and ICMP/ICMPv6 destination-unreachable errors. IPv6 extension headers are not
walked: a probe behind one is not seen (nmap sends none).

`parse_packet()` turns one packet into a `Seen` (pure, tested with packets built by hand).
"""

from __future__ import annotations

import socket
import struct

from portkit.watch._scans import ICMP, ICMPV6, TCP, UDP, Seen

# Classic BPF opcodes (linux/bpf_common.h).
_LD_B_ABS, _LD_H_ABS, _LD_B_IND = 0x30, 0x28, 0x50
_LDX_B_MSH = 0xB1
_RSH_K = 0x74
_JEQ_K, _JSET_K = 0x15, 0x45
_RET_K = 0x06
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SNAPLEN = 256  # headers only: an ICMP error quotes the IP and first 8 bytes of the attempt


def _assemble(program: list[tuple[str, int, int, str, str]]) -> bytes:
    """(label, opcode, k, jump-if-true label, jump-if-false label) rows -> struct sock_filter[]."""
    where = {label: n for n, (label, *_rest) in enumerate(program) if label}
    out = b""
    for n, (_label, code, k, jt, jf) in enumerate(program):
        t = where[jt] - n - 1 if jt else 0
        f = where[jf] - n - 1 if jf else 0
        out += struct.pack("HBBI", code, t, f, k)
    return out


_PROGRAM = [
    ("", _LD_B_ABS, 0, "", ""),
    ("", _RSH_K, 4, "", ""),
    ("", _JEQ_K, 4, "v4", ""),
    ("", _JEQ_K, 6, "v6", "drop"),
    # IPv4: protocol at byte 9; only first fragments (the header of the transport is in them).
    ("v4", _LD_H_ABS, 6, "", ""),
    ("", _JSET_K, 0x1FFF, "drop", ""),
    ("", _LD_B_ABS, 9, "", ""),
    ("", _JEQ_K, TCP, "tcp4", ""),
    ("", _JEQ_K, UDP, "accept", ""),
    ("", _JEQ_K, ICMP, "icmp4", "drop"),
    ("icmp4", _LDX_B_MSH, 0, "", ""),
    ("", _LD_B_IND, 0, "", ""),
    ("", _JEQ_K, 3, "accept", "drop"),
    ("tcp4", _LDX_B_MSH, 0, "", ""),
    ("", _LD_B_IND, 13, "", ""),
    ("", _JSET_K, 0x06, "accept", ""),
    ("", _JSET_K, 0x10, "drop", "accept"),
    # IPv6: next header at byte 6, the transport header at 40.
    ("v6", _LD_B_ABS, 6, "", ""),
    ("", _JEQ_K, TCP, "tcp6", ""),
    ("", _JEQ_K, UDP, "accept", ""),
    ("", _JEQ_K, ICMPV6, "icmp6", "drop"),
    ("icmp6", _LD_B_ABS, 40, "", ""),
    ("", _JEQ_K, 1, "accept", "drop"),
    ("tcp6", _LD_B_ABS, 53, "", ""),
    ("", _JSET_K, 0x06, "accept", ""),
    ("", _JSET_K, 0x10, "drop", "accept"),
    ("accept", _RET_K, SNAPLEN, "", ""),
    ("drop", _RET_K, 0, "", ""),
]
FILTER = _assemble(_PROGRAM)
FILTER_LENGTH = len(_PROGRAM)


# inet_ntop writes addresses as ipaddress does (RFC 5952 for IPv6), at a tenth of the cost.
_ntop = socket.inet_ntop
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6


def _ports(data: bytes, at: int) -> tuple[int, int]:
    if len(data) < at + 4:
        return 0, 0
    sport, dport = struct.unpack_from("!HH", data, at)
    return sport, dport


def _l3(data: bytes) -> tuple[str, str, int, int] | None:
    """(src, dst, protocol, transport offset) of an IP packet, or None."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        return _ntop(_AF_INET, data[12:16]), _ntop(_AF_INET, data[16:20]), data[9], ihl
    if version == 6 and len(data) >= 40:
        return _ntop(_AF_INET6, data[8:24]), _ntop(_AF_INET6, data[24:40]), data[6], 40
    return None


def parse_packet(data: bytes, outgoing: bool, netns: str | None, time: float) -> Seen | None:
    """One packet (from its IP header) as a `Seen`, or None when it is not one the watcher reads."""
    head = _l3(data)
    if head is None:
        return None
    src, dst, proto, at = head
    if proto == TCP:
        if len(data) < at + 14:
            return None
        sport, dport = _ports(data, at)
        offset = (data[at + 12] >> 4) * 4
        return Seen(time, netns, outgoing, src, dst, TCP, sport, dport, data[at + 13], max(0, offset - 20))
    if proto == UDP:
        sport, dport = _ports(data, at)
        return Seen(time, netns, outgoing, src, dst, UDP, sport, dport)
    if proto in (ICMP, ICMPV6) and len(data) > at + 8:
        quoted = _l3(data[at + 8 :])
        if quoted is None:
            return Seen(time, netns, outgoing, src, dst, proto, icmp_type=data[at])
        q_src, q_dst, q_proto, q_at = quoted
        q_sport, q_dport = _ports(data, at + 8 + q_at)
        return Seen(
            time,
            netns,
            outgoing,
            src,
            dst,
            proto,
            icmp_type=data[at],
            quoted=(q_src, q_dst, q_proto, q_sport, q_dport),
        )
    return None
