"""`portkit nat map/unmap/router` against a real miniupnpd on a lab router: each protocol maps a
LAN service that the outside host then reaches through the router's WAN address, end to end;
listing, renewal, removal, lease expiry, no gateway (bad input is in test_nat_codec.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from conftest import needs_root
from fixtures_nat import (
    LAN_HOST,
    LAN_ROUTER,
    WAN_OUTSIDE,
    WAN_ROUTER,
    UpnpHome,
    portkit_argv,
    upnp_home,
)

pytestmark = [needs_root, pytest.mark.root]

VIAS = ["pcp", "natpmp", "upnp"]
SERVICE_PORT = 8080


@pytest.fixture(scope="module")
def lab() -> Iterator[UpnpHome]:
    with upnp_home(SERVICE_PORT) as made:
        yield made


def _map(lab: UpnpHome, *args: str) -> dict[str, object]:
    proc = lab.portkit("nat", "map", *args, "--json")
    assert proc.returncode == 0, (proc.stderr, lab.log()[-2000:])
    document = json.loads(proc.stdout)
    assert isinstance(document, dict)
    return document


def _unreachable(lab: UpnpHome, port: int, udp: bool) -> bool:
    return lab.exchange(port, b"anyone there?", udp=udp) == b""


def _upnp_listing(lab: UpnpHome) -> list[dict[str, object]]:
    proc = lab.portkit("nat", "router", "--via", "upnp", "--json")
    assert proc.returncode == 0, proc.stderr
    mappings = json.loads(proc.stdout)["mappings"]
    assert isinstance(mappings, list)
    return mappings


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("via", VIAS)
def test_map_reaches_the_lan_service_from_outside_then_unmap_cuts_it(
    lab: UpnpHome, via: str, proto: str
) -> None:
    public = 20000 + VIAS.index(via) * 10 + (proto == "udp")
    udp = proto == "udp"
    assert _unreachable(lab, public, udp)  # nothing forwards this port yet
    document = _map(lab, str(public), str(SERVICE_PORT), "--via", via, "--proto", proto, "--lease", "120")
    mapping = document["mapping"]
    assert isinstance(mapping, dict)
    assert mapping["via"] == via and mapping["protocol"] == proto
    assert mapping["external_address"] == WAN_ROUTER and mapping["external_port"] == public
    assert mapping["internal_address"] == LAN_HOST and mapping["internal_port"] == SERVICE_PORT
    assert isinstance(mapping["lifetime"], int) and 0 < mapping["lifetime"] <= 120
    assert document["gateway"] == {"address": LAN_ROUTER, "source": "default route via eth0"}
    payload = f"{via} {proto} end to end".encode() * (1 if udp else 5000)
    assert lab.exchange(public, payload, udp=udp) == payload
    # The router lists it (miniupnpd shows every protocol's mappings over UPnP) ...
    listed = [(m["external_port"], m["protocol"], m["internal_address"]) for m in _upnp_listing(lab)]
    assert (public, proto, LAN_HOST) in listed
    # ... and its nftables table holds the DNAT miniupnpd made.
    assert f"dport {public} dnat ip to {LAN_HOST}:{SERVICE_PORT}" in lab.ruleset()
    proc = lab.portkit(
        "nat", "unmap", str(public), str(SERVICE_PORT), "--via", via, "--proto", proto, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["removed_via"] == via
    assert f"dport {public} " not in lab.ruleset()
    assert _unreachable(lab, public, udp)


def test_auto_maps_with_pcp_first_and_unmap_auto_removes_exactly_that_port(lab: UpnpHome) -> None:
    document = _map(lab, "20100", str(SERVICE_PORT))
    assert document["attempts"] == [{"via": "pcp", "gateway": LAN_ROUTER, "outcome": "ok"}]
    # A second mapping to the same internal port, by another protocol.
    other = _map(lab, "20101", str(SERVICE_PORT), "--via", "upnp")["mapping"]
    assert isinstance(other, dict) and other["external_port"] == 20101
    assert lab.exchange(20100, b"auto") == b"auto"
    proc = lab.portkit("nat", "unmap", "20100", str(SERVICE_PORT), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["removed_via"] == "upnp"  # looked up by its public port, then removed
    assert _unreachable(lab, 20100, False)
    assert lab.exchange(20101, b"still here") == b"still here"
    again = lab.portkit("nat", "unmap", "20100", str(SERVICE_PORT), "--via", "upnp")
    assert again.returncode == 1 and "no such mapping" in again.stderr
    assert lab.portkit("nat", "unmap", "20101", str(SERVICE_PORT)).returncode == 0
    assert _unreachable(lab, 20101, False)


@pytest.mark.parametrize("via", VIAS)
def test_mapping_again_renews_the_lease(lab: UpnpHome, via: str) -> None:
    public = 20200 + VIAS.index(via)
    first = _map(lab, str(public), str(SERVICE_PORT), "--via", via, "--lease", "60")["mapping"]
    time.sleep(2.2)
    second = _map(lab, str(public), str(SERVICE_PORT), "--via", via, "--lease", "60")["mapping"]
    assert isinstance(first, dict) and isinstance(second, dict)
    assert second["external_port"] == first["external_port"] == public
    assert isinstance(first["expires_at"], float) and isinstance(second["expires_at"], float)
    assert second["expires_at"] - first["expires_at"] >= 1.5  # the lease restarted
    # The gateway's own count agrees: its remaining lease is back near 60 s.
    entry = next(m for m in _upnp_listing(lab) if m["external_port"] == public)
    assert isinstance(entry["lifetime"], int) and entry["lifetime"] >= 57
    assert lab.exchange(public, b"renewed") == b"renewed"
    assert lab.portkit("nat", "unmap", str(public), str(SERVICE_PORT), "--via", via).returncode == 0


@pytest.mark.parametrize("via", VIAS)
def test_a_short_lease_expires(lab: UpnpHome, via: str) -> None:
    public = 20300 + VIAS.index(via)
    mapping = _map(lab, str(public), str(SERVICE_PORT), "--via", via, "--lease", "3")["mapping"]
    assert isinstance(mapping, dict)
    # PCP and NAT-PMP answer with the lifetime granted; UPnP's gateway is asked afterwards
    # for the lease left, in whole seconds rounded down, so a second may already be gone.
    assert mapping["lifetime"] == 3 if via != "upnp" else mapping["lifetime"] in (2, 3)
    assert lab.exchange(public, b"before expiry") == b"before expiry"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _unreachable(lab, public, False):
        time.sleep(0.5)
    assert _unreachable(lab, public, False), lab.ruleset()
    assert f"dport {public} " not in lab.ruleset()


def test_renew_keeps_the_mapping_past_its_lease_and_removes_it_on_sigterm(lab: UpnpHome) -> None:
    public = 20400
    argv = lab.lan.command(
        [
            *portkit_argv(),
            "nat",
            "map",
            str(public),
            str(SERVICE_PORT),
            "--via",
            "natpmp",
            "--lease",
            "3",
            "--renew",
            "--json",
        ]
    )
    # `ip netns exec` execs the command, so this pid is portkit's own.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "mapped" and first["mapping"]["lifetime"] == 3
        time.sleep(5)  # past the first lease: only renewals keep it
        assert lab.exchange(public, b"kept alive") == b"kept alive"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "renewed" in events and events[-1] == "removed", (events, err)
    assert proc.returncode == 143 and err.strip() == "portkit: terminated"
    assert _unreachable(lab, public, False)


def test_router_shows_the_gateway_its_protocols_and_mappings(lab: UpnpHome) -> None:
    _map(lab, "20500", str(SERVICE_PORT), "--via", "upnp", "--description", "router test")
    try:
        proc = lab.portkit("nat", "router", "--json")
        assert proc.returncode == 0, proc.stderr
        found = json.loads(proc.stdout)
        assert found["gateway"] == {"address": LAN_ROUTER, "source": "default route via eth0"}
        assert found["client_address"] == LAN_HOST and found["external_address"] == WAN_ROUTER
        assert [(p["via"], p["answers"]) for p in found["protocols"]] == [(v, True) for v in VIAS]
        # The IGD was found by asking the gateway itself: no multicast was needed.
        upnp = found["protocols"][2]["detail"]
        assert upnp.startswith(f"http://{LAN_ROUTER}:") and upnp.endswith(
            "/rootDesc.xml (unicast SSDP search)"
        )
        assert found["mappings_listed"] is True
        assert any(
            m["external_port"] == 20500 and m["description"] == "router test" for m in found["mappings"]
        )
        table = lab.portkit("nat", "router")
        assert table.returncode == 0
        lines = table.stdout.splitlines()
        assert lines[0] == f"gateway:          {LAN_ROUTER} (default route via eth0)"
        assert f"external address: {WAN_ROUTER}" in lines
        assert any(line.split()[:2] == ["NAT-PMP", "yes"] for line in lines)
        assert any("20500" in line and "router test" in line for line in lines)
    finally:
        lab.portkit("nat", "unmap", "20500", "--via", "upnp")


def test_the_longest_description_accepted_is_listed_as_given(lab: UpnpHome) -> None:
    description = 'Tom\'s "game" \u00e9t\u00e9 server ' * 2 + "x" * 11
    assert len(description.encode()) == 63  # the limit is in bytes: each \u00e9 is two
    _map(lab, "20600", str(SERVICE_PORT), "--via", "upnp", "--description", description)
    try:
        listed = [m for m in _upnp_listing(lab) if m["external_port"] == 20600]
        assert [m["description"] for m in listed] == [description]
    finally:
        lab.portkit("nat", "unmap", "20600", "--via", "upnp")


def test_no_gateway_is_exit_1_naming_what_was_tried(lab: UpnpHome) -> None:
    # The outside host has no default route.
    proc = lab.outside.run([*portkit_argv(), "nat", "map", "8443"], timeout=30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr.count("\n") == 1 and "no IPv4 default route" in proc.stderr and "--gateway" in proc.stderr
    )
    # A gateway where nothing answers (miniupnpd listens on the LAN side only).
    start = time.monotonic()
    argv = [*portkit_argv(), "nat", "map", "8443", "--gateway", WAN_ROUTER, "--timeout", "1"]
    proc = lab.outside.run(argv, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"portkit: error: no gateway answered at {WAN_ROUTER}: PCP: ")
    assert (
        "; NAT-PMP: port 5351 unreachable; UPnP-IGD: SSDP search failed (sendto: Network is unreachable)"
        in line
    )
    assert " ... " not in line  # short enough to be shown whole
    assert time.monotonic() - start < 15
    proc = lab.outside.run(
        [*portkit_argv(), "nat", "router", "--gateway", WAN_OUTSIDE, "--timeout", "1"], timeout=60
    )
    assert proc.returncode == 1 and "no gateway answered" in proc.stderr


def test_a_refusal_is_exit_1_naming_the_result(lab: UpnpHome) -> None:
    # miniupnpd's permission rules allow external ports 1024-65535 only; UPnP cannot move a port.
    proc = lab.portkit("nat", "map", "80", str(SERVICE_PORT), "--via", "upnp")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"portkit: error: UPnP-IGD at {LAN_ROUTER} refused: ")
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("via", ["natpmp", "pcp"])
def test_a_port_the_gateway_will_not_give_is_moved_and_said_so(lab: UpnpHome, via: str) -> None:
    # NAT-PMP and PCP let the gateway map another external port than the one suggested; this
    # miniupnpd allows 1024 and up, and walks up from the port asked for to the first it allows.
    proc = lab.portkit("nat", "map", "1000", str(SERVICE_PORT), "--via", via, "--json")
    assert proc.returncode == 0, proc.stderr
    mapping = json.loads(proc.stdout)["mapping"]
    assert mapping["requested_port"] == 1000 and mapping["external_port"] >= 1024
    moved = mapping["external_port"]
    try:
        assert lab.exchange(moved, b"moved") == b"moved"
        table = lab.portkit("nat", "map", "1000", str(SERVICE_PORT), "--via", via)
        assert f"the gateway chose port {moved}, not 1000" in table.stdout.splitlines()[0]
    finally:
        lab.portkit("nat", "unmap", str(moved), str(SERVICE_PORT), "--via", via)
    assert _unreachable(lab, moved, False)


def test_multicast_discovery_finds_the_igd_when_no_gateway_is_named(lab: UpnpHome) -> None:
    # The fallback for gateways that ignore a unicast search; here inside the lab's LAN only.
    script = (
        "from portkit.nat._upnp import IgdClient\n"
        "igd = IgdClient(None, 2.0)\n"
        "print(igd.found_by, igd.location, igd.lan_address, igd.external_address())\n"
    )
    proc = lab.lan.run([portkit_argv()[0], "-c", script], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["multicast", "SSDP", "search", "None", LAN_HOST, WAN_ROUTER]
