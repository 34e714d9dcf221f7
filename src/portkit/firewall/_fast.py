"""The compiled evaluator: millions of flows per second, same verdicts as `evaluate`.

Compilation: every rule becomes a box of interval sets (`_space.rule_box`, the same
semantics the linter uses). For each dimension the boundaries of all rules cut the
domain into elementary intervals, and each interval gets a bitset of the rules it
satisfies. A flow then finds its interval per dimension (`searchsorted`) and ANDs the
bitsets: the result is the set of rules whose matches all hold.

Control flow (jump, goto, return, policies, several base chains per hook, NAT before
routing) is interpreted over whole arrays of flows: each step finds, for every undecided
flow, the first matching rule at or after its position in its current chain (a masked
first-set-bit), then applies that rule's action to all flows that stopped there.
numpy is imported lazily; only this module needs it.

Rules the box model cannot hold exactly (unmodelled matches, concatenations, `ct status`,
`th` ports: see `_model.NON_BOX_FIELDS`) never match here. Instead each gets a *hull*:
the box of its modelled matches and dependencies, a superset of what it can match. A flow
that falls in any hull is handed to the reference evaluator (`evaluate`), which decides
it exactly or says it is uncertain; every other flow cannot meet such a rule, so the
compiled answer is exact. Rule sets without such rules pay nothing for this.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.firewall._eval import MAX_JUMP_DEPTH, PATHS, Decision, Direction, evaluate
from portkit.firewall._model import (
    NON_BOX_FIELDS,
    Chain,
    ChainType,
    CtState,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    Reject,
    Ruleset,
    Table,
)
from portkit.firewall._packet import Packet
from portkit.firewall._space import (
    DADDR,
    DIMS,
    ICODE,
    IIF,
    ITYPE,
    OIF,
    SADDR,
    Space,
    interface_names,
    rule_box,
)
from portkit.model.protocols import IPV6

_STATES = [s.value for s in CtState]
VERDICTS = ("accept", "drop", "reject")
_ACT = {a: i for i, a in enumerate(FilterAction)}


@dataclass
class FlowArrays:
    """Flows as columns. Addresses are (hi, lo) 64-bit halves (hi is 0 for IPv4)."""

    version: Any  # int8: 4 or 6
    l4: Any  # int16
    src_hi: Any
    src_lo: Any  # uint64
    dst_hi: Any
    dst_lo: Any
    sport: Any  # int32, -1 when the protocol has no ports
    dport: Any
    iif: Any  # object array of names ("" for none)
    oif: Any
    state: Any  # int8 index into CtState
    itype: Any  # int16, -1 when not ICMP
    icode: Any

    def __len__(self) -> int:
        return len(self.l4)

    @classmethod
    def from_packets(cls, packets: Sequence[Packet]) -> FlowArrays:
        import numpy as np

        def halves(a: Any) -> tuple[int, int]:
            v = int(a)
            return v >> 64, v & 0xFFFFFFFFFFFFFFFF

        src = [halves(p.src) for p in packets]
        dst = [halves(p.dst) for p in packets]
        return cls(
            np.array([p.family for p in packets], dtype=np.int8),
            np.array([p.l4proto for p in packets], dtype=np.int16),
            np.array([s[0] for s in src], dtype=np.uint64),
            np.array([s[1] for s in src], dtype=np.uint64),
            np.array([d[0] for d in dst], dtype=np.uint64),
            np.array([d[1] for d in dst], dtype=np.uint64),
            np.array(
                [p.sport if p.has_ports and p.sport is not None else -1 for p in packets], dtype=np.int32
            ),
            np.array(
                [p.dport if p.has_ports and p.dport is not None else -1 for p in packets], dtype=np.int32
            ),
            np.array([p.iif for p in packets], dtype=object),
            np.array([p.oif for p in packets], dtype=object),
            np.array([_STATES.index(p.state.value) for p in packets], dtype=np.int8),
            np.array(
                [p.icmp_type if p.is_icmp and p.icmp_type is not None else -1 for p in packets],
                dtype=np.int16,
            ),
            np.array(
                [p.icmp_code if p.is_icmp and p.icmp_code is not None else -1 for p in packets],
                dtype=np.int16,
            ),
        )

    def take(self, idx: Any) -> FlowArrays:
        return FlowArrays(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def packet(self, i: int) -> Packet:
        """Row i as a Packet (for the reference evaluator)."""
        make = ipaddress.IPv4Address if int(self.version[i]) == 4 else ipaddress.IPv6Address
        sport, dport, itype, icode = (
            int(self.sport[i]),
            int(self.dport[i]),
            int(self.itype[i]),
            int(self.icode[i]),
        )
        return Packet(
            int(self.l4[i]),
            make((int(self.src_hi[i]) << 64) | int(self.src_lo[i])),
            make((int(self.dst_hi[i]) << 64) | int(self.dst_lo[i])),
            sport if sport >= 0 else None,
            dport if dport >= 0 else None,
            iif=str(self.iif[i]),
            oif=str(self.oif[i]),
            state=CtState(_STATES[int(self.state[i])]),
            icmp_type=itype if itype >= 0 else None,
            icmp_code=icode if icode >= 0 else None,
        )


@dataclass
class FastResult:
    """Per flow: verdict index into VERDICTS, the deciding rule (-1: a policy, or routing),
    the answer, and whether the verdict is certain. Flows the reference evaluator decided
    (see the module docstring) have their Decision in `decisions`, by row; for an
    uncertain one the verdict is its first branch's."""

    verdict: Any
    rule: Any
    reject_with: list[str | None]
    rules: list[tuple[Table, Chain, int, FilterRule]]
    certain: Any = None  # bool per flow
    decisions: dict[int, Decision] = field(default_factory=dict)

    def outcome(self, i: int) -> str:
        v = VERDICTS[int(self.verdict[i])]
        return f"reject:{self.reject_with[i]}" if v == "reject" else v


class _Compiled:
    """Bitset tables for one IP version."""

    def __init__(
        self,
        ruleset: Ruleset,
        version: int,
        rules: list[tuple[Table, Chain, int, FilterRule]],
        ifnames: tuple[str, ...],
        hull: bool = False,
    ) -> None:
        import numpy as np

        self.version = version
        self.space = Space(version, ifnames)
        self.ifnames = ifnames
        n = len(rules)
        self.words = max(1, (n + 63) // 64)
        boxes: list[tuple[tuple[tuple[int, int], ...], ...] | None] = []
        for t, _c, _i, r in rules:
            exact = not inexact(r)
            if not t.family.covers(version) or exact is hull:
                boxes.append(None)  # exact rules in the hull tables, inexact ones in the main
            else:
                boxes.append(rule_box(hull_rule(r) if hull else r, self.space))
        self.dims: list[tuple[int, Any, Any, bool]] = []  # (dim, starts, table, bigint)
        full = self.space.full()
        for d in range(len(DIMS)):
            if all(b is None or b[d] == full[d] for b in boxes):
                continue
            cuts = {full[d][0][0]}
            for b in boxes:
                if b is None:
                    continue
                for lo, hi in b[d]:
                    cuts.add(lo)
                    cuts.add(hi + 1)
            dom_hi = full[d][0][1]
            starts = sorted(c for c in cuts if c <= dom_hi)
            table = np.zeros((len(starts), self.words), dtype=np.uint64)
            for ri, b in enumerate(boxes):
                if b is None:
                    continue
                w, bit = divmod(ri, 64)
                for lo, hi in b[d]:
                    ka = bisect.bisect_right(starts, lo) - 1
                    kb = bisect.bisect_right(starts, hi) - 1
                    table[ka : kb + 1, w] |= np.uint64(1 << bit)
            big = d in (SADDR, DADDR) and version == IPV6
            self.dims.append((d, starts if big else np.array(starts, dtype=np.int64), table, big))
        self._luts: dict[int, Any] = {}
        self._lut_base: dict[int, int] = {}
        for d, starts, _table, big in self.dims:
            lo_dom, hi_dom = full[d][0]
            if not big and hi_dom - lo_dom <= 70000:
                values = np.arange(lo_dom, hi_dom + 1, dtype=np.int64)
                self._luts[d] = np.searchsorted(starts, values, side="right") - 1
                self._lut_base[d] = lo_dom
        alive = np.zeros(self.words, dtype=np.uint64)
        for ri, b in enumerate(boxes):
            if b is not None:
                alive[ri // 64] |= np.uint64(1 << (ri % 64))
        self.alive = alive

    def _iface_id(self, name: str) -> int:
        """The index of an interface name: itself, the longest wildcard it matches, or 'other'."""
        for i, n in enumerate(self.ifnames):
            if "\x00" not in n and n == name:
                return i
        wild = sorted(
            ((n.split("\x00")[0], i) for i, n in enumerate(self.ifnames) if n.endswith("\x00wild")),
            key=lambda x: -len(x[0]),
        )
        return next((i for prefix, i in wild if name.startswith(prefix)), len(self.ifnames) - 1)

    def iface_index(self, names: Any) -> Any:
        import numpy as np

        if len(names) and (names == names[0]).all():  # the common case: one interface
            return np.full(len(names), self._iface_id(str(names[0])), dtype=np.int64)
        uniq, inv = np.unique(names.astype(str), return_inverse=True)
        return np.array([self._iface_id(n) for n in uniq.tolist()], dtype=np.int64)[inv.reshape(-1)]

    def match_bits(self, f: FlowArrays) -> Any:
        """(n, words) bitsets of the rules each flow satisfies."""
        import numpy as np

        n = len(f)
        out = None
        for d, starts, table, big in self.dims:
            if d in (IIF, OIF):
                k = self._luts[d][self.iface_index(f.iif if d == IIF else f.oif)]
            elif big:
                hi = f.src_hi if d == SADDR else f.dst_hi
                lo = f.src_lo if d == SADDR else f.dst_lo
                pairs = np.stack([hi, lo], axis=1)
                uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
                ks = [bisect.bisect_right(starts, (int(a) << 64) | int(b)) - 1 for a, b in uniq.tolist()]
                k = np.array(ks, dtype=np.int64)[inv.reshape(-1)]
            elif d in self._luts:
                # Small domains (protocol, ports, state, ICMP): a lookup table beats a search.
                k = self._luts[d][_column(f, d) - self._lut_base[d]]
            else:
                k = np.searchsorted(starts, _column(f, d), side="right") - 1
            if out is None:
                out = table[k] & self.alive
            else:
                out &= table[k]
        if out is None:
            out = np.broadcast_to(self.alive, (n, self.words)).copy()
        return out


def inexact(rule: FilterRule) -> bool:
    """Whether the box model cannot hold the rule's matches exactly, its NAT target is
    unknown (a map, a range), its verdict is not the kernel's (queue), or it takes the packet
    out of conntrack (notrack changes what later `ct state` matches see)."""
    return (
        any(_inexact_match(m) for m in rule.matches)
        or bool(rule.nat and rule.nat.unknown)
        or rule.action is FilterAction.QUEUE  # the verdict is a userspace program's
        or rule.untracks
    )


def _inexact_match(m: Match) -> bool:
    return m.field in NON_BOX_FIELDS or m.dynamic or (m.field in (Field.SPORT, Field.DPORT) and not m.protos)


def hull_rule(rule: FilterRule) -> FilterRule:
    """The rule with its inexact matches replaced by their dependencies: it matches at least
    every packet the rule can match."""
    kept: list[Match] = []
    for m in rule.matches:
        if not _inexact_match(m):
            kept.append(m)
            continue
        for dep in (m, *m.parts):
            if dep.protos:
                kept.append(Match(Field.L4PROTO, tuple((p, p) for p in sorted(set(dep.protos)))))
            if dep.family:
                kept.append(Match(Field.NFPROTO, ((dep.family, dep.family),)))
    return replace(rule, matches=tuple(kept))


def _column(f: FlowArrays, d: int) -> Any:
    import numpy as np

    if d == 0:
        return f.l4.astype(np.int64)
    if d == SADDR:
        return f.src_lo.astype(np.int64)
    if d == DADDR:
        return f.dst_lo.astype(np.int64)
    if d == 3:
        return f.sport.astype(np.int64)
    if d == 4:
        return f.dport.astype(np.int64)
    if d == 7:
        return f.state.astype(np.int64)
    if d == ITYPE:
        return f.itype.astype(np.int64)
    if d == ICODE:
        return f.icode.astype(np.int64)
    raise AssertionError(d)


def _bound_masks(n_rules: int, words: int) -> tuple[Any, Any]:
    """GE[p]: the bits of rules >= p; LT[p]: the bits of rules < p (p = 0..n_rules)."""
    import numpy as np

    positions = np.arange(n_rules + 1, dtype=np.int64)[:, None]
    bit_index = np.arange(words, dtype=np.int64)[None, :] * 64
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    below = np.clip(positions - bit_index, 0, 64)  # how many low bits of each word lie below p
    lt = np.where(below >= 64, ones, (np.uint64(1) << below.astype(np.uint64)) - np.uint64(1))
    return ~lt, lt


def _first_set(bits: Any, lo: Any, hi: Any, ge_mask: Any, lt_mask: Any) -> Any:
    """Per row, the index of the first set bit in [lo, hi), or -1."""
    import numpy as np

    m = bits & ge_mask[lo] & lt_mask[hi]
    nz = m != 0
    has = nz.any(axis=1)
    fw = nz.argmax(axis=1)
    val = m[np.arange(len(m)), fw]
    lsb = val & (~val + np.uint64(1))
    _, exp = np.frexp(lsb.astype(np.float64))
    return np.where(has, fw * 64 + exp.astype(np.int64) - 1, -1)


class FastEvaluator:
    """Compile once, evaluate many flows: `FastEvaluator(ruleset).run(FlowArrays)`."""

    CHUNK = 16384  # flows per pass: keeps the (flows x rule words) bitsets in cache

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.rules: list[tuple[Table, Chain, int, FilterRule]] = []
        self.chain_range: dict[tuple[int, str], tuple[int, int]] = {}
        self.chain_ids: dict[tuple[int, str], int] = {}
        for ti, t in enumerate(ruleset.tables):
            for c in t.chains:
                start = len(self.rules)
                self.rules.extend((t, c, i, r) for i, r in enumerate(c.rules))
                self.chain_ids[(ti, c.name)] = len(self.chain_ids)
                self.chain_range[(ti, c.name)] = (start, len(self.rules))
        import numpy as np

        n_chains = len(self.chain_ids)
        self.c_start = np.zeros(n_chains, dtype=np.int64)
        self.c_end = np.zeros(n_chains, dtype=np.int64)
        for key, cid in self.chain_ids.items():
            self.c_start[cid], self.c_end[cid] = self.chain_range[key]
        table_index = {id(t): ti for ti, t in enumerate(ruleset.tables)}
        self.r_act = np.array([_ACT[r.action] for _t, _c, _i, r in self.rules] or [0], dtype=np.int64)
        self.r_target = np.array(
            [self.chain_ids.get((table_index[id(t)], r.target), -1) for t, _c, _i, r in self.rules] or [0],
            dtype=np.int64,
        )
        ifnames = interface_names([r for *_, r in self.rules])
        self._compiled = {v: _Compiled(ruleset, v, self.rules, ifnames) for v in (4, 6)}
        self._hulls: dict[int, _Compiled] = {}
        if any(inexact(r) for *_, r in self.rules):
            self._hulls = {v: _Compiled(ruleset, v, self.rules, ifnames, hull=True) for v in (4, 6)}
        self._rule_at = {(str(t), c.name, i + 1): k for k, (t, c, i, _r) in enumerate(self.rules)}
        self._ge, self._lt = _bound_masks(len(self.rules), self._compiled[4].words)
        self._table_index = table_index

    def run(self, flows: FlowArrays, *, direction: Direction = Direction.INPUT) -> FastResult:
        """Verdicts for all flows on a fixed path (input by default)."""
        import numpy as np

        n = len(flows)
        if n > self.CHUNK:
            # Chunks keep the (flows x rule-words) bitsets in cache-sized pieces.
            parts = [
                self.run(flows.take(slice(a, min(n, a + self.CHUNK))), direction=direction)
                for a in range(0, n, self.CHUNK)
            ]
            return FastResult(
                np.concatenate([p.verdict for p in parts]),
                np.concatenate([p.rule for p in parts]),
                [x for p in parts for x in p.reject_with],
                self.rules,
                np.concatenate([p.certain for p in parts]),
                {k * self.CHUNK + i: d for k, p in enumerate(parts) for i, d in p.decisions.items()},
            )
        verdict = np.zeros(n, dtype=np.int8)
        rule = np.full(n, -1, dtype=np.int64)
        decided = np.zeros(n, dtype=bool)
        suspect = np.zeros(n, dtype=bool)
        for v in (4, 6):
            same = flows.version == v
            if not same.any():
                continue
            if same.all():  # one address family: work on views of the columns
                idx = np.arange(n)
                sub = flows.take(slice(0, n))
            else:
                idx = np.nonzero(same)[0]
                sub = flows.take(idx)
            comp = self._compiled[v]
            hull = self._hulls.get(v)

            def watch(rows: Any, now: FlowArrays, hull: _Compiled | None = hull, idx: Any = idx) -> None:
                """Flag flows that may meet an inexact rule: the reference evaluator decides those."""
                if hull is not None and len(rows):
                    suspect[idx[rows]] |= (hull.match_bits(now) != 0).any(axis=1)

            watch(np.arange(len(idx)), sub)
            sub_decided = np.zeros(len(idx), dtype=bool)
            # The connection's two NAT bindings: destination (prerouting/output), source.
            dst_bound = np.zeros(len(idx), dtype=bool)
            src_bound = np.zeros(len(idx), dtype=bool)
            path = PATHS[direction]
            for h, hook in enumerate(path):
                nat_done = src_bound if hook in (Hook.POSTROUTING, Hook.INPUT) else dst_bound
                chains = self.ruleset.base_chains(hook, v)
                if not chains:
                    continue
                bits = comp.match_bits(sub)
                later_hooks = any(self.ruleset.base_chains(k, v) for k in path[h + 1 :])
                for ci, (t, c) in enumerate(chains):
                    cid = self.chain_ids[(self._table_index[id(t)], c.name)]
                    if c.type is ChainType.NAT:
                        eligible = ~sub_decided & ~nat_done & (sub.state <= 2)
                        if not eligible.any():
                            continue
                        probe = sub.take(np.nonzero(eligible)[0])
                        probe.state = np.zeros(len(probe), dtype=np.int8)
                        sel = np.nonzero(eligible)[0]
                        watch(sel, probe)
                        r_act, r_rule = self._walk(comp.match_bits(probe), cid, c.policy)
                    else:
                        sel = np.nonzero(~sub_decided)[0]
                        if len(sel) == 0:
                            break
                        r_act, r_rule = self._walk(bits[sel], cid, c.policy)
                    drop = (r_act == _ACT[FilterAction.DROP]) | (r_act == _ACT[FilterAction.QUEUE])
                    rej = r_act == _ACT[FilterAction.REJECT]
                    for mask, code in ((drop, 1), (rej, 2)):
                        hit = sel[mask]
                        sub_decided[hit] = True
                        verdict[idx[hit]] = code
                        rule[idx[hit]] = r_rule[mask]
                    natted = (r_act == _ACT[FilterAction.DNAT]) | (r_act == _ACT[FilterAction.REDIRECT])
                    if natted.any():
                        self._dnat(sub, sel[natted], r_rule[natted])
                        dst_bound[sel[natted]] = True
                        bits = comp.match_bits(sub)
                        watch(sel[natted], sub.take(sel[natted]))
                    snat = (r_act == _ACT[FilterAction.SNAT]) | (r_act == _ACT[FilterAction.MASQUERADE])
                    src_bound[sel[snat]] = True
                    if snat.any() and (later_hooks or ci + 1 < len(chains)):
                        # Chains after a source NAT see the rewritten source, which this
                        # path does not compute: the reference evaluator decides those flows.
                        suspect[idx[sel[snat]]] = True
                    acc = r_act == _ACT[FilterAction.ACCEPT]
                    rule[idx[sel[acc]]] = r_rule[acc]
            decided[idx] = sub_decided
        answers: list[str | None] = [None] * n
        for i in np.nonzero(verdict == 2)[0].tolist():
            r = self.rules[int(rule[i])][3]
            answers[i] = (r.reject or Reject()).answer(int(flows.version[i]))
        certain = np.ones(n, dtype=bool)
        decisions: dict[int, Decision] = {}
        for i in np.nonzero(suspect)[0].tolist():
            d = evaluate(self.ruleset, flows.packet(i), direction=direction, trace_misses=False)
            decisions[i] = d
            verdict[i] = VERDICTS.index(d.verdict.value)
            step = d.decided_by
            rule[i] = (
                self._rule_at.get((step.table, step.chain, step.position), -1)
                if step is not None and step.position
                else -1
            )
            answers[i] = d.reject_with
            certain[i] = d.certain
        return FastResult(verdict, rule, answers, self.rules, certain, decisions)

    def _dnat(self, sub: FlowArrays, rows: Any, rules: Any) -> None:
        import numpy as np

        # The columns may be views of the caller's arrays: rewrite copies, never the input.
        sub.dst_hi, sub.dst_lo, sub.dport = sub.dst_hi.copy(), sub.dst_lo.copy(), sub.dport.copy()
        for row, ri in zip(rows.tolist(), rules.tolist(), strict=True):
            r = self.rules[ri][3]
            nat = r.nat
            if nat is None:
                continue
            if nat.address and r.action is FilterAction.DNAT:
                try:
                    a = ipaddress.ip_address(nat.address)
                except ValueError:
                    a = None
                if a is not None and a.version == int(sub.version[row]):
                    sub.dst_hi[row] = np.uint64(int(a) >> 64)
                    sub.dst_lo[row] = np.uint64(int(a) & 0xFFFFFFFFFFFFFFFF)
            if nat.port is not None and sub.dport[row] >= 0:
                sub.dport[row] = nat.port

    def _walk(self, bits: Any, base: int, policy: FilterAction) -> tuple[Any, Any]:
        """Run one base chain for every row: (action code, deciding rule or -1)."""
        import numpy as np

        n = bits.shape[0]
        out_act = np.full(n, _ACT[policy], dtype=np.int64)
        out_rule = np.full(n, -1, dtype=np.int64)
        rows = np.arange(n)
        cur = np.full(n, base, dtype=np.int64)
        pos = np.full(n, self.c_start[base], dtype=np.int64)
        stack_c = np.zeros((n, MAX_JUMP_DEPTH + 1), dtype=np.int64)
        stack_p = np.zeros((n, MAX_JUMP_DEPTH + 1), dtype=np.int64)
        sp = np.zeros(n, dtype=np.int64)
        jump, goto, ret, cont = (
            _ACT[FilterAction.JUMP],
            _ACT[FilterAction.GOTO],
            _ACT[FilterAction.RETURN],
            _ACT[FilterAction.CONTINUE],
        )
        done = np.zeros(n, dtype=bool)
        steps = 0
        while len(rows):
            steps += 1
            if steps > 100_000:
                raise RuntimeError("compiled evaluation did not terminate")
            hit = _first_set(bits[rows], pos[rows], self.c_end[cur[rows]], self._ge, self._lt)
            ended = hit < 0
            # End of a chain: back to the caller, or the base chain's policy.
            er = rows[ended]
            self._pop_or_finish(er, sp, cur, pos, stack_c, stack_p, out_act, out_rule, done, policy)
            lr = rows[~ended]
            lh = hit[~ended]
            act = self.r_act[lh]
            is_cont = act == cont
            pos[lr[is_cont]] = lh[is_cont] + 1
            is_jump = act == jump
            jr = lr[is_jump]
            stack_c[jr, sp[jr]] = cur[jr]
            stack_p[jr, sp[jr]] = lh[is_jump] + 1
            sp[jr] += 1
            tgt = self.r_target[lh[is_jump]]
            cur[jr] = tgt
            pos[jr] = self.c_start[tgt]
            is_goto = act == goto
            gr = lr[is_goto]
            tgt = self.r_target[lh[is_goto]]
            cur[gr] = tgt
            pos[gr] = self.c_start[tgt]
            is_ret = act == ret
            self._pop_or_finish(lr[is_ret], sp, cur, pos, stack_c, stack_p, out_act, out_rule, done, policy)
            term = ~(is_cont | is_jump | is_goto | is_ret)
            tr = lr[term]
            out_act[tr] = act[term]
            out_rule[tr] = lh[term]
            done[tr] = True
            rows = rows[~done[rows]]
        return out_act, out_rule

    @staticmethod
    def _pop_or_finish(
        rows: Any,
        sp: Any,
        cur: Any,
        pos: Any,
        stack_c: Any,
        stack_p: Any,
        out_act: Any,
        out_rule: Any,
        done: Any,
        policy: FilterAction,
    ) -> None:
        can_pop = sp[rows] > 0
        pr = rows[can_pop]
        sp[pr] -= 1
        cur[pr] = stack_c[pr, sp[pr]]
        pos[pr] = stack_p[pr, sp[pr]]
        fin = rows[~can_pop]
        out_act[fin] = _ACT[policy]
        out_rule[fin] = -1
        done[fin] = True
