"""A home network with a real miniupnpd on its router, for `portkit nat map/unmap/router` tests.

Three namespaces: `outside` (a host on the internet side), `router` (WAN and LAN veths,
masquerading LAN traffic out of the WAN, a forward policy of drop except replies, LAN-to-WAN
traffic and what miniupnpd's chain accepts) and `lan` (a host behind it whose default route is
the router). miniupnpd (Debian's miniupnpd-nftables) runs inside the router with a config this
fixture writes, serving UPnP-IGD, NAT-PMP and PCP on the LAN side only.

The WAN subnet is 11.250.42.0/24: miniupnpd refuses to forward when its external address is
private or reserved (it checks RFC 1918, RFC 5737 TEST-NETs, CGNAT and more), so the WAN needs
an address outside all of those. Nothing routes it out of the lab: the namespaces are joined only
to each other, and none has a link to the host's namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from portkit.testing import LabNamespace, connect

MINIUPNPD = "/usr/sbin/miniupnpd"
WAN_OUTSIDE = "11.250.42.1"
WAN_ROUTER = "11.250.42.2"
LAN_ROUTER = "192.168.77.1"
LAN_HOST = "192.168.77.10"
# Short enough for a lease-expiry test; miniupnpd applies these to PCP and NAT-PMP lifetimes.
MIN_LIFETIME = 2
MAX_LIFETIME = 86400


def _router_ruleset(table: str) -> str:
    """The router's firewall: masquerade out of the WAN; forward only replies, LAN to WAN and what
    miniupnpd's own chain accepts; the chains miniupnpd fills (it adds rules, never chains)."""
    return f"""
table inet {table} {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
        oifname "wan0" masquerade
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


def _miniupnpd_config(table: str, lease_file: Path) -> str:
    return f"""ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=no
notify_interval=60
clean_ruleset_interval=600
min_lifetime={MIN_LIFETIME}
max_lifetime={MAX_LIFETIME}
uuid=6b1e4f0c-8d2a-4c55-9a37-{os.getpid():012d}
upnp_table_name={table}
upnp_nat_table_name={table}
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
lease_file={lease_file}
allow 1024-65535 192.168.77.0/24 1-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


@dataclass
class HomeLab:
    outside: LabNamespace
    router: LabNamespace
    lan: LabNamespace
    table: str
    workdir: Path
    daemon: subprocess.Popen[bytes]

    def portkit(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `portkit ARGS` inside the LAN host, as a user behind the router would."""
        return self.lan.run([*_portkit(), *args], timeout=timeout)

    def ruleset(self) -> str:
        return str(self.router.run(["nft", "list", "table", "inet", self.table]).stdout)

    def log(self) -> str:
        return (self.workdir / "miniupnpd.log").read_text(errors="replace")


def _portkit() -> list[str]:
    import sys

    return [sys.executable, "-m", "portkit"]


def _wait_for_port(ns: LabNamespace, port: int, kind: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        listing = ns.run(["ss", "-H", f"-ln{kind}", f"sport = :{port}"]).stdout
        if listing.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {kind} port {port} in {ns}")


@contextlib.contextmanager
def home_lab() -> Iterator[HomeLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, miniupnpd)")
    if not os.access(MINIUPNPD, os.X_OK):
        pytest.skip(
            f"{MINIUPNPD} is not installed (Debian package miniupnpd-nftables; scripts/install.sh --test)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="pk-homelab-"))
    with LabNamespace("pkout") as outside, LabNamespace("pkrtr") as router, LabNamespace("pklan") as lan:
        connect(outside, "wan0", [f"{WAN_OUTSIDE}/24"], router, "wan0", [f"{WAN_ROUTER}/24"])
        connect(router, "lan0", [f"{LAN_ROUTER}/24"], lan, "eth0", [f"{LAN_HOST}/24"])
        lan.ip("route", "add", "default", "via", LAN_ROUTER)
        router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # The outside host sends replies back to the WAN address it was reached at; it has no
        # route to the LAN (a mapping, not routing, must carry the traffic in).
        table = f"pkupnp{os.getpid()}{os.urandom(2).hex()}"
        router.nft(_router_ruleset(table))
        config = workdir / "miniupnpd.conf"
        config.write_text(_miniupnpd_config(table, workdir / "leases"))
        log = (workdir / "miniupnpd.log").open("wb")
        daemon = subprocess.Popen(
            router.command([MINIUPNPD, "-f", str(config), "-d", "-P", str(workdir / "miniupnpd.pid")]),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        lab = HomeLab(outside, router, lan, table, workdir, daemon)
        try:
            deadline = time.monotonic() + 10
            _wait_for_port(router, 5351, "u", deadline)
            _wait_for_port(router, 1900, "u", deadline)
            yield lab
        finally:
            # `ip netns exec` execs miniupnpd, so this pid is the daemon's own.
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log.close()
            router.run(["nft", "delete", "table", "inet", table])
            shutil.rmtree(workdir, ignore_errors=True)


class EchoService:
    """A TCP or UDP echo server on the LAN host (run in a thread inside its namespace)."""

    def __init__(self, lan: LabNamespace, port: int, udp: bool = False) -> None:
        self.port = port
        self.udp = udp
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(lan,), daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("echo service did not start")

    def _serve(self, lan: LabNamespace) -> None:
        with lan.inside():
            kind = socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM
            server = socket.socket(socket.AF_INET, kind)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", self.port))
        server.settimeout(0.2)
        if not self.udp:
            server.listen(8)
        self._ready.set()
        with server:
            while not self._stop.is_set():
                try:
                    if self.udp:
                        data, peer = server.recvfrom(65535)
                        server.sendto(data, peer)
                        continue
                    conn, _ = server.accept()
                except (TimeoutError, OSError):
                    continue
                with conn:
                    conn.settimeout(5)
                    with contextlib.suppress(OSError):
                        while chunk := conn.recv(65536):
                            conn.sendall(chunk)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def exchange_from_outside(lab: HomeLab, port: int, payload: bytes, udp: bool = False) -> bytes:
    """Send `payload` from the outside host to the router's WAN address:port; what comes back."""
    with lab.outside.inside():
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_INET, kind)
    with sock:
        sock.settimeout(3)
        sock.connect((WAN_ROUTER, port))
        if udp:
            sock.send(payload)
            return sock.recv(65535)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)
