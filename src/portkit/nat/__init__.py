"""Port forwarding behind NAT: make the rules, list the forwards in force, check one from outside.

`PortForward` + `render` write the complete rules for a forward (nft, iptables, firewalld,
ufw), `plan_forward` adds what this host's live state says (forward chains that would drop
it, ip_forward, routes), `apply_forward` and `remove_forward` load and delete them by their
`portkit-nat:ID` tag; `list_forwards` lists every DNAT/REDIRECT in force with whether it
works; `check_forward` probes one from a network namespace with the router's own evidence.

Asking a home router instead: `map_port` asks the gateway (by default the default route's
next hop, `default_gateway`) for a `Mapping` with the first protocol of `AUTO_ORDER` that
answers; `unmap_port` removes one; `survey` tells which protocols the gateway answers, its
external address and the mappings it lists. The protocols themselves are pure code in
`portkit.nat._pmp` and `portkit.nat._pcp`.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.nat._check import (
        CheckResult as CheckResult,
        check_forward as check_forward,
    )
    from portkit.nat._conntrack import (
        Connection as Connection,
        read_conntrack as read_conntrack,
    )
    from portkit.nat._forwards import (
        Forward as Forward,
        find_forwards as find_forwards,
        list_forwards as list_forwards,
    )
    from portkit.nat._generate import (
        FORMATS as FORMATS,
        Generated as Generated,
        parse_firewalld as parse_firewalld,
        parse_forward_id as parse_forward_id,
        PortForward as PortForward,
        render as render,
    )
    from portkit.nat._hosts import (
        check_namespace as check_namespace,
    )
    from portkit.nat._rules import (
        apply_forward as apply_forward,
        find_removal as find_removal,
        parse_address_or_name as parse_address_or_name,
        parse_port as parse_port,
        parse_target as parse_target,
        plan_forward as plan_forward,
        Removal as Removal,
        remove_forward as remove_forward,
    )
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
