"""Comparing two scans or two socket inventories: ports opened, closed, changed state, service,
owner or bind address, in ndiff's text layout or as JSON.

`read_side(path)` reads nmap/portkit XML, portkit scan JSON or `portkit ls/overview --json`;
`side_from_observation` and `inventory_side` make sides from the ledger and live sockets;
`compare(a, b)` is the pure core and `render_text` its ndiff-style view.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.diff._compare import (
        Difference as Difference,
        HostChange as HostChange,
        HostSide as HostSide,
        PortChange as PortChange,
        PortSide as PortSide,
        Side as Side,
        compare as compare,
        render_text as render_text,
    )
    from portkit.diff._readers import (
        inventory_side as inventory_side,
        read_side as read_side,
        read_side_text as read_side_text,
        side_from_observation as side_from_observation,
    )
    from portkit.diff._refs import (
        Ref as Ref,
        parse_ref as parse_ref,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
