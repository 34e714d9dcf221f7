"""The raw-socket driver for SYN, ACK and UDP scans (IPv4 and IPv6): a sender and a separate receiver.

The sender writes probes on a raw socket (the kernel adds the IP header); the receiver reads
replies on raw TCP/UDP and ICMP sockets, with a BPF filter so the kernel drops what cannot be
ours (on loopback, our own probes) before Python sees it. Replies are matched statelessly:
`Cookie` tells whether the echoed sequence number or source port belongs to this scan and
which try it answers, so nothing per probe is looked up but the schedule's pending entry.
"""

from __future__ import annotations

import ctypes
import ipaddress
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

from portkit.errors import PermissionNeeded
from portkit.scan._hosts import HostTable, ScanHost
from portkit.scan._packets import (
    ACK,
    RST,
    SYN,
    TRY_MASK,
    UDP_PORT_BASE,
    UDP_PORT_SPAN,
    Cookie,
    Reply,
    TcpProbeBuilder,
    parse_icmp6,
    parse_ipv4_icmp,
    parse_ipv4_udp,
    parse_tcp_segment,
    parse_udp_datagram,
    udp_probe,
)
from portkit.scan._payloads import payload_for
from portkit.scan._schedule import Schedule
from portkit.scan._states import NO_RESPONSE, RESPONSE_CODE, Response, ScanType, outcome_codes

Record = Callable[[int, int, int], None]
SendTo = Callable[[bytes, tuple[str, int]], int]
Progress = Callable[[], None]

SO_ATTACH_FILTER = 26
_REPLY_HEAD = struct.Struct("!HHIIxB")  # ports, seq, ack, (offset), flags
_RST_CODE = RESPONSE_CODE[Response.RST]
_SYN_ACK_CODE = RESPONSE_CODE[Response.SYN_ACK]
_CMSG_SPACE = socket.CMSG_SPACE(4)
_RCVBUF = 8 << 20
_BATCH = 512


def _bpf(instructions: list[tuple[int, int, int, int]]) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    code = b"".join(struct.pack("HBBI", *ins) for ins in instructions)
    buffer = ctypes.create_string_buffer(code)
    return struct.pack("HL", len(instructions), ctypes.addressof(buffer)), buffer


def _attach(sock: socket.socket, instructions: list[tuple[int, int, int, int]]) -> None:
    prog, buffer = _bpf(instructions)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
    del buffer  # the kernel copied the program


def tcp_reply_filter(our_port: int) -> list[tuple[int, int, int, int]]:
    """Accept TCP segments to our ports (base + try) with RST or ACK set (not our own probes)."""
    return [
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)
        (0x48, 0, 0, 2),  # ldh [x+2]: destination port
        (0x35, 0, 4, our_port),  # jge base
        (0x35, 3, 0, our_port + TRY_MASK + 1),  # jge base+16 -> drop
        (0x50, 0, 0, 13),  # ldb [x+13]: flags
        (0x45, 0, 1, RST_OR_ACK),  # jset RST|ACK
        (0x06, 0, 0, 0xFFFF),  # accept
        (0x06, 0, 0, 0),  # drop
    ]


RST_OR_ACK = 0x14


def tcp6_reply_filter(our_port: int) -> list[tuple[int, int, int, int]]:
    """`tcp_reply_filter` for IPv6 raw sockets, whose packets start at the TCP header."""
    return [
        (0x28, 0, 0, 2),  # ldh [2]: destination port
        (0x35, 0, 4, our_port),
        (0x35, 3, 0, our_port + TRY_MASK + 1),
        (0x30, 0, 0, 13),  # ldb [13]: flags
        (0x45, 0, 1, RST_OR_ACK),
        (0x06, 0, 0, 0xFFFF),
        (0x06, 0, 0, 0),
    ]


def udp6_reply_filter() -> list[tuple[int, int, int, int]]:
    return [
        (0x28, 0, 0, 2),
        (0x35, 0, 2, UDP_PORT_BASE),
        (0x35, 1, 0, UDP_PORT_BASE + UDP_PORT_SPAN),
        (0x06, 0, 0, 0xFFFF),
        (0x06, 0, 0, 0),
    ]


def udp_reply_filter() -> list[tuple[int, int, int, int]]:
    """Accept UDP datagrams to the source-port range our probes use."""
    return [
        (0xB1, 0, 0, 0),
        (0x48, 0, 0, 2),
        (0x35, 0, 2, UDP_PORT_BASE),  # jge base
        (0x35, 1, 0, UDP_PORT_BASE + UDP_PORT_SPAN),  # jge base+span -> drop
        (0x06, 0, 0, 0xFFFF),
        (0x06, 0, 0, 0),
    ]


def _raw_socket(proto: int, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except PermissionError:
        raise PermissionNeeded("raw sockets need root or CAP_NET_RAW (use --connect without them)") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    return sock


def source_address(host: ScanHost) -> int:
    """The address the kernel would send from to reach `host` (a UDP connect() asks the routing table)."""
    with socket.socket(host.family, socket.SOCK_DGRAM) as probe:
        probe.connect((host.address, 9))
        return int.from_bytes(socket.inet_aton(probe.getsockname()[0]), "big")


class RawScanner:
    """One raw scan: sends via `sender`, reads via `receivers`, drives `schedule`."""

    def __init__(
        self,
        scan_type: ScanType,
        hosts: HostTable,
        ports: Sequence[int],
        schedule: Schedule,
        record: Record,
        *,
        cookie: Cookie | None = None,
        our_port: int | None = None,
    ) -> None:
        self.scan_type = scan_type
        self.hosts = hosts
        self.ports = list(ports)
        self.port_index = {p: i for i, p in enumerate(self.ports)}
        self.schedule = schedule
        self.record = record
        self.cookie = cookie or Cookie()
        self.our_port = our_port or 40000 + self.cookie(0, 0) % 20000 & ~TRY_MASK
        self.udp = scan_type is ScanType.UDP
        proto = socket.IPPROTO_UDP if self.udp else socket.IPPROTO_TCP
        self.proto = proto
        versions = {b.version for b in hosts.targets.blocks}
        self._sockets: list[socket.socket] = []
        self._v4: tuple[socket.socket, socket.socket, socket.socket] | None = None
        self._v6: tuple[socket.socket, socket.socket, socket.socket] | None = None
        if 4 in versions:
            sender = self._keep(_raw_socket(proto))
            replies = self._keep(_raw_socket(proto))
            _attach(replies, udp_reply_filter() if self.udp else tcp_reply_filter(self.our_port))
            self._v4 = (sender, replies, self._keep(_raw_socket(socket.IPPROTO_ICMP)))
        if 6 in versions:
            v6 = socket.AF_INET6
            sender = self._keep(_raw_socket(proto, v6))
            # The kernel computes the checksum at this offset (UDP 6, TCP 16), pseudo-header included.
            sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 6 if self.udp else 16)
            replies = self._keep(_raw_socket(proto, v6))
            _attach(replies, udp6_reply_filter() if self.udp else tcp6_reply_filter(self.our_port))
            icmp6 = self._keep(_raw_socket(socket.IPPROTO_ICMPV6, v6))
            for sock in (replies, icmp6):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            self._v6 = (sender, replies, icmp6)
        for family in (self._v4, self._v6):
            if family is not None:
                family[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _RCVBUF)
                family[1].setblocking(False)
                family[2].setblocking(False)
        self._numbers6: dict[str, int] = {}
        self._dests: dict[int, tuple[tuple[str, int], int, TcpProbeBuilder | None, SendTo]] = {}
        self._flags = SYN if scan_type is ScanType.SYN else ACK
        self.by_number = hosts.by_number
        self.final = outcome_codes(scan_type)
        self.final[NO_RESPONSE] = 0
        self.nports = len(self.ports)

    def _keep(self, sock: socket.socket) -> socket.socket:
        self._sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()

    # -- sender --------------------------------------------------------------------------

    def _destination(self, index: int) -> tuple[tuple[str, int], int, TcpProbeBuilder | None, SendTo]:
        """(sendto address, address number, TCP header builder, sendto) for a host, cached."""
        dest = self._dests.get(index)
        if dest is None:
            host = self.hosts.get(index)
            assert host is not None
            builder = None
            if host.family == socket.AF_INET6:
                assert self._v6 is not None
                if not self.udp:
                    builder = TcpProbeBuilder(0, 0, self._flags, checksum=False)
                sendto = self._v6[0].sendto
            else:
                assert self._v4 is not None
                if not self.udp:
                    builder = TcpProbeBuilder(source_address(host), host.number, self._flags)
                sendto = self._v4[0].sendto
            dest = self._dests[index] = ((host.address, 0), host.number, builder, sendto)
        return dest

    def send(self, probes: list[tuple[int, int]]) -> None:
        """Send a batch of probes; this loop is the scan's hot path, so it keeps to locals."""
        nports, ports, dests = self.nports, self.ports, self._dests
        cookie, base = self.cookie, self.our_port
        with_ack = self.scan_type is ScanType.ACK
        for key, tryno in probes:
            index, port_index = divmod(key, nports)
            dest = dests.get(index) or self._destination(index)
            address, number, builder, sendto = dest
            port = ports[port_index]
            if builder is None:
                packet = udp_probe(cookie.udp_sport(number, port, tryno), port, payload_for(port))
            else:
                seq = cookie(number, port)
                packet = builder.build(base + tryno, port, seq, seq if with_ack else 0)
            # ENOBUFS and kin: the probe counts as sent and lost; retransmission covers it.
            # (contextlib.suppress would cost more than the sendto on loopback.)
            try:  # noqa: SIM105
                sendto(packet, address)
            except OSError:
                pass

    # -- receiver ------------------------------------------------------------------------

    def _take(self, reply: Reply | None, now: float) -> int:
        """Settle the probe `reply` answers, if it is one of ours; 1 if it was."""
        if reply is None:
            return 0
        address, port, our_port, seq, rcode, ttl = reply
        if not self.final[rcode]:
            return 0
        host = self.by_number.get(address)
        index = self.port_index.get(port)
        if host is None or index is None:
            return 0
        if self.udp:
            tryno = (our_port - self.cookie.udp_sport(address, port, 0)) % UDP_PORT_SPAN
            if tryno > TRY_MASK:
                return 0
        else:
            tryno = our_port - self.our_port
            if not 0 <= tryno <= TRY_MASK or seq != self.cookie(address, port):
                return 0
        key = host * self.nports + index
        if self.schedule.answered(key, tryno, now):
            self.record(key, rcode, ttl)
        return 1

    def _drain_tcp(self, now: float) -> int:
        """`_take(parse_ipv4_tcp(packet))` for every queued segment, inlined and batched: the hot path."""
        assert self._v4 is not None
        recv, final = self._v4[1].recv, self.final
        by_number, port_index, cookie = self.by_number, self.port_index, self.cookie
        base, nports = self.our_port, self.nports
        unpack, rst, syn_ack = _REPLY_HEAD.unpack_from, _RST_CODE, _SYN_ACK_CODE
        answers: list[tuple[int, int, int, int]] = []
        while True:
            try:
                packet = recv(65535)
            except BlockingIOError:
                break
            ihl = (packet[0] & 0x0F) * 4
            if len(packet) < ihl + 20 or packet[9] != 6:
                continue
            port, our_port, seq, ack, flags = unpack(packet, ihl)
            if flags & RST:
                rcode, seq = rst, (ack - 1) & 0xFFFFFFFF if flags & ACK else seq
            elif flags & SYN and flags & ACK:
                rcode, seq = syn_ack, (ack - 1) & 0xFFFFFFFF
            else:
                continue
            address = int.from_bytes(packet[12:16], "big")
            host = by_number.get(address)
            index = port_index.get(port)
            tryno = our_port - base
            if (
                host is None
                or index is None
                or not final[rcode]
                or not 0 <= tryno <= TRY_MASK
                or seq != cookie(address, port)
            ):
                continue
            answers.append((host * nports + index, tryno, rcode, packet[8]))
        if not answers:
            return 0
        record = self.record
        for key, rcode, ttl in self.schedule.answered_batch(answers, now):
            record(key, rcode, ttl)
        return len(answers)

    def drain(self) -> int:
        """Read every reply queued on the receive sockets; return how many were ours."""
        taken = 0
        now = time.monotonic()
        if self._v4 is not None:
            taken += self._drain_tcp(now) if not self.udp else self._drain_udp(self._v4[1], now)
            recv = self._v4[2].recv
            while True:
                try:
                    packet = recv(65535)
                except BlockingIOError:
                    break
                quoted = parse_ipv4_icmp(packet)
                if quoted is not None and quoted[0] == self.proto:
                    taken += self._take(quoted[1], now)
        if self._v6 is not None:
            taken += self._drain6(now)
        return taken

    def _own_probe(self, dst: int, sport: int, dport: int) -> bool:
        """Whether a UDP datagram is one of the probes this scan sent, not a reply to one.

        A raw socket on loopback reads the probes we send to a local address as they arrive:
        a probe's source port is its destination port's cookie, so it would pass for a reply
        from that source port (a false "open"). A real reply matches by chance one time in
        UDP_PORT_SPAN / (TRY_MASK + 1), and then its retransmission, on another port, settles it.
        """
        if dst not in self.by_number or dport not in self.port_index:
            return False
        return (sport - self.cookie.udp_sport(dst, dport, 0)) % UDP_PORT_SPAN <= TRY_MASK

    def _drain_udp(self, sock: socket.socket, now: float) -> int:
        taken = 0
        while True:
            try:
                packet = sock.recv(65535)
            except BlockingIOError:
                return taken
            reply = parse_ipv4_udp(packet)
            if reply is not None and self._own_probe(int.from_bytes(packet[16:20], "big"), *reply[1:3]):
                continue
            taken += self._take(reply, now)

    def _number6(self, address: str) -> int:
        number = self._numbers6.get(address)
        if number is None:
            number = self._numbers6[address] = int(ipaddress.IPv6Address(address.partition("%")[0]))
        return number

    def _drain6(self, now: float) -> int:
        assert self._v6 is not None
        _, replies, icmp6 = self._v6
        taken = 0
        parse = parse_udp_datagram if self.udp else parse_tcp_segment
        for sock in (replies, icmp6):
            while True:
                try:
                    data, ancillary, _, source = sock.recvmsg(65535, _CMSG_SPACE)
                except BlockingIOError:
                    break
                hops = 0
                for level, kind, value in ancillary:
                    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
                        hops = int.from_bytes(value[:4], sys.byteorder)
                if sock is replies:
                    reply = parse(data, self._number6(source[0]), hops)
                    # The destination is not at hand here; a probe to a local address comes
                    # from that same address (::1 to ::1), so the source stands in for it.
                    if self.udp and reply is not None and self._own_probe(reply[0], reply[1], reply[2]):
                        continue
                    taken += self._take(reply, now)
                else:
                    quoted = parse_icmp6(data, hops)
                    if quoted is not None and quoted[0] == self.proto:
                        taken += self._take(quoted[1], now)
        return taken

    # -- the loop ------------------------------------------------------------------------

    def run(self, progress: Progress | None = None) -> None:
        schedule, monotonic = self.schedule, time.monotonic
        poller = select.poll()
        for family in (self._v4, self._v6):
            if family is not None:
                poller.register(family[1], select.POLLIN)
                poller.register(family[2], select.POLLIN)
        last_progress = 0.0
        while not schedule.done:
            now = monotonic()
            probes = schedule.next_probes(now, _BATCH)
            if probes:
                self.send(probes)
            got = self.drain()
            now = monotonic()
            for key in schedule.expired(now):
                self.record(key, NO_RESPONSE, 0)
            if not got and not schedule.can_send() and not schedule.done:
                wait = schedule.next_wakeup(now)
                if wait > 0:
                    poller.poll(min(wait, 0.1) * 1000)
            if progress is not None and now - last_progress > 0.1:
                last_progress = now
                progress()
