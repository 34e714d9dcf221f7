"""Differential tests: portkit's verdicts against the kernel's, on real packets in namespaces.

A generated rule set is loaded into the server namespace of a two-namespace lab; real TCP
connects and UDP datagrams from the client namespace show what the kernel did (connected,
refused, no route, silence, delivered...). portkit must predict every outcome: 100%.
The same load is a round trip: the model exported to nft and listed back by the kernel
must import as the same model.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fixtures_firewall as lab_mod
from conftest import needs_root
from portkit.firewall import Ruleset, canonical, render_nft

pytestmark = needs_root


def _check(lab: lab_mod.FirewallLab, generated: Ruleset, probes: list[lab_mod.Probe]) -> None:
    base = lab.sport_block()
    model = lab_mod.shift_sports(generated, base)
    kernel = lab.load(model)
    assert canonical(kernel) == canonical(model), (
        f"export -> nft -> import changed the model:\n{render_nft(model)[0]}\n"
        f"kernel:\n{render_nft(kernel)[0]}"
    )
    observed = lab.run(probes, base)
    predicted = [lab_mod.predict(model, p, base, lab.server_if) for p in probes]
    mismatches = [
        (str(p.packet(base, lab.server_if)), want, got)
        for p, want, got in zip(probes, predicted, observed, strict=True)
        if want != got
    ]
    assert not mismatches, (
        f"portkit != kernel for {len(mismatches)} probes: {mismatches[:5]}\n{render_nft(model)[0]}"
    )


@settings(
    max_examples=int(os.environ.get("PORTKIT_FW_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(data=st.data())
def test_generated_rulesets_agree_with_the_kernel(lab: lab_mod.FirewallLab, data: st.DataObject) -> None:
    generated = data.draw(lab_mod.rulesets(lab.server_if), label="ruleset")
    probes = data.draw(lab_mod.probe_lists(), label="probes")
    _check(lab, generated, probes)
