"""The audit as SARIF 2.1.0 (OASIS Static Analysis Results Interchange Format), which CI systems
and code-scanning pages read.

One rule per audit code (`AuditCode`), one result per finding. A finding is about a port, not a
line of source, so its location is logical (`22/tcp`, kind "module" in SARIF's vocabulary for a
named component) and, where a policy file was read, physical too: the policy, the artefact the
user edits to accept or refuse it (code-scanning pages need a file to show a result). The
severity also goes into `properties.security-severity` (a number as text, GitHub's convention:
9.0 and above critical, 7.0 high, 4.0 medium, below low).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from portkit.audit._core import CODE_TABLE, AuditCode, AuditFinding, AuditReport
from portkit.firewall import Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"

_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def _rule(code: AuditCode) -> dict[str, Any]:
    severity, meaning = CODE_TABLE[code]
    return {
        "id": code.value,
        "name": "".join(word.capitalize() for word in code.value.split("_")),
        "shortDescription": {"text": meaning},
        "defaultConfiguration": {"level": _LEVEL[severity]},
        "properties": {"security-severity": _SECURITY_SEVERITY[severity], "tags": ["security", "network"]},
    }


def policy_uri(policy: str) -> str:
    """The policy path as SARIF's `artifactLocation.uri` wants it: a URI reference (RFC 3986),
    `file://` for an absolute path, percent-encoded (a space, `#` or `%` in a name is not a URI)."""
    path = PurePosixPath(policy)
    if path.is_absolute():
        return path.as_uri()
    return quote(policy, safe="/")


def _result(finding: AuditFinding, index: dict[AuditCode, int], policy: str | None) -> dict[str, Any]:
    location: dict[str, Any] = {
        "logicalLocations": [{"name": finding.where, "kind": "module"}],
    }
    if policy and policy != "-":  # "-": read from stdin, no file to point at
        location["physicalLocation"] = {"artifactLocation": {"uri": policy_uri(policy)}}
    text = finding.message + (f" Fix: {finding.fix}." if finding.fix else "")
    return {
        "ruleId": finding.code.value,
        "ruleIndex": index[finding.code],
        "level": _LEVEL[finding.severity],
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {
            "portkitFinding/v1": f"{finding.code.value}:{finding.netns or ''}:{finding.where}"
        },
        "properties": {
            "severity": finding.severity.value,
            "security-severity": _SECURITY_SEVERITY[finding.severity],
            "port": finding.port,
            "protocol": finding.protocol.value,
            "netns": finding.netns,
            "evidence": list(finding.evidence),
        },
    }


def render_sarif(report: AuditReport, *, version: str, command: str = "portkit audit") -> dict[str, Any]:
    codes = list(AuditCode)
    index = {code: n for n, code in enumerate(codes)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "portkit",
                        "version": version,
                        "informationUri": "https://github.com/portkit/portkit",
                        "rules": [_rule(code) for code in codes],
                    }
                },
                "invocations": [{"commandLine": command, "executionSuccessful": True}],
                "results": [_result(f, index, report.policy) for f in report.findings],
            }
        ],
    }
