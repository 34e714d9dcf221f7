"""UDP forwarding: several clients at once, every datagram back to its own sender."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fixtures_forward import forwarder


class UdpEcho:
    """Echoes each datagram to whoever sent it (which, behind the forwarder, is its upstream socket)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for a burst of datagrams from all clients (SO_RCVBUFFORCE needs root).
        for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
                break
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sources: set[tuple[str, int]] = set()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(65535)
                self.sources.add(source)
                self.sock.sendto(data, source)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def _stats(tmp_path: Path, pid: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "portkit", "forward", "--stats", "--pid", str(pid), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PORTKIT_RUNTIME_DIR": str(tmp_path / "run")},
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["forwarders"][0]["rules"][0]


def test_several_clients_each_get_their_own_datagrams_back(tmp_path: Path) -> None:
    echo = UdpEcho()
    try:
        with forwarder("127.0.0.1:0", echo.address, "--udp", tmp_path=tmp_path) as fwd:
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
            for c in clients:
                c.bind(("127.0.0.1", 0))
                c.settimeout(0.3)
            sent: dict[int, set[bytes]] = {i: set() for i in range(len(clients))}
            for round_ in range(40):  # interleaved: all clients in flight at once
                for i, c in enumerate(clients):
                    payload = f"client {i} datagram {round_} ".encode() + os.urandom(round_ * 37)
                    sent[i].add(payload)
                    c.sendto(payload, ("127.0.0.1", fwd.port))
            got: dict[int, set[bytes]] = {i: set() for i in range(len(clients))}
            for i, c in enumerate(clients):
                deadline = time.monotonic() + 5
                while len(got[i]) < len(sent[i]) and time.monotonic() < deadline:
                    try:
                        got[i].add(c.recv(65535))
                    except TimeoutError:
                        # UDP may drop under load; resend what is missing, never accept strangers'.
                        for payload in sent[i] - got[i]:
                            c.sendto(payload, ("127.0.0.1", fwd.port))
            for i in sent:
                assert got[i] == sent[i], (
                    f"client {i}: {len(sent[i] - got[i])} missing, {len(got[i] - sent[i])} foreign"
                )
            assert len(echo.sources) == len(clients)  # one upstream socket per client
            stats = _stats(tmp_path, fwd.pid)
            assert stats["active"] == len(clients) and stats["total"] == len(clients)
            for c in clients:
                c.close()
    finally:
        echo.close()


def test_empty_datagram_stays_empty(tmp_path: Path) -> None:
    echo = UdpEcho()
    try:
        with (
            forwarder("127.0.0.1:0", echo.address, "--udp", tmp_path=tmp_path) as fwd,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c,
        ):
            c.settimeout(2)
            c.sendto(b"", ("127.0.0.1", fwd.port))
            assert c.recvfrom(100)[0] == b""
            c.sendto(b"after", ("127.0.0.1", fwd.port))
            assert c.recvfrom(100)[0] == b"after"
    finally:
        echo.close()


def test_idle_mappings_expire_and_table_is_bounded(tmp_path: Path) -> None:
    echo = UdpEcho()
    try:
        with forwarder(
            "127.0.0.1:0",
            echo.address,
            "--udp",
            "--udp-idle-timeout",
            "0.5",
            "--udp-max-clients",
            "3",
            tmp_path=tmp_path,
        ) as fwd:
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
            for c in clients:
                c.settimeout(2)
                c.sendto(b"hi", ("127.0.0.1", fwd.port))
                assert c.recv(10) == b"hi"  # the newest client is always served
            stats = _stats(tmp_path, fwd.pid)
            assert stats["active"] == 3 and stats["total"] == 5 and stats["refused_limit"] == 2
            assert len(fwd.events("udp-evict")) == 2
            fwd.wait_event("udp-expire", timeout=3)
            deadline = time.monotonic() + 3
            while _stats(tmp_path, fwd.pid)["active"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _stats(tmp_path, fwd.pid)["active"] == 0
            for c in clients:
                c.close()
    finally:
        echo.close()


def test_udp_allow_list_drops_other_sources(tmp_path: Path) -> None:
    echo = UdpEcho()
    try:
        with forwarder(
            "127.0.0.1:0", echo.address, "--udp", "--allow", "127.0.0.1", tmp_path=tmp_path
        ) as fwd:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.bind(("127.0.0.2", 0))
                stranger.settimeout(0.3)
                stranger.sendto(b"let me in", ("127.0.0.1", fwd.port))
                assert fwd.wait_event("refuse")["reason"] == "allow-list"
            assert not echo.sources
    finally:
        echo.close()
