"""Fixtures for the forwarder tests: a real `python -m portkit forward` process, and servers.

The forwarder always runs as a subprocess, as a user (or systemd) would run it; it prints a
JSON `ready` line with the ports it bound (rules listen on port 0) and logs JSON lines to a
file the test reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The splice engine relays on its epoll loop, copying small reads and splicing bulk ones, and
# hands bulk connections to relay threads; the variants pin each path down
# (PORTKIT_SPLICE_THREAD_AFTER: 0 = threads from the first byte, -1 = never;
# PORTKIT_SPLICE_COPY: never = every byte through a pipe, always = every byte copied), so the
# whole suite checks that the copy path and the splice path behave alike. The engine runs
# one epoll loop per CPU up to two (PORTKIT_FORWARD_LOOPS); splice-1loop pins one. Its loop
# turns run in C where _quickio is built; splice-pyturn keeps them in Python (PORTKIT_SPLICE_TURN).
ENGINES = (
    "splice", "splice-threads", "splice-loop", "splice-pipe", "splice-copy", "splice-1loop", "splice-pyturn",
    "asyncio",
)  # fmt: skip
LOOP_ONLY = ("splice-loop", "splice-pipe", "splice-copy")  # no relay threads
_VARIANTS = {
    "splice-1loop": {"PORTKIT_FORWARD_LOOPS": "1"},
    "splice-pyturn": {"PORTKIT_SPLICE_TURN": "python"},
    "splice-threads": {"PORTKIT_SPLICE_THREAD_AFTER": "0"},
    "splice-loop": {"PORTKIT_SPLICE_THREAD_AFTER": "-1"},
    "splice-pipe": {"PORTKIT_SPLICE_THREAD_AFTER": "-1", "PORTKIT_SPLICE_COPY": "never"},
    "splice-copy": {"PORTKIT_SPLICE_THREAD_AFTER": "-1", "PORTKIT_SPLICE_COPY": "always"},
}


def splice_loops(engine: str) -> int:
    """How many epoll loops the forwarder of `engine` (a variant name) runs."""
    if engine == "asyncio":
        return 1
    pinned = _VARIANTS.get(engine, {}).get("PORTKIT_FORWARD_LOOPS")
    return int(pinned) if pinned else min(len(os.sched_getaffinity(0)), 2)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Forwarder:
    """A running forwarder process."""

    def __init__(self, proc: subprocess.Popen[str], log_path: Path, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.log_path = log_path
        self.ready = ready
        self.ports = [r["bound"]["port"] for r in ready["rules"]]
        self.port = self.ports[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e["event"] == name]

    def wait_event(
        self, name: str, where: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(name):
                if where(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(
            f"no {name!r} event within {timeout}s; log:\n{self.log_path.read_text()[-3000:]}"
        )

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def forwarder(
    *args: str,
    tmp_path: Path,
    engine: str = "splice",
    timeout: float = 10.0,
    env: dict[str, str] | None = None,
) -> Iterator[Forwarder]:
    """Run `portkit forward ARGS --engine ENGINE --json --log-json`; always killed afterwards."""
    log_path = tmp_path / f"forward-{time.monotonic_ns()}.log"
    env = {**os.environ, "PORTKIT_RUNTIME_DIR": str(tmp_path / "run"), **(env or {})}
    if engine in _VARIANTS:
        env.update(_VARIANTS[engine])
        engine = "splice"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "portkit", "forward", *args, "--engine", engine, "--json", "--log-json"],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    try:
        assert proc.stdout is not None
        ready_line = _readline(proc, timeout)
        if not ready_line:
            raise AssertionError(f"forwarder did not start: {log_path.read_text()}")
        running = Forwarder(proc, log_path, json.loads(ready_line))
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


class TcpServer:
    """A threaded TCP server on 127.0.0.1 running `handler(conn)` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None], host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.handler = handler
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handler(conn)
        except OSError as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def echo_until_eof(conn: socket.socket) -> None:
    """Echo everything, then pass the EOF on (the half-close a good forwarder must keep)."""
    conn.settimeout(20)
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def recv_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def assert_reset(port: int, source: str = "127.0.0.1") -> None:
    """Connecting to `port` ends in a reset: during connect() itself (the RST can beat the
    handshake's end on loopback) or at the first read."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as client:
            client.recv(100)
    except ConnectionResetError:
        return
    raise AssertionError(f"connection to port {port} from {source} was not reset")


def closed_port() -> tuple[socket.socket, int]:
    """A port that refuses connections, held (bound, not listening) so nobody else takes it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    return holder, holder.getsockname()[1]
