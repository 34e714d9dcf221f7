"""The lab's declarative spec: hosts, their listeners and firewall rules, and their links.

A spec is plain frozen data; `portkit.testing.Lab` turns it into namespaces, links and processes.
Addresses come from a documentation subnet (TEST-NET-2 by default) that exists only inside
the lab's namespaces: nothing on the host routes to it.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from portkit.errors import UsageError
from portkit.model import Protocol

DEFAULT_SUBNET = "198.51.100.0/24"
DEFAULT_SUBNET6 = "2001:db8:4b1::/64"
CLIENT = "client"


class LabAction(enum.Enum):
    """What a host's firewall does with packets to a port (nftables statements)."""

    ACCEPT = "accept"
    DROP = "drop"
    RESET = "reject with tcp reset"
    PORT_UNREACHABLE = "reject"  # inet family: ICMP(v6) port-unreachable
    ADMIN_PROHIBITED = "reject with icmpx admin-prohibited"

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


class LabReply(enum.Enum):
    """How a lab UDP responder answers a datagram."""

    ECHO = "echo"  # send the datagram back (an empty one too)
    SILENT = "silent"  # bound, never answers: open|filtered to a scanner


@dataclass(frozen=True)
class LabListener:
    """A TCP listener (accepts, sends `banner`, closes) or a UDP responder on one port."""

    port: int
    protocol: Protocol = Protocol.TCP
    banner: bytes = b""
    reply: LabReply = LabReply.ECHO


@dataclass(frozen=True)
class LabRule:
    """An nftables rule on a host's input: `action` for `protocol` packets to `port`."""

    port: int
    action: LabAction
    protocol: Protocol = Protocol.TCP

    def nft(self) -> str:
        return f"{self.protocol.value} dport {self.port} {self.action.value}"


@dataclass(frozen=True)
class LabLink:
    """The host's link to the lab bridge: a veth, or a userspace relay with delay and loss.

    `rtt_ms` is the round-trip time added (half on each way); `loss` is the probability that
    a frame is dropped, each way. `loss_budget` (0: unlimited) caps the frames lost per flow
    (one port of the host, both ways): loss that retransmission is sure to repair, so that
    scanners can be compared on a lossy link without comparing their luck.
    """

    rtt_ms: float = 0.0
    loss: float = 0.0
    loss_budget: int = 0

    @property
    def emulated(self) -> bool:
        return self.rtt_ms > 0 or self.loss > 0

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or not 0 <= self.loss < 1:
            raise UsageError(f"invalid link rtt={self.rtt_ms} loss={self.loss}: need rtt >= 0, 0 <= loss < 1")


@dataclass(frozen=True)
class LabHost:
    """One lab host: a network namespace with an address, listeners and a firewall."""

    name: str
    listeners: tuple[LabListener, ...] = ()
    rules: tuple[LabRule, ...] = ()
    link: LabLink = field(default_factory=LabLink)
    nft: str = ""  # extra nftables statements for the input chain, one per line

    @staticmethod
    def tcp(name: str, *ports: int, rules: tuple[LabRule, ...] = (), link: LabLink | None = None) -> LabHost:
        """A host with TCP listeners on `ports`."""
        return LabHost(name, tuple(LabListener(p) for p in ports), rules, link or LabLink())


@dataclass(frozen=True)
class LabSpec:
    """A whole lab. A `client` host (the scanner's seat) is always added first.

    `prefix` starts every namespace name; a running `Lab` adds a suffix unique to it (the
    process id and random digits), so labs of one spec in two runs never share a namespace.
    """

    hosts: tuple[LabHost, ...]
    prefix: str = "pklab"
    subnet: str = DEFAULT_SUBNET
    subnet6: str = DEFAULT_SUBNET6

    def __post_init__(self) -> None:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names) or CLIENT in names:
            raise UsageError(f"invalid lab hosts {names}: names must be unique and not {CLIENT!r}")
        if not self.prefix.isalnum() or len(self.prefix) > 6:
            raise UsageError(f"invalid lab prefix {self.prefix!r}: 1-6 letters or digits")
        if len(self.hosts) + 2 > ipaddress.ip_network(self.subnet).num_addresses - 2:
            raise UsageError(f"lab subnet {self.subnet} is too small for {len(self.hosts)} hosts")

    def all_hosts(self) -> tuple[LabHost, ...]:
        return (LabHost(CLIENT), *self.hosts)

    def address(self, name: str) -> str:
        """IPv4 address of a host: the client is .1, the others .10, .11, ... in spec order."""
        return str(ipaddress.ip_network(self.subnet)[self._index(name)])

    def address6(self, name: str) -> str:
        return str(ipaddress.ip_network(self.subnet6)[self._index(name)])

    def _index(self, name: str) -> int:
        names = [h.name for h in self.all_hosts()]
        if name not in names:
            raise UsageError(f"unknown lab host {name!r}: expected one of {', '.join(names)}")
        i = names.index(name)
        return 1 if i == 0 else 9 + i

    def check_host(self, name: str) -> str:
        """`name` when the spec has such a host, else a UsageError listing the hosts."""
        self._index(name)
        return name

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen
