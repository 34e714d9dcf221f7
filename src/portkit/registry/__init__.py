"""The service registry: what is known about a port, and where that knowledge comes from."""

from portkit.registry._registry import Registry, default_registry
from portkit.registry._service import Service, Source
from portkit.registry.iana import ImportReport, download_iana, import_iana

__all__ = [
    "ImportReport",
    "Registry",
    "Service",
    "Source",
    "default_registry",
    "download_iana",
    "import_iana",
]
