"""The environment variables every command honours, read in one place without Click (the
Click group and the console script's lanes both apply them)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Mapping

    from portkit.registry import RegistryPaths


def registry_paths_from(environ: Mapping[str, str]) -> RegistryPaths | None:
    """The registry's files as the environment names them, or None when it names none.

    $PORTKIT_CACHE_DIR is the IANA cache directory, else $XDG_CACHE_HOME/portkit;
    $PORTKIT_NMAP_SERVICES is the nmap-services file to read (empty: read none, as if
    nmap were not installed).
    """
    cache = environ.get("PORTKIT_CACHE_DIR") or ""
    xdg = environ.get("XDG_CACHE_HOME") or ""
    nmap = environ.get("PORTKIT_NMAP_SERVICES")
    if not cache and not xdg and nmap is None:
        return None
    from pathlib import Path

    from portkit.registry import RegistryPaths

    defaults = RegistryPaths()
    return RegistryPaths(
        cache_dir=Path(cache) if cache else Path(xdg) / "portkit" if xdg else defaults.cache_dir,
        nmap_services=defaults.nmap_services if nmap is None else (Path(nmap),) if nmap else (),
    )
