"""The shared vocabulary of portkit: transports, ports, port sets, endpoints, flows, port specs,
nmap's port states and service records.

Pure, typed, immutable values. Every capability (registry, sockets, scan, firewall,
forward) speaks in these terms, so data can flow from one to the next unchanged. It is a
leaf: it imports nothing else of portkit (tests/test_vocabulary.py); portkit.errors re-exports its errors.
Names load lazily (PEP 562): a command pays only for the value types it uses.
"""

from __future__ import annotations

from portkit.model._lazy import lazy_exports_from_source

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see portkit/__init__.py)

# The exports, declared once: mypy reads this block and the lazy loader reads it at run time.
if TYPE_CHECKING:
    from portkit.model.endpoints import (
        Endpoint as Endpoint,
        Flow as Flow,
        parse_address as parse_address,
    )
    from portkit.model.ports import (
        classify_port as classify_port,
        DYNAMIC as DYNAMIC,
        parse_decimal as parse_decimal,
        PortClass as PortClass,
        PortRange as PortRange,
        REGISTERED as REGISTERED,
        validate_port as validate_port,
        WELL_KNOWN as WELL_KNOWN,
    )
    from portkit.model.portspec import (
        parse_port_spec as parse_port_spec,
        PortSpec as PortSpec,
    )
    from portkit.model.portstate import (
        PortState as PortState,
        Reason as Reason,
    )
    from portkit.model.services import (
        HttpInfo as HttpInfo,
        Method as Method,
        ServiceRecord as ServiceRecord,
        TlsInfo as TlsInfo,
    )
    from portkit.model.protocols import (
        IPPROTO_ICMP as IPPROTO_ICMP,
        IPPROTO_ICMPV6 as IPPROTO_ICMPV6,
        IPPROTO_RAW as IPPROTO_RAW,
        IPPROTO_SCTP as IPPROTO_SCTP,
        IPPROTO_TCP as IPPROTO_TCP,
        IPPROTO_UDP as IPPROTO_UDP,
        IPV4 as IPV4,
        IPV6 as IPV6,
        PORT_TRANSPORTS as PORT_TRANSPORTS,
        Protocol as Protocol,
        SOCKET_TRANSPORTS as SOCKET_TRANSPORTS,
        Transport as Transport,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
