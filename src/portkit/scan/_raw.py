"""The raw-socket driver for SYN, ACK and UDP scans (IPv4 and IPv6): a sender and a separate receiver.

The sender writes probes on a raw socket (the kernel adds the IP header; for IPv4 it is the
receiver's TCP/UDP socket itself); the receiver reads replies on raw TCP/UDP and ICMP
sockets, with a BPF filter so the kernel drops what cannot be ours (on loopback, our own
probes) before Python sees it. Replies are matched statelessly:
`Cookie` tells whether the echoed sequence number or source port belongs to this scan and
which try it answers, so nothing per probe is looked up but the schedule's pending entry.

A TCP scan of one host hands its first tries and all its replies to the optional C module
(`_accel.OneHostIO`, built from `_rawio.c`); the loops below are the pure-Python path, used
without it, with `pure_python` (`ScanOptions.pure_python`), for UDP and for several hosts.
`io_path` says which ran.
"""

from __future__ import annotations

import functools
import ipaddress
import select
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from portkit.errors import PermissionNeeded
from portkit.scan._hosts import HostTable, ScanHost
from portkit.scan._packets import (
    ACK,
    RST,
    SYN,
    TCP_HEADER,
    TRY_MASK,
    UDP_PORT_BASE,
    UDP_PORT_SPAN,
    Cookie,
    Reply,
    TcpProbeBuilder,
    parse_icmp6,
    parse_ipv4_icmp,
    parse_ipv4_tcp,
    parse_ipv4_udp,
    parse_tcp_segment,
    parse_udp_datagram,
    udp_probe,
)
from portkit.scan._payloads import payload_for
from portkit.scan._schedule import Schedule
from portkit.scan._states import NO_RESPONSE, RESPONSE_CODE, Response, ScanType, outcome_codes

if TYPE_CHECKING:
    from portkit.scan._accel import OneHostIO

Record = Callable[[int, int, int], None]
RecordBatch = Callable[[list[tuple[int, int, int]]], None]
RecordColumns = Callable[[list[int], bytes, bytes], None]
SendTo = Callable[[bytes, tuple[str, int]], int]
Progress = Callable[[], None]

SO_ATTACH_FILTER = 26
_REPLY_HEAD = struct.Struct("!HHIIxB")  # ports, seq, ack, (offset), flags
_RST_CODE = RESPONSE_CODE[Response.RST]
_SYN_ACK_CODE = RESPONSE_CODE[Response.SYN_ACK]
_CMSG_SPACE = socket.CMSG_SPACE(4)
_RCVBUF = 8 << 20
_BATCH = 512
# recvmmsg slots: an IPv4 header with the longest options (60 bytes) and a TCP header's first 20.
_SLOT = 80
# One slot: version/IHL, TTL, source address, ports, seq, ack, flags.
_SLOT_HEAD = struct.Struct("!B7xB3xI4xHHIIxB46x")
assert _SLOT_HEAD.size == _SLOT
_DROP_ALL = [(0x06, 0, 0, 0)]


def _record_each(record: Record, answers: list[tuple[int, int, int]]) -> None:
    for key, rcode, ttl in answers:
        record(key, rcode, ttl)


def _record_columns(record_batch: RecordBatch, keys: list[int], codes: bytes, ttls: bytes) -> None:
    record_batch(list(zip(keys, codes, ttls, strict=True)))


def _bpf(instructions: list[tuple[int, int, int, int]]) -> tuple[bytes, array[int]]:
    """struct sock_fprog for `instructions`, and the buffer it points into (keep it until attached).

    An array's buffer_info() gives its address, so no ctypes import is needed (~5 ms of start-up).
    """
    buffer = array("B", b"".join(struct.pack("HBBI", *ins) for ins in instructions))
    return struct.pack("HL", len(instructions), buffer.buffer_info()[0]), buffer


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
    """The address the kernel would send from to reach `host` (a UDP connect() asks the routing table).

    A broadcast address (an attached subnet's, 255.255.255.255) needs SO_BROADCAST for that
    question; the raw probes to it are refused all the same (EACCES), so it is scanned like a
    host that never answers, as nmap finds it."""
    with socket.socket(host.family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host.address, 9))
        except PermissionError:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
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
        record_batch: RecordBatch | None = None,
        record_columns: RecordColumns | None = None,
        pure_python: bool = False,
    ) -> None:
        self.scan_type = scan_type
        self.hosts = hosts
        self.ports = list(ports)
        self.schedule = schedule
        self.record = record
        self.record_batch = record_batch or functools.partial(_record_each, record)
        self.record_columns = record_columns or functools.partial(_record_columns, self.record_batch)
        self.cookie = cookie or Cookie()
        self.our_port = our_port or 40000 + self.cookie(0, 0) % 20000 & ~TRY_MASK
        self.udp = scan_type is ScanType.UDP
        proto = socket.IPPROTO_UDP if self.udp else socket.IPPROTO_TCP
        self.proto = proto
        versions = {b.version for b in hosts.targets.blocks}
        self._sockets: list[socket.socket] = []
        self._v4: tuple[socket.socket, socket.socket, socket.socket] | None = None
        self._v6: tuple[socket.socket, socket.socket, socket.socket] | None = None
        self._slots = None
        self._batch_sender = None
        # One host, TCP: the C path (portkit.scan._accel) sends first tries and reads replies.
        only = hosts.get(0) if len(hosts) == 1 and not self.udp else None
        module = None
        if only is not None and not pure_python:
            from portkit.scan._accel import rawio

            module = rawio()
        if 4 in versions:
            # A raw socket receives a copy of every packet of its protocol, our probes included:
            # the receiving socket also sends, so no second socket makes the kernel copy each
            # probe and reply once more (measured: ~10% of a loopback scan's time).
            replies = self._keep(_raw_socket(proto))
            _attach(replies, udp_reply_filter() if self.udp else tcp_reply_filter(self.our_port))
            sender = replies
            self._v4 = (sender, replies, self._keep(_raw_socket(socket.IPPROTO_ICMP)))
            if not self.udp and module is None:
                from portkit.scan import _mmsg

                if _mmsg.available():
                    self._slots = _mmsg.SlotReceiver(replies, _SLOT, 1024)
                    if len(hosts) == 1 and (only := hosts.get(0)) is not None:
                        from portkit.scan._accel import sockaddr

                        address = sockaddr(only)
                        self._batch_sender = _mmsg.SlotSender(replies, address, 20, _BATCH)
        if 6 in versions:
            v6 = socket.AF_INET6
            sender = self._keep(_raw_socket(proto, v6))
            # It never reads: it keeps no copies of the packets a raw socket receives.
            # (Not the receiver: IPV6_CHECKSUM below would apply to its reads too.)
            _attach(sender, _DROP_ALL)
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
        # host index -> (sendto address, cookie host key, checksum base or -1 if not IPv4 TCP, sendto)
        self._fast: dict[int, tuple[tuple[str, int], int, int, SendTo]] = {}
        self._flags = SYN if scan_type is ScanType.SYN else ACK
        self.by_number = hosts.by_number
        self.final = outcome_codes(scan_type)
        self.final[NO_RESPONSE] = 0
        self.nports = len(self.ports)
        self._io: OneHostIO | None = None
        if module is not None and only is not None:
            self._io = self._one_host_io(module, only)

    def _one_host_io(self, module: ModuleType, host: ScanHost) -> OneHostIO | None:
        """The C path's setup for `host`, or None if its cookie would not match ours."""
        from portkit.scan._accel import V4_ICMP, V4_TCP, V6_ICMP, V6_TCP, OneHostIO

        if host.family == socket.AF_INET6:
            assert self._v6 is not None
            sender, replies, icmp = self._v6
            kinds, checksum_base = (V6_TCP, V6_ICMP), -1
        else:
            assert self._v4 is not None
            sender, replies, icmp = self._v4
            kinds = (V4_TCP, V4_ICMP)
            builder = TcpProbeBuilder(source_address(host), host.number, self._flags)
            checksum_base = builder.base + self.our_port
        io = OneHostIO(
            module,
            host,
            host.index,
            self.ports,
            self.cookie,
            self.our_port,
            self._flags,
            self.scan_type is ScanType.ACK,
            checksum_base,
            self.final,
            sender.fileno(),
            ((replies.fileno(), kinds[0]), (icmp.fileno(), kinds[1])),
        )
        return io if io.agrees else None

    @property
    def io_path(self) -> str:
        """Which code reads and writes the packets: "c" (portkit.scan._rawio) or "python"."""
        return "c" if self._io is not None else "python"

    @functools.cached_property
    def port_index(self) -> dict[int, int]:
        """Port -> its index in `ports`, for the Python path's matching (the C path has its own)."""
        return dict(zip(self.ports, range(len(self.ports)), strict=True))

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

    def _fast_destination(self, index: int) -> tuple[tuple[str, int], int, int, SendTo]:
        address, number, builder, sendto = self._destination(index)
        hsum = -1
        if builder is not None and builder.checksum:
            # Everything of the checksum but the port and the cookie (RFC 1071 sums are order-free).
            hsum = builder.base + self.our_port
        fast = self._fast[index] = (address, self.cookie.host_key(number), hsum, sendto)
        return fast

    def send_fresh(self, keys: list[int]) -> None:
        """First tries: IPv4 TCP probes built inline, the rest through `send`. The hot path.

        The checksum is the one's-complement sum taken modulo 0xFFFF (65536 = 1 there, so the
        32-bit cookie goes in whole): -sum % 0xFFFF is exactly RFC 1071's folded complement.
        """
        nports, ports, fast_dests = self.nports, self.ports, self._fast
        sport, flags, pack = self.our_port, self._flags, TCP_HEADER.pack
        with_ack = self.scan_type is ScanType.ACK
        if self._io is not None:
            self._io.send(keys)
            return
        if self._batch_sender is not None:
            self._send_fresh_batched(keys, with_ack)
            return
        slow: list[tuple[int, int]] = []
        for key in keys:
            index, port_index = divmod(key, nports)
            address, hkey, hsum, sendto = fast_dests.get(index) or self._fast_destination(index)
            if hsum < 0:
                slow.append((key, 0))
                continue
            port = ports[port_index]
            seq = hash((hkey, port)) & 0xFFFFFFFF
            ack = seq if with_ack else 0
            packet = pack(sport, port, seq, ack, 0x50, flags, 1024, -(hsum + port + seq + ack) % 0xFFFF, 0)
            try:  # noqa: SIM105 (see send)
                sendto(packet, address)
            except OSError:
                pass
        if slow:
            self.send(slow)

    def _send_fresh_batched(self, keys: list[int], with_ack: bool) -> None:
        """`send_fresh` for a scan of one IPv4 host: packets built in place, one sendmmsg per batch."""
        assert self._batch_sender is not None
        sender, ports, pack_into = self._batch_sender, self.ports, TCP_HEADER.pack_into
        buffer, sport, flags = sender.buffer, self.our_port, self._flags
        _, hkey, hsum, _ = self._fast.get(0) or self._fast_destination(0)
        for start in range(0, len(keys), sender.count):
            chunk = keys[start : start + sender.count]
            offset = 0
            for key in chunk:  # one host: the key is the port index
                port = ports[key]
                seq = hash((hkey, port)) & 0xFFFFFFFF
                ack = seq if with_ack else 0
                csum = -(hsum + port + seq + ack) % 0xFFFF
                pack_into(buffer, offset, sport, port, seq, ack, 0x50, flags, 1024, csum, 0)
                offset += 20
            sender.send(len(chunk))

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

    def _drain_tcp_slots(self, now: float) -> int:
        """`_drain_tcp` reading a batch of replies per syscall and unpacking them in C."""
        assert self._slots is not None
        read, final = self._slots.read, self.final
        by_number, port_index, cookie = self.by_number, self.port_index, self.cookie
        base, nports = self.our_port, self.nports
        host_keys: dict[int, int] = {}
        rst, syn_ack, iter_unpack = _RST_CODE, _SYN_ACK_CODE, _SLOT_HEAD.iter_unpack
        answers: list[tuple[int, int, int, int]] = []
        taken = 0
        while True:
            data = read()
            if not data:
                break
            # The filter passed only TCP with RST or ACK to ports base..base+15, long enough
            # to hold the flags: every field read below is the datagram's own.
            for position, (vihl, ttl, address, port, our_port, seq, ack, flags) in enumerate(
                iter_unpack(data)
            ):
                if vihl != 0x45:  # IP options: the general parser
                    start = position * _SLOT
                    taken += self._take(parse_ipv4_tcp(data[start : start + _SLOT]), now)
                    continue
                if flags & RST:
                    rcode, seq = rst, (ack - 1) & 0xFFFFFFFF if flags & ACK else seq
                elif flags & SYN:
                    rcode, seq = syn_ack, (ack - 1) & 0xFFFFFFFF
                else:
                    continue
                host = by_number.get(address)
                index = port_index.get(port)
                if host is None or index is None or not final[rcode]:
                    continue
                hkey = host_keys.get(address)
                if hkey is None:
                    hkey = host_keys[address] = cookie.host_key(address)
                if seq != hash((hkey, port)) & 0xFFFFFFFF:
                    continue
                answers.append((host * nports + index, our_port - base, rcode, ttl))
        if answers:
            self.record_batch(self.schedule.answered_batch(answers, now))
        return taken + len(answers)

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
        if self._io is not None:
            schedule, collector = self.schedule, self.record_columns
            for keys, trynos, codes, ttls in self._io.drain():
                taken += len(keys)
                collector(*schedule.answered_columns(keys, trynos, codes, ttls, now))
            return taken
        if self._v4 is not None:
            if self.udp:
                taken += self._drain_udp(self._v4[1], now)
            else:
                taken += self._drain_tcp_slots(now) if self._slots is not None else self._drain_tcp(now)
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
            fresh, retries = schedule.next_batch(now, _BATCH)
            if retries:
                self.send(retries)
            if fresh:
                self.send_fresh(fresh)
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
