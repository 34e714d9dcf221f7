"""Targets in nmap's syntax, the keyed probe order, and streaming without materialising."""

from __future__ import annotations

import ipaddress
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portkit.errors import UsageError
from portkit.scan import _permutation
from portkit.scan._permutation import Permutation
from portkit.scan._targets import parse_target, parse_targets, read_target_file


def addresses(*texts: str, exclude: tuple[str, ...] = ()) -> list[str]:
    return [t.address for t in parse_targets(texts, exclude=exclude, resolver=fake_dns)]


def fake_dns(name: str) -> list[str]:
    table = {"web.example": ["192.0.2.7", "2001:db8::7"], "one.example": ["192.0.2.9"]}
    if name not in table:
        raise UsageError(f"invalid target {name!r}: cannot resolve it")
    return table[name]


def test_forms() -> None:
    assert addresses("192.0.2.1") == ["192.0.2.1"]
    assert addresses("2001:db8::1") == ["2001:db8::1"]
    assert addresses("192.0.2.0/30") == ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert addresses("192.0.2.5/31") == ["192.0.2.4", "192.0.2.5"]
    assert addresses("2001:db8::/127") == ["2001:db8::", "2001:db8::1"]
    assert addresses("192.0.2.250-192.0.2.252") == ["192.0.2.250", "192.0.2.251", "192.0.2.252"]
    assert addresses("10.0.0-1.1-2") == ["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"]
    assert addresses("10.0.0.1,3,5") == ["10.0.0.1", "10.0.0.3", "10.0.0.5"]
    assert len(addresses("10.0.0.*")) == 256
    assert addresses("web.example") == ["192.0.2.7", "2001:db8::7"]
    assert [t.hostname for t in parse_targets(["web.example"], resolver=fake_dns)] == ["web.example"] * 2
    first = parse_targets(["web.example"], resolver=fake_dns, first_address=True)
    assert [t.address for t in first] == ["192.0.2.7"]


def test_exclusions() -> None:
    assert addresses("192.0.2.0/29", exclude=("192.0.2.1,192.0.2.4-192.0.2.6",)) == [
        "192.0.2.0", "192.0.2.2", "192.0.2.3", "192.0.2.7",
    ]  # fmt: skip
    assert addresses("10.0.0-2.1", exclude=("10.0.1.*",)) == ["10.0.0.1", "10.0.2.1"]


def test_target_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "targets.txt"
    path.write_text("192.0.2.1  192.0.2.2 # two\n\n# comment\n192.0.2.8/31\n")
    assert read_target_file(str(path)) == ["192.0.2.1", "192.0.2.2", "192.0.2.8/31"]
    with pytest.raises(UsageError, match="invalid target file"):
        read_target_file(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "bad",
    ["", "300.1.1.1", "10.0.0.5-1", "192.0.2.9-192.0.2.1", "192.0.2.0/x", "1.2.3.4.5.6", "bad name!", "::/8"],
)
def test_bad_targets_are_one_line_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_target(bad, resolver=fake_dns)
    assert "\n" not in str(info.value) and "invalid target" in str(info.value)


@settings(deadline=None)
@given(st.ip_addresses(v=4), st.integers(min_value=20, max_value=32))
def test_cidr_matches_ipaddress(address: ipaddress.IPv4Address, bits: int) -> None:
    net = ipaddress.ip_network(f"{address}/{bits}", strict=False)
    targets = parse_targets([f"{address}/{bits}"])
    assert len(targets) == net.num_addresses
    assert targets.get(0) is not None and targets.get(0).address == str(net.network_address)  # type: ignore[union-attr]
    last = targets.get(len(targets) - 1)
    assert last is not None and last.address == str(net.broadcast_address)


@settings(deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=4, unique=True), st.integers(0, 255))
def test_octet_lists_match_a_product(values: list[int], fixed: int) -> None:
    spec = f"192.{fixed}.{','.join(map(str, values))}.1"
    assert addresses(spec) == [f"192.{fixed}.{v}.1" for v in sorted(values)]


@settings(deadline=None)
@given(st.ip_addresses(v=6), st.integers(0, 40))
def test_dash_ranges_v6(start: ipaddress.IPv6Address, span: int) -> None:
    end = ipaddress.IPv6Address(min(int(start) + span, (1 << 128) - 1))
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    if int(start) <= int(mapped.broadcast_address) and int(end) >= int(mapped.network_address):
        with pytest.raises(UsageError, match="IPv4-mapped"):  # IPv4 hosts, refused as targets
            addresses(f"{start}-{end}")
        return
    got = addresses(f"{start}-{end}")
    assert got[0] == str(start) and got[-1] == str(end) and len(got) == int(end) - int(start) + 1


@settings(deadline=None)
@given(st.integers(0, 3000), st.integers(-(2**63), 2**64 - 1))  # --seed's range
def test_permutation_is_a_bijection(n: int, key: int) -> None:
    perm = Permutation(n, key)
    assert sorted(perm) == list(range(n))


def test_permutation_is_keyed_and_deterministic() -> None:
    assert list(Permutation(1000, 7)) == list(Permutation(1000, 7))
    assert list(Permutation(1000, 7)) != list(Permutation(1000, 8))
    assert list(Permutation(1000, 7)) != list(range(1000))
    perm = Permutation(1000, 7)
    assert [perm[i] for i in range(1000)] == list(perm)
    # A negative key (`--seed -7`) is a key like any other; it raised OverflowError.
    assert sorted(Permutation(1000, -7)) == list(range(1000))
    assert list(Permutation(1000, -7)) not in (list(Permutation(1000, 7)), list(range(1000)))


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("feistel", [False, True])
def test_worker_shares_split_the_permutation(
    n: int, count: int, feistel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if feistel:  # the large-permutation path, on a size a test can afford
        monkeypatch.setattr(_permutation, "SMALL", 5)
    perm = Permutation(n, 11)
    assert perm._is_small is (n <= 5 or not feistel)
    shares = [list(perm.share(i, count)) for i in range(count)]
    assert sorted(x for share in shares for x in share) == list(range(n))
    assert shares == [list(Permutation(n, 11).share(i, count)) for i in range(count)]  # keyed, deterministic
    if n == 1000 and count == 2:
        assert shares[0] != sorted(shares[0])


def test_a_slash16_by_100_ports_is_streamed_not_materialised() -> None:
    """6.5 million probes: order and addresses come lazily, in a few kilobytes."""
    from portkit.scan._hosts import HostTable

    targets = parse_targets(["10.99.0.0/16"])
    nports = 100
    tracemalloc.start()
    perm = Permutation(len(targets) * nports, 1)
    assert len(perm) == 6_553_600
    hosts = HostTable(targets)
    it = iter(perm)
    seen = set()
    for _ in range(5000):
        host, _port = divmod(next(it), nports)
        hosts.get(host)
        seen.add(host)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 5,000 probes touch ~4,800 hosts; memory grows with hosts seen, never with the probe space.
    assert len(seen) > 4000
    assert peak < 8 * 1024 * 1024


def test_octets_with_leading_zeros_are_decimal_whole_numbers_as_nmap_reads_them() -> None:
    """`nmap -sL -n 0177.0.0.1` lists 177.0.0.1 and `1.2.3.0010` 1.2.3.10: every digit of an octet
    counts (a regex that split "0177" into "017" and "7" scanned 17.0.0.1, another host)."""
    assert addresses("0177.0.0.1") == ["177.0.0.1"]
    assert addresses("1.2.3.0010") == ["1.2.3.10"]
    assert addresses("127.0.0.01") == ["127.0.0.1"]
    assert addresses("10.0.0.01-003") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    for bad in ("1.2.3.0256", "1.2.3.1-0300", "1.2.3.2550", "1.2.3." + "9" * 5000):
        with pytest.raises(UsageError, match="0-255"):
            addresses(bad)


def test_an_ipv6_zone_is_kept_and_must_name_an_interface() -> None:
    """`fe80::1%lo` is scanned through lo (connect() to a link-local address without its zone
    fails with EINVAL, which read as filtered); a zone no interface has is bad input."""
    assert addresses("fe80::1%lo") == ["fe80::1%lo"]
    assert addresses("fe80::1%1") == ["fe80::1%1"]
    for bad, words in (
        ("fe80::1%pknosuch0", "no interface"),
        ("fe80::1%", "no interface"),
        ("192.0.2.1%lo", "IPv6"),
        ("fe80::1%lo-fe80::2", "no interface"),
        ("fe80::1-fe80::2%lo", "single"),
        ("fe80::/64%lo", "single"),
        ("fe80::1%999999", "no interface"),
    ):
        with pytest.raises(UsageError, match=words):
            addresses(bad)


def test_an_ipv4_mapped_address_is_refused_with_its_ipv4_form() -> None:
    """`::ffff:127.0.0.1` is the IPv4 host 127.0.0.1; raw IPv6 probes to it never leave, so a
    SYN scan called its closed ports filtered (nmap refuses it without -6, finds it down with)."""
    for text in (
        "::ffff:127.0.0.1",
        "::ffff:192.0.2.0/120",
        "::ffff:192.0.2.1-::ffff:192.0.2.9",
        "::ffff:0:0/95",
    ):
        with pytest.raises(UsageError, match="IPv4-mapped"):
            addresses(text)
    with pytest.raises(UsageError, match=r"'127\.0\.0\.1'"):
        addresses("::ffff:127.0.0.1")
    assert addresses("::fffe:7f00:1") == ["::fffe:7f00:1"]  # next door, an IPv6 address like any
