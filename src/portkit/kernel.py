"""This machine's port settings, read from /proc/sys/net.

The ephemeral range decides which ports the kernel hands to outgoing connections;
reserved ports are kept out of it; the first unprivileged port decides whether binding
needs root or CAP_NET_BIND_SERVICE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portkit.model.ports import PortRange, normalise_ranges

PROC_NET = Path("/proc/sys/net/ipv4")
CAP_NET_BIND_SERVICE = 10


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _parse_reserved(text: str) -> tuple[PortRange, ...]:
    ranges = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        first, _, last = item.partition("-")
        ranges.append(PortRange(int(first), int(last or first)))
    return normalise_ranges(ranges)


def has_capability(cap: int) -> bool:
    """Whether this process holds `cap` in its effective set."""
    status = _read(Path("/proc/self/status")) or ""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return os.geteuid() == 0


@dataclass(frozen=True)
class PortSettings:
    """The kernel's port settings; defaults are the kernel's own when /proc cannot be read."""

    ephemeral: PortRange = field(default_factory=lambda: PortRange(32768, 60999))
    reserved: tuple[PortRange, ...] = ()
    unprivileged_start: int = 1024
    source: str = "kernel defaults"

    def is_ephemeral(self, port: int) -> bool:
        return port in self.ephemeral

    def is_reserved(self, port: int) -> bool:
        return any(port in r for r in self.reserved)

    def bind_needs_privilege(self, port: int) -> bool:
        return 0 < port < self.unprivileged_start

    def to_json(self) -> dict[str, Any]:
        return {
            "ephemeral": {"first": self.ephemeral.first, "last": self.ephemeral.last},
            "reserved": [str(r) for r in self.reserved],
            "unprivileged_start": self.unprivileged_start,
            "source": self.source,
        }


def read_port_settings(proc: Path = PROC_NET) -> PortSettings:
    ephemeral_text = _read(proc / "ip_local_port_range")
    reserved_text = _read(proc / "ip_local_reserved_ports")
    unpriv_text = _read(proc / "ip_unprivileged_port_start")
    if ephemeral_text is None:
        return PortSettings()
    first, last = (int(x) for x in ephemeral_text.split())
    return PortSettings(
        ephemeral=PortRange(first, last),
        reserved=_parse_reserved(reserved_text or ""),
        unprivileged_start=int(unpriv_text) if unpriv_text else 1024,
        source=str(proc),
    )
