"""The forwarder process: rules in, listeners up, signals handled, connections drained.

This is the supervisor that runs on the asyncio loop of the main thread. It opens each
rule's listening socket, hands TCP rules to an engine (splice or asyncio) and UDP rules to
a `UdpRelay`, and handles operations:

- SIGHUP re-reads the config file: removed rules stop listening (their connections carry
  on until they end), changed rules apply to new connections, new rules start listening.
  A config that does not parse is logged and the running rules stay as they are.
- SIGUSR1 logs the statistics; the control socket serves them as JSON (`--stats`).
- SIGTERM / SIGINT drain: stop listening, let open connections finish for up to the drain
  timeout, then close what is left. A second signal closes at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portkit.errors import PortkitError, UsageError
from portkit.forward import _congestion, _splice
from portkit.forward._aio import AsyncioEngine
from portkit.forward._control import ControlServer, sd_notify
from portkit.forward._log import EventLog
from portkit.forward._rules import ForwardRule, load_config
from portkit.forward._sockets import (
    bound_endpoint,
    listen_backlog,
    open_listener,
    raise_fd_limit,
)
from portkit.forward._stats import ForwarderStats, RuleStats
from portkit.forward._udp import UdpRelay
from portkit.model import Endpoint, Transport

ENGINES = ("auto", "splice", "asyncio")


def choose_engine(name: str) -> str:
    """The engine that will run: `auto` is splice where the platform has it."""
    if name not in ENGINES:
        raise UsageError(f"invalid engine {name!r}: expected one of {', '.join(ENGINES)}")
    if name == "auto":
        return "splice" if _splice.available() else "asyncio"
    if name == "splice" and not _splice.available():
        raise UsageError("invalid engine 'splice': this platform has no splice(2); use asyncio")
    return name


@dataclass(frozen=True)
class Listening:
    """A rule as it runs: the rule and the endpoint actually bound (port 0 becomes a real port)."""

    rule: ForwardRule
    bound: Endpoint
    engine: str

    def __str__(self) -> str:
        return f"{self.rule.protocol} {self.bound} -> {self.rule.target} ({self.engine})"

    def to_json(self) -> dict[str, Any]:
        return {**self.rule.to_json(), "bound": self.bound.to_json(), "engine": self.engine}


class Forwarder:
    """Serve `rules` until told to stop. `run()` blocks and returns the final statistics.

    `thread_after` is the splice engine's bulk threshold: bytes a connection splices on the
    epoll loop before it gets relay threads (0 = from the first byte, -1 = never). `copy` is
    how its loop moves bytes: "auto" copies small reads and splices bulk, "never" splices
    every byte, "always" copies every byte (and so never gets relay threads).
    `control_dir` is where the control socket goes (`runtime_dir(os.environ)` is where
    `portkit forward --stats` looks; None: no control socket), and `notify_socket` systemd's
    $NOTIFY_SOCKET (None: not run as a Type=notify service).
    """

    def __init__(
        self,
        rules: Sequence[ForwardRule],
        *,
        engine: str = "auto",
        log: EventLog | None = None,
        config_path: str | Path | None = None,
        drain_timeout: float = 10.0,
        on_ready: Callable[[list[Listening]], None] | None = None,
        thread_after: int = _splice.THREAD_AFTER,
        copy: str = "auto",
        control_dir: str | Path | None = None,
        notify_socket: str | None = None,
    ) -> None:
        self.initial_rules = tuple(rules)
        self.engine_name = choose_engine(engine)
        self.log = log or EventLog()
        self.config_path = Path(config_path) if config_path else None
        self.drain_timeout = drain_timeout
        self.on_ready = on_ready
        if thread_after < -1:
            raise UsageError(
                f"invalid thread_after {thread_after}: expected bytes >= 0, or -1 for no relay threads"
            )
        self.thread_after = thread_after
        if copy not in _splice.COPY_MODES:
            raise UsageError(f"invalid copy {copy!r}: expected one of {', '.join(_splice.COPY_MODES)}")
        self.copy = copy
        self.control_dir = Path(control_dir) if control_dir else None
        self.notify_socket = notify_socket
        self.stats = ForwarderStats(pid=os.getpid())
        self.running: dict[tuple[Transport, Endpoint], Listening] = {}
        self.udp: dict[tuple[Transport, Endpoint], UdpRelay] = {}
        self._tcp_listeners: dict[tuple[Transport, Endpoint], socket.socket] = {}  # the engine owns them
        self.stop_signal: int | None = None
        self.control_socket: Path | None = None
        self._engine: _splice.SpliceEngine | AsyncioEngine | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None

    def run(self) -> ForwarderStats:
        asyncio.run(self._main())
        return self.stats

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.stats.to_json(),
            "engine": self.engine_name,
            "control_socket": str(self.control_socket) if self.control_socket else None,
            "config": str(self.config_path) if self.config_path else None,
        }

    # --- lifecycle ------------------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        fd_limit = raise_fd_limit()
        engine: _splice.SpliceEngine | AsyncioEngine
        if self.engine_name == "splice":
            engine = _splice.SpliceEngine(self.log, thread_after=self.thread_after, copy=self.copy)
        else:
            engine = AsyncioEngine(self.log)
        self._engine = engine
        engine.start()
        try:
            for rule in self.initial_rules:
                self._open(rule)
        except PortkitError:
            self._shutdown_now()
            raise
        for signum, handler in (
            (signal.SIGHUP, self._reload),
            (signal.SIGUSR1, self._log_stats),
            (signal.SIGTERM, lambda: self._request_stop(signal.SIGTERM)),
            (signal.SIGINT, lambda: self._request_stop(signal.SIGINT)),
        ):
            loop.add_signal_handler(signum, handler)
        control = ControlServer(self.snapshot, self.control_dir) if self.control_dir else None
        self.control_socket = await control.start() if control else None
        listening = list(self.running.values())
        self.log(
            "start",
            pid=os.getpid(),
            engine=self.engine_name,
            rules=len(listening),
            backlog=listen_backlog(),
            fd_limit=fd_limit,
            control=str(self.control_socket),
        )
        for item in listening:
            if not item.rule.listen.address.is_loopback:
                self.log(
                    "warning",
                    rule=item.rule.label,
                    message=f"listening on {item.bound}: reachable from other hosts",
                )
        if self.on_ready is not None:
            self.on_ready(listening)
        status = f"READY=1\nMAINPID={os.getpid()}\nSTATUS=forwarding {len(listening)} rule(s)"
        sd_notify(self.notify_socket, status)
        try:
            await self._stop.wait()
            await self._drain()
        finally:
            if control is not None:
                control.close()
            for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _open(self, rule: ForwardRule) -> None:
        if rule.protocol is Transport.TCP:
            _congestion.check(rule.congestion)
        sock = open_listener(rule.listen, rule.protocol)
        if rule.protocol is Transport.TCP:  # accepted sockets inherit the listener's algorithm
            _congestion.preset(sock, rule.congestion, str(rule.listen.address))
            self._tcp_listeners[rule.key] = sock
        bound = bound_endpoint(sock)
        engine = self.engine_name if rule.protocol is Transport.TCP else "udp"
        stats = self.stats.rules.get(_key_text(rule))
        if stats is None:
            stats = RuleStats(rule.label, rule.protocol.value, str(bound), str(rule.target), engine)
            self.stats.rules[_key_text(rule)] = stats
        stats.retired = False
        stats.target = str(rule.target)
        if rule.protocol is Transport.TCP:
            assert self._engine is not None
            self._engine.add_rule(sock, rule, stats)
        else:
            self.udp[rule.key] = UdpRelay(sock, rule, stats, self.log)
        self.running[rule.key] = Listening(rule, bound, engine)

    def _update(self, rule: ForwardRule) -> None:
        if rule.protocol is Transport.TCP:
            _congestion.check(rule.congestion)  # before anything changes: a failing rule stays as it was
        old = self.running[rule.key]
        self.running[rule.key] = Listening(rule, old.bound, old.engine)
        self.stats.rules[_key_text(rule)].target = str(rule.target)
        if rule.protocol is Transport.TCP:
            assert self._engine is not None
            if rule.congestion != old.rule.congestion:
                listener = self._tcp_listeners[rule.key]
                _congestion.preset(listener, rule.congestion, str(rule.listen.address), reset=True)
            self._engine.update_rule(rule)
        else:
            self.udp[rule.key].update(rule)

    def _retire(self, rule: ForwardRule) -> None:
        self.running.pop(rule.key)
        self._tcp_listeners.pop(rule.key, None)
        self.stats.rules[_key_text(rule)].retired = True
        if rule.protocol is Transport.TCP:
            assert self._engine is not None
            self._engine.remove_rule(rule)  # open connections go on
        else:
            self.udp.pop(rule.key).close()  # replies need the listening socket, so mappings end

    def _reload(self) -> None:
        if self._stop is not None and self._stop.is_set():
            return
        if self.config_path is None:
            self.log("reload", result="skipped", reason="rules came from the command line, not --config")
            return
        sd_notify(self.notify_socket, "RELOADING=1")
        try:
            try:
                new_rules = load_config(self.config_path)
            except UsageError as exc:
                self.log("error", stage="reload", error=str(exc), result="kept the running rules")
                return
            new = {r.key: r for r in new_rules}
            old = {key: item.rule for key, item in self.running.items()}
            removed = [old[k] for k in old if k not in new]
            changed = [new[k] for k in new if k in old and new[k] != old[k]]
            added = [new[k] for k in new if k not in old]
            for rule in removed:
                self._retire(rule)
            failed_changes = failed_additions = 0
            for rule in changed:
                try:
                    self._update(rule)
                except PortkitError as exc:
                    failed_changes += 1
                    self.log("error", stage="reload", rule=rule.label, error=str(exc), result="kept the rule")
            for rule in added:
                try:
                    self._open(rule)
                except PortkitError as exc:
                    failed_additions += 1
                    self.log("error", stage="reload", rule=rule.label, error=str(exc))
            self.stats.reloads += 1
            self.log(
                "reload",
                added=len(added) - failed_additions,
                removed=len(removed),
                changed=len(changed) - failed_changes,
                failed=failed_changes + failed_additions,
            )
        finally:
            sd_notify(self.notify_socket, "READY=1")

    def _log_stats(self) -> None:
        for rule in self.stats.rules.values():
            self.log("stats", **rule.to_json())

    def _request_stop(self, signum: int) -> None:
        assert self._stop is not None and self._force is not None
        if self._stop.is_set():
            self.log("stop", reason=f"second {signal.Signals(signum).name}: closing now")
            self._force.set()
            return
        self.stop_signal = signum
        self._stop.set()

    def stop(self) -> None:
        """Drain and stop (for callers running the forwarder in a thread of their own)."""
        self._request_stop(signal.SIGTERM)

    async def _drain(self) -> None:
        assert self._engine is not None and self._force is not None
        engine = self._engine
        self.stats.draining = True
        sd_notify(self.notify_socket, "STOPPING=1")
        self.log("drain", active=engine.active, timeout=self.drain_timeout)
        for relay in self.udp.values():
            relay.close()
        self.udp.clear()
        engine.drain()
        drained = (
            asyncio.ensure_future(asyncio.to_thread(engine.drained.wait, self.drain_timeout))
            if isinstance(engine, _splice.SpliceEngine)
            else asyncio.ensure_future(engine.drained.wait())
        )
        forced = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({drained, forced}, timeout=self.drain_timeout, return_when=asyncio.FIRST_COMPLETED)
        left = engine.active
        forced.cancel()
        if not drained.done():
            drained.cancel()
        self._shutdown_now()
        self.log("stop", closed=left, reason="drain timeout" if left else "drained")

    def _shutdown_now(self) -> None:
        for relay in self.udp.values():
            relay.close()
        self.udp.clear()
        if self._engine is not None:
            self._engine.stop()


def _key_text(rule: ForwardRule) -> str:
    return f"{rule.protocol}/{rule.listen}"


def serve(rules: Sequence[ForwardRule], **options: Any) -> ForwarderStats:
    """Run a forwarder for `rules` in this thread until SIGTERM/SIGINT (see Forwarder)."""
    return Forwarder(rules, **options).run()
