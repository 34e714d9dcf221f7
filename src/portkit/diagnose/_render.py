"""A `Diagnosis` as JSON (docs/json.md, "diagnose") and as lines for people.

Both views are made from the same object and know nothing of reach or bind: whatever
findings, evidence and checks a diagnosis holds is what they show.
"""

from __future__ import annotations

from typing import Any

from portkit.diagnose._model import Check, Diagnosis, Evidence, Finding, Fix


def evidence_json(evidence: Evidence) -> dict[str, Any]:
    return {"looked_at": evidence.looked_at, "source": evidence.source.value, "showed": evidence.showed}


def fix_json(fix: Fix | None) -> dict[str, Any] | None:
    return None if fix is None else {"text": fix.text, "command": fix.command}


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code.value,
        "summary": finding.summary,
        "evidence": [evidence_json(e) for e in finding.evidence],
        "fix": fix_json(finding.fix),
    }


def check_json(check: Check) -> dict[str, Any]:
    return {"name": check.name, "passed": check.passed, "detail": check.detail}


def diagnosis_json(diagnosis: Diagnosis) -> dict[str, Any]:
    return {
        "kind": diagnosis.kind,
        "target": diagnosis.target,
        "code": diagnosis.code.value,
        "ok": diagnosis.ok,
        "certainty": diagnosis.certainty.value,
        "findings": [finding_json(f) for f in diagnosis.findings],
        "checks": [check_json(c) for c in diagnosis.checks],
        "limits": list(diagnosis.limits),
    }


def _mark(passed: bool | None) -> str:
    return "ok" if passed else "--" if passed is None else "!!"


def diagnosis_lines(diagnosis: Diagnosis, *, explain: bool = False) -> list[str]:
    """The verdict line, then the primary finding's evidence chain and fix, then the other
    findings, the checks (`explain`: all of them; otherwise those that could not be made),
    and what could not be looked at."""
    lines = []
    if diagnosis.ok:
        lines.append(f"{diagnosis.code}  {diagnosis.target}: {_ok_text(diagnosis)}")
    else:
        first = diagnosis.findings[0]
        lines.append(f"{first.code}  {diagnosis.target}: {first.summary}")
    lines.append(f"  certainty: {diagnosis.certainty}")
    for index, finding in enumerate(diagnosis.findings):
        if index:
            lines.append("")
            lines.append(f"also {finding.code}: {finding.summary}")
        if finding.evidence:
            lines.append("  evidence:")
            for step, evidence in enumerate(finding.evidence, 1):
                lines.append(f"    {step}. {evidence.looked_at} ({evidence.source}): {evidence.showed}")
        if finding.fix is not None:
            lines.append(f"  fix: {finding.fix.text}")
            if finding.fix.command:
                lines.append(f"    $ {finding.fix.command}")
    shown = [c for c in diagnosis.checks if explain or c.passed is None]
    if shown:
        lines.append("")
        lines.append("checks:" if explain else "not checked:")
        for check in shown:
            lines.append(f"  [{_mark(check.passed)}] {check.name}: {check.detail}")
    if diagnosis.limits:
        lines.append("")
        lines.append("limits:")
        lines.extend(f"  - {limit}" for limit in diagnosis.limits)
    return lines


def _ok_text(diagnosis: Diagnosis) -> str:
    if diagnosis.kind == "bind":
        return "it can be bound now"
    if diagnosis.certainty == "client-side":
        return "reachable (seen from the client side only)"
    return "reachable"
