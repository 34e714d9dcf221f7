"""Sets of integers as sorted, disjoint, closed intervals: ports, port ranges, addresses.

One representation and one merge for every capability: a port spec's ranges, the
firewall's matches (ports, address prefixes, sets: all intervals of integers), the
kernel's port settings and the scanner's `1-1024,8080` listings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Interval = tuple[int, int]  # inclusive: (22, 22) is port 22


def merge_intervals(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """The same set as sorted, disjoint intervals: those that overlap or touch become one."""
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def intersect_intervals(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> tuple[Interval, ...]:
    """Where two sets of sorted, disjoint intervals overlap."""
    if a is b:
        return a
    if len(a) == 1 and len(b) == 1:  # the common case, kept cheap: the firewall's linter calls this a lot
        (alo, ahi), (blo, bhi) = a[0], b[0]
        lo = alo if alo > blo else blo
        hi = ahi if ahi < bhi else bhi
        return ((lo, hi),) if lo <= hi else ()
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def subtract_intervals(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> tuple[Interval, ...]:
    """What of `a` is not in `b` (both sorted, disjoint intervals)."""
    out = []
    for lo, hi in a:
        cur = lo
        for blo, bhi in b:
            if bhi < cur or blo > hi:
                continue
            if blo > cur:
                out.append((cur, blo - 1))
            cur = max(cur, bhi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def runs(values: Iterable[int]) -> tuple[Interval, ...]:
    """The runs of consecutive integers in `values` (any order, repeats allowed), as intervals."""
    ordered: Sequence[int] = sorted(set(values))
    if not ordered:
        return ()
    if ordered[-1] - ordered[0] == len(ordered) - 1:
        return ((ordered[0], ordered[-1]),)
    # Where a run ends: found in C (zip, map) rather than value by value; scans list 65536 ports.
    ends = [i for i, step in enumerate(map(int.__sub__, ordered[1:], ordered), 1) if step != 1]
    starts, stops = [0, *ends], [*ends, len(ordered)]
    return tuple((ordered[start], ordered[stop - 1]) for start, stop in zip(starts, stops, strict=True))


def format_intervals(intervals: Iterable[Interval]) -> str:
    """`22,80-90` as nmap and the port-spec syntax write it."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in intervals)
