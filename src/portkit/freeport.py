"""Ports that are free to bind now, outside the ephemeral range, away from known services."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

from portkit.errors import UsageError
from portkit.kernel import PortSettings, read_port_settings
from portkit.model import PortRange, Transport
from portkit.registry import Registry, Source, default_registry

DEFAULT_RANGE = PortRange(1024, 49151)


def _bindable(port: int, protocol: Transport) -> bool:
    kind = socket.SOCK_STREAM if protocol is Transport.TCP else socket.SOCK_DGRAM
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, kind) as sock:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6 here
                continue
            return False
    return True


def _candidates(search: PortRange, seed: int | None) -> Iterator[int]:
    """Every port of `search` once, from a random start, so repeated calls spread out."""
    start = random.Random(seed).randrange(len(search))
    for offset in range(len(search)):
        yield search.first + (start + offset) % len(search)


def find_free_ports(
    count: int = 1,
    protocol: Transport = Transport.TCP,
    search: PortRange | None = None,
    *,
    registry: Registry | None = None,
    settings: PortSettings | None = None,
    seed: int | None = None,
) -> list[int]:
    """Up to `count` ports free to bind now on all addresses (v4 and v6) for `protocol`.

    Skips this machine's ephemeral and reserved ports, ports that need privileges, and
    ports a curated source (built-in table or /etc/services) assigns to a service.
    """
    if count < 1:
        raise UsageError(f"invalid count {count}: expected 1 or more")
    if protocol is Transport.SCTP:
        raise UsageError("invalid protocol 'sctp' for free-port: expected tcp or udp")
    search = search or DEFAULT_RANGE
    registry = registry or default_registry()
    settings = settings or read_port_settings()
    known = {
        p
        for source in (Source.BUILTIN, Source.SYSTEM)
        for s in registry.layer(source)
        if s.last_port - s.port < 1024
        for p in range(s.port, s.last_port + 1)
    }
    found: list[int] = []
    for port in _candidates(search, seed):
        if (
            port in known
            or settings.is_ephemeral(port)
            or settings.is_reserved(port)
            or settings.bind_needs_privilege(port)
            or port == 0
        ):
            continue
        if _bindable(port, protocol):
            found.append(port)
            if len(found) == count:
                break
    return sorted(found)
