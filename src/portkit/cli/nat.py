"""`portkit nat`: port forwarding behind NAT."""

from __future__ import annotations

import click

from portkit.cli.nat_map import map_cmd, router_cmd, unmap_cmd


@click.group(name="nat")
def nat() -> None:
    """Port forwarding behind NAT: ask the gateway for a mapping (PCP, NAT-PMP, UPnP-IGD)."""


nat.add_command(map_cmd, "map")
nat.add_command(unmap_cmd, "unmap")
nat.add_command(router_cmd, "router")
