"""Service detection: what really answers on an open port (nmap's -sV, by what the service says).

>>> from portkit.services import detect_services
>>> detect_services([("127.0.0.1", 2222, "tcp")])
{('127.0.0.1', 2222, <Protocol.TCP: 'tcp'>): ServiceMatch(name='ssh', product='OpenSSH', ...)}
"""

from typing import TYPE_CHECKING

from portkit.services._engine import (
    DetectOptions,
    ServiceTarget,
    detect_services,
    detect_services_async,
    parse_intensity,
)
from portkit.services._http import parse_http_response
from portkit.services._match import Identification, match_reply, plan_probes
from portkit.services._model import HttpInfo, Method, ServiceMatch, TlsInfo
from portkit.services._probes import (
    MatchRule,
    Probe,
    ProbeDatabase,
    builtin_database,
    decode_payload,
    load_database,
    load_toml,
)

if TYPE_CHECKING:
    from portkit.services._scan import detect_for_scan

__all__ = [
    "DetectOptions",
    "HttpInfo",
    "Identification",
    "MatchRule",
    "Method",
    "Probe",
    "ProbeDatabase",
    "ServiceMatch",
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


def __getattr__(name: str) -> object:
    # detect_for_scan needs the scanner; importing it only when asked keeps this package light.
    if name == "detect_for_scan":
        from portkit.services._scan import detect_for_scan

        return detect_for_scan
    raise AttributeError(f"module 'portkit.services' has no attribute {name!r}")
