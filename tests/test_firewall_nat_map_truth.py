"""NAT through maps (`dnat to tcp dport map { 8080 : 10.0.0.2 }`), with the kernel as the oracle.

A router namespace rewrites connections from a WAN client through anonymous and named maps
keyed by port and by source address, with data that is an address or an `address . port`; a
backend namespace behind it answers on every port with the address and port it was reached
at. Each connection's real destination (what the backend reports, or a refusal from the router
itself when no map element applies) must be what portkit's model of the live rules says:
`final_packet` and the direction, certain. The unit tests pin the import (no root needed).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator

import pytest

from conftest import needs_root
from portkit.firewall import Direction, Packet, evaluate, parse_nft_script, read_live
from portkit.testing import LabNamespace, connect

ROUTER_WAN, CLIENT, CLIENT_ALIAS = "203.0.113.1", "203.0.113.2", "198.51.100.7"
BACKENDS = ("10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5")

RULES = """
table ip nat {
    map by_port {
        type inet_service : ipv4_addr
        elements = { 8081 : 10.9.0.3 }
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" dnat to tcp dport map { 8080 : 10.9.0.2, 8443 : 10.9.0.3 }
        iifname "wan0" dnat to tcp dport map @by_port
        iifname "wan0" dnat ip to tcp dport map { 2222 : 10.9.0.5 . 22 }
        iifname "wan0" tcp dport 7000-7999 dnat to ip saddr map { 198.51.100.0/24 : 10.9.0.4 }
    }
}
"""

# (source, port) -> where the connection must land: "ADDR:PORT" at the backend, or "router".
CASES = {
    (CLIENT, 8080): "10.9.0.2:8080",
    (CLIENT, 8443): "10.9.0.3:8443",
    (CLIENT, 8081): "10.9.0.3:8081",  # the named map
    (CLIENT, 2222): "10.9.0.5:22",  # address . port data
    (CLIENT_ALIAS, 7777): "10.9.0.4:7777",  # keyed by source
    (CLIENT, 7777): "router",  # no element for this source: no rewrite, the rule does not apply
    (CLIENT, 9999): "router",  # no element for this port
}

# Answers every connection on every port of 1-65535 it is asked for with "ADDR:PORT" of the
# local end (the destination after NAT), then closes.
REPORTER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in [int(p) for p in sys.argv[1].split(",")]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        host, port = conn.getsockname()[:2]
        conn.sendall(f"{host}:{port}".encode())
        conn.close()
"""

DIAL = r"""
import socket, sys
source, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with socket.create_connection((host, port), timeout=2, source_address=(source, 0)) as s:
        print(s.recv(100).decode())
except ConnectionRefusedError:
    print("router")  # no listener on the router: the connection was not rewritten
except OSError as exc:
    print(f"error {exc}")
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[LabNamespace, LabNamespace]]:
    with LabNamespace("pkmr") as router, LabNamespace("pkmc") as client, LabNamespace("pkmb") as backend:
        connect(router, "wan0", [f"{ROUTER_WAN}/24"], client, "eth0", [f"{CLIENT}/24", f"{CLIENT_ALIAS}/24"])
        connect(router, "lan0", ["10.9.0.1/24"], backend, "eth0", [f"{a}/24" for a in BACKENDS])
        client.ip("route", "add", "default", "via", ROUTER_WAN)
        backend.ip("route", "add", "default", "via", "10.9.0.1")
        router.ip("route", "add", "198.51.100.0/24", "via", CLIENT)
        assert router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]).returncode == 0
        router.nft(RULES)
        ports = sorted({int(dest.rsplit(":", 1)[1]) for dest in CASES.values() if dest != "router"})
        reporter = subprocess.Popen(
            backend.command([sys.executable, "-c", REPORTER, ",".join(map(str, ports))]),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert reporter.stdout is not None and reporter.stdout.readline().strip() == "ready"
            yield router, client
        finally:
            reporter.kill()
            reporter.wait(timeout=10)


def _predicted(router: LabNamespace, source: str, port: int) -> str:
    from portkit.firewall import forwarding_state, local_addresses, route_lookup

    decision = evaluate(
        read_live(router.name),
        Packet.parse(f"tcp {source}:40000 -> {ROUTER_WAN}:{port} in wan0"),
        local_addresses=frozenset(ipaddress.ip_address(a) for a in local_addresses(router.name)),
        route=route_lookup(router.name),
        forwarding=forwarding_state(router.name),
    )
    assert decision.certain, decision
    final = decision.final_packet or decision.packet
    if decision.direction is Direction.INPUT:
        return "router"
    return f"{final.dst}:{final.dport}"


@needs_root
def test_nat_maps_send_each_connection_where_the_kernel_does(lab: tuple[LabNamespace, LabNamespace]) -> None:
    router, client = lab
    wrong = []
    for (source, port), expected in CASES.items():
        real = subprocess.run(
            client.command([sys.executable, "-c", DIAL, source, ROUTER_WAN, str(port)]),
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
        assert real == expected, f"the lab itself: {source} -> :{port} reached {real}, not {expected}"
        predicted = _predicted(router, source, port)
        if predicted != real:
            wrong.append(f"{source} -> :{port}: kernel {real}, portkit {predicted}")
    assert not wrong, "\n".join(wrong)


# --- the import (no root) ---------------------------------------------------------------------


def _decide(script: str, flow: str) -> tuple[str, bool, str | None]:
    d = evaluate(parse_nft_script(script), Packet.parse(flow), forwarding={4: True, 6: True})
    final = d.final_packet or d.packet
    nat = f"{final.dst}:{final.dport}" if (final.dst, final.dport) != (d.packet.dst, d.packet.dport) else None
    return d.direction.value, d.certain, nat


def test_each_element_of_a_nat_map_is_a_rule() -> None:
    assert _decide(RULES, f"tcp {CLIENT}:1 -> {ROUTER_WAN}:8443 in wan0")[2] == "10.9.0.3:8443"
    assert _decide(RULES, f"tcp {CLIENT}:1 -> {ROUTER_WAN}:2222 in wan0")[2] == "10.9.0.5:22"
    assert _decide(RULES, f"tcp {CLIENT_ALIAS}:1 -> {ROUTER_WAN}:7001 in wan0")[2] == "10.9.0.4:7001"
    # No element: the rule does not apply, so nothing rewrites the packet.
    assert _decide(RULES, f"tcp {CLIENT}:1 -> {ROUTER_WAN}:7001 in wan0")[2] is None


@pytest.mark.parametrize(
    "statement",
    [
        "dnat to tcp dport map @moving",  # a map rules or timeouts change: not known
        "dnat to tcp dport map { 80 : 10.9.0.2-10.9.0.4 }",  # a range is not one address
        # two maps, one for the address and one for the port
        "tcp dport 80 dnat to ip saddr map { 198.51.100.0/24 : 10.9.0.4 } : tcp dport map { 80 : 8080 }",
    ],
)
def test_a_nat_map_that_is_not_known_stays_an_unknown_rewrite(statement: str) -> None:
    script = (
        "table ip nat {\n map moving { type inet_service : ipv4_addr; flags timeout; }\n"
        " chain prerouting {\n  type nat hook prerouting priority dstnat;\n"
        f"  {statement}\n }}\n}}\n"
    )
    flow = Packet.parse(f"tcp {CLIENT}:1 -> {ROUTER_WAN}:80 in wan0")
    d = evaluate(parse_nft_script(script), flow, forwarding={4: True})
    assert not d.certain
