"""What the audit reads: listeners in every namespace, each namespace's firewall, addresses and
routes, DNAT publishes, and scans from the vantages the user names.

The zones are judged by the firewall model, as `fw check` judges one flow: a packet from a
representative source of each zone (127.0.0.1 on lo; on an interface that does not carry the
default route, a host of its connected subnet when that lies in the policy's LAN networks, else of
the first LAN network; a documentation address, 198.51.100.7 or 2001:db8::7, on the interface that
does) to the listener's address and port: for a wildcard listener, to every address of the
namespace, since Linux delivers a packet for any local address whatever interface it came in on.
A zone the representative cannot reach is judged again from the sources the rules single out
(an address inside each `ip saddr` range that lies in the zone: an allowlisted admin network,
one LAN host): if one of them gets in, the zone reaches the listener from those ranges only.
Nothing is sent for that: traffic leaves only for `--from` scans, and only to this host's own
addresses from a namespace on this host.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from portkit.audit._core import (
    AuditedListener,
    AuditReport,
    Observation,
    OpenRule,
    Reach,
    ZoneReach,
    audit,
    exposure_class,
)
from portkit.audit._policy import ExposurePolicy, Zone
from portkit.errors import PermissionNeeded, PortkitError
from portkit.firewall import Direction, FilterAction, Packet, Ruleset, Severity, Verdict, evaluate
from portkit.model.protocols import IPPROTO_TCP, IPPROTO_UDP, Transport
from portkit.sockets import Exposure, Listener, ServiceFacts

ANY_SOURCE = {4: ipaddress.ip_address("198.51.100.7"), 6: ipaddress.ip_address("2001:db8::7")}
LOOPBACK = {4: ipaddress.ip_address("127.0.0.1"), 6: ipaddress.ip_address("::1")}
_L4 = {Transport.TCP: IPPROTO_TCP, Transport.UDP: IPPROTO_UDP}
# A rule accepting more ports than this is not read port by port for STALE_RULE.
_MAX_RULE_PORTS = 256

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Progress = Callable[[int, int], None]


@dataclass
class NamespaceView:
    """One namespace as the audit sees it."""

    label: str | None  # None: the namespace portkit runs in
    prefix: list[str]  # how to run a command inside it
    ruleset: Ruleset | None = None
    ruleset_problem: str = ""
    addresses: dict[str, list[Address]] = field(default_factory=dict)  # interface -> addresses
    subnets: dict[str, list[Network]] = field(default_factory=dict)  # interface -> connected subnets
    default_ifaces: frozenset[str] = frozenset()
    # (zone, family) -> the singled-out sources (`_singled_out_sources`), read once per namespace.
    singled_out: dict[tuple[Zone, int], list[tuple[Address, str]]] = field(default_factory=dict)

    @property
    def local(self) -> frozenset[Address]:
        return frozenset(a for addrs in self.addresses.values() for a in addrs)

    @property
    def network_ifaces(self) -> list[str]:
        return [name for name in self.addresses if name != "lo"]


def _run_json(argv: list[str]) -> object:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return json.loads(proc.stdout or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def _view(label: str | None, path: str | None) -> NamespaceView:
    from portkit.sockets import Namespace

    prefix = Namespace(label, 0, path).command([]) if label is not None else []
    view = NamespaceView(label, prefix)
    links = _run_json([*prefix, "ip", "-j", "addr"])
    if isinstance(links, list):
        for link in links:
            if not isinstance(link, dict) or "ifname" not in link:
                continue
            addrs = []
            subnets = []
            for info in link.get("addr_info", []):
                try:
                    addrs.append(ipaddress.ip_address(str(info.get("local", ""))))
                    cidr = f"{info.get('local')}/{info.get('prefixlen')}"
                    subnets.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError:
                    continue
            if link.get("operstate") == "DOWN" and link["ifname"] != "lo":
                continue
            view.addresses[str(link["ifname"])] = addrs
            view.subnets[str(link["ifname"])] = subnets
    names: set[str] = set()
    for version in ("-4", "-6"):
        routes = _run_json([*prefix, "ip", version, "-j", "route", "show", "default"])
        if isinstance(routes, list):
            names.update(str(r["dev"]) for r in routes if isinstance(r, dict) and "dev" in r)
    view.default_ifaces = frozenset(names)
    view.ruleset, view.ruleset_problem = _ruleset(label, path)
    return view


def _ruleset(label: str | None, path: str | None) -> tuple[Ruleset | None, str]:
    from portkit.firewall import read_live

    if label is not None and (path is None or not path.startswith("/run/netns/")):
        return (
            None,
            f"the firewall of {label} was not read (not a named namespace: `ip netns attach` names it)",
        )
    try:
        return read_live(label), ""
    except PermissionNeeded:
        return None, "the firewall was not read: reading nftables/iptables needs root"
    except PortkitError as exc:
        return None, f"the firewall of {label or 'this namespace'} was not read: {exc}"


def _zone_packets(
    listener: Listener, view: NamespaceView, zone: Zone, lan: Sequence[Network]
) -> tuple[list[Packet], str]:
    """The packets standing for `zone` reaching `listener`, or none and why none can."""
    bound = [ipaddress.ip_address(a.split("%")[0]) for a in listener.addresses]
    wildcard = listener.exposure is Exposure.ALL
    families = {a.version for a in bound}
    if wildcard and 6 in families:
        families.add(4)  # a wildcard IPv6 socket takes IPv4 too unless IPV6_V6ONLY (fail closed: assume it)
    proto = _L4.get(listener.transport)
    if proto is None:
        return [], f"{listener.transport} is not judged by the model"
    packets: list[Packet] = []
    if zone is Zone.LOOPBACK:
        for family in sorted(families):
            dsts = (
                [LOOPBACK[family]]
                if wildcard or listener.exposure is Exposure.LOOPBACK
                else [a for a in bound if a.version == family]
            )
            packets += [Packet(proto, LOOPBACK[family], d, 40000, listener.port, iif="lo") for d in dsts]
        return packets, ""
    if listener.exposure is Exposure.LOOPBACK:
        return [], "bound to loopback only"
    ifaces = view.network_ifaces
    if not ifaces:
        return [], "the namespace has no interface but loopback"
    if zone is Zone.ANY:
        chosen = [i for i in ifaces if i in view.default_ifaces] or ifaces
    else:
        chosen = [i for i in ifaces if i not in view.default_ifaces] or ifaces
    for family in sorted(families):
        for iface in chosen:
            source = _zone_source(view, iface, zone, family, lan)
            if source is None:
                continue
            if wildcard:
                # Linux is a weak host: a packet arriving on any interface is delivered to any of
                # the host's addresses, so a neighbour on this side may aim at every one of them
                # (the interface's own first). Link-local addresses answer on their own link only.
                own = [a for a in view.addresses.get(iface, []) if a.version == family and not a.is_loopback]
                others = [
                    a
                    for name, addrs in view.addresses.items()
                    if name != iface
                    for a in addrs
                    if a.version == family and not a.is_loopback and not a.is_link_local and a not in own
                ]
                dsts = own + sorted(set(others), key=str)
            else:
                dsts = [a for a in bound if a.version == family]
            packets += [Packet(proto, source, d, 40000, listener.port, iif=iface) for d in dsts]
    if not packets:
        return [], "no address of the namespace carries it"
    return packets, ""


def _zone_source(
    view: NamespaceView, iface: str, zone: Zone, family: int, lan: Sequence[Network]
) -> Address | None:
    """A source address standing for `zone` on `iface`: a documentation address for anyone; for
    the LAN, a host of the interface's connected subnet when that lies in the policy's LAN
    networks (a rule matching the LAN by source names that subnet), else of the first LAN network."""
    if zone is Zone.ANY:
        return ANY_SOURCE[family]
    own = set(view.addresses.get(iface, []))
    for subnet in view.subnets.get(iface, []):
        if subnet.version != family or subnet.num_addresses < 4:
            continue
        if not any(subnet.subnet_of(net) for net in lan if net.version == family):  # type: ignore[arg-type]
            continue
        for offset in (77, 2, 3):
            if offset < subnet.num_addresses - 1:
                candidate = subnet.network_address + offset
                if candidate not in own:
                    return candidate
    nets = [n for n in lan if n.version == family and n.num_addresses > 2]
    if not nets:
        return None
    return nets[0].network_address + min(77, nets[0].num_addresses - 2)


def _judge(view: NamespaceView, packets: list[Packet]) -> tuple[Reach, str]:
    """The widest reach any of `packets` gets, and what decided it."""
    if view.ruleset is None:
        return Reach.UNCERTAIN, view.ruleset_problem
    best: tuple[Reach, str] | None = None
    rank = {Reach.OPEN: 2, Reach.UNCERTAIN: 1, Reach.BLOCKED: 0}
    for packet in packets:
        decision = evaluate(
            view.ruleset, packet, direction=Direction.INPUT, local_addresses=view.local, trace_misses=False
        )
        if decision.verdict is Verdict.ACCEPT and decision.certain:
            found = (Reach.OPEN, f"{decision.reason} on {packet.iif}")
        elif "accept" in decision.possible:
            found = (Reach.UNCERTAIN, f"{decision.reason} on {packet.iif}, or not: the model forked")
        else:
            found = (Reach.BLOCKED, f"{decision.outcome} by {decision.reason} on {packet.iif}")
        if best is None or rank[found[0]] > rank[best[0]]:
            best = found
        if best[0] is Reach.OPEN:
            break
    assert best is not None
    return best


# At most this many singled-out source ranges are tried per zone (each costs one evaluation
# per packet of the zone); the ranges are taken in rule order.
_MAX_SINGLED_OUT = 16


def _singled_out_sources(
    view: NamespaceView, zone: Zone, family: int, lan: Sequence[Network]
) -> list[tuple[Address, str]]:
    """An address inside each source range the rules match on (`ip saddr X`, named sets' known
    elements too) that lies in `zone` and could be let in, with the range's text."""
    cached = view.singled_out.get((zone, family))
    if cached is None:
        cached = view.singled_out[(zone, family)] = _find_singled_out(view, zone, family, lan)
    return cached


def _find_singled_out(
    view: NamespaceView, zone: Zone, family: int, lan: Sequence[Network]
) -> list[tuple[Address, str]]:
    from portkit.firewall import Field

    assert view.ruleset is not None
    seen: dict[tuple[int, int], None] = {}
    stopping = (FilterAction.DROP, FilterAction.REJECT)
    for _table, _chain, _index, rule in view.ruleset.rules():
        for match in rule.matches:
            # A source inside a drop's range is kept out (a blocklist): only an accept's (or a
            # jump's) ranges, or a negated drop's, can let a singled-out source in.
            if match.field is Field.SADDR and match.family == family and (
                rule.action not in stopping or match.negate
            ):
                for lo, hi in match.ranges:
                    seen.setdefault((lo, hi))
    found: list[tuple[Address, str]] = []
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    for lo, hi in seen:
        candidate = make(lo + 1 if hi - lo >= 2 else lo)
        if (
            candidate.is_loopback
            or candidate.is_multicast
            or candidate.is_unspecified
            or candidate.is_link_local
            or _in_lan(candidate, lan) != (zone is Zone.LAN)
        ):
            continue
        networks = list(ipaddress.summarize_address_range(make(lo), make(hi)))
        text = str(networks[0]) if len(networks) == 1 else f"{make(lo)}-{make(hi)}"
        found.append((candidate, text.removesuffix("/32" if family == 4 else "/128")))
        if len(found) == _MAX_SINGLED_OUT:
            break
    return found


def _judge_singled_out(
    view: NamespaceView, packets: list[Packet], zone: Zone, lan: Sequence[Network]
) -> tuple[Reach, str, tuple[str, ...]] | None:
    """The zone judged from the sources its rules single out, when one of them gets in (or may)."""
    if view.ruleset is None:
        return None
    admitted: dict[str, str] = {}
    maybe: dict[str, str] = {}
    for family in sorted({p.src.version for p in packets}):
        sources = _singled_out_sources(view, zone, family, lan)
        for source, text in sources:
            for packet in (p for p in packets if p.src.version == family):
                decision = evaluate(
                    view.ruleset,
                    replace(packet, src=source),
                    direction=Direction.INPUT,
                    local_addresses=view.local,
                    trace_misses=False,
                )
                if decision.verdict is Verdict.ACCEPT and decision.certain:
                    admitted.setdefault(text, f"{decision.reason} on {packet.iif}")
                    break
                if "accept" in decision.possible:
                    maybe.setdefault(text, f"{decision.reason} on {packet.iif}, or not: the model forked")
    chosen, reach = (admitted, Reach.OPEN) if admitted else (maybe, Reach.UNCERTAIN)
    if not chosen:
        return None
    ranges = tuple(chosen)
    first = next(iter(chosen.values()))
    return reach, f"from {', '.join(ranges)} only: {first}", ranges


def judge_listener(
    listener: Listener,
    view: NamespaceView,
    lan: Sequence[Network],
) -> tuple[ZoneReach, ...]:
    zones = []
    for zone in (Zone.LOOPBACK, Zone.LAN, Zone.ANY):
        packets, why_none = _zone_packets(listener, view, zone, lan)
        if not packets:
            zones.append(ZoneReach(zone, Reach.BLOCKED, why_none))
            continue
        reach, how = _judge(view, packets)
        if reach is not Reach.OPEN and zone is not Zone.LOOPBACK:
            singled = _judge_singled_out(view, packets, zone, lan)
            if singled is not None and (singled[0] is Reach.OPEN or reach is Reach.BLOCKED):
                better, how_from, ranges = singled
                zones.append(ZoneReach(zone, better, f"{how_from} (other sources: {how})", False, ranges))
                continue
        zones.append(ZoneReach(zone, reach, how, reach is Reach.BLOCKED))
    return tuple(zones)


def _rule_ports(rule: object) -> list[tuple[int, Transport]]:
    from portkit.firewall import Field

    found: list[tuple[int, Transport]] = []
    for match in getattr(rule, "matches", ()):
        if match.field is not Field.DPORT or match.negate:
            continue
        count = sum(hi - lo + 1 for lo, hi in match.ranges)
        if count > _MAX_RULE_PORTS:
            return []
        protos = [t for t, n in _L4.items() if not match.protos or n in match.protos]
        found += [(port, t) for lo, hi in match.ranges for port in range(lo, hi + 1) for t in protos]
    return found


def open_rules(view: NamespaceView, lan: Sequence[Network]) -> list[OpenRule]:
    """Ports an accept rule opens to the LAN or to anyone (confirmed by evaluating a packet)."""
    if view.ruleset is None:
        return []
    candidates: dict[tuple[int, Transport], None] = {}
    for _table, _chain, _index, rule in view.ruleset.rules():
        if rule.action is FilterAction.ACCEPT:
            for key in _rule_ports(rule):
                candidates.setdefault(key)
    ifaces = view.network_ifaces
    found: list[OpenRule] = []
    for (port, transport), _ in candidates.items():
        for zone in (Zone.ANY, Zone.LAN):
            probe = Listener(transport, port, Exposure.ALL, ("::",), (), 0, view.label, ServiceFacts())
            packets, _why = _zone_packets(probe, view, zone, lan) if ifaces else ([], "")
            hit = None
            for packet in packets:
                decision = evaluate(
                    view.ruleset,
                    packet,
                    direction=Direction.INPUT,
                    local_addresses=view.local,
                    trace_misses=False,
                )
                step = decision.decided_by
                if (
                    decision.verdict is Verdict.ACCEPT
                    and decision.certain
                    and step is not None
                    and step.position
                ):
                    hit = f"{step.table} {step.chain} {step.where or '#' + str(step.position)}: {step.rule}"
                    break
            if hit is not None:
                found.append(OpenRule(view.label, port, transport, hit, zone))
                break
    return found


def _published(
    views: dict[str | None, NamespaceView],
) -> dict[tuple[str | None, str, int, Transport], list[str]]:
    """(namespace, address, port, transport) of a listener -> the address:port (and namespace)
    whose DNAT sends new connections there: docker's publish, a router's port forward.

    The DNAT's target address is matched to the one namespace that holds it; an address held by
    several (parallel labs reuse subnets) is not guessed at.
    """
    holders: dict[str, set[str | None]] = {}
    for label, view in views.items():
        for address in view.local:
            if not address.is_loopback:
                holders.setdefault(str(address), set()).add(label)
    result: dict[tuple[str | None, str, int, Transport], list[str]] = {}
    for label, view in views.items():
        if view.ruleset is None:
            continue
        candidates: dict[tuple[int, Transport], None] = {}
        for _table, _chain, _index, rule in view.ruleset.rules():
            if rule.action is FilterAction.DNAT:
                for key in _rule_ports(rule):
                    candidates.setdefault(key)
        for port, transport in candidates:
            for iface, addrs in view.addresses.items():
                if iface == "lo":
                    continue
                for address in addrs[:1]:
                    packet = Packet(
                        _L4[transport], ANY_SOURCE[address.version], address, 40000, port, iif=iface
                    )
                    decision = evaluate(view.ruleset, packet, local_addresses=view.local, trace_misses=False)
                    final = decision.final_packet
                    if final is None or final.dport is None or (final.dst, final.dport) == (address, port):
                        continue
                    owners = holders.get(str(final.dst), set())
                    if len(owners) != 1:
                        continue
                    (owner,) = owners
                    if owner == label:
                        continue  # a redirect inside one namespace publishes nothing
                    text = f"{address}:{port}" if address.version == 4 else f"[{address}]:{port}"
                    if label is not None:
                        text += f" (netns {label})"
                    found = result.setdefault((owner, str(final.dst), final.dport, transport), [])
                    if text not in found:
                        found.append(text)
    return result


def _in_lan(address: Address, lan: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in lan)


def _scan_from(
    vantage: str,
    views: dict[str | None, NamespaceView],
    listeners: Sequence[Listener],
    lan: Sequence[Network],
) -> tuple[dict[tuple[str | None, int, Transport], list[Observation]], list[str]]:
    """Scan, from inside `vantage`, every listening TCP port of every namespace at its addresses."""
    from portkit.firewall import route_lookup
    from portkit.scan import ScanOptions, run_scan
    from portkit.sockets import named_namespace, run_in

    namespace = named_namespace(vantage)
    route = route_lookup(vantage)
    own = _view(vantage, f"/run/netns/{vantage}")
    routable = [a for a in own.local if not (a.is_loopback or a.is_link_local)]
    zone = Zone.LAN if any(_in_lan(a, lan) for a in routable) else Zone.ANY
    seen: dict[tuple[str | None, int, Transport], list[Observation]] = {}
    notes: list[str] = []
    for label, view in views.items():
        if label == vantage:
            continue
        ports = sorted(
            {item.port for item in listeners if item.netns == label and item.transport is Transport.TCP}
        )
        targets = sorted({str(a) for a in view.local if not a.is_loopback and not a.is_link_local})
        if not ports:
            continue
        routed = [t for t in targets if route(ipaddress.ip_address(t))]
        if len(routed) < len(targets):
            unrouted = ", ".join(t for t in targets if t not in routed)
            notes.append(f"scan from {vantage}: no route to {unrouted} of {label or 'this namespace'}")
        targets = routed
        if not ports or not targets:
            continue
        options = ScanOptions(
            targets=targets,
            ports=",".join(map(str, ports)),
            skip_discovery=True,
            all_ports_listed=True,
            timing=4,
            workers=1,
            max_retries=1,
        )
        try:
            result = run_in(namespace, lambda options=options: run_scan(options))  # type: ignore[misc]
        except OSError as exc:
            notes.append(f"scan from {vantage} of {', '.join(targets)} failed: {exc.strerror or exc}")
            continue
        for host in result.hosts:
            for port in host.ports:
                seen.setdefault((label, port.port, port.protocol), []).append(
                    Observation(vantage, zone, host.address, str(port.state))
                )
        if any(item.transport is not Transport.TCP for item in listeners if item.netns == label):
            notes.append(
                f"scan from {vantage}: UDP listeners of {label or 'this namespace'} were not scanned"
            )
    return seen, notes


def run_audit(
    policy: ExposurePolicy | None,
    *,
    vantages: Sequence[str] = (),
    namespaces: Sequence[str] = (),
    risk: Callable[[int, Transport], tuple[Severity, str] | None] | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit every listener of this host and its namespaces against `policy` (None: no policy).

    `namespaces` (names from `ip netns list`) restricts the audit to the listeners of those
    namespaces; `vantages` are namespaces to scan every audited listener from.
    """
    from portkit.audit._policy import DEFAULT_LAN
    from portkit.registry import default_registry
    from portkit.sockets import ALL_STATES, SocketQuery, build_overview, list_sockets, registry_facts

    lan = policy.lan if policy is not None else tuple(ipaddress.ip_network(n) for n in DEFAULT_LAN)
    from portkit.sockets import named_namespace, run_in

    for name in (*vantages, *namespaces):
        # A UsageError for a namespace that does not exist; PermissionNeeded (exit 1) for one
        # this process may not enter: auditing it would report nothing listening there.
        run_in(named_namespace(name), lambda: None)
    inventory = list_sockets(
        SocketQuery(listening=True, states=ALL_STATES, with_processes=True), all_netns=True
    )
    overview = build_overview(
        inventory.sockets, [], registry_facts(default_registry()), owner_unknown=inventory.owner_unknown
    )
    limits = list(inventory.warnings)
    unread = [
        n.label
        for n in inventory.namespaces
        if any(w.startswith(f"skipped network namespace {n}:") for w in limits)
    ]
    if namespaces:  # what could not be read of namespaces the user did not ask about is no limit
        others = [
            f"skipped network namespace {n}:" for n in inventory.namespaces if n.label not in namespaces
        ]
        limits = [w for w in limits if not any(w.startswith(prefix) for prefix in others)]
        unread = [n for n in unread if n in namespaces]
    if inventory.root_note():
        limits.append(inventory.root_note())
    listeners = [
        item
        for item in overview.listeners
        if item.netns not in vantages and (not namespaces or item.netns in namespaces)
    ]
    wanted = [
        n
        for n in inventory.namespaces
        if n.label not in vantages and (not namespaces or n.label in namespaces or n.label is None)
    ]
    # Each view is a few `ip` and `nft` runs: waiting on them side by side.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        built = list(pool.map(lambda n: _view(n.label, n.path), wanted))
    views: dict[str | None, NamespaceView] = {view.label: view for view in built}
    for view in views.values():
        if view.ruleset_problem and view.ruleset_problem not in limits:
            limits.append(view.ruleset_problem)
    published = _published(views)
    audited: list[AuditedListener] = []
    total = len(listeners)
    for number, listener in enumerate(listeners, 1):
        view = views.get(listener.netns) or _view(listener.netns, None)
        zones = judge_listener(listener, view, lan)
        on_host: list[str] = []
        if listener.exposure is not Exposure.LOOPBACK:
            addrs = (
                [str(a) for a in view.local]
                if listener.exposure is Exposure.ALL
                else list(listener.addresses)
            )
            for address in addrs:
                on_host += published.get((listener.netns, address, listener.port, listener.transport), [])
        audited.append(
            AuditedListener(listener, exposure_class(listener, on_host), zones, (), tuple(on_host))
        )
        if progress is not None:
            progress(number, total)
    if vantages:
        merged: dict[tuple[str | None, int, Transport], list[Observation]] = {}
        for vantage in vantages:
            seen, notes = _scan_from(vantage, views, listeners, lan)
            limits += notes
            for key, items in seen.items():
                merged.setdefault(key, []).extend(items)
        audited = [
            AuditedListener(
                a.listener,
                a.exposure,
                a.zones,
                tuple(merged.get((a.netns, a.listener.port, a.listener.transport), ())),
                a.published,
            )
            for a in audited
        ]
    stale: list[OpenRule] = []
    for view in views.values():
        if not namespaces or view.label in namespaces:
            stale += open_rules(view, lan)
    return audit(
        audited,
        policy,
        stale,
        risk,
        vantages=vantages,
        limits=limits,
        unread=unread,
        scope=frozenset(namespaces) if namespaces else None,
    )
