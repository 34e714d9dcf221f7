"""The shared vocabulary of portkit: protocols, ports, endpoints, flows, port specs, services.

Pure, typed, immutable values. Every capability (registry, sockets, scan, firewall,
forward) speaks in these terms, so data can flow from one to the next unchanged.
Names load lazily (PEP 562): a command pays only for the value types it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portkit._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Endpoint": "portkit.model.endpoints",
    "Flow": "portkit.model.endpoints",
    "parse_address": "portkit.model.endpoints",
    "DYNAMIC": "portkit.model.ports",
    "REGISTERED": "portkit.model.ports",
    "WELL_KNOWN": "portkit.model.ports",
    "PortClass": "portkit.model.ports",
    "Protocol": "portkit.model.ports",
    "classify_port": "portkit.model.ports",
    "validate_port": "portkit.model.ports",
    "parse_decimal": "portkit.model.ports",
    "PortRange": "portkit.model.ports",
    "PortSpec": "portkit.model.portspec",
    "parse_port_spec": "portkit.model.portspec",
    "HttpInfo": "portkit.model.services",
    "Method": "portkit.model.services",
    "ServiceRecord": "portkit.model.services",
    "TlsInfo": "portkit.model.services",
}

if TYPE_CHECKING:
    from portkit.model.endpoints import Endpoint, Flow, parse_address
    from portkit.model.ports import (
        DYNAMIC,
        REGISTERED,
        WELL_KNOWN,
        PortClass,
        PortRange,
        Protocol,
        classify_port,
        parse_decimal,
        validate_port,
    )
    from portkit.model.portspec import PortSpec, parse_port_spec
    from portkit.model.services import HttpInfo, Method, ServiceRecord, TlsInfo

__all__ = [
    "DYNAMIC",
    "REGISTERED",
    "WELL_KNOWN",
    "Endpoint",
    "Flow",
    "HttpInfo",
    "Method",
    "PortClass",
    "PortRange",
    "PortSpec",
    "Protocol",
    "ServiceRecord",
    "TlsInfo",
    "classify_port",
    "parse_address",
    "parse_decimal",
    "parse_port_spec",
    "validate_port",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
