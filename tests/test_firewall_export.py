"""`fw export` fails closed: every export loads in the real tool and is never more open than its source.

Each export is validated by the tool that will read it (`nft -c -f`, `iptables-restore --test`,
`ip6tables-restore --test`) inside a network namespace this test creates; rule sets with
matches the target cannot write are loaded for real, original and export in turn, and probed
with real SYNs and datagrams from a peer namespace (fixtures_firewall.Lab): a port the source
closes must never be open after the export.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fixtures_firewall as lab_mod
from conftest import needs_root
from portkit.firewall import (
    ExportRefused,
    Field,
    FilterAction,
    FilterRule,
    Match,
    Rendering,
    Ruleset,
    export_ruleset,
    import_iptables_save,
    parse_nft_script,
    render_iptables,
    render_nft,
)
from portkit.testing import LabNamespace

ROOT = os.geteuid() == 0

# The default WAN input chain of OpenWrt's fw4, as `nft list ruleset` shows it on a router
# (openwrt/firewall4, root/usr/share/firewall4/templates/ruleset.uc), with the lab's interface.
OPENWRT = """
table inet fw4 {{
	chain input {{
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		ct state established,related accept
		iifname "{wan}" jump input_wan
	}}
	chain input_wan {{
		meta nfproto ipv4 udp dport 68 counter accept comment "!fw4: Allow-DHCP-Renew"
		icmp type echo-request counter accept comment "!fw4: Allow-Ping"
		meta nfproto ipv6 icmpv6 type {{ destination-unreachable, time-exceeded, nd-neighbor-solicit }} \
			limit rate 1000/second counter accept
		tcp dport 2001 ct status dnat accept comment "!fw4: Accept port redirections"
		ct status dnat accept
		udp dport 2002 counter return
		tcp dport 2003 counter accept
		jump reject_from_wan
	}}
	chain reject_from_wan {{
		meta l4proto tcp reject with tcp reset comment "!fw4: reject wan tcp"
		counter reject
	}}
}}
"""


def _run(
    *args: str, stdin: str | None = None, env_path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": env_path} if env_path else None
    return subprocess.run(
        list(args), capture_output=True, text=True, input=stdin, timeout=60, check=False, env=env
    )


class Netns:
    """A throwaway network namespace (portkit.testing) for validation, always deleted."""

    def __init__(self) -> None:
        self.namespace = LabNamespace("pkxv")
        self.name = self.namespace.name

    def __enter__(self) -> Netns:
        self.namespace.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.namespace.close()

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.name, *args, stdin=stdin)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    if not ROOT:
        pytest.skip("needs root (network namespaces)")
    with Netns() as ns:
        yield ns


def validate(ns: Netns, target: str, text: str) -> None:
    """The real tool accepts the export (checks only: nothing is loaded)."""
    with tempfile.NamedTemporaryFile("w", suffix=f".{target}", delete=False) as f:
        f.write(text)
    try:
        if target == "nft":
            proc = ns.run("nft", "-c", "-f", f.name)
        elif target == "firewalld":
            if not firewalld_parser_available():
                return  # see test_firewalld_rich_rules_parse, which says why it skips
            proc = _run("/usr/bin/python3", "-c", _FIREWALLD_CHECK, stdin=text, env_path=FIREWALLD_PY)
        elif target == "ufw":
            # ufw has no check mode: run the commands in the namespace, then clear what they loaded.
            proc = ufw_run(ns.name, text)
            ns.run("nft", "flush", "ruleset")
        elif target in ("iptables", "ip6tables"):
            # --test stops short of the kernel, which alone refuses e.g. REJECT outside filter:
            # load for real into the throwaway namespace, then clear it.
            proc = ns.run(f"{target}-restore", "--test", f.name)
            if proc.returncode == 0:
                proc = ns.run(f"{target}-restore", f.name)
                ns.run("nft", "flush", "ruleset")
        else:
            raise AssertionError(target)
    finally:
        Path(f.name).unlink()
    assert proc.returncode == 0, f"{target} rejects the export: {proc.stderr.strip()}\n{text}"


def ufw_run(netns_name: str, text: str) -> subprocess.CompletedProcess[str]:
    """Run an export's `ufw` commands for real inside a network namespace, with /etc/ufw and
    /etc/default/ufw replaced by scratch copies and /run by an empty tmpfs in a private mount
    namespace, and ufw's sysctl file by an empty one: nothing outside the namespace changes."""
    scratch = Path(tempfile.mkdtemp(prefix="pkx-ufw-"))
    try:
        subprocess.run(["cp", "-a", "/etc/ufw", str(scratch / "etc-ufw")], check=True)
        (scratch / "empty").touch()
        defaults = Path("/etc/default/ufw").read_text()
        lines = [ln for ln in defaults.splitlines() if not ln.startswith("IPT_SYSCTL=")]
        (scratch / "default-ufw").write_text("\n".join([*lines, f"IPT_SYSCTL={scratch / 'empty'}", ""]))
        commands = [ln for ln in text.splitlines() if ln.startswith("ufw ")]
        assert len(commands) == len([ln for ln in text.splitlines() if ln.strip()]), text
        script = "\n".join(
            [
                "set -e",
                "mount --make-rprivate /",
                f"mount --bind {scratch / 'etc-ufw'} /etc/ufw",
                f"mount --bind {scratch / 'default-ufw'} /etc/default/ufw",
                "mount -t tmpfs portkit-ufw-run /run",  # ufw's lock file stays in here
                *commands,
            ]
        )
        return _run("ip", "netns", "exec", netns_name, "unshare", "-m", "sh", "-c", script)
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


# firewalld's own rich-rule parser (python3-firewall; or the files of its .deb, unpacked
# with `dpkg-deb -x`, named by PORTKIT_FIREWALLD_PY): it needs neither the daemon nor D-Bus.
FIREWALLD_PY = os.environ.get("PORTKIT_FIREWALLD_PY", "/usr/lib/python3/dist-packages")
_FIREWALLD_CHECK = """
import shlex, sys
from firewall.core.rich import Rich_Rule
for line in sys.stdin.read().splitlines():
    words = shlex.split(line)
    assert words[0] == "firewall-cmd", line
    for w in words[1:]:
        key, _, value = w.partition("=")
        if key == "--add-rich-rule":
            Rich_Rule(rule_str=value).check()
        elif key == "--set-target":
            assert value in ("ACCEPT", "DROP", "REJECT", "default"), line
        elif key not in ("--permanent", "--zone", "--new-zone", "--set-default-zone", "--reload"):
            raise SystemExit(f"unknown option {w!r}")
"""


def firewalld_parser_available() -> bool:
    probe = _run("/usr/bin/python3", "-c", "import firewall.core.rich", env_path=FIREWALLD_PY)
    return probe.returncode == 0


def _nft(text: str) -> Ruleset:
    return parse_nft_script(text, source="test")


# --- unit tests, one per defect -----------------------------------------------------------------


@needs_root
def test_openwrt_wan_chain_never_becomes_a_bare_accept(netns: Netns) -> None:
    rs = _nft(OPENWRT.format(wan="eth0"))
    for target in ("nft", "iptables", "ip6tables"):
        rendering = export_ruleset(rs, target)
        validate(netns, target, rendering.text)
        lines = rendering.text.splitlines()
        # `ct status dnat accept` is left out whole: no rule that accepts everything is written.
        assert not any(ln.strip() in ("accept", "counter accept") for ln in lines)
        assert not any(
            ln.startswith("-A input_wan") and ln.endswith("-j ACCEPT") and "-p" not in ln and "DNAT" not in ln
            for ln in lines
        )
        if target == "nft":
            # nft writes `ct status dnat` and the rate limit as they were: nothing is left out.
            assert not rendering.omitted, rendering.omitted
            assert "ct status dnat accept" in rendering.text
            assert "limit rate 1000/second burst 5 packets" in rendering.text
        else:
            # iptables names conntrack's DNAT bit as the virtual state DNAT.
            assert "-A input_wan -m conntrack --ctstate DNAT -j ACCEPT" in lines
            assert all(o.narrows for o in rendering.omitted), rendering.omitted
    assert "tcp dport 2003 counter accept" in export_ruleset(rs, "nft").text


@needs_root
@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("meta mark 0x0000002a drop", "a drop"),
        ("meta mark 0x0000002a jump deny", "a jump"),
        ("meta mark 0x0000002a return", "a return"),
        ("meta mark 0x2a meta mark set 0x1", "a side effect"),
    ],
)
def test_leaving_out_anything_but_an_accept_refuses(netns: Netns, rule: str, why: str) -> None:
    script = f"""table inet t {{
        chain input {{ type filter hook input priority 0; policy accept; jump sub; }}
        chain sub {{ {rule}; tcp dport 22 drop; }}
        chain deny {{ drop; }}
    }}"""
    rs = _nft(script)
    if "mark set" not in rule:
        # nft writes the match as the source has it: only a statement loses its place.
        assert rule.replace("0x0000002a", "42") in export_ruleset(rs, "nft").text
    targets = ("nft",) if "mark set" in rule else ()
    for target in (*targets, "iptables", "ip6tables", "ufw", "firewalld"):
        # ufw and firewalld have no regular chains: there the jump itself is what refuses.
        where = "inet t sub #1" if target in ("nft", "iptables", "ip6tables") else "inet t input #1"
        with pytest.raises(ExportRefused, match=where) as exc:
            export_ruleset(rs, target)
        assert len(str(exc.value)) < 700, why
        forced = export_ruleset(rs, target, force=True)
        assert any(o.where == where and not o.narrows for o in forced.omitted)
        validate(netns, target, forced.text)


@needs_root
def test_accept_in_a_nat_chain_is_not_safe_to_leave_out() -> None:
    rs = _nft("""table ip n {
        chain pre { type nat hook prerouting priority dstnat; policy accept;
            tcp dport 80 meta mark 0x0000002a accept
            tcp dport 80 dnat to 10.0.0.9:8080
        }
    }""")
    with pytest.raises(ExportRefused, match="ip n pre #1"):
        export_ruleset(rs, "iptables")
    # nft writes the mark match as the source has it: the rule goes out whole.
    assert "tcp dport 80 meta mark 42 accept" in export_ruleset(rs, "nft").text


def test_cli_refuses_names_the_rule_and_force_warns(tmp_path: Path) -> None:
    from portkit.cli.main import main  # noqa: F401  (the entry point exists)

    rules = tmp_path / "r.rules"
    rules.write_text(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m recent --name x --rcheck -j DROP\n"
        "-A INPUT -m set --match-set friends src -j ACCEPT\nCOMMIT\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    exe = str(Path(__file__).parent.parent / ".venv" / "bin" / "portkit")
    refused = subprocess.run(
        [exe, "fw", "export", str(rules), "--to", "nft"], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 1 and refused.stdout == ""
    assert "ip filter INPUT #1 '-m recent --name x --rcheck drop'" in refused.stderr
    assert "INPUT #2" not in refused.stderr  # the accept only narrows
    assert len(refused.stderr.strip().splitlines()) == 1
    forced = subprocess.run(
        [exe, "fw", "export", str(rules), "--to", "nft", "--force"], capture_output=True, text=True, env=env
    )
    assert forced.returncode == 0 and "warning: --force" in forced.stderr and "note:" in forced.stderr
    rules_written = [ln for ln in forced.stdout.splitlines() if ln.startswith("\t\t") and "policy" not in ln]
    assert rules_written == []


@needs_root
def test_iptables_arguments_load_as_written(netns: Netns) -> None:
    long_name = "a-chain-name-well-over-twenty-eight-characters"
    rs = _nft(f"""table ip t {{
        chain input {{ type filter hook input priority 0; policy drop;
            iifname "eth*" tcp dport 22 accept comment "it's 'ssh' here"
            iifname "wg0" jump {long_name}
        }}
        chain {long_name} {{ tcp dport 80 accept comment "web, for 'all'"; }}
        chain LOG {{ udp dport 53 accept; }}
        chain input2 {{ type filter hook input priority 10; policy accept; tcp dport 23 drop; jump LOG; }}
    }}""")
    text = render_iptables(rs).text
    validate(netns, "iptables", text)
    assert "-i eth+" in text and "--comment \"it's 'ssh' here\"" in text
    back = import_iptables_save(text)
    comments = {r.comment for _, _, _, r in back.rules() if r.comment}
    assert comments == {"it's 'ssh' here", "web, for 'all'"}
    names = [c.name for t in back.tables for c in t.chains]
    assert all(len(n) <= 28 for n in names) and "LOG" not in names
    # The second input chain goes to the security table: an accept in filter does not end it.
    assert "*security" in text and "-A INPUT -p tcp -m tcp --dport 23 -j DROP" in text


@needs_root
def test_iptables_comments_with_quotes_and_backslashes_round_trip(netns: Netns) -> None:
    source = (
        "*filter\n:INPUT DROP [0:0]\n"
        '-A INPUT -p tcp --dport 22 -m comment --comment "a \\"b\\" c\\\\d" -j ACCEPT\nCOMMIT\n'
    )
    rs = import_iptables_save(source)
    assert rs.tables[0].chains[0].rules[0].comment == 'a "b" c\\d'
    text = render_iptables(rs).text
    validate(netns, "iptables", text)
    assert import_iptables_save(text).tables[0].chains[0].rules[0].comment == 'a "b" c\\d'
    # nft strings cannot hold a double quote: the comment is edited (it decides nothing).
    rendering = render_nft(rs)
    validate(netns, "nft", rendering.text)
    assert not rendering.omitted and "comment \"a 'b' c/d\"" in rendering.text
    assert any("comment" in n for n in rendering.notes)


@needs_root
def test_nat_exports_load_or_refuse(netns: Netns) -> None:
    rs = _nft("""table ip n {
        map ports { type inet_service : ipv4_addr; flags timeout; elements = { 80 : 10.0.0.2 } }
        chain pre { type nat hook prerouting priority dstnat; policy accept;
            tcp dport 8080 dnat to 10.0.0.3:80
            dnat to tcp dport map @ports
        }
        chain post { type nat hook postrouting priority srcnat; policy accept;
            iifname "eth0" oifname "eth1" masquerade
            oifname "eth1" masquerade
        }
    }""")
    for target in ("nft", "iptables"):
        with pytest.raises(ExportRefused) as exc:
            export_ruleset(rs, target)
        message = str(exc.value)
        assert "ip n pre #2" in message and "to a map or range cannot be written back" in message
        if target == "iptables":
            assert "ip n post #1" in message and "-i in postrouting" in message
        forced = export_ruleset(rs, target, force=True)
        validate(netns, target, forced.text)
        assert "to-destination ''" not in forced.text and "dnat to \n" not in forced.text
        assert ("dnat to 10.0.0.3:80" in forced.text) or ("--to-destination 10.0.0.3:80" in forced.text)
    # A map whose elements are known (no timeout, no rule updates it) is one rule per element:
    # written back whole.
    known = _nft("""table ip n {
        map ports { type inet_service : ipv4_addr; elements = { 80 : 10.0.0.2, 81 : 10.0.0.3 } }
        chain pre { type nat hook prerouting priority dstnat; policy accept;
            dnat to tcp dport map @ports
        }
    }""")
    for target in ("nft", "iptables"):
        text = export_ruleset(known, target).text
        validate(netns, target, text)
        assert text.count("10.0.0.2") == 1 and text.count("10.0.0.3") == 1


_NAT_RANGES = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp --dport 8080 -j DNAT --to-destination 10.0.0.5-10.0.0.9:80
-A PREROUTING -p tcp --dport 8081 -j DNAT --to-destination 10.0.0.5:8000-8010
-A PREROUTING -p tcp --dport 8082 -j REDIRECT --to-ports 9000-9005
-A PREROUTING -p tcp --dport 8083 -j DNAT --to-destination 10.0.0.5:80
-A POSTROUTING -o eth1 -j SNAT --to-source 192.0.2.1:1024-2048
-A POSTROUTING -o eth2 -j MASQUERADE --to-ports 1024-2048
COMMIT
"""


def test_nat_ranges_import_as_unknown_and_never_export_as_their_first_value(netns: Netns) -> None:
    """Which address or port of a range the kernel picks depends on the flow: a range is an
    unknown rewrite (as nft's), and writing back what is known of it would send packets elsewhere."""
    rs = import_iptables_save(_NAT_RANGES, source="test")
    nats = [r.nat for t in rs.tables for c in t.chains for r in c.rules]
    assert [(n.address, n.port, n.unknown) for n in nats if n is not None] == [
        (None, 80, True),
        ("10.0.0.5", None, True),
        (None, None, True),
        ("10.0.0.5", 80, False),
        ("192.0.2.1", None, True),
        (None, None, True),
    ]
    nft_ranges = _nft("""table ip n {
        chain pre { type nat hook prerouting priority dstnat; policy accept;
            tcp dport 8081 dnat to 10.0.0.5:8000-8010
            tcp dport 8082 redirect to :9000-9005
        }
    }""")
    for source in (rs, nft_ranges):
        for target in ("nft", "iptables"):
            with pytest.raises(ExportRefused) as exc:
                export_ruleset(source, target)
            assert "to a map or range cannot be written back" in str(exc.value)
            forced = export_ruleset(source, target, force=True)  # the ranges left out, the rest loads
            validate(netns, target, forced.text)
            assert "8000" not in forced.text and "9000" not in forced.text


# --- real kernel: never more open than the source ------------------------------------------------

OPEN = {"connected", "connected+accepted", "delivered"}
PORT_PROBES = [
    lab_mod.Probe(proto, src, 1 + i, dst, port)
    for i, (proto, src, dst, port) in enumerate(
        (proto, src, dst, port)
        for proto in ("tcp", "udp")
        for src, dst in ((lab_mod.CLIENT4[0], lab_mod.SERVER4[0]), (lab_mod.CLIENT6[0], lab_mod.SERVER6[0]))
        for port in lab_mod.PORTS[:6]
    )
]


def _load_and_probe(
    lab: lab_mod.FirewallLab, loads: list[tuple[str, str]], probes: list[lab_mod.Probe]
) -> list[str]:
    lab.flush()
    for tool, text in loads:
        if tool == "ufw":
            proc = ufw_run(lab.server, text)
            assert proc.returncode == 0, f"ufw cannot load:\n{proc.stderr}\n{text}"
            continue
        args = {
            "nft": ("nft", "-f", "-"),
            "iptables": ("iptables-restore",),
            "ip6tables": ("ip6tables-restore",),
        }
        proc = _run("ip", "netns", "exec", lab.server, *args[tool], stdin=text)
        assert proc.returncode == 0, f"{tool} cannot load:\n{proc.stderr}\n{text}"
    try:
        return lab.run(probes, lab.sport_block())
    finally:
        lab.flush()


def _wider(probes: list[lab_mod.Probe], before: list[str], after: list[str]) -> set[tuple[str, str, str]]:
    return {
        (f"{p.proto} {p.src} -> {p.dst}:{p.dport}", was, now)
        for p, was, now in zip(probes, before, after, strict=True)
        if now in OPEN and was not in OPEN
    }


def assert_never_wider(
    lab: lab_mod.FirewallLab,
    original_nft: str,
    ruleset: Ruleset,
    probes: list[lab_mod.Probe],
    original: list[tuple[str, str]] | None = None,
) -> int:
    """Load the source and each export for real; return how many exports were compared."""
    source = original or [("nft", "flush ruleset\n" + original_nft)]
    before = _load_and_probe(lab, source, probes)
    exports: list[tuple[str, list[tuple[str, str]]]] = []
    with contextlib.suppress(ExportRefused):
        exports.append(("nft", [("nft", export_ruleset(ruleset, "nft").text)]))
    with contextlib.suppress(ExportRefused):
        exports.append(
            (
                "iptables",
                [
                    ("iptables", export_ruleset(ruleset, "iptables").text),
                    ("ip6tables", export_ruleset(ruleset, "ip6tables").text),
                ],
            )
        )
    with contextlib.suppress(ExportRefused):
        exports.append(("ufw", [("ufw", export_ruleset(ruleset, "ufw").text)]))
    for name, loads in exports:
        wider = _wider(probes, before, _load_and_probe(lab, loads, probes))
        if wider:
            # A probe can time out on a loaded machine: a widening counts only if it repeats.
            again = _load_and_probe(lab, source, probes)
            wider &= _wider(probes, again, _load_and_probe(lab, loads, probes))
        assert not wider, f"{name} export is more open than its source: {sorted(wider)[:5]}\n{loads[0][1]}"
    return len(exports)


@needs_root
def test_openwrt_exports_are_never_more_open_in_the_kernel(lab: lab_mod.FirewallLab) -> None:
    script = OPENWRT.format(wan=lab.server_if)
    rs = _nft(script)
    assert assert_never_wider(lab, script, rs, PORT_PROBES) == 2


KERNEL_CASES = [
    # A host that accepts by default and closes a few ports: simple enough for ufw too.
    """table inet t {{
        chain input {{ type filter hook input priority 0; policy accept;
            tcp dport 2001 drop
            meta nfproto ipv4 udp dport 2002 reject
            ip saddr 10.66.0.0/24 tcp dport 2003 reject with tcp reset
            tcp dport 2004 meta mark 0x2a accept
            tcp dport 2004 drop
            iifname "{wan}" udp dport {{ 2000, 2005 }} drop
        }}
    }}""",
    # Unmodelled matches on accepts, drops after them, returns and counters.
    """table inet t {{
        chain input {{ type filter hook input priority 0; policy accept;
            ct status != dnat tcp dport 2000 accept
            ct status != dnat udp dport 2005 counter
            meta mark 0x2a accept
            counter
            tcp dport {{ 2001, 2002 }} ct status dnat accept
            tcp dport 2001-2003 drop
            iifname "{wan}" udp dport 2000-2003 drop
        }}
    }}""",
    # Two base chains on one hook: an accept in the first must not end the second.
    """table inet a {{
        chain input {{ type filter hook input priority 0; policy accept; tcp dport 2000-2003 accept; }}
    }}
    table inet b {{
        chain input {{ type filter hook input priority 10; policy accept; tcp dport 2001 drop;
            meta nfproto ipv6 udp dport 2002 reject
            ct state new limit rate 1/second udp dport 2003 accept
        }}
    }}""",
    # Two tables, each with its own chain `sub`: they must stay two chains in iptables.
    """table inet a {{
        chain input {{ type filter hook input priority 0; policy accept; jump sub; }}
        chain sub {{ tcp dport 2000 drop; udp dport 2001 accept; }}
    }}
    table inet b {{
        chain input {{ type filter hook input priority 10; policy accept; jump sub; }}
        chain sub {{ udp dport 2001 drop; tcp dport 2002 reject; }}
    }}""",
    # Regular chains, return, and a drop policy.
    """table ip t {{
        chain input {{ type filter hook input priority 0; policy drop;
            iifname "lo" accept
            ct state established,related accept
            iifname "{wan}" jump wan
            udp dport 2004 accept
        }}
        chain wan {{
            tcp dport 2000 return
            ct mark 0x1 accept
            tcp dport 2000-2005 accept
            udp dport 2001 accept
        }}
    }}
    table ip6 t6 {{
        chain input {{ type filter hook input priority 0; policy drop;
            ct state established,related accept
            icmpv6 type {{ echo-request, nd-neighbor-solicit }} accept
            tcp dport 2002 accept
        }}
    }}""",
]


@needs_root
@pytest.mark.parametrize("case", range(len(KERNEL_CASES)))
def test_exports_are_never_more_open_in_the_kernel(lab: lab_mod.FirewallLab, case: int) -> None:
    script = KERNEL_CASES[case].format(wan=lab.server_if)
    compared = assert_never_wider(lab, script, _nft(script), PORT_PROBES)
    assert compared >= (3 if case == 0 else 1)
    if "chain sub" in script:
        text = export_ruleset(_nft(script), "iptables").text
        # Two declarations: in one iptables table under two names, or one in each table.
        assert len([ln for ln in text.splitlines() if ln.startswith(":sub")]) == 2


# --- property: random rule sets with unrenderable matches -----------------------------------------

# nft expressions portkit does not model, each one the kernel accepts in any filter chain.
UNMODELLED = (
    "ct status dnat",
    "ct status != dnat",
    "meta mark 0x0000002a",
    "meta mark != 0x0000002a",
    "ct mark 0x00000001",
    "limit rate 1/second",
)


def _nft_source(rs: Ruleset) -> str:
    """The rule set as nft text, unmodelled matches included (Rule.__str__ writes them as text)."""
    lines = ["flush ruleset"]
    for t in rs.tables:
        lines.append(f"table {t.family} {t.name} {{")
        for s in t.sets:
            elems = s.to_json()["elements"]
            body = f"type {s.type}; " + (f"flags {', '.join(s.flags)}; " if s.flags else "")
            lines.append(
                f"set {s.name} {{ {body}" + (f"elements = {{ {', '.join(elems)} }}" if elems else "") + " }"
            )
        for c in t.chains:
            lines.append(f"chain {c.name} {{")
            if c.hook is not None:
                lines.append(f"type {c.type} hook {c.hook} priority {c.priority}; policy {c.policy};")
            lines.extend(str(r) for r in c.rules)
            lines.append("}")
        lines.append("}")
    return "\n".join(lines) + "\n"


# What ufw's before.rules and firewalld accept whatever the rules say; a source that accepts
# them too can be exported to those front ends without refusal.
_FRONT_END_ACCEPTS = (
    'iifname "lo" accept',
    "ct state established,related accept",
    "meta l4proto { icmp, ipv6-icmp } accept",
    "udp dport { 68, 1900, 5353 } accept",
)


def _front_end_friendly(source: str) -> str:
    """The source with the front ends' own accepts first in its first input chain."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if "hook input" in line:
            return "\n".join([*lines[: i + 1], *_FRONT_END_ACCEPTS, *lines[i + 1 :]]) + "\n"
    return source


@st.composite
def rulesets_with_unmodelled(draw: st.DrawFn, iface: str) -> Ruleset:
    rs = draw(lab_mod.rulesets(iface))
    tables = []
    for t in rs.tables:
        chains = []
        for c in t.chains:
            rules = []
            for r in c.rules:
                if draw(st.booleans()):
                    extra = Match(Field.OPAQUE, text=draw(st.sampled_from(UNMODELLED)))
                    r = replace(r, matches=(*r.matches, extra))
                rules.append(r)
            chains.append(replace(c, rules=tuple(rules)))
        tables.append(replace(t, chains=tuple(chains)))
    return replace(rs, tables=tuple(tables))


@needs_root
@settings(
    max_examples=int(os.environ.get("PORTKIT_EXPORT_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(data=st.data())
def test_generated_exports_load_and_are_never_more_open(
    lab: lab_mod.FirewallLab, netns: Netns, data: st.DataObject
) -> None:
    generated = data.draw(rulesets_with_unmodelled(lab.server_if), label="ruleset")
    source = _nft_source(generated)
    if data.draw(st.booleans(), label="accepts what ufw and firewalld accept anyway"):
        source = _front_end_friendly(source)
    check = _run("ip", "netns", "exec", netns.name, "nft", "-c", "-f", "-", stdin=source)
    assert check.returncode == 0, f"the test wrote an invalid source: {check.stderr}\n{source}"
    rs = _nft(source)
    for target in ("nft", "iptables", "ip6tables", "ufw", "firewalld"):
        try:
            rendering: Rendering = export_ruleset(rs, target)
        except ExportRefused as exc:
            unsafe = exc.rendering.unsafe
            assert unsafe and all(not o.narrows for o in unsafe)
            # Only what could widen refuses: an accept in a filter chain never does.
            assert not any(
                o.rule.endswith(" accept") and o.where.count("#") for o in unsafe if "itself" not in o.where
            )
            rendering = export_ruleset(rs, target, force=True)
        validate(netns, target, rendering.text)
        if target == "nft":
            # nft writes every match as the source has it: nothing is left out.
            assert not rendering.omitted, rendering.omitted
        else:
            # No rule is ever written without one of its matches.
            assert not any(x in rendering.text for x in ("ct status", "meta mark", "limit rate"))
    assert_never_wider(lab, source, rs, PORT_PROBES)


def test_rendering_unpacks_as_text_and_problems() -> None:
    rs = Ruleset()
    text, problems = render_nft(rs)
    assert text == "flush ruleset\n" and problems == []
    r = FilterRule(matches=(Match(Field.OPAQUE, text="meta mark 1"),), action=FilterAction.DROP)
    assert r.uncertain


@needs_root
def test_a_chain_called_from_two_iptables_tables_is_in_both(netns: Netns) -> None:
    rs = _nft("""table inet t {
        chain in1 { type filter hook input priority 0; policy accept; jump common; }
        chain in2 { type filter hook input priority 5; policy accept; jump common; tcp dport 22 accept; }
        chain common { tcp dport 23 drop; }
        chain post { type filter hook postrouting priority 0; policy accept;
            iifname "eth0" tcp dport 80 accept
        }
    }""")
    for target in ("iptables", "ip6tables"):
        rendering = export_ruleset(rs, target)
        validate(netns, target, rendering.text)
        sections = rendering.text.split("COMMIT")
        assert sum("-A common -p tcp -m tcp --dport 23 -j DROP" in part for part in sections) == 2
        # `-i` cannot be used on postrouting in iptables: that accept is left out, only narrowing.
        assert [(o.where, o.narrows) for o in rendering.omitted] == [("inet t post #1", True)]


@needs_root
def test_check_loads_the_export_in_a_scratch_namespace(netns: Netns) -> None:
    from portkit.errors import PortkitError
    from portkit.firewall import check_export

    check_export(render_nft(_nft(OPENWRT.format(wan="eth0"))).text, "nft")
    check_export("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n", "iptables")
    # iptables-restore --test passes this; only the kernel refuses REJECT outside filter.
    bad = "*mangle\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -j REJECT\nCOMMIT\n"
    assert netns.run("iptables-restore", "--test", stdin=bad).returncode == 0
    with pytest.raises(PortkitError, match="iptables-restore refuses the export"):
        check_export(bad, "iptables")
    before = set(_run("ip", "netns", "list").stdout.split())
    with pytest.raises(PortkitError, match="nft refuses"):
        check_export("table ip t { chain c { tcp dport 22 frobnicate; } }", "nft")
    assert not any(
        n.startswith("portkit-check-") for n in set(_run("ip", "netns", "list").stdout.split()) - before
    )


@needs_root
def test_other_families_and_nat_per_address_family(netns: Netns) -> None:
    rs = _nft("""table netdev edge {
        chain ingress { type filter hook ingress device lo priority 0; policy accept;
            ip saddr 10.0.0.0/8 drop
        }
    }
    table inet n {
        chain pre { type nat hook prerouting priority dstnat; policy accept;
            tcp dport 80 dnat ip to 10.0.0.2:8080
            tcp dport 80 dnat ip6 to [fd00::2]:8080
        }
    }""")
    for target in ("nft", "iptables", "ip6tables", "ufw", "firewalld"):
        # The ingress drop chain has no place (nft: its device is not in the model): refused.
        with pytest.raises(ExportRefused, match="netdev edge ingress"):
            export_ruleset(rs, target)
    v4 = export_ruleset(rs, "iptables", force=True).text
    v6 = export_ruleset(rs, "ip6tables", force=True).text
    validate(netns, "iptables", v4)
    validate(netns, "ip6tables", v6)
    assert "--to-destination 10.0.0.2:8080" in v4 and "fd00" not in v4
    assert "--to-destination [fd00::2]:8080" in v6 and "10.0.0.2" not in v6
    validate(netns, "nft", export_ruleset(rs, "nft", force=True).text)


@needs_root
def test_firewalld_rich_rules_parse(netns: Netns) -> None:
    if not firewalld_parser_available():
        pytest.skip(f"firewalld's Python package not found in {FIREWALLD_PY} (python3-firewall)")
    rs = _nft("""table inet t {
        chain input { type filter hook input priority 0; policy drop;
            ip saddr 10.0.0.0/8 tcp dport { 22, 80-90 } accept
            ip6 saddr fd00::/8 udp dport 53 reject with icmpv6 type admin-prohibited
            ip saddr 192.0.2.0/24 tcp dport 25 reject with tcp reset
            meta l4proto udp reject
            ip daddr != 10.1.0.0/16 drop
        }
    }""")
    rendering = export_ruleset(rs, "firewalld", force=True)
    validate(netns, "firewalld", rendering.text)
    assert rendering.text.count("--add-rich-rule") == 6
    broken = rendering.text.replace('protocol="tcp"', 'protocol="tcp" frob', 1)
    proc = _run("/usr/bin/python3", "-c", _FIREWALLD_CHECK, stdin=broken, env_path=FIREWALLD_PY)
    assert proc.returncode != 0 and "frob" in proc.stderr


# The rules Docker 24 writes for one container publishing 2001/tcp (iptables-save of a
# Debian 12 host, docker0 renamed to the lab's interface, the container at 10.66.0.4).
DOCKER = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o {wan} -j MASQUERADE
-A DOCKER -i {wan} -j RETURN
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 2000 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 2002 -m recent --name ssh --set
-A INPUT -p tcp -m tcp --dport 2002 -m recent --name ssh --rcheck --seconds 60 --hitcount 4 -j DROP
-A INPUT -p tcp -m tcp --dport 2002 -j ACCEPT
-A INPUT -p udp -m addrtype --dst-type LOCAL -m udp --dport 2003 -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o {wan} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o {wan} -j DOCKER
-A FORWARD -i {wan} ! -o {wan} -j ACCEPT
-A FORWARD -i {wan} -o {wan} -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i {wan} -o {wan} -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i {wan} ! -o {wan} -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o {wan} -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""


@needs_root
def test_docker_rules_export_to_iptables_as_written_and_nft_refuses(
    lab: lab_mod.FirewallLab, netns: Netns
) -> None:
    text = DOCKER.format(wan=lab.server_if)
    rs = import_iptables_save(text)
    exported = export_ruleset(rs, "iptables")
    validate(netns, "iptables", exported.text)
    # Matches portkit does not model go back as iptables-save wrote them.
    assert "-m addrtype --dst-type LOCAL -j DOCKER" in exported.text
    assert "-m recent --name ssh --rcheck --seconds 60 --hitcount 4 -j DROP" in exported.text
    assert not exported.omitted
    # nft has no `-m recent`: the drop that reads the list cannot be left out safely.
    with pytest.raises(ExportRefused, match="ip filter INPUT #4"):
        export_ruleset(rs, "nft")
    compared = assert_never_wider(lab, "", rs, PORT_PROBES, original=[("iptables", text)])
    assert compared == 1
    # Without it, `-m addrtype` becomes `fib daddr type local` and the nft export loads too.
    text = "\n".join(ln for ln in text.splitlines() if "recent" not in ln) + "\n"
    rs = import_iptables_save(text)
    nft = export_ruleset(rs, "nft").text
    validate(netns, "nft", nft)
    assert "fib daddr type local jump DOCKER" in nft
    compared = assert_never_wider(lab, "", rs, PORT_PROBES, original=[("iptables", text)])
    assert compared == 2


@needs_root
@pytest.mark.parametrize(
    "match",
    [
        "-m addrtype --dst-type LOCAL",
        "-m addrtype ! --dst-type LOCAL",
        "-m addrtype --src-type LOCAL,BROADCAST",
        "-m mark --mark 0x2a",
        "-m mark ! --mark 0x1/0xff",
        "-m connmark ! --mark 0x10",
        "-m limit --limit 5/min --limit-burst 10",
        "-m limit --limit 10/sec",
        "-m limit",
    ],
)
def test_iptables_matches_translate_as_iptables_translate_does(netns: Netns, match: str) -> None:
    from portkit.firewall._nft import iptables_match_as_nft

    mine = iptables_match_as_nft(match)
    theirs = netns.run("iptables-translate", "-A", "INPUT", *match.split(), "-j", "ACCEPT").stdout
    body = theirs.strip().removeprefix("nft 'add rule ip filter INPUT ").removesuffix(" counter accept'")
    # nft lists `meta mark` as `mark` and `&` as `and`: compare what nft reads back.
    assert mine is not None
    assert nft_listed(netns, mine) == nft_listed(netns, body)


def nft_listed(ns: Netns, expr: str) -> str:
    script = f"flush ruleset\ntable ip t {{\nchain c {{\n{expr} accept\n}}\n}}\n"
    loaded = ns.run("nft", "-f", "-", stdin=script)
    assert loaded.returncode == 0, loaded.stderr
    listed = ns.run("nft", "list", "chain", "ip", "t", "c").stdout
    ns.run("nft", "flush", "ruleset")
    return next(ln.strip() for ln in listed.splitlines() if ln.strip().endswith("accept"))


@needs_root
def test_iptables_tables_round_trip_to_their_own_tables(netns: Netns) -> None:
    source = (
        "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp --dport 53 -j CT --notrack\nCOMMIT\n"
        "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp --dport 7 -j DROP\nCOMMIT\n"
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\n"
        "-A INPUT -p tcp --dport 9 -j NFQUEUE\nCOMMIT\n"
    )
    text = export_ruleset(import_iptables_save(source), "iptables").text
    validate(netns, "iptables", text)
    sections = {part.split("\n", 1)[0]: part for part in text.split("*")[1:]}
    assert "-j CT --notrack" in sections["raw"] and "--dport 7 -j DROP" in sections["mangle"]
    assert "-j NFQUEUE" in sections["filter"]


@needs_root
def test_output_interface_where_iptables_has_none(netns: Netns) -> None:
    rs = _nft("""table ip t {
        chain input { type filter hook input priority 0; policy accept;
            oifname "eth0" tcp dport 22 accept
            tcp dport 23 drop
        }
        chain pre { type filter hook prerouting priority -150; policy accept;
            oifname "eth0" tcp dport 24 drop
        }
    }""")
    with pytest.raises(ExportRefused, match=r"ip t pre #1 .*cannot use -o in prerouting"):
        export_ruleset(rs, "iptables")
    forced = export_ruleset(rs, "iptables", force=True)
    validate(netns, "iptables", forced.text)
    assert [(o.where, o.narrows) for o in forced.omitted] == [("ip t input #1", True), ("ip t pre #1", False)]
    assert "-o" not in forced.text and "--dport 23 -j DROP" in forced.text


@needs_root
def test_chain_names_nft_cannot_read_are_renamed(netns: Netns) -> None:
    source = (
        "*filter\n:INPUT DROP [0:0]\n:log - [0:0]\n:1st - [0:0]\n:counter - [0:0]\n"
        "-A INPUT -p tcp --dport 22 -j log\n-A INPUT -j 1st\n-A 1st -j counter\n"
        "-A log -j ACCEPT\n-A counter -p udp -j ACCEPT\nCOMMIT\n"
    )
    rs = import_iptables_save(source)
    rendering = render_nft(rs)
    validate(netns, "nft", rendering.text)
    assert not rendering.omitted and sum("renamed" in n for n in rendering.notes) == 3
    back = _nft(rendering.text)
    from portkit.firewall import Packet, evaluate

    for flow in ("tcp 192.0.2.1:1000 -> 192.0.2.2:22", "udp 192.0.2.1:1000 -> 192.0.2.2:53"):
        assert (
            evaluate(back, Packet.parse(flow)).outcome == evaluate(rs, Packet.parse(flow)).outcome == "accept"
        )
    assert evaluate(back, Packet.parse("tcp 192.0.2.1:1000 -> 192.0.2.2:23")).outcome == "drop"


@needs_root
def test_front_end_rules_keep_the_table_family(netns: Netns) -> None:
    rs = _nft(f"""table ip t {{
        chain input {{ type filter hook input priority 0; policy accept;
            {"; ".join(_FRONT_END_ACCEPTS)}
            tcp dport 2001 drop
        }}
    }}""")
    ufw = export_ruleset(rs, "ufw").text
    validate(netns, "ufw", ufw)
    # An `ip` table never sees IPv6: ufw's rule says 0.0.0.0/0, which ufw writes for IPv4 only.
    assert "ufw deny proto tcp from 0.0.0.0/0 to any port 2001" in ufw
    firewalld = export_ruleset(rs, "firewalld").text
    validate(netns, "firewalld", firewalld)
    assert 'family="ipv4" port port="2001" protocol="tcp" drop' in firewalld


@needs_root
def test_statements_that_decide_nothing_are_safe_to_leave_out(netns: Netns) -> None:
    source = (
        "*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -j TCPMSS --clamp-mss-to-pmtu\n"
        "-A FORWARD -p tcp -j MARK --set-mark 1\nCOMMIT\n"
    )
    rs = import_iptables_save(source)
    validate(netns, "iptables", export_ruleset(rs, "iptables").text)  # written as iptables-save had it
    # nft cannot write either statement: MSS clamping decides nothing, a mark may decide later rules.
    with pytest.raises(ExportRefused) as exc:
        export_ruleset(rs, "nft")
    assert [(o.where, o.narrows) for o in exc.value.rendering.omitted] == [
        ("ip mangle FORWARD #1", True),
        ("ip mangle FORWARD #2", False),
    ]


@needs_root
def test_iptables_nft_ip_and_ip6_tables_fit_one_ufw_and_firewalld_list(
    lab: lab_mod.FirewallLab, netns: Netns
) -> None:
    accepts = "\n".join(_FRONT_END_ACCEPTS).replace("ipv6-icmp", "icmp").replace("{ icmp, icmp }", "icmp")
    script = f"""table ip filter {{
        chain INPUT {{ type filter hook input priority 0; policy drop;
            {accepts}
            tcp dport 2000 accept
            udp dport 2001 accept
        }}
    }}
    table ip6 filter {{
        chain INPUT {{ type filter hook input priority 0; policy drop;
            {accepts.replace("icmp accept", "icmpv6 accept")}
            tcp dport 2002 accept
        }}
    }}"""
    rs = _nft(script)
    ufw = export_ruleset(rs, "ufw")
    validate(netns, "ufw", ufw.text)
    assert ufw.text.count("ufw default") == 1 and not ufw.unsafe
    assert "ufw allow proto tcp from 0.0.0.0/0 to any port 2000" in ufw.text
    assert "ufw allow proto tcp from ::/0 to any port 2002" in ufw.text
    firewalld = export_ruleset(rs, "firewalld")
    validate(netns, "firewalld", firewalld.text)
    assert 'family="ipv6" port port="2002"' in firewalld.text
    assert assert_never_wider(lab, script, rs, PORT_PROBES) == 3


@needs_root
def test_several_address_matches_fold_into_one_iptables_address(netns: Netns) -> None:
    # Read live, Docker's `! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL` becomes a
    # negated prefix beside the host's addresses; iptables takes one -d per rule.
    rs = _nft("""table ip nat {
        chain OUTPUT { type nat hook output priority -100; policy accept;
            ip daddr != 127.0.0.0/8 ip daddr { 127.0.0.1, 198.51.100.10 } jump DOCKER
            ip daddr != 10.0.0.0/8 ip daddr 10.1.2.3 jump DOCKER
        }
        chain DOCKER { tcp dport 8080 dnat to 192.0.2.2:80; }
    }""")
    text = export_ruleset(rs, "iptables").text
    validate(netns, "iptables", text)
    output = [ln for ln in text.splitlines() if ln.startswith("-A OUTPUT")]
    assert output == ["-A OUTPUT -d 198.51.100.10 -j DOCKER"], text  # the second rule never applies


@needs_root
def test_a_set_with_ranges_is_written_with_flags_interval(netns: Netns) -> None:
    rs = _nft("""table inet t {
        set hosts { type ipv4_addr; flags interval; elements = { 10.0.0.2-10.0.0.4, 10.0.1.0/24 } }
        chain input { type filter hook input priority 0; policy accept; ip saddr @hosts drop; }
    }""")
    # nft lists such a set with its flag; a model built without it must still export loadable text.
    bare_tables = tuple(replace(t, sets=tuple(replace(s, flags=()) for s in t.sets)) for t in rs.tables)
    bare = replace(rs, tables=bare_tables)
    for source in (rs, bare):
        text = export_ruleset(source, "nft").text
        validate(netns, "nft", text)
        assert "flags interval" in text


@needs_root
def test_iptables_nft_tables_read_live_export_back_to_the_same_tables(netns: Netns) -> None:
    # iptables-nft puts the security table's chains at priority 150 (legacy iptables at 50):
    # a live read of a host whose ip6tables-save has a security table (RHEL 7's firewalld)
    # must still export to ip6tables, each base chain into its own table.
    rs = _nft("""table ip6 raw {
        chain PREROUTING { type filter hook prerouting priority raw; policy accept; }
        chain OUTPUT { type filter hook output priority raw; policy accept; udp dport 53 accept; }
    }
    table ip6 mangle {
        chain OUTPUT { type route hook output priority mangle; policy accept; }
    }
    table ip6 filter {
        chain OUTPUT { type filter hook output priority filter; policy accept; tcp dport 25 drop; }
    }
    table ip6 security {
        chain INPUT { type filter hook input priority 150; policy accept; tcp dport 23 drop; }
        chain OUTPUT { type filter hook output priority 150; policy accept; tcp dport 24 drop; }
    }""")
    text = export_ruleset(rs, "ip6tables").text
    validate(netns, "ip6tables", text)
    security = text[text.index("*security") :]
    assert "-A INPUT -p tcp -m tcp --dport 23 -j DROP" in security
    assert "-A OUTPUT -p tcp -m tcp --dport 24 -j DROP" in security


@needs_root
def test_nat_chains_nothing_reaches_stay_in_nat(netns: Netns) -> None:
    # kube-proxy leaves chains behind that no rule jumps to any more (an old XLB chain that
    # still jumps to a DNAT endpoint chain): put in filter, the DNAT made the export fail to load.
    rs = import_iptables_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n"
        ":KUBE-SEP-A - [0:0]\n:KUBE-XLB-A - [0:0]\n:KUBE-MARK-DROP - [0:0]\n"
        "-A PREROUTING -j KUBE-SERVICES\n"
        "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A\n"
        "-A KUBE-SVC-A -j KUBE-SEP-A\n"
        "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.128.0.183:6443\n"
        "-A KUBE-XLB-A -j KUBE-SEP-A\n"
        "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000\n"
        "COMMIT\n"
        # A table with regular chains only keeps them too (nat's own dnat, filter's reject).
        "*filter\n:INPUT ACCEPT [0:0]\n:cali-old-chain - [0:0]\n-A cali-old-chain -j REJECT\nCOMMIT\n"
    )
    text = render_iptables(rs).text
    validate(netns, "iptables", text)
    nat, filt = text.split("*filter")
    assert "DNAT" in nat and "DNAT" not in filt
    assert ":KUBE-XLB-A" in nat and ":KUBE-MARK-DROP" in nat
    assert "-j REJECT" in filt
    loaded = netns.run("iptables-restore", stdin=text)
    assert loaded.returncode == 0, loaded.stderr
    netns.run("nft", "flush", "ruleset")


def _tcp_flags_hold(m: Match, flags: int) -> bool:
    """A `tcp flags` match on a packet with these flags, as the model defines it."""
    mask, value = m.ranges[0]
    hit = (flags & mask) == value if m.exact else (flags & mask) != 0
    return hit != m.negate


@needs_root
@pytest.mark.parametrize(
    "nft",
    [
        "tcp flags & (fin | ack) == fin | ack",
        "tcp flags & (fin | syn | rst | ack) == syn",
        "tcp flags & (syn | ack) != syn",
        "tcp flags syn",
        "tcp flags & (syn | rst) == 0",
        "tcp flags & (fin | rst) != 0",
    ],
)
def test_tcp_flags_export_to_iptables_and_read_back_the_same(nft: str) -> None:
    # FireHOL's `--tcp-flags FIN,ACK FIN,ACK -m conntrack --ctstate INVALID,NEW -j DROP` was read
    # and then refused by the exporter ("cannot be written for iptables"), whole rule set and all.
    rs = _nft(f"table ip t {{\n chain input {{\n type filter hook input priority 0\n {nft} drop\n }}\n}}\n")
    (orig,) = [m for _, _, _, r in rs.rules() for m in r.matches if m.field is Field.TCP_FLAGS]
    text = render_iptables(rs).text
    back = import_iptables_save(text)
    (again,) = [m for _, _, _, r in back.rules() for m in r.matches if m.field is Field.TCP_FLAGS]
    assert [_tcp_flags_hold(orig, f) for f in range(64)] == [_tcp_flags_hold(again, f) for f in range(64)]


@needs_root
def test_tcp_flags_iptables_cannot_name_are_refused() -> None:
    rule = "tcp flags & (syn | cwr) == cwr drop"
    rs = _nft(f"table ip t {{\n chain input {{\n type filter hook input priority 0\n {rule}\n }}\n}}\n")
    with pytest.raises(ExportRefused, match="ECE or CWR"):
        export_ruleset(rs, "iptables")


@needs_root
def test_iptables_chains_of_one_name_in_two_tables_keep_it(netns: Netns) -> None:
    # Docker and kube-proxy name a filter chain and a nat chain alike (DOCKER, KUBE-SERVICES):
    # iptables has one namespace per table, so a round trip keeps both names. Two nft tables'
    # chains that land in the same iptables table are still told apart.
    source = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n"
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"
        "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n"
        "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n"
        "-A FORWARD -o docker0 -j DOCKER\n"
        "-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n"
        "COMMIT\n"
    )
    rendering = render_iptables(import_iptables_save(source))
    validate(netns, "iptables", rendering.text)
    assert not [n for n in rendering.notes if "renamed" in n]
    nat, filt = rendering.text.split("*filter")
    assert ":DOCKER - [0:0]" in nat and ":DOCKER - [0:0]" in filt
    two = _nft(
        "table ip a {\n chain input {\n type filter hook input priority 0\n jump common\n }\n"
        " chain common {\n tcp dport 22 drop\n }\n}\n"
        "table ip b {\n chain forward {\n type filter hook forward priority 0\n jump common\n }\n"
        " chain common {\n tcp dport 23 drop\n }\n}\n"
    )
    assert sum("renamed" in n for n in render_iptables(two).notes) == 1


@needs_root
def test_iptables_mark_targets_export_to_nft_statements(netns: Netns) -> None:
    # kube-proxy's KUBE-MARK-MASQ (`-j MARK --set-xmark 0x4000/0x4000`) made every nft export of
    # a Kubernetes node refuse. Each form is written as the nft statement with the same
    # arithmetic, which nft loads; a masked restore of the connection mark has none (left out).
    rules = [
        ("-j MARK --set-xmark 0x4000/0x4000", "meta mark set meta mark and 0xffffbfff xor 0x4000"),
        ("-j MARK --set-xmark 0x5/0xffffffff", "meta mark set 0x5"),
        ("-j MARK --or-mark 0x10", "meta mark set meta mark or 0x10"),
        ("-j CONNMARK --set-xmark 0x1/0xff", "ct mark set ct mark and 0xffffff00 xor 0x1"),
    ]
    marks = "*mangle\n:PREROUTING ACCEPT [0:0]\n" + "".join(f"-A PREROUTING -p tcp {r}\n" for r, _ in rules)
    source = marks + "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0x1fff --ctmask 0x1fff\nCOMMIT\n"
    rendering = render_nft(import_iptables_save(source))
    validate(netns, "nft", rendering.text)
    for _, nft in rules:
        assert f"meta l4proto tcp {nft}" in rendering.text or f"tcp {nft}" in rendering.text, nft
    # No nft statement restores a masked part of the connection mark into the packet mark.
    assert [o.where for o in rendering.omitted] == ["ip mangle PREROUTING #5"]
    loaded = netns.run("nft", "-f", "-", stdin=rendering.text)
    assert loaded.returncode == 0, loaded.stderr
    netns.run("nft", "flush", "ruleset")
    # The same arithmetic: iptables' (mark & ~M) ^ V, nft's `and A xor B` / `or` / a plain set.
    def iptables_mark(rule: str, x: int) -> int:
        op, arg = rule.split()[-2:]
        value, _, mask = arg.partition("/")
        v, m = int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF
        return {"--set-xmark": (x & ~m & 0xFFFFFFFF) ^ v, "--or-mark": x | v}[op]

    def nft_mark(stmt: str, x: int) -> int:
        words = stmt.split()[3:]
        if len(words) == 1:
            return int(words[0], 0)
        ops = dict(zip(words[2::2], (int(w, 0) for w in words[3::2]), strict=True))
        for op, n in ops.items():
            x = {"and": x & n, "or": x | n, "xor": x ^ n}[op]
        return x

    for rule, nft in rules:
        for x in [0, 0xFFFFFFFF, *(random.getrandbits(32) for _ in range(50))]:
            assert nft_mark(nft, x) == iptables_mark(rule, x), (rule, hex(x))
