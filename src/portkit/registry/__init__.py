"""The service registry: what is known about a port, and where that knowledge comes from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portkit._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "cache_path": "portkit.registry._cache",
    "RegistryPaths": "portkit.registry._paths",
    "registry_paths": "portkit.registry._paths",
    "use_registry_paths": "portkit.registry._paths",
    "DEFAULT_NAMES": "portkit.registry._names",
    "parse_port_spec": "portkit.registry._names",
    "Registry": "portkit.registry._registry",
    "default_registry": "portkit.registry._registry",
    "Service": "portkit.registry._service",
    "Source": "portkit.registry._service",
    "ImportReport": "portkit.registry.iana",
    "download_iana": "portkit.registry.iana",
    "import_iana": "portkit.registry.iana",
}

if TYPE_CHECKING:
    from portkit.registry._cache import cache_path
    from portkit.registry._names import DEFAULT_NAMES, parse_port_spec
    from portkit.registry._paths import RegistryPaths, registry_paths, use_registry_paths
    from portkit.registry._registry import Registry, default_registry
    from portkit.registry._service import Service, Source
    from portkit.registry.iana import ImportReport, download_iana, import_iana

__all__ = [
    "DEFAULT_NAMES",
    "ImportReport",
    "Registry",
    "RegistryPaths",
    "Service",
    "Source",
    "cache_path",
    "default_registry",
    "download_iana",
    "import_iana",
    "parse_port_spec",
    "registry_paths",
    "use_registry_paths",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
