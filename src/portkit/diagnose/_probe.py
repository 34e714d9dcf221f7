"""The probes a reach diagnosis sends: a connect (TCP) or a datagram (UDP), and a TCP traceroute.

Each runs from the client's namespace (a thread that entered it). As root, raw IPv4 sockets
watch for what answered a TCP probe: the RST (and its TTL: how many hops away its sender is)
or the ICMP error and the router that sent it. Without root only the errno of connect() or
recv() is seen, which is still the kernel's verdict on the packet's fate.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from portkit.sockets._netns import Namespace, run_in

# errno of connect()/recv() -> outcome; the kernel turns ICMP errors and local verdicts into these.
_OUTCOMES: dict[int, str] = {
    0: "open",
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.EPERM: "denied",  # a local netfilter drop: the packet never left
    errno.EACCES: "denied",
    errno.EINVAL: "unreachable",  # a blackhole route
    errno.ENETDOWN: "unreachable",
    errno.EHOSTDOWN: "unreachable",
}

# ICMP destination-unreachable codes (RFC 792, 1812) by name.
_ICMP_UNREACH = {0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable",
                 3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited",
                 13: "admin-prohibited"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Answer:
    """A packet that answered the probe, as the raw sockets saw it."""

    sender: str
    ttl: int
    kind: str  # "rst", "syn-ack", "icmp net-unreachable", "icmp time-exceeded", ...

    def __str__(self) -> str:
        return f"{self.kind} from {self.sender} (ttl {self.ttl})"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    outcome: str  # open, refused, timeout, unreachable, denied, silent (UDP), error
    errno_name: str
    elapsed: float
    source: str | None  # our address and port, as bound
    answer: Answer | None = None
    reply: bytes = b""  # what a UDP service sent back
    thread: int = 0  # the native id of the thread that probed (the kernel's drop reasons name it)

    def __str__(self) -> str:
        text = self.outcome + (f" ({self.errno_name})" if self.errno_name else "")
        if self.answer is not None:
            text += f"; answered by {self.answer}"
        return f"{text} after {self.elapsed * 1000:.0f} ms"


def _wait(sock: socket.socket, event: int, timeout: float) -> bool:
    """Whether `sock` is ready for `event` within `timeout` (poll: descriptors above 1023 too)."""
    poller = select.poll()
    poller.register(sock, event)
    return bool(poller.poll(timeout * 1000))


def _raw(proto: int) -> socket.socket | None:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
    except OSError:
        return None
    sock.setblocking(False)
    return sock


def _answers(
    icmp: socket.socket | None, tcp: socket.socket | None, dst: str, port: int
) -> list[tuple[int, Answer]]:
    """(our source port, answer) for every RST, SYN-ACK or ICMP error about a flow to dst:port."""
    found: list[tuple[int, Answer]] = []
    for sock in (tcp, icmp):
        if sock is None:
            continue
        while True:
            try:
                data, (sender, _) = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if len(data) < 20:
                continue
            ihl = (data[0] & 0x0F) * 4
            ttl = data[8]
            if sock is tcp:
                if sender != dst or len(data) < ihl + 14:
                    continue
                sport, dport = struct.unpack_from("!HH", data, ihl)
                flags = data[ihl + 13]
                if sport != port:
                    continue
                kind = "rst" if flags & 0x04 else "syn-ack" if flags & 0x12 == 0x12 else ""
                if kind:
                    found.append((dport, Answer(sender, ttl, kind)))
                continue
            if len(data) < ihl + 8 + 20:
                continue
            itype, icode = data[ihl], data[ihl + 1]
            inner = ihl + 8
            inner_ihl = (data[inner] & 0x0F) * 4
            inner_dst = socket.inet_ntoa(data[inner + 16 : inner + 20])
            if inner_dst != dst or len(data) < inner + inner_ihl + 4:
                continue
            sport, dport = struct.unpack_from("!HH", data, inner + inner_ihl)
            if dport != port:
                continue
            if itype == 3:
                kind = "icmp " + _ICMP_UNREACH.get(icode, f"unreachable code {icode}")
            elif itype == 11:
                kind = "icmp time-exceeded"
            else:
                continue
            found.append((sport, Answer(sender, ttl, kind)))
    return found


# An ICMP error about a connecting socket's SYN -> the errno connect() would report. The kernel
# may not report it at all: an error that arrives while connect() still holds the socket (a
# veth delivers the answer inside the sender's own transmit) is only a "soft" error, and the
# connection keeps retrying. The raw socket saw it, so the probe ends there.
_ICMP_ERRNO = {
    "icmp net-unreachable": errno.ENETUNREACH,
    "icmp host-unreachable": errno.EHOSTUNREACH,
    "icmp port-unreachable": errno.ECONNREFUSED,
    "icmp net-prohibited": errno.EHOSTUNREACH,
    "icmp host-prohibited": errno.EHOSTUNREACH,
    "icmp admin-prohibited": errno.EHOSTUNREACH,
}


def _connect_outcome(
    sock: socket.socket,
    icmp: socket.socket | None,
    tcp: socket.socket | None,
    address: str,
    port: int,
    sport: int,
    timeout: float,
) -> tuple[int, Answer | None]:
    """Wait for a non-blocking connect: its errno, and the ICMP error that ended it (if one did)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if icmp is not None:
        poller.register(icmp, select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return errno.ETIMEDOUT, None
        ready = dict(poller.poll(left * 1000))
        if sock.fileno() in ready:
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), None
        if icmp is not None and icmp.fileno() in ready:
            for answer_port, answer in _answers(icmp, None, address, port):
                if answer_port == sport and answer.kind in _ICMP_ERRNO:
                    return _ICMP_ERRNO[answer.kind], answer


def probe_tcp(namespace: Namespace, address: str, port: int, timeout: float) -> ProbeResult:
    """connect() to address:port from `namespace`, watching for the answer when root."""

    def work() -> ProbeResult:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        watch = family == socket.AF_INET and os.geteuid() == 0
        icmp = _raw(socket.IPPROTO_ICMP) if watch else None
        tcp = _raw(socket.IPPROTO_TCP) if watch else None
        sock = socket.socket(family, socket.SOCK_STREAM)
        started = time.monotonic()
        try:
            sock.setblocking(False)
            code = sock.connect_ex((address, port))
            try:
                here = sock.getsockname()
                source, sport = f"{here[0]}:{here[1]}", int(here[1])
            except OSError:
                source, sport = None, -1
            answer = None
            if code == errno.EINPROGRESS:
                code, answer = _connect_outcome(sock, icmp, tcp, address, port, sport, timeout)
            elapsed = time.monotonic() - started
            if watch and code != 0 and answer is None:
                time.sleep(0.01)  # the raw copy of the answer is queued with the socket's
                answer = next((a for p, a in _answers(icmp, tcp, address, port) if p == sport), None)
            outcome = _OUTCOMES.get(code, "error")
            return ProbeResult(
                outcome, errno.errorcode.get(code, str(code)) if code else "", elapsed, source, answer
            )
        finally:
            sock.close()
            for raw in (icmp, tcp):
                if raw is not None:
                    raw.close()

    return run_in(namespace, lambda: dataclasses.replace(work(), thread=threading.get_native_id()))


def probe_udp(
    namespace: Namespace, address: str, port: int, timeout: float, payload: bytes = b""
) -> ProbeResult:
    """A datagram to address:port: an answer, a refusal (ICMP port unreachable), or silence."""

    def work() -> ProbeResult:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        started = time.monotonic()
        try:
            try:
                sock.connect((address, port))
                here = sock.getsockname()
                source = f"{here[0]}:{here[1]}"
                sock.send(payload)
                if not _wait(sock, select.POLLIN, timeout):
                    return ProbeResult("silent", "", time.monotonic() - started, source)
                reply = sock.recv(4096)
                return ProbeResult("open", "", time.monotonic() - started, source, reply=reply)
            except OSError as exc:
                code = exc.errno or 0
                return ProbeResult(
                    _OUTCOMES.get(code, "error"),
                    errno.errorcode.get(code, str(code)),
                    time.monotonic() - started,
                    None,
                )
        finally:
            sock.close()

    return run_in(namespace, lambda: dataclasses.replace(work(), thread=threading.get_native_id()))


@dataclass(frozen=True, slots=True)
class Hop:
    ttl: int
    answer: Answer | None  # None: nothing came back for this TTL


def traceroute_tcp(
    namespace: Namespace,
    address: str,
    port: int,
    wait: float,
    max_hops: int = 12,
    *,
    stop: threading.Event | None = None,
) -> list[Hop]:
    """SYNs to address:port with TTL 1..max_hops, all at once, and who answered each (root, IPv4).

    The list ends at the first TTL that reached the target (a SYN-ACK or RST) or at max_hops.
    """
    if ipaddress.ip_address(address).version != 4:
        return []

    def work() -> list[Hop]:
        icmp, tcp = _raw(socket.IPPROTO_ICMP), _raw(socket.IPPROTO_TCP)
        if icmp is None or tcp is None:
            return []
        sockets: dict[int, int] = {}  # source port -> ttl
        opened: list[socket.socket] = []
        try:
            for ttl in range(1, max_hops + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                opened.append(sock)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                if sock.connect_ex((address, port)) not in (0, errno.EINPROGRESS):
                    continue  # not sent (no route, a local drop): nothing will answer it
                try:
                    sockets[int(sock.getsockname()[1])] = ttl
                except OSError:
                    continue
            answers: dict[int, Answer] = {}
            if not sockets:
                return []
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                poller = select.poll()
                poller.register(icmp, select.POLLIN)
                poller.register(tcp, select.POLLIN)
                poller.poll(min(0.05, max(0.0, deadline - time.monotonic())) * 1000)  # stop is looked at
                for sport, answer in _answers(icmp, tcp, address, port):
                    if sport in sockets:
                        answers.setdefault(sockets[sport], answer)
                reached = [t for t, a in answers.items() if a.kind in ("rst", "syn-ack")]
                if reached and all(t in answers for t in range(1, min(reached) + 1)):
                    break
            last = min(
                (t for t, a in answers.items() if not a.kind.endswith("time-exceeded")), default=max_hops
            )
            return [Hop(ttl, answers.get(ttl)) for ttl in range(1, last + 1)]
        finally:
            for sock in opened:
                sock.close()
            icmp.close()
            tcp.close()

    return run_in(namespace, work)
