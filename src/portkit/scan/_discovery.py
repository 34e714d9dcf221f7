"""Host discovery (skipped by -Pn): which targets answer at all.

Privileged: ICMP echo, TCP SYN to 443 and TCP ACK to 80, like nmap's default; any echo reply,
SYN-ACK or RST means up. Unprivileged: connect() to 80 and 443; a connection or a refusal
means up. Loopback addresses are up without a probe (nmap's "localhost-response").
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import struct
import time

from portkit.scan._hosts import HostTable, ScanHost
from portkit.scan._packets import ACK, SYN, Cookie, TcpProbeBuilder, parse_ipv4_tcp
from portkit.scan._states import RESPONSE_CODE, Response
from portkit.scan._timing import Template

Live = list[tuple[ScanHost, str]]


def discover(hosts: HostTable, privileged: bool, tpl: Template) -> Live:
    found: dict[int, str] = {}
    pending: list[ScanHost] = []
    for index in range(len(hosts)):
        host = hosts.get(index)
        if host is None:
            continue
        if ipaddress.ip_address(host.address).is_loopback:
            found[host.index] = "localhost-response"
        else:
            pending.append(host)
    # One probe round waits the template's initial timeout (T3 1 s, T4 0.5 s), within bounds.
    wait = max(0.25, min(tpl.initial_rtt, 2.0))
    for _ in range(2):
        todo = [h for h in pending if h.index not in found]
        if not todo:
            break
        if privileged and all(h.family == socket.AF_INET for h in todo):
            found.update(_raw_ping(todo, wait))
        else:
            found.update(_connect_ping(todo, wait))
    return [(h, found[h.index]) for h in (hosts.get(i) for i in sorted(found)) if h is not None]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _raw_ping(todo: list[ScanHost], wait: float) -> dict[int, str]:
    from portkit.scan._raw import source_address

    cookie = Cookie()
    ident = cookie(0, 1) & 0xFFFF
    our_port = 40000 + cookie(0, 2) % 20000
    by_number = {h.number: h.index for h in todo}
    found: dict[int, str] = {}
    with (
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as icmp,
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as tcp,
    ):
        for host in todo:
            body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"portkit"
            body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
            # A probe the kernel refuses (EACCES: a broadcast address) is a probe without an
            # answer: the host is not found up.
            with contextlib.suppress(OSError):
                icmp.sendto(body, (host.address, 0))
            src = source_address(host)
            for flags, port in ((SYN, 443), (ACK, 80)):
                seq = cookie.tcp_seq(host.number, port)
                builder = TcpProbeBuilder(src, host.number, flags)
                packet = builder.build(our_port, port, seq, seq if flags == ACK else 0)
                with contextlib.suppress(OSError):
                    tcp.sendto(packet, (host.address, 0))
        deadline = time.monotonic() + wait
        while len(found) < len(todo):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([icmp, tcp], [], [], left)
            for sock in ready:
                packet = sock.recv(65535)
                if sock is icmp:
                    ihl = (packet[0] & 0x0F) * 4
                    if packet[ihl] == 0 and struct.unpack_from("!H", packet, ihl + 4)[0] == ident:
                        index = by_number.get(int.from_bytes(packet[12:16], "big"))
                        if index is not None:
                            found.setdefault(index, "echo-reply")
                else:
                    reply = parse_ipv4_tcp(packet)
                    if reply is not None and reply[2] == our_port and reply[0] in by_number:
                        why = "syn-ack" if reply[4] == RESPONSE_CODE[Response.SYN_ACK] else "reset"
                        found.setdefault(by_number[reply[0]], why)
    return found


def _connect_ping(todo: list[ScanHost], wait: float) -> dict[int, str]:
    found: dict[int, str] = {}
    socks: dict[socket.socket, ScanHost] = {}
    for host in todo:
        for port in (80, 443):
            sock = socket.socket(host.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            sock.connect_ex((host.address, port))
            socks[sock] = host
    deadline = time.monotonic() + wait
    try:
        while socks and time.monotonic() < deadline:
            _, ready, _ = select.select([], list(socks), [], max(0.0, deadline - time.monotonic()))
            for sock in ready:
                host = socks.pop(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sock.close()
                if err == 0:
                    found.setdefault(host.index, "syn-ack")
                elif err == errno.ECONNREFUSED:
                    found.setdefault(host.index, "conn-refused")
    finally:
        for sock in socks:
            sock.close()
    return found
