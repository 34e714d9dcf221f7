"""The reverse-path check (iptables' `-m rpfilter`, nft's `fib saddr . iif oif missing`):
read by both importers as one match, decided from the host's routes, written by both
exporters where the kernel takes it."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest

from portkit.firewall import (
    ExportRefused,
    Field,
    Packet,
    Verdict,
    evaluate,
    export_ruleset,
    import_iptables_save,
    import_nft_json,
)
from portkit.testing import LabNamespace

# firewalld's raw-table rule on a RHEL 7 host (tests/corpus/firewall/insights-rhel7-ip6tables-save.rules).
RHEL7 = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j ACCEPT
-A PREROUTING -m rpfilter --invert -j DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
"""

SSH = Packet.parse("tcp [2001:db8::20]:40000 -> [2001:db8::10]:22 in eth0")
WEB = Packet.parse("tcp [2001:db8::20]:40000 -> [2001:db8::10]:80 in eth0")


def _v6(routes: dict[str, str | None]) -> object:
    """A route lookup: the output interface for an address, None for no route."""

    def lookup(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        return routes.get(str(address), "")

    return lookup


def test_rpfilter_is_read_as_the_reverse_path_match() -> None:
    rs = import_iptables_save(RHEL7, version=6)
    raw = rs.table("ip6", "raw")
    assert raw is not None
    (m,) = raw.chain("PREROUTING").rules[1].matches  # type: ignore[union-attr]
    assert m.field is Field.REVERSE_PATH and m.negate and m.names == ()
    assert str(m) == "fib saddr . iif oif missing"


def test_without_routes_the_first_branch_assumes_the_route_back_exists() -> None:
    # A rules file says nothing about routes: both outcomes, the first one as an ordinary
    # host sees it (the route back leaves where the packet came in), as for nft's fib.
    rs = import_iptables_save(RHEL7, version=6)
    ssh = evaluate(rs, SSH)
    assert not ssh.certain
    assert ssh.verdict is Verdict.ACCEPT
    assert {o.verdict for o in ssh.outcomes} == {Verdict.ACCEPT, Verdict.DROP}
    web = evaluate(rs, WEB)
    assert web.verdict is Verdict.REJECT and web.reject_with == "icmpv6-admin-prohibited"


def test_live_routes_decide_the_reverse_path() -> None:
    rs = import_iptables_save(RHEL7, version=6)
    via_input = evaluate(rs, SSH, route=_v6({"2001:db8::20": "eth0"}))  # type: ignore[arg-type]
    assert via_input.certain and via_input.verdict is Verdict.ACCEPT
    no_route = evaluate(rs, SSH, route=_v6({"2001:db8::20": None}))  # type: ignore[arg-type]
    assert no_route.certain and no_route.verdict is Verdict.DROP
    assert "rpfilter" in no_route.reason or "fib saddr" in no_route.reason
    # Another interface: a multipath route may still include eth0, so it stays undecided.
    elsewhere = evaluate(rs, SSH, route=_v6({"2001:db8::20": "eth1"}))  # type: ignore[arg-type]
    assert not elsewhere.certain
    # Routes that cannot be read ("") leave it undecided too.
    unknown = evaluate(rs, SSH, route=_v6({}))  # type: ignore[arg-type]
    assert not unknown.certain
    # Loopback traffic always passes, whatever the routes.
    lo = Packet.parse("tcp [::1]:40000 -> [::1]:22 in lo")
    assert evaluate(rs, lo, route=_v6({"::1": None})).verdict is Verdict.ACCEPT  # type: ignore[arg-type]


def test_loose_passes_with_any_route_back() -> None:
    rs = import_iptables_save(
        "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m rpfilter --loose --invert -j DROP\nCOMMIT\n"
    )
    pkt = Packet.parse("tcp 198.51.100.7:40000 -> 192.0.2.10:22 in eth0")
    d = evaluate(rs, pkt, route=lambda a: "eth1")
    assert d.certain and d.verdict is Verdict.ACCEPT
    assert evaluate(rs, pkt, route=lambda a: None).verdict is Verdict.DROP


def _fib_rule(flags: list[str], op: str, right: object) -> dict[str, object]:
    return {
        "nftables": [
            {"table": {"family": "inet", "name": "fw", "handle": 1}},
            {
                "chain": {
                    "family": "inet",
                    "table": "fw",
                    "name": "pre",
                    "handle": 1,
                    "type": "filter",
                    "hook": "prerouting",
                    "prio": -150,
                    "policy": "accept",
                }
            },
            {
                "rule": {
                    "family": "inet",
                    "table": "fw",
                    "chain": "pre",
                    "handle": 2,
                    "expr": [
                        {
                            "match": {
                                "op": op,
                                "left": {"fib": {"result": "oif", "flags": flags}},
                                "right": right,
                            }
                        },
                        {"drop": None},
                    ],
                }
            },
        ]
    }


@pytest.mark.parametrize(
    ("flags", "op", "right", "names", "negate", "text"),
    [
        (["saddr", "mark", "iif"], "==", False, ("validmark",), True, "fib saddr . mark . iif oif missing"),
        (["saddr", "iif"], "==", "0", (), True, "fib saddr . iif oif missing"),  # iptables-nft's `oif 0`
        (["saddr", "iif"], "!=", "0", (), False, "fib saddr . iif oif exists"),
        (["saddr"], "==", True, ("loose",), False, "fib saddr oif exists"),
    ],
)
def test_nft_fib_saddr_oif_is_the_reverse_path_match(
    flags: list[str], op: str, right: object, names: tuple[str, ...], negate: bool, text: str
) -> None:
    rs = import_nft_json(json.dumps(_fib_rule(flags, op, right)))
    (m,) = rs.tables[0].chains[0].rules[0].matches
    assert (m.field, m.names, m.negate, str(m)) == (Field.REVERSE_PATH, names, negate, text)


def test_fib_compared_with_an_interface_name_stays_unmodelled() -> None:
    rs = import_nft_json(json.dumps(_fib_rule(["saddr", "iif"], "==", "eth0")))
    (m,) = rs.tables[0].chains[0].rules[0].matches
    assert m.field is Field.OPAQUE


def test_exports_write_it_where_the_kernel_takes_it() -> None:
    rs = import_iptables_save(RHEL7, version=6)
    text, _ = export_ruleset(rs, "ip6tables")
    assert "-A PREROUTING -m rpfilter --invert -j DROP" in text
    nft, _ = export_ruleset(rs, "nft")
    assert "fib saddr . iif oif missing drop" in nft
    from_nft = import_nft_json(json.dumps(_fib_rule(["saddr", "mark", "iif"], "==", False)))
    ipt, _ = export_ruleset(from_nft, "iptables")
    assert "-m rpfilter --validmark --invert -j DROP" in ipt


def test_rpfilter_outside_prerouting_is_refused_not_dropped() -> None:
    # nft takes `fib saddr . iif` on input; the kernel's rpfilter only on PREROUTING. Leaving
    # the drop out would accept more than the source: the export is refused.
    doc = _fib_rule(["saddr", "iif"], "==", False)
    doc["nftables"][1]["chain"]["hook"] = "input"  # type: ignore[index]
    doc["nftables"][1]["chain"]["prio"] = 0  # type: ignore[index]
    with pytest.raises(ExportRefused, match="rpfilter works in PREROUTING only"):
        export_ruleset(import_nft_json(json.dumps(doc)), "iptables")
    accept_local = import_iptables_save(
        "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m rpfilter --accept-local --invert -j DROP\nCOMMIT\n"
    )
    with pytest.raises(ExportRefused, match="accept-local"):
        export_ruleset(accept_local, "nft")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loads the exports into a namespace)")
def test_the_real_tools_load_both_exports() -> None:
    rs = import_iptables_save(RHEL7, version=6)
    ns = LabNamespace("pkrp")
    ns.open()
    try:
        for target, tool in (("ip6tables", ["ip6tables-restore"]), ("nft", ["nft", "-f", "-"])):
            text, _ = export_ruleset(rs, target)
            proc = subprocess.run(
                ["ip", "netns", "exec", ns.name, *tool],
                input=text,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, f"{target}: {proc.stderr}"
            subprocess.run(
                ["ip", "netns", "exec", ns.name, "nft", "flush", "ruleset"], check=True, timeout=60
            )
    finally:
        ns.close()
