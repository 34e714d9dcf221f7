"""The forwarder process: rules in, listeners up, signals handled, connections drained.

This is the supervisor that runs on the asyncio loop of the main thread. It opens each
rule's listening socket, hands TCP rules to an engine (splice or asyncio; the splice engine
runs `loops` engines, each with its own SO_REUSEPORT listening socket per rule and all
sharing the rule's statistics) and UDP rules to a `UdpRelay`, and handles operations:

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
    claim_port,
    listen_backlog,
    open_listener,
    raise_fd_limit,
)
from portkit.forward._stats import ForwarderStats, RuleStats
from portkit.forward._udp import UdpRelay
from portkit.model import Endpoint, Transport

ENGINES = ("auto", "splice", "asyncio")
MAX_LOOPS = 2  # the default number of splice loops is the CPU count up to this


def default_loops() -> int:
    """Splice loops by default: one per CPU this process may run on, at most MAX_LOOPS.

    A request through the forwarder costs about four times more in the kernel (the loopback
    sends and receives) than in Python, and the GIL is released inside those system calls, so
    a second loop thread nearly doubles what one forwarder can carry (BENCHMARKS.md).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_LOOPS))


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
    every byte, "always" copies every byte (and so never gets relay threads). `turn` is where
    its loop turns run: "auto" in C where the `_quickio` module is built, "python" in Python.
    `loops` is how many epoll loops (threads) the splice engine runs, each with its own
    listening socket per TCP rule (SO_REUSEPORT: the kernel spreads new connections over
    them); None = `default_loops()`. The asyncio engine always runs one loop.
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
        loops: int | None = None,
        turn: str = "auto",
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
        if turn not in _splice.TURN_MODES:
            raise UsageError(f"invalid turn {turn!r}: expected one of {', '.join(_splice.TURN_MODES)}")
        self.turn = turn
        if loops is not None and (isinstance(loops, bool) or not isinstance(loops, int) or loops < 1):
            raise UsageError(f"invalid loops {loops!r}: expected a number of loops >= 1")
        self.loops = 1 if self.engine_name == "asyncio" else (default_loops() if loops is None else loops)
        self.control_dir = Path(control_dir) if control_dir else None
        self.notify_socket = notify_socket
        self.stats = ForwarderStats(pid=os.getpid())
        self.running: dict[tuple[Transport, Endpoint], Listening] = {}
        self.udp: dict[tuple[Transport, Endpoint], UdpRelay] = {}
        # One listening socket per loop and TCP rule; the engines own them.
        self._tcp_listeners: dict[tuple[Transport, Endpoint], list[socket.socket]] = {}
        self.stop_signal: int | None = None
        self.control_socket: Path | None = None
        self._engines: list[_splice.SpliceEngine | AsyncioEngine] = []
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None

    def run(self) -> ForwarderStats:
        asyncio.run(self._main())
        return self.stats

    def snapshot(self) -> dict[str, Any]:
        self._count_now()
        return {
            **self.stats.to_json(),
            "engine": self.engine_name,
            "loops": self.loops,
            "control_socket": str(self.control_socket) if self.control_socket else None,
            "config": str(self.config_path) if self.config_path else None,
        }

    # --- lifecycle ------------------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        fd_limit = raise_fd_limit()
        if self.engine_name == "splice":
            engines = [
                _splice.SpliceEngine(
                    self.log,
                    thread_after=self.thread_after,
                    copy=self.copy,
                    max_threaded=max(1, _splice.MAX_THREADED // self.loops),
                    turn=self.turn,
                )
                for _ in range(self.loops)
            ]
            for engine in engines:
                engine.siblings = [other for other in engines if other is not engine]
                engine.start()
            self._engines = list(engines)
        else:
            self._engines = [AsyncioEngine(self.log)]
            self._engines[0].start()
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
            loops=self.loops,
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
        tcp = rule.protocol is Transport.TCP
        group = tcp and self.loops > 1
        # A group of SO_REUSEPORT listeners binds a port first seen free, so that it never
        # joins another forwarder's group.
        listen = claim_port(rule.listen, rule.protocol) if group else rule.listen
        sock = open_listener(listen, rule.protocol, reuse_port=group)
        bound = bound_endpoint(sock)
        if tcp:
            sockets = [sock]
            try:  # the other loops' sockets join the first one's port (a real one when it was 0)
                sockets += [
                    open_listener(bound, rule.protocol, reuse_port=True) for _ in range(self.loops - 1)
                ]
            except PortkitError:
                for opened in sockets:
                    opened.close()
                raise
            for opened in sockets:  # accepted sockets inherit the listener's algorithm
                _congestion.preset(opened, rule.congestion, str(rule.listen.address))
            self._tcp_listeners[rule.key] = sockets
        engine = self.engine_name if rule.protocol is Transport.TCP else "udp"
        stats = self.stats.rules.get(_key_text(rule))
        if stats is None:
            stats = RuleStats(rule.label, rule.protocol.value, str(bound), str(rule.target), engine)
            self.stats.rules[_key_text(rule)] = stats
        stats.retired = False
        stats.target = str(rule.target)
        if tcp:
            for loop, opened in zip(self._engines, sockets, strict=True):
                loop.add_rule(opened, rule, stats)
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
            if rule.congestion != old.rule.congestion:
                for listener in self._tcp_listeners[rule.key]:
                    _congestion.preset(listener, rule.congestion, str(rule.listen.address), reset=True)
            for engine in self._engines:
                engine.update_rule(rule)
        else:
            self.udp[rule.key].update(rule)

    def _retire(self, rule: ForwardRule) -> None:
        self.running.pop(rule.key)
        self._tcp_listeners.pop(rule.key, None)
        self.stats.rules[_key_text(rule)].retired = True
        if rule.protocol is Transport.TCP:
            for engine in self._engines:
                engine.remove_rule(rule)  # open connections go on
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

    def _count_now(self) -> None:
        """Bring the byte counters up to date: the splice loops' C turns count in bulk."""
        for engine in self._engines:
            if isinstance(engine, _splice.SpliceEngine):
                engine.count_now()

    def _log_stats(self) -> None:
        self._count_now()
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
        assert self._engines and self._force is not None
        engines = self._engines
        self.stats.draining = True
        sd_notify(self.notify_socket, "STOPPING=1")
        for relay in self.udp.values():
            relay.close()
        self.udp.clear()
        for engine in engines:
            engine.drain()
        # Logged once every loop has closed its listeners: a client that reads "drain" and
        # then connects is refused, never accepted by a loop that had not yet heard.
        self.log("drain", active=self.active, timeout=self.drain_timeout)
        drained = asyncio.ensure_future(self._all_drained())
        forced = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({drained, forced}, timeout=self.drain_timeout, return_when=asyncio.FIRST_COMPLETED)
        left = self.active
        forced.cancel()
        if not drained.done():
            drained.cancel()
        self._shutdown_now()
        self.log("stop", closed=left, reason="drain timeout" if left else "drained")

    def _shutdown_now(self) -> None:
        for relay in self.udp.values():
            relay.close()
        self.udp.clear()
        for engine in self._engines:
            engine.stop()

    @property
    def active(self) -> int:
        """Open TCP connections, over every loop."""
        return sum(engine.active for engine in self._engines)

    async def _all_drained(self) -> None:
        for engine in self._engines:
            if isinstance(engine, _splice.SpliceEngine):
                await asyncio.to_thread(engine.drained.wait, self.drain_timeout)
            else:
                await engine.drained.wait()


def _key_text(rule: ForwardRule) -> str:
    return f"{rule.protocol}/{rule.listen}"


def serve(rules: Sequence[ForwardRule], **options: Any) -> ForwarderStats:
    """Run a forwarder for `rules` in this thread until SIGTERM/SIGINT (see Forwarder)."""
    return Forwarder(rules, **options).run()
