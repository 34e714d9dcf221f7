"""The scan planner, fed plain values: no socket, file or resolver of the system is used."""

from __future__ import annotations

import pytest

from portkit.errors import PermissionNeeded, UsageError
from portkit.model import Protocol
from portkit.scan import ScanOptions, ScanType
from portkit.scan._plan import (
    MAX_HOSTS,
    PARALLEL_MIN_PROBES,
    ScanPlan,
    choose_scan_type,
    plan_scan,
    resolve_ports,
    worker_count,
)


class FakeNames:
    """A registry of two services whose top ports are 8080, 22, 443 (in that order)."""

    def ports_for_name(self, name: str) -> list[tuple[int, Protocol]]:
        return {"web": [(8080, Protocol.TCP)], "dns": [(53, Protocol.UDP), (53, Protocol.TCP)]}.get(name, [])

    def top_ports(self, count: int, protocol: Protocol) -> list[int]:
        return [8080, 22, 443][:count] if protocol is Protocol.TCP else [53, 161][:count]


def plan(raw_ok: bool = True, **options: object) -> ScanPlan:
    return plan_scan(
        ScanOptions(**{"targets": ["192.0.2.1"], **options}),  # type: ignore[arg-type]
        raw_ok=raw_ok,
        random_seed=12345,
        names=FakeNames(),
    )


def test_the_default_scan_type_follows_the_privilege() -> None:
    assert choose_scan_type(ScanOptions(), raw_ok=True) == (ScanType.SYN, ())
    scan_type, notes = choose_scan_type(ScanOptions(), raw_ok=False)
    assert scan_type is ScanType.CONNECT
    assert notes and "connect scan instead of SYN" in notes[0]
    _, ping_notes = choose_scan_type(ScanOptions(ping_only=True), raw_ok=False)
    assert "connect() to ports 80 and 443" in ping_notes[0]


@pytest.mark.parametrize("scan_type", [ScanType.SYN, ScanType.UDP, ScanType.ACK])
def test_a_raw_scan_type_without_raw_sockets_is_refused(scan_type: ScanType) -> None:
    with pytest.raises(PermissionNeeded, match=f"^{scan_type.flag} needs raw sockets"):
        choose_scan_type(ScanOptions(scan_type=scan_type), raw_ok=False)
    assert choose_scan_type(ScanOptions(scan_type=scan_type), raw_ok=True) == (scan_type, ())


def test_connect_needs_no_privilege_and_earns_no_note() -> None:
    assert choose_scan_type(ScanOptions(scan_type=ScanType.CONNECT), raw_ok=False) == (ScanType.CONNECT, ())


def test_ports_come_from_the_given_names() -> None:
    assert plan(ports="top:2").ports == [22, 8080]
    assert plan(ports="web,1-3").ports == [1, 2, 3, 8080]
    udp = plan(ports="dns,U:161,T:1", scan_type=ScanType.UDP)
    assert (udp.protocol, udp.ports) == (Protocol.UDP, [53, 161])
    assert plan(ports="top:1", ping_only=True).ports == []


def test_a_spec_without_ports_of_the_protocol_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="names no udp ports"):
        resolve_ports("T:80", Protocol.UDP, FakeNames())
    with pytest.raises(UsageError, match="invalid port"):
        plan(ports="70000")


def test_targets_from_options_files_and_exclusions() -> None:
    planned = plan_scan(
        ScanOptions(targets=["192.0.2.0/30"], exclude=["192.0.2.1"]),
        raw_ok=True,
        random_seed=1,
        names=FakeNames(),
        target_texts=["198.51.100.7"],
        exclude_texts=["192.0.2.2"],
    )
    assert [t.address for t in planned.targets] == ["192.0.2.0", "192.0.2.3", "198.51.100.7"]
    with pytest.raises(UsageError, match="no targets"):
        plan(targets=[])


def test_hostnames_go_through_the_given_resolver() -> None:
    asked: list[str] = []

    def resolver(name: str) -> list[str]:
        asked.append(name)
        return ["203.0.113.5", "203.0.113.6"]

    planned = plan_scan(
        ScanOptions(targets=["web.example"], first_address=True),
        raw_ok=True,
        random_seed=1,
        names=FakeNames(),
        resolver=resolver,
    )
    assert asked == ["web.example"]
    assert [(t.address, t.hostname) for t in planned.targets] == [("203.0.113.5", "web.example")]


def test_too_many_targets() -> None:
    assert len(plan(targets=["10.0.0.0/8"]).targets) == MAX_HOSTS
    with pytest.raises(UsageError, match="too many targets"):
        plan(targets=["10.0.0.0/7"])


def test_seed_timing_and_notes() -> None:
    assert plan().seed == 12345
    assert plan(seed=7).seed == 7
    assert plan(raw_ok=False).notes == choose_scan_type(ScanOptions(), raw_ok=False)[1]
    tuned = plan(timing=4, max_retries=1, initial_rtt=0.25, scan_delay=0.01)
    assert (tuned.template.max_retries, tuned.template.initial_rtt, tuned.template.scan_delay) == (
        1,
        0.25,
        0.01,
    )
    assert plan(timing=4).template == plan(timing=4, max_retries=None).template


def test_worker_count() -> None:
    big = PARALLEL_MIN_PROBES
    assert worker_count(big - 1, plan(), cpus=8) == 1
    assert worker_count(big, plan(), cpus=8) == 2
    assert worker_count(big, plan(), cpus=1) == 1
    assert worker_count(big, plan(scan_type=ScanType.CONNECT), cpus=2) == 2
    assert worker_count(big, plan(scan_type=ScanType.UDP), cpus=8) == 1
    assert worker_count(big, plan(timing=2), cpus=8) == 1
    assert worker_count(big, plan(scan_delay=0.1), cpus=8) == 1
    assert worker_count(10, plan(workers=3), cpus=1) == 3
    assert worker_count(10, plan(workers=99), cpus=1) == 16
    assert worker_count(big, plan(workers=0), cpus=8) == 2
