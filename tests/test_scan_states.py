"""The state table says what nmap says for every response to every scan type."""

from __future__ import annotations

import pytest

from portkit.scan import STATES, PortState, Reason, Response, ScanType, classify
from portkit.scan._states import ICMP_UNREACH, OUTCOMES, RESPONSES, is_final, outcome_codes

F, C, OPEN = PortState.FILTERED, PortState.CLOSED, PortState.OPEN


@pytest.mark.parametrize(
    ("scan_type", "response", "state", "reason"),
    [
        (ScanType.SYN, Response.SYN_ACK, OPEN, Reason.SYN_ACK),
        (ScanType.SYN, Response.RST, C, Reason.RESET),
        (ScanType.SYN, Response.ICMP_PORT_UNREACH, F, Reason.PORT_UNREACH),
        (ScanType.SYN, Response.ICMP_ADMIN_PROHIBITED, F, Reason.ADMIN_PROHIBITED),
        (ScanType.SYN, Response.ICMP_HOST_UNREACH, F, Reason.HOST_UNREACH),
        (ScanType.SYN, Response.NONE, F, Reason.NO_RESPONSE),
        (ScanType.CONNECT, Response.CONNECTED, OPEN, Reason.SYN_ACK),
        (ScanType.CONNECT, Response.REFUSED, C, Reason.CONN_REFUSED),
        (ScanType.CONNECT, Response.HOST_UNREACHABLE, F, Reason.HOST_UNREACH),
        (ScanType.CONNECT, Response.NONE, F, Reason.NO_RESPONSE),
        (ScanType.CONNECT, Response.PROHIBITED, F, Reason.ADMIN_PROHIBITED),
        (ScanType.UDP, Response.UDP_REPLY, OPEN, Reason.UDP_RESPONSE),
        (ScanType.UDP, Response.ICMP_PORT_UNREACH, C, Reason.PORT_UNREACH),
        (ScanType.UDP, Response.ICMP_ADMIN_PROHIBITED, F, Reason.ADMIN_PROHIBITED),
        (ScanType.UDP, Response.ICMP_HOST_PROHIBITED, F, Reason.HOST_PROHIBITED),
        (ScanType.UDP, Response.NONE, PortState.OPEN_FILTERED, Reason.NO_RESPONSE),
        (ScanType.ACK, Response.RST, PortState.UNFILTERED, Reason.RESET),
        (ScanType.ACK, Response.ICMP_NET_PROHIBITED, F, Reason.NET_PROHIBITED),
        (ScanType.ACK, Response.NONE, F, Reason.NO_RESPONSE),
    ],
)
def test_nmap_states(scan_type: ScanType, response: Response, state: PortState, reason: Reason) -> None:
    assert classify(scan_type, response) == (state, reason)


def test_every_icmp_unreachable_code_nmap_knows_is_filtered_for_tcp() -> None:
    assert sorted(ICMP_UNREACH) == [0, 1, 2, 3, 9, 10, 13]
    for response in ICMP_UNREACH.values():
        for scan_type in (ScanType.SYN, ScanType.ACK):
            outcome = classify(scan_type, response)
            assert outcome is not None and outcome[0] is F


def test_responses_that_say_nothing_are_not_in_the_table() -> None:
    assert classify(ScanType.ACK, Response.SYN_ACK) is None
    assert classify(ScanType.UDP, Response.RST) is None
    assert classify(ScanType.SYN, Response.UDP_REPLY) is None
    assert not is_final(ScanType.SYN, Response.NONE)
    assert is_final(ScanType.SYN, Response.RST)


def test_every_scan_type_settles_silence() -> None:
    for scan_type in ScanType:
        assert (scan_type, Response.NONE) in STATES


def test_integer_codes_agree_with_the_table() -> None:
    for scan_type in ScanType:
        codes = outcome_codes(scan_type)
        for response, code in zip(RESPONSES, codes, strict=True):
            assert OUTCOMES[code] == classify(scan_type, response)
