"""Firewall benchmarks: bulk evaluation, lint, and the large differential sample against the kernel.

    .venv/bin/python bench/bench_firewall.py [--flows 1000000] [--rules 1000] [--lint-rules 5000]
                                             [--examples 200] [--runs 3]

1. 1,000,000 flows against a 1,000-rule rule set with the compiled evaluator (goal <= 2 s),
   next to portkit's reference evaluator (a Python walk per flow) timed on a sample and
   scaled; a sample of flows is checked for identical verdicts.
2. Lint a 5,000-rule set (goal <= 5 s), next to `nft -c` validating the same rules.
3. The large differential sample: generated rule sets loaded into a namespace, real packets,
   portkit's prediction compared with the kernel's outcome (needs root; goal 100 %).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np

from portkit.firewall import (
    Chain,
    Direction,
    Family,
    FastEvaluator,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    Packet,
    Reject,
    RejectType,
    Ruleset,
    Table,
    evaluate,
    lint_ruleset,
    render_nft,
)
from portkit.firewall._fast import FlowArrays

CPU: dict[str, float] = {}


def _median(fn: Any, runs: int, label: str = "") -> tuple[float, Any]:
    """Median wall time of `runs` calls; the median CPU time goes to CPU[label]: on a shared
    machine the CPU time shows the work itself, the wall time includes waiting for a core."""
    times = []
    cpu = []
    out = None
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if label:
        CPU[label] = statistics.median(cpu)
    return statistics.median(times), out


def make_ruleset(n_rules: int, seed: int = 7) -> Ruleset:
    """A realistic large rule set: per-service accepts from prefixes, drops, rejects, two
    regular chains reached by jumps, established first, policy drop."""
    rng = np.random.default_rng(seed)
    rules: list[FilterRule] = [
        FilterRule((Match(Field.CT_STATE, names=("established", "related")),), FilterAction.ACCEPT),
        FilterRule((Match(Field.IIF, names=("lo",)),), FilterAction.ACCEPT),
    ]
    sub_a: list[FilterRule] = []
    sub_b: list[FilterRule] = []
    for i in range(n_rules - 2):
        proto = int(rng.choice([6, 17]))
        matches = [Match(Field.L4PROTO, ((proto, proto),))]
        lo = int(rng.integers(1, 65000))
        hi = lo if rng.random() < 0.7 else lo + int(rng.integers(1, 500))
        matches.append(Match(Field.DPORT, ((lo, min(hi, 65535)),), protos=(proto,)))
        if rng.random() < 0.6:
            plen = int(rng.integers(8, 33))
            base = int(rng.integers(0, 2**32)) & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF
            matches.append(
                Match(
                    Field.SADDR,
                    ((base, base + (1 << (32 - plen)) - 1),),
                    family=4,
                    negate=bool(rng.random() < 0.1),
                )
            )
        kind = rng.random()
        if kind < 0.55:
            rule = FilterRule(tuple(matches), FilterAction.ACCEPT, counter=True)
        elif kind < 0.75:
            rule = FilterRule(tuple(matches), FilterAction.DROP)
        elif kind < 0.85:
            rule = FilterRule(
                tuple(matches),
                FilterAction.REJECT,
                reject=Reject(RejectType.TCP_RESET, "")
                if proto == 6
                else Reject(RejectType.ICMPX, "admin-prohibited"),
            )
        elif kind < 0.92:
            rule = FilterRule(tuple(matches), FilterAction.JUMP, target="svc_a")
        else:
            rule = FilterRule(tuple(matches), FilterAction.GOTO, target="svc_b")
        if i % 10 == 3:
            verdict = FilterAction.RETURN if i % 20 == 3 else FilterAction.ACCEPT
            sub_a.append(FilterRule(tuple(matches[:2]), verdict))
        elif i % 10 == 7:
            sub_b.append(FilterRule(tuple(matches[:2]), FilterAction.DROP))
        else:
            rules.append(rule)
    table = Table(
        Family.INET,
        "bench",
        (
            Chain("input", tuple(rules), Hook.INPUT, policy=FilterAction.DROP),
            Chain("svc_a", tuple(sub_a)),
            Chain("svc_b", tuple(sub_b)),
        ),
    )
    return Ruleset((table,), "bench")


def make_flows(n: int, ruleset: Ruleset, seed: int = 11) -> FlowArrays:
    rng = np.random.default_rng(seed)
    # Half the flows aim at ports the rules mention, so every part of the rule set is exercised.
    ports = [m.ranges[0][0] for _t, _c, _i, r in ruleset.rules() for m in r.matches if m.field is Field.DPORT]
    dport = np.where(
        rng.random(n) < 0.5, rng.choice(np.array(ports, dtype=np.int32), n), rng.integers(0, 65536, n)
    ).astype(np.int32)
    zeros = np.zeros(n, dtype=np.uint64)
    states = rng.choice(np.array([0, 0, 0, 0, 1, 2, 3], dtype=np.int8), n)
    return FlowArrays(
        version=np.full(n, 4, dtype=np.int8),
        l4=rng.choice(np.array([6, 17], dtype=np.int16), n),
        src_hi=zeros,
        src_lo=rng.integers(0, 2**32, n, dtype=np.uint64),
        dst_hi=zeros.copy(),
        dst_lo=np.full(n, 0xC000020A, dtype=np.uint64),
        sport=rng.integers(1024, 65536, n).astype(np.int32),
        dport=dport,
        iif=np.full(n, "eth0", dtype=object),
        oif=np.full(n, "", dtype=object),
        state=states,
        itype=np.full(n, -1, dtype=np.int16),
        icode=np.full(n, -1, dtype=np.int16),
    )


def _packet(f: FlowArrays, i: int) -> Packet:
    import ipaddress

    from portkit.firewall import CtState

    return Packet(
        int(f.l4[i]),
        ipaddress.IPv4Address(int(f.src_lo[i])),
        ipaddress.IPv4Address(int(f.dst_lo[i])),
        int(f.sport[i]),
        int(f.dport[i]),
        iif=str(f.iif[i]),
        state=list(CtState)[int(f.state[i])],
    )


def bench_eval(n_flows: int, n_rules: int, runs: int) -> None:
    rs = make_ruleset(n_rules)
    flows = make_flows(n_flows, rs)
    t_compile, fe = _median(lambda: FastEvaluator(rs), runs, "compile")
    t_run, res = _median(lambda: fe.run(flows, direction=Direction.INPUT), runs, "run")
    sample = np.random.default_rng(3).choice(n_flows, min(n_flows, 2000), replace=False)
    packets = [_packet(flows, int(i)) for i in sample]
    t_ref, ref = _median(lambda: [evaluate(rs, p, direction=Direction.INPUT).outcome for p in packets], 1)
    agree = sum(ref[k] == res.outcome(int(i)) for k, i in enumerate(sample))
    ref_full = t_ref / len(sample) * n_flows
    total = t_compile + t_run
    counts = np.bincount(res.verdict, minlength=3)
    print(
        f"[eval] {n_flows:,} flows x {rs.rule_count:,} rules: compiled {total:.2f} s "
        f"(compile {t_compile:.2f} s + run {t_run:.2f} s; {n_flows / t_run / 1e6:.2f} M flows/s); "
        f"goal <= 2 s -> ratio {total / 2:.2f} (CPU time {CPU['compile'] + CPU['run']:.2f} s)"
    )
    print(
        f"[eval] anchor: reference evaluator {t_ref / len(sample) * 1e6:.0f} us/flow -> {ref_full:.0f} s for "
        f"{n_flows:,} flows; compiled is {ref_full / t_run:.0f}x faster; agreement on {len(sample)} sampled "
        f"flows: {agree}/{len(sample)}; verdicts accept/drop/reject = {counts.tolist()}"
    )


def bench_lint(n_rules: int, runs: int) -> None:
    rs = make_ruleset(n_rules, seed=5)
    t_lint, findings = _median(lambda: lint_ruleset(rs), runs, "lint")
    script, _ = render_nft(rs)
    t_nft = None
    if os.geteuid() == 0:
        from portkit.testing import LabNamespace

        namespace = LabNamespace("pk6bench").open()
        name = namespace.name
        try:
            t_nft, _ = _median(
                lambda: subprocess.run(
                    ["ip", "netns", "exec", name, "nft", "-c", "-f", "-"],
                    input=script,
                    text=True,
                    capture_output=True,
                    check=True,
                ),
                runs,
            )
        finally:
            namespace.close()
    kinds: dict[str, int] = {}
    for f in findings:
        kinds[f.check] = kinds.get(f.check, 0) + 1
    anchor = f"; anchor nft -c on the same rules: {t_nft:.2f} s" if t_nft is not None else ""
    print(
        f"[lint] {rs.rule_count:,} rules: {t_lint:.2f} s, {len(findings)} findings {kinds}; "
        f"goal <= 5 s -> ratio {t_lint / 5:.2f} (CPU time {CPU['lint']:.2f} s){anchor}"
    )


def bench_differential(examples: int) -> None:
    if os.geteuid() != 0:
        print("[diff] skipped: needs root (network namespaces)")
        return
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import fixtures_firewall as lab_mod
    from portkit.firewall import canonical

    stats = {"examples": 0, "probes": 0, "agree": 0, "roundtrip": 0}
    mismatches: list[str] = []
    labs = [lab_mod.FirewallLab().open()]
    t0 = time.perf_counter()
    try:

        @settings(
            max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            lab = labs[-1]
            if lab.next_sport > 59000:
                lab.close()
                labs.append(lab_mod.FirewallLab().open())
                lab = labs[-1]
            generated = data.draw(lab_mod.rulesets(lab.server_if))
            probes = data.draw(lab_mod.probe_lists())
            base = lab.sport_block()
            model = lab_mod.shift_sports(generated, base)
            kernel = lab.load(model)
            stats["examples"] += 1
            same = canonical(kernel) == canonical(model)
            stats["roundtrip"] += same
            if not same and len(mismatches) < 5:
                mismatches.append(
                    f"round trip differs:\n{render_nft(model)[0]}--- kernel:\n{render_nft(kernel)[0]}"
                )
            observed = lab.run(probes, base)
            for p, seen in zip(probes, observed, strict=True):
                want = lab_mod.predict(model, p, base, lab.server_if)
                stats["probes"] += 1
                if want == seen:
                    stats["agree"] += 1
                elif len(mismatches) < 5:
                    mismatches.append(f"{p.packet(base, lab.server_if)}: portkit {want}, kernel {seen}")

        try:
            run()
        except Exception as exc:
            mismatches.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        labs[-1].close()
    dt = time.perf_counter() - t0
    pct = 100.0 * stats["agree"] / max(1, stats["probes"])
    print(
        f"[diff] {stats['examples']} generated rule sets, {stats['probes']} real probes: "
        f"agreement {stats['agree']}/{stats['probes']} = {pct:.2f} % (goal 100 %); "
        f"round trip identical {stats['roundtrip']}/{stats['examples']}; {dt:.0f} s "
        f"({dt / max(1, stats['examples']):.2f} s per rule set)"
    )
    for m in mismatches:
        print(f"[diff] mismatch: {m}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--lint-rules", type=int, default=5000)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    bench_eval(args.flows, args.rules, args.runs)
    bench_lint(args.lint_rules, args.runs)
    bench_differential(args.examples)


if __name__ == "__main__":
    main()
