"""Where the registry's machine-local layers live: the IANA cache and nmap's nmap-services.

The library reads no environment: a caller that wants other places (the CLI honours
$PORTKIT_CACHE_DIR, $XDG_CACHE_HOME and $PORTKIT_NMAP_SERVICES) passes a `RegistryPaths`,
to a `Registry` or, for the process-wide `default_registry()`, to `use_registry_paths`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE_DIR = Path("~/.cache/portkit")
"""The per-user cache directory when the caller names none (`~` is the user's home)."""

CACHE_NAME = "iana-services.tsv"

NMAP_SERVICES_PATHS = (
    Path("/usr/share/nmap/nmap-services"),
    Path("/usr/local/share/nmap/nmap-services"),
)
"""Where nmap installs nmap-services, searched in this order."""


@dataclass(frozen=True)
class RegistryPaths:
    """The registry's files. `nmap_services` lists candidates, the first existing file wins;
    an empty tuple means "as if nmap were not installed"."""

    cache_dir: Path = DEFAULT_CACHE_DIR
    nmap_services: tuple[Path, ...] = NMAP_SERVICES_PATHS

    @property
    def cache_file(self) -> Path:
        return self.cache_dir.expanduser() / CACHE_NAME


_current = RegistryPaths()


def registry_paths() -> RegistryPaths:
    """The paths `default_registry()` and the other process-wide look-ups use."""
    return _current


def use_registry_paths(paths: RegistryPaths) -> None:
    """Make `paths` the process-wide choice; the look-ups cached for the previous one are dropped."""
    global _current
    _current = paths
    # Only modules already imported hold cached look-ups (and importing them here would cost
    # every command their import time).
    registry_module = sys.modules.get("portkit.registry._registry")
    if registry_module is not None:
        registry_module.default_registry.cache_clear()
    nmap_module = sys.modules.get("portkit.registry.nmap")
    if nmap_module is not None:
        nmap_module.table_namer.cache_clear()
