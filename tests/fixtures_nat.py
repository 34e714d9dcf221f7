"""The home network of `portkit.testing` with a real miniupnpd on its router, for the
`portkit nat map/unmap/router` tests.

`portkit.testing.HomeLab` gives the `outside` host, the masquerading `router` (WAN `wan0`, LAN
bridge `br-lan`) and a LAN host `desk`. Here the router also gets a forward policy of drop
except replies, LAN-to-WAN traffic and what miniupnpd's chain accepts, and miniupnpd itself
(Debian's miniupnpd-nftables) with a config this fixture writes, serving UPnP-IGD, NAT-PMP and
PCP on the LAN bridge only; it is stopped by its pid and its nftables table deleted.

The WAN is 11.250.42.0/24 instead of the lab's TEST-NET-3: miniupnpd refuses to forward when
its external address is private or reserved ("Reserved / private IP address ... Port forwarding
is impossible"; it checks RFC 1918, the RFC 5737 TEST-NETs, CGNAT space and more), so the WAN
needs an address outside all of those. Nothing routes it out of the lab: the namespaces are
joined only to each other, and none has a link to the host's namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portkit.model import Protocol
from portkit.testing import HomeLab, HomeSpec, LabHost

MINIUPNPD = "/usr/sbin/miniupnpd"
WAN_OUTSIDE = "11.250.42.2"
WAN_ROUTER = "11.250.42.1"
LAN_ROUTER = "192.168.77.1"
LAN_HOST = "192.168.77.10"
DESK = "desk"
# Short enough for a lease-expiry test; miniupnpd applies these to PCP and NAT-PMP lifetimes.
MIN_LIFETIME = 2
MAX_LIFETIME = 86400


class PublicWanHome(HomeLab):
    """The home lab with a WAN address miniupnpd accepts as public (see the module docstring)."""

    @property
    def wan_address(self) -> str:
        return WAN_ROUTER

    @property
    def outside_address(self) -> str:
        return WAN_OUTSIDE


@dataclass
class Host:
    """One host of the home lab, as the tests drive it."""

    home: HomeLab
    name: str

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return self.home.run(self.name, argv, **kwargs)

    def command(self, argv: list[str]) -> list[str]:
        return self.home.command(self.name, argv)

    def inside(self) -> contextlib.AbstractContextManager[None]:
        return self.home.inside(self.name)


def _router_ruleset(table: str) -> str:
    """The router's forward policy (the lab's own `ip home` table masquerades): only replies, LAN
    to WAN and what miniupnpd's chain accepts; and the chains miniupnpd fills (it adds rules, not
    chains)."""
    return f"""
table inet {table} {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "br-lan" oifname "wan0" accept
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
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


def _miniupnpd_config(table: str, lease_file: Path) -> str:
    return f"""ext_ifname=wan0
listening_ip=br-lan
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
class UpnpHome:
    """The running lab: its hosts, the miniupnpd table's name, the daemon and its files."""

    home: HomeLab
    table: str
    workdir: Path
    daemon: subprocess.Popen[bytes]

    @property
    def outside(self) -> Host:
        return Host(self.home, "outside")

    @property
    def router(self) -> Host:
        return Host(self.home, "router")

    @property
    def lan(self) -> Host:
        return Host(self.home, DESK)

    def portkit(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `portkit ARGS` on the LAN host, as a user behind the router would."""
        return self.lan.run([*portkit_argv(), *args], timeout=timeout)

    def ruleset(self) -> str:
        return str(self.router.run(["nft", "list", "table", "inet", self.table]).stdout)

    def log(self) -> str:
        return (self.workdir / "miniupnpd.log").read_text(errors="replace")

    def exchange(self, port: int, payload: bytes, udp: bool = False) -> bytes:
        """Send `payload` from the outside host to the router's WAN address:port; what came back
        (b"" when nothing did)."""
        protocol = Protocol.UDP if udp else Protocol.TCP
        return self.home.exchange("outside", WAN_ROUTER, port, payload, protocol)


def portkit_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "portkit"]


def _wait_for_port(host: Host, port: int, kind: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        listing = host.run(["ss", "-H", f"-ln{kind}", f"sport = :{port}"]).stdout
        if listing.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {kind} port {port} in {host.name}")


@contextlib.contextmanager
def upnp_home(echo_port: int) -> Iterator[UpnpHome]:
    """The home lab with miniupnpd on the router and TCP and UDP echo services on `echo_port` of
    the LAN host."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, miniupnpd)")
    if not os.access(MINIUPNPD, os.X_OK):
        pytest.skip(f"{MINIUPNPD} is missing (Debian package miniupnpd-nftables; scripts/install.sh --test)")
    workdir = Path(tempfile.mkdtemp(prefix="pk-upnphome-"))
    home = PublicWanHome(HomeSpec(lan=(LabHost(DESK),), prefix="pkupnp"))
    home.up()
    daemon: subprocess.Popen[bytes] | None = None
    table = f"pkupnp{os.getpid()}{os.urandom(2).hex()}"
    try:
        home.nft("router", _router_ruleset(table))
        config = workdir / "miniupnpd.conf"
        config.write_text(_miniupnpd_config(table, workdir / "leases"))
        with (workdir / "miniupnpd.log").open("wb") as log:
            # `ip netns exec` execs miniupnpd, so this pid is the daemon's own.
            daemon = subprocess.Popen(
                home.command("router", [MINIUPNPD, "-f", str(config), "-d", "-P", str(workdir / "pid")]),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        lab = UpnpHome(home, table, workdir, daemon)
        deadline = time.monotonic() + 10
        _wait_for_port(lab.router, 5351, "u", deadline)
        _wait_for_port(lab.router, 1900, "u", deadline)
        home.echo_server(DESK, echo_port)
        home.echo_server(DESK, echo_port, Protocol.UDP)
        yield lab
    finally:
        if daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        home.run("router", ["nft", "delete", "table", "inet", table])
        home.down()
        shutil.rmtree(workdir, ignore_errors=True)
