"""Service detection: what really answers on an open port (nmap's -sV, by what the service says).

    >>> from portkit.services import detect_services
    >>> detect_services([("127.0.0.1", 2222, "tcp")])
    {('127.0.0.1', 2222, <Protocol.TCP: 'tcp'>): ServiceRecord(name='ssh', product='OpenSSH', ...)}

Names load lazily (PEP 562): `import portkit.services` costs nothing until one is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portkit._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DetectOptions": "portkit.services._plan",
    "ServiceTarget": "portkit.services._engine",
    "detect_services": "portkit.services._engine",
    "detect_services_async": "portkit.services._engine",
    "parse_intensity": "portkit.services._engine",
    "parse_http_response": "portkit.services._http",
    "Identification": "portkit.services._match",
    "match_reply": "portkit.services._match",
    "plan_probes": "portkit.services._match",
    "HttpInfo": "portkit.model.services",
    "Method": "portkit.model.services",
    "ServiceRecord": "portkit.model.services",
    "TlsInfo": "portkit.model.services",
    "MatchRule": "portkit.services._probes",
    "Probe": "portkit.services._probes",
    "ProbeDatabase": "portkit.services._probes",
    "builtin_database": "portkit.services._probes",
    "decode_payload": "portkit.services._probes",
    "load_database": "portkit.services._probes",
    "load_toml": "portkit.services._probes",
    "detect_for_scan": "portkit.services._scan",  # needs portkit.scan
}

if TYPE_CHECKING:
    from portkit.model.services import HttpInfo, Method, ServiceRecord, TlsInfo
    from portkit.services._engine import (
        ServiceTarget,
        detect_services,
        detect_services_async,
        parse_intensity,
    )
    from portkit.services._http import parse_http_response
    from portkit.services._match import Identification, match_reply, plan_probes
    from portkit.services._plan import DetectOptions
    from portkit.services._probes import (
        MatchRule,
        Probe,
        ProbeDatabase,
        builtin_database,
        decode_payload,
        load_database,
        load_toml,
    )
    from portkit.services._scan import detect_for_scan

__all__ = [
    "DetectOptions",
    "HttpInfo",
    "Identification",
    "MatchRule",
    "Method",
    "Probe",
    "ProbeDatabase",
    "ServiceRecord",
    "ServiceTarget",
    "TlsInfo",
    "builtin_database",
    "decode_payload",
    "detect_for_scan",
    "detect_services",
    "detect_services_async",
    "load_database",
    "load_toml",
    "match_reply",
    "parse_http_response",
    "parse_intensity",
    "plan_probes",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
