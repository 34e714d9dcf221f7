"""Service detection after a port scan (`portkit scan --sv`): probe the open ports, attach records.

A scanned port's service is the same `ServiceRecord` detection returns (the port table's guess
until then); this module attaches what the services said, and turns UDP `open|filtered` ports
that answered a probe into `open` (udp-response), as nmap -sV does.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from portkit.model import Protocol
from portkit.model.services import Method, ServiceRecord
from portkit.scan import PortResult, PortState, Reason, ScanResult
from portkit.services._engine import ServiceTarget, detect_services

# Timing templates -> (probe connections per port, connections overall, wait multiplier).
_BY_TEMPLATE = {
    0: (1, 1, 4.0),
    1: (1, 4, 3.0),
    2: (2, 16, 2.0),
    3: (8, 200, 1.0),
    4: (8, 320, 1.0),
    5: (8, 480, 0.8),
}


def _worth_probing(port: PortResult) -> bool:
    if port.state is PortState.OPEN:
        return True
    # A UDP service answers only the right payload: the port scan's silence proves nothing.
    return port.protocol is Protocol.UDP and port.state is PortState.OPEN_FILTERED


def detect_for_scan(
    result: ScanResult,
    *,
    intensity: int = 7,
    probes: str | Path = "builtin",
    timing: int = 3,
    max_rate: float | None = None,
) -> dict[ServiceTarget, ServiceRecord]:
    """Probe every open port of `result` and attach what answers; returns the matches."""
    result.service_scan = True
    targets: list[ServiceTarget] = [
        (host.address, p.port, p.protocol) for host in result.hosts for p in host.ports if _worth_probing(p)
    ]
    if not targets:
        return {}
    per_port, concurrency, scale = _BY_TEMPLATE.get(timing, _BY_TEMPLATE[3])
    if max_rate is not None:
        # Each connection costs about a handful of packets; keep the connection rate under the cap.
        concurrency = max(1, min(concurrency, int(max_rate // 4)))
        per_port = min(per_port, concurrency)
    from portkit.services._probes import load_database

    started = time.monotonic()
    matches = detect_services(
        targets,
        intensity=intensity,
        probes=load_database(probes),
        concurrency=concurrency,
        per_port=per_port,
        rtt={h.address: h.rtt for h in result.hosts if h.rtt},
        timeout_scale=scale,
    )
    result.elapsed += time.monotonic() - started  # nmap's elapsed time includes -sV too
    hosts = {h.address: h for h in result.hosts}
    for (address, number, protocol), match in matches.items():
        host = hosts[address]
        port = host.attach(number, protocol, match)
        if port.state is PortState.OPEN_FILTERED and match.method is Method.PROBED:
            index = host.ports.index(port)
            host.ports[index] = dataclasses.replace(port, state=PortState.OPEN, reason=Reason.UDP_RESPONSE)
    return matches
