"""The firewall: read the rules, say what they do to a packet and why, lint, write and apply them.

Import from nftables (JSON or script), iptables-save, ufw, the live kernel or portkit's
policy file; evaluate packets with netfilter's semantics (`evaluate`, or `FastEvaluator`
for millions of flows); lint; export to nft, iptables, ufw or firewalld; apply with an
automatic roll-back.
"""

from portkit.firewall._apply import ApplyResult, apply_ruleset, confirm_apply, rollback_apply
from portkit.firewall._eval import (
    PATHS,
    Decision,
    Direction,
    Outcome,
    ScannerView,
    TraceStep,
    Verdict,
    evaluate,
    scanner_view,
)
from portkit.firewall._export import (
    ExportRefused,
    Omission,
    Rendering,
    check_export,
    export_ruleset,
    render_firewalld,
)
from portkit.firewall._fast import FastEvaluator
from portkit.firewall._iptables import import_iptables_save, render_iptables
from portkit.firewall._lint import Finding, Severity, default_route_interfaces, lint_ruleset, risky_ports
from portkit.firewall._live import (
    LEGACY_SUFFIX,
    detect_format,
    forwarding_state,
    load_file,
    local_addresses,
    masquerade_lookup,
    parse_nft_script,
    read_live,
    route_lookup,
)
from portkit.firewall._model import (
    Chain,
    ChainType,
    CtState,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    NamedSet,
    NatTarget,
    Reject,
    RejectType,
    Ruleset,
    Table,
    canonical,
)
from portkit.firewall._nft import import_nft_json, render_nft
from portkit.firewall._nftexpr import render_embedded_json
from portkit.firewall._packet import Packet, parse_icmp_type, parse_interface, parse_l4proto, parse_state
from portkit.firewall._policy import parse_policy, parse_rule_line
from portkit.firewall._ufw import import_ufw, render_ufw

__all__ = [
    "LEGACY_SUFFIX",
    "PATHS",
    "ApplyResult",
    "Chain",
    "ChainType",
    "CtState",
    "Decision",
    "Direction",
    "ExportRefused",
    "Family",
    "FastEvaluator",
    "Field",
    "FilterAction",
    "FilterRule",
    "Finding",
    "Hook",
    "Match",
    "NamedSet",
    "NatTarget",
    "Omission",
    "Outcome",
    "Packet",
    "Reject",
    "RejectType",
    "Rendering",
    "Ruleset",
    "ScannerView",
    "Severity",
    "Table",
    "TraceStep",
    "Verdict",
    "apply_ruleset",
    "canonical",
    "check_export",
    "confirm_apply",
    "default_route_interfaces",
    "detect_format",
    "evaluate",
    "export_ruleset",
    "forwarding_state",
    "import_iptables_save",
    "import_nft_json",
    "import_ufw",
    "lint_ruleset",
    "load_file",
    "local_addresses",
    "masquerade_lookup",
    "parse_icmp_type",
    "parse_interface",
    "parse_l4proto",
    "parse_nft_script",
    "parse_policy",
    "parse_rule_line",
    "parse_state",
    "read_live",
    "render_embedded_json",
    "render_firewalld",
    "render_iptables",
    "render_nft",
    "render_ufw",
    "risky_ports",
    "rollback_apply",
    "route_lookup",
    "scanner_view",
]
