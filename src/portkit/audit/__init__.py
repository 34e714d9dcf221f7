"""What is exposed and whether it should be: every listener of this host and its namespaces,
what each zone (loopback, LAN, anyone) may reach by the firewall model and by real scans, against
a declared exposure policy. Findings carry stable codes (`AuditCode`) and render as a table,
JSON or SARIF 2.1.0.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.audit._core import (
        audit as audit,
        AuditCode as AuditCode,
        AuditedListener as AuditedListener,
        AuditFinding as AuditFinding,
        AuditReport as AuditReport,
        declared_for_init as declared_for_init,
        ExposureClass as ExposureClass,
        Observation as Observation,
        OpenRule as OpenRule,
        Reach as Reach,
        suggested_policy_reach as suggested_policy_reach,
        ZoneReach as ZoneReach,
    )
    from portkit.audit._gather import (
        run_audit as run_audit,
    )
    from portkit.audit._policy import (
        DeclaredService as DeclaredService,
        ExposurePolicy as ExposurePolicy,
        parse_exposure_policy as parse_exposure_policy,
        PolicyEntry as PolicyEntry,
        render_policy as render_policy,
        Zone as Zone,
    )
    from portkit.audit._sarif import (
        render_sarif as render_sarif,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
