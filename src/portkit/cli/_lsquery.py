"""What `portkit ls` asks the library for, and how it prints JSON: shared by the Click command
and by the Click-free entry point (portkit.cli.entry), so both mean the same by every flag.

Deliberately free of Click: `portkit ls --all --json` on a busy host is measured against `ss`,
and importing Click costs more than reading ten thousand sockets.
"""

from __future__ import annotations

import sys

from portkit.errors import UsageError, quote
from portkit.model.protocols import SOCKET_TRANSPORTS, Transport
from portkit.sockets import ALL_STATES, Inventory, SocketQuery, TcpState, parse_user

TYPE_CHECKING = False  # no typing at run time: see portkit.sockets._model
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

    from portkit.sockets import PortMatch


def port_matches(text: str | None, side: str) -> tuple[PortMatch, ...]:
    if not text:
        return ()
    from portkit.registry import parse_port_spec
    from portkit.sockets import matches_from_spec

    return matches_from_spec(parse_port_spec(text), side)


def transports(values: Sequence[str]) -> tuple[Transport, ...]:
    found: dict[Transport, None] = {}
    for value in values:
        for part in value.split(","):
            if not part.strip():
                raise UsageError(
                    f"invalid --proto {quote(value)}: expected tcp, udp or raw (comma-separated)"
                )
            found[Transport.parse(part, SOCKET_TRANSPORTS)] = None
    return tuple(found) or (Transport.TCP, Transport.UDP)


def ls_query(
    *,
    show_all: bool = False,
    protos: tuple[str, ...] = (),
    only4: bool = False,
    only6: bool = False,
    port: str | None = None,
    sport: str | None = None,
    dport: str | None = None,
    states: tuple[str, ...] = (),
    pids: tuple[int, ...] = (),
    users: tuple[str, ...] = (),
    names: tuple[str, ...] = (),
    processes: bool | None = None,
    info: bool = False,
) -> SocketQuery:
    """The query `portkit ls` runs for its options (the defaults are the command's)."""
    if only4 and only6:
        raise UsageError("-4 and -6 exclude each other: give at most one")
    wanted_states = ALL_STATES
    if states:
        chosen: set[TcpState] = set()
        for text in states:
            for part in text.split(","):
                chosen |= TcpState.parse_filter(part)
        wanted_states = frozenset(chosen)
    listening = not show_all and not states
    with_processes = processes if processes is not None else listening
    return SocketQuery(
        transports=transports(protos),
        families=(4,) if only4 else (6,) if only6 else (4, 6),
        states=wanted_states,
        listening=listening,
        ports=port_matches(port, "any") + port_matches(sport, "src") + port_matches(dport, "dst"),
        pids=frozenset(pids),
        uids=frozenset(parse_user(u) for u in users),
        process_names=tuple(n.lower() for n in names),
        with_processes=with_processes,
        tcp_info=info,
    )


def emit_inventory_json(inventory: Inventory, out: TextIO | None = None, err: TextIO | None = None) -> None:
    """The inventory's warnings on stderr, then its JSON (docs/json.md, "sockets") on stdout."""
    err = err or sys.stderr
    for warning in inventory.warnings:
        err.write(f"portkit: warning: {warning}\n")
    err.flush()
    out = out or sys.stdout
    for chunk in inventory.json_chunks():
        out.write(chunk)
    out.flush()
