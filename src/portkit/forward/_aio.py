"""The asyncio engine: TCP forwarding with asyncio Protocols (callbacks, no streams).

The portable fallback where splice(2) is missing, and the engine to compare against.
Each connection is two Protocols sharing one `_Pair`; bytes go from `data_received` of one
side straight to `write` of the other. Backpressure: when a side's write buffer passes the
high-water mark asyncio calls `pause_writing`, and we pause reading from the other side
until `resume_writing`, so memory per connection stays near the high-water mark.

A slow reader is activity for the idle timeout although nothing is read from either side while
asyncio drains a paused write buffer into it: the kernel's progress counters say so (`_idle`).

The accept loop is our own (loop.add_reader on the listening socket) so that a rule at its
connection limit can stop accepting and leave new clients queued in the kernel's backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from portkit.forward import _congestion
from portkit.forward._idle import IdleWatch, tcp_progress
from portkit.forward._log import EventLog
from portkit.forward._proxyproto import proxy_header
from portkit.forward._rules import ForwardRule, Overflow, ProxyProtocol
from portkit.forward._sockets import arm_reset, error_name, peer, target_family
from portkit.forward._state import ConnectionState, Event, ForwardAction, State
from portkit.forward._stats import RuleStats

HIGH_WATER = 1 << 18  # 256 KiB buffered per direction at most (plus one read)
ACCEPT_BATCH = 256
SWEEP_INTERVAL = 0.25


class _Side(asyncio.Protocol):
    """One socket of a forwarded connection: the client side or the target side."""

    def __init__(self, pair: _Pair, is_client: bool) -> None:
        self.pair = pair
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        # Neither side reads before the state machine says OPEN: an EOF from a target that
        # answers and closes at once must not arrive while the connection is CONNECTING.
        transport.pause_reading()
        # Python 3.11's selector transport registers its reader after connection_made()
        # returns, whatever the protocol asked there, so the pause is made again once that has
        # happened; the loop runs this before any read of the socket.
        asyncio.get_running_loop().call_soon(self._keep_paused)
        if self.is_client:
            self.pair.client_ready()

    def _keep_paused(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.pair.state.reading_from("client" if self.is_client else "target"):
            return  # the state machine has started the relay meanwhile
        transport.resume_reading()  # clears the pause flag so that the next call acts
        transport.pause_reading()  # and removes the reader, wherever it came from

    def data_received(self, data: bytes) -> None:
        self.pair.relay(self.is_client, data)

    def eof_received(self) -> bool:
        self.pair.apply(Event.CLIENT_EOF if self.is_client else Event.TARGET_EOF)
        return True  # keep our writing half open: the other direction may still flow

    def pause_writing(self) -> None:
        self.pair.pause_from(not self.is_client)

    def resume_writing(self) -> None:
        self.pair.resume_from(not self.is_client)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pair.state.finished:
            return
        if exc is None:
            self.pair.apply(Event.CLIENT_EOF if self.is_client else Event.TARGET_EOF)
        else:
            self.pair.reset(Event.CLIENT_RESET if self.is_client else Event.TARGET_RESET)


class _Pair:
    def __init__(self, engine: AsyncioEngine, listener: _Listener, address: Any) -> None:
        self.engine = engine
        self.listener = listener
        self.rule = listener.rule
        self.stats = listener.stats
        self.client_address = address
        self.state = ConnectionState()
        self.client = _Side(self, True)
        self.target = _Side(self, False)
        self.started = self.last = time.monotonic()
        self.idle = IdleWatch()
        self.bytes_up = 0
        self.bytes_down = 0
        self.ending = "closed"
        self.task: asyncio.Task[None] | None = None

    def client_ready(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        target = self.rule.target
        sock: socket.socket | None = None

        async def connect() -> None:
            nonlocal sock
            sock = socket.socket(target_family(target), socket.SOCK_STREAM)
            sock.setblocking(False)
            _congestion.preset(sock, self.rule.congestion, str(target.address))  # before the handshake
            await loop.sock_connect(sock, (str(target.address), target.port))
            await loop.create_connection(lambda: self.target, sock=sock)

        try:
            await asyncio.wait_for(connect(), self.rule.limits.connect_timeout)
        except (OSError, TimeoutError) as exc:
            if sock is not None:
                sock.close()  # a no-op once a transport has it (and has closed it)
            self.fail(exc)
            return
        except asyncio.CancelledError:
            if sock is not None:
                sock.close()
            self.apply(Event.CLOSE)
            raise
        self.apply(Event.CONNECTED)

    def relay(self, from_client: bool, data: bytes) -> None:
        if self.state.finished:
            return
        self.last = time.monotonic()
        if from_client:
            self.bytes_up += len(data)
            self.stats.bytes_up += len(data)
            self.target.transport.write(data)  # type: ignore[union-attr]
        else:
            self.bytes_down += len(data)
            self.stats.bytes_down += len(data)
            self.client.transport.write(data)  # type: ignore[union-attr]

    def pause_from(self, client: bool) -> None:
        side = self.client if client else self.target
        if side.transport is not None and not side.transport.is_closing():
            side.transport.pause_reading()

    def resume_from(self, client: bool) -> None:
        side = self.client if client else self.target
        if (
            side.transport is not None
            and not side.transport.is_closing()
            and self.state.reading_from("client" if client else "target")
        ):
            side.transport.resume_reading()

    def fail(self, exc: BaseException) -> None:
        self.stats.connect_errors += 1
        self.ending = "connect-failed"
        self.engine.log.connect_failed(self.rule, self.client_address, exc)
        self.apply(Event.CONNECT_FAILED)

    def reset(self, event: Event) -> None:
        if self.state.finished:
            return
        self.stats.resets += 1
        self.ending = "reset-by-client" if event is Event.CLIENT_RESET else "reset-by-target"
        self.apply(event)

    def apply(self, event: Event) -> None:
        client, target = self.client.transport, self.target.transport
        for action in self.state.handle(event):
            if action is ForwardAction.START_RELAY:
                self._start()
            elif action is ForwardAction.SHUT_TARGET_WR and target is not None and target.can_write_eof():
                target.write_eof()  # sent once the buffered bytes are out
            elif action is ForwardAction.SHUT_CLIENT_WR and client is not None and client.can_write_eof():
                client.write_eof()
            elif action is ForwardAction.RESET_CLIENT and client is not None:
                arm_reset(client.get_extra_info("socket"))
                client.abort()
            elif action is ForwardAction.RESET_TARGET and target is not None:
                arm_reset(target.get_extra_info("socket"))
                target.abort()
            elif action is ForwardAction.CLOSE_BOTH:
                self._close()

    def _start(self) -> None:
        client, target = self.client.transport, self.target.transport
        assert client is not None and target is not None
        rule = self.rule
        for transport, address in ((client, rule.listen.address), (target, rule.target.address)):
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _congestion.settle(sock, rule.congestion, str(address))
        self.last = time.monotonic()
        if self.rule.proxy_protocol is not ProxyProtocol.NONE:
            target.write(
                proxy_header(self.rule.proxy_protocol, self.client_address, client.get_extra_info("sockname"))
            )
        self.engine.log(
            "connect",
            rule=self.rule.label,
            client=peer(self.client_address),
            target=str(self.rule.target),
            engine="asyncio",
        )
        client.resume_reading()
        target.resume_reading()

    def _close(self) -> None:
        for side in (self.client, self.target):
            if side.transport is not None and not side.transport.is_closing():
                side.transport.close()  # flushes what is buffered, then FIN
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        self.stats.active -= 1
        self.engine.connections.discard(self)
        if self.ending != "connect-failed":
            self.engine.log(
                "close",
                rule=self.rule.label,
                client=peer(self.client_address),
                how=self.ending,
                bytes_up=self.bytes_up,
                bytes_down=self.bytes_down,
                seconds=round(time.monotonic() - self.started, 3),
            )
        self.listener.slot_freed()
        self.engine.maybe_drained()

    def tick(self, now: float) -> None:
        if self.state.state is State.CONNECTING:
            return  # wait_for enforces the connect timeout
        idle = self.rule.limits.idle_timeout
        if idle <= 0 or self.state.finished:
            return
        last = self.idle.check(now, self.last, idle, SWEEP_INTERVAL, self._kernel_progress)
        if last is not None:
            self.last = last
            return
        self.stats.idle_closed += 1
        self.ending = "idle-timeout"
        self.apply(Event.IDLE)

    def _kernel_progress(self) -> int | None:
        socks = []
        for side in (self.client, self.target):
            if side.transport is None or side.transport.is_closing():
                return None
            socks.append(side.transport.get_extra_info("socket"))
        return tcp_progress(socks)


class _Listener:
    def __init__(
        self, engine: AsyncioEngine, sock: socket.socket, rule: ForwardRule, stats: RuleStats
    ) -> None:
        self.engine = engine
        self.sock = sock
        self.rule = rule
        self.stats = stats
        self.paused = False
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self.accept)

    def accept(self) -> None:
        limits = self.rule.limits
        for _ in range(ACCEPT_BATCH):
            if self.stats.active >= limits.max_connections and limits.overflow is Overflow.QUEUE:
                self.paused = True
                self.loop.remove_reader(self.sock.fileno())
                return
            try:
                client, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.engine.log("error", stage="accept", rule=self.rule.label, error=error_name(exc))
                return
            self.admit(client, address)

    def admit(self, client: socket.socket, address: Any) -> None:
        rule = self.rule
        reason = ""
        if not rule.allows(address[0]):
            self.stats.refused_allow += 1
            reason = "allow-list"
        elif self.stats.active >= rule.limits.max_connections:
            self.stats.refused_limit += 1
            reason = "max-connections"
        if reason:
            self.engine.log("refuse", rule=rule.label, client=peer(address), reason=reason)
            arm_reset(client)
            client.close()
            return
        client.setblocking(False)
        self.stats.active += 1
        self.stats.total += 1
        pair = _Pair(self.engine, self, address)
        self.engine.connections.add(pair)
        self.loop.create_task(self._attach(client, pair))

    async def _attach(self, client: socket.socket, pair: _Pair) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: pair.client, client)
        except OSError as exc:
            pair.fail(exc)

    def slot_freed(self) -> None:
        if self.paused and not self.closed and self.stats.active < self.rule.limits.max_connections:
            self.paused = False
            self.loop.add_reader(self.sock.fileno(), self.accept)
            self.accept()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.paused:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class AsyncioEngine:
    """TCP rules served by asyncio Protocols on the running event loop."""

    name = "asyncio"

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.listeners: dict[tuple[Any, ...], _Listener] = {}
        self.connections: set[_Pair] = set()
        self.draining = False
        self.drained = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def add_rule(self, sock: socket.socket, rule: ForwardRule, stats: RuleStats) -> None:
        self.listeners[rule.key] = _Listener(self, sock, rule, stats)

    def update_rule(self, rule: ForwardRule) -> None:
        listener = self.listeners.get(rule.key)
        if listener is not None:
            listener.rule = rule
            listener.slot_freed()

    def remove_rule(self, rule: ForwardRule) -> None:
        listener = self.listeners.pop(rule.key, None)
        if listener is not None:
            listener.close()

    def drain(self) -> None:
        self.draining = True
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        self.maybe_drained()

    def maybe_drained(self) -> None:
        if self.draining and not self.connections:
            self.drained.set()

    def stop(self) -> None:
        self.drain()
        for pair in list(self.connections):
            pair.ending = "drain-timeout"
            pair.apply(Event.CLOSE)
        if self._sweeper is not None:
            self._sweeper.cancel()

    @property
    def active(self) -> int:
        return len(self.connections)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for pair in list(self.connections):
                pair.tick(now)
