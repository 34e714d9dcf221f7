"""`nat add` and `nat rm` against a live host: what the host's state adds to a forward's rules,
loading them through portkit's guarded apply, and deleting exactly the rules one add made.

Planning reads, never writes: the live ruleset (forward chains in other nft tables that would
drop the forward: an accept in portkit's own table would not override them, so the accept is
inserted at their top too), `ip_forward`, the route to the target and the target's subnet
(the hairpin clients). Removal finds the rules by their `portkit-nat:ID` comment: nft rules
by handle (`delete rule ... handle N`), iptables rules by their iptables-save line (`-D`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError, UsageError, quote
from portkit.model import parse_decimal
from portkit.nat._generate import (
    NFT_TABLE,
    TAG_PREFIX,
    ForwardChain,
    Generated,
    PortForward,
    load_command,
    render,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_port(text: str, what: str = "port") -> int:
    number = parse_decimal(text.strip())
    if number is None or not 1 <= number <= 65535:
        raise UsageError(f"invalid {what} {quote(text)}: expected a port number 1-65535")
    return number


def parse_address_or_name(text: str, what: str) -> IPAddress:
    """An IP address, or a host name this host resolves (/etc/hosts, DNS) to one."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host.isascii():
        # An internationalised name: the resolver is asked for its IDNA (punycode) form.
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", host):
        raise UsageError(f"invalid {what} {quote(text)}: expected an IP address or a host name")
    if re.fullmatch(r"[0-9.]+|0[xX][0-9A-Fa-f.xX]*|.*\.[0-9]+\.?", host):
        # getaddrinfo would read these as inet_aton does: 1.2.3 is 1.2.0.3, 010.0.0.1 is octal
        # 8.0.0.1. A host name's last label is never all digits (RFC 1123 2.1, RFC 3696 2).
        raise UsageError(
            f"invalid {what} {quote(text)}: expected an IPv4 address as four decimal numbers 0-255, "
            "an IPv6 address or a host name"
        )
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise UsageError(
            f"unknown {what} {quote(text)}: not an address, and this host cannot resolve it"
        ) from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    return sorted(addresses, key=lambda a: a.version)[0]


def parse_target(text: str) -> tuple[IPAddress, int]:
    """`HOST:PORT`, `[IPV6]:PORT` -> (address, port)."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or (":" in host and not value.startswith("[")):
        raise UsageError(
            f"invalid target {quote(text)}: expected HOST:PORT, e.g. 192.168.1.100:443 or [fd00::5]:443"
        )
    return parse_address_or_name(host, "target host"), parse_port(port, "target port")


# -- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveFacts:
    """What a host's (or namespace's) live state says about a forward."""

    forwarding: bool | None
    route: str | None  # output interface to the target; "" unknown; None no route
    lan: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    target_local: bool
    blocking: tuple[ForwardChain, ...]
    iptables_blocking: bool  # iptables' FORWARD (or another iptables-nft chain) drops by policy/rule
    interfaces: frozenset[str] = frozenset()  # every interface name; empty when unknown

    @classmethod
    def read(cls, fwd: PortForward, netns: str | None, fmt: str = "nft") -> LiveFacts:
        from portkit.firewall import ChainType, FilterAction, Hook, forwarding_state, read_live, route_lookup
        from portkit.nat._hosts import connected_subnet, interface_addresses

        ruleset = read_live(netns)
        iptables_tables = {n.split(":")[0] for n in ruleset.notes if "read from iptables-save" in n}
        blocking: list[ForwardChain] = []
        ipt = False
        for table in ruleset.tables:
            if table.name == NFT_TABLE or not table.family.covers(fwd.family):
                continue
            if fmt == "firewalld" and table.name == "firewalld":
                continue  # firewalld accepts the flows its forward ports DNAT itself
            for chain in table.chains:
                if chain.hook is not Hook.FORWARD or chain.type is not ChainType.FILTER:
                    continue
                drops = chain.policy is FilterAction.DROP or any(
                    r.action in (FilterAction.DROP, FilterAction.REJECT) for r in chain.rules
                )
                if not drops:
                    continue
                if str(table) in iptables_tables:
                    ipt = True
                else:
                    blocking.append(ForwardChain(table.family.value, table.name, chain.name))
        links = _links(netns)
        subnet = connected_subnet(fwd.target, netns)
        local = any(i.ip == fwd.target for _, i in interface_addresses(netns)) or fwd.target.is_loopback
        return cls(
            forwarding_state(netns).get(fwd.family),
            route_lookup(netns)(fwd.target),
            subnet[1] if subnet else None,
            local,
            tuple(blocking),
            ipt,
            links,
        )


def _links(netns: str | None) -> frozenset[str]:
    argv = ["ip", "-j", "link", "show"] if netns is None else ["ip", "-n", netns, "-j", "link", "show"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        data = json.loads(proc.stdout or "[]")
    except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return frozenset()
    return (
        frozenset(str(d.get("ifname", "")) for d in data if isinstance(d, dict))
        if isinstance(data, list)
        else frozenset()
    )


def plan_forward(
    fwd: PortForward, fmt: str, *, netns: str | None = None, live: bool | None = None, zone: str = ""
) -> Generated:
    """The rules for `fwd` in `fmt`, with notes. With `live` (default: when root) the host's
    (or `netns`'s) state adds the accepts other forward chains need, the hairpin subnet, and
    notes on forwarding and routing; without it the notes say what was not checked."""
    notes: list[str] = []
    blocking: tuple[ForwardChain, ...] = ()
    if fwd.family == 4 and fwd.target.is_loopback:
        # Without it the kernel drops the DNATed packet as a martian: the rules load, and
        # nothing is forwarded.
        iface = fwd.iif or "IFACE"
        notes.append(
            f"{fwd.target} is loopback: the kernel delivers a packet from the network there only "
            f"with `sysctl -w net.ipv4.conf.{iface}.route_localnet=1` (it then accepts any "
            "127.0.0.0/8 destination on that interface); a LAN address of this host needs nothing"
        )
    if live is None:
        live = os.geteuid() == 0
    if live:
        facts = LiveFacts.read(fwd, netns, fmt)
        if fwd.lan is None and facts.lan is not None:
            fwd = replace(fwd, lan=facts.lan)
        sysctl = "net.ipv4.ip_forward" if fwd.family == 4 else "net.ipv6.conf.all.forwarding"
        if facts.target_local:
            notes.append(
                f"{fwd.target} is an address of this host: the connection is delivered here, not forwarded"
            )
        elif facts.forwarding is False:
            notes.append(
                f"forwarding is off: run `sysctl -w {sysctl}=1` (and set it in /etc/sysctl.d/), "
                "or nothing is forwarded"
            )
        if fwd.iif and facts.interfaces and fwd.iif not in facts.interfaces:
            notes.append(
                f"there is no interface {fwd.iif} here ({', '.join(sorted(facts.interfaces))}): "
                "the rules match nothing until it exists"
            )
        if facts.route is None:
            notes.append(f"no route to {fwd.target}: add one, or the forwarded packets are dropped")
        if facts.blocking and fmt == "nft":
            for where in facts.blocking:
                notes.append(
                    f"{where.family} {where.table} {where.chain} drops forwarded traffic: "
                    "the accept is inserted at its top too"
                )
        elif facts.blocking:
            names = ", ".join(f"{w.family} {w.table} {w.chain}" for w in facts.blocking)
            notes.append(f"nft chain(s) {names} drop forwarded traffic: these {fmt} rules do not open them")
        if facts.iptables_blocking and fmt == "nft":
            notes.append(
                "iptables' FORWARD chain drops forwarded traffic and these nft rules do not open it: "
                "load the --to iptables output's *filter accept as well"
            )
        blocking = facts.blocking
    else:
        notes.append("not root: the live rules, ip_forward and routes were not checked")
    if fwd.hairpin and fwd.lan is None:
        notes.append(f"hairpin clients assumed in {fwd.hairpin_lan} (the target's subnet could not be read)")
    text = render(fwd, fmt, blocking=blocking, zone=zone)
    return Generated(fmt, fwd, text, tuple(notes), load_command(fwd, fmt))


# -- applying ---------------------------------------------------------------------------------


def apply_forward(
    generated: Generated,
    *,
    netns: str | None = None,
    confirm_within: float = 30.0,
    interactive: bool = False,
    state_root: Path | None = None,
) -> Any:
    """Load nft rules through portkit's guarded apply (`nft -c`, atomic swap, roll-back unless
    confirmed): the running ruleset with these rules added, as nft itself merges them."""
    from portkit.firewall import apply_ruleset, parse_nft_script
    from portkit.firewall._live import run_tool

    if generated.format != "nft":
        raise UsageError(f"--apply loads nft rules only: for {generated.format}, use {generated.load}")
    if os.geteuid() != 0:
        raise PermissionNeeded("applying firewall rules needs root (CAP_NET_ADMIN): run with sudo")
    running = run_tool(["nft", "list", "ruleset"], netns=netns)
    if running.returncode != 0:
        raise PortkitError(f"cannot read the running ruleset: {running.stderr.strip()}")
    merged = parse_nft_script(running.stdout + "\n" + generated.text, source="running rules + nat add")
    return apply_ruleset(
        merged, netns=netns, confirm_within=confirm_within, interactive=interactive, state_root=state_root
    )


# -- removing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """The commands that delete one forward's rules, and the rules they delete."""

    id: str
    nft: tuple[str, ...]  # nft script lines
    iptables: tuple[tuple[str, ...], ...]  # argv of each iptables/ip6tables -D command
    rules: tuple[str, ...]  # what is deleted, for people

    @property
    def empty(self) -> bool:
        return not self.nft and not self.iptables

    def script(self) -> str:
        lines = [f"# remove {TAG_PREFIX}{self.id}"]
        if self.nft:
            lines.append("nft -f - <<'EOF'")
            lines.extend(self.nft)
            lines.append("EOF")
        lines.extend(" ".join(shlex.quote(a) for a in argv) for argv in self.iptables)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tag": TAG_PREFIX + self.id,
            "rules": list(self.rules),
            "nft": list(self.nft),
            "iptables": [list(a) for a in self.iptables],
        }


def _nft_tagged(document: dict[str, Any], tag: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """nft `delete rule` lines and texts for native rules with comment `tag`; the (family, table)
    pairs of portkit's own tables, which are deleted when nothing else remains in them."""
    deletes, texts = [], []
    counts: dict[tuple[str, str], int] = {}
    tagged: dict[tuple[str, str], int] = {}
    for item in document.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        key = (str(rule.get("family")), str(rule.get("table")))
        counts[key] = counts.get(key, 0) + 1
        if rule.get("comment") == tag:
            tagged[key] = tagged.get(key, 0) + 1
            deletes.append(f"delete rule {key[0]} {key[1]} {rule.get('chain')} handle {rule.get('handle')}")
            texts.append(f"{key[0]} {key[1]} {rule.get('chain')} handle {rule.get('handle')}")
    emptied = [k for k, n in tagged.items() if k[1] == NFT_TABLE and counts.get(k) == n]
    return deletes, texts, emptied


def find_removal(forward_id: str, netns: str | None = None) -> Removal:
    """What deletes the rules `nat add` tagged `portkit-nat:ID` on this host (or `netns`)."""
    from portkit.firewall._live import nft_json, run_tool
    from portkit.nat._forwards import need_root

    need_root(f"nat rm finds the rules tagged {TAG_PREFIX}{forward_id} in the live ruleset")
    tag = TAG_PREFIX + forward_id
    document = json.loads(nft_json(netns))
    deletes, texts, emptied = _nft_tagged(document, tag)
    nft_lines = list(deletes)
    nft_lines += [f"delete table {fam} {name}" for fam, name in emptied]
    ipt: list[tuple[str, ...]] = []
    for tool, cmd in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        proc = run_tool([tool], netns=netns)
        if proc.returncode != 0:
            continue
        table = ""
        for line in proc.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith("-A ") and tag in line:
                words = shlex.split(line)
                at = [i for i, w in enumerate(words) if w == "--comment"]
                if not any(i + 1 < len(words) and words[i + 1] == tag for i in at):
                    continue
                ipt.append((cmd, "-t", table, "-D", *words[1:]))
                texts.append(f"{cmd} -t {table} {line}")
    return Removal(forward_id, tuple(nft_lines), tuple(ipt), tuple(texts))


def remove_forward(removal: Removal, netns: str | None = None) -> None:
    """Run a Removal's commands (nft in one transaction first, then each iptables -D)."""
    from portkit.firewall._live import run_tool

    if removal.nft:
        proc = run_tool(["nft", "-f", "-"], netns=netns, stdin="\n".join(removal.nft) + "\n")
        if proc.returncode != 0:
            raise PortkitError(f"nft refused the removal: {proc.stderr.strip()[:300]}")
    for argv in removal.iptables:
        proc = run_tool(list(argv), netns=netns)
        if proc.returncode != 0:
            raise PortkitError(f"{' '.join(argv[:5])} ... failed: {proc.stderr.strip()[:300]}")
