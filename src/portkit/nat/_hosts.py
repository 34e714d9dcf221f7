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


def check_namespace(name: str) -> None:
    """A UsageError naming the namespaces that exist when `name` is not one of them."""
    from portkit.sockets._netns import named_namespace

    named_namespace(name)


def named_netns() -> list[str]:
    from portkit.sockets._netns import named_namespaces

    return list(named_namespaces())


def _ip_json(netns: str | None, *args: str) -> list[dict[str, Any]]:
    argv = ["ip", "-j", *args] if netns is None else ["ip", "-n", netns, "-j", *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        data = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def peer_namespaces(address: IPAddress, netns: str | None) -> list[str]:
    """The named namespaces at the other end of the link `netns` reaches `address` by: the
    veth peer of the route's device, or of every port of it when it is a bridge."""
    route = _ip_json(netns, "route", "get", str(address))
    dev = str(route[0].get("dev", "")) if route else ""
    if not dev:
        return []
    links = _ip_json(netns, "link", "show")
    ids = {int(d["nsid"]): str(d.get("name", "")) for d in _ip_json(netns, "netns", "list-id") if "nsid" in d}
    ends = [
        link
        for link in links
        if link.get("ifname") == dev or link.get("master") == dev
    ]  # fmt: skip
    names = [ids.get(int(link["link_netnsid"]), "") for link in ends if "link_netnsid" in link]
    return [n for n in names if n]


def has_address(name: str | None, address: IPAddress) -> bool:
    return any(i.ip == address for _, i in interface_addresses(name))


def owner_of(address: IPAddress, netns: str | None) -> str | None:
    """The namespace that has `address`, as seen from `netns`: `netns` itself (HERE), else the
    namespace at the other end of the link `netns` routes it by; else the one named namespace
    that has it. None when no namespace has it, or several do and no link tells which (labs
    of parallel runs reuse the documentation subnets)."""
    if address.is_loopback or has_address(netns, address):
        return HERE
    for name in peer_namespaces(address, netns):
        if has_address(name, address):
            return name
    owners = [name for name in named_netns() if name != netns and has_address(name, address)]
    return owners[0] if len(owners) == 1 else None


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
