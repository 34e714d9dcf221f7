"""What `portkit ls` (as a table) and `portkit who` print, without Click: shared by the Click
commands (portkit.cli.sockets) and the console script's Click-free lanes (portkit.cli.entry)."""

from __future__ import annotations

from portkit.cli._text import echo, emit_json, emit_table, visible

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from portkit.sockets import Inventory, PortUse, Socket, SocketQuery

# Other users' processes: their /proc/PID/fd is unreadable without root (or CAP_SYS_PTRACE).
NO_OWNER = "(root needed)"


def process_text(inventory: Inventory, row: Socket) -> str:
    if row.processes:
        return ",".join(f"{p.name}/{p.pid}" for p in row.processes)
    if inventory.owner_unknown(row):
        return NO_OWNER
    return "-"


def bind_text(inventory: Inventory, row: Socket) -> str:
    """The local end as `ss` prints it: with the bound device, `0.0.0.0%lo:7001`, `[fe80::1]%eth0:22`."""
    device = inventory.interface_name(row)
    if not device:
        return row.local_text
    port = row.local_port or "*"
    address = f"[{row.local_address}]" if row.family == 6 else row.local_address
    return visible(f"{address}%{device}:{port}")  # a device name is any bytes its creator chose


def warn(inventory: Inventory) -> None:
    for warning in inventory.warnings:
        echo(f"portkit: warning: {warning}", err=True)


def ls_rows(
    inventory: Inventory, rows: Sequence[Socket], show_netns: bool, show_procs: bool, info: bool
) -> list[list[str]]:
    table = []
    for row in rows:
        cells = [
            row.transport.value,
            row.state.label,
            str(row.recv_q),
            str(row.send_q),
            bind_text(inventory, row),
            row.remote_text,
        ]
        if show_netns:
            cells.append(row.netns or "-")
        if show_procs:
            cells.append(process_text(inventory, row))
        if info:
            # UDP, raw and TIME-WAIT rows have no tcp_info: an empty cell keeps the columns aligned.
            cells.append("" if row.tcp_info is None else str(row.tcp_info))
        table.append(cells)
    return table


def ls_columns(show_netns: bool, show_procs: bool, info: bool) -> list[str]:
    columns = ["PROTO", "STATE", "RECV-Q", "SEND-Q", "LOCAL", "PEER"]
    if show_netns:
        columns.append("NETNS")
    if show_procs:
        columns.append("PROCESS")
    if info:
        columns.append("TCP INFO")
    return columns


def print_ls_table(inventory: Inventory, query: SocketQuery, show_netns: bool, info: bool) -> None:
    """`portkit ls` without --json and --watch: warnings, the table, and the root note."""
    warn(inventory)
    title = "" if not query.listening else "Listening sockets"
    emit_table(
        ls_columns(show_netns, query.needs_processes, info),
        ls_rows(inventory, inventory.sockets, show_netns, query.needs_processes, info),
        title=title,
        empty="no sockets match",
    )
    note = inventory.root_note()
    if note and any(inventory.owner_unknown(r) for r in inventory.sockets):
        echo(f"\nnote: {note}", err=True)


def print_port_use(
    use: PortUse, inventory: Inventory, label: str, *, as_json: bool, do_kill: bool, searched_all: bool
) -> int | None:
    """`portkit who`'s report; its exit status, or None when --kill is to go on from here."""
    warn(inventory)
    if as_json and not do_kill:
        emit_json(use.to_json())
        return 0 if use.in_use else 1
    if not use.in_use:
        where = "" if searched_all else " in this network namespace (--all-netns looks in every one)"
        echo(f"Nothing uses port {label}" + (f" ({use.service})" if use.service else "") + f"{where}.")
        return 1
    if not as_json:
        _print_holders(use, inventory, label)
    return None if do_kill else 0


def _print_holders(use: PortUse, inventory: Inventory, label: str) -> None:
    from portkit.sockets import user_name

    service = f" ({use.service})" if use.service else ""
    if use.holders:
        echo(f"Port {label}{service} is held by:")
        rows = []
        for row in use.holders:
            netns = [row.netns or "-"] if inventory.namespaces and len(inventory.namespaces) > 1 else []
            if not row.processes:
                unknown = inventory.owner_unknown(row)
                pid, owner = ("?", NO_OWNER) if unknown else ("-", "-")
                user = user_name(row.uid)
                rows.append(
                    [*netns, row.transport.value, bind_text(inventory, row), pid, owner, user, "", ""]
                )
            for p in row.processes:
                place = p.container_name or p.container[:12] or p.unit or "-"
                rows.append(
                    [
                        *netns,
                        row.transport.value,
                        bind_text(inventory, row),
                        str(p.pid),
                        p.name,
                        p.user,
                        place,
                        p.command[:80],
                    ]
                )
        columns = ["PROTO", "BIND", "PID", "PROCESS", "USER", "UNIT/CONTAINER", "COMMAND"]
        emit_table((["NETNS"] if len(inventory.namespaces) > 1 else []) + columns, rows)
        for process in use.processes:
            if process.parents:
                chain = " <- ".join(f"{name}/{pid}" for pid, name in process.parents)
                echo(visible(f"  {process.name}/{process.pid} started by {chain}"))
    else:
        echo(f"Nothing listens on {label}{service}.")
    counts = []
    if use.connections:
        counts.append(f"{use.connections} connections served")
    if use.time_wait:
        counts.append(f"{len(use.time_wait)} in TIME-WAIT")
    if use.clients:
        owners = sorted({str(p) for r in use.clients for p in r.processes})
        counts.append(f"{len(use.clients)} client sockets" + (f" ({', '.join(owners)})" if owners else ""))
    if counts:
        echo(visible("Also on this port: " + ", ".join(counts) + "."))
    if use.explanation:
        echo(visible(f"Why: {use.explanation}"))
    if use.risk and use.exposed:
        echo(f"Risk ({use.service} beyond loopback): {use.risk}")
    if use.advice:
        echo("To free it:")
        for advice in use.advice:  # names and command lines any local user may set
            echo(visible(f"  {advice}"))
    if use.root_note and any(inventory.owner_unknown(r) for r in use.holders):
        echo(f"note: {use.root_note}")
