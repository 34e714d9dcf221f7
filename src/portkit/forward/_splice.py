"""The splice engine: TCP forwarding with zero-copy os.splice() through pipes, on one epoll loop.

Bytes never enter Python: each direction moves socket -> pipe -> socket with splice(2), so
the kernel hands pages along instead of copying them through user space. One thread runs
an edge-triggered epoll loop over every socket; per event it splices until the kernel says
EAGAIN (bounded per turn, so one busy connection cannot starve the rest).

Memory per connection is bounded by the pipe: a direction reads only when its pipe is
empty, so a slow reader stops us reading from the fast writer (backpressure through the
TCP window). Pipes come from a small pool and are held only while bytes are in flight, so
thousands of idle connections cost two sockets each, not six descriptors.

What a connection does on EOF, reset, failure or idleness is decided by the pure state
machine in `_state`; this module only performs the actions it returns.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from portkit.forward._log import EventLog
from portkit.forward._proxyproto import proxy_header
from portkit.forward._rules import Overflow, Rule
from portkit.forward._sockets import arm_reset, error_name, peer, target_family
from portkit.forward._state import Action, ConnectionState, Event, State
from portkit.forward._stats import RuleStats

SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
PIPE_SIZE = 1 << 18  # 256 KiB in flight per direction at most
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MAX_ROUNDS = 32  # splices per connection per turn before yielding to others
ACCEPT_BATCH = 256
SWEEP_INTERVAL = 0.25  # seconds between idle / connect-timeout checks

_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR
_ET_ALL = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_SOFT_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def available() -> bool:
    """Whether this platform has splice(2) (Linux, Python 3.10+)."""
    return hasattr(os, "splice") and hasattr(select, "epoll")


class _PipePool:
    """Non-blocking pipes, reused: one is borrowed only while a direction has bytes in flight."""

    def __init__(self, size: int = PIPE_SIZE, keep: int = 256) -> None:
        self.size = size
        self.keep = keep
        self.free: list[tuple[int, int]] = []

    def get(self) -> tuple[int, int]:
        if self.free:
            return self.free.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # unprivileged users past pipe-user-pages-soft get 64 KiB
            fcntl.fcntl(w, F_SETPIPE_SZ, self.size)
        return r, w

    def put(self, pipe: tuple[int, int]) -> None:
        if len(self.free) < self.keep:
            self.free.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        while self.free:
            self.discard(self.free.pop())


class _Direction:
    """One way of flow: src socket -> pipe -> dst socket."""

    __slots__ = ("done", "dst", "eof", "pending", "pipe", "src", "upward")

    def __init__(self, src: int, dst: int, upward: bool) -> None:
        self.src = src
        self.dst = dst
        self.upward = upward  # client -> target
        self.pipe: tuple[int, int] | None = None
        self.pending = 0  # bytes in the pipe, not yet written to dst
        self.eof = False  # src said EOF
        self.done = False  # EOF passed to the state machine


class _Connection:
    """One client connection and its target connection."""

    def __init__(
        self, engine: SpliceEngine, listener: _Listener, client: socket.socket, address: Any
    ) -> None:
        self.engine = engine
        self.listener = listener
        self.rule = listener.rule
        self.stats = listener.stats
        self.client = client
        self.client_address = address
        self.target = socket.socket(target_family(self.rule.target), socket.SOCK_STREAM)
        self.cfd = client.fileno()
        self.tfd = self.target.fileno()
        self.state = ConnectionState()
        self.up = _Direction(self.cfd, self.tfd, True)
        self.down = _Direction(self.tfd, self.cfd, False)
        self.started = engine.now
        self.last = engine.now
        self.deadline = engine.now + self.rule.limits.connect_timeout
        self.bytes_up = 0
        self.bytes_down = 0
        self.ending = "closed"

    # --- I/O events ---------------------------------------------------------------------------

    def connect(self) -> None:
        self.client.setblocking(False)
        self.target.setblocking(False)
        for s in (self.client, self.target):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = self.target.connect_ex((str(self.rule.target.address), self.rule.target.port))
        engine = self.engine
        engine.fds[self.cfd] = self
        engine.fds[self.tfd] = self
        engine.epoll.register(self.cfd, _ET_ALL)
        engine.epoll.register(self.tfd, _ET_ALL)
        if rc == 0:
            self.apply(Event.CONNECTED)
        elif rc != errno.EINPROGRESS:
            self.fail(OSError(rc, os.strerror(rc)))

    def on_event(self, fd: int, mask: int) -> None:
        state = self.state.state
        if state is State.CONNECTING:
            if fd == self.tfd:
                err = self.target.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.fail(OSError(err, os.strerror(err)))
                elif mask & _OUT:
                    self.apply(Event.CONNECTED)
            elif mask & _ERR:
                self.reset(Event.CLIENT_RESET)
            return
        if state.finished:
            return
        if mask & _ERR:
            sock = self.client if fd == self.cfd else self.target
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.reset(Event.CLIENT_RESET if fd == self.cfd else Event.TARGET_RESET)
                return
        if fd == self.cfd:
            if mask & _IN:
                self.pump(self.up)
            if mask & _OUT and not self.state.finished:
                self.pump(self.down)
        else:
            if mask & _IN:
                self.pump(self.down)
            if mask & _OUT and not self.state.finished:
                self.pump(self.up)

    def resume(self) -> None:
        if not self.state.finished:
            self.pump(self.up)
        if not self.state.finished:
            self.pump(self.down)

    def pump(self, d: _Direction) -> None:
        """Move bytes src -> pipe -> dst until the kernel says EAGAIN, or the turn ends."""
        engine = self.engine
        splice = os.splice
        for _ in range(MAX_ROUNDS):
            if d.pending:
                try:
                    n = splice(d.pipe[0], d.dst, d.pending, flags=SPLICE_FLAGS)  # type: ignore[index]
                except BlockingIOError:
                    return  # dst is full: its EPOLLOUT edge will bring us back
                except OSError:
                    self.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                    return
                d.pending -= n
                if d.upward:
                    self.bytes_up += n
                    self.stats.bytes_up += n
                else:
                    self.bytes_down += n
                    self.stats.bytes_down += n
                if not d.pending:
                    engine.pipes.put(d.pipe)  # type: ignore[arg-type]
                    d.pipe = None
                continue
            if d.eof:
                if not d.done:
                    d.done = True
                    self.apply(Event.CLIENT_EOF if d.upward else Event.TARGET_EOF)
                return
            if d.pipe is None:
                d.pipe = engine.pipes.get()
            try:
                n = splice(d.src, d.pipe[1], PIPE_SIZE, flags=SPLICE_FLAGS)
            except BlockingIOError:
                engine.pipes.put(d.pipe)
                d.pipe = None
                return  # src is empty: its EPOLLIN edge will bring us back
            except OSError:
                engine.pipes.put(d.pipe)
                d.pipe = None
                self.reset(Event.CLIENT_RESET if d.upward else Event.TARGET_RESET)
                return
            if n == 0:
                engine.pipes.put(d.pipe)
                d.pipe = None
                d.eof = True
                continue
            d.pending = n
            self.last = engine.now
        engine.ready.append(self)

    # --- state machine ------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        self.stats.connect_errors += 1
        self.ending = "connect-failed"
        self.engine.log(
            "error",
            stage="connect",
            rule=self.rule.label,
            client=peer(self.client_address),
            target=str(self.rule.target),
            error=error_name(exc),
        )
        self.apply(Event.CONNECT_FAILED)

    def reset(self, event: Event) -> None:
        if self.state.finished:
            return
        self.stats.resets += 1
        self.ending = "reset-by-client" if event is Event.CLIENT_RESET else "reset-by-target"
        self.apply(event)

    def apply(self, event: Event) -> None:
        for action in self.state.handle(event):
            if action is Action.START_RELAY:
                self.start()
            elif action is Action.SHUT_TARGET_WR:
                with contextlib.suppress(OSError):
                    self.target.shutdown(socket.SHUT_WR)
            elif action is Action.SHUT_CLIENT_WR:
                with contextlib.suppress(OSError):
                    self.client.shutdown(socket.SHUT_WR)
            elif action is Action.RESET_CLIENT:
                arm_reset(self.client)
            elif action is Action.RESET_TARGET:
                arm_reset(self.target)
            elif action is Action.CLOSE_BOTH:
                self.close()

    def start(self) -> None:
        rule = self.rule
        self.last = self.engine.now
        if rule.proxy_protocol.value != "none":
            header = proxy_header(rule.proxy_protocol, self.client_address, self.client.getsockname())
            try:
                sent = self.target.send(header)
            except OSError as exc:
                sent = -1
                self.engine.log("error", stage="proxy-header", rule=rule.label, error=error_name(exc))
            if sent != len(header):
                self.reset(Event.TARGET_RESET)
                return
        self.engine.log(
            "connect",
            rule=rule.label,
            client=peer(self.client_address),
            target=str(rule.target),
            engine="splice",
        )
        self.resume()

    def close(self) -> None:
        engine = self.engine
        engine.fds.pop(self.cfd, None)
        engine.fds.pop(self.tfd, None)
        self.client.close()  # closing removes the descriptors from the epoll set
        self.target.close()
        for d in (self.up, self.down):
            if d.pipe is not None:
                # A pipe with bytes left over (after a reset) cannot be reused.
                (engine.pipes.discard if d.pending else engine.pipes.put)(d.pipe)
                d.pipe = None
        self.stats.active -= 1
        engine.connections.discard(self)
        if self.ending != "connect-failed":  # that one was logged as an error already
            engine.log(
                "close",
                rule=self.rule.label,
                client=peer(self.client_address),
                how=self.ending,
                bytes_up=self.bytes_up,
                bytes_down=self.bytes_down,
                seconds=round(engine.now - self.started, 3),
            )
        self.listener.slot_freed()
        engine.maybe_drained()

    def tick(self, now: float) -> None:
        """Timeouts: called every SWEEP_INTERVAL."""
        if self.state.state is State.CONNECTING:
            if now >= self.deadline:
                self.fail(TimeoutError())
            return
        idle = self.rule.limits.idle_timeout
        if idle > 0 and now - self.last >= idle:
            self.stats.idle_closed += 1
            self.ending = "idle-timeout"
            self.apply(Event.IDLE)


class _Listener:
    """A listening socket of one rule; accepts, applies the allow-list and the connection limit."""

    def __init__(self, engine: SpliceEngine, sock: socket.socket, rule: Rule, stats: RuleStats) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.rule = rule
        self.stats = stats
        self.paused = False
        self.closed = False

    def on_event(self, fd: int, mask: int) -> None:
        self.resume()

    def resume(self) -> None:
        if self.closed:
            return
        engine = self.engine
        limits = self.rule.limits
        for _ in range(ACCEPT_BATCH):
            if self.stats.active >= limits.max_connections and limits.overflow is Overflow.QUEUE:
                self.paused = True  # the kernel's backlog holds the rest until a slot frees
                return
            try:
                client, address = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _SOFT_FD_ERRORS:
                    engine.log("error", stage="accept", rule=self.rule.label, error=error_name(exc))
                    engine.starved.add(self)  # retried at the next sweep
                return
            self.admit(client, address)
        engine.ready.append(self)

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
        self.stats.active += 1
        self.stats.total += 1
        try:
            connection = _Connection(self.engine, self, client, address)
        except OSError as exc:
            self.stats.active -= 1
            self.engine.log("error", stage="socket", rule=rule.label, error=error_name(exc))
            arm_reset(client)
            client.close()
            return
        self.engine.connections.add(connection)
        connection.connect()

    def slot_freed(self) -> None:
        if self.paused and not self.closed and self.stats.active < self.rule.limits.max_connections:
            self.paused = False
            self.engine.ready.append(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.fds.pop(self.fd, None)
            self.sock.close()


class SpliceEngine:
    """TCP rules served by splice(2) on an epoll loop in a thread of its own.

    Other threads talk to it only through `call()`, which queues a function to run in the
    loop; the loop owns every socket, so no locks are needed on the fast path.
    """

    name = "splice"

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.epoll = select.epoll()
        self.pipes = _PipePool()
        self.fds: dict[int, Any] = {}
        self.listeners: dict[tuple[Any, ...], _Listener] = {}
        self.connections: set[_Connection] = set()
        self.ready: collections.deque[Any] = collections.deque()
        self.starved: set[_Listener] = set()
        self.now = time.monotonic()
        self.draining = False
        self.drained = threading.Event()
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self._wake_r, select.EPOLLIN)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="portkit-splice", daemon=True)

    # --- called from other threads ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self._calls.append((fn, args))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def add_rule(self, sock: socket.socket, rule: Rule, stats: RuleStats) -> None:
        self.call(self._add, sock, rule, stats)

    def update_rule(self, rule: Rule) -> None:
        self.call(self._update, rule)

    def remove_rule(self, rule: Rule) -> None:
        self.call(self._remove, rule)

    def drain(self) -> None:
        self.call(self._drain)

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and listener, end the loop, release everything."""
        self.call(self._close_all)
        self._thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self.connections)

    # --- the loop -----------------------------------------------------------------------------

    def _add(self, sock: socket.socket, rule: Rule, stats: RuleStats) -> None:
        listener = _Listener(self, sock, rule, stats)
        self.listeners[rule.key] = listener
        self.fds[listener.fd] = listener
        self.epoll.register(listener.fd, select.EPOLLIN | select.EPOLLET)
        listener.resume()

    def _update(self, rule: Rule) -> None:
        listener = self.listeners.get(rule.key)
        if listener is not None:
            listener.rule = rule  # new connections get the new target and limits
            listener.slot_freed()

    def _remove(self, rule: Rule) -> None:
        listener = self.listeners.pop(rule.key, None)
        if listener is not None:
            listener.close()  # its connections go on until they end

    def _drain(self) -> None:
        self.draining = True
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        self.maybe_drained()

    def maybe_drained(self) -> None:
        if self.draining and not self.connections:
            self.drained.set()

    def _close_all(self) -> None:
        self._drain()
        for connection in list(self.connections):
            connection.ending = "drain-timeout"
            connection.apply(Event.CLOSE)
        self._stopped = True

    def _run(self) -> None:
        epoll = self.epoll
        fds = self.fds
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stopped:
                events = epoll.poll(0 if self.ready else SWEEP_INTERVAL, 1024)
                self.now = time.monotonic()
                for fd, mask in events:
                    handler = fds.get(fd)
                    if handler is not None:
                        handler.on_event(fd, mask)
                    elif fd == self._wake_r:
                        self._run_calls()
                for _ in range(len(self.ready)):
                    self.ready.popleft().resume()
                if self.now >= next_sweep:
                    next_sweep = self.now + SWEEP_INTERVAL
                    self._sweep()
        except Exception as exc:  # a bug must be loud, not a silent dead thread
            self.log("error", stage="splice-loop", error=repr(exc))
            raise
        finally:
            self._release()

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        while self._calls:
            fn, args = self._calls.popleft()
            fn(*args)

    def _sweep(self) -> None:
        now = self.now
        for connection in list(self.connections):
            connection.tick(now)
        starved, self.starved = self.starved, set()
        for listener in starved:
            listener.resume()

    def _release(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        self.pipes.close()
        self.epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.drained.set()
