"""The I/O side of service detection: connections, timers and UDP datagrams.

What to send to a TCP port, when, and what its replies mean is decided by the pure
`ProbePlan` (`_plan.py`, with its theory of operation); this module only carries out its
actions (open, send, wait, close) on asyncio streams and reports back what happened. All
ports run side by side, under one cap on the connections open at once. UDP ports get their
probes in batches, the first hard match ending the port.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import ssl
from collections.abc import Iterable

from portkit.model import Protocol
from portkit.model.services import ServiceRecord, TlsInfo
from portkit.services._match import Identification, match_reply, plan_probes
from portkit.services._plan import (
    MAX_REPLY,
    Action,
    Close,
    Connect,
    DetectOptions,
    ProbePlan,
    Reply,
    Send,
    Timing,
    TlsMode,
    Verdict,
    Wait,
    build_record,
    table_guess,
)
from portkit.services._probes import Probe, ProbeDatabase
from portkit.services._tls import ALPN_OFFER, client_context, describe_session

ServiceTarget = tuple[str, int, Protocol]

_READ_SIZE = 16384



class _Happened(enum.Enum):
    """What a connection task (or a timer) reports to its port's driver."""

    CONNECTED = "connected"
    HANDSHAKE = "handshake"  # with the TLS probe's session (or None)
    DATA = "data"  # with the bytes
    CLOSED = "closed"  # EOF, reset, or any error once connected
    FAILED = "failed"  # refused, or no connection within the timeout
    TIMEOUT = "timeout"  # a Wait expired


_Event = tuple[_Happened, "int | None", object]  # (what, connection, value)


class _PortDriver:
    """Carries out one port's `ProbePlan`: a task per connection, a timer per Wait."""

    def __init__(self, host: str, port: int, plan: ProbePlan, limit: asyncio.Semaphore) -> None:
        self.host, self.port, self.plan, self.limit = host, port, plan, limit
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.timers: dict[int | None, asyncio.TimerHandle] = {}
        self._contexts: dict[TlsMode, ssl.SSLContext] = {}

    async def run(self, first: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> ServiceRecord:
        try:
            # Connection 1, open already, is the plan's NULL connection.
            self.writers[1] = first[1]
            self.tasks[1] = asyncio.ensure_future(self._read(1, *first))
            pending = [self.plan.start(self.loop.time())]
            while True:
                for actions in pending:
                    for action in actions:
                        if isinstance(action, Verdict):
                            return action.record
                        self._do(action)
                # What happened at once is told TLS verdicts first: a handshake decides whether
                # a plain-text match that came with it is the TLS service's plain face.
                batch = [await self.events.get()]
                while not self.events.empty():
                    batch.append(self.events.get_nowait())
                batch.sort(key=lambda event: event[0] is not _Happened.HANDSHAKE)
                pending = [self._dispatch(*event) for event in batch]
        finally:
            for handle in self.timers.values():
                handle.cancel()
            for writer in self.writers.values():
                writer.transport.abort()
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def _dispatch(self, what: _Happened, conn: int | None, value: object) -> list[Action]:
        plan, now = self.plan, self.loop.time()
        if what is _Happened.TIMEOUT:
            self.timers.pop(conn, None)
            return plan.timeout(conn, now)
        assert conn is not None
        if what is _Happened.DATA:
            assert isinstance(value, bytes)
            return plan.received(conn, value, now)
        if what is _Happened.HANDSHAKE:
            assert value is None or isinstance(value, TlsInfo)
            return plan.handshake(conn, value, now)
        if what is _Happened.CONNECTED:
            return plan.connected(conn, now)
        if what is _Happened.CLOSED:
            return plan.closed(conn, now)
        return plan.failed(conn, now)

    def _do(self, action: Action) -> None:
        if isinstance(action, Connect):
            self.tasks[action.conn] = asyncio.ensure_future(self._open(action))
        elif isinstance(action, Send):
            writer = self.writers.get(action.conn)
            if writer is not None:
                writer.write(action.payload)
        elif isinstance(action, Wait):
            old = self.timers.pop(action.conn, None)
            if old is not None:
                old.cancel()
            self.timers[action.conn] = self.loop.call_at(
                action.until, self.events.put_nowait, (_Happened.TIMEOUT, action.conn, None)
            )
        elif isinstance(action, Close):
            handle = self.timers.pop(action.conn, None)
            if handle is not None:
                handle.cancel()
            writer = self.writers.pop(action.conn, None)
            if writer is not None:
                writer.transport.abort()
            task = self.tasks.pop(action.conn, None)
            if task is not None:
                task.cancel()

    def _context(self, mode: TlsMode) -> ssl.SSLContext | None:
        if mode is TlsMode.PLAIN:
            return None
        if mode not in self._contexts:
            self._contexts[mode] = client_context(alpn=ALPN_OFFER if mode is TlsMode.HANDSHAKE else None)
        return self._contexts[mode]

    async def _open(self, action: Connect) -> None:
        conn, post = action.conn, self.events.put_nowait
        tls = self._context(action.tls)
        try:
            async with self.limit:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port, ssl=tls, ssl_handshake_timeout=action.handshake,
                        limit=MAX_REPLY,
                    ),
                    action.timeout,
                )  # fmt: skip
                self.writers[conn] = writer
                if action.tls is TlsMode.HANDSHAKE:
                    session = writer.get_extra_info("ssl_object")
                    post((_Happened.HANDSHAKE, conn, describe_session(session) if session else None))
                else:
                    post((_Happened.CONNECTED, conn, None))
                await self._read(conn, reader, writer)
        except (ConnectionRefusedError, TimeoutError):
            post((_Happened.FAILED, conn, None))
        except (ConnectionError, ssl.SSLError, OSError):
            post((_Happened.CLOSED, conn, None))

    async def _read(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Report every chunk, then the end; runs until the plan closes the connection."""
        post = self.events.put_nowait
        try:
            while True:
                chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    break
                post((_Happened.DATA, conn, chunk))
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
        post((_Happened.CLOSED, conn, None))


async def _detect_tcp(
    host: str, port: int, db: ProbeDatabase, opts: DetectOptions, limit: asyncio.Semaphore, hints: list[str]
) -> ServiceRecord | None:
    rtt_hint = opts.rtt.get(host)
    loop = asyncio.get_running_loop()
    timing = Timing(rtt_hint or 0.0, opts.timeout_scale)
    start = loop.time()
    try:
        async with limit:
            opening = asyncio.open_connection(host, port, limit=MAX_REPLY)
            first = await asyncio.wait_for(opening, timing.connect)
    except (OSError, TimeoutError):
        return None  # closed or filtered since the port scan
    if rtt_hint is None:
        timing = Timing(loop.time() - start, opts.timeout_scale)
    return await _PortDriver(host, port, ProbePlan(port, db, opts, hints, timing), limit).run(first)


async def _udp_probe(host: str, port: int, probe: Probe, db: ProbeDatabase, wait: float) -> Reply:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.connect((host, port))
        deadline = loop.time() + wait
        # One retransmission halfway: a datagram may be lost where a TCP segment would not be.
        for attempt in range(2):
            await loop.sock_sendall(sock, probe.payload)
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, MAX_REPLY), wait / 2 if attempt == 0 else
                                              max(0.01, deadline - loop.time()))  # fmt: skip
            except TimeoutError:
                continue
            return Reply(probe, data=data, ident=match_reply(data, probe, db))
        return Reply(probe)
    except ConnectionRefusedError:
        return Reply(probe, closed=True)  # ICMP port unreachable: the port is closed
    except OSError:
        return Reply(probe, failed=True)
    finally:
        sock.close()


async def _detect_udp(
    host: str, port: int, db: ProbeDatabase, opts: DetectOptions, limit: asyncio.Semaphore, hints: list[str]
) -> ServiceRecord | None:
    timing = Timing(opts.rtt.get(host, 0.0), opts.timeout_scale)
    probes = plan_probes(db, Protocol.UDP, port, intensity=opts.intensity, hints=hints)
    soft: Identification | None = None
    answered = False
    for start in range(0, len(probes), opts.per_port):
        batch = probes[start : start + opts.per_port]
        async with limit:
            pending = {asyncio.ensure_future(_udp_probe(host, port, p, db, timing.probe(p))) for p in batch}
            try:
                # The first hard match ends the port; the batch's other probes are cancelled.
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        reply = task.result()
                        if reply.closed:
                            return None
                        answered = answered or bool(reply.data)
                        if reply.ident is not None and not reply.ident.soft:
                            return build_record(reply.ident, reply.data, tunnel="", tls_info=None)
                        soft = soft or reply.ident
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
    if soft is not None:
        return build_record(soft, b"", tunnel="", tls_info=None)
    what = "replied to no probe" if answered else "no reply"
    return table_guess(hints, f"{what}: {len(probes)} probes", silent=not answered)


def _files_we_may_open() -> int:
    """Sockets this process may still open: the soft RLIMIT_NOFILE less a margin for the rest."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(8, soft - 64)


def _hints_for(targets: list[ServiceTarget]) -> dict[tuple[int, Protocol], list[str]]:
    """Per port: the port table's name as a scan gives it (first, "" when none; a table guess
    names the port with it), then the registry's best name, which also orders the probes."""
    from portkit.registry import default_registry
    from portkit.registry.nmap import table_namer

    registry, table_name = default_registry(), table_namer()
    hints: dict[tuple[int, Protocol], list[str]] = {}
    for _, port, protocol in targets:
        if (port, protocol) not in hints:
            names = [table_name(port, protocol), registry.name_for(port, protocol)]
            hints[(port, protocol)] = [names[0], *(n for n in names[1:] if n and n != names[0])]
    return hints


async def detect_services_async(
    targets: Iterable[tuple[str, int, Protocol | str]],
    db: ProbeDatabase,
    opts: DetectOptions | None = None,
) -> dict[ServiceTarget, ServiceRecord]:
    """Detect the service on every (address, port, protocol), all ports in parallel.

    Ports that turn out closed (or vanished since the port scan) are left out of the result.
    """
    opts = opts or DetectOptions()
    normal: list[ServiceTarget] = []
    for host, port, proto in targets:
        protocol = proto if isinstance(proto, Protocol) else Protocol.parse(proto)
        normal.append((host, port, protocol))
    normal = list(dict.fromkeys(normal))
    hints = _hints_for(normal)
    concurrency = min(opts.concurrency, _files_we_may_open())
    limit = asyncio.Semaphore(max(1, concurrency))
    # Each port holds up to per_port + 2 connections (NULL, TLS, probes); bound the ports so
    # that one port's probes never wait for another port's slots.
    ports_at_once = asyncio.Semaphore(max(1, concurrency // (opts.per_port + 2)))

    async def one(target: ServiceTarget) -> tuple[ServiceTarget, ServiceRecord | None]:
        host, port, protocol = target
        async with ports_at_once:
            if protocol is Protocol.UDP:
                return target, await _detect_udp(host, port, db, opts, limit, hints[(port, protocol)])
            if protocol is Protocol.TCP:
                return target, await _detect_tcp(host, port, db, opts, limit, hints[(port, protocol)])
            return target, None

    results = await asyncio.gather(*(one(t) for t in normal))
    return {target: match for target, match in results if match is not None}


INTENSITY_NAMES = {"light": 2, "default": 7, "all": 9}  # nmap's --version-light / --version-all


def parse_intensity(text: str | int) -> int:
    """`0`..`9`, `light` (2), `default` (7) or `all` (9) -> the intensity; else a UsageError."""
    from portkit.errors import UsageError, quote
    from portkit.model import parse_decimal

    value = INTENSITY_NAMES.get(str(text).strip().lower())
    if value is None:
        value = parse_decimal(str(text).strip())  # ASCII digits only: int() also takes '٣'
    if value is None or not 0 <= value <= 9:
        raise UsageError(f"invalid intensity {quote(str(text))}: expected 0 (light) to 9 (all), light or all")
    return value


def detect_services(
    targets: Iterable[tuple[str, int, Protocol | str]],
    *,
    intensity: int = 7,
    probes: str | ProbeDatabase = "builtin",
    concurrency: int = 200,
    per_port: int = 8,
    rtt: dict[str, float] | None = None,
    timeout_scale: float = 1.0,
) -> dict[ServiceTarget, ServiceRecord]:
    """What really answers on each (address, port, protocol): a `ServiceRecord` per live port.

    `intensity` 0-9 as nmap's (7 default, 2 light, 9 all); `probes` "builtin", "nmap" (the
    installed nmap-service-probes) or a database; `rtt` the round-trip times the port scan
    measured, per address (measured here by the first connection otherwise).
    """
    from portkit.services._probes import load_database

    intensity = parse_intensity(intensity)
    db = probes if isinstance(probes, ProbeDatabase) else load_database(probes)
    opts = DetectOptions(
        intensity=intensity,
        per_port=max(1, per_port),
        concurrency=max(1, concurrency),
        timeout_scale=timeout_scale,
        rtt=dict(rtt or {}),
    )
    return asyncio.run(detect_services_async(targets, db, opts))
