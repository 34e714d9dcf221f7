"""Why a port cannot be reached, or cannot be bound: the cause, the evidence and the fix.

`diagnose_reach` walks the path a connection takes (name, route, the client's firewall, the
server's NAT and firewall, its sockets) over what this host can inspect, and probes;
`diagnose_bind` asks what a bind of an address and port would meet. Both return a
`Diagnosis` whose findings carry a stable `Code`.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.diagnose._bind import (
        diagnose_bind as diagnose_bind,
    )
    from portkit.diagnose._model import (
        Certainty as Certainty,
        Check as Check,
        Code as Code,
        Diagnosis as Diagnosis,
        Evidence as Evidence,
        Finding as Finding,
        Fix as Fix,
        Source as Source,
    )
    from portkit.diagnose._reach import (
        decide as decide,
        diagnose_reach as diagnose_reach,
    )
    from portkit.diagnose._render import (
        diagnosis_json as diagnosis_json,
        diagnosis_lines as diagnosis_lines,
    )
    from portkit.diagnose._target import (
        BindTarget as BindTarget,
        parse_bind_target as parse_bind_target,
        parse_reach_target as parse_reach_target,
        ReachTarget as ReachTarget,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
