"""portkit speaks one vocabulary: shared types live in portkit.model and every capability uses them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
