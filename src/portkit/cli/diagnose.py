"""`portkit diagnose`: why a port cannot be reached (HOST:PORT) or bound (--bind [ADDR:]PORT).

A thin client of `portkit.diagnose`: parse the target and options, ask the library, render the
`Diagnosis` (the same renderer serves both forms). Exit 0 when reachable/bindable, 1 when a
cause was found, 2 for bad input.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from portkit.cli._params import FiniteNumber, WholeNumber
from portkit.cli._record import record_options, recording_ledger, this_host
from portkit.cli.output import emit_json, json_option
from portkit.errors import UsageError, quote

if TYPE_CHECKING:
    from portkit.diagnose import Diagnosis
    from portkit.ledger import Ledger

PID_MAX = 1 << 22
DEFAULT_TIMEOUT = 1.0


@contextmanager
def _progress(what: str) -> Iterator[None]:
    """A spinner on stderr while a probe runs, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()

    def spin() -> None:
        frames = "|/-\\"
        started = time.monotonic()
        index = 0
        # Quick answers print nothing: the spinner starts only after a pause worth showing.
        if done.wait(0.3):
            return
        while not done.wait(0.1):
            sys.stderr.write(f"\r{frames[index % 4]} {what} ({time.monotonic() - started:.1f} s)")
            sys.stderr.flush()
            index += 1
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _render(diagnosis: Diagnosis, as_json: bool, explain: bool, ledger: Ledger | None = None) -> None:
    from portkit.diagnose import diagnosis_json, diagnosis_lines

    if ledger is not None:
        with ledger:
            ledger.record_diagnosis(diagnosis_json(diagnosis), host=this_host())
    if as_json:
        emit_json(diagnosis_json(diagnosis))
    else:
        for line in diagnosis_lines(diagnosis, explain=explain):
            click.echo(line)
    sys.exit(0 if diagnosis.ok else 1)


@click.command()
@click.argument("target", metavar="HOST:PORT[/PROTO]", required=False)
@click.option("--bind", "bind_target", metavar="[ADDR:]PORT[/PROTO]", help="Why this cannot be bound.")
@click.option(
    "--from", "from_netns", metavar="NETNS", help="Probe from a netns (ip netns name or /proc/PID/ns/net)."
)
@click.option(
    "--timeout",
    type=FiniteNumber(minimum=0, maximum=600, above=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the probe's answer.",
)
@click.option("--expect", metavar="NAME", help="The service that should answer (http, ssh, ...).")
@click.option(
    "--netns", metavar="NETNS", help="With --bind: bind in a netns (ip netns name or /proc/PID/ns/net)."
)
@click.option("--pid", type=WholeNumber(1, PID_MAX), help="With --bind: the process that will bind.")
@click.option("--user", metavar="USER", help="With --bind: the user that will bind.")
@click.option("--explain", is_flag=True, help="List every check made, passed or not.")
@record_options
@json_option
def diagnose(
    target: str | None,
    bind_target: str | None,
    from_netns: str | None,
    timeout: float,
    expect: str | None,
    netns: str | None,
    pid: int | None,
    user: str | None,
    explain: bool,
    record: bool | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Why HOST:PORT cannot be reached, or (--bind) why a port cannot be bound.

    Names the cause with a stable code, shows the evidence, and says the command that fixes
    it. Exit 0 reachable/bindable, 1 a cause was found, 2 bad input.
    """
    if bind_target is not None:
        if target is not None:
            raise UsageError(f"invalid arguments: give HOST:PORT or --bind, not both ({quote(target)})")
        if from_netns or expect:
            raise UsageError("invalid options: --from and --expect apply to HOST:PORT, not to --bind")
        _bind(bind_target, netns, pid, user, as_json, explain, recording_ledger(record, db))
        return
    if target is None:
        raise UsageError("missing target: expected HOST:PORT[/tcp|/udp] or --bind [ADDR:]PORT[/PROTO]")
    if pid is not None or user is not None or netns is not None:
        raise UsageError(
            "invalid options: --netns, --pid and --user apply to --bind (HOST:PORT takes --from)"
        )
    from portkit.diagnose import parse_reach_target

    parsed = parse_reach_target(target)
    if expect is not None and not expect.strip():
        raise UsageError("invalid --expect '': expected a service name such as http or ssh")
    from portkit.diagnose import diagnose_reach

    run: Callable[[], Diagnosis] = lambda: diagnose_reach(  # noqa: E731
        parsed.host,
        parsed.port,
        parsed.transport,
        from_netns=from_netns,
        timeout=timeout,
        expect=expect.strip().lower() if expect else None,
        explain=explain,
    )
    ledger = recording_ledger(record, db)
    with _progress(f"diagnosing {parsed}"):
        diagnosis = run()
    _render(diagnosis, as_json, explain, ledger)


def _bind(
    text: str,
    netns: str | None,
    pid: int | None,
    user: str | None,
    as_json: bool,
    explain: bool,
    ledger: Ledger | None,
) -> None:
    from portkit.diagnose import parse_bind_target

    parsed = parse_bind_target(text)
    uid: int | None = None
    if user is not None:
        from portkit.sockets import parse_user

        uid = parse_user(user)
    import portkit.diagnose

    diagnose_bind = portkit.diagnose.diagnose_bind
    with _progress(f"diagnosing bind {parsed}"):
        diagnosis = diagnose_bind(
            parsed.address, parsed.port, parsed.transport, pid=pid, uid=uid, netns=netns
        )
    _render(diagnosis, as_json, explain, ledger)
