"""iptables-save import against the kernel: what iptables-restore accepts and refuses, and
what the loaded rules do to real connections.

Each rule set is loaded into the server namespace of the two-namespace lab with the real
`iptables-restore` / `ip6tables-restore`; real TCP connects and UDP datagrams come from the
client namespace. portkit reads the same text (`import_iptables_save`, as `fw check --rules`)
and the namespace (`read_live`, as `fw check --netns`): what the kernel did must be one of
the outcomes portkit reports, and the only one where portkit says it is certain. Spellings
are checked against iptables-restore itself: accepted by both or refused by both (portkit:
one line, exit 2), and an accepted spelling means what iptables-save prints back for it.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fixtures_firewall as lab_mod
from portkit.errors import UsageError
from portkit.firewall import CtState, Decision, Direction, Field, Ruleset, evaluate, import_iptables_save
from portkit.firewall._eval import ANSWER_ERRNO, Outcome
from portkit.firewall._live import local_addresses, read_live

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)")


@pytest.fixture(scope="module")
def lab() -> Iterator[lab_mod.Lab]:
    lab = lab_mod.Lab().open()
    try:
        yield lab
    finally:
        lab.close()


def _restore(lab: lab_mod.Lab, text: str, version: int) -> subprocess.CompletedProcess[str]:
    tool = "iptables-restore" if version == 4 else "ip6tables-restore"
    return subprocess.run(
        ["ip", "netns", "exec", lab.server, tool],
        input=text,
        text=True,
        capture_output=True,
        check=False,
        timeout=30,
    )


def _load(lab: lab_mod.Lab, text: str, version: int) -> None:
    lab.flush()
    proc = _restore(lab, text, version)
    assert proc.returncode == 0, proc.stderr


def _save(lab: lab_mod.Lab, version: int) -> str:
    tool = "iptables-save" if version == 4 else "ip6tables-save"
    return subprocess.run(
        ["ip", "netns", "exec", lab.server, tool], text=True, capture_output=True, check=True, timeout=30
    ).stdout


def _seen(o: Outcome, proto: str) -> str:
    if o.outcome == "drop":
        return "timeout" if proto == "tcp" else "silence"
    if o.outcome.startswith("reject:"):
        return ANSWER_ERRNO[o.reject_with or ""]
    return "delivered" if proto == "udp" else "connected"


def _allowed(rs: Ruleset, probe: lab_mod.Probe, base: int, iface: str, **kw: Any) -> tuple[set[str], bool]:
    first: Decision = evaluate(rs, probe.packet(base, iface), direction=Direction.INPUT, **kw)
    seen = {_seen(o, probe.proto) for o in first.outcomes}
    certain = first.certain
    if "connected" in seen:
        ack = evaluate(rs, probe.packet(base, iface, CtState.ESTABLISHED), direction=Direction.INPUT, **kw)
        certain = certain and ack.certain
        seen.discard("connected")
        seen |= {"connected+accepted" if o.outcome == "accept" else "connected" for o in ack.outcomes}
    return seen, certain


def _check(
    lab: lab_mod.Lab, text: str, version: int, probes: list[lab_mod.Probe]
) -> dict[str, list[tuple[str, bool]]]:
    """Load `text`, fire `probes`; for each reader, (observed, certain) per probe. Fails when
    the kernel did something portkit did not allow, or portkit was certain of another thing."""
    _load(lab, text, version)
    local = frozenset(ipaddress.ip_address(a) for a in local_addresses(lab.server))
    readers = {
        "file": (import_iptables_save(text, version=version, source="rules"), {}),
        "live": (read_live(lab.server), {"local_addresses": local}),
    }
    base = lab.sport_block()
    observed = lab.run(probes, base)
    out: dict[str, list[tuple[str, bool]]] = {}
    for name, (rs, kw) in readers.items():
        out[name] = []
        for p, got in zip(probes, observed, strict=True):
            allowed, sure = _allowed(rs, p, base, lab.server_if, **kw)
            where = f"{name}: {p} observed {got}, portkit allows {sorted(allowed)} (certain={sure})"
            assert got in allowed, where
            if sure:
                assert allowed == {got}, where
            out[name].append((got, sure))
    return out


def _tcp(src: str, k: int, dst: str, port: int) -> lab_mod.Probe:
    return lab_mod.Probe("tcp", src, k, dst, port)


# --- 1. protocols --------------------------------------------------------------------------

PROTOCOL_SPELLINGS = [
    "ipencap", "IPENCAP", "IpEnCaP", "4", "0x4", "010", "+6", "255", "all", "ALL", "0", "hopopt", "ip",
    "tcp", "TCP", "udplite", "ipv6-icmp", "icmpv6", "mh", "ipv6-mh", "mobility-header", "esp", "ah", "gre",
    "256", "-1", "foo", "0x", "08", "1e2", "²", "tcp6", "",
]  # fmt: skip


def _proto_of(rs: Ruleset) -> set[int]:
    return {
        lo
        for t in rs.tables
        for c in t.chains
        for r in c.rules
        for m in r.matches
        if m.field is Field.L4PROTO
        for lo, _hi in m.ranges
    }


@pytest.mark.parametrize("version", [4, 6])
def test_protocol_spellings_as_iptables_restore_reads_them(lab: lab_mod.Lab, version: int) -> None:
    for spelling in PROTOCOL_SPELLINGS:
        for neg in ("", "! "):
            text = f'*filter\n:INPUT ACCEPT [0:0]\n-A INPUT {neg}-p "{spelling}" -j ACCEPT\nCOMMIT\n'
            lab.flush()
            kernel = _restore(lab, text, version)
            try:
                mine = import_iptables_save(text, version=version)
            except UsageError as exc:
                assert kernel.returncode != 0, f"{neg}-p {spelling!r}: iptables accepts it; portkit: {exc}"
                assert "\n" not in str(exc) and len(str(exc)) < 200
                continue
            assert kernel.returncode == 0, f"{neg}-p {spelling!r}: iptables refuses it, portkit accepts it"
            saved = import_iptables_save(_save(lab, version), version=version)
            assert _proto_of(mine) == _proto_of(saved), f"{neg}-p {spelling!r}"


def test_bad_protocol_is_exit_2_one_line(tmp_path: Path, cli: Any) -> None:
    rules = tmp_path / "rules.v4"
    rules.write_text("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p nosuchproto -j ACCEPT\nCOMMIT\n")
    res = cli("fw", "show", str(rules))
    assert res.status == 2
    assert res.stderr.count("\n") == 1 and "nosuchproto" in res.stderr and "internal error" not in res.stderr


# --- 2. IPsec, extension headers, fragments --------------------------------------------------

ALGO_LIKE_V4 = """\
*filter
:INPUT DROP [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p esp -j ACCEPT
-A INPUT -p ah -j ACCEPT
-A INPUT -p ipencap -m policy --dir in --pol ipsec --proto esp -j ACCEPT
-A INPUT -m policy --dir in --pol ipsec -j ACCEPT
-A INPUT -f -j ACCEPT
-A INPUT -p tcp --dport 2000 -m policy --dir in --pol none -j ACCEPT
-A INPUT -p tcp --dport 2001 -m policy --dir in --pol ipsec -j ACCEPT
-A INPUT -p udp --dport 2002 -m policy --pol none --dir in -j ACCEPT
-A INPUT -p tcp --dport 2003 ! -f -j ACCEPT
-A INPUT -p 0 -s 10.66.0.3 -j ACCEPT
-A INPUT -p tcp -j REJECT --reject-with tcp-reset
COMMIT
"""


def test_ipsec_and_fragment_matches_v4(lab: lab_mod.Lab) -> None:
    src, src3, dst = "10.66.0.1", "10.66.0.3", "10.66.0.2"
    probes = [
        _tcp(src, 0, dst, 2000),
        _tcp(src, 1, dst, 2001),
        lab_mod.Probe("udp", src, 2, dst, 2002),
        lab_mod.Probe("udp", src, 3, dst, 2003),
        _tcp(src, 4, dst, 2003),
        _tcp(src, 5, dst, 2004),
        _tcp(src3, 6, dst, 2004),
        lab_mod.Probe("udp", src3, 7, dst, 2005),
    ]
    got = _check(lab, ALGO_LIKE_V4, 4, probes)
    for reader, results in got.items():
        assert all(sure for _, sure in results), (reader, results)
    assert [o for o, _ in got["file"]] == [
        "connected+accepted", "ECONNREFUSED", "delivered", "silence", "connected+accepted", "ECONNREFUSED",
        "connected+accepted", "delivered",
    ]  # fmt: skip


EXTHDR_V6 = """\
*filter
:INPUT DROP [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -m ah -j ACCEPT
-A INPUT -m frag -j ACCEPT
-A INPUT -m hbh -j ACCEPT
-A INPUT -m dst -j ACCEPT
-A INPUT -m rt -j ACCEPT
-A INPUT -p esp -j ACCEPT
-A INPUT -p ah -j ACCEPT
-A INPUT -p mh -j ACCEPT
-A INPUT -m ipv6header --header frag --soft -j ACCEPT
-A INPUT -m ipv6header --header hop,dst -j ACCEPT
-A INPUT -m policy --dir in --pol ipsec -j ACCEPT
-A INPUT -p ipv6-icmp ! --icmpv6-type echo-request -j ACCEPT
-A INPUT -p tcp --dport 2000 -m ipv6header --header prot -j ACCEPT
-A INPUT -p tcp --dport 2001 -m ipv6header ! --header hop,dst --soft -j ACCEPT
-A INPUT -p tcp --dport 2002 -m policy --dir in --pol none -j ACCEPT
-A INPUT -p tcp --dport 2003 -m ipv6header ! --header prot -j ACCEPT
-A INPUT -p tcp -j REJECT --reject-with tcp-reset
COMMIT
"""


def test_extension_header_and_ipsec_matches_v6(lab: lab_mod.Lab) -> None:
    src, dst = "fd66::1", "fd66::2"
    probes = [_tcp(src, k, dst, port) for k, port in enumerate((2000, 2001, 2002, 2003, 2004))]
    probes.append(lab_mod.Probe("udp", src, 5, dst, 2005))
    got = _check(lab, EXTHDR_V6, 6, probes)
    for reader, results in got.items():
        assert all(sure for _, sure in results), (reader, results)
    assert [o for o, _ in got["live"]] == [
        "connected+accepted", "connected+accepted", "connected+accepted",
        "ECONNREFUSED", "ECONNREFUSED", "silence",
    ]  # fmt: skip
