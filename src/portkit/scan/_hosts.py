"""The hosts of a scan as the drivers see them: index <-> address, cached as probes reach them."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from portkit.scan._targets import TargetSet


@dataclass(frozen=True, slots=True)
class ScanHost:
    index: int
    address: str
    number: int  # the address as an integer
    family: socket.AddressFamily
    hostname: str = ""


class HostTable:
    """Looks hosts up lazily, so a /16 costs nothing until its probes go out."""

    def __init__(self, targets: TargetSet) -> None:
        self.targets = targets
        self._hosts: dict[int, ScanHost | None] = {}
        self.by_number: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.targets)

    def get(self, index: int) -> ScanHost | None:
        """The host at `index`, or None if it is excluded."""
        if index in self._hosts:
            return self._hosts[index]
        target = self.targets.get(index)
        host = None
        if target is not None:
            addr = ipaddress.ip_address(target.address)
            family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
            host = ScanHost(index, target.address, int(addr), family, target.hostname)
            self.by_number.setdefault(int(addr), index)
        self._hosts[index] = host
        return host

    def seen(self) -> list[ScanHost]:
        return [h for h in self._hosts.values() if h is not None]
