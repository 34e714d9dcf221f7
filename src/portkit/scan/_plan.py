"""The scan planner: options and target expressions -> a `ScanPlan`, with no socket, clock or file.

Everything a scan decides before its first probe is decided here: the scan type (SYN when raw
sockets may be opened, else connect, and the note saying so), the ports and their protocol,
the hosts, the timing template with the user's overrides, the key of the probe order, and how
many worker processes share the probes. The I/O driver (`_engine.run_scan`) gathers the facts
that need the system (may this process open raw sockets? what do the target files hold? a
random key, the CPU count, a name resolver) and hands them in, so every decision can be tested
with plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portkit.errors import PermissionNeeded, UsageError
from portkit.model import Transport, parse_port_spec
from portkit.scan._states import ScanType
from portkit.scan._targets import Resolver, TargetSet, parse_targets
from portkit.scan._timing import Template, template

if TYPE_CHECKING:
    from portkit.model.portspec import PortNames

DEFAULT_PORTS = "top:1000"
MAX_HOSTS = 1 << 24

# Below this many probes a second process costs more than it saves.
PARALLEL_MIN_PROBES = 20000
MAX_WORKERS = 2
MAX_WORKERS_ASKED = 16  # the most an explicit worker count may ask for


@dataclass
class ScanOptions:
    """What to scan and how: nmap's options as typed fields (the CLI maps its flags onto them)."""

    targets: Sequence[str] = ()
    ports: str = DEFAULT_PORTS
    scan_type: ScanType | None = None  # None: SYN with CAP_NET_RAW, else connect
    timing: int = 3
    max_retries: int | None = None
    host_timeout: float | None = None
    max_rate: float | None = None
    min_rtt: float | None = None
    max_rtt: float | None = None
    initial_rtt: float | None = None
    scan_delay: float | None = None
    seed: int | None = None
    exclude: Sequence[str] = ()
    exclude_file: str | None = None
    input_file: str | None = None
    first_address: bool = False
    skip_discovery: bool = False  # -Pn
    ping_only: bool = False  # -sn
    all_ports_listed: bool = False
    workers: int | None = None  # worker processes (at most 16); None: chosen by `worker_count`
    pure_python: bool = False  # move packets in Python even where a C path (_rawio, _connectio) could
    debug: Callable[[str], None] | None = None  # gets a line per worker on how it ran


# What an unprivileged scan does instead, and what root would add (see _discovery for -sn).
_UNPRIVILEGED_NOTE = {
    "ports": "no CAP_NET_RAW: connect scan instead of SYN (run as root for -sS, -sU, -sA)",
    "ping": "no CAP_NET_RAW: hosts found by TCP connect() to ports 80 and 443 only "
    "(root adds ICMP echo, SYN to 443 and ACK to 80)",
}
_NEEDS_RAW = {
    ScanType.SYN: "-sS needs raw sockets (root or CAP_NET_RAW): run as root, "
    "or use --connect (-sT) for a TCP connect() scan without privileges",
    ScanType.UDP: "-sU needs raw sockets (root or CAP_NET_RAW): portkit's UDP scan sends its payloads "
    "and reads the ICMP replies raw, and there is no unprivileged UDP scan (--connect covers TCP only); "
    "run as root",
    ScanType.ACK: "-sA needs raw sockets (root or CAP_NET_RAW) to send bare ACKs: run as root "
    "(--connect tells open from closed, not filtered from unfiltered)",
}


@dataclass(frozen=True)
class ScanPlan:
    """What a scan will do, decided before any probe is sent."""

    options: ScanOptions
    scan_type: ScanType
    protocol: Transport
    targets: TargetSet
    ports: list[int]  # in the order of their indexes (probe key = host * len(ports) + port index)
    template: Template
    seed: int  # key of the probe order permutation
    notes: tuple[str, ...] = ()


def choose_scan_type(options: ScanOptions, raw_ok: bool) -> tuple[ScanType, tuple[str, ...]]:
    """The scan type to run and the notes it earns; refuses a raw scan type without raw sockets."""
    scan_type = options.scan_type
    if scan_type is None:
        if raw_ok:
            return ScanType.SYN, ()
        return ScanType.CONNECT, (_UNPRIVILEGED_NOTE["ping" if options.ping_only else "ports"],)
    if scan_type.raw and not raw_ok:
        raise PermissionNeeded(_NEEDS_RAW.get(scan_type, f"{scan_type.flag} needs raw sockets: run as root"))
    return scan_type, ()


def resolve_ports(text: str, protocol: Transport, names: PortNames) -> list[int]:
    """A port spec's ports for `protocol`, ascending; `names` resolves service names and top:N."""
    spec = parse_port_spec(text, names)
    ports = list(spec.ports(protocol))
    if not ports:
        raise UsageError(f"invalid port spec {text!r}: it names no {protocol} ports")
    return ports


def plan_scan(
    options: ScanOptions,
    *,
    raw_ok: bool,
    random_seed: int,
    names: PortNames,
    target_texts: Sequence[str] = (),
    exclude_texts: Sequence[str] = (),
    resolver: Resolver | None = None,
) -> ScanPlan:
    """Check the options and decide the scan.

    `raw_ok`: whether raw sockets may be opened. `random_seed`: the probe-order key when the
    options name none. `names`: the registry that resolves service names and top:N in the port
    spec. `target_texts`/`exclude_texts`: targets read from -iL/--exclude-file,
    added to the options' own. `resolver` turns hostnames into addresses (the system's by
    default). Bad options raise `UsageError`; a raw scan type without raw sockets raises
    `PermissionNeeded`.
    """
    scan_type, notes = choose_scan_type(options, raw_ok)
    protocol = scan_type.protocol
    texts = [*options.targets, *target_texts]
    if not texts:
        raise UsageError("no targets: give addresses, networks or hostnames (or -iL FILE)")
    targets = parse_targets(
        texts,
        exclude=[*options.exclude, *exclude_texts],
        resolver=resolver,
        first_address=options.first_address,
    )
    if len(targets) > MAX_HOSTS:
        raise UsageError(f"too many targets ({len(targets)}): at most {MAX_HOSTS} hosts per scan")
    ports = [] if options.ping_only else resolve_ports(options.ports, protocol, names)
    tpl = template(options.timing).with_options(
        max_retries=options.max_retries,
        host_timeout=options.host_timeout,
        min_rtt=options.min_rtt,
        max_rtt=options.max_rtt,
        initial_rtt=options.initial_rtt,
        scan_delay=options.scan_delay,
    )
    seed = options.seed if options.seed is not None else random_seed
    return ScanPlan(options, scan_type, protocol, targets, ports, tpl, seed, notes)


def worker_count(probes: int, plan: ScanPlan, cpus: int) -> int:
    """Processes for a scan of `probes` probes: big connect, SYN and ACK scans use two cores.

    `ScanOptions.workers` (a positive count, at most 16 honoured) overrides the choice. Measured on loopback
    (65,535 ports, 2 cores): two workers beat one for connect() scans, and for SYN scans too
    once each raw worker reads replies in batches and keeps no second socket; UDP scans, paced
    by ICMP rate limits, stay in one process.
    """
    options = plan.options
    if options.workers is not None and options.workers > 0:
        return min(options.workers, MAX_WORKERS_ASKED)
    if (
        plan.scan_type is ScanType.UDP
        or probes < PARALLEL_MIN_PROBES
        or options.scan_delay
        or options.timing < 3
    ):
        return 1
    return max(1, min(MAX_WORKERS, cpus))
