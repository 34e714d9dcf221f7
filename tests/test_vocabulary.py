"""portkit speaks one vocabulary: shared types live in portkit.model and every capability uses them."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import portkit
from portkit.errors import UsageError
from portkit.model import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_TRANSPORTS,
    SOCKET_TRANSPORTS,
    Protocol,
    Transport,
)
from portkit.model.intervals import Interval, format_intervals, merge_intervals, runs

SRC = Path(__file__).resolve().parent.parent / "src" / "portkit"


def test_transport_is_one_enum_everywhere() -> None:
    from portkit.firewall._model import IPPROTO
    from portkit.forward import ForwardRule
    from portkit.scan import ScanType
    from portkit.sockets import Transport as SocketTransport

    assert Protocol is Transport and SocketTransport is Transport and portkit.Transport is Transport
    assert ScanType.UDP.protocol is Transport.UDP and ScanType.SYN.protocol is Transport.TCP
    assert ForwardRule.__dataclass_fields__["protocol"].default is Transport.TCP
    for transport in PORT_TRANSPORTS:
        assert IPPROTO[transport.value] == transport.number
        assert Transport.from_number(transport.number) is transport


def test_transport_numbers_are_the_ip_protocol_numbers() -> None:
    import socket

    assert (Transport.TCP.number, Transport.UDP.number) == (socket.IPPROTO_TCP, socket.IPPROTO_UDP)
    assert (IPPROTO_TCP, IPPROTO_UDP) == (socket.IPPROTO_TCP, socket.IPPROTO_UDP)
    assert (IPPROTO_ICMP, IPPROTO_ICMPV6) == (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)
    assert Transport.RAW.number == socket.IPPROTO_RAW and not Transport.RAW.has_ports


def test_transport_parse_accepts_only_what_the_caller_lists() -> None:
    assert Transport.parse(" Raw ", SOCKET_TRANSPORTS) is Transport.RAW
    with pytest.raises(UsageError, match="expected one of tcp, udp, sctp"):
        Transport.parse("raw")
    with pytest.raises(UsageError, match="expected one of tcp, udp, raw"):
        Transport.parse("sctp", SOCKET_TRANSPORTS)


_VERSION_NAMES = {"version", "fam", "family", "ip_version"}
_PROTO_NAMES = {"l4proto", "proto", "proto_num", "protocol"}


def _number(node: ast.expr) -> bool:
    """An int literal other than 0 (0 is the model's "any family / any protocol")."""
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value != 0


def _leaf(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def test_firewall_compares_protocols_and_versions_by_name() -> None:
    """`l4proto == 17` or `version == 6` by hand is what the named constants replace."""
    found = []
    for path in sorted((SRC / "firewall").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            named = {_leaf(s) for s in sides} & (_VERSION_NAMES | _PROTO_NAMES)
            numbers = [s for s in sides if _number(s)]
            literal_sets = [
                s
                for s in sides
                if isinstance(s, ast.Tuple) and any(_number(e) for e in s.elts)
            ]
            if named and (numbers or literal_sets):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_port_state_and_reason_are_the_models_and_read_as_nmaps_words() -> None:
    import json

    from portkit import scan
    from portkit.firewall import Packet, Verdict
    from portkit.firewall._eval import scanner_view
    from portkit.model import PortState, Reason

    assert scan.PortState is PortState and scan.Reason is Reason
    assert portkit.PortState is PortState and portkit.Reason is Reason
    udp = Packet.parse("udp 192.0.2.1:5000 -> 192.0.2.2:53")
    view = scanner_view(udp, Verdict.DROP, None)
    assert view.state is PortState.OPEN_FILTERED
    assert json.loads(json.dumps(view.to_json()))["state"] == "open|filtered"
    assert scanner_view(udp, Verdict.ACCEPT, None, listening=True).state is PortState.OPEN
    assert scanner_view(udp, Verdict.ACCEPT, None).state is PortState.UNFILTERED
    assert (str(PortState.CLOSED_FILTERED), f"{Reason.NO_RESPONSE}") == ("closed|filtered", "no-response")


_interval = st.tuples(st.integers(0, 300), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1]))


@given(st.lists(_interval, max_size=12))
def test_merge_intervals_keeps_the_set_and_leaves_no_overlap_or_touch(intervals: list[Interval]) -> None:
    merged = merge_intervals(intervals)
    covered = {n for lo, hi in intervals for n in range(lo, hi + 1)}
    assert {n for lo, hi in merged for n in range(lo, hi + 1)} == covered
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(merged))
    assert runs(covered) == merged


def test_one_merge_serves_ports_firewall_and_scanner() -> None:
    from portkit.model.ports import PortRange, normalise_ranges
    from portkit.scan._assemble import port_ranges

    assert normalise_ranges([PortRange(5, 9), PortRange(1, 4), PortRange(20, 20)]) == (
        PortRange(1, 9),
        PortRange(20, 20),
    )
    assert port_ranges([8080, *range(1, 1025), 3]) == "1-1024,8080"
    assert format_intervals(runs([])) == ""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("2m", 120), ("1.5m", 90), ("500ms", 0.5), ("2h", 7200), (" 5M ", 300)],
)
def test_one_duration_grammar(text: str, seconds: float) -> None:
    from portkit.cli._params import parse_duration

    assert parse_duration(text, "--t") == seconds


@pytest.mark.parametrize("text", ["nan", "1e9", "\u0661\u0660s", "-1s", "5 m", "1d", "", ".5s"])
def test_duration_refuses_what_neither_grammar_took(text: str) -> None:
    from portkit.cli._params import parse_duration

    with pytest.raises(UsageError, match="expected a time such as 500ms, 30s, 5m or 2h"):
        parse_duration(text, "--t")


def test_duration_bounds_are_named() -> None:
    from portkit.cli._params import parse_duration

    assert parse_duration("1h", "--confirm-within", minimum=1, maximum=3600) == 3600
    with pytest.raises(UsageError, match="invalid --confirm-within '61m': expected from 1s to 1h"):
        parse_duration("61m", "--confirm-within", minimum=1, maximum=3600)
    with pytest.raises(UsageError, match="expected at most 720h"):
        parse_duration("721h", "--host-timeout")


PUBLIC_NAMES = [
    "Advice",
    "AuditReport",
    "Chain",
    "DYNAMIC",
    "Decision",
    "Diagnosis",
    "Direction",
    "Endpoint",
    "Exposure",
    "FastEvaluator",
    "Field",
    "FilterAction",
    "FilterRule",
    "Finding",
    "Flow",
    "ForwardRule",
    "Forwarder",
    "HostResult",
    "HttpInfo",
    "ImportReport",
    "Inventory",
    "Ledger",
    "Listener",
    "Mapping",
    "Match",
    "Namespace",
    "Overview",
    "Packet",
    "PermissionNeeded",
    "PortClass",
    "PortExplanation",
    "PortForward",
    "PortHistory",
    "PortMatch",
    "PortRange",
    "PortResult",
    "PortSettings",
    "PortSpec",
    "PortState",
    "PortUse",
    "PortkitError",
    "ProcessInfo",
    "Protocol",
    "REGISTERED",
    "Reason",
    "Registry",
    "Reject",
    "RejectType",
    "Ruleset",
    "ScanOptions",
    "ScanResult",
    "ScanType",
    "ScannerView",
    "Service",
    "ServiceRecord",
    "Severity",
    "SockDiagClient",
    "Socket",
    "SocketQuery",
    "Source",
    "Table",
    "TcpInfo",
    "TcpState",
    "TlsInfo",
    "Transport",
    "UsageError",
    "Verdict",
    "WELL_KNOWN",
    "WatchOptions",
    "apply_ruleset",
    "build_overview",
    "check_forward",
    "classify_port",
    "confirm_apply",
    "default_registry",
    "detect_services",
    "diagnose_bind",
    "diagnose_reach",
    "download_iana",
    "evaluate",
    "explain_port",
    "export_ruleset",
    "find_free_ports",
    "forward_rule",
    "forward_stats",
    "import_iana",
    "import_iptables_save",
    "import_nft_json",
    "import_ufw",
    "lint_ruleset",
    "list_forwards",
    "list_sockets",
    "load_file",
    "load_forward_config",
    "map_port",
    "matches_from_spec",
    "parse_address",
    "parse_exposure_policy",
    "parse_policy",
    "parse_port_spec",
    "port_history",
    "read_live",
    "read_port_settings",
    "render_firewalld",
    "render_iptables",
    "render_nft",
    "render_sarif",
    "render_ufw",
    "rollback_apply",
    "run_audit",
    "run_scan",
    "run_watch",
    "serve_forward",
    "unmap_port",
    "validate_port",
    "who_holds",
]


def test_the_public_api_is_pinned_and_each_name_is_unique() -> None:
    """A public name added, removed or renamed is a decision: this list changes with it."""
    assert portkit.__all__ == PUBLIC_NAMES
    assert sorted(dir(portkit)) == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(portkit, name) is not None, name
    # One name per thing, except `Protocol`: the same enum as `Transport`, kept for callers.
    objects = {id(getattr(portkit, name)): name for name in PUBLIC_NAMES if name != "Protocol"}
    assert len(objects) == len(PUBLIC_NAMES) - 1
    assert portkit.Protocol is portkit.Transport


def test_the_export_list_is_written_once() -> None:
    text = (SRC / "__init__.py").read_text()
    assert "__all__" not in text and "_EXPORTS" not in text
    from portkit._lazy import exports_in_source

    assert sorted(exports_in_source(text)) == PUBLIC_NAMES
    model_text = (SRC / "model" / "__init__.py").read_text()
    assert "__all__" not in model_text and "_EXPORTS" not in model_text
    import portkit.model

    assert portkit.model.__all__ == sorted(exports_in_source(model_text))
    for name in portkit.model.__all__:
        assert getattr(portkit.model, name) is not None, name


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute `portkit...` module `path` imports (at any depth), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return [(m, n) for m, n in found if m == "portkit" or m.startswith("portkit.")]


def test_model_is_a_leaf() -> None:
    """portkit.model imports nothing of portkit but itself: the errors and the lazy loader
    every package uses are defined in it (portkit.errors and portkit._lazy re-export them)."""
    outside = [
        f"{path.name}:{line}: {module}"
        for path in sorted((SRC / "model").glob("*.py"))
        for module, line in _imports(path)
        if not module.startswith("portkit.model")
    ]
    assert outside == []


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "portkit"


def test_no_import_cycle_between_packages() -> None:
    """Dependencies point one way. The root `portkit/__init__.py` is left out: it is the facade
    that names every package's API (and holds `__version__`), loaded before any of them."""
    edges: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for target, _ in _imports(path):
            a, b = _unit(module), _unit(target)
            if a != b and "portkit" not in (a, b):
                edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(a for a in edges if reaches(a, a, {a}))
    assert cycles == []


def test_cli_uses_only_the_public_api_of_each_package() -> None:
    """`portkit.cli` is a client of the library: it imports `portkit.<package>` (its __init__),
    never `portkit.<package>._private`. Its own `portkit.cli._*` modules and the root leaf
    modules (`portkit._textfile`, `portkit._lazy`) are not another package's internals."""
    private = [
        f"{path.name}:{line}: {module}"
        for path in sorted((SRC / "cli").glob("*.py"))
        for module, line in _imports(path)
        if _unit(module) not in ("cli", "portkit")
        and any(part.startswith("_") for part in module.split(".")[2:])
    ]
    assert private == []


class _OneRisk:
    """A registry that knows one risk: what the edge would pass instead of portkit's default."""

    def risk_for(self, port: int, protocol: Transport) -> object | None:
        from portkit.registry import Service, Source

        if port != 6379:
            return None
        return Service("redis-planted", 6379, protocol, Source.BUILTIN, risk="planted risk note")


def test_lint_words_risks_with_the_registry_it_is_given() -> None:
    from typing import Any

    from portkit.firewall import lint_ruleset, parse_policy

    rules = parse_policy("default incoming deny\nallow established\nallow tcp 6379\n")
    given_registry: Any = _OneRisk()
    risky = [f.message for f in lint_ruleset(rules, registry=given_registry) if f.check == "risky-exposure"]
    assert risky and all("redis-planted: planted risk note" in m for m in risky)
    default = [f.message for f in lint_ruleset(rules) if f.check == "risky-exposure"]
    assert default and not any("planted" in m for m in default)
