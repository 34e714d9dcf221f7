"""portkit's default registry as the resolver of service names and `top:N` in port specs.

The port-spec parser (portkit.model) is given its resolver; the command line and the
top-level `portkit.parse_port_spec` give it this one. The registry loads on the first name
looked up, so a spec of numbers alone (`portkit ls sport = :22`) never pays for it.
"""

from __future__ import annotations

from portkit.model.portspec import PortNames, PortSpec
from portkit.model.portspec import parse_port_spec as parse_with
from portkit.model.protocols import Transport


class DefaultNames:
    """Resolves names through `default_registry()`, fetched on first use."""

    def ports_for_name(self, name: str) -> list[tuple[int, Transport]]:
        from portkit.registry._registry import default_registry

        return default_registry().ports_for_name(name)

    def top_ports(self, count: int, protocol: Transport) -> list[int]:
        from portkit.registry._registry import default_registry

        return default_registry().top_ports(count, protocol)


DEFAULT_NAMES: PortNames = DefaultNames()


def parse_port_spec(text: str, names: PortNames | None = None) -> PortSpec:
    """An nmap-style port list (portkit.model.portspec); names and top:N resolve through
    `names`, by default portkit's registry."""
    return parse_with(text, names or DEFAULT_NAMES)
