"""A home network of namespaces: an outside host, a NAT router, and LAN hosts behind it.

    outside (203.0.113.2/24)  --veth--  wan0 (203.0.113.1/24) [router] br-lan (192.168.77.1/24)
                                                                  |-- lan host 1 (192.168.77.10)
                                                                  |-- lan host 2 (192.168.77.11) ...

The router forwards (its own `net.ipv4.ip_forward=1`, a per-namespace sysctl) and masquerades
LAN traffic leaving by `wan0` (an nftables table `ip home`, chain `postrouting`); it forwards
nothing from outside in until a test adds a DNAT rule or a UPnP/NAT-PMP/PCP daemon does. The
outside host knows only its WAN subnet: it reaches the LAN only through a forward. LAN hosts
route by the router, and their LAN is one bridge (`br-lan`) in the router's namespace, so a
daemon on the router listens on one interface and multicast (SSDP) reaches every LAN host.

The WAN side is TEST-NET-3 (203.0.113.0/24) unless the spec names another subnet, the LAN an
RFC 1918 subnet; both exist only inside the lab's namespaces. miniupnpd refuses to map ports
while its external address is private or reserved (RFC 1918, the TEST-NETs, CGNAT...): a lab
for it takes a `wan_subnet` outside those, which is safe because the lab's namespaces have no
route out of them. Every namespace name carries a suffix unique to this lab (process
id and random digits); `down()` kills what the lab started and deletes every namespace, which
removes every link, address and nftables/iptables rule inside it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError, UsageError
from portkit.model import Protocol
from portkit.testing import _netns
from portkit.testing._lab import _stop_processes, _wait_ready
from portkit.testing._netns import LabNamespace
from portkit.testing._spec import LabHost

OUTSIDE = "outside"
ROUTER = "router"
WAN_IFACE = "wan0"
LAN_IFACE = "br-lan"
WAN_SUBNET = "203.0.113.0/24"
LAN_SUBNET = "192.168.77.0/24"


@dataclass(frozen=True)
class HomeSpec:
    """A home network: `lan` hosts (with their listeners) behind one NAT router.

    LAN hosts get .10, .11, ... of `LAN_SUBNET` in order; `masquerade=False` leaves the router
    without its source NAT (a router that only routes). The router's WAN address is .1 of
    `wan_subnet`, the outside host's .2.
    """

    lan: tuple[LabHost, ...] = (LabHost.tcp("server", 8080),)
    prefix: str = "pkhome"
    masquerade: bool = True
    wan_subnet: str = WAN_SUBNET

    def __post_init__(self) -> None:
        names = [h.name for h in self.lan]
        if len(set(names)) != len(names) or {OUTSIDE, ROUTER} & set(names):
            raise UsageError(f"invalid home lab hosts {names}: names must be unique, not {OUTSIDE}/{ROUTER}")
        if not self.prefix.isalnum() or len(self.prefix) > 6:
            raise UsageError(f"invalid lab prefix {self.prefix!r}: 1-6 letters or digits")
        if len(self.lan) > 200:
            raise UsageError(f"home lab has {len(self.lan)} LAN hosts: at most 200")
        try:
            wan = ipaddress.ip_network(self.wan_subnet)
        except ValueError:
            wan = None
        if (
            wan is None
            or wan.version != 4
            or wan.num_addresses < 4
            or wan.overlaps(ipaddress.ip_network(LAN_SUBNET))
        ):
            raise UsageError(
                f"invalid wan_subnet {self.wan_subnet!r}: an IPv4 subnet of 4+ addresses, not the LAN's"
            )


class HomeLab:
    """A running home network; `with HomeLab(HomeSpec(...)) as home:`.

    Hosts are named `outside`, `router` and the LAN hosts' names. `home.netns(host)` is a
    namespace name, `home.run(host, argv)` / `home.popen(host, argv)` run a tool there,
    `with home.inside(host):` moves this thread in; `home.wan_address` is the router's public
    address, `home.address(host)` any host's own address. `home.echo_server(host, port)` starts
    a real echo service, `home.exchange(host, address, port, data)` sends data from a host and
    returns what came back: an end-to-end transfer through whatever NAT is in between.
    """

    def __init__(self, spec: HomeSpec | None = None) -> None:
        self.spec = spec or HomeSpec()
        self.tag = _netns.unique_name(self.spec.prefix)
        self._namespaces: list[LabNamespace] = []
        self._procs: list[subprocess.Popen[Any]] = []

    # -- names and addresses -------------------------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        return (OUTSIDE, ROUTER, *(h.name for h in self.spec.lan))

    def netns(self, host: str) -> str:
        if host not in self.hosts:
            raise UsageError(f"unknown home lab host {host!r}: expected one of {', '.join(self.hosts)}")
        return f"{self.tag}-{host}"

    @property
    def wan_address(self) -> str:
        """The router's public (WAN) address: what the outside host connects to."""
        return str(ipaddress.ip_network(self.spec.wan_subnet)[1])

    @property
    def outside_address(self) -> str:
        return str(ipaddress.ip_network(self.spec.wan_subnet)[2])

    @property
    def lan_gateway(self) -> str:
        """The router's LAN address (the LAN hosts' default route)."""
        return str(ipaddress.ip_network(LAN_SUBNET)[1])

    def address(self, host: str) -> str:
        """A host's own IPv4 address (the router's is its WAN address)."""
        if host == OUTSIDE:
            return self.outside_address
        if host == ROUTER:
            return self.wan_address
        names = [h.name for h in self.spec.lan]
        if host not in names:
            self.netns(host)  # raises the UsageError naming the hosts
        return str(ipaddress.ip_network(LAN_SUBNET)[10 + names.index(host)])

    # -- running things ------------------------------------------------------------------

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def run(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command inside `host` and wait for it (kwargs go to subprocess.run; no check)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(host, argv), check=False, **kwargs)

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside `host`; the lab stops it on teardown."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.command(host, argv), **kwargs)
        self._procs.append(proc)
        return proc

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run the body (this thread only) inside `host`'s namespace."""
        with _netns.inside(self.netns(host)):
            yield

    def echo_server(self, host: str, port: int, protocol: Protocol = Protocol.TCP) -> subprocess.Popen[Any]:
        """Start a socat echo service on `port` in `host` (IPv4 and IPv6); return once it is bound."""
        tcp = protocol is Protocol.TCP
        listen = f"{'TCP6-LISTEN' if tcp else 'UDP6-RECVFROM'}:{port},ipv6only=0,reuseaddr,fork"
        proc = self.popen(host, ["socat", listen, "PIPE"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            flag = "-tln" if tcp else "-uln"
            out = self.run(host, ["ss", "-H", flag, f"sport = :{port}"]).stdout
            if out.strip():
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise PortkitError(f"home lab: echo server on {host}:{port}/{protocol.value} did not start")

    def exchange(
        self, host: str, address: str, port: int, payload: bytes, protocol: Protocol = Protocol.TCP
    ) -> bytes:
        """Send `payload` from `host` to `address:port` and return what came back (b"" on failure).

        TCP connects (3 s timeout), writes, half-closes and reads to the end; UDP sends one
        datagram and reads the replies for one second.
        """
        peer = f"[{address}]" if ":" in address else address
        tcp = protocol is Protocol.TCP
        target = f"TCP:{peer}:{port},connect-timeout=3" if tcp else f"UDP:{peer}:{port}"
        proc = subprocess.run(
            self.command(host, ["socat", "-t1", "-T3", "-", target]),
            input=payload, capture_output=True, check=False, timeout=20,
        )  # fmt: skip
        return proc.stdout if proc.returncode == 0 else b""

    def nft(self, host: str, ruleset: str) -> None:
        """Load nftables text into `host` (`nft -f -`), raising with nft's message on failure."""
        _netns._run(self.command(host, ["nft", "-f", "-"]), stdin=ruleset)

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> HomeLab:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> None:
        import os

        if os.geteuid() != 0:
            raise PermissionNeeded("the home lab needs root (network namespaces, veth, nftables)")
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        _stop_processes(self._procs)
        for ns in reversed(self._namespaces):
            ns.close()
        self._namespaces.clear()

    def _namespace(self, host: str) -> LabNamespace:
        ns = LabNamespace.named(self.netns(host))
        self._namespaces.append(ns)
        return ns.open()

    def _build(self) -> None:
        wan_bits = ipaddress.ip_network(self.spec.wan_subnet).prefixlen
        lan_bits = ipaddress.ip_network(LAN_SUBNET).prefixlen
        router = self._namespace(ROUTER)
        outside = self._namespace(OUTSIDE)
        _netns.connect(
            router, WAN_IFACE, [f"{self.wan_address}/{wan_bits}"], outside, "eth0",
            [f"{self.outside_address}/{wan_bits}"],
        )  # fmt: skip
        router.ip(
            "-batch",
            "-",
            stdin=f"link add {LAN_IFACE} type bridge\nlink set {LAN_IFACE} up\n"
            f"addr add {self.lan_gateway}/{lan_bits} dev {LAN_IFACE}\n"
            # The outside host is the router's "internet": its default route.
            f"route add default via {self.outside_address} dev {WAN_IFACE}\n",
        )
        router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if self.spec.masquerade:
            router.nft(
                "table ip home {\n  chain postrouting {\n"
                "    type nat hook postrouting priority srcnat; policy accept;\n"
                f'    oifname "{WAN_IFACE}" masquerade\n  }}\n}}\n'
            )
        for index, host in enumerate(self.spec.lan):
            ns = self._namespace(host.name)
            port = f"lan{index}"
            _netns._run(
                ["ip", "link", "add", port, "netns", router.name, "type", "veth", "peer", "name", "eth0",
                 "netns", ns.name]
            )  # fmt: skip
            router.ip("link", "set", port, "master", LAN_IFACE, "up")
            ns.ip(
                "-batch",
                "-",
                stdin=f"addr add {self.address(host.name)}/{lan_bits} dev eth0\nlink set eth0 up\n"
                f"route add default via {self.lan_gateway} dev eth0\n",
            )
            if host.listeners:
                spec = [[x.port, x.protocol.value, x.banner.hex(), x.reply.value] for x in host.listeners]
                agent = self.popen(
                    host.name,
                    [sys.executable, "-m", "portkit.testing._agent", json.dumps(spec)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                _wait_ready(agent, f"listeners on {host.name}")


@contextlib.contextmanager
def home_lab(spec: HomeSpec | None = None) -> Iterator[HomeLab]:
    """`with home_lab(spec) as home:` brings the home network up and always tears it down."""
    running = HomeLab(spec)
    running.up()
    try:
        yield running
    finally:
        running.down()
