"""Scan targets in nmap's syntax, kept as compact blocks so a /16 is never a list of addresses.

Accepted: IPv4 and IPv6 addresses, CIDR (`192.0.2.0/24`, `2001:db8::/120`), dash ranges of
whole addresses (`192.0.2.10-192.0.2.20`), nmap octet ranges (`10.0.0-3.1-254`, `10.0.0.1,3,5`,
`10.0.0.*`), and hostnames (every A/AAAA record, or only the first with `first_address`).
`TargetSet` maps a host index to an address in O(log blocks), and skips excluded addresses.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from portkit._ifaces import known_interface
from portkit._textfile import read_text_file
from portkit.errors import UsageError, quote

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?\Z"
)
# An octet item: N, N-M, N-, -M. Digits are decimal whatever their leading zeros, as nmap reads
# them (0177 is 177); every digit belongs to its number, so a value over 255 is refused.
_OCTET_ITEM_RE = re.compile(r"(\d+)?(?:(-)(\d+)?)?\Z", re.ASCII)
MAX_CIDR_HOSTS_V6 = 1 << 24
# IPv4-mapped addresses (::ffff:a.b.c.d) are IPv4 hosts: no IPv6 packet reaches one.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_FIRST, _MAPPED_LAST = int(_MAPPED.network_address), int(_MAPPED.broadcast_address)
_MAPPED_WORDS = "it holds IPv4-mapped addresses (::ffff:a.b.c.d), IPv4 hosts: scan them as IPv4"
_ACCEPTED = "expected an address, CIDR (192.0.2.0/24), range (192.0.2.1-20, 10.0.0-3.*) or hostname"


@dataclass(frozen=True)
class Block:
    """A run of addresses: `count` consecutive ones from `first`, or an octet product."""

    first: int
    count: int
    version: int
    octets: tuple[tuple[int, ...], ...] = ()
    hostname: str = ""
    scope: str = ""  # an IPv6 zone (interface name or index), kept on the address: fe80::1%eth0

    def address(self, offset: int) -> str:
        if self.scope:
            return f"{ipaddress.IPv6Address(self.first + offset)}%{self.scope}"
        if self.octets:
            parts = []
            for values in reversed(self.octets):
                offset, digit = divmod(offset, len(values))
                parts.append(values[digit])
            return ".".join(str(p) for p in reversed(parts))
        number = self.first + offset
        return str(ipaddress.IPv4Address(number) if self.version == 4 else ipaddress.IPv6Address(number))

    def contains(self, addr: Address) -> bool:
        if addr.version != self.version:
            return False
        if self.octets:
            return all(int(o) in values for o, values in zip(str(addr).split("."), self.octets, strict=True))
        return self.first <= int(addr) < self.first + self.count


@dataclass(frozen=True)
class Target:
    address: str
    hostname: str = ""


@dataclass
class TargetSet:
    """Hosts to scan, in blocks; `len()` counts before exclusion, iteration skips excluded hosts."""

    blocks: list[Block] = field(default_factory=list)
    excluded: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._starts = list(itertools.accumulate((b.count for b in self.blocks), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def get(self, index: int) -> Target | None:
        """The target at `index`, or None when that address is excluded."""
        i = bisect.bisect_right(self._starts, index) - 1
        block = self.blocks[i]
        address = block.address(index - self._starts[i])
        if self.excluded:
            addr = ipaddress.ip_address(address)
            if any(b.contains(addr) for b in self.excluded):
                return None
        return Target(address, block.hostname)

    def __iter__(self) -> Iterator[Target]:
        for index in range(len(self)):
            target = self.get(index)
            if target is not None:
                yield target


def system_resolver(name: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UsageError(f"invalid target {quote(name)}: cannot resolve it ({exc.strerror})") from None
    except UnicodeError:  # a label the IDNA codec refuses (too long, bad punycode)
        raise UsageError(f"invalid target {quote(name)}: not a valid hostname") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).partition("%")[0]
        if address not in seen:
            seen.append(address)
    return seen


def _zone(text: str, version: int, scope: str) -> str:
    """The zone of a scoped target, checked: an interface of this namespace, by name or index."""
    if version != 6:
        raise UsageError(f"invalid target {quote(text)}: a zone (%IF) belongs on an IPv6 address only")
    if not known_interface(scope):
        raise UsageError(
            f"invalid target {quote(text)}: no interface {quote(scope, 20)} here ('ip link' lists them)"
        )
    return scope


def _octet_number(digits: str) -> int:
    """A decimal octet value; 256 (out of range) for one too long to be any octet."""
    return int(digits) if len(digits.lstrip("0")) <= 3 else 256


def _octet_values(text: str, part: str) -> tuple[int, ...]:
    values: list[int] = []
    for item in part.split(","):
        if item in ("*", "-"):
            values.extend(range(256))
            continue
        match = _OCTET_ITEM_RE.match(item)
        if not item or not match:
            raise UsageError(
                f"invalid target {quote(text)}: bad octet {quote(part, 30)}: expected 0-255, A-B, * or a list"
            )
        lo_text, dash, hi_text = match.groups()
        lo = _octet_number(lo_text) if lo_text else 0
        hi = (_octet_number(hi_text) if hi_text else 255) if dash else lo
        if lo > 255 or hi > 255 or lo > hi:
            raise UsageError(
                f"invalid target {quote(text)}: octet range {quote(item, 30)} must be within 0-255"
            )
        values.extend(range(lo, hi + 1))
    return tuple(sorted(set(values)))


def parse_target(text: str, resolver: Resolver | None = None, first_address: bool = False) -> list[Block]:
    """One target expression -> blocks of addresses (a hostname may give several)."""
    text = text.strip()
    if not text:
        raise UsageError(f"invalid target '': {_ACCEPTED}")
    bare, percent, scope = text.partition("%")
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            raise UsageError(
                f"invalid target {quote(text)}: an IPv4-mapped address is the IPv4 host "
                f"{quote(str(addr.ipv4_mapped))}: scan that"
            )
        return [Block(int(addr), 1, addr.version, scope=_zone(text, addr.version, scope) if percent else "")]
    if percent:
        raise UsageError(
            f"invalid target {quote(text)}: a zone (%IF) is accepted on a single IPv6 address, "
            "e.g. fe80::1%eth0"
        )
    if "/" in text:
        host, _, bits = text.partition("/")
        if not (bits.isascii() and bits.isdigit()) or len(bits) > 3:
            raise UsageError(
                f"invalid target {quote(text)}: the prefix length after '/' must be a number "
                "(0-32 for IPv4, 0-128 for IPv6)"
            )
        try:
            net = ipaddress.ip_network(f"{host}/{bits}", strict=False)
        except ValueError:
            if not _HOSTNAME_RE.match(host):
                raise UsageError(f"invalid target {quote(text)}: {_ACCEPTED}") from None
            addresses = (resolver or system_resolver)(host)
            try:
                net = ipaddress.ip_network(f"{addresses[0]}/{bits}", strict=False)
            except (ValueError, IndexError):
                raise UsageError(
                    f"invalid target {quote(text)}: the prefix length must be 0-32 for IPv4, 0-128 for IPv6"
                ) from None
        if isinstance(net, ipaddress.IPv6Network) and net.overlaps(_MAPPED):
            raise UsageError(f"invalid target {quote(text)}: {_MAPPED_WORDS}")
        if net.version == 6 and net.num_addresses > MAX_CIDR_HOSTS_V6:
            raise UsageError(
                f"invalid target {quote(text)}: IPv6 networks larger than /104 are too big to scan"
            )
        return [Block(int(net.network_address), net.num_addresses, net.version)]
    if "-" in text and text.count("-") == 1:
        lo_text, _, hi_text = text.partition("-")
        try:
            lo, hi = ipaddress.ip_address(lo_text), ipaddress.ip_address(hi_text)
        except ValueError:
            lo = hi = None  # type: ignore[assignment]
        if lo is not None and hi is not None:
            if lo.version == hi.version == 6 and int(hi) >= _MAPPED_FIRST and int(lo) <= _MAPPED_LAST:
                raise UsageError(f"invalid target {quote(text)}: {_MAPPED_WORDS}")
            if lo.version != hi.version or int(hi) < int(lo):
                raise UsageError(
                    f"invalid target {quote(text)}: a range goes from a lower to a higher address"
                )
            return [Block(int(lo), int(hi) - int(lo) + 1, lo.version)]
    parts = text.split(".")
    if len(parts) == 4 and all(re.fullmatch(r"[0-9,*-]+", p) for p in parts):
        octets = tuple(_octet_values(text, p) for p in parts)
        count = 1
        for values in octets:
            count *= len(values)
        return [Block(0, count, 4, octets=octets)]
    if _HOSTNAME_RE.match(text) and not text.replace(".", "").isdigit():
        addresses = (resolver or system_resolver)(text)
        if first_address:
            addresses = addresses[:1]
        blocks = []
        for address in addresses:
            a = ipaddress.ip_address(address)
            blocks.append(Block(int(a), 1, a.version, hostname=text.rstrip(".")))
        return blocks
    raise UsageError(f"invalid target {quote(text)}: {_ACCEPTED}")


def read_target_file(path: str) -> list[str]:
    """Targets from a file (`-iL`, `--exclude-file`): whitespace-separated, `#` starts a comment."""
    lines = read_text_file(path, what="target file").splitlines()
    return [word for line in lines for word in line.partition("#")[0].split()]


def parse_targets(
    targets: Iterable[str],
    *,
    exclude: Sequence[str] = (),
    resolver: Resolver | None = None,
    first_address: bool = False,
) -> TargetSet:
    """Target expressions (and exclusions, comma-separated as nmap accepts them) -> a TargetSet."""
    blocks = [b for t in targets for b in parse_target(t, resolver, first_address)]
    excluded = [
        b for e in exclude for item in e.split(",") if item.strip() for b in parse_target(item, resolver)
    ]
    return TargetSet(blocks, excluded)
