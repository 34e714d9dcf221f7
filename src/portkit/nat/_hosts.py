"""Where an address lives on this machine: this namespace or a named one, and what listens there.

Port-forward listings and checks ask, for a DNAT target or a public address, whether it is an
address of this host or of one of its network namespaces (`ip netns`), and then whether a
socket listens on the port there. Nothing here sends a packet.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from portkit.model import Transport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HERE = ""  # the namespace this process runs in (or the one asked about)


@lru_cache(maxsize=256)
def interface_addresses(
    netns: str | None,
) -> tuple[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface], ...]:
    """(interface, address/prefix) of every address in `netns` (None: this namespace)."""
    argv = ["ip", "-j", "addr"] if netns is None else ["ip", "-n", netns, "-j", "addr"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        data = json.loads(proc.stdout or "[]")
    except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return ()
    found = []
    for link in data if isinstance(data, list) else []:
        for a in link.get("addr_info", []):
            if "local" in a and "prefixlen" in a:
                try:
                    found.append(
                        (
                            str(link.get("ifname", "")),
                            ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"),
                        )
                    )
                except ValueError:
                    continue
    return tuple(found)


def named_netns() -> list[str]:
    from portkit.sockets._netns import named_namespaces

    return list(named_namespaces())


def owner_of(address: IPAddress, netns: str | None) -> str | None:
    """The namespace that has `address`: `netns` itself (HERE) first, then any named one; None
    when no namespace on this machine has it (a LAN host elsewhere)."""
    if address.is_loopback or any(i.ip == address for _, i in interface_addresses(netns)):
        return HERE
    for name in named_netns():
        if name != netns and any(i.ip == address for _, i in interface_addresses(name)):
            return name
    return None


def connected_subnet(
    address: IPAddress, netns: str | None
) -> tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """The interface and subnet of `netns` that `address` is directly on, if any."""
    for ifname, iface in interface_addresses(netns):
        if address in iface.network and iface.network.prefixlen < iface.max_prefixlen:
            return ifname, iface.network
    return None


@dataclass(frozen=True)
class ListenFact:
    """Whether something listens on a forward's target, where portkit could look."""

    state: str  # listening | nothing-listens | unknown
    netns: str | None = None  # where the target lives ("" this namespace); None: not on this host
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "netns": self.netns, "detail": self.detail}


def listening_at(address: IPAddress, port: int, protocol: Transport, netns: str | None) -> ListenFact:
    """Whether a socket listens on address:port in the namespace that has `address`."""
    from portkit.errors import PortkitError
    from portkit.sockets import SocketQuery, list_sockets

    owner = owner_of(address, netns)
    if owner is None:
        return ListenFact("unknown", None, f"{address} is not an address of this host or a local namespace")
    where = netns if owner == HERE else owner
    label = f"netns {where}" if where else "this host"
    try:
        inventory = list_sockets(SocketQuery(transports=(protocol,), listening=True), netns=where or None)
    except (PortkitError, OSError) as exc:
        return ListenFact("unknown", where or HERE, f"cannot read the sockets of {label}: {exc}")
    wild = {"0.0.0.0", "::", "*"}
    for sock in inventory.sockets:
        if sock.local_port != port:
            continue
        local = sock.local_address.split("%")[0]
        if local in wild or local == str(address) or (address.is_loopback and local.startswith("127.")):
            return ListenFact("listening", where or HERE, f"{sock.local_text} in {label}")
    return ListenFact(
        "nothing-listens", where or HERE, f"nothing listens on {protocol.value} {address}:{port} in {label}"
    )
