"""How one TCP port is probed to a verdict, as a pure state machine (sans-I/O, like h11).

No socket, no clock, no asyncio here. The I/O driver (`_engine.py`) tells a `ProbePlan` what
happened on the port's connections, with the time it happened, and does what the plan answers:

    events (methods)                           actions (returned, in order)
    start(now)                                 Connect(conn, probe, tls, timeout, handshake)
    connected(conn, now)                       Send(conn, payload)
    handshake(conn, session, now)  (TLS probe) Wait(conn, until)   (conn None: the port's timer)
    received(conn, data, now)                  Close(conn)
    closed(conn, now)    (EOF, reset, error)   Verdict(record)
    failed(conn, now)    (refused, timed out)
    timeout(conn, now)   (a Wait expired)

Theory of operation
-------------------
Each connection carries one probe. Its reply is complete when the server closes, the wait for
it is over, it reaches `MAX_REPLY`, or (the NULL probe only) it is a banner with a version;
after the first bytes the wait shrinks to a `linger`, since the rest follows within a round
trip or two. The port then moves through these phases:

    phase      on                                              goes to
    LISTEN     the NULL reply is a hard match (a banner)        DONE or ROOT_PAGE
    LISTEN     the grace timer, or a NULL reply without one     PROBE (first probes)
    PROBE      a TLS handshake succeeds                         LISTEN, inside the TLS tunnel
    PROBE      a hard match that may be TLS's plain face        PROBE, until the TLS verdict
    PROBE      a hard match (with a version, or none in flight) DONE or ROOT_PAGE
    PROBE      a hard match without a version                   HOLD
    PROBE      a soft match                                     PROBE, narrowed to that service
    PROBE      nothing left to send or wait for; or every       DONE (soft match, tcpwrapped or
               connection closed on us, twice per_port tries     the port table's guess)
    HOLD       a reply with a version, or the last in flight    DONE or ROOT_PAGE
    ROOT_PAGE  the reply to `GET /`                             DONE

1. LISTEN: a server that speaks first (SSH, FTP, SMTP, MySQL...) does so within a few round
   trips; its banner is matched at once, and it is no TLS server.
2. PROBE: more connections, `per_port` at a time, the TLS handshake and the probes most likely
   for this port first; the NULL connection keeps listening, so a slow banner still counts.
   A hard match ends the port, but a plain-text match waits for the TLS probe's verdict when it
   could be a TLS service's plain face (nginx answers plain HTTP on a TLS port with an error
   page; nmap's `ssl/NAME` rules say so). A successful handshake starts again from LISTEN inside
   TLS, once the plain-text connections are gone (servers cap unauthenticated connections:
   sshd's MaxStartups drops some beyond 10).
3. HOLD: a match without a version launches nothing new but waits for the probes in flight;
   one of them may name the version (PostgreSQL's protocol range).
4. ROOT_PAGE: an HTTP service's facts are what it answers to `GET /` (docs/json.md), whichever
   probe named it (nmap's probes name HTTP from error pages: OPTIONS, a bare line).
5. Accepted then closed without a byte, everywhere: `tcpwrapped`. Nothing at all: the port
   table's guess, marked as such.

Events that make no sense in a phase (a reply from a connection already closed, a timer that
fired late) are ignored, so the driver never has to guard against them. Every wait follows the
measured round-trip time (`Timing`), so a silent port costs well under two seconds on a LAN,
where nmap waits seconds for every probe, one after another.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from portkit.model import Protocol
from portkit.model.services import (
    CONFIDENCE_HARD,
    CONFIDENCE_SOFT,
    CONFIDENCE_TABLE,
    CONFIDENCE_WRAPPED,
    HttpInfo,
    Method,
    ServiceRecord,
    TlsInfo,
)
from portkit.services._http import parse_http_response
from portkit.services._match import Identification, match_reply, plan_probes
from portkit.services._probes import NULL_PROBE, TLS_PROBE, Probe, ProbeDatabase

HTTP_NAMES = ("http", "https", "http-proxy", "http-alt")
# The request whose answer gives an HTTP service's facts (status, Server, title, redirect).
ROOT_PAGE = Probe("get-root", Protocol.TCP, b"GET / HTTP/1.0\r\n\r\n")

MAX_REPLY = 65536  # bytes kept of one reply
_EARLY = 0.01  # a timer may fire this much before its time (the event loop's clock resolution)


@dataclass(frozen=True)
class DetectOptions:
    """How hard and how wide to probe."""

    intensity: int = 7  # 0 light .. 9 all (nmap's --version-intensity)
    per_port: int = 8  # probe connections open at once on one port
    concurrency: int = 200  # connections open at once overall (capped by the open-files limit)
    timeout_scale: float = 1.0  # multiplies every wait (slow or lossy networks)
    rtt: dict[str, float] = field(default_factory=dict)  # host -> measured round-trip time, seconds
    # Ports that only get listened to, never sent a probe: printers print whatever reaches their
    # raw port (JetDirect 9100-9107), which is why nmap's Exclude directive skips them too.
    listen_only: frozenset[int] = frozenset(range(9100, 9108))


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass(frozen=True)
class Timing:
    """Every wait of one port's detection, derived from its round-trip time."""

    rtt: float
    scale: float = 1.0

    @property
    def connect(self) -> float:
        return _clamp(1.0 + 10 * self.rtt, 1.0, 10.0) * self.scale

    @property
    def grace(self) -> float:
        """How long a server gets to speak first before probes start beside it."""
        return _clamp(0.12 + 4 * self.rtt, 0.12, 1.5) * self.scale

    @property
    def banner(self) -> float:
        """How long the NULL connection keeps listening for a slow banner."""
        return _clamp(1.5 + 8 * self.rtt, 1.5, 6.0) * self.scale

    @property
    def linger(self) -> float:
        """After a first reply, how long to wait for the rest of it."""
        return _clamp(0.1 + 2 * self.rtt, 0.1, 0.6) * self.scale

    def probe(self, probe: Probe) -> float:
        if probe.wait:
            return probe.wait * self.scale
        return _clamp(0.6 + 8 * self.rtt, 0.6, 6.0) * self.scale


# --- what the driver is told to do ---------------------------------------------------------


class TlsMode(enum.Enum):
    """How a connection is opened."""

    PLAIN = "plain"
    HANDSHAKE = "handshake"  # the TLS probe: a handshake offering ALPN is the whole exchange
    TUNNEL = "tunnel"  # a probe inside TLS (the port's TLS layer is known)


@dataclass(frozen=True)
class Connect:
    """Open connection `conn` for `probe`; report connected (or handshake), failed or closed."""

    conn: int
    probe: Probe
    tls: TlsMode
    timeout: float  # for the connection and any handshake together
    handshake: float | None = None  # the TLS handshake's own limit


@dataclass(frozen=True)
class Send:
    conn: int
    payload: bytes


@dataclass(frozen=True)
class Wait:
    """Report `timeout(conn)` if nothing else is reported for `conn` by `until` (replaces the
    previous Wait of `conn`); `conn` None is the port's own timer."""

    conn: int | None
    until: float


@dataclass(frozen=True)
class Close:
    """Abort connection `conn` (and forget its timer); nothing more is reported for it."""

    conn: int


@dataclass(frozen=True)
class Verdict:
    record: ServiceRecord


Action = Connect | Send | Wait | Close | Verdict


# --- the state --------------------------------------------------------------------------------


class Phase(enum.Enum):
    LISTEN = "listen"  # the NULL connection alone, for the grace period
    PROBE = "probe"  # probes in flight, per_port at a time
    HOLD = "hold"  # a hard match without a version waits for the probes in flight
    ROOT_PAGE = "root-page"  # an HTTP verdict waits for the answer to GET /
    DONE = "done"


@dataclass
class Reply:
    """What one probe connection got back."""

    probe: Probe
    data: bytes = b""
    closed: bool = False  # the server closed (or reset) the connection
    failed: bool = False  # could not connect at all
    tls: TlsInfo | None = None  # the TLS probe's session
    ident: Identification | None = None


@dataclass
class _Conn:
    """One connection of the port, from Connect to its complete reply."""

    probe: Probe
    connected: bool = False
    deadline: float = 0.0
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass
class _Findings:
    """What the replies of one phase sequence (plain, or inside the TLS tunnel) showed so far."""

    sent: list[str] = field(default_factory=list)  # probe names, NULL excluded
    queue: list[Probe] = field(default_factory=list)
    started: bool = False  # the first probes were queued
    banner: bool = False  # the NULL connection got bytes: the server speaks first
    soft: tuple[Identification, bytes] | None = None
    held: ServiceRecord | None = None  # a hard match waiting for the TLS verdict or a version
    held_for_tls: bool = False
    tls_conn: int | None = None  # the TLS probe's connection, while its verdict is pending
    root_page: HttpInfo | None = None  # what a `GET /` probe, if one ran, was answered
    any_data: bool = False
    all_closed: bool = True  # every connection closed on us without a byte


class ProbePlan:
    """One TCP port (and the inside of its TLS tunnel, if any), probed to a verdict.

    `first_connected`: the driver already holds an open connection (number 1) from checking
    that the port is still open; it becomes the NULL probe's connection.
    """

    def __init__(
        self,
        port: int,
        db: ProbeDatabase,
        opts: DetectOptions,
        hints: list[str],
        timing: Timing,
        *,
        first_connected: bool = True,
    ) -> None:
        self.port, self.db, self.opts, self.hints, self.timing = port, db, opts, hints, timing
        self.null = db.get(Protocol.TCP, NULL_PROBE) or Probe(NULL_PROBE, Protocol.TCP, b"")
        self.phase = Phase.LISTEN
        self.verdict: ServiceRecord | None = None
        self._pending: ServiceRecord | None = None  # the verdict waiting for GET /
        self.tls_info: TlsInfo | None = None  # set once inside the TLS tunnel
        self.found = _Findings()
        self._conns: dict[int, _Conn] = {}
        self._null_conn: int | None = None  # while the NULL connection is open
        self._next_conn = 1
        self._first_connected = first_connected

    @property
    def tunnel(self) -> str:
        return "ssl" if self.tls_info is not None else ""

    # --- events ---------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self._first_connected:
            conn = self._new_conn(self.null)
            self._conns[conn].connected = True
            self._null_conn = conn
            return [self._wait(conn, now + self.timing.banner), Wait(None, now + self.timing.grace)]
        return self._listen(now)

    def connected(self, conn: int, now: float) -> list[Action]:
        state = self._conns.get(conn)
        if state is None or state.connected:
            return []
        state.connected = True
        actions: list[Action] = [Send(conn, state.probe.payload)] if state.probe.payload else []
        actions.append(self._wait(conn, now + self.timing.probe(state.probe)))
        return actions

    def handshake(self, conn: int, session: TlsInfo | None, now: float) -> list[Action]:
        state = self._conns.get(conn)
        if state is None:
            return []
        return self._complete(conn, Reply(state.probe, tls=session), now)

    def received(self, conn: int, data: bytes, now: float) -> list[Action]:
        state = self._conns.get(conn)
        if state is None or not data:
            return []
        state.chunks.append(data)
        state.size += len(data)
        if state.size >= MAX_REPLY:
            return self._complete(conn, self._reply(state), now)
        if state.probe.name == NULL_PROBE:
            ident = match_reply(b"".join(state.chunks), state.probe, self.db)
            if ident is not None and not ident.soft and ident.version:
                # A complete banner; other replies (HTTP's page title) may still be arriving.
                return self._complete(conn, self._reply(state), now)
        # Some of the reply is here; the rest follows within a round trip or two.
        return [self._wait(conn, min(state.deadline, now + self.timing.linger))]

    def closed(self, conn: int, now: float) -> list[Action]:
        state = self._conns.get(conn)
        if state is None:
            return []
        return self._complete(conn, self._reply(state, closed=True), now)

    def failed(self, conn: int, now: float) -> list[Action]:
        state = self._conns.get(conn)
        if state is None:
            return []
        return self._complete(conn, Reply(state.probe, failed=True), now)

    def timeout(self, conn: int | None, now: float) -> list[Action]:
        if conn is None:
            return self._grace_over(now)
        state = self._conns.get(conn)
        if state is None or not state.connected or now < state.deadline - _EARLY:
            return []  # not waiting, or a timer the driver should have replaced
        return self._complete(conn, self._reply(state), now)

    # --- one connection's reply -------------------------------------------------------------------

    def _new_conn(self, probe: Probe) -> int:
        conn = self._next_conn
        self._next_conn += 1
        self._conns[conn] = _Conn(probe)
        return conn

    def _connect(self, probe: Probe, mode: TlsMode | None = None) -> Connect:
        if mode is None:
            mode = TlsMode.TUNNEL if self.tls_info is not None else TlsMode.PLAIN
        conn = self._new_conn(probe)
        if mode is TlsMode.PLAIN:
            return Connect(conn, probe, mode, self.timing.connect)
        wait = self.timing.probe(probe)
        return Connect(conn, probe, mode, self.timing.connect + wait, wait)

    def _wait(self, conn: int, until: float) -> Wait:
        self._conns[conn].deadline = until
        return Wait(conn, until)

    def _reply(self, state: _Conn, *, closed: bool = False) -> Reply:
        data = b"".join(state.chunks)
        return Reply(state.probe, data=data, closed=closed, ident=match_reply(data, state.probe, self.db))

    def _complete(self, conn: int, reply: Reply, now: float) -> list[Action]:
        """Connection `conn` is over with `reply`: close it and let the phase decide."""
        del self._conns[conn]
        actions: list[Action] = [Close(conn)]
        is_null = conn == self._null_conn
        if is_null:
            self._null_conn = None
        step = _ON_REPLY.get(self.phase)
        if step is not None:
            actions.extend(step(self, conn, reply, is_null, now))
        return actions

    # --- the phases ----------------------------------------------------------------------------

    def _listen(self, now: float) -> list[Action]:
        """LISTEN: the NULL connection first, alone for the grace period."""
        self.phase = Phase.LISTEN
        connect = self._connect(self.null)
        self._null_conn = connect.conn
        return [connect, Wait(None, now + self.timing.grace)]

    def _grace_over(self, now: float) -> list[Action]:
        if self.phase is not Phase.LISTEN:
            return []
        return self._next(now)

    def _on_probe_reply(self, conn: int, reply: Reply, is_null: bool, now: float) -> list[Action]:
        """LISTEN and PROBE: read the reply, then send more probes or conclude."""
        found = self.found
        if conn == found.tls_conn:
            found.tls_conn = None
        if reply.data:
            found.any_data = True
            if reply.probe.payload.startswith(ROOT_PAGE.payload[:6]) and found.root_page is None:
                found.root_page = parse_http_response(reply.data)
        if not (reply.closed and not reply.data) and not reply.failed:
            found.all_closed = False
        if reply.tls is not None:
            return self._enter_tunnel(reply.tls, now)
        if is_null and reply.data:
            found.banner = True
        ident = reply.ident
        if ident is not None and not ident.soft:
            record = build_record(ident, reply.data, tunnel=self.tunnel, tls_info=self.tls_info)
            if is_null:
                return self._conclude(record, now)  # the server spoke first: no TLS server
            found.held = _richer(found.held, record)
            # Only an HTTP error page (or a rule that says so, nmap's `ssl/...` names) can be
            # the plain face of a TLS service.
            if (record.http is not None and record.http.status >= 400) or record.tunnel == "ssl":
                found.held_for_tls = True
        elif ident is not None and found.soft is None:
            found.soft = (ident, reply.data)
            found.queue = self._queue(ident.service)
            found.started = True
        return self._next(now)

    def _on_held_reply(self, conn: int, reply: Reply, is_null: bool, now: float) -> list[Action]:
        """HOLD: the probes in flight may add a version; the NULL connection no longer counts."""
        if is_null:
            return []
        return self._on_probe_reply(conn, reply, is_null, now)

    def _on_root_page(self, conn: int, reply: Reply, is_null: bool, now: float) -> list[Action]:
        assert self._pending is not None
        return self._with_root_page(self._pending, parse_http_response(reply.data))

    def _next(self, now: float) -> list[Action]:
        """After the replies so far: conclude, hold, or keep `per_port` probes in flight."""
        found = self.found
        in_flight = [c for c in self._conns if c != self._null_conn]
        if found.held is not None and (found.tls_conn is None or not found.held_for_tls):
            if found.held.version or not in_flight:
                return self._conclude(found.held, now)
            self.phase = Phase.HOLD
            return []
        self.phase = Phase.PROBE
        if not found.started:
            found.started = True
            found.queue = self._queue("")
        actions: list[Action] = []
        while found.queue and len(in_flight) < self.opts.per_port:
            probe = found.queue.pop(0)
            found.sent.append(probe.name)
            if probe.name == TLS_PROBE:
                connect = self._connect(probe, TlsMode.HANDSHAKE)
                found.tls_conn = connect.conn
            else:
                connect = self._connect(probe)
            in_flight.append(connect.conn)
            actions.append(connect)
        if not self._conns:
            return actions + self._conclude(self._final(), now)
        # A port that closes every connection at once is tcpwrapped; no need to try them all.
        if self._null_conn is None and found.all_closed and len(found.sent) >= 2 * self.opts.per_port:
            return actions + self._conclude(self._final(), now)
        return actions

    def _queue(self, within: str) -> list[Probe]:
        if self.port in self.opts.listen_only:
            return []
        found = self.found
        queue = plan_probes(
            self.db, Protocol.TCP, self.port, intensity=self.opts.intensity, hints=self.hints,
            within=within, tls=self.tls_info is not None, exclude=found.sent,
        )  # fmt: skip
        tls_probe = self.db.get(Protocol.TCP, TLS_PROBE)
        # A server that spoke first is not a TLS server; inside TLS there is no second TLS.
        wanted = self.tls_info is None and not found.banner and TLS_PROBE not in found.sent
        if wanted and tls_probe is not None:
            queue.insert(0, tls_probe)
        return queue

    def _close_all(self) -> list[Action]:
        actions: list[Action] = [Close(conn) for conn in self._conns]
        self._conns.clear()
        self._null_conn = None
        return actions

    def _enter_tunnel(self, session: TlsInfo, now: float) -> list[Action]:
        """The port speaks TLS: start again inside it, once the plain connections are gone."""
        actions = self._close_all()
        self.tls_info = session
        self.found = _Findings()
        return actions + self._listen(now)

    def _conclude(self, record: ServiceRecord, now: float) -> list[Action]:
        actions = self._close_all()
        if record.name in HTTP_NAMES and record.method is Method.PROBED:
            if self.found.root_page is None:
                self.phase = Phase.ROOT_PAGE
                self._pending = record
                return [*actions, self._connect(ROOT_PAGE)]
            return actions + self._with_root_page(record, self.found.root_page)
        return [*actions, self._decide(record)]

    def _with_root_page(self, record: ServiceRecord, page: HttpInfo | None) -> list[Action]:
        if page is None:
            return [self._decide(dataclasses.replace(record, http=None))]
        return [self._decide(dataclasses.replace(record, http=page, product=record.product or page.server))]

    def _decide(self, record: ServiceRecord) -> Verdict:
        self.phase = Phase.DONE
        self.verdict = record
        return Verdict(record)

    def _final(self) -> ServiceRecord:
        """Nothing more to send or wait for: the soft match, tcpwrapped, or the table's guess."""
        found = self.found
        if found.soft is not None:
            return build_record(*found.soft, tunnel=self.tunnel, tls_info=self.tls_info)
        if found.all_closed and not found.any_data:
            return ServiceRecord(
                name="tcpwrapped", method=Method.PROBED, confidence=CONFIDENCE_WRAPPED,
                tunnel=self.tunnel, tls=self.tls_info, probe=NULL_PROBE,
            )  # fmt: skip
        what = "replied to no probe" if found.any_data else "silent"
        guess = table_guess(self.hints, f"{what}: {len(found.sent) + 1} probes", silent=not found.any_data)
        if self.tls_info is not None:
            # TLS, and nothing known inside: the table's name for the port in a TLS tunnel, as
            # nmap reports it (`ssl/https-alt?`).
            return dataclasses.replace(guess, tunnel="ssl", tls=self.tls_info, probe=TLS_PROBE)
        return guess


_OnReply = Callable[[ProbePlan, int, Reply, bool, float], list[Action]]

# What a complete reply means in each phase (DONE: nothing; every connection is closed).
_ON_REPLY: dict[Phase, _OnReply] = {
    Phase.LISTEN: ProbePlan._on_probe_reply,
    Phase.PROBE: ProbePlan._on_probe_reply,
    Phase.HOLD: ProbePlan._on_held_reply,
    Phase.ROOT_PAGE: ProbePlan._on_root_page,
}


def build_record(
    ident: Identification, reply: bytes, *, tunnel: str, tls_info: TlsInfo | None
) -> ServiceRecord:
    name = ident.service
    if name.startswith("ssl/"):
        # nmap's rules name a TLS service's plain-text face `ssl/NAME`: that is NAME in a TLS tunnel
        name, tunnel = name[4:], "ssl"
    http = parse_http_response(reply) if name in ("http", "https") else None
    product = ident.product
    if http is not None and not product and http.server:
        product = http.server
    return ServiceRecord(
        name=name,
        product=product,
        version=ident.version,
        extrainfo=ident.extrainfo,
        tunnel=tunnel,
        cpe=ident.cpe,
        method=Method.PROBED,
        confidence=CONFIDENCE_SOFT if ident.soft else CONFIDENCE_HARD,
        tls=tls_info,
        http=http,
        probe=ident.probe,
        hostname=ident.hostname,
        ostype=ident.ostype,
        devicetype=ident.devicetype,
    )


def _richer(held: ServiceRecord | None, found: ServiceRecord) -> ServiceRecord:
    """Of two hard matches, the first, unless the second adds a version to the same service."""
    if held is None:
        return found
    if held.name == found.name and found.version and not held.version:
        return dataclasses.replace(
            found,
            product=found.product or held.product,
            extrainfo=found.extrainfo or held.extrainfo,
            cpe=found.cpe or held.cpe,
            http=found.http or held.http,
        )
    return held


def table_guess(hints: list[str], note: str, *, silent: bool) -> ServiceRecord:
    """The port table's name for a port where nothing matched, with portkit's note on why."""
    name = hints[0] if hints and hints[0] else "unknown"
    return ServiceRecord(
        name=name,
        method=Method.TABLE,
        confidence=CONFIDENCE_TABLE if hints and hints[0] else 0,
        extrainfo="silent" if silent else "unrecognised reply",
        notes=(note,),
    )
