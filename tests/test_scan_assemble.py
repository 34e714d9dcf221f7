"""The result builder, fed recorded outcomes: nmap's listing, hosts and the scan's header."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from portkit.model import Protocol
from portkit.model.services import ServiceRecord
from portkit.scan import PortState, Reason, ScanOptions, ScanType, parse_targets
from portkit.scan._assemble import (
    Collector,
    host_results,
    listing,
    masked_port_ranges,
    new_result,
    port_ranges,
)
from portkit.scan._plan import plan_scan
from portkit.scan._states import OUTCOME_CODE, RESPONSE_CODE, Response
from portkit.scan._workers import Share, merge_shares

SYN_ACK, RST, NONE = (RESPONSE_CODE[r] for r in (Response.SYN_ACK, Response.RST, Response.NONE))
UDP_REPLY = RESPONSE_CODE[Response.UDP_REPLY]  # settles nothing in a SYN scan
NAMES = {22: "ssh", 80: "http"}


def names(port: int, protocol: Protocol) -> str:
    return NAMES.get(port, "") if protocol is Protocol.TCP else ""


def expand(ranges: str) -> list[int]:
    ports: list[int] = []
    for part in filter(None, ranges.split(",")):
        first, _, last = part.partition("-")
        ports.extend(range(int(first), int(last or first) + 1))
    return ports


class NoNames:
    """A registry that knows no service (numeric port specs need none)."""

    def ports_for_name(self, name: str) -> list[tuple[int, Protocol]]:
        return []

    def top_ports(self, count: int, protocol: Protocol) -> list[int]:
        return []


def test_port_ranges_as_nmap_writes_them() -> None:
    assert port_ranges([]) == ""
    assert port_ranges([80]) == "80"
    assert port_ranges([3, 1, 2, 2]) == "1-3"
    assert port_ranges([1, 2, 3, 5, 8, 9]) == "1-3,5,8-9"


@given(st.lists(st.integers(1, 300)))
def test_port_ranges_cover_exactly_the_ports(ports: list[int]) -> None:
    assert expand(port_ranges(ports)) == sorted(set(ports))


@given(st.integers(0, 70000), st.lists(st.booleans(), max_size=300), st.booleans())
def test_masked_port_ranges_equal_the_plain_listing(first: int, bits: list[bool], gap: bool) -> None:
    """The bytes.find walk over consecutive ports agrees with compress-then-runs (its reference)."""
    ports = list(range(first, first + len(bits)))
    if gap and len(ports) > 2:
        ports[-1] += 5  # not consecutive: the plain path
    mask = bytes(map(int, bits))
    assert masked_port_ranges(mask, ports) == port_ranges(list(itertools.compress(ports, mask)))


answers = st.lists(
    st.tuples(
        st.integers(0, 3 * 40 - 1), st.sampled_from([SYN_ACK, RST, NONE, UDP_REPLY]), st.integers(0, 300)
    ),
    max_size=200,
)


@given(answers)
def test_the_three_ways_of_recording_agree(batch: list[tuple[int, int, int]]) -> None:
    one, many, columns = (Collector(ScanType.SYN, 40) for _ in range(3))
    for key, rcode, ttl in batch:
        one.record(key, rcode, ttl)
    many.record_batch(batch)
    # record_columns takes one host's answers at a time, as the C driver hands them over.
    for host in range(3):
        mine = [a for a in batch if a[0] // 40 == host]
        columns.record_columns(
            [a[0] for a in mine], bytes(a[1] for a in mine), bytes(min(a[2], 255) for a in mine)
        )
    assert one.codes == many.codes == columns.codes
    assert one.ttls == many.ttls == columns.ttls
    assert one.settled == many.settled == columns.settled == len({k for k, r, _ in batch if one.table[r]})


def outcomes(ports: list[int], open_ports: set[int]) -> tuple[bytearray, bytearray]:
    collector = Collector(ScanType.SYN, len(ports))
    for i, port in enumerate(ports):
        collector.record(i, SYN_ACK if port in open_ports else RST, 64)
    return collector.codes[0], collector.ttls[0]


def test_more_than_25_ports_of_a_state_are_not_shown() -> None:
    ports = list(range(1, 101))
    codes, ttls = outcomes(ports, {22, 80, 99})
    shown, extras = listing(codes, ttls, ports, Protocol.TCP, False, names)
    assert [(p.port, p.state, p.reason, p.ttl) for p in shown] == [
        (port, PortState.OPEN, Reason.SYN_ACK, 64) for port in (22, 80, 99)
    ]
    assert [p.service for p in shown] == [ServiceRecord("ssh"), ServiceRecord("http"), None]
    assert len(extras) == 1
    assert (extras[0].state, extras[0].count, extras[0].reasons) == (
        PortState.CLOSED,
        97,
        ((Reason.RESET, 97),),
    )
    assert extras[0].ports == ("1-21,23-79,81-98,100",)


def test_25_ports_of_a_state_are_listed_and_keep_all_lists_every_port() -> None:
    ports = list(range(1, 26))
    shown, extras = listing(*outcomes(ports, set()), ports, Protocol.TCP, False, names)
    assert (len(shown), extras) == (25, [])
    ports = list(range(1, 27))
    shown, extras = listing(*outcomes(ports, set()), ports, Protocol.TCP, False, names)
    assert (len(shown), [e.count for e in extras]) == (0, [26])
    shown, extras = listing(*outcomes(ports, set()), ports, Protocol.TCP, True, names)
    assert (len(shown), extras) == (26, [])


def test_ports_without_an_answer_are_neither_listed_nor_counted() -> None:
    collector = Collector(ScanType.SYN, 3)
    collector.record(1, SYN_ACK, 64)
    shown, extras = listing(collector.codes[0], collector.ttls[0], [21, 22, 23], Protocol.TCP, False, names)
    assert ([p.port for p in shown], extras) == ([22], [])


def test_hosts_in_index_order_with_status_reason_and_rtt() -> None:
    targets = parse_targets(["192.0.2.0/30"], exclude=["192.0.2.1"])
    collector = Collector(ScanType.SYN, 2)
    for key in (7, 6, 2, 0, 3):  # hosts 3, 1 (both ports) and 0 (port 0); host 1 is excluded
        collector.record(key, RST if key % 2 else SYN_ACK, 64)
    hosts = host_results(
        collector,
        targets,
        [22, 80],
        Protocol.TCP,
        names=names,
        timed_out={3},
        up_reason={0: "syn-ack"},
        rtts={0: (0.001, 0.0005, 0.1)},
    )
    assert [(h.address, h.status, h.status_reason) for h in hosts] == [
        ("192.0.2.0", "up", "syn-ack"),
        ("192.0.2.3", "timeout", "user-set"),
    ]
    assert (hosts[0].rtt, hosts[0].rttvar, hosts[0].timeout) == (0.001, 0.0005, 0.1)
    assert hosts[1].rtt is None
    assert [p.port for p in hosts[0].ports] == [22]
    assert [(p.port, p.state) for p in hosts[1].ports] == [(22, PortState.OPEN), (80, PortState.CLOSED)]
    assert collector.codes == {}  # consumed


def test_shares_merge_into_one_listing() -> None:
    # Two workers probed disjoint ports of the same host: the merge sees every port once.
    halves = []
    for share in (0, 1):
        collector = Collector(ScanType.SYN, 4)
        for index in range(share, 4, 2):
            collector.record(index, SYN_ACK if index == 1 else RST, 60 + index)
        halves.append(Share(collector.codes, collector.ttls, {0: (0.01, 0.0, 1.0)}, set(), sent=2 + share))
    merged = merge_shares(halves, Collector(ScanType.SYN, 4))
    assert merged.sent == 5 and not merged.interrupted
    codes, ttls = merged.collector.codes[0], merged.collector.ttls[0]
    closed, opened = (
        OUTCOME_CODE[(PortState.CLOSED, Reason.RESET)],
        OUTCOME_CODE[(PortState.OPEN, Reason.SYN_ACK)],
    )
    assert (list(codes), list(ttls)) == ([closed, opened, closed, closed], [60, 61, 62, 63])


def test_the_header_says_what_was_planned() -> None:
    plan = plan_scan(
        ScanOptions(targets=["192.0.2.0/31"], ports="80,22,1-3"),
        raw_ok=False,
        random_seed=99,
        names=NoNames(),
    )
    result = new_result(plan, 1_700_000_000.0)
    assert (result.scan_type, result.protocol, result.nports, result.hosts_total) == (
        "connect",
        Protocol.TCP,
        5,
        2,
    )
    assert (result.ports_spec, result.services, result.start) == ("80,22,1-3", "1-3,22,80", 1_700_000_000.0)
    assert (result.args, result.command) == ({"seed": 99, "timing": 3}, "")
    assert result.notes == list(plan.notes) and result.notes
    assert result.hosts == [] and result.probes_sent == 0
