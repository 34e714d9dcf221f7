"""`portkit nat ls` against real connections: forwards written by hand (as an admin or another tool
would, not by `nat add`) on the lab router, and for each one what `nat ls` predicts — the filter's
verdict on the forwarded packet, forwarding, whether anything listens on the target, its problems —
compared with a TCP exchange from the outside host to the router's public address and port.

A forward `nat ls` lists without problems, with filter `accept`, must carry data end to end; one
it flags must not. A verdict of `uncertain` predicts nothing and is only checked to be said.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from conftest import run_cli
from portkit.testing import HomeLab, HomeSpec, LabHost

PAYLOAD = os.urandom(4096)


@pytest.fixture(scope="module")
def home() -> Iterator[HomeLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    with HomeLab(HomeSpec((LabHost("server"),))) as running:
        running.echo_server("server", 443)
        running.echo_server("server", 8443)  # listening, but the forward chain never admits it
        yield running


def _rules(home: HomeLab) -> str:
    server, wan = home.address("server"), home.wan_address
    return f"""
table ip byhand {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" tcp dport 9001 dnat to {server}:443
        iifname "wan0" tcp dport 9002 dnat to {server}:8443
        ip daddr {wan} tcp dport 9003 dnat to {server}:444
        iifname "wan0" ip saddr 10.0.0.0/8 tcp dport 9004 dnat to {server}:443
        iifname "lan0" tcp dport 9005 dnat to {server}:443
        tcp dport 9006 dnat to {server}:443
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "wan0" tcp dport 9999 accept
        ct status dnat ip daddr {server} tcp dport 443 accept
        ct status dnat ip daddr {server} tcp dport 444 accept
        oifname "wan0" accept
    }}
}}
"""


def test_nat_ls_predictions_hold_from_outside(home: HomeLab) -> None:
    home.nft("router", _rules(home))
    listed = run_cli("nat", "ls", "--netns", home.netns("router"), "--json")
    assert listed.status in (0, 1), listed.stderr
    forwards = {int(f["public_port"]): f for f in listed.json()["forwards"] if f["table"] == "ip byhand"}
    assert set(forwards) == {9001, 9002, 9003, 9004, 9005, 9006}, listed.stdout
    wrong = []
    assert forwards[9001]["filter"] == "accept" and forwards[9002]["filter"] == "drop"
    for port, forward in sorted(forwards.items()):
        if forward["in"] not in (None, "wan0"):
            continue  # a forward for clients on another side: nothing to see from outside
        works = home.exchange("outside", home.wan_address, port, PAYLOAD) == PAYLOAD
        if forward["filter"] == "uncertain":
            continue
        predicted = forward["filter"] == "accept" and not forward["problems"]
        if predicted != works:
            wrong.append(
                f"{port}: nat ls filter={forward['filter']} ({forward['filter_reason']}), "
                f"listening={forward['listening']['state']}, problems={forward['problems']}; real: "
                + ("carries data" if works else "fails")
            )
    assert not wrong, "\n".join(wrong)
