"""`portkit audit` against a lab server: each finding made by one planted fact, checked by code.

The server namespace has a LAN side (10.77.0.0/24) and a WAN side carrying the default route
(203.0.113.0/24), an nftables input chain that opens some ports to everyone and some to the LAN
only, and real listening sockets held by one Python process. Audits are restricted to the
lab's namespace (`--netns`), since other namespaces on this machine belong to other runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import needs_root
from fixtures_audit import holding_listeners
from portkit.audit import (
    AuditCode,
    AuditedListener,
    ExposureClass,
    OpenRule,
    PolicyEntry,
    Reach,
    Zone,
    ZoneReach,
    audit,
    parse_exposure_policy,
    render_policy,
    render_sarif,
)
from portkit.errors import UsageError
from portkit.firewall import Severity
from portkit.model import Transport
from portkit.sockets import Exposure, Listener, ProcessInfo, ServiceFacts
from portkit.testing import LabNamespace, connect

PORTKIT = [sys.executable, "-m", "portkit"]

RULES = """
table inet filter {
    chain input {
        type filter hook input priority 0; policy drop;
        iif "lo" accept
        ct state established,related accept
        tcp dport 2222 accept
        iifname "lan0" tcp dport 8080 accept
        tcp dport 6379 accept
        tcp dport 9999 accept
        iifname "lan0" tcp dport 5432 accept
    }
}
"""

LISTENING = ["0.0.0.0:2222", "0.0.0.0:8080", "0.0.0.0:6379", "0.0.0.0:5432", "0.0.0.0:7000", "127.0.0.1:7001"]

POLICY = """
version = 1
[[service]]
port = 2222
protocol = "tcp"
reach = "any"
owner = "sshd"
netns = "*"

[[service]]
port = 8080
protocol = "tcp"
reach = "lan"
netns = "*"

[[service]]
port = 5432
protocol = "tcp"
reach = "loopback"
netns = "*"

[[service]]
port = 4444
protocol = "tcp"
reach = "lan"
netns = "*"
owner = "backup"
"""


class AuditLab:
    def __init__(self, server: LabNamespace, lan: LabNamespace, wan: LabNamespace) -> None:
        self.server, self.lan, self.wan = server, lan, wan

    def run(self, *args: str, policy: Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [*PORTKIT, "audit", "--netns", self.server.name, *args]
        if policy is not None:
            argv += ["--policy", str(policy)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def audit_lab() -> Iterator[AuditLab]:
    with LabNamespace("pkau") as server, LabNamespace("pkal") as lan, LabNamespace("pkaw") as wan:
        connect(server, "lan0", ["10.77.0.1/24"], lan, "eth0", ["10.77.0.2/24"])
        connect(server, "wan0", ["203.0.113.1/24"], wan, "eth0", ["203.0.113.2/24"])
        server.ip("route", "add", "default", "via", "203.0.113.2", "dev", "wan0")
        server.nft(RULES)
        with holding_listeners(server, LISTENING):
            yield AuditLab(server, lan, wan)


def _codes(document: dict[str, Any]) -> set[tuple[str, int]]:
    return {(f["code"], f["port"]) for f in document["findings"]}


@needs_root
def test_every_finding_from_its_planted_fact(audit_lab: AuditLab, tmp_path: Path) -> None:
    policy = tmp_path / "exposure.toml"
    policy.write_text(POLICY)
    proc = audit_lab.run("--json", policy=policy)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    codes = _codes(document)
    expected = {
        ("WRONG_OWNER", 2222),  # declared sshd, held by python
        ("UNDECLARED_EXPOSURE", 6379),  # open to anyone, not declared
        ("RISKY_SERVICE", 6379),  # redis on the network
        ("BROADER_THAN_DECLARED", 5432),  # declared loopback, the LAN reaches it
        ("RISKY_SERVICE", 5432),  # PostgreSQL reachable from the LAN
        ("SHADOWED_BY_FIREWALL", 7000),  # listening on all interfaces, no rule admits it
        ("DECLARED_DOWN", 4444),  # declared, nothing listens
        ("STALE_RULE", 9999),  # the firewall opens it, nothing listens
    }
    assert codes == expected, proc.stdout
    zones = {item["port"]: {z["zone"]: z["reach"] for z in item["zones"]} for item in document["listeners"]}
    assert zones[8080] == {"loopback": "open", "lan": "open", "any": "blocked"}
    assert zones[2222] == {"loopback": "open", "lan": "open", "any": "open"}
    assert zones[7001] == {"loopback": "open", "lan": "blocked", "any": "blocked"}
    classes = {item["port"]: item["exposure_class"] for item in document["listeners"]}
    assert classes[7001] == "loopback" and classes[2222] == "all-interfaces"


@needs_root
def test_healthy_policy_gives_no_finding(audit_lab: AuditLab, tmp_path: Path) -> None:
    """--init declares what is there; auditing against it finds only what no policy can accept."""
    policy = tmp_path / "exposure.toml"
    init = audit_lab.run("--init", policy=policy)
    assert init.returncode == 0, init.stderr
    declared = parse_exposure_policy(policy.read_text(), source=str(policy))
    assert {(s.port, s.reach) for s in declared.services} >= {
        (2222, Zone.ANY),
        (8080, Zone.LAN),
        (7001, Zone.LOOPBACK),
        (7000, Zone.LOOPBACK),
    }
    proc = audit_lab.run("--json", policy=policy)
    codes = _codes(json.loads(proc.stdout))
    # Declared risky services stay reported (low), the shadowed and the stale are facts of the host.
    assert codes == {
        ("RISKY_SERVICE", 6379),
        ("RISKY_SERVICE", 5432),
        ("SHADOWED_BY_FIREWALL", 7000),
        ("STALE_RULE", 9999),
    }
    again = audit_lab.run("--init", policy=policy)
    assert again.returncode == 2 and "exists" in again.stderr


@needs_root
def test_netns_leaves_services_of_other_namespaces_alone(audit_lab: AuditLab, tmp_path: Path) -> None:
    """--netns audits one namespace: a service the policy pins to another one (here this
    namespace, where it really listens) is out of scope, not DECLARED_DOWN, and so is one pinned
    to a --from vantage (its listeners are not audited); a service declared in any namespace
    ("*") is still looked for in the audited one."""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    policy = tmp_path / "exposure.toml"
    policy.write_text(
        POLICY
        + f'[[service]]\nport = {port}\nreach = "loopback"\n'  # this namespace: listening
        + '[[service]]\nport = 4445\nreach = "lan"\nnetns = "not-audited-ns"\n'
        + f'[[service]]\nport = 4446\nreach = "lan"\nnetns = "{audit_lab.lan.name}"\n'
    )
    try:
        proc = audit_lab.run("--json", policy=policy)
        scanned = audit_lab.run("--json", "--from", audit_lab.lan.name, policy=policy)
    finally:
        held.close()
    for run in (proc, scanned):
        assert run.returncode == 0, run.stderr
        down = {f["port"] for f in json.loads(run.stdout)["findings"] if f["code"] == "DECLARED_DOWN"}
        assert down == {4444}, run.stdout


EVIL_NAME = r"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"\x1b[2K\rok\x07\x1b]0;t", 0, 0, 0)  # PR_SET_NAME: any user may
s = socket.socket(); s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True); sys.stdin.read()
"""


@needs_root
def test_a_process_name_cannot_drive_the_readers_terminal(audit_lab: AuditLab) -> None:
    """Any local user names their process as they like: an escape sequence in it (erase the
    line, retitle the terminal) is written out in the table, never sent to the terminal."""
    holder = subprocess.Popen(
        audit_lab.server.command([sys.executable, "-c", EVIL_NAME, "7333"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        proc = audit_lab.run()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.split()[1:2] == ["7333/tcp"])
    assert "\\x1b[2K\\x0dok\\x07" in row, row
    assert not any(ch in proc.stdout for ch in "\x1b\x07\r"), repr(proc.stdout)


@needs_root
def test_scans_from_vantages_join_the_model(audit_lab: AuditLab) -> None:
    proc = audit_lab.run("--json", "--from", audit_lab.wan.name, "--from", audit_lab.lan.name)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    seen = {
        (item["port"], o["zone"], o["address"]): o["state"]
        for item in document["listeners"]
        for o in item["observations"]
    }
    # From the WAN: what the rules open to all is open, the LAN-only port is filtered.
    assert seen[(2222, "any", "203.0.113.1")] == "open"
    assert seen[(8080, "any", "203.0.113.1")] == "filtered"
    # From the LAN: the LAN-only port is open on the LAN address.
    assert seen[(8080, "lan", "10.77.0.1")] == "open"
    assert seen[(7000, "lan", "10.77.0.1")] == "filtered"


@needs_root
def test_fail_on_and_sarif(audit_lab: AuditLab, tmp_path: Path) -> None:
    policy = tmp_path / "exposure.toml"
    policy.write_text(POLICY)
    assert audit_lab.run("--fail-on", "high", policy=policy).returncode == 1
    assert audit_lab.run("--fail-on", "critical", "--json", policy=policy).returncode in (0, 1)
    proc = audit_lab.run("--sarif", policy=policy)
    assert proc.returncode == 0, proc.stderr
    sarif = json.loads(proc.stdout)
    _check_sarif(sarif)
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"WRONG_OWNER", "RISKY_SERVICE", "STALE_RULE"}
    assert all(
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == policy.as_uri() for r in results
    )
    from test_audit_sarif import validate_sarif

    validate_sarif(sarif)


def _check_sarif(sarif: dict[str, Any]) -> None:
    """The SARIF 2.1.0 requirements a reader relies on (sections 3.13-3.27 of the standard)."""
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-2.1.0.json")
    run = sarif["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert run["tool"]["driver"]["name"] == "portkit"
    ids = [rule["id"] for rule in rules]
    for result in run["results"]:
        assert result["ruleId"] == ids[result["ruleIndex"]]
        assert result["level"] in ("none", "note", "warning", "error")
        assert result["message"]["text"]
        float(result["properties"]["security-severity"])


def _listener(
    port: int, exposure: Exposure, addresses: tuple[str, ...], name: str = "redis-server"
) -> Listener:
    process = ProcessInfo(pid=10, name=name, user="redis", uid=100, cmdline=(), unit="redis.service")
    return Listener(Transport.TCP, port, exposure, addresses, (process,), 100, None, ServiceFacts())


def _zones(loopback: Reach, lan: Reach, anyone: Reach) -> tuple[ZoneReach, ...]:
    return (
        ZoneReach(Zone.LOOPBACK, loopback, "test"),
        ZoneReach(Zone.LAN, lan, "test", lan is Reach.BLOCKED),
        ZoneReach(Zone.ANY, anyone, "test", anyone is Reach.BLOCKED),
    )


def test_uncertain_zone_counts_as_reachable() -> None:
    """Fail closed: a forked model makes the zone reachable for exposure findings."""
    item = AuditedListener(
        _listener(6380, Exposure.ALL, ("0.0.0.0",)),
        ExposureClass.ALL,
        _zones(Reach.OPEN, Reach.OPEN, Reach.UNCERTAIN),
    )
    policy = parse_exposure_policy('[[service]]\nport = 6380\nprotocol = "tcp"\nreach = "lan"\n')
    report = audit([item], policy)
    [finding] = report.findings
    assert finding.code is AuditCode.BROADER_THAN_DECLARED and "uncertain" in finding.message
    assert item.reachable is Zone.ANY


@pytest.mark.parametrize("specific_first", [True, False])
def test_a_namespace_of_its_own_outranks_any_namespace(specific_first: bool) -> None:
    """`netns = "web"` says more than `netns = "*"` about a listener in web, whatever the
    order in the file: web's loopback-only declaration makes its LAN reach a finding."""
    from dataclasses import replace

    listener = replace(_listener(5432, Exposure.ALL, ("0.0.0.0",)), netns="web")
    item = AuditedListener(listener, ExposureClass.ALL, _zones(Reach.OPEN, Reach.OPEN, Reach.BLOCKED))
    anywhere = '[[service]]\nport = 5432\nreach = "lan"\nnetns = "*"\n'
    web = '[[service]]\nport = 5432\nreach = "loopback"\nnetns = "web"\n'
    policy = parse_exposure_policy(web + anywhere if specific_first else anywhere + web)
    assert policy.declared(5432, Transport.TCP, "web") == policy.services[0 if specific_first else 1]
    assert policy.declared(5432, Transport.TCP, "db") == policy.services[1 if specific_first else 0]
    assert [f.code for f in audit([item], policy).findings] == [AuditCode.BROADER_THAN_DECLARED]


def test_owner_matches_unit_or_process_and_pid_is_not_an_owner() -> None:
    item = AuditedListener(
        _listener(6380, Exposure.LOOPBACK, ("127.0.0.1",)),
        ExposureClass.LOOPBACK,
        _zones(Reach.OPEN, Reach.BLOCKED, Reach.BLOCKED),
    )
    for owner in ("redis", "redis.service", "redis-server"):
        text = f'[[service]]\nport = 6380\nprotocol = "tcp"\nreach = "loopback"\nowner = "{owner}"\n'
        assert audit([item], parse_exposure_policy(text)).findings == ()
    wrong = '[[service]]\nport = 6380\nprotocol = "tcp"\nreach = "loopback"\nowner = "memcached"\n'
    [finding] = audit([item], parse_exposure_policy(wrong)).findings
    assert finding.code is AuditCode.WRONG_OWNER and finding.severity is Severity.HIGH


def test_stale_rule_only_where_nothing_listens() -> None:
    item = AuditedListener(
        _listener(80, Exposure.ALL, ("0.0.0.0",), "nginx"),
        ExposureClass.ALL,
        _zones(Reach.OPEN, Reach.OPEN, Reach.OPEN),
    )
    rules = [OpenRule(None, 80, Transport.TCP, "inet filter input handle 4: tcp dport 80 accept", Zone.ANY)]
    rules.append(
        OpenRule(None, 81, Transport.TCP, "inet filter input handle 5: tcp dport 81 accept", Zone.ANY)
    )
    report = audit([item], None, rules)
    assert [(f.code, f.port) for f in report.findings] == [(AuditCode.STALE_RULE, 81)]
    assert report.findings[0].evidence == ("inet filter input handle 5: tcp dport 81 accept",)


@pytest.mark.parametrize(
    "text",
    [
        "version = 2",
        "[[service]]\nport = 70000\nreach = 'any'",
        "[[service]]\nport = 22\nreach = 'internet'",
        "[[service]]\nport = 22\nreach = 'any'\ncolour = 'red'",
        "[[service]]\nport = 22\nreach = 'any'\n[[service]]\nport = 22\nreach = 'lan'",
        "[zones]\nlan = ['10.0.0.0/33']",
        "not toml at all [",
        "[[service]]\nport = true\nreach = 'any'",
        "version = 1.0",  # 1.0 == 1 in Python; the policy format's version is a whole number
        "version = true",
        "[[service]]\nport = 22\nreach = 'any'\nowner = '" + "x" * 300 + "'",
        "[[service]]\nport = 22.0\nreach = 'any'",
        "service = [1, 2]",
        "[zones]\nlan = [1]",
        "[[service]]\nport = 22\nreach = ['lan']",  # a list or a table is not hashable
        "[[service]]\nport = 22\nreach = {lan = true}",
        "[[service]]\nport = 22\nreach = 'lan'\nprotocol = ['tcp']",
    ],
)
def test_bad_policy_is_one_line(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_exposure_policy(text, source="exposure.toml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("exposure.toml") and len(message) < 200


def test_policy_round_trips_through_render() -> None:
    from portkit.audit import PolicyEntry

    entries = [
        PolicyEntry(22, Transport.TCP, Zone.ANY, "ssh", "", "ssh"),
        PolicyEntry(53, Transport.UDP, Zone.LAN, 'odd "name"', "web", ""),
    ]
    policy = parse_exposure_policy(render_policy(entries))
    assert [(s.port, s.protocol, s.reach, s.owner, s.netns) for s in policy.services] == [
        (22, Transport.TCP, Zone.ANY, "ssh", ""),
        (53, Transport.UDP, Zone.LAN, 'odd "name"', "web"),
    ]


def test_sarif_of_an_empty_report_is_valid() -> None:
    report = audit([], None)
    _check_sarif(render_sarif(report, version="0"))


def test_bad_cli_input_is_one_line() -> None:
    for args in (
        ["--netns", "no-such-ns-x"],
        ["--fail-on", "severe"],
        ["--json", "--sarif"],
        ["--policy", "/nonexistent/p.toml"],
        ["--init", "--json"],  # --init writes a policy: a report option would be ignored
        ["--init", "--fail-on", "high"],
        ["--netns", "x", "--from", "x"],  # the vantage's listeners are left out: nothing audited
    ):
        proc = subprocess.run(
            [*PORTKIT, "audit", *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


DOCKER_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.31.0.0/16 ! -o dock0 -j MASQUERADE
-A DOCKER -i dock0 -j RETURN
-A DOCKER ! -i dock0 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.31.0.2:443
COMMIT
"""


@needs_root
def test_a_docker_style_publish_is_its_own_exposure_class(tmp_path: Path) -> None:
    """A listener in a 'container' namespace, brought to the host's address by docker's DNAT."""
    with LabNamespace("pkah") as host, LabNamespace("pkac") as container, LabNamespace("pkaw") as wan:
        connect(host, "dock0", ["172.31.0.1/16"], container, "eth0", ["172.31.0.2/16"])
        connect(host, "wan0", ["198.18.5.1/24"], wan, "eth0", ["198.18.5.2/24"])
        container.ip("route", "add", "default", "via", "172.31.0.1")
        host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        loaded = host.run(["iptables-restore", "-n"], input=DOCKER_NAT)
        assert loaded.returncode == 0, loaded.stderr
        with holding_listeners(container, ["0.0.0.0:443", "0.0.0.0:5000"]):
            argv = [*PORTKIT, "audit", "--json", "--netns", host.name, "--netns", container.name]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
            assert proc.returncode == 0, proc.stderr
            listeners = {item["port"]: item for item in json.loads(proc.stdout)["listeners"]}
            assert listeners[443]["exposure_class"] == "container-published"
            assert listeners[443]["published"] == [f"198.18.5.1:8443 (netns {host.name})"]
            assert listeners[5000]["exposure_class"] == "all-interfaces"  # nothing publishes it
            # The real thing: the WAN side reaches the container through the publish.
            reach = wan.run(
                [sys.executable, "-c", "import socket; socket.create_connection(('198.18.5.1', 8443), 3)"]
            )
            assert reach.returncode == 0, reach.stderr
@given(
    owner=st.text(max_size=40).filter(lambda s: len(s) <= 256),
    netns=st.text(st.characters(exclude_characters="\n\r"), max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_init_policy_reads_back_whatever_the_names(owner: str, netns: str) -> None:
    """A process may be named anything but NUL (prctl PR_SET_NAME): --init escapes it, and a
    name with a line break, which the policy cannot hold, is left undeclared."""
    entry = PolicyEntry(22, Transport.TCP, Zone.ANY, owner, netns, "note\tx")
    policy = parse_exposure_policy(render_policy([entry]), source="init")
    (service,) = policy.services
    assert service.netns == netns and service.note == "note\tx"
    assert service.owner == ("" if "\n" in owner or "\r" in owner else owner)
