"""The shared vocabulary of portkit: protocols, ports, endpoints, flows and port specs.

Pure, typed, immutable values. Every capability (registry, sockets, scan, firewall,
forward) speaks in these terms, so data can flow from one to the next unchanged.
Names load lazily (PEP 562): a command pays only for the value types it uses.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see portkit/__init__.py)

_EXPORTS: dict[str, str] = {
    "Endpoint": "portkit.model.endpoints",
    "Flow": "portkit.model.endpoints",
    "parse_address": "portkit.model.endpoints",
    "DYNAMIC": "portkit.model.ports",
    "REGISTERED": "portkit.model.ports",
    "WELL_KNOWN": "portkit.model.ports",
    "PortClass": "portkit.model.ports",
    "Protocol": "portkit.model.protocols:Transport",
    "Transport": "portkit.model.protocols",
    "PORT_TRANSPORTS": "portkit.model.protocols",
    "SOCKET_TRANSPORTS": "portkit.model.protocols",
    "IPV4": "portkit.model.protocols",
    "IPV6": "portkit.model.protocols",
    "IPPROTO_ICMP": "portkit.model.protocols",
    "IPPROTO_ICMPV6": "portkit.model.protocols",
    "IPPROTO_RAW": "portkit.model.protocols",
    "IPPROTO_SCTP": "portkit.model.protocols",
    "IPPROTO_TCP": "portkit.model.protocols",
    "IPPROTO_UDP": "portkit.model.protocols",
    "classify_port": "portkit.model.ports",
    "validate_port": "portkit.model.ports",
    "parse_decimal": "portkit.model.ports",
    "PortRange": "portkit.model.ports",
    "PortSpec": "portkit.model.portspec",
    "PortState": "portkit.model.portstate",
    "Reason": "portkit.model.portstate",
    "parse_port_spec": "portkit.model.portspec",
}

if TYPE_CHECKING:
    from portkit.model.endpoints import Endpoint, Flow, parse_address
    from portkit.model.ports import (
        DYNAMIC,
        REGISTERED,
        WELL_KNOWN,
        PortClass,
        PortRange,
        classify_port,
        parse_decimal,
        validate_port,
    )
    from portkit.model.portspec import PortSpec, parse_port_spec
    from portkit.model.portstate import PortState, Reason
    from portkit.model.protocols import (
        IPPROTO_ICMP,
        IPPROTO_ICMPV6,
        IPPROTO_RAW,
        IPPROTO_SCTP,
        IPPROTO_TCP,
        IPPROTO_UDP,
        IPV4,
        IPV6,
        PORT_TRANSPORTS,
        SOCKET_TRANSPORTS,
        Transport,
    )
    from portkit.model.protocols import Transport as Protocol

__all__ = [
    "DYNAMIC",
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_RAW",
    "IPPROTO_SCTP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV4",
    "IPV6",
    "PORT_TRANSPORTS",
    "REGISTERED",
    "SOCKET_TRANSPORTS",
    "WELL_KNOWN",
    "Endpoint",
    "Flow",
    "PortClass",
    "PortRange",
    "PortSpec",
    "PortState",
    "Protocol",
    "Reason",
    "Transport",
    "classify_port",
    "parse_address",
    "parse_decimal",
    "parse_port_spec",
    "validate_port",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
