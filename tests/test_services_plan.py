"""The pure probe plan of one TCP port (services/_plan.py): no socket, no clock, no asyncio.

Replies are fed byte by byte and time is virtual: `Server` below plays a service against the
plan, doing what its actions say (connect, send, wait, close) on a simulated timeline.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from portkit.model import Method, Protocol, TlsInfo
from portkit.services import MatchRule, Probe, ProbeDatabase, builtin_database
from portkit.services._plan import (
    Action,
    Close,
    Connect,
    DetectOptions,
    Phase,
    ProbePlan,
    Send,
    Timing,
    TlsMode,
    Verdict,
    Wait,
)

DB = builtin_database()
LAN = Timing(0.0005)
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
SESSION = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", "h2", "CN=lab", ("DNS:lab",), "CN=lab")


def plan_for(port: int, db: ProbeDatabase = DB, hints: tuple[str, ...] = (), per_port: int = 8) -> ProbePlan:
    return ProbePlan(port, db, DetectOptions(per_port=per_port), list(hints), LAN)


def verdict(actions: list[Action]) -> Verdict | None:
    return next((a for a in actions if isinstance(a, Verdict)), None)


# --- byte by byte, by hand ------------------------------------------------------------------


def test_a_banner_fed_byte_by_byte_is_matched_when_complete() -> None:
    plan = plan_for(22, hints=("ssh",))
    actions = plan.start(100.0)
    assert actions == [Wait(1, 100.0 + LAN.banner), Wait(None, 100.0 + LAN.grace)]
    now = 100.001
    for i, byte in enumerate(SSH_BANNER[:-1]):
        actions = plan.received(1, bytes([byte]), now)
        # Bytes have come: the rest must follow within the linger, never later than the banner wait.
        assert actions == [Wait(1, now + LAN.linger)] if i == 0 else len(actions) == 1
        assert plan.phase is Phase.LISTEN
        now += 0.0001
    actions = plan.received(1, SSH_BANNER[-1:], now)
    found = verdict(actions)
    assert found is not None and actions[0] == Close(1)
    record = found.record
    assert (record.name, record.product, record.version) == ("ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3")
    assert (record.method, record.confidence) == (Method.PROBED, 10)
    assert (record.probe, record.ostype) == ("null", "Linux")
    assert plan.phase is Phase.DONE and plan.verdict == record
    # Whatever else the driver reports now is ignored: the plan is done.
    assert plan.timeout(None, now + 1) == [] and plan.received(1, b"x", now + 1) == []


def test_the_grace_period_ends_in_the_tls_probe_and_the_likely_probes() -> None:
    plan = plan_for(443, hints=("https",), per_port=3)
    plan.start(0.0)
    assert plan.timeout(1, 0.01) == []  # a timer not yet due is no timeout
    actions = plan.timeout(None, LAN.grace)
    connects = [a for a in actions if isinstance(a, Connect)]
    assert len(connects) == 3 and plan.phase is Phase.PROBE
    assert (connects[0].probe.name, connects[0].tls) == ("tls", TlsMode.HANDSHAKE)
    assert connects[0].handshake == LAN.probe(connects[0].probe)
    assert connects[1].probe.name == "http-get" and connects[1].tls is TlsMode.PLAIN
    # A connection that opens gets its payload and a wait for the reply.
    after = plan.connected(connects[1].conn, 0.2)
    assert after == [Send(connects[1].conn, connects[1].probe.payload),
                     Wait(connects[1].conn, 0.2 + LAN.probe(connects[1].probe))]  # fmt: skip
    assert plan.timeout(None, 5.0) == []  # the grace timer means nothing once probing started


def test_a_reply_is_complete_at_the_wait_after_its_first_bytes() -> None:
    plan = plan_for(9999, per_port=1)
    plan.start(0.0)
    (tls,) = [a for a in plan.timeout(None, LAN.grace) if isinstance(a, Connect)]
    assert tls.probe.name == "tls"
    # Refused: nothing known, and the one slot of this port goes to the next probe.
    actions = plan.failed(tls.conn, 0.2)
    assert actions[0] == Close(tls.conn)
    (nxt,) = [a for a in actions if isinstance(a, Connect)]
    plan.connected(nxt.conn, 0.3)
    assert plan.received(nxt.conn, b"gar", 0.31) == [Wait(nxt.conn, 0.31 + LAN.linger)]
    assert plan.received(nxt.conn, b"bage", 0.32) == [Wait(nxt.conn, 0.31 + LAN.linger)]  # never later
    assert plan.timeout(nxt.conn, 0.31 + LAN.linger)[0] == Close(nxt.conn)
    assert plan.found.any_data and not plan.found.all_closed and plan.phase is Phase.PROBE


# --- a simulated server -------------------------------------------------------------------


@dataclass
class Server:
    """A TCP service as the plan sees it, on a virtual clock (one millisecond per step).

    `banner`: sent on every plain connection at once. `answer(payload, tls)`: the reply to a
    probe (None: silence). `tls`: the session a handshake yields (None: no TLS). `wrapped`:
    every connection is closed at once without a byte. `chunk`: reply bytes per segment;
    `handshake_delay`: how long the TLS probe's handshake takes.
    """

    banner: bytes = b""
    answer: Callable[[bytes, bool], bytes | None] = lambda payload, tls: None
    tls: TlsInfo | None = None
    wrapped: bool = False
    chunk: int = 1
    handshake_delay: float = 0.002
    clock: float = 0.0
    log: list[Action] = field(default_factory=list)

    def run(self, plan: ProbePlan, limit: float = 60.0) -> Verdict:
        events: list[tuple[float, int, str, int | None, bytes]] = []
        seq = 0
        timer_gen: dict[int | None, int] = {}
        modes: dict[int, TlsMode] = {}
        live: set[int] = {1}

        def at(when: float, kind: str, conn: int | None, data: bytes = b"") -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(events, (when, seq, kind, conn, data))

        def reply(conn: int, data: bytes, when: float) -> None:
            for i in range(0, len(data), self.chunk):
                at(when + i * 1e-4, "data", conn, data[i : i + self.chunk])

        actions = plan.start(self.clock)
        if self.wrapped:
            at(0.001, "closed", 1)
        elif self.banner:
            reply(1, self.banner, 0.001)
        while True:
            for action in actions:
                self.log.append(action)
                if isinstance(action, Verdict):
                    return action
                if isinstance(action, Connect):
                    modes[action.conn] = action.tls
                    live.add(action.conn)
                    if action.tls is not TlsMode.PLAIN and self.tls is None:
                        at(self.clock + 0.001, "closed", action.conn)  # the handshake fails
                    elif action.tls is TlsMode.HANDSHAKE:
                        at(self.clock + self.handshake_delay, "handshake", action.conn)
                    elif self.wrapped:
                        at(self.clock + 0.001, "closed", action.conn)
                    else:
                        at(self.clock + 0.001, "connected", action.conn)
                        if self.banner and action.tls is TlsMode.PLAIN:
                            reply(action.conn, self.banner, self.clock + 0.002)
                elif isinstance(action, Send):
                    answer = self.answer(action.payload, modes[action.conn] is TlsMode.TUNNEL)
                    if answer is not None:
                        reply(action.conn, answer, self.clock + 0.001)
                elif isinstance(action, Wait):
                    timer_gen[action.conn] = timer_gen.get(action.conn, 0) + 1
                    at(action.until, f"timeout:{timer_gen[action.conn]}", action.conn)
                elif isinstance(action, Close):
                    live.discard(action.conn)
            assert events, "the plan waits for nothing, yet gave no verdict"
            self.clock, _, kind, conn, data = heapq.heappop(events)
            assert self.clock < limit, "no verdict within the time limit"
            actions = []
            if kind.startswith("timeout:"):
                if int(kind[8:]) != timer_gen.get(conn):
                    continue  # replaced by a later Wait, as the driver cancels it
                actions = plan.timeout(conn, self.clock)
                continue
            assert conn is not None
            if conn not in live:
                continue  # closed by the plan: a real driver reports nothing more
            if kind == "data":
                actions = plan.received(conn, data, self.clock)
            elif kind == "connected":
                actions = plan.connected(conn, self.clock)
            elif kind == "handshake":
                actions = plan.handshake(conn, self.tls, self.clock)
            else:
                actions = plan.closed(conn, self.clock)

    def connects(self) -> list[Connect]:
        return [a for a in self.log if isinstance(a, Connect)]


def http_page(status: str, title: str = "", server: str = "nginx/1.22.1") -> bytes:
    body = f"<html><title>{title}</title></html>".encode()
    return f"HTTP/1.1 {status}\r\nServer: {server}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_a_banner_in_any_segmentation_ends_the_port_at_once(chunk: int) -> None:
    server = Server(banner=SSH_BANNER, chunk=chunk)
    record = server.run(plan_for(22, hints=("ssh",))).record
    assert (record.name, record.product, record.ostype) == ("ssh", "OpenSSH", "Linux")
    assert server.connects() == []  # spoke first, within the grace period: no probe needed
    assert server.clock < LAN.grace


def test_a_silent_port_is_the_table_guess_after_the_banner_wait() -> None:
    server = Server()
    record = server.run(plan_for(2222, hints=("EtherNetIP-1",))).record
    assert (record.name, record.method, record.extrainfo) == ("EtherNetIP-1", Method.TABLE, "silent")
    sent = len(server.connects())
    assert record.notes == (f"silent: {sent + 1} probes",)
    # Probes wait side by side: the whole port costs about the NULL connection's banner wait.
    assert LAN.banner <= server.clock < LAN.banner + 2 * LAN.probe(DB.probes[0])


def test_a_port_that_closes_every_connection_is_tcpwrapped_without_trying_every_probe() -> None:
    server = Server(wrapped=True)
    record = server.run(plan_for(8080, per_port=4)).record
    assert (record.name, record.method, record.confidence) == ("tcpwrapped", Method.PROBED, 8)
    assert 8 <= len(server.connects()) < 8 + 4  # twice per_port, then it stops


def test_http_facts_come_from_get_root_whichever_probe_named_it() -> None:
    def answer(payload: bytes, tls: bool) -> bytes | None:
        if payload.startswith(b"GET / "):
            return http_page("200 OK", "lab page")
        return http_page("404 Not Found", "nope") if payload[:1].isalpha() else None

    server = Server(answer=answer)
    record = server.run(plan_for(8000, hints=("http-alt",))).record
    assert (record.name, record.product, record.version) == ("http", "nginx", "1.22.1")
    assert record.http is not None and (record.http.status, record.http.title) == (200, "lab page")
    assert record.tunnel == "" and record.tls is None


def test_a_tls_port_is_probed_again_inside_the_tunnel() -> None:
    """nginx answers plain HTTP on its TLS port with a 400 page: that match waits for the TLS
    verdict (here slower than the page), and the handshake's success starts the probing again
    inside TLS."""

    def answer(payload: bytes, tls: bool) -> bytes | None:
        if not payload[:1].isalpha():
            return None
        if not tls:
            return http_page("400 Bad Request", "The plain HTTP request was sent to HTTPS port")
        return http_page("200 OK", "secure page") if payload.startswith(b"GET / ") else http_page("404 x")

    server = Server(answer=answer, tls=SESSION, handshake_delay=0.5)
    plan = plan_for(443, hints=("https",))
    record = server.run(plan).record
    assert (record.name, record.tunnel, record.product) == ("http", "ssl", "nginx")
    assert record.tls == SESSION and str(record).startswith("ssl/http nginx 1.22.1")
    assert record.http is not None and (record.http.status, record.http.title) == (200, "secure page")
    tunnel = [c for c in server.connects() if c.tls is TlsMode.TUNNEL]
    assert tunnel and tunnel[0].probe.name == "null"  # inside: the NULL probe first again
    # Every plain connection was closed before the first one inside TLS was opened.
    first_inside = server.log.index(tunnel[0])
    plain = {c.conn for c in server.connects() if c.tls is not TlsMode.TUNNEL}
    closed_before = {a.conn for a in server.log[:first_inside] if isinstance(a, Close)}
    assert plain <= closed_before | {1}


def test_a_tls_port_with_nothing_known_inside_is_the_tables_guess_in_a_tunnel() -> None:
    server = Server(tls=SESSION)
    record = server.run(plan_for(8443, hints=("https-alt",))).record
    assert (record.display_name, record.tls, record.probe) == ("ssl/https-alt?", SESSION, "tls")


def _db_with_two_answers() -> ProbeDatabase:
    """A service that names itself to one probe, and its version to a slower one."""
    null = Probe("null", Protocol.TCP, b"", rarity=1)
    first = Probe("who", Protocol.TCP, b"WHO\r\n", rarity=1, ports=frozenset({7777}),
                  rules=(MatchRule("toy", r"^TOY\r\n", product="Toy server"),))  # fmt: skip
    second = Probe("ver", Protocol.TCP, b"VER\r\n", rarity=1, ports=frozenset({7777}),
                   rules=(MatchRule("toy", r"^TOY (?P<version>[\d.]+)\r\n", product="Toy server",
                                    version="{version}", extrainfo="slow"),))  # fmt: skip
    return ProbeDatabase("test", (null, first, second))


def test_a_match_without_a_version_holds_for_the_probes_in_flight() -> None:
    replies = {b"WHO\r\n": (0.0, b"TOY\r\n"), b"VER\r\n": (0.05, b"TOY 2.1\r\n")}
    plan = plan_for(7777, db=_db_with_two_answers())
    plan.start(0.0)
    connects = [a for a in plan.timeout(None, LAN.grace) if isinstance(a, Connect)]
    assert [c.probe.name for c in connects] == ["who", "ver"]
    who, ver = connects
    now = 0.2
    for c in connects:
        plan.connected(c.conn, now)
    plan.received(who.conn, replies[b"WHO\r\n"][1], now)
    assert plan.timeout(who.conn, now + LAN.linger)[0] == Close(who.conn)
    assert plan.phase is Phase.HOLD and plan.verdict is None
    actions = plan.received(ver.conn, replies[b"VER\r\n"][1], now + 0.05)
    actions += plan.timeout(ver.conn, now + 0.05 + LAN.linger)
    found = verdict(actions)
    assert found is not None
    assert (found.record.version, found.record.extrainfo, found.record.probe) == ("2.1", "slow", "ver")
    assert Close(1) in actions  # the NULL connection goes with the verdict


def test_the_held_match_is_the_verdict_when_the_last_probe_in_flight_says_nothing() -> None:
    server = Server(answer=lambda payload, tls: b"TOY\r\n" if payload == b"WHO\r\n" else None)
    record = server.run(plan_for(7777, db=_db_with_two_answers())).record
    assert (record.name, record.product, record.version) == ("toy", "Toy server", "")
