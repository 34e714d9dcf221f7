"""Fixtures for the socket inventory tests: sockets the tests own, namespaces, and `ss` as the oracle."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from portkit.testing import LabNamespace

# One row as both tools show it: the fields the test compares.
Row = tuple[str, str, str, int, str, int, int, int, int, int]


def _split_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.split("%", 1)[0]  # a bound device prints as 127.0.0.1%lo
    if host.startswith("["):
        host = host[1:-1]
    if host == "*":
        host = "0.0.0.0"
    return host, 0 if port == "*" else int(port)


_SS_STATE_LABELS = {"established": "ESTAB", "time-wait": "TIME-WAIT", "listening": "LISTEN"}


def ss_rows(*filter_words: str, netns: str | None = None, protos: str = "tu") -> set[Row]:
    """`ss -H -an -e` for tcp and udp, parsed into Rows (proto, state, endpoints, queues, uid, inode)."""
    cmd = ["ss", "-H", "-n", "-a", "-e", f"-{protos}", *filter_words]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows: set[Row] = set()
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] not in ("tcp", "udp"):
            parts.insert(0, "tcp" if protos == "t" else "udp")
        if parts[1].isdigit():  # `ss state X` drops the State column
            parts.insert(1, _SS_STATE_LABELS[filter_words[filter_words.index("state") + 1]])
        proto, state, recv_q, send_q, local, peer, *extra = parts
        info = dict(item.split(":", 1) for item in extra if ":" in item and not item.startswith("timer"))
        local_addr, local_port = _split_endpoint(local)
        peer_addr, peer_port = _split_endpoint(peer)
        rows.add(
            (
                proto,
                state,
                local_addr,
                local_port,
                peer_addr,
                peer_port,
                int(recv_q),
                int(send_q),
                int(info.get("uid", 0)),
                int(info.get("ino", 0)),
            )
        )
    return rows


def portkit_rows(document: dict[str, Any]) -> set[Row]:
    """The same Rows from `portkit ls --json`."""
    return {
        (
            s["protocol"],
            s["state"],
            s["local"]["address"],
            s["local"]["port"],
            s["remote"]["address"],
            s["remote"]["port"],
            s["recv_q"],
            s["send_q"],
            s["uid"],
            s["inode"],
        )
        for s in document["sockets"]
    }


def port_filter(ports: list[int]) -> list[str]:
    """An ss filter matching either side on any of `ports`."""
    words: list[str] = []
    for port in ports:
        if words:
            words.append("or")
        words += ["(", "sport", "=", f":{port}", "or", "dport", "=", f":{port}", ")"]
    return words


@dataclass
class Scene:
    """Sockets a test opened on loopback: listeners, connections in several states, UDP."""

    sockets: list[socket.socket] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)

    own: set[int] = field(default_factory=set)

    def keep(self, *socks: socket.socket) -> None:
        self.sockets.extend(socks)
        self.own.update(s.getsockname()[1] for s in socks)

    def owns(self, local_port: int, remote_port: int) -> bool:
        """Whether a row is one of the scene's sockets: other programs' ephemeral ports can
        match a scene port by chance, and their sockets come and go between two readings."""
        return local_port in self.own and (remote_port in self.own or remote_port in (0, 9))

    def mine(self, rows: set[Row]) -> set[Row]:
        return {row for row in rows if self.owns(row[3], row[5])}

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _listener(family: int, address: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(16)
    return sock


def _pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    address = listener.getsockname()[:2]
    client = socket.create_connection(address, timeout=5)
    server, _ = listener.accept()
    return client, server


@contextmanager
def socket_scene() -> Iterator[Scene]:
    """tcp4/tcp6 listeners with established pairs (one with unread bytes), a TIME-WAIT, a
    FIN-WAIT-2/CLOSE-WAIT pair, udp4 unconnected and udp6 connected. All on loopback."""
    scene = Scene()
    try:
        l4 = _listener(socket.AF_INET, "127.0.0.1")
        l6 = _listener(socket.AF_INET6, "::1")
        scene.keep(l4, l6)
        c4, s4 = _pair(l4)
        c4.sendall(b"hello")  # 5 unread bytes: Recv-Q of s4
        c6, s6 = _pair(l6)
        scene.keep(c4, s4, c6, s6)
        # TIME-WAIT: the client closes first.
        tw_client, tw_server = _pair(l4)
        tw_port = tw_client.getsockname()[1]
        scene.own.update((tw_port, tw_server.getsockname()[1]))
        tw_client.close()
        tw_server.close()
        # FIN-WAIT-2 / CLOSE-WAIT: the server half-closes, the client never answers.
        hc_client, hc_server = _pair(l6)
        hc_server.shutdown(socket.SHUT_WR)
        scene.keep(hc_client, hc_server)
        u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u4.bind(("127.0.0.1", 0))
        u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u6.bind(("::1", 0))
        u6.connect(("::1", 9))  # connected UDP: ESTAB, nothing needs to answer
        scene.keep(u4, u6)
        scene.names = {
            "tcp4": l4.getsockname()[1],
            "tcp6": l6.getsockname()[1],
            "time_wait": tw_port,
            "udp4": u4.getsockname()[1],
            "udp6": u6.getsockname()[1],
        }
        scene.ports = sorted(set(scene.names.values()))
        time.sleep(0.2)  # let the FIN exchanges settle into TIME-WAIT and FIN-WAIT-2
        yield scene
    finally:
        scene.close()


@contextmanager
def named_netns() -> Iterator[str]:
    """A fresh portkit.testing namespace (loopback up); yields its name, deleted afterwards."""
    with LabNamespace("pk3") as ns:
        yield ns.name


LISTENER_CODE = r"""
import socket, sys
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
kind = socket.SOCK_DGRAM if sys.argv[2] == "udp" else socket.SOCK_STREAM
sock = socket.socket(family, kind)
sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
if kind == socket.SOCK_STREAM:
    sock.listen(8)
    peer = socket.create_connection(sock.getsockname()[:2])
    conn, _ = sock.accept()
print(sock.getsockname()[1], flush=True)
sys.stdin.read()
"""


@contextmanager
def listener_process(
    family: str = "4", proto: str = "tcp", netns: str | None = None, prefix: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child Python listening on loopback (with one connection to itself); yields (process, port)."""
    cmd = [sys.executable, "-c", LISTENER_CODE, family, proto]
    if prefix:  # e.g. setpriv: applied inside the namespace, after `ip netns exec` entered it
        cmd = [*prefix, *cmd]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip(), "the listener process did not start"
        yield proc, int(line)
    finally:
        proc.kill()
        proc.wait(timeout=10)
