"""The packet space a rule matches, as boxes of interval sets: what the linter reasons with.

A rule's matches become one box per IP version: for each dimension (protocol, addresses,
ports, interfaces, conntrack state, ICMP type and code) a union of closed intervals.
Negations become complements, implicit dependencies (`tcp dport` needs TCP, `ip saddr`
needs IPv4, `reject with tcp reset` needs TCP) become constraints, and interface names
become indices into the finite set of names the ruleset mentions (plus "any other").
Box subtraction then answers "is this rule covered by those?" exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from portkit.firewall._model import (
    PORT_PROTOS,
    CtState,
    Field,
    FilterAction,
    FilterRule,
    Match,
    Reject,
    RejectType,
)
from portkit.model.intervals import intersect_intervals, subtract_intervals
from portkit.model.protocols import IPV4

IntervalSet = tuple[tuple[int, int], ...]
Box = tuple[IntervalSet, ...]

DIMS = ("l4proto", "saddr", "daddr", "sport", "dport", "iif", "oif", "ct state", "icmp type", "icmp code")
L4, SADDR, DADDR, SPORT, DPORT, IIF, OIF, STATE, ITYPE, ICODE = range(len(DIMS))
_STATES = [s.value for s in CtState]
_PORT_SET: IntervalSet = tuple((p, p) for p in PORT_PROTOS)


@dataclass(frozen=True)
class Space:
    """The dimensions' domains for one IP version and one ruleset's interface names."""

    version: int
    ifnames: tuple[str, ...]  # index i -> name; the last one stands for every other name

    def domain(self, dim: int) -> IntervalSet:
        return _domains(self.version, len(self.ifnames))[dim]

    def full(self) -> list[IntervalSet]:
        return list(_domains(self.version, len(self.ifnames)))

    def iface_set(self, names: tuple[str, ...]) -> IntervalSet:
        hits = []
        for i, name in enumerate(self.ifnames):
            for pattern in names:
                if pattern.endswith("*") or pattern.endswith("+"):
                    if name.startswith(pattern[:-1]):
                        hits.append((i, i))
                elif pattern == name:
                    hits.append((i, i))
        return tuple(sorted(set(hits)))


@functools.lru_cache(maxsize=64)
def _domains(version: int, n_ifnames: int) -> tuple[IntervalSet, ...]:
    top = 2 ** (32 if version == IPV4 else 128) - 1
    ifaces = ((0, n_ifnames - 1),)
    return (
        ((0, 255),),
        ((0, top),),
        ((0, top),),
        ((-1, 65535),),
        ((-1, 65535),),
        ifaces,
        ifaces,
        ((0, len(_STATES) - 1),),
        ((-1, 255),),
        ((-1, 255),),
    )


def interface_names(rules: Sequence[FilterRule]) -> tuple[str, ...]:
    """Every concrete interface name, one stand-in per wildcard, and one for 'other'."""
    names: set[str] = set()
    for r in rules:
        for m in r.matches:
            if m.field in (Field.IIF, Field.OIF):
                for n in m.names:
                    names.add(n[:-1] + "\x00wild" if n.endswith(("*", "+")) else n)
    return (*sorted(names), "\x00other")


def rule_box(rule: FilterRule, space: Space) -> Box | None:
    """The box of packets of this IP version the rule matches; None if it matches none
    (or if it has a match portkit cannot model, when `None` would be a guess: see `opaque`)."""
    box = space.full()
    v = space.version

    def narrow(dim: int, values: IntervalSet) -> None:
        box[dim] = intersect_intervals(box[dim], values)

    if rule.action is FilterAction.REJECT:
        rej = rule.reject or Reject()
        if rej.type is RejectType.TCP_RESET:
            narrow(L4, ((6, 6),))
        elif (rej.type is RejectType.ICMP and v != 4) or (rej.type is RejectType.ICMPV6 and v != 6):
            return None
    for m in rule.matches:
        if not _narrow_match(m, space, box, narrow):
            return None
    # Ports exist only for port protocols, ICMP type/code only for ICMP: keep the box free
    # of combinations no packet has, so coverage is not blocked by phantoms.
    icmp = ((1, 1),) if v == 4 else ((58, 58),)
    if not intersect_intervals(box[SPORT], ((-1, -1),)) or not intersect_intervals(box[DPORT], ((-1, -1),)):
        box[L4] = intersect_intervals(box[L4], _PORT_SET)
    any_port = ((0, 65535),)
    if not intersect_intervals(box[SPORT], any_port) or not intersect_intervals(box[DPORT], any_port):
        box[L4] = subtract_intervals(box[L4], _PORT_SET)
    if not intersect_intervals(box[ITYPE], ((-1, -1),)) or not intersect_intervals(box[ICODE], ((-1, -1),)):
        box[L4] = intersect_intervals(box[L4], icmp)
    if not intersect_intervals(box[ITYPE], ((0, 255),)) or not intersect_intervals(box[ICODE], ((0, 255),)):
        box[L4] = subtract_intervals(box[L4], icmp)
    if not intersect_intervals(box[L4], _PORT_SET):
        box[SPORT] = intersect_intervals(box[SPORT], ((-1, -1),))
        box[DPORT] = intersect_intervals(box[DPORT], ((-1, -1),))
    elif not subtract_intervals(box[L4], _PORT_SET):
        box[SPORT] = intersect_intervals(box[SPORT], ((0, 65535),))
        box[DPORT] = intersect_intervals(box[DPORT], ((0, 65535),))
    if not intersect_intervals(box[L4], icmp):
        box[ITYPE] = intersect_intervals(box[ITYPE], ((-1, -1),))
        box[ICODE] = intersect_intervals(box[ICODE], ((-1, -1),))
    elif not subtract_intervals(box[L4], icmp):
        box[ITYPE] = intersect_intervals(box[ITYPE], ((0, 255),))
        box[ICODE] = intersect_intervals(box[ICODE], ((0, 255),))
    if any(not d for d in box):
        return None
    return tuple(box)


def _narrow_match(m: Match, space: Space, box: list[IntervalSet], narrow: object) -> bool:
    v = space.version
    assert callable(narrow)
    if m.family and m.family != v:
        return False
    if m.protos:
        narrow(L4, tuple((p, p) for p in sorted(m.protos)))
    f = m.field
    if f is Field.NFPROTO:
        hit = any(lo <= v <= hi for lo, hi in m.ranges)
        return hit != m.negate
    dim = {
        Field.L4PROTO: L4,
        Field.SADDR: SADDR,
        Field.DADDR: DADDR,
        Field.SPORT: SPORT,
        Field.DPORT: DPORT,
        Field.IIF: IIF,
        Field.OIF: OIF,
        Field.CT_STATE: STATE,
        Field.ICMP_TYPE: ITYPE,
        Field.ICMP_CODE: ICODE,
    }.get(f)
    if dim is None:  # opaque: the importer's assumption (negate: assumed not to match)
        return not m.negate
    if f in (Field.IIF, Field.OIF):
        values = space.iface_set(m.names)
    elif f is Field.CT_STATE:
        if m.exact and len(m.names) > 1:
            values = ()
        else:
            values = tuple(sorted({(_STATES.index(n), _STATES.index(n)) for n in m.names if n in _STATES}))
    else:
        values = m.ranges
    if f in (Field.SPORT, Field.DPORT, Field.ICMP_TYPE, Field.ICMP_CODE):
        present = ((0, 65535),) if f in (Field.SPORT, Field.DPORT) else ((0, 255),)
        narrow(dim, present)
        if f in (Field.ICMP_TYPE, Field.ICMP_CODE):
            narrow(L4, ((1, 1),) if v == 4 else ((58, 58),))
        if m.negate:
            values = subtract_intervals(present, values)
    elif m.negate:
        values = subtract_intervals(space.domain(dim), values)
    narrow(dim, values)
    return all(box)


def box_intersect(a: Box, b: Box) -> Box | None:
    out = []
    for x, y in zip(a, b, strict=True):
        z = intersect_intervals(x, y)
        if not z:
            return None
        out.append(z)
    return tuple(out)


def box_subtract(a: Box, b: Box) -> list[Box]:
    """a minus b, as at most len(DIMS) disjoint boxes."""
    if box_intersect(a, b) is None:
        return [a]
    out: list[Box] = []
    prefix = list(a)
    for d in range(len(a)):
        rest = subtract_intervals(a[d], b[d])
        if rest:
            piece = list(prefix)
            piece[d] = rest
            out.append(tuple(piece))
        prefix[d] = intersect_intervals(a[d], b[d])
    return out


def covered_by(target: Box, others: Sequence[Box], *, budget: int = 4000) -> bool | None:
    """Whether the union of `others` contains `target`; None when it gets too costly to tell."""
    remaining = [target]
    for o in others:
        nxt: list[Box] = []
        for r in remaining:
            nxt.extend(box_subtract(r, o))
            if len(nxt) > budget:
                return None
        remaining = nxt
        if not remaining:
            return True
    return not remaining
