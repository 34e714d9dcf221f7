"""Both NATs of one connection, with the kernel as the oracle: the home lab's router (portkit.testing
HomeLab: outside host, router with `wan0` and the LAN bridge `br-lan`, LAN hosts `server` and
`pc`) loads a real rule set with DNAT and masquerade/SNAT, by nft and by iptables-restore; real
TCP connections then go through it:

- hairpin: `pc` connects to the router's public address, DNATed to `server` and masqueraded
  to the router's LAN address, so the server answers the router;
- a plain forward: `outside` connects to the public address, DNATed only;
- the router's own connection: DNATed on output and SNATed (address and port) on postrouting;
- a connection to the router itself, SNATed on input (the router's own server sees the new source).

What the kernel did is read twice: the server reports the peer and local address of the
connection it accepted (socat's SOCAT_PEERADDR/PORT, SOCAT_SOCKADDR/PORT), and the router's
conntrack entry (its reply tuple, reversed, is the packet as it left). portkit's `final_packet`
(the library, live mode: the router's addresses, routes, forwarding and the masquerade address of
the output interface) and `fw check --netns --json` (`final`, `nat`, `snat`) must equal both.
Everything happens inside the lab's namespaces, which carry a per-run suffix and are deleted
with every rule in them, even on failure."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import needs_root
from portkit.firewall import (
    Packet,
    evaluate,
    forwarding_state,
    local_addresses,
    masquerade_lookup,
    read_live,
    route_lookup,
)
from portkit.nat._conntrack import read_conntrack
from portkit.testing import HomeLab, HomeSpec, LabHost

pytestmark = needs_root

SERVER_PORT = 9000
PUBLIC_PORT = 8443
OUTSIDE_PORT = 9100
ROUTER_PORT = 9200
# A public address the router's own connections are DNATed away from (only routed, never used).
DECOY = "198.51.100.9"
# A second address of the router's WAN side: the source its own connections are SNATed to.
ROUTER_ALIAS = "203.0.113.3"
# The port the router's own connections are SNATed to, per loader: a conntrack entry of an
# earlier case still holds the other one.
SNAT_PORT = {"nft": 40123, "iptables": 40124}


def nft_rules(home: HomeLab) -> str:
    server = home.address("server")
    return f"""
table ip natlab {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {home.wan_address} tcp dport {PUBLIC_PORT} dnat to {server}:{SERVER_PORT}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {DECOY} tcp dport {OUTSIDE_PORT} dnat to {home.outside_address}
  }}
  chain input {{
    type nat hook input priority 100; policy accept;
    ip saddr {home.outside_address} tcp dport {ROUTER_PORT} snat to {ROUTER_ALIAS}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 192.168.77.0/24 ip daddr {server} tcp dport {SERVER_PORT} ct status dnat masquerade
    ip daddr {home.outside_address} tcp dport {OUTSIDE_PORT} snat to {ROUTER_ALIAS}:{SNAT_PORT["nft"]}
    oifname "wan0" masquerade
  }}
}}
"""


def iptables_rules(home: HomeLab) -> str:
    server = home.address("server")
    return f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d {home.wan_address}/32 -p tcp -m tcp --dport {PUBLIC_PORT} -j DNAT --to-destination {server}:{SERVER_PORT}
-A INPUT -s {home.outside_address}/32 -p tcp -m tcp --dport {ROUTER_PORT} -j SNAT --to-source {ROUTER_ALIAS}
-A OUTPUT -d {DECOY}/32 -p tcp -m tcp --dport {OUTSIDE_PORT} -j DNAT --to-destination {home.outside_address}
-A POSTROUTING -s 192.168.77.0/24 -d {server}/32 -p tcp -m conntrack --ctstate DNAT -j MASQUERADE
-A POSTROUTING -d {home.outside_address}/32 -p tcp -m tcp --dport {OUTSIDE_PORT} -j SNAT --to-source {ROUTER_ALIAS}:{SNAT_PORT["iptables"]}
-A POSTROUTING -o wan0 -j MASQUERADE
COMMIT
"""  # noqa: E501


# A TCP server that writes back what the kernel handed it: peer and local address and port.
REPORTER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
    "s.listen(16)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    c, peer = s.accept()\n"
    "    me = c.getsockname()\n"
    "    c.sendall(f'{peer[0]} {peer[1]} {me[0]} {me[1]}\\n'.encode())\n"
    "    c.close()\n"
)


@dataclass(frozen=True)
class Seen:
    src: str
    sport: int
    dst: str
    dport: int


@pytest.fixture(scope="module")
def home() -> Iterator[HomeLab]:
    lab = HomeLab(HomeSpec(lan=(LabHost("server"), LabHost("pc")), prefix="pknatt", masquerade=False))
    with lab:
        lab.run("router", ["ip", "addr", "add", f"{ROUTER_ALIAS}/24", "dev", "wan0"])
        for host, port in (("server", SERVER_PORT), ("outside", OUTSIDE_PORT), ("router", ROUTER_PORT)):
            proc = lab.popen(
                host, [sys.executable, "-c", REPORTER, str(port)], stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield lab


def _load(home: HomeLab, kind: str) -> None:
    home.run("router", ["nft", "flush", "ruleset"]).check_returncode()
    if kind == "nft":
        home.nft("router", nft_rules(home))
    else:
        proc = home.run("router", ["iptables-restore"], input=iptables_rules(home))
        assert proc.returncode == 0, proc.stderr


def _connect(home: HomeLab, host: str, address: str, port: int, sport: int) -> Seen:
    """Connect from `host` (source port `sport`): what the server saw."""
    for _ in range(3):
        proc = home.run(
            host,
            ["socat", "-T3", "-", f"TCP:{address}:{port},connect-timeout=3,sourceport={sport},reuseaddr"],
            input="",
        )
        if proc.returncode == 0 and proc.stdout.strip():
            src, s_port, dst, d_port = proc.stdout.split()
            return Seen(src, int(s_port), dst, int(d_port))
        time.sleep(0.3)
    raise AssertionError(f"{host} -> {address}:{port} failed: {proc.stderr.strip()}")


def _conntrack(home: HomeLab, src: str, sport: int) -> Seen:
    """The router's conntrack entry of the connection from src:sport: the packet as it left."""
    with home.inside("router"):
        entries = read_conntrack()
    for c in entries:
        if c.original.src == src and c.original.sport == sport and c.original.protocol == 6:
            return Seen(c.reply.dst, c.reply.dport, c.reply.src, c.reply.sport)
    raise AssertionError(f"no conntrack entry from {src}:{sport} on the router")


def _portkit(home: HomeLab, flow: str) -> tuple[Seen, dict[str, Any]]:
    """portkit's final packet for a flow on the router's live rules: the library and the CLI."""
    netns = home.netns("router")
    ruleset = read_live(netns)
    packet = Packet.parse(flow)
    decision = evaluate(
        ruleset,
        packet,
        local_addresses=frozenset(ipaddress.ip_address(a) for a in local_addresses(netns)),
        route=route_lookup(netns),
        forwarding=forwarding_state(netns, packet.iif),
        masquerade_source=masquerade_lookup(netns),
    )
    assert decision.certain and decision.outcome == "accept", decision.to_json()
    final = decision.final_packet
    assert final is not None
    seen = Seen(str(final.src), final.sport or 0, str(final.dst), final.dport or 0)
    cli = subprocess.run(
        [sys.executable, "-m", "portkit", "fw", "check", "--netns", netns, "--json", flow],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    return seen, json.loads(cli.stdout)


def _same(doc: dict[str, Any], seen: Seen) -> None:
    final = doc["final"]
    assert Seen(final["src"], final["sport"], final["dst"], final["dport"]) == seen, doc


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_hairpin_is_dnated_and_masqueraded_as_the_kernel_does(home: HomeLab, kind: str) -> None:
    _load(home, kind)
    sport = 41001 if kind == "nft" else 42001
    pc = home.address("pc")
    kernel = _connect(home, "pc", home.wan_address, PUBLIC_PORT, sport)
    # The server answers the router, not the pc: that is what makes hairpin work.
    assert kernel == Seen(home.lan_gateway, sport, home.address("server"), SERVER_PORT)
    assert _conntrack(home, pc, sport) == kernel
    flow = f"tcp {pc}:{sport} -> {home.wan_address}:{PUBLIC_PORT} in br-lan"
    seen, doc = _portkit(home, flow)
    assert seen == kernel
    _same(doc, kernel)
    assert doc["nat"] == f"{home.address('server')}:{SERVER_PORT}" and doc["snat"] == home.lan_gateway
    effects = [s["effect"] for s in doc["trace"] if s["matched"] and s["position"]]
    assert effects[0].startswith("dnat to") and effects[-1] == f"masquerade: source -> {home.lan_gateway}"


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_a_plain_forward_is_dnated_only_as_the_kernel_does(home: HomeLab, kind: str) -> None:
    _load(home, kind)
    sport = 41002 if kind == "nft" else 42002
    outside = home.outside_address
    kernel = _connect(home, "outside", home.wan_address, PUBLIC_PORT, sport)
    assert kernel == Seen(outside, sport, home.address("server"), SERVER_PORT)
    assert _conntrack(home, outside, sport) == kernel
    seen, doc = _portkit(home, f"tcp {outside}:{sport} -> {home.wan_address}:{PUBLIC_PORT} in wan0")
    assert seen == kernel
    _same(doc, kernel)
    assert doc["snat"] is None


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_output_dnat_and_snat_as_the_kernel_does(home: HomeLab, kind: str) -> None:
    _load(home, kind)
    sport = 41003 if kind == "nft" else 42003
    kernel = _connect(home, "router", DECOY, OUTSIDE_PORT, sport)
    assert kernel == Seen(ROUTER_ALIAS, SNAT_PORT[kind], home.outside_address, OUTSIDE_PORT)
    assert _conntrack(home, home.wan_address, sport) == kernel
    flow = f"tcp {home.wan_address}:{sport} -> {DECOY}:{OUTSIDE_PORT} out wan0"
    seen, doc = _portkit(home, flow)
    assert seen == kernel
    _same(doc, kernel)
    assert doc["snat"] == f"{ROUTER_ALIAS}:{SNAT_PORT[kind]}"


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_input_snat_as_the_kernel_does(home: HomeLab, kind: str) -> None:
    _load(home, kind)
    sport = 41004 if kind == "nft" else 42004
    outside = home.outside_address
    kernel = _connect(home, "outside", home.wan_address, ROUTER_PORT, sport)
    assert kernel == Seen(ROUTER_ALIAS, sport, home.wan_address, ROUTER_PORT)
    assert _conntrack(home, outside, sport) == kernel
    seen, doc = _portkit(home, f"tcp {outside}:{sport} -> {home.wan_address}:{ROUTER_PORT} in wan0")
    assert seen == kernel
    _same(doc, kernel)
    assert doc["direction"] == "input" and doc["nat"] is None and doc["snat"] == ROUTER_ALIAS
