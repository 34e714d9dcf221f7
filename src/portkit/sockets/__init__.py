"""The socket inventory: what is listening here, who owns it, and who is connected.

Reads the kernel's socket table through NETLINK_SOCK_DIAG (falling back to /proc/net),
attributes sockets to processes, systemd units and containers, and visits other network
namespaces without moving the calling thread.

Names load lazily (PEP 562): `portkit ls` imports only the modules it uses.

Import cost: `portkit ls` (a Click-free lane of portkit.cli.entry, with or without --json
and -p) is measured against `ss -tan` and `ss -tanp`, and at that scale module imports are a
visible share of the whole run. So the modules on its path (process attribution included:
_procs, _process) import neither `typing`, `dataclasses` (which brings `inspect`, `ast`,
`dis` and `tokenize`) nor `json` at load, and use `_socket` rather than `socket` (socket.py
turns its constants into enums at import); `TYPE_CHECKING = False` stands in for
typing.TYPE_CHECKING (mypy honours the name). The figures are in BENCHMARKS.md.
"""

from __future__ import annotations

from portkit._lazy import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see portkit/__init__.py)
if TYPE_CHECKING:
    from typing import Any

_EXPORTS: dict[str, str] = {
    "ALL_STATES": "portkit.sockets._model",
    "Advice": "portkit.sockets._who",
    "BACKENDS": "portkit.sockets._inventory",
    "Exposure": "portkit.sockets._overview",
    "Inventory": "portkit.sockets._inventory",
    "LISTENING": "portkit.sockets._inventory",
    "Listener": "portkit.sockets._overview",
    "Namespace": "portkit.sockets._netns",
    "all_namespaces": "portkit.sockets._netns",
    "Overview": "portkit.sockets._overview",
    "ServiceFacts": "portkit.sockets._overview",
    "PortMatch": "portkit.sockets._bytecode",
    "matches_from_spec": "portkit.sockets._bytecode",
    "PortUse": "portkit.sockets._who",
    "ProcessInfo": "portkit.sockets._process",
    "SockDiagClient": "portkit.sockets._netlink",
    "Socket": "portkit.sockets._model",
    "SocketQuery": "portkit.sockets._inventory",
    "TcpInfo": "portkit.sockets._tcpinfo",
    "TcpState": "portkit.sockets._model",
    "Transport": "portkit.model.protocols",
    "build_overview": "portkit.sockets._overview",
    "compile_filter": "portkit.sockets._bytecode",
    "diff": "portkit.sockets._watch",
    "explain_port_use": "portkit.sockets._who",
    "exposure_of": "portkit.sockets._overview",
    "kill_holders": "portkit.sockets._who",
    "list_sockets": "portkit.sockets._inventory",
    "named_namespace": "portkit.sockets._netns",
    "parse_cgroup": "portkit.sockets._procs",
    "parse_docker_proxy": "portkit.sockets._procs",
    "parse_port_proto": "portkit.sockets._who",
    "parse_user": "portkit.sockets._inventory",
    "registry_facts": "portkit.sockets._overview",
    "run_in": "portkit.sockets._netns",
    "user_name": "portkit.sockets._procs",
    "who_holds": "portkit.sockets._who",
}

if TYPE_CHECKING:
    from portkit.model.protocols import Transport
    from portkit.sockets._bytecode import PortMatch, compile_filter, matches_from_spec
    from portkit.sockets._inventory import (
        BACKENDS,
        LISTENING,
        Inventory,
        SocketQuery,
        list_sockets,
        parse_user,
    )
    from portkit.sockets._model import ALL_STATES, Socket, TcpState
    from portkit.sockets._netlink import SockDiagClient
    from portkit.sockets._netns import Namespace, all_namespaces, named_namespace, run_in
    from portkit.sockets._overview import (
        Exposure,
        Listener,
        Overview,
        ServiceFacts,
        build_overview,
        exposure_of,
        registry_facts,
    )
    from portkit.sockets._process import ProcessInfo
    from portkit.sockets._procs import parse_cgroup, parse_docker_proxy, user_name
    from portkit.sockets._tcpinfo import TcpInfo
    from portkit.sockets._watch import diff
    from portkit.sockets._who import (
        Advice,
        PortUse,
        explain_port_use,
        kill_holders,
        parse_port_proto,
        who_holds,
    )

__all__ = [
    "ALL_STATES",
    "BACKENDS",
    "LISTENING",
    "Advice",
    "Exposure",
    "Inventory",
    "Listener",
    "Namespace",
    "Overview",
    "PortMatch",
    "PortUse",
    "ProcessInfo",
    "ServiceFacts",
    "SockDiagClient",
    "Socket",
    "SocketQuery",
    "TcpInfo",
    "TcpState",
    "Transport",
    "all_namespaces",
    "build_overview",
    "compile_filter",
    "diff",
    "explain_port_use",
    "exposure_of",
    "kill_holders",
    "list_sockets",
    "matches_from_spec",
    "named_namespace",
    "parse_cgroup",
    "parse_docker_proxy",
    "parse_port_proto",
    "parse_user",
    "registry_facts",
    "run_in",
    "user_name",
    "who_holds",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'portkit.sockets' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
