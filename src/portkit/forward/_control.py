"""Talking to a running forwarder: its control socket, and systemd's notify socket.

Each forwarder listens on a Unix socket `forward-<pid>.sock` in the runtime directory and
answers `stats` with a JSON document; `portkit forward --stats` asks every forwarder it
finds there. The runtime directory is $PORTKIT_RUNTIME_DIR, else systemd's
$RUNTIME_DIRECTORY, else /run/portkit for root, else $XDG_RUNTIME_DIR/portkit, else
/tmp/portkit-<uid>: `runtime_dir` works that out from the environment it is given (the CLI
gives it its own), and the forwarder is given the directory and systemd's notify address
as options; nothing here reads the process's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from portkit.errors import PortkitError


def runtime_dir(environ: Mapping[str, str]) -> Path:
    """Where forwarders put their control sockets, for a process with environment `environ`."""
    for variable in ("PORTKIT_RUNTIME_DIR", "RUNTIME_DIRECTORY"):
        value = environ.get(variable, "").split(":")[0]
        if value:
            return Path(value)
    if os.geteuid() == 0:
        return Path("/run/portkit")
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "portkit"
    return Path(f"/tmp/portkit-{os.getuid()}")


def control_path(directory: Path, pid: int | None = None) -> Path:
    return directory / f"forward-{pid or os.getpid()}.sock"


class ControlServer:
    """Serves `stats` requests on the control socket; a Protocol, like the data path."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], directory: Path) -> None:
        self.snapshot = snapshot
        self.path = control_path(directory)
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> Path | None:
        """Start serving; None (and no socket) when the runtime directory is not writable."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            loop = asyncio.get_running_loop()
            self.server = await loop.create_unix_server(
                lambda: _ControlProtocol(self.snapshot), str(self.path)
            )
        except OSError:
            return None
        return self.path

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(OSError):
                self.path.unlink()


class _ControlProtocol(asyncio.Protocol):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer or self.transport is None:
            if len(self.buffer) > 1024 and self.transport is not None:
                self.transport.close()
            return
        command = self.buffer.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        if command == "stats":
            reply: dict[str, Any] = self.snapshot()
        else:
            reply = {"error": f"unknown command {command!r}; expected 'stats'"}
        self.transport.write(json.dumps(reply).encode() + b"\n")
        self.transport.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def query_stats(directory: Path, pid: int | None = None, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Stats of every forwarder (or of `pid`) with a control socket in `directory`
    (`runtime_dir(os.environ)` for the forwarders that `portkit forward` started)."""
    paths = [control_path(directory, pid)] if pid else sorted(directory.glob("forward-*.sock"))
    found: list[dict[str, Any]] = []
    for path in paths:
        owner = int(path.stem.partition("-")[2] or 0)
        if not path.exists():
            if pid:
                raise PortkitError(f"no forwarder with pid {pid} has a control socket in {directory}")
            continue
        if not _alive(owner):
            with contextlib.suppress(OSError):
                path.unlink()  # left behind by a forwarder that was killed
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                s.sendall(b"stats\n")
                chunks = []
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            found.append(json.loads(b"".join(chunks)))
        except (OSError, ValueError) as exc:
            if pid:
                raise PortkitError(f"cannot read the stats of forwarder {pid} at {path}: {exc}") from None
    return found


def sd_notify(address: str | None, state: str) -> bool:
    """Tell systemd about our state (READY=1, RELOADING=1, STOPPING=1) when run as Type=notify;
    `address` is what systemd put in $NOTIFY_SOCKET (None or "" when not run so)."""
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), address)
    except OSError:
        return False
    return True
