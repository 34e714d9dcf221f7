"""The splice engine: TCP forwarding with zero-copy os.splice() through pipes for bulk, and
small messages copied on one epoll loop.

Bulk bytes never enter Python: such a direction moves socket -> pipe -> socket with
splice(2), so the kernel hands pages along instead of copying them through user space.

One *loop* thread runs an edge-triggered epoll loop: it accepts, applies the allow-list and
the connection limit, connects to the target without blocking, enforces the connect and
idle timeouts, runs the supervisor's requests, and relays every connection without
blocking until the kernel says EAGAIN (bounded per turn, so one busy connection cannot
starve the rest). That serves thousands of short or quiet connections with one thread.

On the loop, each direction starts by *copying*: recv_into() a preallocated buffer, send()
to the other side. For small messages (requests and replies of databases, caches, RPC, ssh)
that is two system calls a message, where splicing through a pipe costs three, plus a pipe
taken from the pool and given back. A read that fills the whole buffer (COPY_BUFFER) means
the sender has more queued than a message: the direction moves to splice from its next read,
and goes back to copying when a splice brings in less than a buffer. Copied bytes that the
other side cannot take at once are held (at most one buffer per direction) and nothing more
is read from that direction until they are out, so the backpressure is the pipe's. The
engine's `copy` ("auto"; "never": splice every byte, "always": copy every byte, no relay
threads) pins one path down; `portkit forward` sets it from $PORTKIT_SPLICE_COPY.

The loop registers both sockets edge-triggered for reading and writing. A direction reads
until the kernel says EAGAIN, except that a copy read shorter than the buffer is taken as the
end of what is queued: any byte that arrives later raises a new edge, and a FIN that came
with the bytes shows as EPOLLRDHUP in the same event, which makes the read go on to EOF. A
writable edge only matters to a direction that holds bytes for that socket. The commonest
event of all, a readable edge of a copying connection with nothing held either way, is
handled in the loop itself (`SpliceEngine._copy_quick`); `_Connection.pump` is the
reference for every case and `tests/test_forward_copy.py` checks that they agree. Per
request and reply that leaves four system calls (recv and send on each leg) and the loop's
share of one epoll_wait: the floor for a forwarder that passes bytes through user space.

Where the C module `_quickio` is built, a whole loop turn -- epoll_wait and that commonest
event -- runs in C with the GIL released (`SpliceEngine._run_in_c`): the loops of one
forwarder then copy at the same time instead of taking turns at the interpreter, and a
request costs no Python at all. Python stays the decider: it writes, per socket, whether
the C turn may copy from it (`settle`, after every change of a connection's state; cleared
before a socket is closed) and handles every event and outcome the turn hands back.

A forwarder may run several engines, one loop each (`Forwarder(loops=)`; by default one per
CPU up to two). Each has its own listening socket per rule, bound with SO_REUSEPORT, and the
kernel hashes each new connection to one of them; a connection lives on the loop that
accepted it. The engines share each rule's RuleStats, so its counters and its connection
limit are over all loops: taking a slot is one step under a lock, and a slot freed on one
loop wakes the rule's listeners paused on the others (`siblings`). Per request the loop
spends most of its time in recv and send, where the GIL is released, so two loops on two
CPUs carry more than one (figures in BENCHMARKS.md).

A connection whose spliced bytes reach THREAD_AFTER is a bulk transfer: it is handed to two
*relay threads*, one per direction, doing blocking splices. The GIL is released inside
splice(2), so bulk directions run in parallel in the kernel and a blocked splice is woken
by the kernel itself, without epoll or Python in between, which moves more than the loop
alone for bulk transfers (BENCHMARKS.md). At most MAX_THREADED connections (over all loops:
each gets its share) are threaded at once, so a burst can never turn into thousands of
threads. The engine's `thread_after` (bytes; 0 = always, -1 = never) overrides the
threshold; `portkit forward` sets it from $PORTKIT_SPLICE_THREAD_AFTER.

Memory per connection is bounded by the pipe: a direction reads again only once its pipe
is flushed, so a slow reader stops us reading from the fast writer (backpressure through
the TCP window). Pipes come from a shared pool and are held only while bytes are in flight
(relay threads give theirs back after PIPE_IDLE seconds without data), so quiet
connections cost two sockets each.

Relay threads are throughput work, and are scheduled as such: each runs under SCHED_BATCH
(same CPU share, but its wake-ups do not preempt the running task), and both sockets of a
threaded connection get TCP_NOTSENT_LOWAT (a writer sleeps while NOTSENT_LOWAT bytes are
still unsent). On two cores with iperf3 -P 8 the single-threaded receiver is the bottleneck:
batch scheduling stops our wake-ups from taking the CPU from it, and the smaller unsent queue
makes each byte it reads cheaper (the data is still in cache). Together they turn the idle
time the receiver leaves into throughput; either alone does not (BENCHMARKS.md).

Each leg gets its rule's congestion control (`_congestion`): by default reno on legs within
this host, where a pacing default such as BBR only costs timers (figures in BENCHMARKS.md).

Relay threads are woken for closing by shutdown(SHUT_RD) (readers; it sends nothing on the
wire) and by a send timeout (a writer blocked on a reader that does not read).

What a connection does on EOF, reset, failure or idleness is decided by the pure state
machine in `_state`; this module only performs the actions it returns.
"""

from __future__ import annotations

import array
import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from portkit.forward import _congestion
from portkit.forward._idle import IdleWatch, tcp_progress
from portkit.forward._log import EventLog
from portkit.forward._proxyproto import proxy_header
from portkit.forward._rules import ForwardRule, Overflow
from portkit.forward._sockets import arm_reset, error_name, peer, target_family
from portkit.forward._state import ConnectionState, Event, ForwardAction, State
from portkit.forward._stats import RuleStats

try:  # the loop turn in C (setup.py builds it where a compiler is present)
    from portkit.forward import _quickio
except ImportError:  # pragma: no cover - the pure-Python turn serves alike, slower
    _quickio = None  # type: ignore[assignment]

SPLICE_MOVE = getattr(os, "SPLICE_F_MOVE", 1)
SPLICE_NONBLOCK = SPLICE_MOVE | getattr(os, "SPLICE_F_NONBLOCK", 2)
PIPE_SIZE = 1 << 20  # 1 MiB in flight per direction at most (the unprivileged pipe-max-size)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MAX_ROUNDS = 32  # splices per connection per loop turn before yielding to others
THREAD_AFTER = 512 << 10  # bytes a direction splices on the loop before the connection gets relay threads
COPY_BUFFER = 64 << 10  # the loop's copy buffer; a read that fills it moves a direction to splice
COPY_MODES = ("auto", "never", "always")
TURN_MODES = ("auto", "python")  # auto: the loop turn in C where _quickio is built
MAX_THREADED = 64  # connections with relay threads at once (two threads each)
PIPE_IDLE = 0.05  # seconds without data before a relay thread gives its pipe back
WRITER_WAKE = 0.25  # a relay thread blocked on a slow reader looks up this often (closing?)
RELAY_STACK = 256 << 10  # relay threads need little stack
NOTSENT_LOWAT = 512 << 10  # unsent bytes a threaded connection's socket holds before its writer sleeps
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
ACCEPT_BATCH = 256
SWEEP_INTERVAL = 0.25  # seconds between idle / connect-timeout checks
PEERS_START = 4096  # descriptors the C turn's tables cover at first (they grow on demand)

_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR
_HANGUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR  # a read must go on to EOF / the error
_ET_ALL = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_POLL_READ = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0x2000)
_SOFT_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_STATS_LOCK = threading.Lock()  # relay threads and the loop add to the same RuleStats


def available() -> bool:
    """Whether this platform has splice(2) (Linux, Python 3.10+)."""
    return hasattr(os, "splice") and hasattr(select, "epoll")


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


_PR_SET_NAME = 15
_libc: Any = None


def _name_os_thread(name: str) -> None:
    """Give the calling OS thread `name` (at most 15 bytes), what `top -H`, `ps -L` and `perf`
    show; Python's thread names stay inside Python. Best effort: silently skipped elsewhere."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _batch_scheduling() -> None:
    """Schedule the calling thread as SCHED_BATCH: bulk relaying yields to whatever runs.

    Its CPU share is unchanged (same weight as SCHED_OTHER); what changes is that its
    wake-ups do not preempt the running task, which on a busy machine is usually the
    receiver this thread feeds. Where the policy is unavailable the thread simply keeps the
    default one.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: this thread (Linux)


class _PipePool:
    """Pipes, reused: one is held only while a direction has bytes in flight (thread-safe).

    The pipes themselves are blocking; the loop asks for non-blocking splices with
    SPLICE_F_NONBLOCK, while relay threads must block on the socket (a non-blocking pipe
    would make splice to a socket non-blocking too).
    """

    def __init__(self, size: int = PIPE_SIZE, keep: int = 256) -> None:
        self.size = size
        self.keep = keep
        self.free: list[tuple[int, int]] = []  # list.pop/append are atomic under the GIL

    def get(self) -> tuple[int, int]:
        try:
            return self.free.pop()
        except IndexError:
            pass
        r, w = os.pipe2(os.O_CLOEXEC)
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
    """One way of flow: src socket -> (copy buffer or pipe) -> dst socket."""

    __slots__ = (
        "connection", "copying", "done", "dst", "dst_sock", "eof", "held", "moved", "other",
        "pending", "pipe", "recv_into", "send", "spliced", "src", "src_sock", "upward",
    )  # fmt: skip

    def __init__(
        self, connection: _Connection, src: socket.socket, dst: socket.socket, upward: bool, copying: bool
    ) -> None:
        self.connection = connection
        self.other: _Direction = self  # the opposite direction, set once both exist
        self.src_sock = src
        self.dst_sock = dst
        self.recv_into = src.recv_into
        self.send = dst.send
        self.src = src.fileno()
        self.dst = dst.fileno()
        self.upward = upward  # client -> target
        self.copying = copying  # reads go through the copy buffer (else through a pipe)
        self.pipe: tuple[int, int] | None = None
        self.pending = 0  # bytes in the pipe, not yet written to dst
        self.held = b""  # copied bytes dst did not take yet
        self.eof = False  # src said EOF
        self.done = False  # EOF passed to the state machine
        self.moved = 0
        self.spliced = 0  # of which through a pipe


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
        _congestion.preset(self.target, self.rule.congestion, str(self.rule.target.address))
        self.cfd = client.fileno()
        self.tfd = self.target.fileno()
        self.state = ConnectionState()
        copying = engine.copy == "always" or (engine.copy == "auto" and engine.thread_after != 0)
        self.up = _Direction(self, client, self.target, True, copying)
        self.down = _Direction(self, self.target, client, False, copying)
        self.up.other, self.down.other = self.down, self.up
        self.lock = threading.RLock()  # once threaded, the state machine has three drivers
        self.threaded = False
        self.closing = False
        self.running = 0  # relay threads still running
        self.released = False
        self.started = engine.now
        self.last = engine.now
        self.deadline = engine.now + self.rule.limits.connect_timeout
        self.bytes_up = 0
        self.bytes_down = 0
        self.ending = "closed"
        self.idle = IdleWatch()

    # --- the loop -----------------------------------------------------------------------------

    def connect(self) -> None:
        self.client.setblocking(False)
        self.target.setblocking(False)
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
        if state.finished or self.threaded:
            return
        if mask & _ERR:
            sock = self.client if fd == self.cfd else self.target
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.reset(Event.CLIENT_RESET if fd == self.cfd else Event.TARGET_RESET)
                return
        first, second = (self.up, self.down) if fd == self.cfd else (self.down, self.up)
        if mask & _IN:
            self.pump(first, bool(mask & _HANGUP))
        # A writable edge comes with every event (both are registered); it matters only to a
        # direction that holds bytes for this socket.
        if (second.pending or second.held) and mask & _OUT and not self.state.finished and not self.threaded:
            self.pump(second, True)

    def resume(self) -> None:
        for d in (self.up, self.down):
            if self.state.finished or self.threaded:
                return
            self.pump(d, True)

    def pump(self, d: _Direction, eager: bool) -> None:
        """Move bytes src -> dst until the kernel says EAGAIN, or the turn ends.

        Without `eager` a short copy read ends the turn (what is queued has been read; see the
        module docstring); with it, reading goes on until EAGAIN or EOF, as it must where
        edges may have gone by unread (a resumed turn, bytes held back until now).
        """
        engine = self.engine
        splice = os.splice
        for _ in range(MAX_ROUNDS):
            if d.pending:
                try:
                    n = splice(d.pipe[0], d.dst, d.pending, flags=SPLICE_NONBLOCK)  # type: ignore[index]
                except BlockingIOError:
                    return  # dst is full: its EPOLLOUT edge will bring us back
                except OSError:
                    self.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                    return
                d.pending -= n
                d.spliced += n
                self._count(d, n)
                self.last = engine.now  # bytes written are activity, however slow the reader
                if d.pending:
                    return  # a short write: dst is full, wait for EPOLLOUT
                engine.pipes.put(d.pipe)  # type: ignore[arg-type]
                d.pipe = None
                if d.spliced >= engine.thread_after >= 0 and engine.threaded < engine.max_threaded:
                    self._thread()
                    return
                eager = True
                continue
            if d.held:
                try:
                    n = d.dst_sock.send(d.held)
                except BlockingIOError:
                    return
                except OSError:
                    self.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                    return
                self._count(d, n)
                self.last = engine.now
                d.held = d.held[n:]
                if d.held:
                    return  # still full: wait for EPOLLOUT
                eager = True  # edges of src went by while we did not read
                continue
            if d.eof:
                if not d.done:
                    d.done = True
                    self.apply(Event.CLIENT_EOF if d.upward else Event.TARGET_EOF)
                return
            if d.copying:
                buffer = engine.buffer
                try:
                    n = d.src_sock.recv_into(buffer)
                except BlockingIOError:
                    return  # src is empty: its EPOLLIN edge will bring us back
                except OSError:
                    self.reset(Event.CLIENT_RESET if d.upward else Event.TARGET_RESET)
                    return
                if n == 0:
                    d.eof = True
                    continue
                self.last = engine.now
                try:
                    sent = d.dst_sock.send(engine.view[:n])
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                    return
                self._count(d, sent)
                if sent < n:
                    d.held = bytes(engine.view[sent:n])
                    return  # dst is full: its EPOLLOUT edge will bring us back
                if n == COPY_BUFFER:
                    d.copying = engine.copy == "always"  # more was queued than a message: bulk
                elif not eager:
                    return
                continue
            if d.pipe is None:
                d.pipe = engine.pipes.get()
            try:
                n = splice(d.src, d.pipe[1], PIPE_SIZE, flags=SPLICE_NONBLOCK)
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
            if n < COPY_BUFFER and engine.copy == "auto":
                d.copying = True  # less than a buffer was queued: back to copying after this
            self.last = engine.now
        engine.ready.append(self)

    def _count(self, d: _Direction, n: int) -> None:
        d.moved += n
        with _STATS_LOCK:
            if d.upward:
                self.bytes_up += n
                self.stats.bytes_up += n
            else:
                self.bytes_down += n
                self.stats.bytes_down += n

    def tick(self, now: float) -> None:
        """Timeouts, checked by the loop every SWEEP_INTERVAL."""
        if self.state.state is State.CONNECTING:
            if now >= self.deadline:
                self.fail(TimeoutError())
            return
        idle = self.rule.limits.idle_timeout
        if idle <= 0 or self.state.finished:
            return
        last = self.idle.check(now, self.last, idle, SWEEP_INTERVAL, self._kernel_progress)
        if last is not None:
            self.last = last
            return
        with _STATS_LOCK:
            self.stats.idle_closed += 1
        self.ending = "idle-timeout"
        self.apply(Event.IDLE)

    def _kernel_progress(self) -> int | None:
        """The kernel's byte counters of this connection's sockets (`_idle.tcp_progress`): a
        relay thread sleeping in one long splice or under TCP_NOTSENT_LOWAT, or a held buffer
        waiting for room, writes nothing new while a slow reader takes bytes."""
        with self.lock:  # a relay thread may be releasing the sockets
            if self.released:
                return None
            return tcp_progress((self.client, self.target))

    # --- state machine ------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        with _STATS_LOCK:
            self.stats.connect_errors += 1
        self.ending = "connect-failed"
        self.engine.log.connect_failed(self.rule, self.client_address, exc)
        self.apply(Event.CONNECT_FAILED)

    def reset(self, event: Event) -> None:
        with self.lock:
            if self.state.finished or self.closing:
                return
            with _STATS_LOCK:
                self.stats.resets += 1
            self.ending = "reset-by-client" if event is Event.CLIENT_RESET else "reset-by-target"
            self.apply(event)

    def apply(self, event: Event) -> None:
        with self.lock:
            for action in self.state.handle(event):
                if action is ForwardAction.START_RELAY:
                    self._start()
                elif action is ForwardAction.SHUT_TARGET_WR:
                    with contextlib.suppress(OSError):
                        self.target.shutdown(socket.SHUT_WR)
                elif action is ForwardAction.SHUT_CLIENT_WR:
                    with contextlib.suppress(OSError):
                        self.client.shutdown(socket.SHUT_WR)
                elif action is ForwardAction.RESET_CLIENT:
                    arm_reset(self.client)
                elif action is ForwardAction.RESET_TARGET:
                    arm_reset(self.target)
                elif action is ForwardAction.CLOSE_BOTH:
                    self._close()

    def _start(self) -> None:
        """Connected: send the PROXY header if asked, then relay on the loop (runs in the loop)."""
        rule = self.rule
        self.last = self.engine.now
        for s, address in ((self.client, rule.listen.address), (self.target, rule.target.address)):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _congestion.settle(s, rule.congestion, str(address))
        if rule.proxy_protocol.value != "none":
            header = proxy_header(rule.proxy_protocol, self.client_address, self.client.getsockname())
            try:
                sent = self.target.send(header)  # a fresh socket's buffer always takes ~100 bytes
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
        engine = self.engine
        engine.readers[self.cfd], engine.readers[self.tfd] = self.up, self.down
        self.resume()
        engine.settle(self)

    def _close(self) -> None:
        """CLOSE_BOTH. Threaded: wake the relay threads, the last one out releases the sockets."""
        self.closing = True
        if self.running:
            for s in (self.client, self.target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RD)  # a blocked reader returns 0; nothing goes on the wire
            return
        self._release()

    def _release(self) -> None:
        """Close both sockets once nothing uses them (with the lock held)."""
        if self.released:
            return
        self.released = True
        engine = self.engine
        if not self.threaded:
            engine.unpeer(self)
            for fd in (self.cfd, self.tfd):
                engine.fds.pop(fd, None)
                engine.readers.pop(fd, None)
        self.client.close()  # SO_LINGER 0 was armed where the state machine said RESET
        self.target.close()  # closing also takes the descriptors out of the epoll set
        for d in (self.up, self.down):
            if d.pipe is not None:
                # A pipe with bytes left over (after a reset) cannot be reused.
                (engine.pipes.discard if d.pending else engine.pipes.put)(d.pipe)
                d.pipe = None
        with _STATS_LOCK:
            self.stats.active -= 1
        if self.ending != "connect-failed":  # that one was logged as an error already
            engine.log(
                "close",
                rule=self.rule.label,
                client=peer(self.client_address),
                how=self.ending,
                bytes_up=self.bytes_up,
                bytes_down=self.bytes_down,
                seconds=round(time.monotonic() - self.started, 3),
            )
        if self.threaded:
            engine.call(engine.forget, self)
        else:
            engine.forget(self)

    # --- relay threads ------------------------------------------------------------------------

    def _thread(self) -> None:
        """Hand this bulk connection to one relay thread per unfinished direction (in the loop)."""
        engine = self.engine
        with self.lock:
            if self.state.finished:
                return
            engine.unpeer(self)  # before `threaded`: the bytes the C turn moved are counted
            self.threaded = True
            engine.threaded += 1
            for fd in (self.cfd, self.tfd):
                engine.fds.pop(fd, None)
                engine.readers.pop(fd, None)
                engine.epoll.unregister(fd)
            for s in (self.client, self.target):
                s.setblocking(True)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(PIPE_IDLE))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(WRITER_WAKE))
                with contextlib.suppress(OSError):  # an older kernel without it just queues more
                    s.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
            directions = [d for d in (self.up, self.down) if not d.done]
            self.running = len(directions)
            previous = threading.stack_size(RELAY_STACK)
            try:
                for number, d in enumerate(directions):
                    try:
                        threading.Thread(
                            target=self._relay, args=(d,), name="portkit-relay", daemon=True
                        ).start()
                    except RuntimeError as exc:  # out of threads (pids.max, memory): end this one
                        self.running -= len(directions) - number
                        engine.log("error", stage="relay-thread", rule=self.rule.label, error=str(exc))
                        self.ending = "error"
                        self.apply(Event.CLOSE)
                        return
            finally:
                threading.stack_size(previous)

    def _relay(self, d: _Direction) -> None:
        """One direction until EOF, reset or close: blocking splices src -> pipe -> dst."""
        pool = self.engine.pipes
        splice = os.splice
        src_reset = Event.CLIENT_RESET if d.upward else Event.TARGET_RESET
        waiter = select.poll()
        waiter.register(d.src, _POLL_READ)
        _name_os_thread("portkit-relay")
        _batch_scheduling()
        try:
            while not self.closing:
                if d.held:  # copied on the loop before the hand-over, not yet taken by dst
                    if not self._flush_held(d):
                        break
                    continue
                if d.pending:
                    if not self._flush(d):
                        break
                    continue
                if d.eof:
                    if not d.done:
                        d.done = True
                        self.apply(Event.CLIENT_EOF if d.upward else Event.TARGET_EOF)
                    break
                if d.pipe is None:
                    waiter.poll()  # quiet: wait without holding a pipe
                    if self.closing:
                        break
                    d.pipe = pool.get()
                try:
                    n = splice(d.src, d.pipe[1], PIPE_SIZE, flags=SPLICE_MOVE)
                except BlockingIOError:  # SO_RCVTIMEO: quiet for PIPE_IDLE, give the pipe back
                    pool.put(d.pipe)
                    d.pipe = None
                    continue
                except OSError:
                    self.reset(src_reset)
                    break
                if n == 0:
                    pool.put(d.pipe)
                    d.pipe = None
                    d.eof = True
                    continue
                d.pending = n
                self.last = time.monotonic()
        finally:
            with self.lock:
                self.running -= 1
                if self.running == 0 and (self.closing or self.state.finished):
                    self._release()

    def _flush(self, d: _Direction) -> bool:
        """Write the pipe out to dst (blocking); False when the connection ends meanwhile."""
        while d.pending:
            try:
                sent = os.splice(d.pipe[0], d.dst, d.pending, flags=SPLICE_MOVE)  # type: ignore[index]
            except BlockingIOError:  # SO_SNDTIMEO: the far reader is slow
                if self.closing:
                    return False
                continue
            except OSError:
                self.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                return False
            d.pending -= sent
            self._count(d, sent)
            self.last = time.monotonic()  # a slow reader taking bytes is not idle
        return True

    def _flush_held(self, d: _Direction) -> bool:
        """Write the held bytes out to dst (blocking); False when the connection ends meanwhile."""
        while d.held:
            try:
                sent = d.dst_sock.send(d.held)
            except BlockingIOError:  # SO_SNDTIMEO: the far reader is slow
                if self.closing:
                    return False
                continue
            except OSError:
                self.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                return False
            d.held = d.held[sent:]
            self._count(d, sent)
            self.last = time.monotonic()
        return True


class _Listener:
    """A listening socket of one rule; accepts, applies the allow-list and the connection limit."""

    def __init__(
        self, engine: SpliceEngine, sock: socket.socket, rule: ForwardRule, stats: RuleStats
    ) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.rule = rule
        self.stats = stats
        self.paused = False
        self.closed = False
        # Accepted while the rule was below its limit (overflow = queue) but another loop took
        # the last slot before this one could: it waits here for a slot, first in line.
        self.waiting: tuple[socket.socket, Any] | None = None

    def on_event(self, fd: int, mask: int) -> None:
        self.resume()

    def resume(self) -> None:
        if self.closed:
            return
        engine = self.engine
        limits = self.rule.limits
        if self.waiting is not None:
            client, address = self.waiting
            self.waiting = None
            self.admit(client, address)
            if self.waiting is not None:
                return
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
        stats = self.stats
        reason = ""
        # The count is shared with the rule's listeners on other loops: the check and the
        # taking of a slot are one step.
        with _STATS_LOCK:
            if not rule.allows(address[0]):
                reason = "allow-list"
                stats.refused_allow += 1
            elif stats.active >= rule.limits.max_connections:
                if rule.limits.overflow is Overflow.QUEUE:
                    self.waiting = (client, address)
                    self.paused = True
                    return
                reason = "max-connections"
                stats.refused_limit += 1
            else:
                stats.active += 1
                stats.total += 1
        if reason:
            self.engine.log("refuse", rule=rule.label, client=peer(address), reason=reason)
            arm_reset(client)
            client.close()
            return
        try:
            connection = _Connection(self.engine, self, client, address)
        except OSError as exc:
            with _STATS_LOCK:
                stats.active -= 1
                stats.total -= 1
            self.engine.log("error", stage="socket", rule=rule.label, error=error_name(exc))
            arm_reset(client)
            client.close()
            self.engine.slot_freed(rule.key)
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
            self.engine.departed.add(self.fd)
            self.sock.close()  # what the kernel still queued for it is reset
            if self.waiting is not None:
                arm_reset(self.waiting[0])
                self.waiting[0].close()
                self.waiting = None


class SpliceEngine:
    """TCP rules served by splice(2): the loop thread, plus relay threads for bulk transfers.

    Other threads talk to the loop only through `call()`, which queues a function to run
    in the loop; listeners and the set of connections belong to the loop alone.
    """

    name = "splice"

    def __init__(
        self,
        log: EventLog,
        *,
        thread_after: int = THREAD_AFTER,
        copy: str = "auto",
        max_threaded: int = MAX_THREADED,
        turn: str = "auto",
    ) -> None:
        if copy not in COPY_MODES:
            raise ValueError(f"invalid copy mode {copy!r}: expected one of {', '.join(COPY_MODES)}")
        if turn not in TURN_MODES:
            raise ValueError(f"invalid turn {turn!r}: expected one of {', '.join(TURN_MODES)}")
        self.log = log
        self.thread_after = thread_after  # spliced bytes before relay threads; 0 = at once, -1 = never
        self.copy = copy  # auto: copy small reads, splice bulk; never / always: one path only
        self.max_threaded = max_threaded  # this loop's share of MAX_THREADED
        self.buffer = bytearray(COPY_BUFFER)  # the loop's, shared by every copying direction
        self.view = memoryview(self.buffer)
        self.epoll = select.epoll()
        self.pipes = _PipePool()
        self.fds: dict[int, Any] = {}
        self.readers: dict[int, _Direction] = {}  # fd -> the direction reading it, once relaying
        # Descriptors closed (or handed to relay threads) while the current batch of events is
        # handled. The batch may still hold events about them, and an accept later in the same
        # batch may already have been given the same numbers: those events are dropped.
        self.departed: set[int] = set()
        self.quick = True  # run the copy fast path in `_run` (False: every event through `pump`)
        self.in_c = turn == "auto" and _quickio is not None  # with `quick`: loop turns in C (_quickio)
        # For the C turn, per descriptor: the socket to copy its bytes to (-1: hand the event
        # to Python), and the bytes copied since Python last counted them (`fold`).
        self.peers = array.array("i", [-1]) * PEERS_START
        self.moved = array.array("q", [0]) * PEERS_START
        self.listeners: dict[tuple[Any, ...], _Listener] = {}
        self.connections: set[_Connection] = set()
        self.threaded = 0  # connections handed to relay threads
        self.ready: collections.deque[Any] = collections.deque()
        self.starved: set[_Listener] = set()
        self.now = time.monotonic()
        self.draining = False
        self.drained = threading.Event()
        self._not_listening = threading.Event()  # set once draining closed the listeners
        self._calls: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self._wake_r, select.EPOLLIN)
        self._stopped = False
        self._released = False
        # The other loops of the same forwarder: they share each rule's RuleStats (so its
        # connection limit) and each has its own listening socket per rule (SO_REUSEPORT).
        self.siblings: list[SpliceEngine] = []
        self._thread = threading.Thread(target=self._run, name="portkit-splice", daemon=True)

    # --- called from other threads ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._released:
            return  # the loop is gone (stopping): nothing is left to do
        self._calls.append((fn, args))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def add_rule(self, sock: socket.socket, rule: ForwardRule, stats: RuleStats) -> None:
        self.call(self._add, sock, rule, stats)

    def update_rule(self, rule: ForwardRule) -> None:
        self.call(self._update, rule)

    def remove_rule(self, rule: ForwardRule) -> None:
        self.call(self._remove, rule)

    def count_now(self, timeout: float = 1.0) -> None:
        """Count into the rules' statistics what the C turn has copied (`fold`); returns once
        the loop has done so, or after `timeout`. Not to be called from the loop itself."""
        if not self.in_c or self._released or threading.current_thread() is self._thread:
            return
        done = threading.Event()
        self.call(self._count_now, done)
        done.wait(timeout)

    def _count_now(self, done: threading.Event) -> None:
        self._fold_all()
        done.set()

    def _fold_all(self) -> None:
        """`fold` for every connection the C turns copied for since the last time: the
        descriptors with bytes counted (`_quickio.collect`), not every connection."""
        readers = self.readers
        for fd, n in _quickio.collect(self.moved):
            d = readers.get(fd)
            if d is not None:
                d.connection._count(d, n)
                d.connection.last = self.now

    def drain(self, timeout: float = 2.0) -> None:
        """Stop accepting: returns once the loop has closed its listeners (or `timeout`)."""
        self.call(self._drain)
        self._not_listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and listener, end the loop, release everything."""
        self.call(self._close_all)
        self._thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self.connections)

    # --- the loop -----------------------------------------------------------------------------

    def _add(self, sock: socket.socket, rule: ForwardRule, stats: RuleStats) -> None:
        listener = _Listener(self, sock, rule, stats)
        self.listeners[rule.key] = listener
        self.fds[listener.fd] = listener
        self.epoll.register(listener.fd, select.EPOLLIN | select.EPOLLET)
        listener.resume()

    def _update(self, rule: ForwardRule) -> None:
        listener = self.listeners.get(rule.key)
        if listener is not None:
            listener.rule = rule  # new connections get the new target and limits
            listener.slot_freed()

    def _remove(self, rule: ForwardRule) -> None:
        listener = self.listeners.pop(rule.key, None)
        if listener is not None:
            listener.close()  # its connections go on until they end

    def _drain(self) -> None:
        self.draining = True
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        self._not_listening.set()
        self.maybe_drained()

    def forget(self, connection: _Connection) -> None:
        """A connection released its sockets (called in the loop)."""
        self.connections.discard(connection)
        if connection.threaded:
            self.threaded -= 1
        connection.listener.slot_freed()
        self.slot_freed(connection.rule.key)
        self.maybe_drained()

    def slot_freed(self, key: tuple[Any, ...]) -> None:
        """A connection of rule `key` ended here: the rule's listeners on the other loops,
        paused at the shared connection limit, may accept again (each in its own loop)."""
        for sibling in self.siblings:
            listener = sibling.listeners.get(key)
            if listener is not None and listener.paused:
                sibling.call(sibling._slot_freed, key)

    def _slot_freed(self, key: tuple[Any, ...]) -> None:
        listener = self.listeners.get(key)
        if listener is not None:
            listener.slot_freed()

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
        if self.quick and self.in_c:
            self._run_in_c()
            return
        _name_os_thread("portkit-splice")
        epoll = self.epoll
        fds = self.fds
        readers = self.readers
        departed = self.departed
        quick = self.quick
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stopped:
                events = epoll.poll(0 if self.ready else SWEEP_INTERVAL, 1024)
                self.now = time.monotonic()
                departed.clear()
                for fd, mask in events:
                    if departed and fd in departed:
                        continue  # about a socket closed earlier in this batch, not its namesake
                    if quick:
                        d = readers.get(fd)
                        if d is not None and self._copy_quick(d, mask):
                            continue
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

    def _run_in_c(self) -> None:
        """`_run` with each turn's epoll_wait and quick copies in C (`_quickio.turn`)."""
        _name_os_thread("portkit-splice")
        turn = _quickio.turn
        epfd = self.epoll.fileno()
        fds = self.fds
        departed = self.departed
        buffer = self.buffer
        settle = self.settle
        untouched, read, end, recv_error = (
            _quickio.UNTOUCHED, _quickio.READ, _quickio.END, _quickio.RECV_ERROR,
        )  # fmt: skip
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        try:
            while not self._stopped:
                # The turn's budget is the time to the next sweep: quick copies alone never
                # bring it back to Python before then.
                budget = 0 if self.ready else max(1, int((next_sweep - time.monotonic()) * 1000) + 1)
                events = turn(epfd, budget, self.peers, self.moved, buffer)
                self.now = time.monotonic()
                departed.clear()
                for fd, mask, code, n, unsent in events:
                    if departed and fd in departed:
                        continue  # about a socket closed earlier in this batch, not its namesake
                    if code == untouched:
                        handler = fds.get(fd)
                        if handler is not None:
                            handler.on_event(fd, mask)
                            if handler.__class__ is _Connection:
                                settle(handler)
                        elif fd == self._wake_r:
                            self._run_calls()
                        continue
                    d = self.readers.get(fd)  # the turn copies only for relaying directions
                    if d is None:
                        continue
                    connection = d.connection
                    self.fold(connection)
                    if code == read:
                        assert unsent is not None
                        connection.last = self.now
                        d.held = unsent  # sent first, in order; EPOLLOUT of dst brings `on_event` back
                        if n == COPY_BUFFER:  # bulk: `pump` passes it on and decides what follows
                            d.copying = self.copy == "always"
                            connection.pump(d, True)
                    elif code == end:
                        self._pass_on(d, 0)
                    elif code == recv_error:
                        connection.reset(Event.CLIENT_RESET if d.upward else Event.TARGET_RESET)
                    else:  # SEND_ERROR
                        connection.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
                    settle(connection)
                for _ in range(len(self.ready)):
                    item = self.ready.popleft()
                    item.resume()
                    if item.__class__ is _Connection:
                        settle(item)
                if self.now >= next_sweep:
                    next_sweep = self.now + SWEEP_INTERVAL
                    self._fold_all()  # before the idle check: what the turns copied is activity
                    self._sweep()  # what ends here lets go of its sockets through `unpeer`
        except Exception as exc:  # a bug must be loud, not a silent dead thread
            self.log("error", stage="splice-loop", error=repr(exc))
            raise
        finally:
            self._release()

    def settle(self, connection: _Connection) -> None:
        """Write whether the C turn may copy from each of `connection`'s sockets: exactly where
        `_copy_quick` would (a relaying, copying direction, nothing held either way)."""
        if connection.released or connection.threaded:
            return  # its entries were cleared when it let go of the sockets (`unpeer`)
        peers = self.peers
        if max(connection.cfd, connection.tfd) >= len(peers):
            self._grow(max(connection.cfd, connection.tfd))
        readers = self.readers
        for d in (connection.up, connection.down):
            other = d.other
            quick = (
                d.copying
                and not (d.held or d.pending or d.eof or other.held or other.pending)
                and readers.get(d.src) is d
            )
            peers[d.src] = d.dst if quick else -1

    def fold(self, connection: _Connection) -> None:
        """Count the bytes the C turn copied for `connection` (and call it active now)."""
        moved = self.moved
        for d in (connection.up, connection.down):
            if d.src < len(moved):
                n = moved[d.src]
                if n:
                    moved[d.src] = 0
                    connection._count(d, n)
                    connection.last = self.now

    def unpeer(self, connection: _Connection) -> None:
        """Before `connection`'s sockets leave the loop: count what the C turn copied, stop it
        copying from descriptors that another connection may get next, and have the rest of
        this batch's events about them dropped (`departed`)."""
        self.fold(connection)
        peers = self.peers
        for fd in (connection.cfd, connection.tfd):
            self.departed.add(fd)
            if fd < len(peers):
                peers[fd] = -1

    def _grow(self, fd: int) -> None:
        size = len(self.peers)
        while size <= fd:
            size *= 2
        self.peers.extend(array.array("i", [-1]) * (size - len(self.peers)))
        self.moved.extend(array.array("q", [0]) * (size - len(self.moved)))

    def _copy_quick(self, d: _Direction, mask: int) -> bool:
        """The common event of a copying connection, handled here rather than in `pump`.

        Taken when `d` reads the event's socket, copies, holds nothing, has not seen EOF, the
        opposite direction holds nothing for this socket, and the event is a plain readable
        and/or writable edge; the connection is relaying (`readers` holds only such). It does
        what `pump(d, eager=False)` does on that path: one read, one write, hold what the
        write leaves. False (nothing done) where any of that is not so: `on_event` decides.
        """
        if mask & _HANGUP or not d.copying or d.held or d.pending or d.eof:
            return False
        other = d.other
        if other.held or other.pending:
            return False
        if not mask & _IN:
            return True  # a writable edge and nothing to write
        connection = d.connection
        try:
            n = d.recv_into(self.buffer)
        except BlockingIOError:
            return True
        except OSError:
            connection.reset(Event.CLIENT_RESET if d.upward else Event.TARGET_RESET)
            return True
        if n == 0 or n == COPY_BUFFER:
            # EOF, or a full buffer (bulk): `pump` passes it on and decides what follows.
            self._pass_on(d, n)
            return True
        connection.last = self.now
        try:
            sent = d.send(self.view[:n])
        except BlockingIOError:
            sent = 0
        except OSError:
            connection.reset(Event.TARGET_RESET if d.upward else Event.CLIENT_RESET)
            return True
        connection._count(d, sent)
        if sent < n:
            d.held = bytes(self.view[sent:n])  # EPOLLOUT of dst brings `on_event` back
        return True

    def _pass_on(self, d: _Direction, n: int) -> None:
        """Hand what `_copy_quick` read (n bytes in the buffer; 0: EOF) to `pump`."""
        if n == 0:
            d.eof = True
        else:
            d.held = bytes(self.view[:n])  # sent first by pump, in order
            d.copying = self.copy == "always"
        d.connection.pump(d, True)

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
        for listener in list(self.listeners.values()):
            # A slot another loop freed while this listener was about to pause is found here.
            listener.slot_freed()

    def _release(self) -> None:
        self._released = True
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        self._not_listening.set()
        self.pipes.close()
        self.epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.drained.set()
