"""portkit: everything about network ports, as a Python library and a command line.

The public API is what this module exports; everything else is internal. Names load
lazily (PEP 562), so `import portkit` stays cheap and a command pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portkit._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
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

__all__ = [
    "DYNAMIC",
    "REGISTERED",
    "WELL_KNOWN",
    "Endpoint",
    "Flow",
    "ImportReport",
    "PermissionNeeded",
    "PortClass",
    "PortExplanation",
    "PortRange",
    "PortSettings",
    "PortSpec",
    "PortkitError",
    "Protocol",
    "Registry",
    "Service",
    "Source",
    "UsageError",
    "__version__",
    "classify_port",
    "default_registry",
    "download_iana",
    "explain_port",
    "find_free_ports",
    "import_iana",
    "parse_address",
    "parse_port_spec",
    "read_port_settings",
    "validate_port",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
