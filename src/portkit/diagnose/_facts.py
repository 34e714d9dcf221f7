"""The facts a reach diagnosis decides on, and the I/O that gathers them.

`ReachFacts` is plain data: what the resolver said, the path the packet takes through the
namespaces of this host (each hop's route, reverse-path setting and firewall verdict), where
NAT sends it, who listens on the port in every namespace, what the probe met. `gather` fills it
in; `portkit.diagnose._reach.decide` reads it and never does I/O, so every rule of the
diagnosis is tested on hand-made facts.

The path walk: in the client's namespace, ask the kernel for the route; the next hop (the
gateway, or the target on-link) is looked up among the addresses of every namespace; when
several hold it (test labs reuse subnets), the one whose interface has the MAC address the
previous hop's neighbour table names is the one the packet reaches. There the route is asked
again, as a packet from the client arriving on that interface (`ip route get ... from ... iif
...`), until a namespace delivers it locally (the server) or the next hop belongs to no
namespace here (the rest of the path is not inspectable).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portkit.diagnose._netview import (
    NsView,
    Route,
    all_views,
    neighbour_mac,
    read_counters,
    read_sysctls,
    route_get,
    view_of,
)
from portkit.diagnose._probe import Hop, ProbeResult
from portkit.model.protocols import Transport

if TYPE_CHECKING:
    from portkit.diagnose._model import Check, Evidence
    from portkit.firewall import Decision, Ruleset

MAX_HOPS = 8
PROBE_SPORT = 50000  # the source port the firewall model assumes (an ephemeral one)


@dataclass(frozen=True, slots=True)
class Resolution:
    name: str
    addresses: tuple[str, ...]  # in the order getaddrinfo gives them (the order clients try)
    source: str  # "address literal", "/etc/hosts", "DNS (nameserver 10.0.0.53)"
    error: str = ""


@dataclass(frozen=True, slots=True)
class FirewallView:
    """A namespace's firewall verdict on the probe's packet (None when it could not be read)."""

    decision: Decision | None
    unreadable: str = ""
    managers: tuple[str, ...] = ()  # "ufw", "docker": who wrote the rules, for the fix
    iptables_chains: frozenset[str] = frozenset()  # "nat DOCKER", "filter DOCKER", ...
    # The deciding nft rule, where deleting it would change more than this port's fate:
    # `map_entries`, the model rules its handle expands to (a verdict map: one per key);
    # `port_set`, the named set its destination port is looked up in, and whether the port is
    # one whole element of it (then `nft delete element` takes out exactly that port).
    map_entries: int = 1
    port_set: PortSet | None = None
    # The verdict on the flow's replies (the reverse packet, conntrack state established) where
    # this namespace meets them. A router's fix that lets the request through must also let
    # these through when the same rules drop them (a policy drop with no established accept);
    # replies dropped while the request passes are FW_REPLY_DROP.
    reply: Decision | None = None


@dataclass(frozen=True, slots=True)
class PortSet:
    name: str
    port_is_element: bool  # the port is an element on its own, not inside a range
    elements: int  # how many intervals the set holds
    shared: bool = False  # another rule looks it up too: changing the set changes that rule


@dataclass(frozen=True, slots=True)
class HopFacts:
    """One namespace on the path and what it does with the packet."""

    where: str  # the namespace's label
    prefix: str  # shell prefix that runs a command in it ('' for portkit's own)
    role: str  # client, router, server
    iif: str | None  # the interface the packet arrives on (None for the client)
    route: Route
    destination: str  # the address routed (after NAT on an earlier hop)
    firewall: FirewallView | None = None
    rp_filter: dict[str, int] = field(default_factory=dict)  # sysctl key -> value (iif and all)
    forwarding: bool | None = None
    local: bool = False  # the namespace holds the destination


@dataclass(frozen=True, slots=True)
class ListenerFacts:
    where: str
    address: str
    port: int
    family: int
    recv_q: int
    backlog: int
    process: str = ""  # "name/pid,..." once looked up (`with_processes`)
    inode: int = 0

    def __str__(self) -> str:
        where = f"[{self.address}]" if ":" in self.address else self.address
        return f"{where}:{self.port}" + (f" ({self.process})" if self.process else "")


@dataclass(frozen=True, slots=True)
class ReachFacts:
    host: str
    port: int
    transport: Transport
    resolution: Resolution
    address: str | None = None  # the address diagnosed (the first the client would try)
    source: str | None = None  # the client's source address for it
    path: tuple[HopFacts, ...] = ()
    server: str | None = None  # label of the namespace that delivers to a socket (after NAT)
    inspectable: bool = False  # the whole path is namespaces of this host
    dnat: tuple[str, int] | None = None  # where NAT on the path sends the packet
    listeners: tuple[ListenerFacts, ...] = ()  # on the port (and the NAT port), every namespace
    sockets_read: bool = True  # the server's socket table was read (else nothing is said of it)
    # The kernel's drops of the probe's packets (skb:kfree_skb): (reason, its evidence).
    kernel_drops: tuple[tuple[str, Evidence], ...] = ()
    kernel_checks: tuple[Check, ...] = ()  # whether the kernel could be asked, and what it said
    traced: tuple[Evidence, ...] = ()  # nft's own trace of the flow where the model saw it dropped
    # Namespaces with an address in a subnet of the server's (its containers): label -> that address.
    neighbours: dict[str, str] = field(default_factory=dict)
    overflows: int | None = None  # the server's ListenOverflows growth during the probe
    overflow_total: int | None = None  # its ListenOverflows counter (since the namespace began)
    # Whether the server's [::] listener takes IPv4 too (IPV6_V6ONLY off); None: not asked.
    dual_stack: bool | None = None
    # DNAT/REDIRECT rules of the server's namespace for the port that this packet did not
    # meet (another interface, address or source): each as "TABLE CHAIN handle N: RULE".
    forwards_missed: tuple[str, ...] = ()
    probe: ProbeResult | None = None
    trace: tuple[Hop, ...] | None = None
    service: str | None = None  # what service detection named (with --expect)
    expect: str | None = None
    root: bool = True
    limits: tuple[str, ...] = ()


# --- resolving -------------------------------------------------------------------------------


def _etc(netns_name: str | None, name: str) -> str:
    """/etc/NAME as `ip netns exec` would show it to a program in that namespace."""
    if netns_name:
        private = f"/etc/netns/{netns_name}/{name}"
        if os.path.exists(private):
            return private
    return f"/etc/{name}"


def _hosts_file(path: str, host: str) -> list[str]:
    found = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                words = line.partition("#")[0].split()
                if len(words) > 1 and host.lower() in (w.lower() for w in words[1:]):
                    found.append(words[0])
    except OSError:
        pass
    return found


def _nameservers(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [w[1] for w in (ln.split() for ln in handle) if len(w) > 1 and w[0] == "nameserver"]
    except OSError:
        return []


def resolve(view: NsView, host: str, transport: Transport, timeout: float) -> Resolution:
    """The addresses a client in `view` gets for `host`, and which source gave them."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        mapped = literal.ipv4_mapped if literal.version == 6 else None
        if mapped is not None:
            # A connect to ::ffff:a.b.c.d leaves as an IPv4 packet to a.b.c.d: that is what the
            # routes, firewalls and listeners see (and an IPV6_V6ONLY listener refuses).
            return Resolution(host, (str(mapped),), "address literal, IPv4-mapped")
        return Resolution(host, (str(literal),), "address literal")
    import socket

    from portkit.sockets._netns import run_in

    hosts = _etc(view.netns_name, "hosts")
    in_hosts = _hosts_file(hosts, host.rstrip("."))
    servers = _nameservers(_etc(view.netns_name, "resolv.conf"))
    dns = f"DNS (nameserver {', '.join(servers) or 'none configured'})"
    source = hosts if in_hosts else dns
    if in_hosts and hosts != "/etc/hosts":
        # `ip netns exec` shows a program this namespace's own hosts file; this process sees
        # /etc/hosts, so the private file is read here, ordered as getaddrinfo orders loopback
        # and global answers (RFC 6724: IPv6 before IPv4-mapped).
        ordered = sorted(dict.fromkeys(in_hosts), key=lambda a: 0 if ":" in a else 1)
        return Resolution(host, tuple(ordered), hosts)
    kind = socket.SOCK_STREAM if transport is Transport.TCP else socket.SOCK_DGRAM
    result: list[list[str]] = []
    failure: list[str] = []

    def ask() -> None:
        try:
            infos = run_in(view.namespace, lambda: socket.getaddrinfo(host, None, type=kind))
            ordered: list[str] = []
            for info in infos:
                address = str(info[4][0]).partition("%")[0]
                if address not in ordered:
                    ordered.append(address)
            result.append(ordered)
        except (OSError, UnicodeError) as exc:
            failure.append(str(getattr(exc, "strerror", None) or exc))

    # getaddrinfo cannot be cancelled: it runs in a daemon thread the diagnosis stops waiting for.
    thread = threading.Thread(target=ask, daemon=True, name="diagnose resolve")
    thread.start()
    thread.join(timeout)
    if result:
        return Resolution(host, tuple(result[0]), source)
    if failure:
        asked = f"{hosts} (no entry), then {dns}" if not in_hosts else hosts
        return Resolution(host, (), asked, failure[0])
    return Resolution(host, (), dns, f"no answer within {timeout:g} s")


# --- the firewall of one namespace -------------------------------------------------------------


# Rulesets read during one diagnosis (a namespace met twice on the path is read once); per
# thread, so diagnoses running in two threads never share one.
_CACHE = threading.local()


def _rulesets() -> dict[str, tuple[Ruleset | None, str]]:
    found: dict[str, tuple[Ruleset | None, str]] | None = getattr(_CACHE, "rulesets", None)
    if found is None:
        found = _CACHE.rulesets = {}
    return found


def forget_rulesets() -> None:
    """Start a diagnosis afresh: firewalls are read again."""
    _rulesets().clear()


def _ruleset(view: NsView) -> tuple[Ruleset | None, str]:
    """The live ruleset of `view` (cached for one diagnosis), or why it could not be read."""
    key = view.label
    cache = _rulesets()
    if key in cache:
        return cache[key]
    from portkit.errors import PortkitError
    from portkit.firewall import read_live

    if os.geteuid() != 0:
        found: tuple[Ruleset | None, str] = (None, "reading the firewall needs root (CAP_NET_ADMIN)")
    elif view.namespace.path is not None and view.netns_name is None:
        # A namespace without an `ip netns` name (a container's): nft runs from a thread
        # inside it, and a child process starts in the namespace of the thread that forks it.
        from portkit.sockets._netns import run_in

        try:
            found = (run_in(view.namespace, lambda: read_live(None)), "")
        except (PortkitError, OSError) as exc:
            found = (None, f"the firewall of namespace {view.label} could not be read: {exc}")
    else:
        try:
            found = (read_live(view.netns_name), "")
        except (PortkitError, OSError) as exc:
            found = (None, str(exc))
    cache[key] = found
    return found


def _managers(ruleset: Ruleset) -> tuple[tuple[str, ...], frozenset[str]]:
    chains = frozenset(f"{t.name} {c.name}" for t in ruleset.tables for c in t.chains)
    managers = []
    if any(c.partition(" ")[2].startswith("ufw-") for c in chains):
        managers.append("ufw")
    if any(c.endswith(" DOCKER") or c.endswith(" DOCKER-USER") for c in chains):
        managers.append("docker")
    return tuple(managers), chains


def firewall_verdict(
    view: NsView,
    source: str,
    destination: str,
    port: int,
    transport: Transport,
    *,
    iif: str = "",
    oif: str = "",
    direction: str | None,
) -> FirewallView:
    ruleset, why = _ruleset(view)
    if ruleset is None:
        return FirewallView(None, why)
    from portkit.firewall import Direction, Packet, evaluate, forwarding_state, route_lookup

    packet = Packet(
        transport.number,
        ipaddress.ip_address(source),
        ipaddress.ip_address(destination),
        PROBE_SPORT,
        port,
        iif=iif,
        oif=oif,
    )
    local = [ipaddress.ip_address(a) for a in view.addresses()]
    named = view.netns_name
    decision = evaluate(
        ruleset,
        packet,
        direction=Direction(direction) if direction else None,
        local_addresses=local,
        route=route_lookup(named) if view.namespace.path is None or named else None,
        forwarding=forwarding_state(named) if view.namespace.path is None or named else None,
    )
    managers, chains = _managers(ruleset)
    entries, port_set = _deciding_rule_shape(ruleset, decision, port)
    # The verdict on the flow's replies (the reverse packet, conntrack state established) where
    # this namespace meets them: a router forwards them back, the client takes them in, the
    # server sends them out. A request let through is still a failed connection when these drop.
    from portkit.firewall import CtState

    sent = decision.final_packet or packet
    reverse = {
        Direction.FORWARD: (Direction.FORWARD, sent.dst, sent.dport, sent.oif or oif, sent.iif or iif),
        Direction.OUTPUT: (Direction.INPUT, packet.dst, packet.dport, sent.oif or oif, ""),
        Direction.INPUT: (Direction.OUTPUT, sent.dst, sent.dport, "", sent.iif or iif),
    }.get(decision.direction)
    reply = None
    if reverse is not None:
        back_direction, back_src, back_sport, back_iif, back_oif = reverse
        back = Packet(
            transport.number, back_src, packet.src, back_sport, packet.sport, iif=back_iif, oif=back_oif,
            state=CtState.ESTABLISHED,
        )  # fmt: skip
        reply = evaluate(
            ruleset,
            back,
            direction=back_direction,
            local_addresses=local,
            route=route_lookup(named) if view.namespace.path is None or named else None,
            forwarding=forwarding_state(named) if view.namespace.path is None or named else None,
        )
        if reply.direction is not back_direction:
            reply = None  # not where this namespace meets the replies (not its address): no verdict
    return FirewallView(decision, "", managers, chains, entries, port_set, reply)


def forwards_missed(view: NsView, port: int, transport: Transport) -> tuple[str, ...]:
    """The port forwards (DNAT/REDIRECT on the prerouting hook) of `view` for `port`: called
    when the packet was not rewritten, so none of them took it."""
    ruleset, _ = _ruleset(view)
    if ruleset is None:
        return ()
    from portkit.nat._forwards import find_forwards

    found = []
    for fwd in find_forwards(ruleset):
        if fwd.hook != "prerouting" or fwd.protocol not in (transport.value, "any"):
            continue
        low, _, high = fwd.public_port.partition("-")
        if fwd.public_port != "*" and not (low.isdigit() and int(low) <= port <= int(high or low)):
            continue
        where = f" handle {fwd.handle}" if fwd.handle is not None else ""
        found.append(f"{fwd.table} {fwd.chain}{where}: {fwd.rule}")
    return tuple(found)


def _deciding_rule_shape(ruleset: Ruleset, decision: Decision, port: int) -> tuple[int, PortSet | None]:
    """How many model rules share the deciding rule's handle, and its destination-port set."""
    from portkit.firewall import FilterRule
    from portkit.firewall._model import Field

    step = decision.decided_by
    if step is None or step.position == 0 or not isinstance(step.rule, FilterRule):
        return 1, None
    rule = step.rule
    for table in ruleset.tables:
        if str(table) != step.table:
            continue
        chain = table.chain(step.chain)
        if chain is None or rule.handle is None:
            return 1, None
        entries = sum(1 for r in chain.rules if r.handle == rule.handle)
        for match in rule.matches:
            if match.field is Field.DPORT and match.set_name and not match.negate:
                named = next((n for n in table.sets if n.name == match.set_name), None)
                if named is not None and not named.elements:
                    single = (port, port) in [(r[0], r[1]) for r in named.ranges]
                    shared = any(
                        other.handle != rule.handle and any(m.set_name == named.name for m in other.matches)
                        for c in table.chains
                        for other in c.rules
                    )
                    return entries, PortSet(named.name, single, len(named.ranges), shared)
        return entries, None
    return 1, None


# --- the walk ------------------------------------------------------------------------------------


def _next_view(
    views: list[NsView], here: NsView, address: str, excluded: set[int]
) -> tuple[NsView, str] | None:
    """The namespace (and its interface) holding `address` that a packet from `here` reaches."""
    holders = [(v, v.holding(address)) for v in views if v.namespace.inode not in excluded]
    candidates = [(v, iface) for v, iface in holders if iface is not None]
    if not candidates:
        return None
    if len(candidates) > 1:
        mac = neighbour_mac(here, address)
        matching = [(v, i) for v, i in candidates if mac and i.mac.lower() == mac]
        if len(matching) != 1:
            return None
        candidates = matching
    view, iface = candidates[0]
    return view, iface.name


def _rp_keys(iif: str) -> list[str]:
    return ["net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{iif}.rp_filter"]


def walk(
    views: list[NsView], client: NsView, destination: str, port: int, transport: Transport
) -> tuple[list[HopFacts], str | None, NsView | None, tuple[str, int] | None, bool]:
    """The hops from `client` to the namespace that delivers the packet.

    Returns the hops, the client's source address, the server's view (None when the path
    leaves this host's namespaces), where NAT sent the packet, and whether the walk saw the
    whole path.
    """
    hops: list[HopFacts] = []
    view, iif, source = client, "", None
    excluded: set[int] = set()
    dnat: tuple[str, int] | None = None
    for _ in range(MAX_HOPS):
        first = not hops
        route = route_get(view, destination, source=source if not first else None, iif=iif or None)
        if first:
            source = route.prefsrc or (destination if route.kind == "local" else None)
        local = route.kind == "local"
        role = "client" if first else ("server" if local else "router")
        rp: dict[str, int] = {}
        forwarding = None
        if not first and ":" not in destination:
            values = read_sysctls(view, [*_rp_keys(iif), "net.ipv4.ip_forward"])
            rp = {k: int(v) for k, v in values.items() if k.endswith("rp_filter") and v.isdigit()}
            forwarding = values.get("net.ipv4.ip_forward") == "1"
        fw = None
        if route.kind == "martian" and view.holding(destination) is not None:
            # Reverse-path filtering refused it on the way in to the namespace that holds it.
            hops.append(HopFacts(view.label, view.command_prefix(), "server", iif or None, route, destination,
                                 None, rp, forwarding, True))  # fmt: skip
            return hops, source, view, dnat, True
        if source is not None and route.usable:
            if first:
                fw = firewall_verdict(
                    view, source, destination, port, transport, oif=route.dev, direction="output"
                )
            elif local:
                fw = firewall_verdict(view, source, destination, port, transport, iif=iif, direction=None)
            else:
                fw = firewall_verdict(
                    view, source, destination, port, transport, iif=iif, oif=route.dev, direction="forward"
                )
        hop = HopFacts(
            view.label,
            view.command_prefix(),
            role,
            iif or None,
            route,
            destination,
            fw,
            rp,
            forwarding,
            local,
        )
        hops.append(hop)
        final = fw.decision.final_packet if first and fw is not None and fw.decision is not None else None
        if final is not None and (str(final.dst), final.dport) != (destination, port):
            # The client's own output NAT (Docker's OUTPUT jump to DOCKER publishes a port to
            # the host itself this way): the packet leaves for the new destination.
            dnat = (str(final.dst), int(final.dport or port))
            destination, port = dnat
            route = route_get(view, destination)
            local = route.kind == "local"
            hops.append(HopFacts(view.label, view.command_prefix(), "client", None, route, destination))
        if first and local:
            # The client is the server too: its input side is the next hop, arriving on lo.
            fw_in = firewall_verdict(
                view, source or destination, destination, port, transport, iif="lo", direction=None
            )
            hops.append(
                HopFacts(
                    view.label,
                    view.command_prefix(),
                    "server",
                    "lo",
                    route,
                    destination,
                    fw_in,
                    {},
                    None,
                    True,
                )
            )
            fw = fw_in
        if local:
            decision = fw.decision if fw is not None else None
            final = decision.final_packet if decision is not None else None
            if final is not None and (str(final.dst), final.dport) != (destination, port) and dnat is None:
                dnat = (str(final.dst), int(final.dport or port))
                destination, port = dnat
                if destination in view.addresses() or ipaddress.ip_address(destination).is_loopback:
                    return hops, source, view, dnat, True
                # NAT sends it on: route it again from here, as a packet arriving on iif.
                route = route_get(view, destination, source=source, iif=iif or "lo")
                onward = HopFacts(
                    view.label, view.command_prefix(), "router", iif or None, route, destination
                )
                hops.append(onward)
                if not route.usable:
                    return hops, source, None, dnat, True
                nxt = _next_view(views, view, route.gateway or destination, excluded | {view.namespace.inode})
                if nxt is None:
                    return hops, source, None, dnat, False
                excluded.add(view.namespace.inode)
                view, iif = nxt
                continue
            return hops, source, view, dnat, True
        if not route.usable:
            return hops, source, None, dnat, True
        excluded.add(view.namespace.inode)
        nxt = _next_view(views, view, route.gateway or destination, excluded)
        if nxt is None:
            return hops, source, None, dnat, False
        view, iif = nxt
    return hops, source, None, dnat, False


# --- listeners, counters -------------------------------------------------------------------------


def listeners_on(
    views: list[NsView], ports: set[int], transport: Transport
) -> tuple[list[ListenerFacts], list[str]]:
    """Listeners on `ports` in the namespaces of `views` (sock_diag, filtered in the kernel),
    with the processes that hold them."""
    from portkit.sockets import SockDiagClient, TcpState, compile_filter
    from portkit.sockets._bytecode import PortMatch
    from portkit.sockets._netns import run_in

    bytecode = compile_filter([PortMatch("src", tuple((p, p) for p in sorted(ports)))])
    states = [TcpState.LISTEN] if transport is Transport.TCP else [TcpState.CLOSE]
    rows = []
    warnings = []
    for view in views:

        def dump(label: str | None = view.namespace.label) -> list[Any]:
            with SockDiagClient() as client:
                found = []
                for family in (4, 6):
                    found.extend(client.dump(transport, family, states, bytecode=bytecode, netns=label))
                return found

        try:
            rows.extend(run_in(view.namespace, dump))
        except Exception as exc:
            warnings.append(f"sockets of {view.label} could not be read: {exc}")
    found = []
    for row in rows:
        if not row.is_listener or row.local_port not in ports:
            continue
        where = row.netns or "this namespace"
        found.append(
            ListenerFacts(
                where, row.local_address, row.local_port, row.family, row.recv_q, row.send_q, "", row.inode
            )
        )
    return found, warnings


def with_processes(listeners: list[ListenerFacts]) -> list[ListenerFacts]:
    """The listeners with the processes that hold them (a scan of /proc/*/fd)."""
    from dataclasses import replace

    from portkit.sockets._procs import Holders, find_owners

    wanted = {lst.inode for lst in listeners if lst.inode}
    if not wanted:
        return listeners
    holders = Holders(find_owners(wanted))
    named = []
    for lst in listeners:
        procs = holders.get(lst.inode) if lst.inode else ()
        named.append(replace(lst, process=",".join(f"{p.name}/{p.pid}" for p in procs or ())))
    return named


def neighbours_of(views: list[NsView], server: NsView) -> dict[str, str]:
    """Namespaces with an address in a subnet the server's interfaces are on (its containers)."""
    nets = []
    for iface in server.interfaces:
        for address, prefixlen in iface.addresses:
            net = ipaddress.ip_network(f"{address}/{prefixlen}", strict=False)
            if not net.is_loopback and not net.is_link_local and net.num_addresses > 1:
                nets.append(net)
    found: dict[str, str] = {}
    for view in views:
        if view.namespace.inode == server.namespace.inode:
            continue
        for address in sorted(view.addresses()):
            ip = ipaddress.ip_address(address)
            if any(ip.version == n.version and ip in n for n in nets):
                found.setdefault(view.label, address)
    return found


def takes_ipv4(view: NsView, port: int) -> bool | None:
    """Whether the [::]:port TCP listener in `view` takes IPv4 too (IPV6_V6ONLY off), as the
    kernel reports it (sock_diag's INET_DIAG_SKV6ONLY); None when there is no such listener."""
    from portkit.diagnose._netview import v6only_listeners
    from portkit.sockets._netns import run_in

    found = run_in(view.namespace, v6only_listeners)
    return None if port not in found else not found[port]


def overflow_counter(view: NsView) -> int | None:
    return read_counters(view).get("TcpExtListenOverflows")


__all__ = [
    "FirewallView",
    "HopFacts",
    "ListenerFacts",
    "ReachFacts",
    "Resolution",
    "all_views",
    "firewall_verdict",
    "listeners_on",
    "neighbours_of",
    "overflow_counter",
    "resolve",
    "view_of",
    "walk",
]
