"""portkit: everything about network ports, as a Python library and a command line.

The public API is what this module exports; everything else is internal. Names load
lazily (PEP 562), so `import portkit` stays cheap and a command pays only for what it uses.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

# typing.TYPE_CHECKING without importing typing, which would cost every command (and
# `portkit ls --json`, measured against `ss`) several milliseconds; mypy honours the name.
TYPE_CHECKING = False

__version__ = "0.1.0"

# The public API, declared once: mypy reads this block, and `lazy_exports_from_source` reads it
# at run time (on the first attribute asked for) to know which module defines each name. Each
# name is written `x as x`, which is how a package re-exports a name under mypy --strict.
if TYPE_CHECKING:
    from portkit.audit import (
        AuditReport as AuditReport,
        parse_exposure_policy as parse_exposure_policy,
        render_sarif as render_sarif,
        run_audit as run_audit,
    )
    from portkit.diagnose import (
        diagnose_bind as diagnose_bind,
        Diagnosis as Diagnosis,
        diagnose_reach as diagnose_reach,
    )
    from portkit.errors import (
        PermissionNeeded as PermissionNeeded,
        PortkitError as PortkitError,
        UsageError as UsageError,
    )
    from portkit.explain import (
        explain_port as explain_port,
        PortExplanation as PortExplanation,
    )
    from portkit.firewall import (
        apply_ruleset as apply_ruleset,
        Chain as Chain,
        confirm_apply as confirm_apply,
        Decision as Decision,
        Direction as Direction,
        evaluate as evaluate,
        export_ruleset as export_ruleset,
        FastEvaluator as FastEvaluator,
        Field as Field,
        FilterAction as FilterAction,
        FilterRule as FilterRule,
        Finding as Finding,
        import_iptables_save as import_iptables_save,
        import_nft_json as import_nft_json,
        import_ufw as import_ufw,
        lint_ruleset as lint_ruleset,
        load_file as load_file,
        Match as Match,
        Packet as Packet,
        parse_policy as parse_policy,
        read_live as read_live,
        Reject as Reject,
        RejectType as RejectType,
        render_firewalld as render_firewalld,
        render_iptables as render_iptables,
        render_nft as render_nft,
        render_ufw as render_ufw,
        rollback_apply as rollback_apply,
        Ruleset as Ruleset,
        ScannerView as ScannerView,
        Severity as Severity,
        Table as Table,
        Verdict as Verdict,
    )
    from portkit.forward import (
        forward_rule as forward_rule,
        forward_stats as forward_stats,
        Forwarder as Forwarder,
        ForwardRule as ForwardRule,
        load_forward_config as load_forward_config,
        serve_forward as serve_forward,
    )
    from portkit.freeport import (
        find_free_ports as find_free_ports,
    )
    from portkit.kernel import (
        PortSettings as PortSettings,
        read_port_settings as read_port_settings,
    )
    from portkit.ledger import (
        Ledger as Ledger,
        port_history as port_history,
        PortHistory as PortHistory,
    )
    from portkit.model import (
        classify_port as classify_port,
        DYNAMIC as DYNAMIC,
        Endpoint as Endpoint,
        Flow as Flow,
        parse_address as parse_address,
        PortClass as PortClass,
        PortRange as PortRange,
        PortSpec as PortSpec,
        PortState as PortState,
        Protocol as Protocol,
        Reason as Reason,
        REGISTERED as REGISTERED,
        Transport as Transport,
        validate_port as validate_port,
        WELL_KNOWN as WELL_KNOWN,
    )
    from portkit.model.services import (
        HttpInfo as HttpInfo,
        ServiceRecord as ServiceRecord,
        TlsInfo as TlsInfo,
    )
    from portkit.nat import (
        check_forward as check_forward,
        list_forwards as list_forwards,
        map_port as map_port,
        Mapping as Mapping,
        PortForward as PortForward,
        unmap_port as unmap_port,
    )
    from portkit.registry import (
        default_registry as default_registry,
        download_iana as download_iana,
        import_iana as import_iana,
        ImportReport as ImportReport,
        parse_port_spec as parse_port_spec,
        Registry as Registry,
        Service as Service,
        Source as Source,
    )
    from portkit.scan import (
        HostResult as HostResult,
        PortResult as PortResult,
        run_scan as run_scan,
        ScanOptions as ScanOptions,
        ScanResult as ScanResult,
        ScanType as ScanType,
    )
    from portkit.services import (
        detect_services as detect_services,
    )
    from portkit.sockets import (
        Advice as Advice,
        build_overview as build_overview,
        Exposure as Exposure,
        Inventory as Inventory,
        list_sockets as list_sockets,
        Listener as Listener,
        matches_from_spec as matches_from_spec,
        Namespace as Namespace,
        Overview as Overview,
        PortMatch as PortMatch,
        PortUse as PortUse,
        ProcessInfo as ProcessInfo,
        SockDiagClient as SockDiagClient,
        Socket as Socket,
        SocketQuery as SocketQuery,
        TcpInfo as TcpInfo,
        TcpState as TcpState,
        who_holds as who_holds,
    )
    from portkit.watch import (
        run_watch as run_watch,
        WatchOptions as WatchOptions,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
