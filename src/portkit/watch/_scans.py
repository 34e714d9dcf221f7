"""Scan detection from the packets the kernel already exchanges: a pure state machine.

Theory of operation. A port scan is many connection attempts from one source that mostly fail:
the kernel answers a SYN to a closed port with a RST, a UDP datagram to a closed port with an
ICMP port-unreachable, and a filtered port not at all. The watcher sees, per network namespace,
the inbound attempts (a SYN without ACK; a TCP segment with neither ACK nor SYN nor RST, which
no connection sends — nmap's FIN, NULL and Xmas probes; a UDP datagram) and this host's answers
(SYN-ACK: the port is open; RST or ICMP unreachable: closed or rejected). An attempt not answered
within `answer_timeout` counts as failed too (filtered). Thresholds follow Zeek's scan policy:
`ports` distinct ports of one host failed by one source within `window` seconds, or `hosts`
hosts failed on one port, raise a `scan`. FIN/NULL/Xmas probes count whatever the answer: they
have no legitimate use.

The ACK family (nmap's ACK -sA, window -sW and Maimon -sM scans) sends segments with ACK set,
which the packet filter does not pass (they are nearly all of a busy host's packets). The
kernel's answer shows them: a segment with ACK set that meets no connection (a closed port,
and a listener too: no handshake was begun) is answered by a RST *without* ACK, its sequence
number taken from the segment's acknowledgement (RFC 9293 3.10.7.1); every other RST the
kernel sends, to a SYN, a FIN/NULL/Xmas probe or when it aborts a connection, carries ACK. So
a bare RST from this host is a failed ACK-family attempt on its source port. The three scans
differ only in flags the filter does not pass, so all are reported as ACK. Late segments of a
closed connection draw the same bare RST, and so do SYN-ACKs that reach this host for SYNs it
never sent (backscatter of a flood that forged its address): a flow in which the watcher saw a
SYN or a SYN-ACK either way (within `window`, at most `flow_memory` flows) is no attempt, and
the same threshold of distinct ports applies (a closed connection's late ACKs reach one port).

Ordinary traffic does not trip it: a busy client opens many connections to *one* port (each
answered by a SYN-ACK), a restarting service refuses connections on one port for a moment.

The scan type is guessed from the probes: a SYN with at most 4 bytes of TCP options (an MSS
alone) is a raw SYN probe (nmap -sS, portkit scan -sS); an operating system's connect() SYN
carries SACK-permitted, timestamps and window scaling as well (-sT).

A datagram that comes back to an address and port this host sent one from (within
`udp_reply`) is a reply, not an attempt: a host's DNS lookups each use a new ephemeral port,
and its resolver's answers must not read as a UDP scan (nor `--block` cut the host off it).

Feed `Detector.packet()` with parsed packets in time order and call `Detector.tick(now)` now and
then; both return the events that became true.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


class ProbeKind(enum.StrEnum):
    SYN = "syn"
    CONNECT = "connect"
    FIN = "fin"
    NULL = "null"
    XMAS = "xmas"
    ODD = "odd-flags"
    ACK = "ack"  # seen by the bare RST it draws: ACK, window and Maimon probes
    UDP = "udp"


# What each kind is called in the event's scan type (nmap's names).
SCAN_TYPE = {
    ProbeKind.SYN: "SYN",
    ProbeKind.CONNECT: "connect",
    ProbeKind.FIN: "FIN",
    ProbeKind.NULL: "NULL",
    ProbeKind.XMAS: "Xmas",
    ProbeKind.ODD: "odd TCP flags",
    ProbeKind.ACK: "ACK",
    ProbeKind.UDP: "UDP",
}
_STEALTH = frozenset({ProbeKind.FIN, ProbeKind.NULL, ProbeKind.XMAS, ProbeKind.ODD})


@dataclass(frozen=True, slots=True)
class Seen:
    """One packet as the watcher parsed it (see `_packets.parse`)."""

    time: float
    netns: str | None
    outgoing: bool  # sent by this namespace (an answer) rather than received (an attempt)
    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0
    flags: int = 0  # TCP flags
    options: int = 0  # TCP options length in bytes
    icmp_type: int = -1
    # For an ICMP error: the packet it quotes (this host's answer to src:sport -> dst:dport).
    quoted: tuple[str, str, int, int, int] | None = None  # (src, dst, proto, sport, dport)


def classify_probe(seen: Seen) -> ProbeKind | None:
    """The kind of attempt an inbound packet is, or None when it is not an attempt."""
    if seen.proto == UDP:
        return ProbeKind.UDP
    if seen.proto != TCP:
        return None
    flags = seen.flags
    if flags & SYN and not flags & ACK:
        return ProbeKind.SYN if seen.options <= 4 else ProbeKind.CONNECT
    if flags & (ACK | SYN | RST):
        return None
    if flags & 0x3F == 0:
        return ProbeKind.NULL
    if flags & 0x3F == FIN:
        return ProbeKind.FIN
    if flags & (FIN | PSH | URG) == FIN | PSH | URG:
        return ProbeKind.XMAS
    return ProbeKind.ODD


@dataclass(frozen=True)
class Thresholds:
    ports: int = 15  # distinct failed ports on one host from one source
    hosts: int = 25  # distinct hosts failed on one port by one source
    window: float = 300.0  # seconds an attempt is remembered
    answer_timeout: float = 2.0  # an attempt unanswered this long failed (filtered)
    quiet: float = 30.0  # a scan with no attempt for this long has ended
    udp_reply: float = 120.0  # a datagram this long after one this host sent the other way is a reply
    flow_memory: int = 65536  # TCP flows seen opening that are remembered (oldest forgotten first)


class Outcome(enum.StrEnum):
    PENDING = "pending"
    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"


@dataclass
class _Attempt:
    kind: ProbeKind
    time: float
    outcome: Outcome = Outcome.PENDING


@dataclass
class _Source:
    netns: str | None
    address: str
    first: float
    last: float
    attempts: dict[tuple[str, int, int], _Attempt] = field(default_factory=dict)  # (dst, port, proto)
    # Kept as attempts change, so judging one packet does not walk every attempt.
    failed: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # dst -> failed (port, proto)
    hosts: dict[tuple[int, int], set[str]] = field(default_factory=dict)  # (port, proto) -> dsts failed
    reported: bool = False

    def note(self, key: tuple[str, int, int], attempt: _Attempt) -> None:
        dst, port, proto = key
        # Only failures count, across hosts as across ports (Zeek's address scan counts failed
        # attempts too): a client that reaches 25 web servers (a container behind this host,
        # seen as it is forwarded) is no scanner.
        if attempt.kind in _STEALTH or attempt.outcome in (Outcome.CLOSED, Outcome.FILTERED):
            self.failed.setdefault(dst, set()).add((port, proto))
            self.hosts.setdefault((port, proto), set()).add(dst)

    def recount(self) -> None:
        self.failed.clear()
        self.hosts.clear()
        for key, attempt in self.attempts.items():
            self.note(key, attempt)


@dataclass(frozen=True)
class ScanEvent:
    """A source judged to be scanning: the `scan` event (and `scan-ended` when it stops)."""

    kind: str  # "scan" when detected, "scan-ended" when the source has gone quiet
    netns: str | None
    source: str
    first: float
    last: float
    scan_type: str
    ports: tuple[int, ...]
    addresses: tuple[str, ...]
    attempts: int
    open_ports: tuple[int, ...]
    closed: int
    filtered: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "time": self.last,
            "netns": self.netns,
            "source": self.source,
            "first": self.first,
            "last": self.last,
            "scan_type": self.scan_type,
            "ports": list(self.ports),
            "addresses": list(self.addresses),
            "attempts": self.attempts,
            "open_ports": list(self.open_ports),
            "closed": self.closed,
            "filtered": self.filtered,
            "reason": self.reason,
        }


class Detector:
    def __init__(self, thresholds: Thresholds | None = None, ignore: Iterable[str] = ()) -> None:
        self.thresholds = thresholds or Thresholds()
        self.ignore = frozenset(ignore)  # sources never judged (e.g. this host's own monitoring)
        self.sources: dict[tuple[str | None, str], _Source] = {}
        # (netns, this host's address and port, the peer's) -> when this host last sent there
        self.sent: dict[tuple[str | None, str, int, str, int], float] = {}
        # The same key for TCP flows with a SYN or SYN-ACK either way -> when; oldest first.
        self.flows: dict[tuple[str | None, str, int, str, int], float] = {}

    # --- input ------------------------------------------------------------------------------

    def packet(self, seen: Seen) -> list[ScanEvent]:
        if seen.outgoing and seen.proto == UDP:
            # A datagram this host sends: what comes back the other way is a reply (a DNS
            # answer reaches a new ephemeral port each lookup), and a UDP service's answer
            # settles the client's attempt as open. Kept oldest first, so aging stops early.
            flow = (seen.netns, seen.src, seen.sport, seen.dst, seen.dport)
            self.sent.pop(flow, None)
            self.sent[flow] = seen.time
        if seen.proto == TCP and seen.flags & SYN:
            self._remember_flow(seen)
        if seen.outgoing and seen.proto == TCP and seen.flags & (RST | ACK) == RST:
            return self._bare_rst(seen)
        if seen.outgoing:
            answered = self._answer(seen)
            if answered is None:
                return []
            settled, (dst, port, proto) = answered
            return self._judge(settled, dst, (port, proto))
        kind = classify_probe(seen)
        if kind is None or seen.src in self.ignore:
            return []
        if kind is ProbeKind.UDP:
            sent = self.sent.get((seen.netns, seen.dst, seen.dport, seen.src, seen.sport))
            if sent is not None and seen.time - sent <= self.thresholds.udp_reply:
                return []
        source = self._source(seen.netns, seen.src, seen.time)
        attempt_key = (seen.dst, seen.dport, seen.proto)
        previous = source.attempts.get(attempt_key)
        if previous is None or previous.outcome is not Outcome.PENDING or kind in _STEALTH:
            attempt = source.attempts[attempt_key] = _Attempt(kind, seen.time)
            source.note(attempt_key, attempt)
        return self._judge(source, seen.dst, (seen.dport, seen.proto))

    def _source(self, netns: str | None, address: str, now: float) -> _Source:
        """The attempts of `address` (in `netns`), seen last at `now`."""
        source = self.sources.get((netns, address))
        if source is None:
            source = self.sources[(netns, address)] = _Source(netns, address, now, now)
        source.last = now
        return source

    def _remember_flow(self, seen: Seen) -> None:
        if seen.outgoing:
            flow = (seen.netns, seen.src, seen.sport, seen.dst, seen.dport)
        else:
            flow = (seen.netns, seen.dst, seen.dport, seen.src, seen.sport)
        self.flows.pop(flow, None)
        self.flows[flow] = seen.time
        if len(self.flows) > self.thresholds.flow_memory:
            del self.flows[next(iter(self.flows))]

    def _bare_rst(self, seen: Seen) -> list[ScanEvent]:
        """A RST without ACK from this host: the peer sent a segment with ACK set to a port with
        no connection (see the module's docstring): a failed ACK-family attempt, unless it is a
        late segment of a flow seen opening."""
        if seen.dst in self.ignore:
            return []
        if (seen.netns, seen.src, seen.sport, seen.dst, seen.dport) in self.flows:
            return []
        source = self._source(seen.netns, seen.dst, seen.time)
        attempt_key = (seen.src, seen.sport, TCP)
        previous = source.attempts.get(attempt_key)
        if previous is None or previous.outcome is not Outcome.PENDING:
            attempt = source.attempts[attempt_key] = _Attempt(ProbeKind.ACK, seen.time, Outcome.CLOSED)
            source.note(attempt_key, attempt)
        return self._judge(source, seen.src, (seen.sport, TCP))

    def _answer(self, seen: Seen) -> tuple[_Source, tuple[str, int, int]] | None:
        """This host's answer to an attempt: settles its outcome; returns the source it settled."""
        if seen.proto == TCP:
            key = (seen.netns, seen.dst)
            attempt_key = (seen.src, seen.sport, TCP)
            if seen.flags & SYN and seen.flags & ACK:
                outcome = Outcome.OPEN
            elif seen.flags & RST:
                outcome = Outcome.CLOSED
            else:
                return None
        elif seen.proto == UDP:
            key = (seen.netns, seen.dst)
            attempt_key = (seen.src, seen.sport, UDP)
            outcome = Outcome.OPEN
        elif seen.proto in (ICMP, ICMPV6) and seen.quoted is not None:
            q_src, q_dst, q_proto, _q_sport, q_dport = seen.quoted
            # The quoted packet is the attempt as it arrived: from the source to this host.
            key = (seen.netns, q_src)
            attempt_key = (q_dst, q_dport, q_proto)
            outcome = Outcome.CLOSED
        else:
            return None
        source = self.sources.get(key)
        if source is None:
            return None
        attempt = source.attempts.get(attempt_key)
        if attempt is None or attempt.outcome is not Outcome.PENDING:
            return None
        attempt.outcome = outcome
        source.note(attempt_key, attempt)
        return source, attempt_key

    # --- time -------------------------------------------------------------------------------

    def tick(self, now: float) -> list[ScanEvent]:
        """Age attempts: unanswered ones fail, old ones are forgotten, quiet scans end."""
        events: list[ScanEvent] = []
        limits = self.thresholds
        while self.sent:  # oldest first: stop at the first one still young
            flow = next(iter(self.sent))
            if now - self.sent[flow] <= limits.udp_reply:
                break
            del self.sent[flow]
        while self.flows:
            flow = next(iter(self.flows))
            if now - self.flows[flow] <= limits.window:
                break
            del self.flows[flow]
        for key, source in list(self.sources.items()):
            for attempt_key, attempt in list(source.attempts.items()):
                if attempt.outcome is Outcome.PENDING and now - attempt.time >= limits.answer_timeout:
                    attempt.outcome = Outcome.FILTERED
                if now - attempt.time > limits.window:
                    del source.attempts[attempt_key]
            source.recount()
            events += self._judge(source)
            if now - source.last >= limits.quiet:
                if source.reported:
                    events.append(self._event(source, "scan-ended", "the source has gone quiet"))
                del self.sources[key]
        return events

    def finish(self) -> list[ScanEvent]:
        """At exit: the scans still going, ended."""
        return [
            self._event(s, "scan-ended", "the watch stopped") for s in self.sources.values() if s.reported
        ]

    # --- judgement --------------------------------------------------------------------------

    def _judge(
        self, source: _Source, dst: str | None = None, port: tuple[int, int] | None = None
    ) -> list[ScanEvent]:
        """Whether `source` now crosses a threshold: on the host and port just touched, or
        (neither given) on any."""
        if source.reported:
            return []
        limits = self.thresholds
        reason = ""
        hosts = [dst] if dst is not None else list(source.failed)
        for host in hosts:
            failed = len(source.failed.get(host, ()))
            if failed >= limits.ports:
                reason = f"{failed} ports of {host} failed within {limits.window:g} s"
                break
        ports = [port] if port is not None else list(source.hosts)
        for key in ports if not reason else ():
            tried = len(source.hosts.get(key, ()))
            if tried >= limits.hosts:
                reason = f"{tried} hosts failed on port {key[0]} within {limits.window:g} s"
                break
        if not reason:
            return []
        source.reported = True
        return [self._event(source, "scan", reason)]

    def _event(self, source: _Source, kind: str, reason: str) -> ScanEvent:
        attempts = source.attempts
        kinds: dict[ProbeKind, int] = {}
        for attempt in attempts.values():
            kinds[attempt.kind] = kinds.get(attempt.kind, 0) + 1
        main = max(kinds, key=lambda k: kinds[k]) if kinds else ProbeKind.SYN
        return ScanEvent(
            kind=kind,
            netns=source.netns,
            source=source.address,
            first=source.first,
            last=source.last,
            scan_type=SCAN_TYPE[main],
            ports=tuple(sorted({port for _dst, port, _proto in attempts})),
            addresses=tuple(sorted({dst for dst, _port, _proto in attempts})),
            attempts=len(attempts),
            open_ports=tuple(
                sorted({p for (_d, p, _pr), a in attempts.items() if a.outcome is Outcome.OPEN})
            ),
            closed=sum(1 for a in attempts.values() if a.outcome is Outcome.CLOSED),
            filtered=sum(1 for a in attempts.values() if a.outcome is Outcome.FILTERED),
            reason=reason,
        )
