"""What each network namespace on this host looks like to a diagnosis: interfaces, addresses,
neighbours, routes, sysctls and counters.

Interfaces and addresses come from rtnetlink dumps (RTM_GETLINK, RTM_GETADDR) made by a thread
that entered the namespace (portkit.sockets' `run_in`), so visiting fifty namespaces costs
milliseconds, not fifty `ip` processes. Route look-ups ask the kernel itself through
`ip route get`, with `from` and `iif` when a packet arrives from elsewhere: the kernel then
also applies reverse-path filtering, which is exactly the check a diagnosis needs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
from dataclasses import dataclass

from portkit.sockets._netns import Namespace, all_namespaces, current_inode, run_in

_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_NEWLINK, _RTM_GETLINK = 16, 18
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_IFLA_ADDRESS, _IFLA_IFNAME = 1, 3
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
# What names a namespace: an `ip netns` name, its /run/netns path, or a process's ns/net file.
_NETNS_PATH = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}|/run/netns/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
                         r"|/proc/(?:[0-9]{1,10}|self|thread-self)/ns/net)$")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Interface:
    index: int
    name: str
    mac: str
    addresses: tuple[tuple[str, int], ...]  # (address, prefix length)


@dataclass(frozen=True, slots=True)
class NsView:
    """One namespace: how to name it to people and to commands, and its interfaces."""

    namespace: Namespace
    interfaces: tuple[Interface, ...]

    @property
    def label(self) -> str:
        return self.namespace.label or "this namespace"

    @property
    def netns_name(self) -> str | None:
        """Its `ip netns` name, when it has one (what `ip netns exec` and nft's readers need)."""
        path = self.namespace.path
        return os.path.basename(path) if path and path.startswith("/run/netns/") else None

    def command_prefix(self) -> str:
        """What runs a command inside it, as a shell line: '' for this process's own."""
        if self.namespace.path is None:
            return ""
        name = self.netns_name
        return f"ip netns exec {name} " if name else f"nsenter --net={self.namespace.path} "

    def holding(self, address: str) -> Interface | None:
        for iface in self.interfaces:
            if any(a == address for a, _ in iface.addresses):
                return iface
        return None

    def addresses(self) -> frozenset[str]:
        return frozenset(a for iface in self.interfaces for a, _ in iface.addresses)


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


def _dump(kind: int, body: bytes) -> list[tuple[int, bytes]]:
    """A rtnetlink dump in the calling thread's namespace: (message type, payload) pairs."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(2.0)
        sock.send(struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)
        messages: list[tuple[int, bytes]] = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, offset)
                if length < 16:
                    return messages
                if mtype == _NLMSG_DONE:
                    return messages
                if mtype == _NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    raise OSError(-error, os.strerror(-error))
                messages.append((mtype, data[offset + 16 : offset + length]))
                offset += (length + 3) & ~3


def read_interfaces() -> tuple[Interface, ...]:
    """The interfaces and addresses of the calling thread's namespace."""
    names: dict[int, tuple[str, str]] = {}
    for mtype, payload in _dump(_RTM_GETLINK, struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)):
        if mtype != _RTM_NEWLINK or len(payload) < 16:
            continue
        (index,) = struct.unpack_from("=i", payload, 4)
        attrs = _attributes(payload, 16, len(payload))
        name = attrs.get(_IFLA_IFNAME, b"").split(b"\0")[0].decode(errors="replace")
        names[index] = (name, attrs.get(_IFLA_ADDRESS, b"").hex(":"))
    addresses: dict[int, list[tuple[str, int]]] = {}
    for mtype, payload in _dump(_RTM_GETADDR, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)):
        if mtype != _RTM_NEWADDR or len(payload) < 8:
            continue
        family, prefixlen, _, _, index = struct.unpack_from("=BBBBI", payload, 0)
        attrs = _attributes(payload, 8, len(payload))
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if raw is None:
            continue
        if family == socket.AF_INET and len(raw) == 4:
            text = str(ipaddress.IPv4Address(raw))
        elif family == socket.AF_INET6 and len(raw) == 16:
            text = str(ipaddress.IPv6Address(raw))
        else:
            continue
        addresses.setdefault(index, []).append((text, prefixlen))
    return tuple(
        Interface(index, name, mac, tuple(addresses.get(index, ())))
        for index, (name, mac) in sorted(names.items())
    )


def view_of(namespace: Namespace) -> NsView:
    return NsView(namespace, run_in(namespace, read_interfaces))


def namespace_at(path: str | None) -> Namespace:
    """A Namespace for this process's own (None), an `ip netns` name, or a /proc/PID/ns/net path."""
    if path is None:
        return Namespace(None, current_inode(), None, os.getpid())
    if not _NETNS_PATH.match(path):
        raise FileNotFoundError(path)
    full = path if path.startswith("/") else f"/run/netns/{path}"
    inode = os.stat(full).st_ino
    if inode == current_inode():
        return Namespace(None, inode, None, os.getpid())
    if not full.startswith("/run/netns/"):
        # A /proc/PID/ns/net of a namespace that has an `ip netns` name is that namespace:
        # under its name its firewall can be read and its fix commands say `ip netns exec`.
        named = _netns_name_of(os.stat(full))
        if named is not None:
            full = f"/run/netns/{named}"
    label = os.path.basename(full) if full.startswith("/run/netns/") else f"net:[{inode}]"
    return Namespace(label, inode, full)


def _netns_name_of(found: os.stat_result) -> str | None:
    try:
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        return None
    for name in names:
        try:
            there = os.stat(f"/run/netns/{name}")
        except OSError:
            continue
        if (there.st_dev, there.st_ino) == (found.st_dev, found.st_ino) and _NETNS_PATH.match(name):
            return name
    return None


def all_views() -> tuple[list[NsView], list[str]]:
    """Every namespace this process can enter, and a note per namespace it could not."""
    views: list[NsView] = []
    skipped: list[str] = []
    for namespace in all_namespaces():
        try:
            views.append(view_of(namespace))
        except (OSError, Exception) as exc:
            skipped.append(f"{namespace}: {exc}")
    return views, skipped


def neighbour_mac(view: NsView, address: str) -> str:
    """The link-layer address `view` has learned for `address` ('' when none)."""
    from portkit.scan._neighbours import neighbour_macs

    found = run_in(view.namespace, neighbour_macs)
    return found.get(address, "").lower()


def owners(views: list[NsView], address: str) -> list[NsView]:
    return [v for v in views if v.holding(address) is not None]


@dataclass(frozen=True, slots=True)
class Route:
    """The kernel's answer to `ip route get` in one namespace."""

    # unicast, local, blackhole, unreachable, prohibit, none (no route), martian (the source
    # was refused: reverse-path filtering), error
    kind: str
    dev: str = ""
    gateway: str | None = None
    prefsrc: str | None = None
    said: str = ""  # what the kernel said, as `ip` prints it
    # For a blackhole/unreachable/prohibit route: the route itself as `ip route del` takes it
    # ("prohibit 10.98.0.0/16 table 100"), or '' when no single route of that kind matches.
    entry: str = ""

    @property
    def usable(self) -> bool:
        return self.kind in ("unicast", "local")

    def __str__(self) -> str:
        if not self.usable:
            return self.said or self.kind
        via = f" via {self.gateway}" if self.gateway else ""
        src = f" src {self.prefsrc}" if self.prefsrc else ""
        return f"{self.kind} dev {self.dev}{via}{src}"


# `ip route get` errors -> what they mean (rtnetlink's errno, as iproute2 prints it).
_ROUTE_ERRORS: tuple[tuple[str, str], ...] = (
    ("Network is unreachable", "none"),
    ("No route to host", "unreachable"),
    ("Permission denied", "prohibit"),
    ("Invalid argument", "blackhole"),
    ("Invalid cross-device link", "xdev"),
)


_REFUSING = ("blackhole", "unreachable", "prohibit")


def _refusing_route(prefix: list[str], destination: str, kind: str) -> str:
    """The `kind` route that refused `destination`, as `ip route del` takes it.

    `ip route get` (even with `fibmatch`) answers such a route with its errno alone, so the
    routes of that type in every table are listed and the longest prefix holding the address
    is taken; two of that length (in two tables) leave it undecided ('').
    """
    address = ipaddress.ip_address(destination)
    argv = [*prefix, "ip", "-j", f"-{address.version}", "route", "show", "table", "all", "type", kind]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        routes = json.loads(proc.stdout) if proc.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return ""
    best: list[tuple[int, str, str]] = []
    for route in routes if isinstance(routes, list) else []:
        dst = str(route.get("dst", "")) if isinstance(route, dict) else ""
        try:
            net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" and address.version == 4
                                       else "::/0" if dst == "default" else dst, strict=False)  # fmt: skip
        except ValueError:
            continue
        if address in net:
            best.append((net.prefixlen, dst, str(route.get("table", ""))))
    if not best:
        return ""
    longest = max(length for length, _, _ in best)
    chosen = [(dst, table) for length, dst, table in best if length == longest]
    if len(chosen) != 1:
        return ""
    dst, table = chosen[0]
    return f"{kind} {dst}" + (f" table {table}" if table and table != "main" else "")


def route_get(view: NsView, destination: str, *, source: str | None = None, iif: str | None = None) -> Route:
    """How `view`'s kernel routes `destination` (a packet from `source` arriving on `iif`)."""
    argv = ["ip", "-j", "route", "get", destination]
    if source and iif:
        argv += ["from", source, "iif", iif]
    prefix = view.command_prefix().split()
    try:
        proc = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Route("error", said=str(exc))
    if proc.returncode != 0:
        said = proc.stderr.strip().removeprefix("RTNETLINK answers: ")
        kind = next((k for text, k in _ROUTE_ERRORS if text in said), "error")
        if iif and kind in ("blackhole", "xdev"):
            # With iif the kernel validates the source too: EXDEV when forwarding, EINVAL
            # ("martian source") when delivering locally, is a source it refuses: rp_filter.
            # A blackhole route answers EINVAL as well, with or without iif: asked without
            # it, the destination's own route tells the two apart.
            alone = route_get(view, destination) if kind == "blackhole" else None
            kind = "blackhole" if alone is not None and alone.kind == "blackhole" else "martian"
        entry = _refusing_route(prefix, destination, kind) if kind in _REFUSING else ""
        return Route(kind, said=said, entry=entry)
    try:
        entry = json.loads(proc.stdout)[0]
    except (ValueError, IndexError):
        return Route("error", said=proc.stdout.strip()[:200])
    kind = str(entry.get("type", "unicast"))
    return Route(kind, str(entry.get("dev", "")), entry.get("gateway"), entry.get("prefsrc"), "")


def read_sysctls(view: NsView, keys: list[str]) -> dict[str, str]:
    """`net.ipv4...` keys as the namespace sees them (a key it lacks is left out)."""

    def read() -> dict[str, str]:
        found = {}
        for key in keys:
            try:
                with open("/proc/sys/" + key.replace(".", "/")) as handle:
                    found[key] = handle.read().strip()
            except OSError:
                continue
        return found

    # /proc/sys/net follows the reading thread's network namespace.
    return run_in(view.namespace, read)


def read_counters(view: NsView) -> dict[str, int]:
    """The namespace's TcpExt counters (/proc/net/netstat, as `nstat` reads them)."""

    def read() -> dict[str, int]:
        try:
            with open("/proc/thread-self/net/netstat") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return {}
        found: dict[str, int] = {}
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            prefix, _, keys = names.partition(":")
            for key, value in zip(keys.split(), values.partition(":")[2].split(), strict=False):
                if value.lstrip("-").isdigit():
                    found[f"{prefix}{key}"] = int(value)
        return found

    return run_in(view.namespace, read)


_SOCK_DIAG_BY_FAMILY = 20
_INET_DIAG_SKV6ONLY = 11
_TCP_LISTEN = 10


def v6only_listeners() -> dict[int, bool]:
    """port -> IPV6_V6ONLY of each TCP listener bound to [::] in the calling thread's namespace.

    portkit's socket decoder does not keep the INET_DIAG_SKV6ONLY attribute the kernel sends
    with every AF_INET6 socket, so this asks sock_diag directly, for IPv6 listeners only.
    """
    request = struct.pack("=BBBBI", socket.AF_INET6, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    request += bytes(48)  # inet_diag_sockid: no ports, addresses, interface or cookie to match
    found: dict[int, bool] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as sock:  # NETLINK_SOCK_DIAG
        sock.settimeout(2.0)
        header = struct.pack(
            "=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        sock.send(header + request)
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, offset)
                if length < 16 or mtype in (_NLMSG_DONE, _NLMSG_ERROR):
                    return found
                body = offset + 16
                if length >= 16 + 72:
                    (sport,) = struct.unpack_from("!H", data, body + 4)
                    source = data[body + 8 : body + 24]
                    attrs = _attributes(data, body + 72, offset + length)
                    flag = attrs.get(_INET_DIAG_SKV6ONLY)
                    if not any(source) and flag:
                        found[sport] = bool(flag[0])
                offset += (length + 3) & ~3
