"""`portkit audit`'s reach per zone against real connections from a namespace in that zone.

A server namespace with a LAN side (lan0, 10.78.0.1/24) and a WAN side carrying the default route
(wan0, 203.0.113.1/24), an nftables input chain that admits ports by interface, by source, by
destination address, by rejecting or dropping; listeners on every interface, on one address, on
loopback and dual-stack. A LAN client (10.78.0.2) and a WAN client (203.0.113.2) each route
everything through the server, as a neighbour on that segment can. For every listener and zone
the audit calls open or blocked, a TCP connect from that zone to every address of the server the
listener answers on must agree: open when some connect succeeds, blocked when none does. The
audit is told nothing about the clients: it reads the server's rules and addresses only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_root
from fixtures_audit import holding_listeners
from portkit.testing import LabNamespace, connect

PORTKIT = [sys.executable, "-m", "portkit"]
LAN_ADDR, WAN_ADDR = "10.78.0.1", "203.0.113.1"
LAN6, WAN6 = "fd78::1", "2001:db8:78::1"

RULES = f"""
table inet filter {{
    chain input {{
        type filter hook input priority 0; policy drop;
        iif "lo" accept
        ct state established,related accept
        tcp dport 3001 accept
        iifname "lan0" tcp dport 3002 accept
        ip saddr 10.78.0.0/24 tcp dport 3003 accept
        ip daddr {LAN_ADDR} tcp dport 3004 accept
        tcp dport 3005 reject with tcp reset
        iifname "wan0" tcp dport 3006 drop
        tcp dport 3006 accept
        tcp dport 3007 accept
        ip daddr {WAN_ADDR} tcp dport 3008 accept
        tcp dport 3010 accept
        tcp dport 3011 accept
        ip saddr != 10.78.0.0/24 tcp dport 3012 accept
        ip6 daddr {LAN6} tcp dport 3013 accept
        ip6 saddr fd78::/64 tcp dport 3014 accept
        meta nfproto ipv6 tcp dport 3015 accept
        ip saddr 203.0.113.64/26 tcp dport 3016 accept
        ip saddr 10.78.0.200 tcp dport 3017 accept
        ip6 saddr 2001:db8:78::70 tcp dport 3018 accept
        udp dport 4001 accept
        iifname "lan0" udp dport 4002 accept
        ip saddr 10.78.0.0/24 udp dport 4003 accept
        udp dport 4004 reject
        ip daddr {LAN_ADDR} udp dport 4006 accept
        udp dport 4007 accept
        meta nfproto ipv6 udp dport 4008 accept
    }}
}}
"""

LISTENING = [
    "0.0.0.0:3001",
    "0.0.0.0:3002",
    "0.0.0.0:3003",
    "0.0.0.0:3004",
    "0.0.0.0:3005",
    "0.0.0.0:3006",
    f"{LAN_ADDR}:3007",  # one address; Linux answers it on any interface (weak host model)
    "0.0.0.0:3008",
    "0.0.0.0:3009",  # no rule admits it
    ":::3010",  # dual-stack: IPv4 clients reach it too
    "127.0.0.1:3011",  # the firewall admits it, the bind address does not
    "0.0.0.0:3012",
    ":::3013",
    ":::3014",
    ":::3015",  # open to IPv6 only: IPv4 clients of the dual-stack socket are dropped
    "0.0.0.0:3016",  # an allowlisted network on the WAN side: open to anyone from it only
    "0.0.0.0:3017",  # one LAN host
    ":::3018",  # one IPv6 host on the WAN side
]

# Every client tries each target from each of its addresses (the zone's sources the rules
# single out among them): open when one of them gets in.
WAN_SOURCES = ("203.0.113.2", "203.0.113.70", "2001:db8:78::2", "2001:db8:78::70")
LAN_SOURCES = ("10.78.0.2", "10.78.0.200", "fd78::2")

PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
SOURCES = [s for s in sys.argv[1].split(",") if s]
def attempt(address, port, source):
    try:
        socket.create_connection((address, int(port)), timeout=1.5, source_address=source).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"
def probe(target):
    address, port = target.rsplit(":", 1)
    address = address.strip("[]")
    sources = [(s, 0) for s in SOURCES if (":" in s) == (":" in address)] or [None]
    results = [attempt(address, port, source) for source in sources]
    return next((r for r in ("open", "refused") if r in results), "timeout")
targets = sys.argv[2:]
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(probe, targets)))))
"""


# UDP listeners that echo each datagram (4005: no rule admits it).
UDP_LISTENING = ["0.0.0.0:4001", "0.0.0.0:4002", "0.0.0.0:4003", "0.0.0.0:4004", "0.0.0.0:4005",
                 "0.0.0.0:4006", ":::4007", ":::4008"]  # fmt: skip

UDP_ECHO = r"""
import selectors, socket, sys
selector = selectors.DefaultSelector()
for spec in sys.argv[1:]:
    address, port = spec.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((address, int(port)))
    selector.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in selector.select():
        data, peer = key.fileobj.recvfrom(2048)
        key.fileobj.sendto(data, peer)
"""

# A datagram to each target from an unconnected socket: "open" when the echo of its token comes
# back from any address (a multihomed server may answer from another one), else "blocked".
UDP_PROBE = r"""
import json, os, select, socket, sys, time
targets = sys.argv[1:]
socks, tokens = {}, {}
for target in targets:
    address, port = target.rsplit(":", 1)
    address = address.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    tokens[target] = os.urandom(8).hex().encode()
    socks[s] = target
    for _ in range(2):
        s.sendto(tokens[target], (address, int(port)))
seen = {target: "blocked" for target in targets}
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    ready, _, _ = select.select(list(socks), [], [], max(0.0, deadline - time.monotonic()))
    for s in ready:
        try:
            data = s.recv(2048)
        except OSError:
            continue
        if data == tokens[socks[s]]:
            seen[socks[s]] = "open"
print(json.dumps(seen))
"""


class TruthLab:
    def __init__(self, server: LabNamespace, lan: LabNamespace, wan: LabNamespace) -> None:
        self.server, self.lan, self.wan = server, lan, wan

    def probe(self, ns: LabNamespace, targets: list[str]) -> dict[str, str]:
        sources = {self.lan.name: LAN_SOURCES, self.wan.name: WAN_SOURCES}.get(ns.name, ())
        proc = subprocess.run(
            ns.command([sys.executable, "-c", PROBE, ",".join(sources), *targets]),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        result: dict[str, str] = json.loads(proc.stdout)
        return result

    def probe_udp(self, ns: LabNamespace, targets: list[str]) -> dict[str, str]:
        proc = subprocess.run(
            ns.command([sys.executable, "-c", UDP_PROBE, *targets]),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        result: dict[str, str] = json.loads(proc.stdout)
        return result


@pytest.fixture(scope="module")
def truth_lab() -> Iterator[TruthLab]:
    with LabNamespace("pkat") as server, LabNamespace("pkatl") as lan, LabNamespace("pkatw") as wan:
        connect(
            server,
            "lan0",
            [f"{LAN_ADDR}/24", f"{LAN6}/64"],
            lan,
            "eth0",
            [f"{a}/{64 if ':' in a else 24}" for a in LAN_SOURCES],
        )
        connect(
            server,
            "wan0",
            [f"{WAN_ADDR}/24", f"{WAN6}/64"],
            wan,
            "eth0",
            [f"{a}/{64 if ':' in a else 24}" for a in WAN_SOURCES],
        )
        server.ip("route", "add", "default", "via", "203.0.113.2", "dev", "wan0")
        server.ip("-6", "route", "add", "default", "via", "2001:db8:78::2", "dev", "wan0")
        for client, gateway, gateway6 in ((lan, LAN_ADDR, LAN6), (wan, WAN_ADDR, WAN6)):
            client.ip("route", "add", "default", "via", gateway, "dev", "eth0")
            client.ip("-6", "route", "add", "default", "via", gateway6, "dev", "eth0")
        server.nft(RULES)
        echo = subprocess.Popen(
            server.command([sys.executable, "-c", UDP_ECHO, *UDP_LISTENING]),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
            with holding_listeners(server, LISTENING):
                yield TruthLab(server, lan, wan)
        finally:
            echo.kill()
            echo.wait(timeout=10)


def _destinations(item: dict[str, Any], zone: str) -> list[str]:
    """Every address of the server a client in `zone` can send to for this listener."""
    port = item["port"]
    bound = item["addresses"][0]
    if zone == "loopback":
        hosts = {"0.0.0.0": ["127.0.0.1"], "::": ["127.0.0.1", "::1"]}.get(bound, [bound])
    elif bound == "0.0.0.0":
        hosts = [LAN_ADDR, WAN_ADDR]
    elif bound == "::":
        hosts = [LAN_ADDR, WAN_ADDR, LAN6, WAN6]
    else:
        hosts = [bound]  # 127.0.0.1 from another host is its own loopback: not this listener
    return [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts]


Zones = dict[tuple[int, str], list[str]]


def _audited(truth_lab: TruthLab, protocol: str, specs: list[str]) -> dict[int, dict[str, Any]]:
    """`portkit audit --json` of the server: its `protocol` listeners by port (all of `specs`)."""
    proc = subprocess.run(
        [*PORTKIT, "audit", "--json", "--netns", truth_lab.server.name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    listeners = {item["port"]: item for item in report["listeners"] if item["protocol"] == protocol}
    assert set(listeners) >= {int(spec.rsplit(":", 1)[1]) for spec in specs}
    return listeners


def _probed(
    truth_lab: TruthLab, listeners: dict[int, dict[str, Any]], probe: Callable[..., dict[str, str]]
) -> tuple[Zones, dict[str, dict[str, str]]]:
    """Every (port, zone)'s destinations, and what `probe` saw of them from each zone's vantage."""
    vantage = {"loopback": truth_lab.server, "lan": truth_lab.lan, "any": truth_lab.wan}
    plan = {
        (port, zone["zone"]): _destinations(item, zone["zone"])
        for port, item in listeners.items()
        for zone in item["zones"]
    }
    seen = {
        name: probe(ns, sorted({t for (_, z), ts in plan.items() if z == name for t in ts}))
        for name, ns in vantage.items()
    }
    return plan, seen


def _disagreements(
    listeners: dict[int, dict[str, Any]], plan: Zones, seen: dict[str, dict[str, str]], label: str
) -> tuple[list[str], int]:
    """The decided zones whose reach the real traffic contradicts, and how many were decided:
    open when some destination answered, blocked when none did."""
    decided, disagreements = 0, []
    for port, item in sorted(listeners.items()):
        for zone in item["zones"]:
            if zone["reach"] == "uncertain":
                continue
            decided += 1
            results = [seen[zone["zone"]][t] for t in plan[(port, zone["zone"])] if t in seen[zone["zone"]]]
            real = "open" if "open" in results else "blocked"
            if real != zone["reach"]:
                disagreements.append(
                    f"{port}{label} {zone['zone']}: audit {zone['reach']} ({zone['how']}), {results}"
                )
    return disagreements, decided


@needs_root
def test_audit_reach_per_zone_agrees_with_real_connects(truth_lab: TruthLab) -> None:
    listeners = _audited(truth_lab, "tcp", LISTENING)
    plan, seen = _probed(truth_lab, listeners, truth_lab.probe)
    # The lab is what it should be: weak-host and IPv6-only openings are real.
    assert seen["any"][f"{LAN_ADDR}:3004"] == "open" and seen["any"][f"[{LAN6}]:3013"] == "open"
    assert seen["lan"][f"[{LAN6}]:3015"] == "open" and seen["lan"][f"{LAN_ADDR}:3015"] == "timeout"
    assert seen["any"][f"{WAN_ADDR}:3005"] == "refused"
    disagreements, _ = _disagreements(listeners, plan, seen, "")
    assert not disagreements, "\n".join(disagreements)
    # Sources the rules single out: open from those ranges only, and said so.
    zones = {(port, z["zone"]): z for port, item in listeners.items() for z in item["zones"]}
    assert zones[(3016, "any")]["reach"] == "open"
    assert zones[(3016, "any")]["only_from"] == ["203.0.113.64/26"]
    assert zones[(3016, "lan")]["reach"] == "blocked"
    assert zones[(3017, "lan")]["reach"] == "open" and zones[(3017, "lan")]["only_from"] == ["10.78.0.200"]
    assert zones[(3017, "any")]["reach"] == "blocked"
    assert zones[(3018, "any")]["only_from"] == ["2001:db8:78::70"]
    assert zones[(3001, "any")]["only_from"] == []  # the whole zone: no range named


@needs_root
def test_audit_reach_per_zone_agrees_with_real_datagrams(truth_lab: TruthLab) -> None:
    """The same for UDP: a zone the audit calls open gets the echo of some datagram, a blocked
    one gets none (dropped, rejected, or not for this socket)."""
    listeners = _audited(truth_lab, "udp", UDP_LISTENING)
    plan, seen = _probed(truth_lab, listeners, truth_lab.probe_udp)
    # The lab is what it should be: the rules shape what answers.
    assert seen["lan"][f"{LAN_ADDR}:4002"] == "open" and seen["any"][f"{WAN_ADDR}:4002"] == "blocked"
    assert seen["any"][f"{WAN_ADDR}:4004"] == "blocked" and seen["loopback"]["127.0.0.1:4005"] == "open"
    assert seen["any"][f"[{WAN6}]:4008"] == "open" and seen["any"][f"{WAN_ADDR}:4008"] == "blocked"
    disagreements, decided = _disagreements(listeners, plan, seen, "/udp")
    assert not disagreements, "\n".join(disagreements)
    assert decided >= 2 * len(UDP_LISTENING)  # the model decided most zones, not "uncertain"
    reach = {(port, z["zone"]): z["reach"] for port, item in listeners.items() for z in item["zones"]}
    assert reach[(4002, "lan")] == "open"
    assert reach[(4002, "any")] == reach[(4004, "any")] == "blocked"


def _all_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _all_keys(v)}
    return set()


@needs_root
def test_audit_json_has_every_documented_key(truth_lab: TruthLab, tmp_path: Path) -> None:
    """docs/json.md's audit schema against a real run with a policy and a --from scan."""
    text = (Path(__file__).parent.parent / "docs" / "json.md").read_text()
    section = text[text.index("## `portkit audit --json`") :]
    block = section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)]
    documented = set(re.findall(r'"([a-z_]+)":', block))
    joined = block.replace("\n      //", "")
    inherited = re.search(r"every field of an `overview` listener \(([^)]*)\)", joined)
    assert inherited is not None, "the audit schema no longer names the overview fields it inherits"
    documented |= {word.strip() for word in inherited.group(1).split(",")}
    policy = tmp_path / "exposure.toml"
    policy.write_text('version = 1\n[[service]]\nport = 3001\nreach = "lan"\nnetns = "*"\n')
    proc = subprocess.run(
        [*PORTKIT, "audit", "--json", "--netns", truth_lab.server.name, "--from", truth_lab.lan.name,
         "--policy", str(policy)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["findings"] and any(item["observations"] for item in document["listeners"])
    assert len(documented) > 30, documented  # the block was found and read
    missing = documented - _all_keys(document)
    assert not missing, f"documented in docs/json.md, absent from `portkit audit --json`: {sorted(missing)}"


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_without_root_a_namespace_it_cannot_read_is_never_reported_empty(truth_lab: TruthLab) -> None:
    """Without root the sockets of other namespaces cannot be read. --netns / --from naming one
    is refused (exit 1); without them, a service declared there is DECLARED_DOWN only as uncertain."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/tmp"]
    nobody += ["XDG_CONFIG_HOME=/nonexistent-portkit-config", *PORTKIT, "audit"]
    for option, name in (("--netns", truth_lab.server.name), ("--from", truth_lab.lan.name)):
        proc = subprocess.run(
            [*nobody, option, name], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and "needs root" in proc.stderr, proc.stderr
    policy = f'version = 1\n[[service]]\nport = 3001\nreach = "any"\nnetns = "{truth_lab.server.name}"\n'
    proc = subprocess.run(
        [*nobody, "--policy", "-", "--json"],
        input=policy,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (down,) = [f for f in json.loads(proc.stdout)["findings"] if f["code"] == "DECLARED_DOWN"]
    assert "uncertain" in down["message"] and truth_lab.server.name in down["message"], down


@needs_root
def test_sarif_names_the_command_that_ran_even_in_process(
    truth_lab: TruthLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """invocations[0].commandLine comes from the parsed options: main(argv) called by another
    program (here with pytest's own sys.argv) still names the audit, quoted for a shell."""
    from fixtures_bad_input import run_main

    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "unrelated words"])
    result = run_main(
        "audit", "--sarif", "--netns", truth_lab.server.name, "--policy", "-", stdin=b"version = 1\n"
    )
    assert result.status == 0, result.stderr
    (invocation,) = json.loads(result.stdout)["runs"][0]["invocations"]
    assert invocation["commandLine"] == f"portkit audit --sarif --netns {truth_lab.server.name} --policy -"
