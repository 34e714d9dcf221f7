"""`portkit diagnose HOST:PORT`: the fault matrix (one injected fault per code, healthy controls,
the counterfactual of every fix command), the pure decision function, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit.diagnose import Code, Evidence, diagnose_reach, parse_bind_target, parse_reach_target
from portkit.diagnose._facts import FirewallView, HopFacts, ListenerFacts, ReachFacts, Resolution
from portkit.diagnose._netview import Route
from portkit.diagnose._probe import ProbeResult
from portkit.diagnose._reach import decide
from portkit.errors import UsageError
from portkit.model import Transport

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the fault lab needs root (namespaces, nftables)")


# --- the fault matrix ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    if os.geteuid() != 0:
        pytest.skip("the fault lab needs root (namespaces, nftables)")
    from portkit.testing import reach_lab

    with reach_lab() as running:
        yield running


def _cases() -> list[object]:
    from portkit.testing import FAULT_CASES

    return [pytest.param(case, id=case.name) for case in FAULT_CASES]


@root_only
@pytest.mark.parametrize("case", _cases())
def test_every_fault_gives_its_code_and_every_fix_fixes(lab, case) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from portkit.testing import FAULT_CASES

    missing = [tool for tool in case.needs if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install.sh --test)")
    port = 21000 + 10 * [c.name for c in FAULT_CASES].index(case.name)
    target = None
    try:
        target = case.inject(lab, port)
        transport = Transport.UDP if target.udp else Transport.TCP
        origin = getattr(lab, target.origin).name
        diagnosis = diagnose_reach(
            target.host, target.port, transport, from_netns=origin, timeout=case.timeout,
            expect=target.expect, explain=True,
        )  # fmt: skip
        assert diagnosis.code == case.code, diagnosis
        # One fault, one finding: no false alarm rides along with the right one.
        assert {f.code for f in diagnosis.findings} <= {case.code}, diagnosis
        # The kernel confirms what the model says: its drop reason, and (--explain) nft's trace.
        evidence = diagnosis.findings[0].evidence if diagnosis.findings else ()
        if case.code in KERNEL_REASONS and not target.udp:
            reason = "IP_INADDRERRORS" if case.name == "forwarding-off" else KERNEL_REASONS[case.code]

            def kernel_said(evidence: tuple[Evidence, ...]) -> bool:
                return any(e.source == "drop-reason" and e.showed.startswith(reason) for e in evidence)

            if not kernel_said(evidence):
                # A drop is tied to the probe by the task it ran in; on a loaded machine the
                # softirq may run in an unrelated task's context. Once more, then it must show.
                again = diagnose_reach(
                    target.host, target.port, transport, from_netns=origin, timeout=case.timeout,
                    expect=target.expect, explain=True,
                )  # fmt: skip
                assert again.code == case.code, again
                evidence = again.findings[0].evidence
            assert kernel_said(evidence), diagnosis
        if case.code.startswith("FW_") and not case.name.startswith("forwarding"):
            assert any(e.source == "nft-trace" and "agrees with the model" in e.showed for e in evidence), (
                diagnosis
            )
        if case.code == "OK":
            assert diagnosis.ok and diagnosis.certainty == "full", diagnosis
        fixes = [f.fix.command for f in diagnosis.findings if f.fix is not None and f.fix.command]
        for command in fixes:
            done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
            assert done.returncode == 0, (command, done.stderr)
        if fixes:
            again = diagnose_reach(
                target.host,
                target.port,
                transport,
                from_netns=origin,
                timeout=case.timeout,
            )
            assert again.ok, (fixes, again)
            if not target.udp:
                assert lab.reachable(target.host, target.port, origin=target.origin), fixes
    finally:
        lab.stop_services()
        case.undo(lab, port)


# The drop reason the kernel gives the probe's packet for a code (skb:kfree_skb).
KERNEL_REASONS = {
    "FW_INPUT_DROP": "NETFILTER_DROP",
    "FW_FORWARD_DROP": "NETFILTER_DROP",
    "FW_OUTPUT_DROP": "NETFILTER_DROP",
    "FW_REPLY_DROP": "NETFILTER_DROP",
    "RP_FILTER": "IP_RPFILTER",
    "NO_LISTENER": "NO_SOCKET",
}


@root_only
def test_the_matrix_covers_every_reach_code() -> None:
    from portkit.diagnose._model import REACH_ORDER
    from portkit.testing import FAULT_CASES

    assert {c.code for c in FAULT_CASES} == {str(c) for c in REACH_ORDER} | {"OK"}


# --- the pure decision function ----------------------------------------------------------------


def _facts(**overrides: object) -> ReachFacts:
    client = HopFacts(
        "c", "ip netns exec c ", "client", None, Route("unicast", "eth0", "10.0.0.1", "10.0.0.2"), "10.0.1.2"
    )
    server = HopFacts("s", "ip netns exec s ", "server", "eth0", Route("local", "lo"), "10.0.1.2")
    base = ReachFacts(
        "10.0.1.2", 80, Transport.TCP, Resolution("10.0.1.2", ("10.0.1.2",), "address literal"),
        address="10.0.1.2", source="10.0.0.2", path=(client, server), server="s", inspectable=True,
        listeners=(ListenerFacts("s", "0.0.0.0", 80, 4, 0, 128, "nginx/1"),),
        probe=ProbeResult("open", "", 0.001, "10.0.0.2:40000"),
    )  # fmt: skip
    from dataclasses import replace

    return replace(base, **overrides)  # type: ignore[arg-type]


def test_healthy_facts_are_ok() -> None:
    diagnosis = decide(_facts())
    assert diagnosis.ok and diagnosis.code is Code.OK and diagnosis.certainty == "full"


def test_a_successful_connection_outweighs_the_model() -> None:
    facts = _facts(listeners=())  # the model sees no listener, the probe connected: trust the probe
    assert decide(facts).ok


def test_a_failed_probe_is_never_ok() -> None:
    refused = ProbeResult("refused", "ECONNREFUSED", 0.001, None)
    assert decide(_facts(probe=refused)).code is Code.NO_LISTENER  # nothing in the model explains it
    silent = ProbeResult("timeout", "ETIMEDOUT", 1.0, None)
    diagnosis = decide(_facts(probe=silent))
    assert diagnosis.code is Code.FILTERED_UPSTREAM and diagnosis.certainty == "partial"


def test_a_probe_the_kernel_refused_is_never_ok() -> None:
    # EPERM/EACCES: this host would not send it; other errnos: connect() failed here.
    denied = decide(_facts(probe=ProbeResult("denied", "EPERM", 0.001, None)))
    assert denied.code is Code.FW_OUTPUT_DROP and denied.certainty == "partial", denied
    assert "cgroup BPF" in denied.findings[0].summary
    exhausted = decide(_facts(probe=ProbeResult("error", "EADDRNOTAVAIL", 0.001, None)))
    assert exhausted.code is Code.CLIENT_ERROR and "no free source port" in exhausted.findings[0].summary
    other = decide(_facts(probe=ProbeResult("error", "ENOBUFS", 0.001, None)))
    assert other.code is Code.CLIENT_ERROR and "ENOBUFS" in other.findings[0].summary
    assert not any(d.ok for d in (denied, exhausted, other))


def test_loopback_listener() -> None:
    refused = ProbeResult("refused", "ECONNREFUSED", 0.001, None)
    facts = _facts(listeners=(ListenerFacts("s", "127.0.0.1", 80, 4, 0, 128, "nginx/1"),), probe=refused)
    diagnosis = decide(facts)
    assert diagnosis.code is Code.BOUND_LOOPBACK_ONLY
    assert "0.0.0.0 (or 10.0.1.2) instead of 127.0.0.1 (nginx: listen 80;)" in (
        diagnosis.findings[0].fix.text if diagnosis.findings[0].fix else ""
    )


def test_other_family_listener_is_family_mismatch_not_other_address() -> None:
    refused = ProbeResult("refused", "ECONNREFUSED", 0.001, None)
    facts = _facts(listeners=(ListenerFacts("s", "::1", 80, 6, 0, 128, "app/1"),), probe=refused)
    assert decide(facts).code is Code.FAMILY_MISMATCH


def test_full_accept_queue() -> None:
    silent = ProbeResult("timeout", "ETIMEDOUT", 1.0, None)
    facts = _facts(
        listeners=(ListenerFacts("s", "0.0.0.0", 80, 4, 2, 1, "app/1"),),
        probe=silent,
        overflows=3,
        overflow_total=7,
    )
    diagnosis = decide(facts)
    assert diagnosis.code is Code.BACKLOG_FULL and len(diagnosis.findings[0].evidence) == 2


def test_client_blackhole_comes_before_everything_behind_it() -> None:
    route = Route("blackhole", said="Invalid argument", entry="blackhole 10.0.1.0/24 table 7")
    client = HopFacts("c", "", "client", None, route, "10.0.1.2")
    facts = _facts(
        path=(client,), server=None, listeners=(), probe=ProbeResult("unreachable", "EINVAL", 0.0, None)
    )
    diagnosis = decide(facts)
    assert diagnosis.code is Code.ROUTE_BLACKHOLE
    assert (
        diagnosis.findings[0].fix is not None
        and diagnosis.findings[0].fix.command == "ip route del blackhole 10.0.1.0/24 table 7"
    )
    unknown = replace(client, route=Route("blackhole", said="Invalid argument"))  # no single route matched
    fix = decide(replace(facts, path=(unknown,))).findings[0].fix
    assert fix is not None and fix.command is None


def test_unreadable_firewall_is_said_not_assumed() -> None:
    server = HopFacts(
        "s", "", "server", "eth0", Route("local", "lo"), "10.0.1.2", FirewallView(None, "needs root")
    )
    facts = _facts(path=(_facts().path[0], server), probe=ProbeResult("timeout", "ETIMEDOUT", 1.0, None))
    diagnosis = decide(facts)
    assert not diagnosis.ok and diagnosis.certainty == "partial"
    assert any(c.passed is None and "needs root" in c.detail for c in diagnosis.checks)


def test_several_causes_are_all_listed_the_first_met_first() -> None:
    from portkit.firewall import Packet, evaluate, parse_nft_script
    from portkit.model import parse_address

    ruleset = parse_nft_script(
        "table inet filter { chain input { type filter hook input priority 0; tcp dport 80 drop\n}\n}\n"
    )
    packet = Packet(6, parse_address("10.0.0.2"), parse_address("10.0.1.2"), 50000, 80, iif="eth0")
    decision = evaluate(ruleset, packet, local_addresses=[parse_address("10.0.1.2")])
    server = HopFacts("s", "", "server", "eth0", Route("local", "lo"), "10.0.1.2", FirewallView(decision))
    facts = _facts(
        path=(_facts().path[0], server),
        listeners=(ListenerFacts("s", "127.0.0.1", 80, 4, 0, 128, "nginx/1"),),
        probe=ProbeResult("timeout", "ETIMEDOUT", 1.0, None),
    )
    diagnosis = decide(facts)
    assert [f.code for f in diagnosis.findings] == [Code.FW_INPUT_DROP, Code.BOUND_LOOPBACK_ONLY]
    fix = diagnosis.findings[0].fix
    assert (
        fix is not None
        and fix.command is not None
        and fix.command.startswith("nft delete rule inet filter input handle")
    )


def test_a_namespace_that_does_not_forward() -> None:
    refused = Route("unreachable", said="No route to host")
    router = HopFacts("r", "ip netns exec r ", "router", "eth0", refused, "10.0.1.2", None, {}, False)
    facts = _facts(path=(_facts().path[0], router), server=None, listeners=(),
                   probe=ProbeResult("timeout", "ETIMEDOUT", 1.0, None))  # fmt: skip
    diagnosis = decide(facts)
    assert diagnosis.code is Code.FW_FORWARD_DROP
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "ip netns exec r sysctl -w net.ipv4.ip_forward=1"


def test_reverse_path_filter() -> None:
    rp = {"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.eth0.rp_filter": 0}
    martian = Route("martian", said="Invalid argument")
    server = HopFacts("s", "ip netns exec s ", "server", "eth0", martian, "10.0.1.2", None, rp, True, True)
    facts = _facts(path=(_facts().path[0], server), probe=ProbeResult("timeout", "ETIMEDOUT", 1.0, None))
    diagnosis = decide(facts)
    assert diagnosis.code is Code.RP_FILTER
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "ip netns exec s sysctl -w net.ipv4.conf.all.rp_filter=2"


def test_wrong_service_only_with_an_identified_answer() -> None:
    assert decide(_facts(expect="http", service="ssh")).code is Code.WRONG_SERVICE
    assert decide(_facts(expect="ssh", service="ssh")).ok
    unknown = decide(_facts(expect="http", service=None), explain=True)
    assert unknown.ok and any(c.name == "service" and c.passed is None for c in unknown.checks)


def test_unread_sockets_are_not_taken_for_no_listener() -> None:
    silent = ProbeResult("timeout", "ETIMEDOUT", 1.0, None)
    diagnosis = decide(_facts(listeners=(), sockets_read=False, probe=silent), explain=True)
    assert Code.NO_LISTENER not in {f.code for f in diagnosis.findings}
    assert diagnosis.certainty == "partial"
    assert any(c.name == "listener" and c.passed is None for c in diagnosis.checks)


def test_name_not_resolved_names_the_source() -> None:
    facts = _facts(
        resolution=Resolution(
            "x.invalid",
            (),
            "/etc/hosts (no entry), then DNS (nameserver 10.0.0.53)",
            "Name or service not known",
        )
    )
    diagnosis = decide(facts)
    assert diagnosis.code is Code.NAME_NOT_RESOLVED and "DNS" in diagnosis.findings[0].summary


def test_ufw_managed_input_is_fixed_through_ufw() -> None:
    from pathlib import Path

    from portkit.firewall import Packet, evaluate, import_ufw
    from portkit.model import parse_address

    corpus = Path(__file__).parent / "corpus" / "firewall" / "ufw-default"
    ruleset = import_ufw(corpus)
    packet = Packet(6, parse_address("10.0.0.2"), parse_address("10.0.1.2"), 50000, 8080, iif="eth0")
    decision = evaluate(ruleset, packet, local_addresses=[parse_address("10.0.1.2")])
    assert decision.verdict.value in ("drop", "reject")  # ufw's default: incoming denied
    server = HopFacts(
        "s", "", "server", "eth0", Route("local", "lo"), "10.0.1.2", FirewallView(decision, "", ("ufw",))
    )
    timeout = ProbeResult("timeout", "ETIMEDOUT", 1.0, None)
    facts = _facts(port=8080, path=(_facts().path[0], server), probe=timeout,
                   listeners=(ListenerFacts("s", "0.0.0.0", 8080, 4, 0, 128, "app/1"),))  # fmt: skip
    diagnosis = decide(facts)
    assert diagnosis.code in (Code.FW_INPUT_DROP, Code.FW_INPUT_REJECT)
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "ufw allow 8080/tcp"


# --- the command line ------------------------------------------------------------------------------


def _portkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portkit", *args], capture_output=True, text=True, check=False, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ("diagnose", "nohost:99999"),
        ("diagnose", "127.0.0.1:80", "--from", "nosuchns-pk"),
        ("diagnose", "::1:80"),
        ("diagnose", "host:80/sctp"),
        ("diagnose", "bad_host!:80"),
        ("diagnose",),
        ("diagnose", "127.0.0.1:80", "--timeout", "nan"),
        ("diagnose", "127.0.0.1:80", "--pid", "1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    proc = _portkit(*args)
    assert proc.returncode == 2, proc
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_json_form_of_a_refused_local_port() -> None:
    import json
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: nothing accepts on it
        proc = _portkit("diagnose", f"127.0.0.1:{port}", "--json")
    assert proc.returncode == 1, proc
    document = json.loads(proc.stdout)
    assert document["code"] == "NO_LISTENER" and document["ok"] is False
    assert document["target"] == f"127.0.0.1:{port}/tcp"
    assert {"code", "summary", "evidence", "fix"} <= set(document["findings"][0])


@root_only
def test_without_root_it_reads_what_it_can_and_says_what_root_would_add() -> None:
    import json
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "portkit",
        ]
        proc = subprocess.run(
            [*argv, "diagnose", f"127.0.0.1:{port}", "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    document = json.loads(proc.stdout)
    assert document["code"] == "NO_LISTENER" and document["certainty"] == "partial"
    assert any("without root" in limit for limit in document["limits"])
    assert any(c["passed"] is None and "root" in c["detail"] for c in document["checks"])


# --- the target parsers ------------------------------------------------------------------------


@given(st.text(max_size=80))
def test_reach_targets_parse_or_are_refused_by_name(text: str) -> None:
    try:
        target = parse_reach_target(text)
    except UsageError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 240
        return
    assert parse_reach_target(str(target)) == target
    assert 1 <= target.port <= 65535


@given(st.text(max_size=80))
def test_bind_targets_parse_or_are_refused_by_name(text: str) -> None:
    try:
        target = parse_bind_target(text)
    except UsageError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 240
        return
    assert parse_bind_target(str(target)) == target


@given(
    st.one_of(
        # IPv6 link-local targets need a scope and are refused (test_bad_input_is_one_line...).
        st.ip_addresses().filter(lambda a: not (a.version == 6 and a.is_link_local)).map(str),
        st.from_regex(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    ),
    st.integers(1, 65535),
    st.sampled_from(["", "/tcp", "/udp", "/UDP"]),
)
def test_reach_target_round_trip(host: str, port: int, proto: str) -> None:
    shown = f"[{host}]" if ":" in host else host
    target = parse_reach_target(f"{shown}:{port}{proto}")
    assert (target.host, target.port, target.transport.value) == (host, port, proto[1:].lower() or "tcp")


def test_text_rendering_names_the_code_the_evidence_and_the_fix() -> None:
    from portkit.diagnose import diagnosis_lines

    refused = ProbeResult("refused", "ECONNREFUSED", 0.001, None)
    facts = _facts(listeners=(ListenerFacts("s", "127.0.0.1", 80, 4, 0, 128, "nginx/1"),), probe=refused)
    lines = diagnosis_lines(decide(facts))
    assert lines[0].startswith("BOUND_LOOPBACK_ONLY  10.0.1.2:80/tcp: ")
    assert any(
        line.strip().startswith("1. tcp listeners on port 80 in s (netlink): 127.0.0.1:80 (nginx/1)")
        for line in lines
    )
    assert any(line.strip().startswith("fix: bind to 0.0.0.0") for line in lines)
