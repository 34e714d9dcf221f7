"""The home-network lab: the router masquerades the LAN, and nothing reaches the LAN from outside
until a forward is made."""

from __future__ import annotations

import time

from conftest import needs_root
from portkit.testing import HomeLab, HomeSpec, LabHost


@needs_root
def test_home_lab_routes_masquerades_and_forwards_nothing_in() -> None:
    with HomeLab(HomeSpec((LabHost("server"), LabHost("pc")))) as home:
        home.echo_server("server", 9000)
        home.echo_server("outside", 7000)
        assert home.exchange("pc", home.address("server"), 9000, b"over the lan") == b"over the lan"
        assert home.exchange("server", home.outside_address, 7000, b"out") == b"out"
        # The outside host sees the router's public address, never the LAN one: masquerade.
        home.popen("outside", ["socat", "TCP-LISTEN:7001,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"])
        for _ in range(100):
            seen = home.exchange("server", home.outside_address, 7001, b"")
            if seen:
                break
            time.sleep(0.05)
        assert seen.decode().strip() == home.wan_address
        assert home.exchange("outside", home.wan_address, 9000, b"in") == b""
        names = [home.netns(h) for h in home.hosts]
    import subprocess

    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(name in left for name in names)
