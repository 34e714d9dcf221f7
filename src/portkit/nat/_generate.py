"""A port forward, and the complete rules that make it in nft, iptables, firewalld and ufw.

A `PortForward` says "public PROTO PORT -> TARGET:PORT", optionally only on one input interface
or one public address, optionally with hairpin (clients on the target's side, and this host
itself, reaching the target through the public address). Each renderer writes every rule the
forward needs and nothing broader:

- prerouting DNAT: only PROTO to the public port, and only to the public address (or, when
  none is named, to one of this host's own addresses: `fib daddr type local`, iptables'
  `-m addrtype --dst-type LOCAL`, as Docker does), so traffic passing through to other hosts
  on that port is never captured;
- the forward-path accept: only PROTO to TARGET:PORT of connections that a DNAT rewrote
  (`ct status dnat`, iptables' `--ctstate DNAT`), so nothing reaches the target unasked;
- for hairpin, the same DNAT for packets from other interfaces and from this host (output),
  and a masquerade of the hairpinned connections only (source in the target's subnet,
  destination TARGET:PORT, DNATed), so the target's replies come back through this host.

Every rule carries the comment `portkit-nat:ID` (`PortForward.tag`): `nat rm ID` deletes
exactly the rules with it. What is not a rule (the `ip_forward` sysctl, a missing route) is a
note, never a rule.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from portkit.errors import UsageError, quote
from portkit.model import Transport

TAG_PREFIX = "portkit-nat:"
NFT_TABLE = "portkit_nat"
FORMATS = ("nft", "iptables", "firewalld", "ufw")
_IFACE = re.compile(r"[A-Za-z0-9_.@:-]{1,15}")
_ID = re.compile(r"(tcp|udp)-(?:([0-9a-fA-F.:]+)-)?([0-9]{1,5})")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _undeliverable(address: IPAddress) -> str:
    """Why a DNAT to `address` can deliver nothing, or ''."""
    if address.is_unspecified:
        return "the unspecified address is no destination (DNAT to this host's own address instead)"
    if address.is_multicast:
        return "a multicast group is no DNAT destination"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address is no DNAT destination"
    if address.version == 6 and address.is_loopback:
        # IPv6 has no route_localnet: a packet from the network is never routed to ::1.
        return "the kernel never routes a packet from the network to ::1"
    return ""


@dataclass(frozen=True)
class PortForward:
    """`protocol` traffic to `public_port` (on `iif` / `public_address` when given) -> target."""

    public_port: int
    target: IPAddress
    target_port: int
    protocol: Transport = Transport.TCP
    iif: str = ""
    public_address: IPAddress | None = None
    hairpin: bool = False
    # The hairpin clients' subnet (the target's own, normally): whose connections are masqueraded.
    lan: IPNetwork | None = None

    def __post_init__(self) -> None:
        for what, port in (("public port", self.public_port), ("target port", self.target_port)):
            if not 1 <= port <= 65535:
                raise UsageError(f"invalid {what} {port}: ports are 1-65535")
        if self.protocol not in (Transport.TCP, Transport.UDP):
            raise UsageError(f"invalid protocol {self.protocol.value!r}: expected tcp or udp")
        if self.iif and (not _IFACE.fullmatch(self.iif) or self.iif in (".", "..")):
            raise UsageError(f"invalid interface {quote(self.iif)}: expected a Linux interface name")
        nowhere = _undeliverable(self.target)
        if nowhere:
            raise UsageError(
                f"invalid target {self.target}: {nowhere}; expected a unicast address to forward to"
            )
        if self.public_address is not None and self.public_address.version != self.target.version:
            raise UsageError(
                f"invalid --public-addr {self.public_address}: "
                f"the target {self.target} is IPv{self.target.version}"
            )
        if self.lan is not None and self.lan.version != self.target.version:
            raise UsageError(
                f"invalid LAN subnet {self.lan}: the target {self.target} is IPv{self.target.version}"
            )

    @property
    def family(self) -> int:
        return self.target.version

    @property
    def id(self) -> str:
        """`tcp-8443`, or `tcp-203.0.113.1-8443` when bound to a public address."""
        addr = f"{self.public_address}-" if self.public_address is not None else ""
        return f"{self.protocol.value}-{addr}{self.public_port}"

    @property
    def tag(self) -> str:
        return TAG_PREFIX + self.id

    @property
    def target_text(self) -> str:
        host = f"[{self.target}]" if self.family == 6 else str(self.target)
        return f"{host}:{self.target_port}"

    @property
    def hairpin_lan(self) -> IPNetwork:
        """The hairpin clients' subnet: `lan`, else the target's /24 (IPv4) or /64 (IPv6)."""
        if self.lan is not None:
            return self.lan
        return ipaddress.ip_network(f"{self.target}/{24 if self.family == 4 else 64}", strict=False)

    def __str__(self) -> str:
        public = f"{self.public_address}:" if self.public_address is not None else ":"
        where = f" in {self.iif}" if self.iif else ""
        return f"{self.protocol.value} {public}{self.public_port}{where} -> {self.target_text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tag": self.tag,
            "protocol": self.protocol.value,
            "public_address": str(self.public_address) if self.public_address is not None else None,
            "public_port": self.public_port,
            "in": self.iif or None,
            "target": str(self.target),
            "target_port": self.target_port,
            "hairpin": self.hairpin,
            "hairpin_lan": str(self.hairpin_lan) if self.hairpin else None,
        }


def parse_forward_id(text: str) -> str:
    """A forward's id as `nat add` prints it (`tcp-8443`, `udp-203.0.113.1-53`), or a portkit-nat tag."""
    value = text.strip()
    value = value[len(TAG_PREFIX) :] if value.startswith(TAG_PREFIX) else value
    match = _ID.fullmatch(value)
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        raise UsageError(
            f"invalid forward id {quote(text)}: expected PROTO-PORT or PROTO-ADDRESS-PORT, e.g. tcp-8443"
        )
    if match.group(2):
        try:
            ipaddress.ip_address(match.group(2))
        except ValueError:
            raise UsageError(
                f"invalid forward id {quote(text)}: {quote(match.group(2))} is not an address"
            ) from None
    return value


@dataclass(frozen=True)
class ForwardChain:
    """A live filter chain on the forward hook that would drop the forward unless told otherwise:
    `nat add` inserts its accept at the top of it too (an accept in its own table would not do)."""

    family: str
    table: str
    chain: str


@dataclass(frozen=True)
class Generated:
    """The rules text for one format, and the notes that are not rules."""

    format: str
    forward: PortForward
    text: str
    notes: tuple[str, ...] = field(default=())
    load: str = ""  # the command that loads `text` as it is

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "forward": self.forward.to_json(),
            "rules": self.text,
            "load": self.load,
            "notes": list(self.notes),
        }


# -- nftables ---------------------------------------------------------------------------------


def _loopback(fwd: PortForward) -> str:
    return "127.0.0.0/8" if fwd.family == 4 else "::1"


def _nft_ip(fwd: PortForward) -> str:
    return "ip" if fwd.family == 4 else "ip6"


def _nft_public(fwd: PortForward) -> str:
    if fwd.public_address is not None:
        return f"{_nft_ip(fwd)} daddr {fwd.public_address}"
    return "fib daddr type local"


def nft_rules(fwd: PortForward) -> dict[str, list[str]]:
    """The rules of each chain of the `portkit_nat` table (chain name -> rule texts)."""
    proto, ip, tag = fwd.protocol.value, _nft_ip(fwd), f'comment "{fwd.tag}"'
    dnat = f"counter dnat {ip} to {fwd.target_text} {tag}"
    match = f"{_nft_public(fwd)} {proto} dport {fwd.public_port}"
    pre = [f'iifname "{fwd.iif}" {match} {dnat}' if fwd.iif else f"{match} {dnat}"]
    chains: dict[str, list[str]] = {"prerouting": pre}
    if fwd.hairpin:
        if fwd.iif:
            pre.append(f'iifname != "{fwd.iif}" {match} {dnat}')
        # This host's connections to its loopback stay its own (as Docker's `! -d 127.0.0.0/8`).
        loopback = "" if fwd.public_address is not None else f"{ip} daddr != {_loopback(fwd)} "
        chains["output"] = [f"{loopback}{match} {dnat}"]
        chains["postrouting"] = [
            f"{ip} saddr {fwd.hairpin_lan} {ip} daddr {fwd.target} {proto} dport {fwd.target_port} "
            f"ct status dnat counter masquerade {tag}"
        ]
    chains["forward"] = [forward_accept_nft(fwd)]
    return chains


def forward_accept_nft(fwd: PortForward) -> str:
    ip = _nft_ip(fwd)
    return (
        f"{ip} daddr {fwd.target} {fwd.protocol.value} dport {fwd.target_port} ct status dnat "
        f'counter accept comment "{fwd.tag}"'
    )


_NFT_CHAIN_HEAD = {
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}


def render_nft(fwd: PortForward, blocking: tuple[ForwardChain, ...] = ()) -> str:
    """An `nft -f -` script: the forward's rules in table `ip portkit_nat` (`ip6` for IPv6;
    declaring a table or chain that exists adds to it), plus its accept inserted at the top
    of each live forward chain in `blocking`."""
    family = _nft_ip(fwd)
    lines = [f"# {fwd.tag}: {fwd}", f"table {family} {NFT_TABLE} {{"]
    for chain, rules in nft_rules(fwd).items():
        lines.append(f"  chain {chain} {{")
        lines.append(f"    {_NFT_CHAIN_HEAD[chain]}")
        lines.extend(f"    {rule}" for rule in rules)
        lines.append("  }")
    lines.append("}")
    for where in blocking:
        lines.append(f"insert rule {where.family} {where.table} {where.chain} {forward_accept_nft(fwd)}")
    return "\n".join(lines) + "\n"


# -- iptables ---------------------------------------------------------------------------------


def _ipt_comment(fwd: PortForward) -> list[str]:
    return ["-m", "comment", "--comment", fwd.tag]


def iptables_rules(fwd: PortForward) -> dict[str, list[list[str]]]:
    """iptables rule arguments (after `-A`/`-I`) per table."""
    proto = fwd.protocol.value
    public = (
        ["-d", str(fwd.public_address)]
        if fwd.public_address is not None
        else ["-m", "addrtype", "--dst-type", "LOCAL"]
    )
    port = ["-p", proto, "-m", proto, "--dport", str(fwd.public_port)]
    dnat = [*_ipt_comment(fwd), "-j", "DNAT", "--to-destination", fwd.target_text]
    iif = ["-i", fwd.iif] if fwd.iif else []
    nat = [["PREROUTING", *iif, *public, *port, *dnat]]
    if fwd.hairpin:
        if fwd.iif:
            nat.append(["PREROUTING", "!", "-i", fwd.iif, *public, *port, *dnat])
        loopback = [] if fwd.public_address is not None else ["!", "-d", _loopback(fwd)]
        nat.append(["OUTPUT", *loopback, *public, *port, *dnat])
        nat.append(
            ["POSTROUTING", "-s", str(fwd.hairpin_lan), "-d", str(fwd.target), "-p", proto, "-m", proto,
             "--dport", str(fwd.target_port), "-m", "conntrack", "--ctstate", "DNAT", *_ipt_comment(fwd),
             "-j", "MASQUERADE"]
        )  # fmt: skip
    accept = [
        "FORWARD", "-d", str(fwd.target), "-p", proto, "-m", proto, "--dport", str(fwd.target_port),
        "-m", "conntrack", "--ctstate", "DNAT", *_ipt_comment(fwd), "-j", "ACCEPT",
    ]  # fmt: skip
    return {"nat": nat, "filter": [accept]}


def _words(args: list[str]) -> str:
    """iptables-restore's words: it splits on blanks and honours double quotes, never shell quoting."""
    return " ".join(f'"{a}"' if not a or any(c in a for c in " \t\"'") else a for a in args)


def render_iptables(fwd: PortForward, *, forward_chain: str = "FORWARD") -> str:
    """`iptables-restore -n` input (`ip6tables-restore -n` for IPv6): appended NAT rules, and the
    forward accept inserted first in `forward_chain` (ufw: ufw-before-forward)."""
    rules = iptables_rules(fwd)
    lines = [f"# {fwd.tag}: {fwd}", "*nat"]
    lines.extend(f"-A {_words(r)}" for r in rules["nat"])
    lines += ["COMMIT", "*filter"]
    for r in rules["filter"]:
        verb = "-A" if forward_chain != "FORWARD" else "-I"
        lines.append(f"{verb} {_words([forward_chain, *r[1:]])}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


# -- ufw --------------------------------------------------------------------------------------


def render_ufw(fwd: PortForward) -> str:
    """Text for /etc/ufw/before.rules (before6.rules for IPv6): a `*nat` section to put above
    its `*filter`, and a `*filter` section whose `ufw-before-forward` accept lets exactly the
    DNATed connections through ufw's routed policy (ufw reads several sections of one table)."""
    rules = iptables_rules(fwd)
    chains = sorted({r[0] for r in rules["nat"]}, key=["PREROUTING", "OUTPUT", "POSTROUTING"].index)
    six = "6" if fwd.family == 6 else ""
    lines = [
        f"# {fwd.tag}: {fwd}",
        f"# Add to /etc/ufw/before{six}.rules above its *filter section, then: ufw reload",
        "# (not `ufw route allow`: that would also pass forwarded traffic no DNAT rewrote)",
        "*nat",
        *(f":{c} ACCEPT [0:0]" for c in chains),
        *(f"-A {_words(r)}" for r in rules["nat"]),
        "COMMIT",
        "*filter",
        ":ufw-before-forward - [0:0]",
        *(f"-A {_words(['ufw-before-forward', *r[1:]])}" for r in rules["filter"]),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


# -- firewalld --------------------------------------------------------------------------------


def render_firewalld(fwd: PortForward, *, zone: str = "") -> str:
    """`firewall-cmd` lines. A forward port (firewalld accepts its DNATed flows itself); bound to
    an address, a rich rule; hairpin as direct rules (firewalld has no words for it)."""
    zone_opt = f"--zone={shlex.quote(zone)} " if zone else ""
    if fwd.iif and not zone:
        zone_opt = f'--zone="$(firewall-cmd --get-zone-of-interface={fwd.iif})" '
    proto, fam = fwd.protocol.value, "ipv4" if fwd.family == 4 else "ipv6"
    if fwd.public_address is None and fwd.family == 4:
        what = (
            f"--add-forward-port=port={fwd.public_port}:proto={proto}:"
            f"toport={fwd.target_port}:toaddr={fwd.target}"
        )
        add = f"firewall-cmd --permanent {zone_opt}{what}"
    else:
        dest = f' destination address="{fwd.public_address}"' if fwd.public_address is not None else ""
        rich = (
            f'rule family="{fam}"{dest} forward-port port="{fwd.public_port}" protocol="{proto}" '
            f'to-port="{fwd.target_port}" to-addr="{fwd.target}"'
        )
        add = f"firewall-cmd --permanent {zone_opt}--add-rich-rule={shlex.quote(rich)}"
    lines = [f"# {fwd.tag}: {fwd}", "# remove: the same lines with --remove- for --add-", add]
    if fwd.hairpin:
        rules = iptables_rules(fwd)
        for r in rules["nat"][1:]:
            lines.append(f"firewall-cmd --permanent --direct --add-rule {fam} nat {r[0]} 0 {_words(r[1:])}")
    lines.append("firewall-cmd --reload")
    return "\n".join(lines) + "\n"


def parse_firewalld(text: str) -> tuple[list[dict[str, str]], list[tuple[str, str, str]]]:
    """The forward ports (as firewalld's option fields) and direct rules (family, table,
    iptables arguments) a `firewall-cmd` script adds; a line it cannot read is a UsageError."""
    ports: list[dict[str, str]] = []
    direct: list[tuple[str, str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        words = shlex.split(s.replace('"$(', "'$(").replace(')"', ")'"))
        if words[:1] != ["firewall-cmd"]:
            raise UsageError(f"invalid firewalld line {number}: {quote(s)}: expected firewall-cmd")
        rest = [w for w in words[1:] if w != "--permanent" and not w.startswith("--zone=")]
        if rest == ["--reload"]:
            continue
        if rest[:1] and rest[0].startswith("--add-forward-port="):
            fields = dict(kv.split("=", 1) for kv in rest[0].split("=", 1)[1].split(":"))
            ports.append(fields)
        elif rest[:1] and rest[0].startswith("--add-rich-rule="):
            rich = rest[0].split("=", 1)[1]
            found = dict(re.findall(r'([a-z-]+)="([^"]*)"', rich))
            fields = {"port": found["port"], "proto": found["protocol"], "toport": found["to-port"],
                      "toaddr": found["to-addr"]}  # fmt: skip
            if "address" in found:
                fields["destination"] = found["address"]
            ports.append(fields)
        elif rest[:2] == ["--direct", "--add-rule"] and len(rest) > 5:
            direct.append((rest[2], rest[3], " ".join([rest[4], *rest[6:]])))
        else:
            raise UsageError(f"invalid firewalld line {number}: {quote(s)}")
    return ports, direct


def render(fwd: PortForward, fmt: str, *, blocking: tuple[ForwardChain, ...] = (), zone: str = "") -> str:
    if fmt == "nft":
        return render_nft(fwd, blocking)
    if fmt == "iptables":
        return render_iptables(fwd)
    if fmt == "ufw":
        return render_ufw(fwd)
    if fmt == "firewalld":
        return render_firewalld(fwd, zone=zone)
    raise UsageError(f"invalid format {quote(fmt)}: expected one of {', '.join(FORMATS)}")


def load_command(fwd: PortForward, fmt: str) -> str:
    """How to load the text as it is."""
    six = "6" if fwd.family == 6 else ""
    return {
        "nft": "nft -f -",
        "iptables": f"ip{six}tables-restore -n",
        "ufw": f"paste into /etc/ufw/before{six}.rules, then ufw reload",
        "firewalld": "sh",
    }[fmt]
