"""Why a bind of ADDRESS:PORT would fail: the address check, the privilege check, the port table.

Theory of operation. A bind(2) meets the kernel's checks in a fixed order, and `BIND_ORDER`
follows it: the address must be one of the namespace's own (or `ip_nonlocal_bind` set),
a port below `ip_unprivileged_port_start` needs CAP_NET_BIND_SERVICE, and the port must
not already be bound on an overlapping address. Two more facts are not failures but cost
people hours: only TIME-WAIT leftovers hold the port (SO_REUSEADDR binds it now), and a port
inside `ip_local_port_range` that is not reserved can be taken at any moment by an
outgoing connection's local end.

Overlap is the kernel's rule (inet_csk_bind_conflict, udp_lib_lport_inuse): two sockets of
one protocol and namespace clash on a port when their addresses are equal or either is a
wildcard covering the other. `0.0.0.0` covers every IPv4 address; `::` covers every IPv6
address, and every IPv4 one too unless the socket is IPV6_V6ONLY (the default comes from
`net.ipv6.bindv6only`). The socket inventory does not carry IPV6_V6ONLY, so an IPv6
wildcard holder is taken as dual-stack when bindv6only is 0, and the trial bind decides.
SO_REUSEADDR on both sockets lets them share the port unless the holder listens (TCP); for
UDP it is enough on both. SO_REUSEPORT on both lets them share it, listening or not, when both
sockets belong to one user (the kernel compares the uid each socket was created with; a
TIME-WAIT holder excepted); the kernel then spreads new connections or datagrams over them.

`decide_bind` is pure: it reads a `BindFacts` and returns the `Diagnosis`. `read_bind_facts`
gathers the facts (sysctls and a trial bind inside the target namespace, the socket
inventory through `portkit.sockets.who_holds`, the binder's capabilities from /proc), and
`diagnose_bind` joins the two. The trial bind is real: a socket bound to the port without,
then with, SO_REUSEADDR, and closed at once; an EADDRINUSE from it is evidence that no
reading of tables can give (a holder hidden from us, an IPV6_V6ONLY we could not see). When
the holders are one user's, a third bind sets SO_REUSEPORT in a thread whose file-system uid is
theirs (a socket takes its owner from it): only its success shows that the holder set
SO_REUSEPORT too, which no socket table shows.
No address given means every address: the trial binds the dual-stack IPv6 wildcard (or
0.0.0.0 where IPv6 is off), and any socket bound to the port is in the way.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from portkit.diagnose._model import (
    BIND_ORDER,
    Certainty,
    Check,
    Code,
    Diagnosis,
    Evidence,
    Finding,
    Fix,
    Source,
    primary_first,
)
from portkit.errors import UsageError
from portkit.kernel import CAP_NET_BIND_SERVICE, PortSettings
from portkit.model.ports import PortRange
from portkit.model.protocols import Transport
from portkit.sockets._model import Socket, TcpState
from portkit.sockets._process import ProcessInfo

if TYPE_CHECKING:
    from portkit.sockets._inventory import Inventory
    from portkit.sockets._netns import Namespace
    from portkit.sockets._who import PortUse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# States in which a TCP socket is on its way out: the application has closed it, and the
# kernel alone keeps it (TIME-WAIT lasts 60 s, TCP_TIMEWAIT_LEN).
CLOSING_STATES = frozenset(
    {TcpState.TIME_WAIT, TcpState.FIN_WAIT1, TcpState.FIN_WAIT2, TcpState.CLOSING, TcpState.LAST_ACK}
)
TIME_WAIT_SECONDS = 60


@dataclasses.dataclass(frozen=True, slots=True)
class Binder:
    """Who will bind: a process (`pid`), a user (`user`), or this process; and its privilege.

    `has_capability` is None when it could not be read (no such process, /proc hidden).
    """

    description: str
    has_capability: bool | None
    pid: int | None = None
    user: str | None = None
    executable: str = ""
    unit: str = ""
    basis: str = ""  # where has_capability came from (CapEff of /proc/PID/status, uid, ...)
    uid: int | None = None  # the user it binds as (its effective uid), when known


@dataclasses.dataclass(frozen=True, slots=True)
class TrialBind:
    """The outcome of a real bind of the wanted address and port: 0 or the errno, per attempt.

    `plain` binds without socket options, `reuse` with SO_REUSEADDR (tried when plain failed
    with EADDRINUSE), `reuseport` with SO_REUSEPORT as the holders' user `reuseport_uid` (tried
    when plain failed with EADDRINUSE and the holders are all that user's). None: not tried;
    `skipped` says why.
    """

    address: str
    plain: int | None = None
    reuse: int | None = None
    skipped: str = ""
    reuseport: int | None = None
    reuseport_uid: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class BindFacts:
    """Everything `decide_bind` looks at: no I/O happens past this point."""

    address: str | None  # None: every address
    port: int
    protocol: Transport
    sockets: tuple[Socket, ...]  # every socket of the protocol whose local port is `port`
    settings: PortSettings
    binder: Binder
    nonlocal_bind: bool | None  # net.ipv4/ipv6.ip_nonlocal_bind for the address's family
    address_local: bool | None  # None when unknown or no address was given
    bindv6only: bool = False
    trial: TrialBind | None = None
    netns: str | None = None
    sockets_complete: bool = True  # False when processes could not all be named (not root)
    limits: tuple[str, ...] = ()


def _parse_address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def validate_bind_address(text: str | None) -> IPAddress | None:
    """The address to bind, or None for every address; a UsageError for anything else."""
    if text is None or text in ("", "*"):
        return None
    try:
        return _parse_address(text)
    except ValueError:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise UsageError(
            f"invalid bind address {shown!r}: expected an IPv4 or IPv6 address (or none for every address)"
        ) from None


def target_text(address: str | None, port: int, protocol: Transport) -> str:
    if address is None:
        return f"*:{port}/{protocol.value}"
    parsed = _parse_address(address)
    host = f"[{parsed}]" if parsed.version == 6 else str(parsed)
    return f"{host}:{port}/{protocol.value}"


# --- the overlap rule ---------------------------------------------------------------------


def overlaps(wanted: IPAddress | None, wanted_v6only: bool, held: IPAddress, held_v6only: bool) -> bool:
    """Whether a bind of `wanted` and a socket bound to `held` clash on one port (same protocol).

    `wanted` None is every address (the dual-stack wildcard): it clashes with everything.
    The rule is symmetric: whichever of the two binds second is refused.
    """
    if wanted is None or wanted == held:
        return True
    return _covers(held, held_v6only, wanted) or _covers(wanted, wanted_v6only, held)


def _covers(wildcard: IPAddress, v6only: bool, other: IPAddress) -> bool:
    """Whether `wildcard` is a wildcard whose bind takes `other`'s address too."""
    if not wildcard.is_unspecified:
        return False
    if wildcard.version == other.version:
        return True
    return wildcard.version == 6 and not v6only  # a dual-stack :: takes IPv4 too


def _process_text(process: ProcessInfo) -> str:
    parts = [f"pid {process.pid}"]
    if process.user:
        parts.append(f"user {process.user}")
    if process.unit:
        parts.append(f"unit {process.unit}")
    if process.container:
        parts.append(
            f"{process.container_runtime or 'container'} {process.container_name or process.container[:12]}"
        )
    return f"{process.name} ({', '.join(parts)})"


def _holder_text(row: Socket) -> str:
    who = ", ".join(_process_text(p) for p in row.processes) or "a process portkit cannot see"
    where = f" in netns {row.netns}" if row.netns else ""
    return f"{who}, {row.state.label} on {row.local_text}{where}"


def _stop_fix(rows: list[Socket], what: str) -> Fix:
    """Stop the holder the way it was started: its container, its unit, else the process."""
    processes: dict[int, ProcessInfo] = {}
    for row in rows:
        for process in row.processes:
            processes.setdefault(process.pid, process)
    if not processes:
        return Fix(
            f"{what}; the holder's process is not visible (run as root to name it, or `ss -lptn "
            f"'sport = :{rows[0].local_port}'`)"
        )
    from portkit.sockets._who import advice_for

    advice = [advice_for(p) for p in processes.values()]
    commands = list(dict.fromkeys(a.command for a in advice))
    named = "; ".join(_process_text(p) + f": {p.command[:60]}" for p in processes.values())
    return Fix(f"{what}: stop {named}", " && ".join(commands))


# --- the decision -------------------------------------------------------------------------


def _in_netns(command: str, netns: str | None) -> str:
    """`command` as run in the namespace: `ip netns exec NAME`, or nsenter for a /proc path."""
    if not netns:
        return command
    if netns.startswith("/"):
        return f"nsenter --net={netns} {command}"
    return f"ip netns exec {netns} {command}"


def decide_bind(facts: BindFacts) -> Diagnosis:
    """The findings a bind described by `facts` meets, in the kernel's order (see module doc)."""
    findings: list[Finding] = []
    checks: list[Check] = []
    wanted = _parse_address(facts.address) if facts.address is not None else None
    family = "ipv6" if wanted is not None and wanted.version == 6 else "ipv4"
    trial = facts.trial
    trial_evidence = _trial_evidence(trial)
    if facts.port == 0:
        checks.append(Check("port", True, "port 0 asks the kernel for any free port"))
        return Diagnosis("bind", target_text(facts.address, 0, facts.protocol), (), tuple(checks))

    # 1. The address: one of the namespace's own, or non-local binds allowed.
    if wanted is None or wanted.is_unspecified:
        checks.append(Check("address is local", True, "a wildcard address needs no interface"))
    elif facts.nonlocal_bind:
        checks.append(Check("address is local", True, f"net.{family}.ip_nonlocal_bind is 1"))
    elif facts.address_local is None:
        checks.append(Check("address is local", None, "could not tell whether the address is local"))
    elif facts.address_local:
        checks.append(Check("address is local", True, f"{wanted} is an address of this namespace"))
    else:
        sysctl = f"net.{family}.ip_nonlocal_bind"
        evidence = [
            Evidence(
                f"the addresses of this {'namespace' if facts.netns else 'host'}",
                Source.BIND,
                f"a bind of {wanted} port 0 fails with EADDRNOTAVAIL: it is on no interface",
            ),
            Evidence(
                sysctl, Source.SYSCTL, "0: a bind to an address not on an interface fails (EADDRNOTAVAIL)"
            ),
        ]
        if trial is not None and trial.plain == errno.EADDRNOTAVAIL:
            evidence.extend(trial_evidence)
        bits = 32 if wanted.version == 4 else 128
        findings.append(
            Finding(
                Code.ADDRESS_NOT_LOCAL,
                f"{wanted} is not an address of this {'namespace' if facts.netns else 'host'}",
                tuple(evidence),
                Fix(
                    f"allow binds to addresses not (yet) on an interface (a service that starts before "
                    f"its address arrives), or add the address: `ip addr add {wanted}/{bits} dev IFACE`",
                    _in_netns(f"sysctl -w {sysctl}=1", facts.netns),
                ),
            )
        )
        checks.append(Check("address is local", False, f"{wanted} is on no interface"))

    # 2. The privilege: ports below ip_unprivileged_port_start need CAP_NET_BIND_SERVICE.
    start = facts.settings.unprivileged_start
    binder = facts.binder
    if not facts.settings.bind_needs_privilege(facts.port):
        checks.append(Check("privileged port", True, f"{facts.port} >= ip_unprivileged_port_start ({start})"))
    elif binder.has_capability is None:
        checks.append(
            Check(
                "privileged port",
                None,
                f"{facts.port} < {start}; could not read {binder.description}'s capabilities",
            )
        )
    elif binder.has_capability:
        checks.append(
            Check(
                "privileged port", True, f"{binder.description} holds CAP_NET_BIND_SERVICE ({binder.basis})"
            )
        )
    else:
        target = binder.executable or "BINARY"
        alternatives = f"give the program the capability: `setcap 'cap_net_bind_service=+ep' {target}`"
        if binder.unit:
            alternatives += f", or in {binder.unit}: [Service] AmbientCapabilities=CAP_NET_BIND_SERVICE"
        else:
            alternatives += ", or (systemd) AmbientCapabilities=CAP_NET_BIND_SERVICE in its unit"
        findings.append(
            Finding(
                Code.PRIVILEGED_PORT,
                f"port {facts.port} is below net.ipv4.ip_unprivileged_port_start ({start}) and "
                f"{binder.description} lacks CAP_NET_BIND_SERVICE",
                (
                    Evidence("net.ipv4.ip_unprivileged_port_start", Source.SYSCTL, str(start)),
                    Evidence(binder.description, Source.PROCESS, f"no CAP_NET_BIND_SERVICE ({binder.basis})"),
                ),
                Fix(
                    f"{alternatives}; or lower the first unprivileged port to {facts.port} for this "
                    f"{'namespace' if facts.netns else 'host'}",
                    _in_netns(f"sysctl -w net.ipv4.ip_unprivileged_port_start={facts.port}", facts.netns),
                ),
            )
        )
        checks.append(Check("privileged port", False, f"{facts.port} < {start} without CAP_NET_BIND_SERVICE"))

    # 3. The port table.
    findings.extend(_port_table(facts, wanted, checks, trial_evidence))

    # 4. Outgoing connections may take the port first.
    settings = facts.settings
    if settings.is_ephemeral(facts.port) and not settings.is_reserved(facts.port):
        reserved = ",".join(str(r) for r in (*settings.reserved, PortRange(facts.port, facts.port)))
        findings.append(
            Finding(
                Code.EPHEMERAL_RANGE,
                f"port {facts.port} is inside net.ipv4.ip_local_port_range ({settings.ephemeral}) and not "
                "reserved: an outgoing connection can take it before the service binds",
                (
                    Evidence("net.ipv4.ip_local_port_range", Source.SYSCTL, str(settings.ephemeral)),
                    Evidence(
                        "net.ipv4.ip_local_reserved_ports",
                        Source.SYSCTL,
                        ",".join(str(r) for r in settings.reserved) or "(empty)",
                    ),
                ),
                Fix(
                    f"reserve the port so the kernel never hands it to outgoing connections (keeping "
                    f"the ports already reserved), or use a port outside {settings.ephemeral}",
                    _in_netns(f"sysctl -w net.ipv4.ip_local_reserved_ports={reserved}", facts.netns),
                ),
            )
        )
        checks.append(Check("ephemeral range", False, f"{facts.port} in {settings.ephemeral}, not reserved"))
    elif settings.is_ephemeral(facts.port):
        checks.append(Check("ephemeral range", True, f"{facts.port} is in ip_local_reserved_ports"))
    else:
        checks.append(Check("ephemeral range", True, f"{facts.port} outside {settings.ephemeral}"))

    if trial is not None:
        checks.append(Check("trial bind", _trial_passed(trial), _trial_text(trial)))
    certainty = Certainty.FULL
    limits = list(facts.limits)
    if not facts.sockets_complete or any(c.passed is None for c in checks):
        certainty = Certainty.PARTIAL
    return Diagnosis(
        "bind",
        target_text(facts.address, facts.port, facts.protocol),
        primary_first(findings, BIND_ORDER),
        tuple(checks),
        certainty,
        tuple(limits),
    )


def _port_table(
    facts: BindFacts, wanted: IPAddress | None, checks: list[Check], trial_evidence: list[Evidence]
) -> list[Finding]:
    """PORT_IN_USE, ADDRESS_CONFLICT or TIME_WAIT_ONLY from the sockets, checked by the trial bind."""
    wanted_v6only = facts.bindv6only
    same: list[Socket] = []
    wider_or_narrower: list[Socket] = []
    closing: list[Socket] = []
    for row in facts.sockets:
        if row.transport is not facts.protocol or row.local_port != facts.port:
            continue
        try:
            held = _parse_address(row.local_address)
        except ValueError:
            continue
        if not overlaps(wanted, wanted_v6only, held, facts.bindv6only):
            continue
        if row.state in CLOSING_STATES and row.transport is Transport.TCP:
            closing.append(row)
        elif wanted is None or held == wanted:
            same.append(row)
        else:
            wider_or_narrower.append(row)
    trial = facts.trial
    # The trial bind is the kernel's own answer; the tables say who and why.
    trial_free = trial is not None and trial.plain == 0
    trial_in_use = trial is not None and trial.plain == errno.EADDRINUSE
    found: list[Finding] = []
    inventory = Evidence(
        f"{facts.protocol.value} sockets on port {facts.port}",
        Source.NETLINK,
        "; ".join(_holder_text(r) for r in [*same, *wider_or_narrower][:4]) or "none bound",
    )
    if trial_free and (same or wider_or_narrower or closing):
        checks.append(
            Check(
                "port free",
                True,
                "sockets share the port but a real bind succeeded (SO_REUSEPORT, IPV6_V6ONLY or "
                "a race): " + "; ".join(_holder_text(r) for r in [*same, *wider_or_narrower, *closing][:3]),
            )
        )
        return found
    if same:
        where = "every address" if wanted is None else str(wanted)
        found.append(
            Finding(
                Code.PORT_IN_USE,
                f"{facts.protocol.value} port {facts.port} ({where}) is held by {_holder_text(same[0])}",
                (inventory, *(trial_evidence if trial_in_use else [])),
                _stop_fix(
                    same, _share_first(trial, f"free port {facts.port}, or bind another port", facts.binder)
                ),
            )
        )
    if wider_or_narrower:
        row = wider_or_narrower[0]
        held = _parse_address(row.local_address)
        assert wanted is not None
        what = "make both bind specific addresses (or the holder bind only its own), or free the port"
        if held.version != wanted.version:
            what += "; or set IPV6_V6ONLY on the IPv6 socket (nginx: `listen [::]:PORT ipv6only=on`)"
        mine = target_text(str(wanted), facts.port, facts.protocol).rpartition("/")[0]
        if held.is_unspecified and wanted.is_unspecified:
            how = (
                f"{mine} and {row.local_text} are the wildcards of the two families, and the IPv6 "
                "one is dual-stack (IPV6_V6ONLY off): it takes the IPv4 addresses too"
            )
        elif _covers(held, facts.bindv6only, wanted):
            how = f"{row.local_text} is a wildcard that covers {mine}"
            if held.version != wanted.version:
                how += " (a dual-stack IPv6 socket, IPV6_V6ONLY off)"
        else:
            how = f"{mine} is a wildcard that covers {row.local_text}"
            if wanted.version != held.version:
                how += " (a dual-stack IPv6 bind, IPV6_V6ONLY off)"
        found.append(
            Finding(
                Code.ADDRESS_CONFLICT,
                f"{how}, held by {_holder_text(row)}",
                (inventory, *(trial_evidence if trial_in_use else [])),
                _stop_fix(wider_or_narrower, what.replace("PORT", str(facts.port))),
            )
        )
    if not found and closing and (trial is None or trial_in_use):
        states = sorted({r.state.label for r in closing})
        found.append(
            Finding(
                Code.TIME_WAIT_ONLY,
                f"only {len(closing)} closed connection(s) ({', '.join(states)}) hold port {facts.port}: "
                f"they expire within {TIME_WAIT_SECONDS} s",
                (
                    Evidence(
                        f"tcp sockets on port {facts.port}",
                        Source.NETLINK,
                        "; ".join(f"{r.state.label} {r.local_text} {r.remote_text}" for r in closing[:4]),
                    ),
                    *trial_evidence,
                ),
                Fix(
                    "set SO_REUSEADDR before bind (most servers do; it is allowed over TIME-WAIT), "
                    f"or wait up to {TIME_WAIT_SECONDS} s for them to expire, or have the kernel "
                    "destroy them now (needs CONFIG_INET_DIAG_DESTROY; TIME-WAIT guards against "
                    "late segments of the old connections)",
                    _in_netns(_destroy_command(closing, facts.port), facts.netns),
                ),
            )
        )
    if not found and trial_in_use:
        found.append(
            Finding(
                Code.PORT_IN_USE,
                f"a real bind of port {facts.port} fails with EADDRINUSE, but no socket on it is visible "
                "(another namespace's view, or a socket that came and went)",
                tuple(trial_evidence),
                Fix(f"find the holder as root: `ss -anp 'sport = :{facts.port}'`"),
            )
        )
    if found:
        checks.append(Check("port free", False, found[0].summary))
    else:
        checks.append(
            Check("port free", True, f"no {facts.protocol.value} socket overlaps the address on {facts.port}")
        )
    return found


def _share_first(trial: TrialBind | None, what: str, binder: Binder | None = None) -> str:
    """`what`, after the way to share the port when a trial bind with SO_REUSEADDR or
    SO_REUSEPORT succeeded."""
    if trial is None:
        return what
    if trial.reuse == 0:
        return (
            "set SO_REUSEADDR on the new socket before bind (a trial bind with it succeeded: the "
            "holder set it too, and both then share the port; for UDP each unicast datagram goes "
            f"to one of them), or {what}"
        )
    if trial.reuseport == 0 and trial.reuseport_uid is not None:
        owner = _user_text(trial.reuseport_uid)
        share = (
            f"set SO_REUSEPORT on the new socket before bind, as {owner} (a trial bind with it as "
            f"that user succeeded: the holder set it too; the kernel shares the port only between "
            f"sockets of one user, and spreads new connections or datagrams over them)"
        )
        if binder is not None and binder.uid is not None and binder.uid != trial.reuseport_uid:
            share += f"; {binder.description} is {_user_text(binder.uid)}, so it cannot join"
        return f"{share}, or {what}"
    return what


def _user_text(uid: int) -> str:
    from portkit.sockets._procs import user_name

    name = user_name(uid)
    return f"user {name} (uid {uid})" if name != str(uid) else f"uid {uid}"


def _destroy_command(closing: list[Socket], port: int) -> str:
    states = " ".join(f"state {label}" for label in sorted({r.state.label.lower() for r in closing}))
    return f"ss -K -tn {states} '( sport = :{port} )'"


def _trial_passed(trial: TrialBind) -> bool | None:
    if trial.plain is None:
        return None
    return trial.plain == 0


def _trial_text(trial: TrialBind) -> str:
    if trial.plain is None:
        return f"not tried: {trial.skipped}"
    text = f"bind({trial.address}): {_errno_text(trial.plain)}"
    if trial.reuse is not None:
        text += f"; with SO_REUSEADDR: {_errno_text(trial.reuse)}"
    if trial.reuseport is not None and trial.reuseport_uid is not None:
        text += f"; with SO_REUSEPORT as {_user_text(trial.reuseport_uid)}: {_errno_text(trial.reuseport)}"
    return text


def _trial_evidence(trial: TrialBind | None) -> list[Evidence]:
    if trial is None or trial.plain is None or trial.plain == 0:
        return []
    return [Evidence(f"a real bind of {trial.address}", Source.BIND, _trial_text(trial))]


def _errno_text(code: int) -> str:
    return "succeeded" if code == 0 else f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


# --- gathering the facts ------------------------------------------------------------------


def _read_sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def trial_bind(address: IPAddress | None, port: int, protocol: Transport, bindv6only: bool) -> TrialBind:
    """Bind the address and port for real, without and then with SO_REUSEADDR; close at once.

    `address` None binds the IPv6 wildcard with IPV6_V6ONLY off (every address of both
    families), or 0.0.0.0 where the namespace has no IPv6.
    """
    kind = socket.SOCK_STREAM if protocol is Transport.TCP else socket.SOCK_DGRAM
    if address is None:
        family, host, shown = socket.AF_INET6, "::", f"[::]:{port} (dual-stack)"
        try:
            socket.socket(socket.AF_INET6, kind).close()
        except OSError:
            family, host, shown = socket.AF_INET, "0.0.0.0", f"0.0.0.0:{port}"
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        host = str(address)
        shown = f"[{host}]:{port}" if address.version == 6 else f"{host}:{port}"

    def attempt(reuse: bool) -> int:
        try:
            sock = socket.socket(family, kind)
        except OSError as exc:
            return exc.errno or errno.EINVAL
        try:
            if family == socket.AF_INET6 and address is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno or errno.EINVAL
        finally:
            sock.close()
        return 0

    plain = attempt(False)
    reuse = attempt(True) if plain == errno.EADDRINUSE else None
    return TrialBind(shown, plain, reuse)


def reuseport_trial(address: IPAddress | None, port: int, protocol: Transport, uid: int) -> int | None:
    """Bind the address and port with SO_REUSEPORT, the socket owned by `uid`; close at once.

    0 or the errno; None when this process may not create a socket as `uid` (not root). The
    socket is made in a thread of its own whose file-system uid is `uid` (setfsuid(2) is per
    thread; a new socket's owner is its creator's fsuid), which inherits this thread's network
    namespace; the process's own uids are never changed.
    """
    import ctypes
    import threading

    kind = socket.SOCK_STREAM if protocol is Transport.TCP else socket.SOCK_DGRAM
    if address is None:
        family, host = socket.AF_INET6, "::"
        try:
            socket.socket(socket.AF_INET6, kind).close()
        except OSError:
            family, host = socket.AF_INET, "0.0.0.0"
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        host = str(address)
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: list[int] = []

    def attempt() -> None:
        previous = libc.setfsuid(uid)
        try:
            if libc.setfsuid(uid) != uid:  # it returns the fsuid before the call: did the first take?
                return
            try:
                sock = socket.socket(family, kind)
            except OSError as exc:
                outcome.append(exc.errno or errno.EINVAL)
                return
            try:
                if family == socket.AF_INET6 and address is None:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((host, port))
                outcome.append(0)
            except OSError as exc:
                outcome.append(exc.errno or errno.EINVAL)
            finally:
                sock.close()
        finally:
            libc.setfsuid(previous)

    thread = threading.Thread(target=attempt, name=f"reuseport trial as uid {uid}", daemon=True)
    thread.start()
    thread.join()
    return outcome[0] if outcome else None


def _holders_uid(
    rows: tuple[Socket, ...], wanted: IPAddress | None, port: int, protocol: Transport, bindv6only: bool
) -> int | None:
    """The one user whose live sockets hold the port on an address overlapping `wanted`; None
    when there are none, or several users (one SO_REUSEPORT group is one user's)."""
    uids = set()
    for row in rows:
        if row.transport is not protocol or row.local_port != port or row.state in CLOSING_STATES:
            continue
        try:
            held = _parse_address(row.local_address)
        except ValueError:
            continue
        if overlaps(wanted, bindv6only, held, bindv6only):
            uids.add(row.uid)
    return uids.pop() if len(uids) == 1 else None


def _address_local(address: IPAddress) -> bool | None:
    """Whether `address` is this namespace's own, asked of the kernel by binding it to port 0
    with IP_FREEBIND off (EADDRNOTAVAIL: not local). Only meaningful when ip_nonlocal_bind is 0."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        sock.bind((str(address), 0))
    except OSError as exc:
        return False if exc.errno == errno.EADDRNOTAVAIL else None
    finally:
        sock.close()
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class _NamespaceFacts:
    settings: PortSettings
    nonlocal_bind: bool | None
    address_local: bool | None
    bindv6only: bool
    trial: TrialBind | None


def _namespace_facts(
    address: IPAddress | None, port: int, protocol: Transport, trial: bool
) -> _NamespaceFacts:
    """What is read inside the target namespace: its sysctls, the address, the trial bind."""
    from portkit.kernel import read_port_settings

    settings = read_port_settings()
    family = "ipv6" if address is not None and address.version == 6 else "ipv4"
    nonlocal_text = _read_sysctl(f"/proc/sys/net/{family}/ip_nonlocal_bind")
    nonlocal_bind = None if nonlocal_text is None else nonlocal_text != "0"
    address_local: bool | None = None
    if address is not None and not address.is_unspecified:
        address_local = _address_local(address)
    bindv6only = _read_sysctl("/proc/sys/net/ipv6/bindv6only") == "1"
    tried = trial_bind(address, port, protocol, bindv6only) if trial and port else None
    return _NamespaceFacts(settings, nonlocal_bind, address_local, bindv6only, tried)


def _cap_from_status(pid: int) -> tuple[bool | None, str]:
    status = _read_sysctl(f"/proc/{pid}/status")
    if status is None:
        return None, f"/proc/{pid}/status unreadable"
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            value = int(line.split()[1], 16)
            return bool(value >> CAP_NET_BIND_SERVICE & 1), f"CapEff {line.split()[1]} in /proc/{pid}/status"
    return None, f"no CapEff in /proc/{pid}/status"


def read_binder(pid: int | None, user: str | int | None) -> Binder:
    """The process or user (a name or uid) that will bind (this process when neither is given)."""
    if pid is not None:
        from portkit.sockets._procs import ProcessTable

        process = ProcessTable().describe(pid)
        if process is None:
            raise UsageError(f"no process with pid {pid}: expected the pid of a running process")
        has, basis = _cap_from_status(pid)
        try:
            executable = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            executable = ""
        return Binder(
            _process_text(process),
            has,
            pid=pid,
            executable=executable,
            unit=process.unit,
            basis=basis,
            uid=_uid_from_status(pid),
        )
    if user is not None:
        import pwd

        try:
            if isinstance(user, int):
                entry = pwd.getpwuid(user)
            else:
                entry = pwd.getpwuid(int(user)) if user.isascii() and user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError, ValueError):
            if isinstance(user, int):
                # A uid without a passwd entry is still a user, and still unprivileged.
                if user == 0:
                    return Binder("uid 0", True, user="0", basis="uid 0", uid=0)
                return Binder(
                    f"uid {user}",
                    False,
                    user=str(user),
                    basis=f"uid {user}: no capabilities unless granted",
                    uid=user,
                )
            shown = user if len(user) <= 60 else user[:57] + "..."
            raise UsageError(
                f"unknown user {shown!r}: expected a login name or uid from /etc/passwd"
            ) from None
        # A process a non-root user starts holds no capabilities unless its file or unit grants
        # them (file capabilities, AmbientCapabilities=): the plain case is what is judged.
        if entry.pw_uid == 0:
            return Binder(f"user {entry.pw_name}", True, user=entry.pw_name, basis="uid 0", uid=0)
        return Binder(
            f"user {entry.pw_name}",
            False,
            user=entry.pw_name,
            basis=f"uid {entry.pw_uid}: a process it starts has no capabilities unless granted",
            uid=entry.pw_uid,
        )
    has, basis = _cap_from_status(os.getpid())
    return Binder(f"this process (pid {os.getpid()})", has, pid=os.getpid(), basis=basis, uid=os.geteuid())


def _uid_from_status(pid: int) -> int | None:
    """The effective uid of `pid` (the second field of Uid: in /proc/PID/status)."""
    status = _read_sysctl(f"/proc/{pid}/status")
    for line in (status or "").splitlines():
        if line.startswith("Uid:") and len(line.split()) >= 3:
            return int(line.split()[2])
    return None


def _own_netns_name() -> str | None:
    """The `ip netns` name of this process's own namespace, when it has one (the host's
    usually has none; where it has, `ip netns exec` with it is still the same namespace)."""
    try:
        own = os.stat("/proc/self/ns/net")
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        return None
    for name in names:
        try:
            there = os.stat(f"/run/netns/{name}")
        except OSError:
            continue
        if (there.st_dev, there.st_ino) == (own.st_dev, own.st_ino):
            return name
    return None


def _target_namespace(netns: str | None, pid: int | None) -> tuple[Namespace | None, str | None]:
    """The namespace the bind happens in, and how commands name it (None: this process's own).

    `netns` is an `ip netns` name or a /proc/PID/ns/net path. Without it, a binder given by
    pid binds in its own namespace (a container's, say), which is then the one inspected.
    """
    from portkit.sockets._netns import Namespace, current_inode, named_namespace

    if netns is None and pid is not None:
        netns = f"/proc/{pid}/ns/net"
        try:
            if os.stat(netns).st_ino == current_inode():
                return None, None
        except OSError:
            return None, None  # its namespace cannot be opened: judged from here (a limit)
    if netns is None:
        return None, None
    if netns.startswith("/"):
        try:
            inode = os.stat(netns).st_ino
        except OSError:
            shown = netns if len(netns) <= 60 else netns[:57] + "..."
            raise UsageError(
                f"invalid network namespace {shown!r}: no such file "
                "(expected /proc/PID/ns/net or an ip netns name)"
            ) from None
        if inode == current_inode():
            return None, None
        return Namespace(netns, inode, netns), netns
    found = named_namespace(netns)
    return (found, netns) if found.path is not None else (None, None)


def read_bind_facts(
    address: str | None,
    port: int,
    protocol: Transport = Transport.TCP,
    *,
    pid: int | None = None,
    user: str | None = None,
    netns: str | None = None,
    uid: int | None = None,
    trial: bool = True,
) -> BindFacts:
    """Gather what `decide_bind` needs; every read happens inside `netns` when given."""
    if protocol not in (Transport.TCP, Transport.UDP):
        raise UsageError(f"invalid protocol {protocol.value!r} for --bind: expected tcp or udp")
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid port {port}: ports are 0-65535")
    if user is not None and uid is not None:
        raise UsageError("give the binder as a user name or as a uid, not both")
    if pid is not None and (user is not None or uid is not None):
        raise UsageError("give either a pid or a user for the binder, not both")
    wanted = validate_bind_address(address)
    binder = read_binder(pid, user if uid is None else uid)
    namespace, netns = _target_namespace(netns, pid)
    if namespace is None:
        # Run as `ip netns exec NAME portkit diagnose --bind ...`, the fix commands still carry
        # the name: pasted into a shell of the host, a bare `sysctl -w` would change the host.
        netns = _own_netns_name()
    from portkit.sockets._netns import run_in
    from portkit.sockets._who import who_holds

    def facts() -> _NamespaceFacts:
        return _namespace_facts(wanted, port, protocol, trial)

    def both() -> tuple[_NamespaceFacts, tuple[PortUse, Inventory]]:
        return facts(), who_holds(port, protocol, service_name=False)

    # run_in works in a helper thread that entered the namespace: netlink sockets opened there,
    # /proc/sys read there and the trial socket all belong to it.
    if namespace is None or netns is None:
        inside, (use, inventory) = both()
    elif netns.startswith("/"):
        inside, (use, inventory) = run_in(namespace, both)
    else:  # an `ip netns` name: who_holds labels its rows with it
        inside = run_in(namespace, facts)
        use, inventory = who_holds(port, protocol, netns=netns, service_name=False)
    limits: list[str] = []
    rows = (*use.holders, *use.clients, *use.time_wait)
    complete = not inventory.root_note()
    if not complete:
        limits.append(inventory.root_note())
    tried = inside.trial
    owner = _holders_uid(rows, wanted, port, protocol, inside.bindv6only)
    if tried is not None and tried.plain == errno.EADDRINUSE and owner is not None:

        def share() -> int | None:
            return reuseport_trial(wanted, port, protocol, owner)

        shared = share() if namespace is None else run_in(namespace, share)
        if shared is not None:
            tried = dataclasses.replace(tried, reuseport=shared, reuseport_uid=owner)
        else:
            limits.append(
                f"whether the holder shares the port with SO_REUSEPORT (a trial bind as {_user_text(owner)}) "
                "needs root"
            )
    return BindFacts(
        address=None if wanted is None else str(wanted),
        port=port,
        protocol=protocol,
        sockets=rows,
        settings=inside.settings,
        binder=binder,
        nonlocal_bind=inside.nonlocal_bind,
        address_local=inside.address_local,
        bindv6only=inside.bindv6only,
        trial=tried,
        netns=netns,
        sockets_complete=complete,
        limits=tuple(limits),
    )


def diagnose_bind(
    address: str | None,
    port: int,
    protocol: Transport = Transport.TCP,
    *,
    pid: int | None = None,
    user: str | None = None,
    netns: str | None = None,
    uid: int | None = None,
) -> Diagnosis:
    """Why a bind of `address`:`port` would fail, or that it would not (`Code.OK`).

    `address` None means every address. `pid`, or `user` (a login name) or `uid`, names who
    will bind (for the privilege check); by default, this process. `netns` is an `ip netns`
    name or a /proc/PID/ns/net path: the sysctls, sockets and the trial bind are those of that
    namespace; without it, a `pid` living in another namespace (a container) brings its own.
    """
    return decide_bind(read_bind_facts(address, port, protocol, pid=pid, user=user, netns=netns, uid=uid))
