"""Port forwarding behind NAT: ask the gateway for a mapping over PCP, NAT-PMP or UPnP-IGD.

`map_port` asks the gateway (by default the default route's next hop, `default_gateway`) for a
`Mapping` with the first protocol of `AUTO_ORDER` that answers; `unmap_port` removes one;
`survey` tells which protocols the gateway answers, its external address and the mappings it
lists. The protocols themselves are pure code in `portkit.nat._pmp` and `portkit.nat._pcp`.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.nat._gateway import (
        MapRequest as MapRequest,
        ProtocolSurvey as ProtocolSurvey,
        RouterSurvey as RouterSurvey,
        map_port as map_port,
        survey as survey,
        unmap_port as unmap_port,
    )
    from portkit.nat._mapping import (
        AUTO_ORDER as AUTO_ORDER,
        UNMAP_AUTO_ORDER as UNMAP_AUTO_ORDER,
        Attempt as Attempt,
        Gateway as Gateway,
        GatewayRefused as GatewayRefused,
        Mapping as Mapping,
        NoGatewayAnswer as NoGatewayAnswer,
        Via as Via,
        default_gateway as default_gateway,
        tried as tried,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
