"""The shared vocabulary of portkit: protocols, ports, endpoints, flows and port specs.

Pure, typed, immutable values. Every capability (registry, sockets, scan, firewall,
forward) speaks in these terms, so data can flow from one to the next unchanged.
"""

from portkit.model.endpoints import Endpoint, Flow, parse_address
from portkit.model.ports import (
    DYNAMIC,
    REGISTERED,
    WELL_KNOWN,
    PortClass,
    Protocol,
    classify_port,
    validate_port,
)
from portkit.model.portspec import PortRange, PortSpec, parse_port_spec

__all__ = [
    "DYNAMIC",
    "REGISTERED",
    "WELL_KNOWN",
    "Endpoint",
    "Flow",
    "PortClass",
    "PortRange",
    "PortSpec",
    "Protocol",
    "classify_port",
    "parse_address",
    "parse_port_spec",
    "validate_port",
]
