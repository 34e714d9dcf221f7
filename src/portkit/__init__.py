"""portkit: everything about network ports, as a Python library and a command line.

The public API is what this module exports; everything else is internal. Names load
lazily (PEP 562), so `import portkit` stays cheap and a command pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portkit._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Socket": "portkit.sockets",
    "SocketQuery": "portkit.sockets",
    "Inventory": "portkit.sockets",
    "TcpState": "portkit.sockets",
    "Transport": "portkit.sockets",
    "ProcessInfo": "portkit.sockets",
    "TcpInfo": "portkit.sockets",
    "list_sockets": "portkit.sockets",
    "who_holds": "portkit.sockets",
    "PortUse": "portkit.sockets",
    "Advice": "portkit.sockets",
    "Overview": "portkit.sockets",
    "Listener": "portkit.sockets",
    "Exposure": "portkit.sockets",
    "build_overview": "portkit.sockets",
    "SockDiagClient": "portkit.sockets",
    "Namespace": "portkit.sockets",
    "PortMatch": "portkit.sockets",
    "matches_from_spec": "portkit.sockets",
    "run_scan": "portkit.scan",
    "ScanOptions": "portkit.scan",
    "ScanResult": "portkit.scan",
    "HostResult": "portkit.scan",
    "PortResult": "portkit.scan",
    "ServiceInfo": "portkit.scan",
    "TlsInfo": "portkit.scan",
    "PortState": "portkit.scan",
    "Reason": "portkit.scan",
    "ScanType": "portkit.scan",
    "detect_services": "portkit.services",
    "ServiceMatch": "portkit.services",
    "Forwarder": "portkit.forward",
    "serve_forward": "portkit.forward:serve",
    "forward_rule": "portkit.forward:make_rule",
    "load_forward_config": "portkit.forward:load_config",
    "forward_stats": "portkit.forward:query_stats",
    "ForwardRule": "portkit.forward:Rule",
    "PermissionNeeded": "portkit.errors",
    "PortkitError": "portkit.errors",
    "UsageError": "portkit.errors",
    "PortExplanation": "portkit.explain",
    "explain_port": "portkit.explain",
    "find_free_ports": "portkit.freeport",
    "PortSettings": "portkit.kernel",
    "read_port_settings": "portkit.kernel",
    "DYNAMIC": "portkit.model",
    "REGISTERED": "portkit.model",
    "WELL_KNOWN": "portkit.model",
    "Endpoint": "portkit.model",
    "Flow": "portkit.model",
    "PortClass": "portkit.model",
    "PortRange": "portkit.model",
    "PortSpec": "portkit.model",
    "Protocol": "portkit.model",
    "classify_port": "portkit.model",
    "parse_address": "portkit.model",
    "parse_port_spec": "portkit.model",
    "validate_port": "portkit.model",
    "ImportReport": "portkit.registry",
    "Registry": "portkit.registry",
    "Service": "portkit.registry",
    "Source": "portkit.registry",
    "default_registry": "portkit.registry",
    "download_iana": "portkit.registry",
    "import_iana": "portkit.registry",
}

if TYPE_CHECKING:
    from portkit.errors import (
        PermissionNeeded,
        PortkitError,
        UsageError,
    )
    from portkit.explain import (
        PortExplanation,
        explain_port,
    )
    from portkit.forward import (
        Forwarder,
    )
    from portkit.forward import (
        Rule as ForwardRule,
    )
    from portkit.forward import (
        load_config as load_forward_config,
    )
    from portkit.forward import (
        make_rule as forward_rule,
    )
    from portkit.forward import (
        query_stats as forward_stats,
    )
    from portkit.forward import (
        serve as serve_forward,
    )
    from portkit.freeport import (
        find_free_ports,
    )
    from portkit.kernel import (
        PortSettings,
        read_port_settings,
    )
    from portkit.model import (
        DYNAMIC,
        REGISTERED,
        WELL_KNOWN,
        Endpoint,
        Flow,
        PortClass,
        PortRange,
        PortSpec,
        Protocol,
        classify_port,
        parse_address,
        parse_port_spec,
        validate_port,
    )
    from portkit.registry import (
        ImportReport,
        Registry,
        Service,
        Source,
        default_registry,
        download_iana,
        import_iana,
    )
    from portkit.scan import (
        HostResult,
        PortResult,
        PortState,
        Reason,
        ScanOptions,
        ScanResult,
        ScanType,
        ServiceInfo,
        TlsInfo,
        run_scan,
    )
    from portkit.services import (
        ServiceMatch,
        detect_services,
    )
    from portkit.sockets import (
        Advice,
        Exposure,
        Inventory,
        Listener,
        Namespace,
        Overview,
        PortMatch,
        PortUse,
        ProcessInfo,
        SockDiagClient,
        Socket,
        SocketQuery,
        TcpInfo,
        TcpState,
        Transport,
        build_overview,
        list_sockets,
        matches_from_spec,
        who_holds,
    )

__all__ = [
    "DYNAMIC",
    "REGISTERED",
    "WELL_KNOWN",
    "Advice",
    "Endpoint",
    "Exposure",
    "Flow",
    "ForwardRule",
    "Forwarder",
    "HostResult",
    "ImportReport",
    "Inventory",
    "Listener",
    "Namespace",
    "Overview",
    "PermissionNeeded",
    "PortClass",
    "PortExplanation",
    "PortMatch",
    "PortRange",
    "PortResult",
    "PortSettings",
    "PortSpec",
    "PortState",
    "PortUse",
    "PortkitError",
    "ProcessInfo",
    "Protocol",
    "Reason",
    "Registry",
    "ScanOptions",
    "ScanResult",
    "ScanType",
    "Service",
    "ServiceInfo",
    "ServiceMatch",
    "SockDiagClient",
    "Socket",
    "SocketQuery",
    "Source",
    "TcpInfo",
    "TcpState",
    "TlsInfo",
    "Transport",
    "UsageError",
    "__version__",
    "build_overview",
    "classify_port",
    "default_registry",
    "detect_services",
    "download_iana",
    "explain_port",
    "find_free_ports",
    "forward_rule",
    "forward_stats",
    "import_iana",
    "list_sockets",
    "load_forward_config",
    "matches_from_spec",
    "parse_address",
    "parse_port_spec",
    "read_port_settings",
    "run_scan",
    "serve_forward",
    "validate_port",
    "who_holds",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
