from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit import (
    DYNAMIC,
    REGISTERED,
    WELL_KNOWN,
    Endpoint,
    Flow,
    Protocol,
    UsageError,
    classify_port,
    validate_port,
)


@pytest.mark.parametrize(
    ("port", "cls"),
    [
        (0, WELL_KNOWN),
        (22, WELL_KNOWN),
        (1023, WELL_KNOWN),
        (1024, REGISTERED),
        (49151, REGISTERED),
        (49152, DYNAMIC),
        (65535, DYNAMIC),
    ],
)
def test_port_classes_follow_rfc6335(port: int, cls: object) -> None:
    assert classify_port(port) is cls


@pytest.mark.parametrize("bad", [-1, 65536, 70000, "x", "", "8o", True])
def test_invalid_ports_are_rejected_with_a_message(bad: object) -> None:
    with pytest.raises(UsageError, match="invalid port"):
        validate_port(bad)  # type: ignore[arg-type]


@given(st.integers(0, 65535))
def test_every_valid_port_has_exactly_one_class(port: int) -> None:
    assert sum(port in c for c in (WELL_KNOWN, REGISTERED, DYNAMIC)) == 1


def test_endpoints_print_like_ss_does() -> None:
    assert str(Endpoint.parse("1.2.3.4:80")) == "1.2.3.4:80"
    assert str(Endpoint.parse("[::1]:443")) == "[::1]:443"
    assert Endpoint.parse("8080", default_address="127.0.0.1").port == 8080


@given(st.ip_addresses(), st.integers(0, 65535))
def test_endpoint_round_trips(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    endpoint = Endpoint(address, port)
    assert Endpoint.parse(str(endpoint)) == endpoint


@pytest.mark.parametrize("bad", ["1.2.3.4", "1.2.3.4:99999", "[::1]443", "host:80", "::1:80"])
def test_bad_endpoints_name_the_input(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        Endpoint.parse(bad)
    assert repr(bad) in str(err.value) or "invalid" in str(err.value)


def test_flow_parses_and_prints_the_five_tuple() -> None:
    flow = Flow.parse("tcp 203.0.113.5:51000 -> 10.0.0.2:443")
    assert flow.protocol is Protocol.TCP
    assert flow.dst == Endpoint.parse("10.0.0.2:443")
    assert str(flow) == "tcp 203.0.113.5:51000 -> 10.0.0.2:443"
    assert Flow.parse(str(flow)) == flow


def test_flow_refuses_mixed_families() -> None:
    with pytest.raises(UsageError, match="IPv4 or IPv6"):
        Flow.parse("udp 10.0.0.1:5 -> [::1]:53")


def test_protocol_parse_names_what_is_accepted() -> None:
    assert Protocol.parse("UDP") is Protocol.UDP
    with pytest.raises(UsageError, match="tcp, udp, sctp"):
        Protocol.parse("icmp")
