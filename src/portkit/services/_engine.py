"""The I/O side of service detection: connections, probes in parallel, timeouts from the RTT.

Theory of operation, for one TCP port:

1. Connect and listen (the NULL probe). A server that speaks first (SSH, FTP, SMTP, MySQL...)
   does so within a few round trips; its banner is matched at once.
2. If nothing came within a short grace period, open more connections, a few at a time, each
   carrying one probe: the TLS handshake and the probes most likely for this port first. The
   NULL connection keeps listening meanwhile, so a slow banner still counts.
3. The first hard match ends the port (a plain-text match waits for the TLS probe's verdict:
   an HTTPS server answers plain HTTP too). A soft match narrows the remaining probes to those
   that can name that service. A successful handshake starts again from 1 inside TLS.
4. Accepted then closed without a byte, everywhere: `tcpwrapped`. Nothing at all: the port
   table's guess, marked as such.

nmap waits seconds for every probe on a silent port, one probe after another; here the waits
follow the measured round-trip time and run side by side, so a silent port costs well under
two seconds on a LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
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
from portkit.services._tls import ALPN_OFFER, client_context, describe_session

ServiceTarget = tuple[str, int, Protocol]

HTTP_NAMES = ("http", "https", "http-proxy", "http-alt")
# The request whose answer gives an HTTP service's facts (status, Server, title, redirect).
_ROOT_PAGE = Probe("get-root", Protocol.TCP, b"GET / HTTP/1.0\r\n\r\n")

_READ_SIZE = 16384
_MAX_REPLY = 65536


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


@dataclass
class _Reply:
    """What one probe connection got back."""

    probe: Probe
    data: bytes = b""
    closed: bool = False  # the server closed (or reset) the connection
    ident: Identification | None = None
    tls: TlsInfo | None = None
    failed: bool = False  # could not connect at all


class _Connector:
    """Opens connections under the global cap, optionally inside TLS."""

    def __init__(self, host: str, port: int, limit: asyncio.Semaphore, timing: Timing) -> None:
        self.host, self.port, self.limit, self.timing = host, port, limit, timing

    @contextlib.asynccontextmanager
    async def open(
        self, tls: ssl.SSLContext | None = None, handshake: float | None = None
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        async with self.limit:
            timeout = self.timing.connect + (handshake or 0)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=tls, ssl_handshake_timeout=handshake if tls else None,
                    limit=_MAX_REPLY,
                ),
                timeout,
            )  # fmt: skip
            try:
                yield reader, writer
            finally:
                writer.transport.abort()


async def _read_reply(
    reader: asyncio.StreamReader, probe: Probe, db: ProbeDatabase, wait: float, linger: float
) -> _Reply:
    """Read until a hard match with a version, the server closes, or the wait is over."""
    reply = _Reply(probe)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    chunks: list[bytes] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(_READ_SIZE), remaining)
        except TimeoutError:
            break
        except (ConnectionError, OSError, ssl.SSLError):
            reply.closed = True
            break
        if not chunk:
            reply.closed = True
            break
        chunks.append(chunk)
        data = b"".join(chunks)
        if len(data) >= _MAX_REPLY:
            break
        if probe.name == NULL_PROBE:
            ident = match_reply(data, probe, db)
            if ident is not None and not ident.soft and ident.version:
                break  # a complete banner; other replies (HTTP's page title) may still be arriving
        # Some of the reply is here; the rest follows within a round trip or two.
        deadline = min(deadline, loop.time() + linger)
    reply.data = b"".join(chunks)
    reply.ident = match_reply(reply.data, probe, db)
    return reply


async def _run_probe(conn: _Connector, probe: Probe, db: ProbeDatabase, tls: ssl.SSLContext | None) -> _Reply:
    timing = conn.timing
    try:
        async with conn.open(tls, timing.probe(probe) if tls else None) as (reader, writer):
            if probe.payload:
                writer.write(probe.payload)
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
            return await _read_reply(reader, probe, db, timing.probe(probe), timing.linger)
    except (ConnectionRefusedError, TimeoutError):
        return _Reply(probe, failed=True)
    except (ConnectionError, ssl.SSLError, OSError):
        return _Reply(probe, closed=True)


async def _run_tls(conn: _Connector, probe: Probe) -> _Reply:
    """The TLS probe: a handshake offering ALPN; the session and certificate are the reply."""
    try:
        wait = conn.timing.probe(probe)
        async with conn.open(client_context(alpn=ALPN_OFFER), wait) as (_reader, writer):
            session = writer.get_extra_info("ssl_object")
            return _Reply(probe, tls=describe_session(session) if session else None)
    except (ConnectionRefusedError, TimeoutError):
        return _Reply(probe, failed=True)
    except (ConnectionError, ssl.SSLError, OSError):
        return _Reply(probe, closed=True)


def _build(ident: Identification, reply: bytes, *, tunnel: str, tls_info: TlsInfo | None) -> ServiceRecord:
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


class _PortDetection:
    """One TCP port (or the inside of its TLS tunnel), probed to a verdict."""

    def __init__(
        self,
        conn: _Connector,
        db: ProbeDatabase,
        opts: DetectOptions,
        hints: list[str],
        tls: ssl.SSLContext | None = None,
        tls_info: TlsInfo | None = None,
    ) -> None:
        self.conn, self.db, self.opts, self.hints = conn, db, opts, hints
        self.tls, self.tls_info = tls, tls_info
        self.tunnel = "ssl" if tls else ""
        self.sent: list[str] = []
        self.root_page: HttpInfo | None = None  # what a `GET /` probe, if one ran, was answered
        self.any_data = False
        self.all_closed = True  # every connection closed on us without a byte

    def _finish(self, ident: Identification, reply: bytes) -> ServiceRecord:
        return _build(ident, reply, tunnel=self.tunnel, tls_info=self.tls_info)

    async def run(self, first: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> ServiceRecord:
        timing = self.conn.timing
        null = self.db.get(Protocol.TCP, NULL_PROBE) or Probe(NULL_PROBE, Protocol.TCP, b"")
        tasks: dict[asyncio.Task[_Reply], Probe] = {}
        null_task = asyncio.ensure_future(self._listen(null, first))
        tasks[null_task] = null
        try:
            verdict = await self._drive(null_task, tasks, timing)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(verdict, TlsInfo):
            # Inside the tunnel only once the plain-text probes are gone: servers cap
            # unauthenticated connections (sshd's MaxStartups drops some beyond 10).
            inner = _PortDetection(self.conn, self.db, self.opts, self.hints, client_context(), verdict)
            return await inner.run(None)
        if verdict.name in HTTP_NAMES and verdict.method is Method.PROBED:
            return await self._with_root_page(verdict)
        return verdict

    async def _with_root_page(self, found: ServiceRecord) -> ServiceRecord:
        """An HTTP service's facts are what it answers to `GET /` (docs/json.md), whichever
        probe's reply named it: nmap's probes name HTTP from error pages (OPTIONS, a bare line)."""
        page = self.root_page
        if page is None:
            reply = await _run_probe(self.conn, _ROOT_PAGE, self.db, self.tls)
            page = parse_http_response(reply.data)
        if page is None:
            return dataclasses.replace(found, http=None)
        return dataclasses.replace(found, http=page, product=found.product or page.server)

    async def _listen(
        self, null: Probe, first: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    ) -> _Reply:
        timing = self.conn.timing
        if first is None:
            return await _run_probe(self.conn, null, self.db, self.tls)
        reader, writer = first
        try:
            return await _read_reply(reader, null, self.db, timing.banner, timing.linger)
        finally:
            writer.transport.abort()

    def _queue(self, within: str, banner: bool) -> list[Probe]:
        port = self.conn.port
        if port in self.opts.listen_only:
            return []
        queue = plan_probes(
            self.db, Protocol.TCP, port, intensity=self.opts.intensity, hints=self.hints,
            within=within, tls=self.tls is not None, exclude=self.sent,
        )  # fmt: skip
        tls_probe = self.db.get(Protocol.TCP, TLS_PROBE)
        # A server that spoke first is not a TLS server; inside TLS there is no second TLS.
        if self.tls is None and not banner and tls_probe is not None and TLS_PROBE not in self.sent:
            queue.insert(0, tls_probe)
        return queue

    async def _drive(
        self,
        null_task: asyncio.Task[_Reply],
        tasks: dict[asyncio.Task[_Reply], Probe],
        timing: Timing,
    ) -> ServiceRecord | TlsInfo:
        """The port's verdict, or the TLS session to look inside of."""
        soft: tuple[Identification, bytes] | None = None
        held: ServiceRecord | None = None  # a hard match waiting for the TLS verdict or a version
        held_for_tls = False
        tls_task: asyncio.Task[_Reply] | None = None
        banner = False
        started = False
        queue: list[Probe] = []

        done, _ = await asyncio.wait({null_task}, timeout=timing.grace)
        running: set[asyncio.Task[_Reply]] = {null_task}
        tls_known = True  # whether the TLS probe, if sent, has had its verdict
        while True:
            # The TLS verdict first: it decides whether plain-text matches in this batch count.
            for task in sorted(done, key=lambda t: t is not tls_task):
                running.discard(task)
                if task is tls_task:
                    tls_known = True
                reply = task.result()
                if reply.data:
                    self.any_data = True
                    if reply.probe.payload.startswith(_ROOT_PAGE.payload[:6]) and self.root_page is None:
                        self.root_page = parse_http_response(reply.data)
                if not (reply.closed and not reply.data) and not reply.failed:
                    self.all_closed = False
                if reply.tls is not None:
                    return reply.tls
                ident = reply.ident
                if task is null_task and reply.data:
                    banner = True
                if ident is not None and not ident.soft:
                    found = self._finish(ident, reply.data)
                    if task is null_task:
                        return found  # a banner: the server spoke first, so it is no TLS server
                    held = _richer(held, found)
                    # nginx, Apache... answer plain HTTP on a TLS port with an error page; only
                    # such a reply (or a rule that says so, nmap's `ssl/...` names) can be the
                    # plain face of a TLS service.
                    if (found.http is not None and found.http.status >= 400) or found.tunnel == "ssl":
                        held_for_tls = True
                elif ident is not None and soft is None:
                    soft = (ident, reply.data)
                    queue = self._queue(ident.service, banner)
                    started = True
            if held is not None and (tls_known or not held_for_tls):
                # A match without a version waits for the probes already in flight (no new
                # ones): one of them may name the version (PostgreSQL's protocol range...).
                in_flight = running - {null_task}
                if held.version or not in_flight:
                    return held
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not started:
                started = True
                queue = self._queue("", banner)
            while queue and len(running) - (null_task in running) < self.opts.per_port:
                probe = queue.pop(0)
                self.sent.append(probe.name)
                if probe.name == TLS_PROBE:
                    tls_task = asyncio.ensure_future(_run_tls(self.conn, probe))
                    tls_known = False
                    task = tls_task
                else:
                    task = asyncio.ensure_future(_run_probe(self.conn, probe, self.db, self.tls))
                tasks[task] = probe
                running.add(task)
            if not running:
                break
            # A port that closes every connection at once is tcpwrapped; no need to try them all.
            if null_task.done() and self.all_closed and len(self.sent) >= 2 * self.opts.per_port:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        if soft is not None:
            return self._finish(*soft)
        if self.all_closed and not self.any_data:
            return ServiceRecord(
                name="tcpwrapped", method=Method.PROBED, confidence=CONFIDENCE_WRAPPED,
                tunnel=self.tunnel, tls=self.tls_info, probe=NULL_PROBE,
            )  # fmt: skip
        what = "replied to no probe" if self.any_data else "silent"
        note = f"{what}: {len(self.sent) + 1} probes"
        guess = _table_guess(self.hints, note, silent=not self.any_data)
        if self.tls is not None:
            # TLS, and nothing known inside: the table's name for the port in a TLS tunnel, as
            # nmap reports it (`ssl/https-alt?`).
            return dataclasses.replace(guess, tunnel="ssl", tls=self.tls_info, probe=TLS_PROBE)
        return guess


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


def _table_guess(hints: list[str], note: str, *, silent: bool) -> ServiceRecord:
    name = hints[0] if hints and hints[0] else "unknown"
    return ServiceRecord(
        name=name,
        method=Method.TABLE,
        confidence=CONFIDENCE_TABLE if hints and hints[0] else 0,
        extrainfo="silent" if silent else "unrecognised reply",
        notes=(note,),
    )


async def _detect_tcp(
    host: str, port: int, db: ProbeDatabase, opts: DetectOptions, limit: asyncio.Semaphore, hints: list[str]
) -> ServiceRecord | None:
    rtt_hint = opts.rtt.get(host)
    loop = asyncio.get_running_loop()
    conn = _Connector(host, port, limit, Timing(rtt_hint or 0.0, opts.timeout_scale))
    start = loop.time()
    try:
        async with limit:
            first = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_MAX_REPLY), conn.timing.connect
            )
    except (OSError, TimeoutError):
        return None  # closed or filtered since the port scan
    if rtt_hint is None:
        conn.timing = Timing(loop.time() - start, opts.timeout_scale)
    return await _PortDetection(conn, db, opts, hints).run(first)


async def _udp_probe(host: str, port: int, probe: Probe, db: ProbeDatabase, wait: float) -> _Reply:
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
                data = await asyncio.wait_for(loop.sock_recv(sock, _MAX_REPLY), wait / 2 if attempt == 0 else
                                              max(0.01, deadline - loop.time()))  # fmt: skip
            except TimeoutError:
                continue
            return _Reply(probe, data=data, ident=match_reply(data, probe, db))
        return _Reply(probe)
    except ConnectionRefusedError:
        return _Reply(probe, closed=True)  # ICMP port unreachable: the port is closed
    except OSError:
        return _Reply(probe, failed=True)
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
                            return _build(reply.ident, reply.data, tunnel="", tls_info=None)
                        soft = soft or reply.ident
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
    if soft is not None:
        return _build(soft, b"", tunnel="", tls_info=None)
    what = "replied to no probe" if answered else "no reply"
    return _table_guess(hints, f"{what}: {len(probes)} probes", silent=not answered)


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
    from portkit.errors import UsageError

    value = INTENSITY_NAMES.get(str(text).strip().lower())
    if value is None:
        try:
            value = int(str(text).strip())
        except ValueError:
            value = -1
    if not 0 <= value <= 9:
        raise UsageError(f"invalid intensity {text!r}: expected 0 (light) to 9 (all), light or all")
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
