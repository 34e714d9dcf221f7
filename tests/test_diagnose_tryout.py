"""diagnose as a new user meets it: inputs people type, and scenarios outside the fault matrix."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import needs_root
from fixtures_bad_input import assert_usage_error, run_main
from portkit.diagnose import Code, diagnose_reach
from portkit.diagnose._model import BIND_ORDER, REACH_ORDER, Source
from portkit.model import Transport
from portkit.testing import LabNamespace


@pytest.mark.parametrize("text", ["::1", "::", "2001:db8::5/udp"])
@pytest.mark.parametrize("form", [(), ("--bind",)])
def test_an_ipv6_address_without_a_port_says_so(text: str, form: tuple[str, ...]) -> None:
    line = assert_usage_error(run_main("diagnose", *form, text), "no port")
    assert "[:]" not in line  # never a bracketed fragment of the address as the suggestion


@pytest.mark.parametrize("text", ["::1:80", "fe80::1:80"])
def test_an_ipv6_address_and_port_without_brackets_gets_the_bracketed_form(text: str) -> None:
    host, _, port = text.rpartition(":")
    assert_usage_error(run_main("diagnose", text), f"[{host}]:{port}")


@pytest.mark.parametrize("text", ["[fe80::1]:80", "[fe80::1%lo]:80/udp"])
def test_a_link_local_bind_is_refused_not_called_bindable(text: str) -> None:
    """Without its scope id a link-local bind fails (EINVAL) whatever the port's state."""
    assert_usage_error(run_main("diagnose", "--bind", text), "link-local")


# --- in a lab namespace ----------------------------------------------------------------------------

_LISTEN = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("ready", flush=True); time.sleep(300)
"""


@pytest.fixture
def ns() -> Iterator[LabNamespace]:
    with LabNamespace("pkdt") as space:
        yield space


@contextlib.contextmanager
def _listening(ns: LabNamespace, port: int) -> Iterator[None]:
    proc = subprocess.Popen(ns.command([sys.executable, "-c", _LISTEN, str(port)]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        yield
    finally:
        proc.kill()
        proc.wait(timeout=5)


def _connects(ns: LabNamespace, port: int) -> bool:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    return ns.run([sys.executable, "-c", probe], timeout=10).returncode == 0


@needs_root
def test_a_port_dropped_through_a_set_is_fixed_by_taking_it_out_of_the_set(ns: LabNamespace) -> None:
    """Deleting the rule would let 22 and 9000 through too: the fix removes 8082 alone."""
    ns.nft(
        "table inet pkdt {\n set blocked { type inet_service; elements = { 22, 8082, 9000 } }\n"
        " chain input { type filter hook input priority 0; policy accept;\n"
        "  tcp dport @blocked drop\n }\n}\n"
    )
    with _listening(ns, 8082), _listening(ns, 9000):
        diagnosis = diagnose_reach("127.0.0.1", 8082, from_netns=ns.name, timeout=0.5)
        assert diagnosis.code is Code.FW_INPUT_DROP
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.command is not None
        assert "delete element inet pkdt blocked" in fix.command, fix.command
        done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert diagnose_reach("127.0.0.1", 8082, from_netns=ns.name, timeout=0.5).ok
        assert _connects(ns, 8082)
        assert not _connects(ns, 9000)  # the set's other ports are still dropped


@needs_root
def test_a_set_another_rule_also_uses_is_left_as_it_is(ns: LabNamespace) -> None:
    """Taking 8086 out of a set the output chain also drops by would open 8086 outward too:
    the fix lets 8086 in before the input rule and leaves the set whole."""
    ns.nft(
        "table inet pkdt {\n set blocked { type inet_service; elements = { 22, 8086, 9000 } }\n"
        " chain input { type filter hook input priority 0; policy accept;\n"
        "  iif lo tcp dport @blocked drop\n }\n"
        " chain output { type filter hook output priority 0; policy accept;\n"
        "  oif != lo tcp dport @blocked drop\n }\n}\n"
    )
    with _listening(ns, 8086), _listening(ns, 9000):
        diagnosis = diagnose_reach("127.0.0.1", 8086, from_netns=ns.name, timeout=0.5)
        assert diagnosis.code is Code.FW_INPUT_DROP
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.command is not None
        assert "delete element" not in fix.command and "dport 8086 accept" in fix.command, fix.command
        done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert diagnose_reach("127.0.0.1", 8086, from_netns=ns.name, timeout=0.5).ok
        assert _connects(ns, 8086)
        assert not _connects(ns, 9000)  # the set's other ports are still dropped
        listing = ns.run(["nft", "list", "set", "inet", "pkdt", "blocked"], timeout=10).stdout
        assert "8086" in str(listing)  # and the output rule still has 8086


@needs_root
def test_a_verdict_map_entry_gets_no_command_that_deletes_the_whole_map(ns: LabNamespace) -> None:
    """`nft delete rule` on a vmap rule would also drop 9001's accept (policy drop here)."""
    ns.nft(
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy drop;\n"
        "  ct state established,related accept\n"
        "  tcp dport vmap { 8083 : drop, 9001 : accept }\n }\n}\n"
    )
    with _listening(ns, 8083), _listening(ns, 9001):
        assert _connects(ns, 9001)
        diagnosis = diagnose_reach("127.0.0.1", 8083, from_netns=ns.name, timeout=0.5)
        assert diagnosis.code is Code.FW_INPUT_DROP
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.command is None, fix
        assert "verdict map" in fix.text


@needs_root
@pytest.mark.skipif(shutil.which("iptables-legacy") is None, reason="needs iptables-legacy")
@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("DROP", Code.FW_INPUT_DROP),
        ("REJECT", Code.FW_INPUT_REJECT),
        ("REJECT --reject-with tcp-reset", Code.FW_INPUT_REJECT),
    ],
)
def test_an_iptables_legacy_rule_is_a_firewall_cause_not_upstream_or_no_listener(
    ns: LabNamespace, target: str, code: Code
) -> None:
    """Legacy xtables rules, which nft does not list, are read from iptables-legacy-save: the
    rule is named, and its fix goes through iptables-legacy (applied here, it opens the port)."""
    rule = ["-A", "INPUT", "-p", "tcp", "--dport", "8084", "-j", *target.split()]
    assert ns.run(["iptables-legacy", *rule], timeout=10).returncode == 0
    with _listening(ns, 8084):
        assert not _connects(ns, 8084)
        diagnosis = diagnose_reach("127.0.0.1", 8084, from_netns=ns.name, timeout=0.5, explain=True)
        assert diagnosis.code is code, diagnosis
        finding = diagnosis.findings[0]
        assert "rule #1 of ip filter-legacy INPUT" in finding.summary
        assert finding.fix is not None
        assert finding.fix.command == f"ip netns exec {ns.name} iptables-legacy -t filter -D INPUT 1"
        done = subprocess.run(finding.fix.command, shell=True, capture_output=True, timeout=10, check=False)
        assert done.returncode == 0, done.stderr
        assert _connects(ns, 8084)
        assert diagnose_reach("127.0.0.1", 8084, from_netns=ns.name, timeout=0.5).code is Code.OK


@needs_root
def test_a_silent_service_is_not_named_after_the_port_table(ns: LabNamespace) -> None:
    """A listener that says nothing on 2222 is unidentified, not WRONG_SERVICE "EtherNetIP-1"
    (the registry's name for 2222/tcp)."""
    with _listening(ns, 2222):
        diagnosis = diagnose_reach("127.0.0.1", 2222, from_netns=ns.name, timeout=0.5, expect="http")
    assert diagnosis.code is Code.OK, diagnosis
    service = next(c for c in diagnosis.checks if c.name == "service")
    assert service.passed is None
    assert diagnosis.certainty.value == "partial"  # the service the user expects was not confirmed


@needs_root
def test_from_a_proc_path_of_a_named_namespace_reads_it_under_its_name(ns: LabNamespace) -> None:
    ns.nft(
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  tcp dport 8085 drop\n }\n}\n"
    )
    holder = subprocess.Popen(ns.command(["sleep", "60"]))
    try:
        with _listening(ns, 8085):
            where = f"/proc/{holder.pid}/ns/net"
            diagnosis = diagnose_reach("127.0.0.1", 8085, from_netns=where, timeout=0.5)
    finally:
        holder.kill()
        holder.wait(timeout=5)
    assert diagnosis.code is Code.FW_INPUT_DROP, diagnosis
    assert diagnosis.certainty.value == "full"
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command is not None
    assert fix.command.startswith(f"ip netns exec {ns.name} nft delete rule inet pkdt input handle ")


_UNNAMED = """
import socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["nft", "-f", "-"], input=sys.argv[1], text=True, check=True)
s = socket.socket(); s.bind(("127.0.0.1", 8086)); s.listen()
print("ready", flush=True); time.sleep(300)
"""


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_namespace_without_a_name_has_its_firewall_read_and_fixed_through_nsenter() -> None:
    """A container's namespace has no /run/netns name: its rule is still found, and the fix runs."""
    rules = (
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  tcp dport 8086 drop\n }\n}\n"
    )
    argv = ["unshare", "--net", sys.executable, "-c", _UNNAMED, rules]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        where = f"/proc/{proc.pid}/ns/net"
        diagnosis = diagnose_reach("127.0.0.1", 8086, from_netns=where, timeout=0.5)
        assert diagnosis.code is Code.FW_INPUT_DROP, diagnosis
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.command is not None
        assert fix.command.startswith(f"nsenter --net={where} nft delete rule"), fix.command
        done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert diagnose_reach("127.0.0.1", 8086, from_netns=where, timeout=0.5).ok
        probe = "import socket; socket.create_connection(('127.0.0.1', 8086), timeout=1).close()"
        connect = subprocess.run(["nsenter", f"--net={where}", sys.executable, "-c", probe], timeout=10)
        assert connect.returncode == 0
    finally:
        proc.kill()
        proc.wait(timeout=5)


# --- docs/json.md against real output --------------------------------------------------------------


def _documented_diagnose() -> tuple[set[str], str]:
    text = (Path(__file__).parent.parent / "docs" / "json.md").read_text()
    section = text.split("<!-- json:diagnose -->")[1].split("<!-- /json:diagnose -->")[0]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    return _key_paths(example) | set(re.findall(r"^\| `([^`]+)` \|", section, re.M)), section


def _key_paths(value: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            paths.add(prefix + key)
            paths |= _key_paths(inner, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            paths |= _key_paths(item, prefix[:-1] + "[]." if prefix else "[].")
    return paths


def _real_diagnoses() -> list[dict[str, object]]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with socket.socket() as bound:  # bound, not listening: nothing accepts on it
            bound.bind(("127.0.0.1", 0))
            refused = bound.getsockname()[1]
            outputs = [
                run_main("diagnose", f"127.0.0.1:{refused}", "--json", "--explain"),
                run_main("diagnose", "--bind", f"127.0.0.1:{port}", "--json", "--explain"),
            ]
    for result in outputs:
        assert result.status == 1, result
    return [json.loads(result.stdout) for result in outputs]


def test_docs_json_names_every_key_diagnose_writes_and_no_other() -> None:
    documented, section = _documented_diagnose()
    real: set[str] = set()
    for document in _real_diagnoses():
        real |= _key_paths(document)
    # The table names a list's items as `findings[].code`; the example's nested keys
    # (`findings[].evidence[].source`, `checks[].name`) are what the table's rows describe in words.
    assert real - documented == set(), f"written but not in docs/json.md: {sorted(real - documented)}"
    top_and_rows = {p for p in documented if "." not in p or p.startswith("findings[].")}
    missing = {p.replace("[].", ".") for p in top_and_rows} - {p.replace("[].", ".") for p in real}
    assert missing == set(), f"documented but never written: {sorted(missing)}"
    sources = set(re.findall(r"`([a-z-]+)`", section.split("`source` (how:")[1].split(")")[0]))
    assert sources == {s.value for s in Source}


def test_docs_list_every_code_in_the_order_decide_uses() -> None:
    _, section = _documented_diagnose()
    reach = section.split("Reach codes")[1].split("Bind codes")[0]
    bind = section.split("Bind codes")[1].split("Evidence from the kernel")[0]
    assert [c for c in re.findall(r"`([A-Z_]+)`", reach)] == [c.value for c in REACH_ORDER]
    assert [c for c in re.findall(r"`([A-Z_]+)`", bind)] == [c.value for c in BIND_ORDER]


_BIND_AS_NOBODY = """
import os, socket
os.setgid(65534); os.setuid(65534)
socket.socket().bind(("0.0.0.0", 80))
"""


@needs_root
def test_a_bind_diagnosed_under_ip_netns_exec_is_fixed_in_that_namespace(ns: LabNamespace) -> None:
    """`ip netns exec NAME portkit diagnose --bind`: the sysctl fix must name NAME, or, pasted
    into the host's shell, it would change the host and leave the namespace as it was."""
    argv = [sys.executable, "-m", "portkit", "diagnose", "--bind", "80", "--user", "nobody", "--json"]
    proc = ns.run(argv, timeout=60)
    assert proc.returncode == 1, proc.stderr
    finding = json.loads(proc.stdout)["findings"][0]
    assert finding["code"] == "PRIVILEGED_PORT"
    command = finding["fix"]["command"]
    assert command == f"ip netns exec {ns.name} sysctl -w net.ipv4.ip_unprivileged_port_start=80"
    assert ns.run([sys.executable, "-c", _BIND_AS_NOBODY], timeout=10).returncode != 0
    assert subprocess.run(command, shell=True, capture_output=True, timeout=30).returncode == 0
    assert json.loads(ns.run(argv, timeout=60).stdout)["ok"]
    assert ns.run([sys.executable, "-c", _BIND_AS_NOBODY], timeout=10).returncode == 0


_ECHO = """
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 5300))
print("ready", flush=True)
while True:
    data, peer = u.recvfrom(2048); u.sendto(data, peer)
"""


@needs_root
def test_udp_answers_ok_and_silence_is_no_listener_with_no_tcp_check_left_undone(ns: LabNamespace) -> None:
    proc = subprocess.Popen(ns.command([sys.executable, "-c", _ECHO]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        answered = diagnose_reach("127.0.0.1", 5300, Transport.UDP, from_netns=ns.name, timeout=0.5)
        closed = diagnose_reach("127.0.0.1", 5301, Transport.UDP, from_netns=ns.name, timeout=0.5)
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert answered.code is Code.OK and closed.code is Code.NO_LISTENER
    for diagnosis in (answered, closed):
        assert all(c.name != "accept queue" for c in diagnosis.checks), diagnosis.checks  # passed: not listed


@pytest.mark.parametrize("target", ["1.2.3:80", "010.0.0.1:80", "2130706433:80", "0x7f.1:80", "10.1:22"])
def test_addresses_in_inet_aton_shorthand_are_refused(target: str) -> None:
    """The resolver would read these as other addresses than the user wrote (1.2.3 is
    1.2.0.3): refused before anything is sent, never probed."""
    from portkit.diagnose import parse_reach_target
    from portkit.errors import UsageError

    with pytest.raises(UsageError, match="expected a host name or an IP address"):
        parse_reach_target(target)


_V6ONLY = """
import socket, sys, time
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(); print("ready", flush=True); time.sleep(300)
"""


@needs_root
def test_an_ipv4_mapped_address_is_diagnosed_as_the_ipv4_packet_it_becomes(ns: LabNamespace) -> None:
    """A connect to ::ffff:127.0.0.1 leaves as IPv4 to 127.0.0.1: routed, filtered and accepted
    as that, never "no route to ::ffff:7f00:1" (IPv6 has no route for it) nor "not on this host"."""
    with _listening(ns, 8087):
        reached = diagnose_reach("::ffff:127.0.0.1", 8087, from_netns=ns.name, timeout=0.5)
    assert reached.code is Code.OK and reached.certainty.value == "full", reached
    proc = subprocess.Popen(ns.command([sys.executable, "-c", _V6ONLY, "8088"]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        v6only = diagnose_reach("::ffff:127.0.0.1", 8088, from_netns=ns.name, timeout=0.5)
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert v6only.code is Code.FAMILY_MISMATCH, v6only
    assert "127.0.0.1 is IPv4" in v6only.findings[0].summary


@needs_root
@pytest.mark.parametrize(
    "rules",
    [
        # a drop chain that several ports goto: deleting its `drop` would open them all
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  tcp dport 8089 goto drops\n  tcp dport 9002 goto drops\n }\n"
        " chain drops {\n  counter drop\n }\n}\n",
        # a rule that drops every port from a source
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  ct state new ip saddr 127.0.0.0/8 tcp dport != 22 drop\n }\n}\n",
        # a port range
        "table ip pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  tcp dport 8000-9999 counter drop\n }\n}\n",
        # `th dport` drops UDP 8089 as well: deleting it would open that too
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  th dport 8089 drop\n }\n}\n",
        # the same in iptables-legacy (read beside nft; its fix goes through iptables-legacy)
        "iptables-legacy -A INPUT -s 127.0.0.0/8 -p tcp -m conntrack --ctstate NEW -j DROP",
    ],
    ids=["goto-drop-chain", "source-drop", "port-range", "any-transport", "iptables-legacy-source-drop"],
)
def test_a_drop_rule_wider_than_the_port_is_not_deleted_the_port_is_let_through_before_it(
    ns: LabNamespace, rules: str
) -> None:
    """The fix must open the port diagnosed, and not every other port the rule drops."""
    if rules.startswith("iptables-legacy "):
        if shutil.which("iptables-legacy") is None:
            pytest.skip("needs iptables-legacy")
        assert ns.run(rules.split(), timeout=10).returncode == 0
    else:
        ns.nft(rules)
    with _listening(ns, 8089), _listening(ns, 9002):
        diagnosis = diagnose_reach("127.0.0.1", 8089, from_netns=ns.name, timeout=0.5)
        assert diagnosis.code is Code.FW_INPUT_DROP, diagnosis
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.command is not None, fix
        assert "delete" not in fix.command, fix.command
        done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert _connects(ns, 8089)
        assert diagnose_reach("127.0.0.1", 8089, from_netns=ns.name, timeout=0.5).ok
        if "th dport" in rules:  # UDP 8089 is still dropped
            assert "th dport 8089 drop" in ns.run(["nft", "list", "ruleset"], timeout=10).stdout
        else:
            assert not _connects(ns, 9002)  # still dropped


def _as_nobody(ns: LabNamespace, *args: str) -> dict[str, object]:
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    argv += [sys.executable, "-m", "portkit", "diagnose", *args, "--json", "--timeout", "0.5"]
    proc = ns.run(argv, timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    document: dict[str, object] = json.loads(proc.stdout)
    return document


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_root_an_unread_firewall_is_named_not_no_listener_or_upstream(ns: LabNamespace) -> None:
    """Run by an unprivileged user, the socket table still shows the listener: a refusal is a
    reject somewhere in the firewall it could not read, not "start the service", and silence on
    this host's own address is not filtering "past that hop"."""
    ns.nft(
        "table inet pkdt {\n chain input { type filter hook input priority 0; policy accept;\n"
        "  tcp dport 8090 reject with tcp reset\n  tcp dport 8091 drop\n }\n}\n"
    )
    with _listening(ns, 8090), _listening(ns, 8091):
        rejected = _as_nobody(ns, "127.0.0.1:8090")
        dropped = _as_nobody(ns, "127.0.0.1:8091")
    assert (rejected["code"], dropped["code"]) == ("FW_INPUT_REJECT", "FW_INPUT_DROP")
    for document in (rejected, dropped):
        assert document["certainty"] == "partial"
        finding = document["findings"][0]  # type: ignore[index]
        assert "needs root" in finding["summary"], finding
        assert finding["fix"]["command"] is None  # reading the rule is root's: nothing to paste yet


_LISTEN_ANY = _LISTEN.replace('"127.0.0.1"', '"0.0.0.0"')


@needs_root
def test_a_prohibit_route_for_a_prefix_in_another_table_is_removed_by_the_fix(ns: LabNamespace) -> None:
    """`ip route get` names no prefix or table for a refusing route: the fix must delete the
    route that really matched (10.98.0.0/16 in table 100), not `ip route del prohibit ADDRESS`,
    which the kernel answers with "No such process"."""
    for argv in (
        ["addr", "add", "10.98.5.5/32", "dev", "lo"],
        ["route", "add", "prohibit", "10.98.0.0/16", "table", "100"],
        # consulted before the local table, so the prohibit route decides for 10.98.5.5
        ["rule", "add", "pref", "50", "to", "10.98.0.0/16", "table", "100"],
        ["rule", "add", "pref", "200", "table", "local"],
        ["rule", "del", "pref", "0"],
    ):
        assert ns.run(["ip", *argv], timeout=10).returncode == 0, argv
    proc = subprocess.Popen(ns.command([sys.executable, "-c", _LISTEN_ANY, "8092"]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        diagnosis = diagnose_reach("10.98.5.5", 8092, from_netns=ns.name, timeout=0.5)
        assert diagnosis.code is Code.ROUTE_BLACKHOLE, diagnosis
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.command is not None, fix
        assert fix.command.endswith("ip route del prohibit 10.98.0.0/16 table 100"), fix.command
        done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert diagnose_reach("10.98.5.5", 8092, from_netns=ns.name, timeout=0.5).ok
    finally:
        proc.kill()
        proc.wait(timeout=5)


@needs_root
@pytest.mark.parametrize("kind", ["blackhole", "prohibit", "unreachable"])
def test_a_refusing_route_on_the_router_is_named_with_its_fix(kind: str) -> None:
    """A router on this host with a blackhole route for the server: the route it is, on that
    router (not silence "beyond this host's namespaces", nor reverse-path filtering), and the
    command that deletes it there."""
    from portkit.testing import reach_lab

    with reach_lab() as lab:
        lab.serve(lab.server, "0.0.0.0", 8094)
        lab.router.ip("route", "add", kind, f"{lab.net(2, 0)}/28")
        diagnosis = diagnose_reach(lab.server_address, 8094, from_netns=lab.client.name, timeout=0.5)
        assert diagnosis.code is Code.ROUTE_BLACKHOLE, diagnosis
        assert lab.router.name in diagnosis.findings[0].summary
        fix = diagnosis.findings[0].fix
        command = f"ip netns exec {lab.router.name} ip route del {kind} {lab.net(2, 0)}/28"
        assert fix is not None and fix.command == command, fix
        done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert diagnose_reach(lab.server_address, 8094, from_netns=lab.client.name, timeout=0.5).ok
        assert lab.reachable(lab.server_address, 8094)


@needs_root
def test_a_forward_that_does_not_take_a_lan_client_is_named_not_just_no_listener() -> None:
    """LAN host -> the router's public address: the forward (`--in wan0`) does not apply to a
    packet arriving from the LAN, so nothing listens there. The answer must name the forward
    and hairpin NAT, not only "start the service on port 8443" on a router that never runs it."""
    from portkit.testing import HomeLab, HomeSpec, LabHost

    with HomeLab(HomeSpec((LabHost("server"), LabHost("pc")))) as home:
        home.echo_server("server", 443)
        router = home.netns("router")
        target = f"{home.address('server')}:443"
        added = run_main("nat", "add", "8443", target, "--in", "wan0", "--netns", router)
        home.nft("router", added.stdout)
        assert diagnose_reach(home.wan_address, 8443, from_netns=home.netns("outside"), timeout=0.5).ok
        diagnosis = diagnose_reach(home.wan_address, 8443, from_netns=home.netns("pc"), timeout=0.5)
        assert diagnosis.code is Code.NO_LISTENER, diagnosis
        finding = diagnosis.findings[0]
        assert "port forward" in finding.summary and "br-lan" in finding.summary, finding.summary
        assert any(target in ev.showed and "port forwards" in ev.looked_at for ev in finding.evidence), [
            str(ev) for ev in finding.evidence
        ]
        assert finding.fix is not None and "--hairpin" in finding.fix.text
        assert run_main("nat", "rm", "tcp-8443", "--netns", router, "--apply").status == 0
        hairpin = run_main("nat", "add", "8443", target, "--in", "wan0", "--hairpin", "--netns", router)
        home.nft("router", hairpin.stdout)
        assert diagnose_reach(home.wan_address, 8443, from_netns=home.netns("pc"), timeout=0.5).ok


@needs_root
@pytest.mark.parametrize("flags", ["flags timeout; ", ""])
def test_a_nat_rewrite_the_model_cannot_follow_is_partial_and_claims_no_missed_forward(flags: str) -> None:
    """A DNAT through a map, then a REDIRECT: the kernel redirects 7073 (the map has no such
    key) to eth0's address, where the service (on 127.0.0.1) is not. A map whose elements
    change at run time (timeout) the model does not compute: the answer must then not be sure
    of itself, nor claim the redirect "does not apply to this packet". A map of fixed elements
    it follows, and then the kernel's answer is its full answer."""
    from portkit.testing import reach_lab

    with reach_lab() as lab:
        lab.server.nft(
            "table ip pkdt {\n"
            f" map pfw {{ type inet_service : ipv4_addr . inet_service; {flags}"
            "elements = { 7071 : 10.0.0.9 . 81 } }\n"
            " chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
            "  dnat ip to tcp dport map @pfw\n  tcp dport 7073 redirect to :9000\n }\n}\n"
        )
        lab.serve(lab.server, "127.0.0.1", 9000)
        assert not lab.reachable(lab.server_address, 7073, timeout=1.0)  # redirected to eth0's address
        diagnosis = diagnose_reach(lab.server_address, 7073, from_netns=lab.client.name, timeout=0.5)
    assert not diagnosis.ok
    if flags:
        assert diagnosis.certainty.value != "full", diagnosis
    else:
        assert diagnosis.code == "BOUND_LOOPBACK_ONLY" and diagnosis.certainty.value == "full", diagnosis
    assert all("does not apply" not in f.summary for f in diagnosis.findings), diagnosis.findings


@pytest.mark.parametrize(
    ("text", "host"), [("bücher.example:443", "xn--bcher-kva.example"), ("☃.net:80/udp", "xn--n3h.net")]
)
def test_an_internationalised_name_is_looked_up_in_its_ascii_form(text: str, host: str) -> None:
    """The resolver is asked for the IDNA form (what getaddrinfo sends); refusing the name as
    "expected a host name" was wrong."""
    from portkit.diagnose import parse_reach_target

    assert parse_reach_target(text).host == host


@pytest.mark.parametrize("text", ["a b.example:80", "ü" * 70 + ".example:80", "\u200b:80"])
def test_unicode_that_is_no_name_is_still_refused(text: str) -> None:
    assert_usage_error(run_main("diagnose", text), "invalid host")


_UDP_SHARED = """
import socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("127.0.0.1", 5302)); print("ready", flush=True); time.sleep(300)
"""

_UDP_JOIN = """
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("127.0.0.1", 5302))
"""


@needs_root
def test_a_udp_port_shared_with_so_reuseaddr_says_so_not_only_kill_the_holder(ns: LabNamespace) -> None:
    """The trial bind with SO_REUSEADDR succeeded: the fix must say that setting it shares the
    port, rather than offer only to stop the holder."""
    from portkit.diagnose import diagnose_bind

    proc = subprocess.Popen(ns.command([sys.executable, "-c", _UDP_SHARED]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        diagnosis = diagnose_bind("127.0.0.1", 5302, Transport.UDP, netns=ns.name)
        assert ns.run([sys.executable, "-c", _UDP_JOIN], timeout=10).returncode == 0  # the kernel agrees
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert diagnosis.code is Code.PORT_IN_USE, diagnosis
    fix = diagnosis.findings[0].fix
    assert fix is not None and "SO_REUSEADDR" in fix.text, fix


@pytest.mark.parametrize("text", ["[fe80::1]:80", "[fe80::1%eth0]:80", "[fe80::1%nosuch]:80/udp"])
def test_a_link_local_target_is_refused_not_probed_unscoped(text: str) -> None:
    """The diagnosis carries no interface scope: the probe's connect() failed with EINVAL (read
    as NO_ROUTE), and an unknown scope raised in the probe thread and ended as "OK"."""
    from portkit.errors import UsageError

    assert_usage_error(run_main("diagnose", text), "link-local")
    host = text[1:].partition("]")[0]
    with pytest.raises(UsageError, match="link-local"):
        diagnose_reach(host, 80)  # the library refuses it too
