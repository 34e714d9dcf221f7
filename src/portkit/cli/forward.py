"""`portkit forward`: run a TCP/UDP port forwarder, check its config, or show its statistics."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import click

from portkit.cli._params import FiniteNumber, WholeNumber
from portkit.cli.output import emit_json, emit_table, json_option
from portkit.errors import UsageError
from portkit.forward import MAX_TIMEOUT


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _line(document: dict[str, Any]) -> None:
    """One JSON document per line: a long-running process's output is a stream."""
    click.echo(json.dumps(document, default=str))
    sys.stdout.flush()


def _show_stats(pid: int | None, as_json: bool) -> None:
    from portkit.forward import query_stats, runtime_dir

    directory = runtime_dir(os.environ)
    found = query_stats(directory, pid)
    if as_json:
        emit_json({"runtime_dir": str(directory), "forwarders": found})
    elif not found:
        click.echo(f"no running forwarder has a control socket in {directory}")
    for doc in [] if as_json else found:
        state = "draining" if doc["draining"] else "running"
        click.echo(
            f"forwarder pid {doc['pid']} ({state}, engine {doc['engine']}, up {doc['uptime']:.0f}s, "
            f"reloads {doc['reloads']}, config {doc['config'] or '-'})"
        )
        rows = [
            (
                r["rule"] + (" (removed)" if r["retired"] else ""),
                f"{r['listen']} -> {r['target']}",
                r["active"],
                r["total"],
                _size(r["bytes_up"]),
                _size(r["bytes_down"]),
                r["refused_allow"] + r["refused_limit"],
                r["connect_errors"] + r["resets"],
                r["idle_closed"],
            )
            for r in doc["rules"]
        ]
        emit_table(["RULE", "FORWARD", "ACTIVE", "TOTAL", "UP", "DOWN", "REFUSED", "ERRORS", "IDLE"], rows)
    if not found:
        raise SystemExit(1)


@click.command()
@click.argument("listen", required=False)
@click.argument("target", required=False)
@click.option("--udp", is_flag=True, help="Forward UDP datagrams instead of TCP connections.")
@click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML file of [[rule]]s."
)
@click.option("--check", is_flag=True, help="Validate the rules, print them and exit.")
@click.option("--stats", "show_stats", is_flag=True, help="Show the statistics of running forwarders.")
@click.option("--pid", type=WholeNumber(1), help="With --stats: only the forwarder with this pid.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "splice", "asyncio"]),
    default="auto",
    show_default=True,
    help="TCP engine: splice (zero-copy, Linux) or asyncio.",
)
@click.option("--allow", multiple=True, metavar="CIDR", help="Only clients in this network (repeatable).")
@click.option("--max-connections", type=WholeNumber(), help="Concurrent connections at most [10000].")
@click.option(
    "--overflow", type=click.Choice(["refuse", "queue"]), help="Over the limit: reset or wait [refuse]."
)
@click.option(
    "--idle-timeout",
    type=FiniteNumber(None),
    help="Close a connection silent this long, seconds; 0 = never [300].",
)
@click.option(
    "--connect-timeout",
    type=FiniteNumber(None),
    help="Give up reaching the target after this long [5].",
)
@click.option("--udp-max-clients", type=WholeNumber(), help="UDP client mappings at most [4096].")
@click.option(
    "--udp-idle-timeout",
    type=FiniteNumber(None),
    help="Forget a silent UDP client after this long [60].",
)
@click.option("--proxy-protocol", type=click.Choice(["v1", "v2"]), help="Send a PROXY header to the target.")
@click.option(
    "--congestion",
    metavar="ALGO",
    help="TCP congestion control of the forwarder's legs: auto (reno on legs within this host), "
    "system, or an algorithm such as cubic [auto].",
)
@click.option(
    "--drain-timeout",
    type=FiniteNumber(0, MAX_TIMEOUT),
    default=10.0,
    show_default=True,
    help="SIGTERM waits this long.",
)
@click.option("--log-json", is_flag=True, help="Log events as JSON lines on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Log no per-connection events (only refusals and errors).")
@json_option
def forward(
    listen: str | None,
    target: str | None,
    udp: bool,
    config_path: str | None,
    check: bool,
    show_stats: bool,
    pid: int | None,
    engine: str,
    allow: tuple[str, ...],
    drain_timeout: float,
    log_json: bool,
    quiet: bool,
    as_json: bool,
    **limit_options: Any,
) -> None:
    """Forward connections to LISTEN on to TARGET (TCP; UDP with --udp).

    LISTEN is PORT (on 127.0.0.1) or ADDRESS:PORT; other hosts can connect only if you write
    a non-loopback address out, e.g. 0.0.0.0:8080. TARGET is ADDRESS:PORT or HOST:PORT.

    \b
      portkit forward 8080 10.0.0.5:80
      portkit forward 0.0.0.0:5353 127.0.0.1:53 --udp --allow 192.0.2.0/24
      portkit forward --config /etc/portkit/forward.toml
      portkit forward --stats
    SIGHUP reloads --config, SIGUSR1 logs statistics, SIGTERM drains.
    """
    from portkit.forward import (
        EventLog,
        Forwarder,
        Listening,
        check_congestion,
        choose_engine,
        load_config,
        make_limits,
        make_rule,
        runtime_dir,
    )

    if show_stats:
        _show_stats(pid, as_json)
        return
    proxy_protocol = limit_options.pop("proxy_protocol")
    congestion = limit_options.pop("congestion")
    given = {k: v for k, v in limit_options.items() if v is not None}
    if config_path:
        if listen or target:
            raise UsageError("invalid arguments: give either LISTEN TARGET or --config FILE, not both")
        extra = [f"--{k.replace('_', '-')}" for k in given] + (["--allow"] if allow else [])
        extra += ["--udp"] if udp else []
        extra += ["--proxy-protocol"] if proxy_protocol else []
        extra += ["--congestion"] if congestion else []
        if extra:
            raise UsageError(f"invalid option {extra[0]} with --config: set it in the config file's [[rule]]")
        rules = load_config(config_path)
    else:
        if not listen or not target:
            raise UsageError(
                "missing arguments: expected LISTEN TARGET (e.g. 8080 10.0.0.5:80) or --config FILE"
            )
        rules = (
            make_rule(
                listen,
                target,
                protocol="udp" if udp else "tcp",
                allow=allow,
                proxy_protocol=proxy_protocol or "none",
                limits=make_limits(given),
                congestion=congestion or "auto",
            ),
        )
    engine_name = choose_engine(engine)
    tuning = _engine_tuning(os.environ)
    if check:
        for rule in rules:
            if rule.protocol.value == "tcp":
                check_congestion(rule.congestion)  # can this process set it (the forwarder would stop)
        if as_json:
            emit_json({"engine": engine_name, "rules": [r.to_json() for r in rules]})
        else:
            for rule in rules:
                extras = [f"allow {', '.join(map(str, rule.allow))}"] if rule.allow else []
                extras += [f"proxy {rule.proxy_protocol}"] if rule.proxy_protocol.value != "none" else []
                extras += [f"congestion {rule.congestion}"] if rule.congestion != "auto" else []
                click.echo(f"{rule.label}: {rule}" + (f" ({'; '.join(extras)})" if extras else ""))
            click.echo(f"{len(rules)} rule(s) ok; TCP engine {engine_name}")
        return

    def ready(listening: list[Listening]) -> None:
        if as_json:
            _line({"event": "ready", **forwarder.snapshot(), "rules": [item.to_json() for item in listening]})
            return
        for item in listening:
            click.echo(f"forwarding {item}")
        click.echo(f"pid {forwarder.stats.pid}: SIGHUP reloads, SIGUSR1 logs stats, SIGTERM drains")
        sys.stdout.flush()

    forwarder = Forwarder(
        rules,
        engine=engine_name,
        log=EventLog(as_json=log_json, quiet=quiet),
        config_path=config_path,
        drain_timeout=drain_timeout,
        on_ready=ready,
        control_dir=runtime_dir(os.environ),
        notify_socket=os.environ.get("NOTIFY_SOCKET"),
        **tuning,
    )
    stats = forwarder.run()
    if as_json:
        _line({"event": "stopped", **forwarder.snapshot()})
    else:
        total = sum(r.total for r in stats.rules.values())
        click.echo(f"stopped: {total} connection(s) served")
    if forwarder.stop_signal == signal.SIGINT:
        raise SystemExit(130)


def _engine_tuning(environ: Mapping[str, str]) -> dict[str, Any]:
    """Engine settings taken from the environment: $PORTKIT_SPLICE_THREAD_AFTER (bytes a
    connection splices before it gets relay threads; 0 = at once, -1 = never) and
    $PORTKIT_SPLICE_COPY (auto, never or always: how the splice engine's loop moves bytes) and
    $PORTKIT_FORWARD_LOOPS (how many epoll loops the splice engine runs; default: the CPU
    count up to 2) and $PORTKIT_SPLICE_TURN (auto: the loop turn in C where built; python)."""
    tuning: dict[str, Any] = {}
    raw = environ.get("PORTKIT_SPLICE_THREAD_AFTER", "").strip()
    if raw:
        # ASCII digits only: int() would also take "1_0" and other scripts' digits.
        digits = raw[1:] if raw.startswith("-") else raw
        value = int(raw) if digits.isascii() and digits.isdigit() else -2
        if value < -1:
            raise UsageError(
                f"invalid PORTKIT_SPLICE_THREAD_AFTER {raw[:60]!r}: expected bytes >= 0 or -1 (never)"
            )
        tuning["thread_after"] = value
    copy = environ.get("PORTKIT_SPLICE_COPY", "").strip()
    if copy:
        from portkit.forward import COPY_MODES

        if copy not in COPY_MODES:
            raise UsageError(
                f"invalid PORTKIT_SPLICE_COPY {copy[:60]!r}: expected one of {', '.join(COPY_MODES)}"
            )
        tuning["copy"] = copy
    turn = environ.get("PORTKIT_SPLICE_TURN", "").strip()
    if turn:
        if turn not in ("auto", "python"):
            raise UsageError(f"invalid PORTKIT_SPLICE_TURN {turn[:60]!r}: expected auto or python")
        tuning["turn"] = turn
    loops = environ.get("PORTKIT_FORWARD_LOOPS", "").strip()
    if loops:
        if not (loops.isascii() and loops.isdigit() and 1 <= int(loops) <= 1024):
            raise UsageError(
                f"invalid PORTKIT_FORWARD_LOOPS {loops[:60]!r}: expected a number of loops, 1-1024"
            )
        tuning["loops"] = int(loops)
    return tuning
