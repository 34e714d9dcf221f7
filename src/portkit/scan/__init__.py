"""The port scanner: nmap's port states and reasons, from connect, SYN, UDP and ACK probes.

`run_scan(ScanOptions(targets=["127.0.0.1"], ports="1-1024"))` returns a `ScanResult`;
`portkit.scan.output` renders it as a table, JSON, nmap XML, grepable text or CSV. A port's
service is a `portkit.model.ServiceRecord`.
"""

from portkit.model.portstate import PortState, Reason
from portkit.scan._engine import has_raw_sockets, run_scan
from portkit.scan._plan import ScanOptions
from portkit.scan._results import ExtraPorts, HostResult, PortResult, ScanResult, open_view
from portkit.scan._states import STATES, Response, ScanType, classify
from portkit.scan._targets import TargetSet, parse_targets
from portkit.scan._timing import TEMPLATES, Template, template

__all__ = [
    "STATES",
    "TEMPLATES",
    "ExtraPorts",
    "HostResult",
    "PortResult",
    "PortState",
    "Reason",
    "Response",
    "ScanOptions",
    "ScanResult",
    "ScanType",
    "TargetSet",
    "Template",
    "classify",
    "has_raw_sockets",
    "open_view",
    "parse_targets",
    "run_scan",
    "template",
]
