"""Is a port forward reachable from outside? A probe from the outside vantage, with the router's
own evidence when the router is on this machine.

The probe runs inside a network namespace (the outside host's seat): a TCP connect that sends
a line and reads what comes back, or one UDP datagram and its answer. When the public address
belongs to this host or a local namespace (the router), the DNAT rules' counters are read
before and after (`nft -j list ruleset`, which shows iptables-nft rules too) and the conntrack
entry the probe created is looked up: whether the probe reached the router, hit which rule,
and where conntrack sent it. A failed check names the cause from that evidence, or asks
`portkit.diagnose.diagnose_reach` when it is installed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError
from portkit.model import Transport
from portkit.nat._conntrack import Connection, read_conntrack
from portkit.nat._hosts import has_address, owner_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PROBE = b"portkit nat check\n"


@dataclass(frozen=True)
class Probe:
    """What the outside client saw."""

    outcome: str  # connected | refused | timeout | unreachable | answered | no-answer | error
    client: str = ""  # the probe's own address:port
    sent: int = 0
    received: bytes = b""
    seconds: float = 0.0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "client": self.client,
            "sent": self.sent,
            "received": len(self.received),
            "received_text": self.received[:200].decode("utf-8", "replace"),
            "seconds": round(self.seconds, 4),
            "error": self.error or None,
        }


@dataclass(frozen=True)
class RuleHit:
    table: str
    chain: str
    handle: int
    packets: int  # counted during the probe
    rule: str  # the rule's comment (portkit-nat:ID for `nat add`'s)
    target: str = ""  # where its dnat sends packets ("" unknown: a map, or iptables' xt DNAT)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "chain": self.chain,
            "handle": self.handle,
            "packets": self.packets,
            "rule": self.rule,
            "target": self.target or None,
        }


@dataclass(frozen=True)
class CheckResult:
    public: str
    protocol: str
    vantage: str
    reachable: bool
    probe: Probe
    router: str | None  # the namespace holding the public address ("" this one), None: not local
    hits: tuple[RuleHit, ...] = ()
    conntrack: tuple[Connection, ...] = ()
    cause: str = ""
    diagnosis: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "public": self.public,
            "protocol": self.protocol,
            "from": self.vantage,
            "reachable": self.reachable,
            "probe": self.probe.to_json(),
            "router": None if self.router is None else (self.router or "(this namespace)"),
            "rule_hits": [h.to_json() for h in self.hits],
            "conntrack": [c.to_json() for c in self.conntrack],
            "cause": self.cause or None,
            "diagnosis": self.diagnosis,
            "notes": list(self.notes),
        }


def _probe(address: IPAddress, port: int, protocol: Transport, timeout: float) -> Probe:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    kind = socket.SOCK_STREAM if protocol is Transport.TCP else socket.SOCK_DGRAM
    start = time.monotonic()
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((str(address), port))
        except ConnectionRefusedError:
            return Probe("refused", seconds=time.monotonic() - start)
        except TimeoutError:
            return Probe("timeout", seconds=time.monotonic() - start)
        except OSError as exc:
            return Probe("unreachable", seconds=time.monotonic() - start, error=exc.strerror or str(exc))
        host, cport = sock.getsockname()[:2]
        client = f"[{host}]:{cport}" if family == socket.AF_INET6 else f"{host}:{cport}"
        received = b""
        try:
            sock.sendall(PROBE)
            if protocol is Transport.TCP:
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(min(timeout, 2.0))
                while len(received) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
            else:
                received = sock.recv(65535)
        except TimeoutError:
            pass
        except ConnectionRefusedError:
            return Probe("refused", client, len(PROBE), seconds=time.monotonic() - start)
        except OSError as exc:
            if protocol is Transport.TCP:
                return Probe("connected", client, len(PROBE), received, time.monotonic() - start, str(exc))
            return Probe("error", client, len(PROBE), received, time.monotonic() - start, str(exc))
        outcome = "connected" if protocol is Transport.TCP else ("answered" if received else "no-answer")
        return Probe(outcome, client, len(PROBE), received, time.monotonic() - start)


def _nat_counters(netns: str | None) -> dict[tuple[str, str, int], tuple[int, str, str]]:
    """(table, chain, handle) -> (packets, rule summary) of every rule with a counter and a
    dnat/redirect statement (iptables-nft rules included: nft lists their counters)."""
    from portkit.firewall._live import nft_json

    found: dict[tuple[str, str, int], tuple[int, str, str]] = {}
    for item in json.loads(nft_json(netns)).get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        exprs = rule.get("expr") or []
        packets = None
        nat = False
        target = ""
        for e in exprs:
            if not isinstance(e, dict):
                continue
            if "counter" in e and isinstance(e["counter"], dict):
                packets = int(e["counter"].get("packets", 0))
            if "dnat" in e or "redirect" in e:
                nat = True
                target = _nat_target(e)
            if isinstance(e.get("xt"), dict) and e["xt"].get("name") in ("DNAT", "REDIRECT"):
                nat = True
        if nat and packets is not None:
            key = (
                f"{rule.get('family')} {rule.get('table')}",
                str(rule.get("chain")),
                int(rule.get("handle", 0)),
            )
            found[key] = (packets, str(rule.get("comment") or ""), target)
    return found


def _nat_target(expr: dict[str, Any]) -> str:
    """`192.168.1.5:443` from nft's JSON for a dnat/redirect statement ("" when not a plain value)."""
    body = expr.get("dnat") or expr.get("redirect") or {}
    if not isinstance(body, dict):
        return ""
    addr, port = body.get("addr"), body.get("port")
    if "redirect" in expr:
        return f"(this host):{port}" if isinstance(port, int) else "(this host)"
    if not isinstance(addr, str):
        return ""
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if isinstance(port, int) else host


def _with_targets(hits: list[RuleHit], netns: str | None, port: int, protocol: Transport) -> list[RuleHit]:
    """Hits on iptables-nft rules (whose xt DNAT nft cannot show) get their target from the
    rules iptables-save decodes: the one DNAT of that chain for this port and protocol."""
    from dataclasses import replace

    from portkit.firewall import read_live
    from portkit.nat._forwards import find_forwards

    try:
        forwards = find_forwards(read_live(netns))
    except PortkitError:
        return hits
    out = []
    for hit in hits:
        found = {
            f.target
            for f in forwards
            if f.table == hit.table and f.chain == hit.chain and f.public_port == str(port)
            and f.protocol in (protocol.value, "any")
        }  # fmt: skip
        out.append(replace(hit, target=found.pop()) if not hit.target and len(found) == 1 else hit)
    return out


def _in_netns(netns: str | None, work: Any) -> Any:
    from portkit.sockets._netns import named_namespace, run_in

    if not netns:
        return work()
    return run_in(named_namespace(netns), work)


def check_forward(
    public: IPAddress,
    port: int,
    *,
    from_netns: str,
    protocol: Transport = Transport.TCP,
    timeout: float = 3.0,
    diagnose: bool = True,
    router_netns: str | None = None,
) -> CheckResult:
    """Probe public:port from inside `from_netns`, with the router's evidence when it is local
    (`router_netns`, else the namespace that has the public address, seen from `from_netns`)."""
    from portkit.sockets._netns import named_namespace

    named_namespace(from_netns)  # a UsageError naming the namespaces when it does not exist
    if os.geteuid() != 0:
        raise PermissionNeeded("probing from a network namespace needs root (setns, CAP_SYS_ADMIN)")
    if router_netns is not None:
        named_namespace(router_netns)
        router: str | None = router_netns
    else:
        # The namespace that has the public address, seen from the vantage: the far end of
        # the link the vantage routes it by (several labs may use the same addresses).
        found = owner_of(public, from_netns)
        router = from_netns if found == "" else found
        if router is None and has_address(None, public):
            router = ""  # this process's own namespace routes for the vantage
    notes: list[str] = []
    before: dict[tuple[str, str, int], tuple[int, str, str]] = {}
    seen: set[Connection] = set()
    if router is not None:
        try:
            before = _nat_counters(router or None)
            seen = set(_in_netns(router, read_conntrack))
        except PortkitError as exc:
            notes.append(f"router-side evidence unavailable: {exc}")
            router = None
    probe = _in_netns(from_netns, lambda: _probe(public, port, protocol, timeout))
    hits: list[RuleHit] = []
    entries: list[Connection] = []
    if router is not None:
        after = _nat_counters(router or None)
        for key, (packets, comment, target) in after.items():
            grew = packets - before.get(key, (0, "", ""))[0]
            if grew > 0:
                hits.append(RuleHit(key[0], key[1], key[2], grew, comment, target))
        if any(not h.target for h in hits):
            hits = _with_targets(hits, router or None, port, protocol)
        proto_number = 6 if protocol is Transport.TCP else 17
        client_port = int(probe.client.rsplit(":", 1)[1]) if probe.client else None
        for conn in _in_netns(router, read_conntrack):
            o = conn.original
            if o.protocol != proto_number or o.dst != str(public) or o.dport != port:
                continue
            if conn in seen and client_port is None:
                continue
            if client_port is not None and o.sport != client_port:
                continue
            entries.append(conn)
    reachable = probe.outcome in ("connected", "answered")
    cause = ""
    diagnosis = None
    if not reachable:
        cause = _cause(probe, router, hits, entries, protocol)
        if diagnose:
            diagnosis = _diagnose(public, port, protocol, from_netns, timeout)
    where = f"{public}:{port}" if public.version == 4 else f"[{public}]:{port}"
    return CheckResult(
        where,
        protocol.value,
        from_netns,
        reachable,
        probe,
        router,
        tuple(hits),
        tuple(entries),
        cause,
        diagnosis,
        tuple(notes),
    )


def _cause(
    probe: Probe, router: str | None, hits: list[RuleHit], entries: list[Connection], protocol: Transport
) -> str:
    """The reason a check failed, from what the router saw."""
    seen = {
        "refused": "the connection was refused",
        "timeout": "nothing answered (timed out)",
        "unreachable": f"the network said unreachable ({probe.error})",
        "no-answer": "no UDP answer came back (the service may be silent, or the datagram was dropped)",
        "error": f"the probe failed ({probe.error})",
    }.get(probe.outcome, probe.outcome)
    if router is None:
        return f"{seen}; the router is not on this machine, so only the probe is known"
    label = f"netns {router}" if router else "this host"
    if not entries and not hits:
        return (
            f"{seen}; no DNAT rule on the router ({label}) matched the probe "
            "and conntrack holds no DNATed entry for it"
        )
    dnat = [c for c in entries if c.dnat]
    if dnat:
        where = f"{dnat[0].reply.src}:{dnat[0].reply.sport}"
    elif hits:
        # A refused connection leaves no conntrack entry behind (the RST ends it): the rule
        # that counted the probe says where it went.
        where = hits[0].target or f"the target of {hits[0].table} {hits[0].chain} handle {hits[0].handle}"
    else:
        return f"{seen}; the router ({label}) tracked the connection but did not DNAT it"
    if probe.outcome == "refused":
        return (
            f"{seen}; the router DNATed it to {where}, which refused it: nothing listens there (or a reject)"
        )
    return (
        f"{seen}; the router DNATed it to {where} but no answer came back: the forward path's "
        f"filter drops it, forwarding is off, or {where} does not answer"
    )


def _diagnose(
    public: IPAddress, port: int, protocol: Transport, from_netns: str, timeout: float
) -> dict[str, Any] | None:
    """portkit.diagnose's account of the failure (`diagnose_reach` from the same vantage, as
    `diagnosis_json` writes it), when that capability is installed; None when it is not."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("portkit.diagnose._reach") is None:
        return None
    diagnose = importlib.import_module("portkit.diagnose")
    reach = getattr(diagnose, "diagnose_reach", None)
    render = getattr(diagnose, "diagnosis_json", None)
    if reach is None or render is None:
        return None
    try:
        result = reach(str(public), port, protocol, from_netns=from_netns, timeout=timeout)
    except (PortkitError, OSError) as exc:
        return {"error": f"diagnose failed: {exc}"}
    document = render(result)
    return document if isinstance(document, dict) else None
