"""Live events of this host and its namespaces: listeners opened and closed, owners changed,
connections accepted per listener, and port scans seen from the packets the kernel exchanges
(no firewall logging rule is added)."""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.watch._listeners import (
        AcceptEvent as AcceptEvent,
        ListenerEvent as ListenerEvent,
        ListenerRow as ListenerRow,
        ListenerTracker as ListenerTracker,
        Owner as Owner,
    )
    from portkit.watch._packets import (
        parse_packet as parse_packet,
    )
    from portkit.watch._run import (
        run_watch as run_watch,
        WatchOptions as WatchOptions,
    )
    from portkit.watch._scans import (
        classify_probe as classify_probe,
        Detector as Detector,
        ProbeKind as ProbeKind,
        ScanEvent as ScanEvent,
        Seen as Seen,
        Thresholds as Thresholds,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
