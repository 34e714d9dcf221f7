from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit import PortRange, PortSpec, Protocol, UsageError, parse_port_spec
from portkit.model.portspec import normalise_ranges


class FakeNames:
    def ports_for_name(self, name: str) -> list[tuple[int, Protocol]]:
        table = {
            "ssh": [(22, Protocol.TCP), (22, Protocol.UDP)],
            "https": [(443, Protocol.TCP), (443, Protocol.UDP)],
        }
        return table.get(name.lower(), [])

    def top_ports(self, count: int, protocol: Protocol) -> list[int]:
        ranked = [80, 443, 22, 21] if protocol is Protocol.TCP else [53, 161, 123]
        return ranked[:count]


NAMES = FakeNames()


def test_single_ports_and_ranges() -> None:
    spec = parse_port_spec("22,80,1000-2000")
    assert list(spec.ports(Protocol.TCP))[:3] == [22, 80, 1000]
    assert spec.count(Protocol.UDP) == 2 + 1001


def test_dash_alone_means_every_port_but_zero() -> None:
    spec = parse_port_spec("-")
    assert spec.count(Protocol.TCP) == 65535
    assert not spec.contains(0, Protocol.TCP)
    assert parse_port_spec("-1024").ranges(Protocol.TCP) == (PortRange(1, 1024),)
    assert parse_port_spec("60000-").ranges(Protocol.TCP) == (PortRange(60000, 65535),)


def test_protocol_prefixes_apply_until_the_next_prefix() -> None:
    spec = parse_port_spec("T:80,443,U:53,161")
    assert list(spec.ports(Protocol.TCP)) == [80, 443]
    assert list(spec.ports(Protocol.UDP)) == [53, 161]
    assert str(spec) == "T:80,443,U:53,161"


def test_service_names_and_top_n_resolve_through_the_registry() -> None:
    spec = parse_port_spec("ssh,https", NAMES)
    assert list(spec.ports(Protocol.TCP)) == [22, 443]
    assert list(parse_port_spec("top:2", NAMES).ports(Protocol.TCP)) == [80, 443]
    assert list(parse_port_spec("U:top:2", NAMES).ports(Protocol.UDP)) == [53, 161]
    assert list(parse_port_spec("U:top:2", NAMES).ports(Protocol.TCP)) == []


def test_real_registry_resolves_names_and_top() -> None:
    spec = parse_port_spec("ssh,top:10")
    assert spec.contains(22, Protocol.TCP)
    assert spec.count(Protocol.TCP) >= 10


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("70000", "'70000' at position 1: port 70000 is out of range"),
        ("80,90-10", "'90-10' at position 4: reversed range"),
        ("80,,81", "position 4: empty item"),
        ("22,nosuchservicexyz", "'nosuchservicexyz' at position 4: unknown service name"),
        ("T:", "a protocol prefix needs ports"),
        ("top:0", "top:N needs a count"),
        ("1-2-3", "expected a port"),
        ("", "expected ports such as"),
    ],
)
def test_errors_name_the_token_and_its_position(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_port_spec(text, NAMES)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


ranges = st.builds(lambda a, b: PortRange(min(a, b), max(a, b)), st.integers(0, 65535), st.integers(0, 65535))
range_lists = st.lists(ranges, max_size=6).map(normalise_ranges)


@given(range_lists, range_lists, range_lists, range_lists)
def test_render_then_parse_round_trips(
    any_: tuple[PortRange, ...],
    tcp: tuple[PortRange, ...],
    udp: tuple[PortRange, ...],
    sctp: tuple[PortRange, ...],
) -> None:
    spec = PortSpec(any=any_, tcp=tcp, udp=udp, sctp=sctp)
    if spec.is_empty():
        return
    assert parse_port_spec(str(spec), NAMES) == spec


@given(st.text(max_size=40))
def test_no_input_crashes_the_parser(text: str) -> None:
    try:
        parse_port_spec(text, NAMES)
    except UsageError as err:
        assert "\n" not in str(err)


@given(st.integers(0, 200000), st.integers(0, 200000))
def test_out_of_range_and_reversed_ranges_are_rejected(a: int, b: int) -> None:
    text = f"{a}-{b}"
    if a <= b <= 65535:
        assert parse_port_spec(text, NAMES).count(Protocol.TCP) == b - a + 1
    else:
        with pytest.raises(UsageError, match=r"out of range|reversed range"):
            parse_port_spec(text, NAMES)


@pytest.mark.parametrize("text", ["²", "8²", "٣-٤", "top:٣"])
def test_non_ascii_digits_are_rejected_not_crashed_on(text: str) -> None:
    with pytest.raises(UsageError):
        parse_port_spec(text, NAMES)
