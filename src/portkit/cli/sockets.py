"""Socket inventory commands: overview (the default `portkit`), ls and who.

Thin clients of `portkit.sockets`: parse options, ask the library, render its objects.
Imports stay lean because `portkit ls` is measured against `ss`: Rich loads only on a TTY
and the registry only where service names are shown.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from portkit.cli._lsquery import emit_inventory_json, ls_query
from portkit.cli._params import FiniteNumber, WholeNumber
from portkit.cli._record import record_options, recording_ledger, this_host
from portkit.cli._sockets_text import NO_OWNER, ls_columns, ls_rows, print_ls_table, print_port_use, warn
from portkit.cli.output import emit_json, emit_table, json_option
from portkit.errors import PortkitError, UsageError
from portkit.model.protocols import Transport
from portkit.sockets import ALL_STATES, BACKENDS, Inventory, Socket, SocketQuery, TcpState, list_sockets

if TYPE_CHECKING:
    from portkit.sockets import Listener

PID_MAX = 1 << 22  # the kernel's limit for /proc/sys/kernel/pid_max


def _netns_options(fn: Any) -> Any:
    fn = click.option("--all-netns", is_flag=True, help="Every network namespace in use (needs root).")(fn)
    fn = click.option("--netns", metavar="NAME", help="A named network namespace (ip netns list).")(fn)
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
        help="auto: netlink sock_diag, falling back to /proc/net; netlink or proc: only that one.",
    )(fn)


@click.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Every socket and state, not only listeners.")
@click.option(
    "--proto",
    "protos",
    multiple=True,
    metavar="tcp|udp|raw",
    help="Transports to list (repeat or comma-separate); default tcp,udp.",
)
@click.option("-4", "only4", is_flag=True, help="IPv4 only.")
@click.option("-6", "only6", is_flag=True, help="IPv6 only.")
@click.option("--port", metavar="SPEC", help="Local or remote port in SPEC (22,80,8000-8100,T:53).")
@click.option("--sport", metavar="SPEC", help="Local (source) port in SPEC.")
@click.option("--dport", metavar="SPEC", help="Remote (destination) port in SPEC.")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="ss state names or groups: established, listen, time-wait, connected, ... (repeatable).",
)
@click.option(
    "--pid",
    "pids",
    multiple=True,
    type=WholeNumber(1, PID_MAX),
    metavar="PID",
    help="Sockets held by this pid (repeatable).",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="USER",
    help="Sockets owned by this user name or uid (repeatable).",
)
@click.option(
    "--process", "names", multiple=True, metavar="NAME", help="Sockets of processes whose name contains this."
)
@click.option(
    "-p/-P",
    "--processes/--no-processes",
    default=None,
    help="Look up processes (default: on for listeners, off with --all, as with ss -p).",
)
@click.option("-i", "--info", is_flag=True, help="TCP internals: rtt, cwnd, mss, bytes (ss -i).")
@click.option(
    "--watch",
    type=FiniteNumber(0, 86400, above=True),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Refresh every SECONDS (default 2), marking sockets that appeared (+) or went away (-).",
)
@click.option(
    "--count",
    type=WholeNumber(1),
    default=None,
    metavar="N",
    help="With --watch: stop after this many refreshes.",
)
@_netns_options
@record_options
@json_option
def ls(
    show_all: bool,
    protos: tuple[str, ...],
    only4: bool,
    only6: bool,
    port: str | None,
    sport: str | None,
    dport: str | None,
    states: tuple[str, ...],
    pids: tuple[int, ...],
    users: tuple[str, ...],
    names: tuple[str, ...],
    processes: bool | None,
    info: bool,
    watch: float | None,
    count: int | None,
    netns: str | None,
    all_netns: bool,
    backend: str,
    record: bool | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Sockets on this host: listeners by default (like ss -tulnp), every socket with --all.

    With --record, the listeners seen are recorded in the ledger (each refresh with --watch).
    """
    if count is not None and watch is None:
        raise UsageError("--count needs --watch: it bounds the number of refreshes")
    query = ls_query(
        show_all=show_all,
        protos=protos,
        only4=only4,
        only6=only6,
        port=port,
        sport=sport,
        dport=dport,
        states=states,
        pids=pids,
        users=users,
        names=names,
        processes=processes,
        info=info,
    )
    show_netns = all_netns
    ledger = recording_ledger(record, db)
    # A snapshot `diff @TIME` may compare: every listener, with its owners.
    complete = (
        not (protos or only4 or only6 or port or sport or dport or pids or users or names or netns)
        and (query.listening or show_all)
        and query.with_processes
    )

    def read() -> Inventory:
        inventory = list_sockets(query, netns=netns, all_netns=all_netns, backend=backend)
        if ledger is not None:
            from portkit.ledger import inventory_scope

            host = this_host()
            ledger.record_inventory(
                inventory.sockets,
                host=host,
                complete=complete,
                source="portkit ls",
                scope=inventory_scope(inventory, all_netns),
            )
        return inventory

    if watch is None:
        inventory = read()
        if as_json:
            emit_inventory_json(inventory)
        else:
            print_ls_table(inventory, query, show_netns, info)
        return
    _watch(read, watch, count, as_json, show_netns, query.needs_processes, info)


def _watch(
    read: Any, interval: float, count: int | None, as_json: bool, show_netns: bool, procs: bool, info: bool
) -> None:
    import json

    from portkit.sockets import diff

    previous: tuple[Socket, ...] | None = None
    refresh = 0
    while count is None or refresh < count:
        if refresh:
            time.sleep(interval)
        refresh += 1
        inventory: Inventory = read()
        change = diff(previous, inventory.sockets)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "time": stamp,
                        "refresh": refresh,
                        "sockets": len(inventory.sockets),
                        "appeared": [s.to_json() for s in change.appeared] if previous is not None else [],
                        "gone": [s.to_json() for s in change.gone],
                        **({"current": [s.to_json() for s in inventory.sockets]} if previous is None else {}),
                    }
                )
            )
        else:
            rows = [
                [mark, *cells]
                for (mark, _), cells in zip(
                    change.rows,
                    ls_rows(inventory, [r for _, r in change.rows], show_netns, procs, info),
                    strict=True,
                )
            ]
            emit_table(
                ["", *ls_columns(show_netns, procs, info)],
                rows,
                title=f"{stamp}  refresh {refresh}: {len(inventory.sockets)} sockets, "
                f"{len(change.appeared)} appeared, {len(change.gone)} gone",
                empty="no sockets match",
            )
            click.echo()
        sys.stdout.flush()
        previous = inventory.sockets


# --- overview ----------------------------------------------------------------------------------


def _shown_address(listener: Listener, address: str) -> str:
    """A wildcard address of a loopback-only listener is one bound to lo (SO_BINDTODEVICE): `ss`'s
    `0.0.0.0%lo`."""
    from portkit.sockets import Exposure

    if listener.exposure is Exposure.LOOPBACK and address in ("0.0.0.0", "::"):
        return f"{address}%lo"
    return address


def _listener_process(listener: Listener) -> str:
    if listener.processes:
        return ",".join(f"{p.name}/{p.pid}" for p in listener.processes)
    return NO_OWNER if listener.owner_unknown else "-"


@click.command()
@_netns_options
@record_options
@json_option
def overview(
    netns: str | None,
    all_netns: bool,
    backend: str,
    as_json: bool,
    record: bool | None = None,
    db: str | None = None,
) -> None:
    """This host at a glance: listeners by exposure, their connections, and what is worth a look."""
    from portkit.registry import default_registry
    from portkit.sockets import Exposure, build_overview, registry_facts, user_name

    ledger = recording_ledger(record, db)

    listeners = list_sockets(
        SocketQuery(listening=True, states=ALL_STATES, with_processes=True),
        netns=netns,
        all_netns=all_netns,
        backend=backend,
    )
    connections = list_sockets(
        SocketQuery(transports=(Transport.TCP,), states=frozenset({TcpState.ESTABLISHED})),
        netns=netns,
        all_netns=all_netns,
        backend=backend,
    )
    warn(listeners)
    if ledger is not None:
        from portkit.ledger import inventory_scope

        with ledger:
            ledger.record_inventory(
                listeners.sockets,
                host=this_host(),
                complete=netns is None,
                source="portkit overview",
                scope=inventory_scope(listeners, all_netns),
            )
    result = build_overview(
        listeners.sockets,
        connections.sockets,
        registry_facts(default_registry()),
        owner_unknown=listeners.owner_unknown,
        root_note=listeners.root_note(),
    )
    if as_json:
        emit_json(result.to_json())
        return
    show_netns = all_netns
    if netns:
        click.echo(f"Network namespace {netns}\n")
    titles = {
        Exposure.ALL: "Listening on all interfaces (reachable from the network)",
        Exposure.SPECIFIC: "Listening on a specific address",
        Exposure.LOOPBACK: "Listening on loopback only (this host)",
    }
    columns = ["PORT", "SERVICE", "ADDRESS", "PROCESS", "USER", "UNIT/CONTAINER", "CONNS"]
    if show_netns:
        columns.insert(0, "NETNS")
    for exposure, group in result.by_exposure().items():
        if not group:
            continue
        rows = []
        for listener in group:
            owner = ", ".join(listener.containers or listener.units) or "-"
            users = ", ".join(dict.fromkeys(p.user for p in listener.processes)) or user_name(listener.uid)
            cells: list[Any] = [
                f"{listener.port}/{listener.transport}",
                listener.service.name or "-",
                ", ".join(_shown_address(listener, a) for a in listener.addresses),
                _listener_process(listener),
                users,
                owner,
                listener.established if listener.transport is Transport.TCP else "",
            ]
            if show_netns:
                cells.insert(0, listener.netns or "-")
            rows.append(cells)
        emit_table(columns, rows, title=titles[exposure])
        click.echo()
    if not result.listeners:
        click.echo("Nothing is listening.")
    if result.concerns:
        click.echo("Worth a look:")
        for concern in result.concerns:
            click.echo(f"  - {concern}")
        click.echo()
    click.echo(
        f"{len(result.listeners)} listeners, {result.established_total} established TCP sockets. "
        "Details: portkit ls, portkit who PORT."
    )
    if result.root_note:
        click.echo(f"note: {result.root_note}")


# --- who ---------------------------------------------------------------------------------------


def _agreed(question: str) -> bool:
    """Ask on stderr (stdout may be a JSON document) and read one line: yes or y agrees; no
    answer at all (stdin at its end: cron, `< /dev/null`) is no, not an interrupt."""
    click.echo(question, nl=False, err=True)
    answer = sys.stdin.readline()
    if not answer:
        click.echo(err=True)
    return answer.strip().lower() in ("y", "yes")


@click.command()
@click.argument("port_proto", metavar="PORT[/PROTO]")
@click.option("--kill", "do_kill", is_flag=True, help="Send SIGTERM to the processes holding the port.")
@click.option("-y", "--yes", is_flag=True, help="With --kill: do not ask for confirmation.")
@_netns_options
@record_options
@json_option
def who(
    port_proto: str,
    do_kill: bool,
    yes: bool,
    netns: str | None,
    all_netns: bool,
    backend: str,
    record: bool | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Which process holds PORT (tcp and udp, or PORT/tcp, PORT/udp), and how to free it.

    Exit status 0 when something uses the port, 1 when nothing does.
    """
    from portkit.sockets import kill_holders, parse_port_proto, who_holds

    port, protocol = parse_port_proto(port_proto)
    from portkit.registry import default_registry

    ledger = recording_ledger(record, db)
    use, inventory = who_holds(
        port, protocol, netns=netns, all_netns=all_netns, backend=backend, registry=default_registry()
    )
    if ledger is not None:
        with ledger:  # one port only: history, not a snapshot diff compares
            ledger.record_inventory(use.holders, host=this_host(), complete=False, source="portkit who")
    label = f"{port}/{protocol}" if protocol else str(port)
    status = print_port_use(
        use, inventory, label, as_json=as_json, do_kill=do_kill, searched_all=bool(netns or all_netns)
    )
    if status is not None:
        raise click.exceptions.Exit(status)
    if do_kill:  # print_port_use returns None only with --kill
        if not use.holders:
            raise PortkitError(f"nothing listens on {label}: there is no holder to signal")
        if not use.processes:
            raise PortkitError(f"the holders of {label} are not visible to this user: run as root to --kill")
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in use.processes)
        if not yes and not _agreed(f"Send SIGTERM to {names}? [y/N]: "):
            click.echo("Nothing signalled.")
            raise click.exceptions.Exit(1)
        outcomes = kill_holders(use)
        if as_json:
            emit_json({**use.to_json(), "killed": [{"pid": p.pid, "outcome": o} for p, o in outcomes]})
        else:
            for process, outcome in outcomes:
                click.echo(f"{process.name} (pid {process.pid}): {outcome}")
        if any(o.startswith("not permitted") for _, o in outcomes):
            raise click.exceptions.Exit(1)
