# ruff: noqa: E501  (recorded kernel and nft lines are kept whole)
"""The kernel as witness: drop reasons from skb:kfree_skb, and nftables' own trace of a flow.

The parsers are pinned on text the kernel and nft printed on this machine; the watches are
run in lab namespaces: a drop rule must show as NETFILTER_DROP and as a trace naming that
rule's handle, a port with no listener as NO_SOCKET, and nothing either makes may outlive it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import needs_root
from portkit.diagnose import Source
from portkit.diagnose import _dropwatch as dropwatch
from portkit.diagnose._dropwatch import parse_trace, reason_names, softirq_pids, watch_drops
from portkit.diagnose._nfttrace import flow_match, parse_trace_lines, trace_flow
from portkit.errors import UsageError
from portkit.model.protocols import Transport
from portkit.testing import LabNamespace

# Recorded from a private trace instance while a probe ran (other tests' drops included: a
# kworker's IP_RPFILTER and a socat's refused connection in another namespace).
KFREE_TRACE = """\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
         python3-21985   [000] ..s1. 11034.473697: kfree_skb: skbaddr=0000000097e637b8 rx_sk=0000000000000000 protocol=2048 location=nft_do_chain+0x46f/0x690 reason: NETFILTER_DROP
     kworker/0:0-4378    [000] ..s1. 11034.550100: kfree_skb: skbaddr=000000009001bd86 rx_sk=0000000000000000 protocol=2048 location=ip_rcv_finish_core+0x260/0x470 reason: IP_RPFILTER
           socat-22049   [000] ..s1. 11034.554168: tcp_send_reset: skbaddr=000000005a2ec4f4 skaddr=0000000000000000 src=203.0.113.1:8443 dest=203.0.113.2:51362 state=UNKNOWN reason=NO_SOCKET
           socat-22049   [000] ..s1. 11034.554177: kfree_skb: skbaddr=000000005a2ec4f4 rx_sk=0000000000000000 protocol=2048 location=tcp_v4_rcv+0x99/0x1400 reason: NO_SOCKET
         python3-21985   [000] ..s1. 11034.677660: tcp_send_reset: skbaddr=0000000097e637b8 skaddr=0000000000000000 src=127.0.0.1:8081 dest=127.0.0.1:49072 state=UNKNOWN reason=NO_SOCKET
         python3-21985   [000] ..s1. 11034.677668: kfree_skb: skbaddr=0000000097e637b8 rx_sk=0000000000000000 protocol=2048 location=tcp_v4_rcv+0x99/0x1400 reason: NO_SOCKET
"""

# Recorded from `nft -a monitor trace`: an nftables drop rule, then an iptables-nft REJECT.
NFT_TRACE = """\
trace id 0beef77a inet portkit_trace_1_abc pre packet: iif "lo" @ll,0,112 0x800 ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip protocol tcp tcp sport 47068 tcp dport 8081 tcp flags == syn
trace id 0beef77a inet portkit_trace_1_abc pre rule ip daddr 127.0.0.1 tcp dport 8081 meta nftrace set 1 # handle 3 (verdict continue)
trace id 0beef77a inet portkit_trace_1_abc pre policy accept
trace id 9ee50fe8 ip filter INPUT packet: iif "lo" @ll,0,112 0x800 ip saddr 127.0.0.1 ip daddr 127.0.0.1 tcp sport 52946 tcp dport 8080 tcp flags == syn
trace id 9ee50fe8 ip filter INPUT policy accept
trace id 9ee50fe8 inet filter input rule tcp dport 8080 counter packets 0 bytes 0 drop # handle 2 (verdict drop)
trace id 873dabe3 ip filter INPUT rule iifname "lo" tcp dport 8081 counter packets 0 bytes 0 reject # handle 2 (verdict drop)
"""


def test_kfree_skb_lines_become_events() -> None:
    events = parse_trace(KFREE_TRACE)
    assert [e.reason for e in events] == ["NETFILTER_DROP", "IP_RPFILTER", "NO_SOCKET", "NO_SOCKET"]
    dropped = events[0]
    assert (dropped.pid, dropped.comm, dropped.cpu, dropped.family) == (21985, "python3", 0, 4)
    assert dropped.location.startswith("nft_do_chain+")
    assert dropped.flow == ""  # no reset came before it: the later reset reuses its skb address
    refused = events[3]
    assert refused.flow == "127.0.0.1:49072 -> 127.0.0.1:8081" and refused.ports == (49072, 8081)
    assert events[2].ports == (51362, 8443)


def test_matching_ties_drops_to_the_flow() -> None:
    watch = dropwatch.DropWatch(dropwatch.Check("x", True, ""), available=True)
    watch._finish(parse_trace(KFREE_TRACE))
    assert watch.reasons(port=8081, pids={21985}) == ("NETFILTER_DROP", "NO_SOCKET")
    assert watch.reasons(port=8443) == ("NETFILTER_DROP", "IP_RPFILTER", "NO_SOCKET")  # unattributed kept
    assert watch.reasons(pids={4378}) == ("IP_RPFILTER",)
    assert len(watch.matching()) == 4
    evidence = watch.evidence(port=8081, pids={21985})
    assert {e.source for e in evidence} == {Source.DROP_REASON}
    assert "NO_SOCKET at tcp_v4_rcv+0x99 127.0.0.1:49072 -> 127.0.0.1:8081" in evidence[-1].showed


def test_reason_names_come_from_the_format_file() -> None:
    text = (
        'print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" })'
    )
    assert reason_names(text) == {2: "NOT_SPECIFIED", 3: "NO_SOCKET"}
    assert reason_names("print fmt: no reasons here") == {}


def test_without_tracefs_the_watch_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dropwatch, "TRACEFS_MOUNTS", (tmp_path,))
    ran = False
    with watch_drops(Transport.TCP) as drops:
        ran = True
    assert ran and not drops.available and drops.events() == ()
    assert drops.check.passed is None and "tracefs is not mounted" in drops.check.detail


def test_nft_trace_lines_become_steps() -> None:
    steps = parse_trace_lines(NFT_TRACE.splitlines())
    assert [s.kind for s in steps] == ["packet", "rule", "policy", "packet", "policy", "rule", "rule"]
    ours = steps[1]
    assert (ours.table, ours.chain, ours.handle, ours.verdict) == (
        "portkit_trace_1_abc",
        "pre",
        3,
        "continue",
    )
    drop = steps[5]
    assert (drop.family, drop.table, drop.chain, drop.handle, drop.verdict) == (
        "inet",
        "filter",
        "input",
        2,
        "drop",
    )
    assert drop.rule == "tcp dport 8080 counter packets 0 bytes 0 drop" and not drop.rejected
    assert steps[6].rejected and steps[6].table == "filter" and steps[6].family == "ip"
    assert steps[4].verdict == "accept"


@pytest.mark.parametrize(
    ("daddr", "port", "proto", "match"),
    [
        ("10.0.0.2", 8080, Transport.TCP, "ip daddr 10.0.0.2 tcp dport 8080"),
        ("2001:db8::2", 53, Transport.UDP, "ip6 daddr 2001:db8::2 udp dport 53"),
        (None, 22, Transport.TCP, "tcp dport 22"),
    ],
)
def test_flow_match(daddr: str | None, port: int, proto: Transport, match: str) -> None:
    assert flow_match(daddr, port, proto) == match


@pytest.mark.parametrize(
    ("daddr", "port"), [("nohost; flush ruleset", 80), ("10.0.0.1", 0), ("10.0.0.1", 70000)]
)
def test_flow_match_refuses_bad_input(daddr: str, port: int) -> None:
    with pytest.raises(UsageError):
        flow_match(daddr, port, Transport.TCP)


# --- in lab namespaces ----------------------------------------------------------------------

needs_tracefs = pytest.mark.skipif(
    dropwatch.find_tracefs() is None,
    reason="tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)",
)


@pytest.fixture
def ns() -> Iterator[LabNamespace]:
    with LabNamespace("pkev") as space:
        yield space


def probe(ns: LabNamespace, port: int, timeout: float = 0.3) -> tuple[str, int]:
    """Connect to 127.0.0.1:PORT from inside the namespace: the outcome and the thread id the
    kernel ran the packet's receive path in (loopback delivers in the sender's softirq)."""
    outcome: list[tuple[str, int]] = []

    def run() -> None:
        with ns.inside():
            sock = socket.socket()
            sock.settimeout(timeout)
            try:
                sock.connect(("127.0.0.1", port))
                result = "connected"
            except TimeoutError:
                result = "timeout"
            except ConnectionRefusedError:
                result = "refused"
            finally:
                sock.close()
        outcome.append((result, threading.get_native_id()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


LAB_TABLE = """\
table inet lab {{
  chain input {{ type filter hook input priority 0; {rule} }}
}}
"""


def rule_handle(ns: LabNamespace, table: str, chain: str) -> int:
    listing = json.loads(ns.run(["nft", "-j", "-a", "list", "chain", "inet", table, chain]).stdout)
    return next(item["rule"]["handle"] for item in listing["nftables"] if "rule" in item)


def instances_of_this_process() -> list[str]:
    root = dropwatch.find_tracefs()
    assert root is not None
    return [
        p.name for p in (root / "instances").iterdir() if p.name.startswith(f"portkit-drops-{os.getpid()}-")
    ]


def tables(ns: LabNamespace) -> str:
    return str(ns.run(["nft", "list", "tables"]).stdout)


@needs_root
@needs_tracefs
def test_no_listener_is_no_socket(ns: LabNamespace) -> None:
    with watch_drops(Transport.TCP, port=8090) as drops:
        outcome, _ = probe(ns, 8090)
    assert outcome == "refused"
    assert drops.available and drops.check.passed
    refused = [e for e in drops.matching(port=8090) if e.ports is not None and e.ports[1] == 8090]
    assert refused and refused[0].reason == "NO_SOCKET"
    assert refused[0].location.startswith("tcp_v4_rcv")
    assert "NO_SOCKET" in drops.reasons()  # the watch's port is the default
    assert instances_of_this_process() == []


@needs_root
@needs_tracefs
def test_a_drop_rule_is_netfilter_drop_and_traced_to_its_handle(ns: LabNamespace) -> None:
    ns.nft(LAB_TABLE.format(rule="tcp dport 8091 counter drop;"))
    handle = rule_handle(ns, "lab", "input")
    with (
        watch_drops(Transport.TCP, port=8091) as drops,
        trace_flow("127.0.0.1", 8091, netns=ns.name) as trace,
    ):
        outcome, tid = probe(ns, 8091)
    assert outcome == "timeout"
    # The SYN is received in the prober's softirq, or in ksoftirqd's when the machine is busy.
    ran_in = {tid} | softirq_pids()
    assert "NETFILTER_DROP" in drops.reasons(pids=ran_in), [(str(e), e.pid) for e in drops.events()]
    dropped = trace.dropped_by()
    assert dropped is not None, trace.lines()
    assert (dropped.family, dropped.table, dropped.chain, dropped.handle) == ("inet", "lab", "input", handle)
    assert dropped.kind == "rule" and dropped.verdict == "drop" and not dropped.rejected
    assert trace.check.passed and f"handle {handle}" in trace.check.detail
    assert any(e.source is Source.NFT_TRACE and f"handle {handle}" in e.showed for e in trace.evidence())
    assert "portkit_trace" not in tables(ns)
    assert instances_of_this_process() == []


@needs_root
def test_iptables_nft_reject_and_chain_policy_are_traced(ns: LabNamespace) -> None:
    assert ns.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8092", "-j", "REJECT"]).returncode == 0
    with trace_flow("127.0.0.1", 8092, netns=ns.name) as trace:
        assert probe(ns, 8092)[0] == "refused"
    dropped = trace.dropped_by()
    assert dropped is not None and dropped.rejected
    assert (dropped.family, dropped.table, dropped.chain) == ("ip", "filter", "INPUT")
    listing = ns.run(["nft", "-a", "list", "chain", "ip", "filter", "INPUT"]).stdout
    assert f"# handle {dropped.handle}" in listing

    assert ns.run(["iptables", "-P", "INPUT", "DROP"]).returncode == 0
    with trace_flow("127.0.0.1", 8093, netns=ns.name) as trace:
        assert probe(ns, 8093)[0] == "timeout"
    dropped = trace.dropped_by()
    assert dropped is not None and dropped.kind == "policy" and dropped.chain == "INPUT"


@needs_root
def test_an_open_path_traces_without_a_drop(ns: LabNamespace) -> None:
    ns.nft(LAB_TABLE.format(rule="policy accept;"))
    with trace_flow("127.0.0.1", 8094, netns=ns.name) as trace:
        assert probe(ns, 8094)[0] == "refused"
    assert trace.dropped_by() is None
    assert [s.verdict for s in trace.steps() if s.kind == "policy"] == ["accept"]
    assert all(s.table != trace.table for s in trace.steps())


@needs_root
@needs_tracefs
def test_everything_is_removed_when_the_body_fails(ns: LabNamespace) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        watch_drops() as drops,
        trace_flow("127.0.0.1", 8095, netns=ns.name) as trace,
    ):
        assert drops.available and trace.available
        assert "portkit_trace" in tables(ns) and instances_of_this_process()
        _ = 1 / 0
    assert "portkit_trace" not in tables(ns)
    assert instances_of_this_process() == []


@needs_root
def test_the_host_gets_no_table(ns: LabNamespace) -> None:
    def host_tables() -> str:
        return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout

    with trace_flow("127.0.0.1", 8096, netns=ns.name) as trace:
        assert trace.table in tables(ns)
        assert trace.table not in host_tables()


_HOLD_OPEN = """
import sys, time
from portkit.diagnose._dropwatch import watch_drops
from portkit.diagnose._nfttrace import trace_flow
with watch_drops() as drops, trace_flow("127.0.0.1", 8097, netns=sys.argv[1]) as trace:
    print(drops.available, trace.available, trace.table, flush=True)
    time.sleep(60)
"""


@needs_root
@needs_tracefs
def test_sigterm_still_removes_everything(ns: LabNamespace) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, ns.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        available, traced, table = child.stdout.readline().split()
        assert available == traced == "True"
        assert table in tables(ns)
        root = dropwatch.find_tracefs()
        assert root is not None
        assert [p for p in (root / "instances").iterdir() if p.name.startswith(f"portkit-drops-{child.pid}-")]
        child.terminate()
        child.wait(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert table not in tables(ns)
    assert not [p for p in (root / "instances").iterdir() if p.name.startswith(f"portkit-drops-{child.pid}-")]


_AS_USER = """
from portkit.diagnose._dropwatch import watch_drops
from portkit.diagnose._nfttrace import trace_flow
with watch_drops() as drops, trace_flow("127.0.0.1", 8098) as trace:
    pass
print(drops.available, drops.check.passed, drops.check.detail)
print(trace.available, trace.check.passed, trace.check.detail)
"""


@needs_root
def test_without_root_both_say_so() -> None:
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", _AS_USER]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    drops, trace = done.stdout.splitlines()
    assert drops.startswith("False None needs root")
    assert trace.startswith("False None needs root")


@needs_root
def test_ipv6_through_a_proc_namespace_path(ns: LabNamespace) -> None:
    ns.nft(LAB_TABLE.format(rule="ip6 daddr ::1 tcp dport 8099 counter drop;"))
    handle = rule_handle(ns, "lab", "input")
    member = subprocess.Popen(ns.command(["sleep", "60"]))
    try:
        # Only once `ip netns exec` has entered the namespace does the path name it (before,
        # it would name this one, whose firewall the test must not touch).
        wanted = os.stat(f"/run/netns/{ns.name}").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{member.pid}/ns/net").st_ino != wanted:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with trace_flow("::1", 8099, netns=f"/proc/{member.pid}/ns/net") as trace:
            outcome: list[str] = []

            def run() -> None:
                with ns.inside():
                    sock = socket.socket(socket.AF_INET6)
                    sock.settimeout(0.3)
                    try:
                        sock.connect(("::1", 8099))
                    except TimeoutError:
                        outcome.append("timeout")
                    finally:
                        sock.close()

            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
        assert outcome == ["timeout"]
        dropped = trace.dropped_by()
        assert dropped is not None and dropped.handle == handle and dropped.table == "lab"
        assert "ip6 daddr ::1" in dropped.rule
        assert trace.table not in tables(ns)
    finally:
        member.kill()
        member.wait(timeout=10)


@needs_root
@needs_tracefs
def test_a_watch_killed_outright_is_swept_by_the_next_one(ns: LabNamespace) -> None:
    """SIGKILL leaves the instance (and its enabled tracepoint) behind; the next watch removes it."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, ns.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    root = dropwatch.find_tracefs()
    assert root is not None
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split()[0] == "True"
    finally:
        child.kill()
        child.wait(timeout=10)
    left = [p for p in (root / "instances").iterdir() if p.name.startswith(f"portkit-drops-{child.pid}-")]
    assert left, "SIGKILL cannot be caught: the instance should still be there"
    stale = [t for t in tables(ns).split() if t.startswith(f"portkit_trace_{child.pid}_")]
    assert stale, "SIGKILL cannot be caught: the tracing table should still be there"
    with watch_drops(Transport.TCP) as drops, trace_flow("127.0.0.1", 8098, netns=ns.name) as trace:
        assert drops.available and trace.available
        assert not any(p.exists() for p in left)
        assert instances_of_this_process()  # its own is untouched
        assert stale[0] not in tables(ns) and trace.table in tables(ns)
    assert not instances_of_this_process()
