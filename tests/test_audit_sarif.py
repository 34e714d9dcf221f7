"""`portkit audit --sarif` against the official SARIF 2.1.0 JSON schema (tests/data/sarif/).

The schema is draft-04; formats (uri, uri-reference, date-time) are checked too, since a
code-scanning page that cannot parse a location drops the result. The lab run of the real CLI
validates its document with `validate_sarif` as well (tests/test_audit.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from portkit.audit import AuditCode, AuditFinding, AuditReport, render_sarif
from portkit.firewall import Severity
from portkit.model import Transport

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency (.[dev])")

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif" / "sarif-schema-2.1.0.json").read_text())


def validate_sarif(document: dict[str, Any]) -> None:
    """Raise when `document` is not SARIF 2.1.0 by the official schema, formats included."""
    validator = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors]


def _report(policy: str | None) -> AuditReport:
    findings = tuple(
        AuditFinding(
            code,
            severity,
            port=1000 + n,
            protocol=Transport.UDP if n % 2 else Transport.TCP,
            netns="lab ns" if n % 3 == 0 else None,
            message=f"finding {code.value} <with> \"quotes\" & unicode \u00e9",
            evidence=("bound to 0.0.0.0", "from any: open (rule)"),
            fix="bind it to 127.0.0.1" if n % 2 else "",
        )
        for n, (code, severity) in enumerate(zip(AuditCode, list(Severity) * 2, strict=False))
    )
    return AuditReport((), findings, policy, ("wan",), ("a limit",))


@pytest.mark.parametrize(
    "policy",
    [None, "exposure.toml", "-", "/etc/portkit/exposure policy#2.toml", "rel dir/50%.toml", "caf\u00e9.toml"],
)
def test_every_code_and_policy_path_validates(policy: str | None) -> None:
    document = render_sarif(_report(policy), version="1.2.3", command="portkit audit --sarif")
    validate_sarif(document)
    results = document["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {code.value for code in AuditCode}
    uris = {
        loc["physicalLocation"]["artifactLocation"]["uri"]
        for r in results
        for loc in r["locations"]
        if "physicalLocation" in loc
    }
    if policy in (None, "-"):
        assert uris == set()  # no file to point at: stdin or no policy
    else:
        assert len(uris) == 1 and " " not in uris.pop()


def test_an_empty_report_validates() -> None:
    validate_sarif(render_sarif(AuditReport((), (), None), version="0"))


def test_the_schema_catches_what_it_should() -> None:
    """The validator is not vacuous: a document with a bad level or a bad URI fails."""
    document = render_sarif(_report("exposure.toml"), version="1")
    document["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(AssertionError):
        validate_sarif(document)
    document = render_sarif(_report("exposure.toml"), version="1")
    document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] = "a b"
    with pytest.raises(AssertionError):
        validate_sarif(document)
