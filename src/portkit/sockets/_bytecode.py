"""Compile port filters into INET_DIAG bytecode, so the kernel drops unwanted sockets itself.

Theory of operation (linux/net/ipv4/inet_diag.c, `inet_diag_bc_run`): the program is a list
of 4-byte ops `{code, yes, no}`; the kernel runs an op, then jumps forward `yes` bytes when the
condition holds and `no` bytes when it does not. A socket matches when execution falls off the
end exactly; jumping 4 bytes past the end rejects it. Port comparisons take a second op whose
`no` field holds the port.

Fragments are compiled in `ss`'s convention (misc/ss.c, `ssfilter_bytecode`): a fragment of
length L matches by running off its end at L and fails by jumping to L + 4. That makes the
combinators small:
- AND(a, b) = a + b, with a's fail jumps pushed past b;
- OR(a, b)  = a + JMP(to the end) + b, so a's fail jump lands on b;
- NOT(a)    = a + JMP(to fail), so a's success hits the JMP and a's failure is success.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portkit.model import PortSpec

_OP = struct.Struct("=BBH")


class Op(enum.IntEnum):
    """`enum { INET_DIAG_BC_* }` from linux/inet_diag.h."""

    NOP = 0
    JMP = 1
    S_GE = 2
    S_LE = 3
    D_GE = 4
    D_LE = 5
    AUTO = 6
    S_COND = 7
    D_COND = 8
    DEV_COND = 9
    MARK_COND = 10
    S_EQ = 11
    D_EQ = 12


# One op: (code, yes, no). A fragment is a list of them; a port comparison is two ops.
Fragment = list[tuple[int, int, int]]


def _compare(code: Op, port: int) -> Fragment:
    return [(code, 8, 12), (0, 0, port)]


def _patch_failures(fragment: Fragment, reloc: int) -> Fragment:
    """Push every "fail" jump (to len + 4) of a fragment `reloc` bytes further."""
    out: Fragment = []
    remaining = len(fragment) * 4
    index = 0
    while index < len(fragment):
        code, yes, no = fragment[index]
        if no == remaining + 4:
            no += reloc
        out.append((code, yes, no))
        # Every op's `yes` is its own size; a comparison's data op is carried along untouched.
        size = yes
        for k in range(1, size // 4):
            out.append(fragment[index + k])
        index += size // 4
        remaining -= size
    return out


def all_of(fragments: Sequence[Fragment]) -> Fragment:
    result: Fragment = []
    for fragment in fragments:
        result = _patch_failures(result, len(fragment) * 4) + fragment if result else list(fragment)
    return result


def any_of(fragments: Sequence[Fragment]) -> Fragment:
    result: Fragment = []
    for fragment in fragments:
        result = [*result, (Op.JMP, 4, len(fragment) * 4 + 4), *fragment] if result else list(fragment)
    return result


def negate(fragment: Fragment) -> Fragment:
    return [*fragment, (Op.JMP, 4, 8)]


@dataclass(frozen=True)
class PortMatch:
    """Ports on one side of a socket: `side` is 'src' (local), 'dst' (remote) or 'any' (either).

    `transport` ('tcp', 'udp', 'raw') limits the match to one kind of socket; '' is every kind.
    """

    side: str
    ranges: tuple[tuple[int, int], ...]
    transport: str = ""

    def fragment(self) -> Fragment:
        if self.side == "any":
            return any_of(
                [PortMatch("src", self.ranges).fragment(), PortMatch("dst", self.ranges).fragment()]
            )
        if not self.ranges:  # nothing can match: a comparison no port passes
            return all_of([_compare(Op.S_GE, 1), _compare(Op.S_LE, 0)])
        eq, ge, le = (Op.S_EQ, Op.S_GE, Op.S_LE) if self.side == "src" else (Op.D_EQ, Op.D_GE, Op.D_LE)
        parts: list[Fragment] = []
        for first, last in self.ranges:
            if first == last:
                parts.append(_compare(eq, first))
            else:
                parts.append(all_of([_compare(ge, first), _compare(le, last)]))
        return any_of(parts)

    def applies_to(self, transport: str) -> bool:
        return not self.transport or self.transport == transport

    def matches(self, sport: int, dport: int) -> bool:
        """The same test in Python, for rows read from /proc."""
        ports = (sport, dport) if self.side == "any" else (sport,) if self.side == "src" else (dport,)
        return any(first <= p <= last for p in ports for first, last in self.ranges)


def compile_filter(matches: Iterable[PortMatch]) -> bytes:
    """Bytecode that accepts a socket when every match holds (b'' when there is nothing to test)."""
    fragment = all_of([m.fragment() for m in matches])
    return b"".join(_OP.pack(code, yes, no) for code, yes, no in fragment)


def run_filter(bytecode: bytes, sport: int, dport: int) -> bool:
    """Run port bytecode the way the kernel does (for tests and for the /proc fallback)."""
    ops = [_OP.unpack_from(bytecode, i) for i in range(0, len(bytecode), 4)]
    pc, length = 0, len(bytecode)
    tests = {
        Op.S_EQ: lambda p: sport == p,
        Op.S_GE: lambda p: sport >= p,
        Op.S_LE: lambda p: sport <= p,
        Op.D_EQ: lambda p: dport == p,
        Op.D_GE: lambda p: dport >= p,
        Op.D_LE: lambda p: dport <= p,
    }
    while pc < length:
        code, yes, no = ops[pc // 4]
        if code == Op.NOP:
            ok = True
        elif code == Op.JMP:
            ok = False
        else:
            ok = tests[Op(code)](ops[pc // 4 + 1][2])
        pc += yes if ok else no
    return pc == length


def matches_from_spec(spec: PortSpec, side: str) -> tuple[PortMatch, ...]:
    """PortMatches for a parsed port spec (`22,80`, `1-1024`, `T:80,U:53`) on one side of a socket."""
    from portkit.model import Transport

    if not (spec.tcp or spec.udp or spec.sctp):
        return (PortMatch(side, tuple((r.first, r.last) for r in spec.any)),)
    return (
        PortMatch(side, tuple((r.first, r.last) for r in spec.ranges(Transport.TCP)), "tcp"),
        PortMatch(side, tuple((r.first, r.last) for r in spec.ranges(Transport.UDP)), "udp"),
        PortMatch(side, tuple((r.first, r.last) for r in spec.any), "raw"),
    )
