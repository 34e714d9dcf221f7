"""`diagnose_bind`: the decision over facts, and the bind fault matrix in lab namespaces.

Each fault is made in a fresh namespace (loopback, with 192.0.2.1/24 and 2001:db8::1/64
added), the exact primary code is asserted, and every fix that carries a command
is run there: afterwards the diagnosis must be OK *and* a real bind (as the user the case is
about) must succeed. The healthy controls must get no finding at all.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import needs_root
from portkit.diagnose import Code, Diagnosis, Source
from portkit.diagnose._bind import (
    Binder,
    BindFacts,
    TrialBind,
    decide_bind,
    diagnose_bind,
    overlaps,
    validate_bind_address,
)
from portkit.errors import UsageError
from portkit.kernel import PortSettings
from portkit.model.ports import PortRange
from portkit.model.protocols import Transport
from portkit.sockets import ProcessInfo, Socket, TcpState
from portkit.testing import LabNamespace

ip = validate_bind_address

# --- the overlap rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "wanted_v6only", "held", "held_v6only", "clash"),
    [
        ("10.0.0.1", False, "10.0.0.1", False, True),
        ("10.0.0.1", False, "10.0.0.2", False, False),
        ("10.0.0.1", False, "0.0.0.0", False, True),  # the wildcard holds every IPv4 address
        ("0.0.0.0", False, "10.0.0.1", False, True),  # and cannot be had while one is held
        ("10.0.0.1", False, "::", False, True),  # a dual-stack :: holds IPv4 too
        ("10.0.0.1", False, "::", True, False),  # unless IPV6_V6ONLY
        ("0.0.0.0", False, "::", False, True),
        ("0.0.0.0", False, "::", True, False),
        ("::", False, "10.0.0.1", False, True),
        ("::", True, "10.0.0.1", False, False),
        ("::", False, "0.0.0.0", False, True),  # both wildcards: the dual-stack one needs both
        ("::", True, "0.0.0.0", False, False),
        ("::1", False, "0.0.0.0", False, False),
        ("::", False, "2001:db8::1", False, True),
        ("2001:db8::1", False, "0.0.0.0", False, False),
        ("2001:db8::1", False, "2001:db8::2", False, False),
        ("::ffff:10.0.0.1", False, "10.0.0.1", False, True),  # a mapped address is the IPv4 one
    ],
)
def test_overlap_follows_the_kernel(
    wanted: str, wanted_v6only: bool, held: str, held_v6only: bool, clash: bool
) -> None:
    held_address = ip(held)
    assert held_address is not None
    assert overlaps(ip(wanted), wanted_v6only, held_address, held_v6only) is clash


_ADDRESSES = st.sampled_from(
    ["0.0.0.0", "::", "10.0.0.1", "10.0.0.2", "127.0.0.1", "2001:db8::1", "2001:db8::2", "::1"]
)


@given(_ADDRESSES, st.booleans(), _ADDRESSES, st.booleans())
def test_overlap_is_symmetric(a: str, a_v6only: bool, b: str, b_v6only: bool) -> None:
    # The kernel refuses the second bind whichever of the two came first.
    first, second = ip(a), ip(b)
    assert first is not None and second is not None
    assert overlaps(first, a_v6only, second, b_v6only) == overlaps(second, b_v6only, first, a_v6only)


def test_no_address_clashes_with_everything() -> None:
    held = ip("127.0.0.1")
    assert held is not None
    assert overlaps(None, False, held, True)


@pytest.mark.parametrize("text", ["10.0.0", "nohost", "1.2.3.4.5", "x" * 300])
def test_bad_address_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="invalid bind address") as caught:
        validate_bind_address(text)
    assert len(str(caught.value)) < 160


# --- the decision, over facts ---------------------------------------------------------------

ROOT = Binder("this process", True, pid=1, basis="CapEff")
NOBODY = Binder("user nobody", False, user="nobody", basis="uid 65534")


def _row(address: str, port: int, state: TcpState = TcpState.LISTEN, **kw: object) -> Socket:
    family = 6 if ":" in address else 4
    fields: dict[str, object] = dict(
        transport=Transport.TCP,
        family=family,
        state=state,
        local_address=address,
        local_port=port,
        remote_address="0.0.0.0" if family == 4 else "::",
        remote_port=0 if state is TcpState.LISTEN else 50000,
        recv_q=0,
        send_q=0,
        uid=0,
        inode=1,
        interface=0,
    )
    fields.update(kw)
    return Socket(**fields)  # type: ignore[arg-type]


def _facts(address: str | None, port: int, **kw: object) -> BindFacts:
    fields: dict[str, object] = dict(
        address=address,
        port=port,
        protocol=Transport.TCP,
        sockets=(),
        settings=PortSettings(ephemeral=PortRange(32768, 60999)),
        binder=ROOT,
        nonlocal_bind=False,
        address_local=True if address else None,
    )
    fields.update(kw)
    return BindFacts(**fields)  # type: ignore[arg-type]


def test_a_free_port_is_ok() -> None:
    diagnosis = decide_bind(_facts("10.0.0.1", 8080, trial=TrialBind("10.0.0.1:8080", 0)))
    assert diagnosis.ok and diagnosis.code is Code.OK
    assert all(check.passed for check in diagnosis.checks)


def test_in_use_names_the_holder_and_stops_its_unit() -> None:
    nginx = ProcessInfo(pid=42, name="nginx", uid=33, user="www-data", unit="nginx.service")
    facts = _facts(
        None, 80, sockets=(_row("0.0.0.0", 80, processes=(nginx,)),), trial=TrialBind("[::]:80", 98, 98)
    )
    diagnosis = decide_bind(facts)
    assert diagnosis.code is Code.PORT_IN_USE
    finding = diagnosis.findings[0]
    assert "nginx (pid 42, user www-data, unit nginx.service)" in finding.summary
    assert "0.0.0.0:80" in finding.summary
    assert finding.fix is not None and finding.fix.command == "systemctl stop nginx.service"
    assert Source.BIND in {e.source for e in finding.evidence}


def test_a_plain_process_is_named_and_killed_by_pid() -> None:
    tool = ProcessInfo(pid=77, name="devserver", cmdline=("devserver", "--port", "80"), uid=1000, user="ann")
    diagnosis = decide_bind(_facts("0.0.0.0", 80, sockets=(_row("0.0.0.0", 80, processes=(tool,)),)))
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "kill 77"
    assert "devserver --port 80" in fix.text


def test_a_container_is_stopped_as_a_container() -> None:
    proxy = ProcessInfo(
        pid=90,
        name="docker-proxy",
        uid=0,
        user="root",
        container="c0ffee" * 8,
        container_runtime="docker",
        container_name="web",
    )
    diagnosis = decide_bind(_facts(None, 8080, sockets=(_row("0.0.0.0", 8080, processes=(proxy,)),)))
    finding = diagnosis.findings[0]
    assert "docker web" in finding.summary
    assert finding.fix is not None and finding.fix.command == "docker stop web"


def test_a_holder_nobody_can_name_gets_no_command() -> None:
    diagnosis = decide_bind(_facts(None, 8080, sockets=(_row("0.0.0.0", 8080),)))
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command is None
    assert "run as root to name it" in fix.text


@pytest.mark.parametrize(
    ("wanted", "held"),
    [("10.0.0.1", "0.0.0.0"), ("0.0.0.0", "10.0.0.1"), ("10.0.0.1", "::"), ("::", "10.0.0.1")],
)
def test_wildcard_against_specific_is_an_address_conflict(wanted: str, held: str) -> None:
    diagnosis = decide_bind(_facts(wanted, 8080, sockets=(_row(held, 8080),)))
    assert diagnosis.code is Code.ADDRESS_CONFLICT
    assert "wildcard" in diagnosis.findings[0].summary


def test_a_real_bind_that_succeeds_overrules_the_table() -> None:
    # An IPv6 wildcard holder that is IPV6_V6ONLY (the inventory cannot see it) does not clash.
    facts = _facts("10.0.0.1", 8080, sockets=(_row("::", 8080),), trial=TrialBind("10.0.0.1:8080", 0))
    assert decide_bind(facts).ok


def test_a_hidden_holder_is_still_in_use() -> None:
    facts = _facts("10.0.0.1", 8080, trial=TrialBind("10.0.0.1:8080", errno.EADDRINUSE, errno.EADDRINUSE))
    diagnosis = decide_bind(facts)
    assert diagnosis.code is Code.PORT_IN_USE
    assert "no socket on it is visible" in diagnosis.findings[0].summary


def test_time_wait_only() -> None:
    rows = (_row("10.0.0.1", 8080, TcpState.TIME_WAIT), _row("10.0.0.1", 8080, TcpState.FIN_WAIT2))
    facts = _facts("10.0.0.1", 8080, sockets=rows, trial=TrialBind("10.0.0.1:8080", errno.EADDRINUSE, 0))
    diagnosis = decide_bind(facts)
    assert [f.code for f in diagnosis.findings] == [Code.TIME_WAIT_ONLY]
    fix = diagnosis.findings[0].fix
    assert fix is not None and "SO_REUSEADDR" in fix.text
    assert fix.command == "ss -K -tn state fin-wait-2 state time-wait '( sport = :8080 )'"


def test_a_holder_that_set_so_reuseport_is_offered_to_its_user() -> None:
    nginx = ProcessInfo(pid=42, name="nginx", uid=33, user="www-data")
    rows = (_row("10.0.0.1", 8080, uid=33, processes=(nginx,)),)
    in_use = errno.EADDRINUSE
    shared = TrialBind("10.0.0.1:8080", in_use, in_use, reuseport=0, reuseport_uid=33)
    www = Binder("user www-data", False, user="www-data", basis="uid 33", uid=33)
    diagnosis = decide_bind(_facts("10.0.0.1", 8080, sockets=rows, trial=shared, binder=www))
    assert diagnosis.code is Code.PORT_IN_USE
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.text.startswith("set SO_REUSEPORT on the new socket before bind, as ")
    assert "(uid 33)" in fix.text and "cannot join" not in fix.text
    assert fix.command == "kill 42"  # stopping the holder is still the other way
    trial = [e.showed for e in diagnosis.findings[0].evidence if e.source is Source.BIND]
    assert trial and trial[0].endswith("(uid 33): succeeded")
    nobody = Binder("user nobody", False, user="nobody", basis="uid 65534", uid=65534)
    other = decide_bind(_facts("10.0.0.1", 8080, sockets=rows, trial=shared, binder=nobody)).findings[0].fix
    assert other is not None and "user nobody is user nobody (uid 65534), so it cannot join" in other.text
    refused = dataclasses.replace(shared, reuseport=in_use)
    alone = decide_bind(_facts("10.0.0.1", 8080, sockets=rows, trial=refused, binder=www)).findings[0]
    assert alone.fix is not None and "SO_REUSEPORT" not in alone.fix.text
    assert any("with SO_REUSEPORT as" in e.showed and "EADDRINUSE" in e.showed for e in alone.evidence)


def test_a_listener_beats_time_wait() -> None:
    rows = (_row("10.0.0.1", 8080, TcpState.TIME_WAIT), _row("10.0.0.1", 8080))
    assert decide_bind(_facts("10.0.0.1", 8080, sockets=rows)).code is Code.PORT_IN_USE


def test_privileged_port_without_the_capability() -> None:
    diagnosis = decide_bind(_facts(None, 80, binder=NOBODY))
    assert diagnosis.code is Code.PRIVILEGED_PORT
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "sysctl -w net.ipv4.ip_unprivileged_port_start=80"
    assert "setcap 'cap_net_bind_service=+ep'" in fix.text and "AmbientCapabilities" in fix.text


def test_privileged_port_with_the_capability_or_above_the_start() -> None:
    assert decide_bind(_facts(None, 80, binder=ROOT)).ok
    assert decide_bind(_facts(None, 1024, binder=NOBODY)).ok
    lowered = PortSettings(ephemeral=PortRange(32768, 60999), unprivileged_start=80)
    assert decide_bind(_facts(None, 80, binder=NOBODY, settings=lowered)).ok


def test_unknown_capability_is_uncertain_not_ok_or_a_finding() -> None:
    diagnosis = decide_bind(_facts(None, 80, binder=Binder("pid 9", None)))
    assert diagnosis.ok
    assert diagnosis.certainty.value == "partial"
    assert any(c.passed is None and c.name == "privileged port" for c in diagnosis.checks)


def test_ephemeral_range_keeps_the_reserved_ports() -> None:
    settings = PortSettings(ephemeral=PortRange(32768, 60999), reserved=(PortRange(40000, 40010),))
    diagnosis = decide_bind(_facts(None, 45000, settings=settings))
    assert diagnosis.code is Code.EPHEMERAL_RANGE
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "sysctl -w net.ipv4.ip_local_reserved_ports=40000-40010,45000"
    assert decide_bind(_facts(None, 40005, settings=settings)).ok


def test_address_not_local_and_its_ipv6_sysctl() -> None:
    diagnosis = decide_bind(_facts("2001:db8::7", 8080, address_local=False, netns="lab1"))
    assert diagnosis.code is Code.ADDRESS_NOT_LOCAL
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command == "ip netns exec lab1 sysctl -w net.ipv6.ip_nonlocal_bind=1"
    assert decide_bind(_facts("2001:db8::7", 8080, address_local=False, nonlocal_bind=True)).ok


def test_several_findings_come_in_the_kernels_order() -> None:
    facts = _facts("198.51.100.7", 80, address_local=False, binder=NOBODY, sockets=(_row("0.0.0.0", 80),))
    codes = [f.code for f in decide_bind(facts).findings]
    assert codes == [Code.ADDRESS_NOT_LOCAL, Code.PRIVILEGED_PORT, Code.ADDRESS_CONFLICT]


def test_other_protocol_and_other_port_do_not_count() -> None:
    rows = (_row("0.0.0.0", 8080, transport=Transport.UDP), _row("0.0.0.0", 8081))
    assert decide_bind(_facts(None, 8080, sockets=rows)).ok


# --- the fault matrix in lab namespaces -------------------------------------------------------

LAB4 = "192.0.2.1"
LAB6 = "2001:db8::1"


@pytest.fixture
def ns() -> Iterator[LabNamespace]:
    with LabNamespace("pkdb") as space:
        # This kernel has no dummy interfaces; loopback carries any address just as well.
        space.ip("addr", "add", f"{LAB4}/24", "dev", "lo")
        space.ip("addr", "add", f"{LAB6}/64", "dev", "lo", "nodad")
        yield space


_HOLD = """
import socket, sys, time
host, port, proto, v6only = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
if family == socket.AF_INET6:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
if sys.argv[5:] == ["reuseport"]:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind((host, port))
if proto == "tcp":
    sock.listen(4096)
print("ready", flush=True)
time.sleep(60)
"""

_BIND = """
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
if family == socket.AF_INET6 and host == "::":
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
if sys.argv[4:] == ["reuseport"]:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    sock.bind((host, port))
except OSError as exc:
    sys.exit(exc.errno)
"""

_TIME_WAIT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, port))
listener.listen()
client = socket.create_connection((host, port))
served, _ = listener.accept()
served.close()  # the server closes first, so the server's end (local port `port`) waits
client.recv(1)
client.close()
listener.close()
"""


class Holder:
    """A process in the namespace holding a port, stopped by pid at the end."""

    def __init__(
        self,
        ns: LabNamespace,
        host: str,
        port: int,
        proto: str = "tcp",
        v6only: bool = False,
        *,
        reuseport: bool = False,
        user: str | None = None,
    ):
        argv = [sys.executable, "-c", _HOLD, host, str(port), proto, str(int(v6only))]
        if reuseport:
            argv.append("reuseport")
        if user is not None:  # setpriv execs the program: the pid stays the holder's
            argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
        argv = ns.command(argv)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        # `ip netns exec` execs the program: the pid is the python holding the socket.
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def real_bind(
    ns: LabNamespace,
    host: str,
    port: int,
    proto: str = "tcp",
    user: str | None = None,
    *,
    reuseport: bool = False,
) -> int:
    """Bind in the namespace (as `user`, with SO_REUSEPORT, when asked): 0, or the errno the
    kernel returned."""
    argv = [sys.executable, "-c", _BIND, host, str(port), proto, *(["reuseport"] if reuseport else [])]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    return ns.run(argv, timeout=30).returncode


def apply_fix(diagnosis: Diagnosis) -> None:
    """Run the primary finding's fix command as a user would (a shell line)."""
    fix = diagnosis.findings[0].fix
    assert fix is not None and fix.command, f"{diagnosis.code} carries no fix command"
    done = subprocess.run(fix.command, shell=True, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"fix {fix.command!r} failed: {done.stderr}"


def wait_until_ok(diagnose: object, attempts: int = 50) -> Diagnosis:
    assert callable(diagnose)
    diagnosis: Diagnosis = diagnose()
    for _ in range(attempts):
        if diagnosis.ok:
            break
        time.sleep(0.05)
        diagnosis = diagnose()
    return diagnosis


@needs_root
class TestHealthy:
    def test_free_ports_get_no_finding(self, ns: LabNamespace) -> None:
        for address, port, proto in [
            (None, 8080, Transport.TCP),
            (LAB4, 8080, Transport.TCP),
            (LAB6, 8080, Transport.TCP),
            ("127.0.0.1", 9000, Transport.UDP),
            ("0.0.0.0", 1024, Transport.TCP),
            ("::", 8443, Transport.TCP),
        ]:
            diagnosis = diagnose_bind(address, port, proto, netns=ns.name)
            assert diagnosis.ok, (address, port, diagnosis.findings)
            assert real_bind(ns, address or "::", port, proto.value) == 0

    def test_a_neighbour_on_another_address_or_protocol_is_no_conflict(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        holders.append(Holder(ns, "127.0.0.1", 8080))
        holders.append(Holder(ns, LAB4, 8081, "udp"))
        holders.append(Holder(ns, "::", 8082, v6only=True))
        assert diagnose_bind(LAB4, 8080, netns=ns.name).ok
        assert diagnose_bind(LAB4, 8081, Transport.TCP, netns=ns.name).ok
        # IPV6_V6ONLY is invisible to the inventory: the trial bind clears the IPv4 bind.
        assert diagnose_bind("0.0.0.0", 8082, netns=ns.name).ok
        assert real_bind(ns, "0.0.0.0", 8082) == 0

    def test_a_busy_listener_elsewhere_raises_nothing(self, ns: LabNamespace, holders: list[Holder]) -> None:
        holders.append(Holder(ns, "127.0.0.1", 7000))
        script = (
            "import socket, time\n"
            "c = [socket.create_connection(('127.0.0.1', 7000)) for _ in range(2000)]\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"
        )
        clients = subprocess.Popen(
            ns.command([sys.executable, "-c", script]), stdout=subprocess.PIPE, text=True
        )
        try:
            assert clients.stdout is not None and clients.stdout.readline().strip() == "ready"
            assert diagnose_bind(None, 7001, netns=ns.name).ok
            assert diagnose_bind(LAB4, 7002, netns=ns.name).ok
        finally:
            clients.kill()
            clients.wait(timeout=10)


@needs_root
class TestFaults:
    def test_port_in_use(self, ns: LabNamespace, holders: list[Holder]) -> None:
        holders.append(Holder(ns, "0.0.0.0", 8080))
        for address in (None, "0.0.0.0"):
            diagnosis = diagnose_bind(address, 8080, netns=ns.name)
            assert diagnosis.code is Code.PORT_IN_USE
        finding = diagnosis.findings[0]
        assert f"pid {holders[0].pid}" in finding.summary and "0.0.0.0:8080" in finding.summary
        assert Source.BIND in {e.source for e in finding.evidence}
        assert real_bind(ns, "0.0.0.0", 8080) == errno.EADDRINUSE
        apply_fix(diagnosis)
        after = wait_until_ok(lambda: diagnose_bind("0.0.0.0", 8080, netns=ns.name))
        assert after.code is Code.OK
        assert real_bind(ns, "0.0.0.0", 8080) == 0

    def test_port_in_use_udp(self, ns: LabNamespace, holders: list[Holder]) -> None:
        holders.append(Holder(ns, LAB4, 5353, "udp"))
        diagnosis = diagnose_bind(LAB4, 5353, Transport.UDP, netns=ns.name)
        assert diagnosis.code is Code.PORT_IN_USE
        apply_fix(diagnosis)
        assert wait_until_ok(lambda: diagnose_bind(LAB4, 5353, Transport.UDP, netns=ns.name)).ok
        assert real_bind(ns, LAB4, 5353, "udp") == 0

    @pytest.mark.parametrize("proto", ["tcp", "udp"])
    def test_port_in_use_by_a_so_reuseport_holder_is_shared_by_its_user(
        self, ns: LabNamespace, holders: list[Holder], proto: str
    ) -> None:
        holders.append(Holder(ns, LAB4, 8080, proto, reuseport=True, user="nobody"))
        transport = Transport(proto)
        diagnosis = diagnose_bind(LAB4, 8080, transport, netns=ns.name)
        assert diagnosis.code is Code.PORT_IN_USE, diagnosis.findings
        fix = diagnosis.findings[0].fix
        assert fix is not None and fix.text.startswith("set SO_REUSEPORT on the new socket before bind")
        assert "as user nobody (uid 65534)" in fix.text
        assert "so it cannot join" in fix.text  # this process is root: another user
        for_nobody = diagnose_bind(LAB4, 8080, transport, user="nobody", netns=ns.name).findings[0].fix
        assert for_nobody is not None and "SO_REUSEPORT" in for_nobody.text
        assert "cannot join" not in for_nobody.text
        # The kernel agrees: the holder's user with SO_REUSEPORT binds beside it; root with it,
        # or the holder's user without it, does not.
        assert real_bind(ns, LAB4, 8080, proto, user="nobody", reuseport=True) == 0
        assert real_bind(ns, LAB4, 8080, proto, reuseport=True) == errno.EADDRINUSE
        assert real_bind(ns, LAB4, 8080, proto, user="nobody") == errno.EADDRINUSE

    def test_a_holder_without_so_reuseport_is_not_offered_it(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        holders.append(Holder(ns, LAB4, 8080, user="nobody"))
        diagnosis = diagnose_bind(LAB4, 8080, user="nobody", netns=ns.name)
        assert diagnosis.code is Code.PORT_IN_USE
        fix = diagnosis.findings[0].fix
        assert fix is not None and "SO_REUSEPORT" not in fix.text
        shown = [e.showed for e in diagnosis.findings[0].evidence if e.source is Source.BIND]
        assert shown and shown[0].endswith(
            "with SO_REUSEPORT as user nobody (uid 65534): EADDRINUSE (Address already in use)"
        )
        assert real_bind(ns, LAB4, 8080, user="nobody", reuseport=True) == errno.EADDRINUSE

    @pytest.mark.parametrize(
        ("held", "wanted", "v6only"),
        [
            ("0.0.0.0", LAB4, False),  # a wildcard holder, a specific bind
            (LAB4, "0.0.0.0", False),  # a specific holder, a wildcard bind
            ("::", LAB4, False),  # a dual-stack IPv6 wildcard holds the IPv4 address too
            ("::", LAB6, True),  # the IPv6 wildcard, even IPV6_V6ONLY, holds IPv6 addresses
            ("0.0.0.0", "::", False),  # a dual-stack bind of :: needs 0.0.0.0 too
        ],
    )
    def test_address_conflict(
        self, ns: LabNamespace, holders: list[Holder], held: str, wanted: str, v6only: bool
    ) -> None:
        holders.append(Holder(ns, held, 8080, v6only=v6only))
        diagnosis = diagnose_bind(wanted, 8080, netns=ns.name)
        assert diagnosis.code is Code.ADDRESS_CONFLICT, diagnosis.findings
        assert real_bind(ns, wanted, 8080) == errno.EADDRINUSE
        apply_fix(diagnosis)
        assert wait_until_ok(lambda: diagnose_bind(wanted, 8080, netns=ns.name)).ok
        assert real_bind(ns, wanted, 8080) == 0

    def test_time_wait_only(self, ns: LabNamespace) -> None:
        made = ns.run([sys.executable, "-c", _TIME_WAIT, LAB4, "8080"], timeout=30)
        assert made.returncode == 0, made.stderr
        diagnosis = diagnose_bind(LAB4, 8080, netns=ns.name)
        assert diagnosis.code is Code.TIME_WAIT_ONLY, diagnosis.findings
        assert real_bind(ns, LAB4, 8080) == errno.EADDRINUSE
        trial = [e for e in diagnosis.findings[0].evidence if e.source is Source.BIND]
        assert trial and "with SO_REUSEADDR: succeeded" in trial[0].showed
        apply_fix(diagnosis)
        assert diagnose_bind(LAB4, 8080, netns=ns.name).ok
        assert real_bind(ns, LAB4, 8080) == 0

    def test_privileged_port_for_a_user(self, ns: LabNamespace) -> None:
        diagnosis = diagnose_bind(None, 80, user="nobody", netns=ns.name)
        assert diagnosis.code is Code.PRIVILEGED_PORT
        assert real_bind(ns, "::", 80, user="nobody") == errno.EACCES
        assert diagnose_bind(None, 80, netns=ns.name).ok  # root may
        apply_fix(diagnosis)
        assert diagnose_bind(None, 80, user="nobody", netns=ns.name).ok
        assert real_bind(ns, "::", 80, user="nobody") == 0

    def test_privileged_port_for_a_process(self, ns: LabNamespace) -> None:
        sleeper = subprocess.Popen(
            ns.command(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sleep", "60"])
        )
        try:
            deadline = time.monotonic() + 5
            comm = ""
            while comm != "sleep" and time.monotonic() < deadline:  # until setpriv has exec'd
                time.sleep(0.02)
                with open(f"/proc/{sleeper.pid}/comm") as file:
                    comm = file.read().strip()
            assert comm == "sleep"
            diagnosis = diagnose_bind(LAB4, 443, pid=sleeper.pid, netns=ns.name)
            assert diagnosis.code is Code.PRIVILEGED_PORT
            assert f"pid {sleeper.pid}" in diagnosis.findings[0].summary
            fix = diagnosis.findings[0].fix
            assert fix is not None and "setcap 'cap_net_bind_service=+ep' /usr/bin/sleep" in fix.text
            assert diagnose_bind(LAB4, 443, pid=1, netns=ns.name).ok  # init holds every capability
            apply_fix(diagnosis)
            assert diagnose_bind(LAB4, 443, pid=sleeper.pid, netns=ns.name).ok
            assert real_bind(ns, LAB4, 443, user="nobody") == 0
        finally:
            sleeper.kill()
            sleeper.wait(timeout=10)

    def test_a_pid_in_another_namespace_brings_its_namespace(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        # As for a container's process: no netns given, the pid's own namespace is inspected.
        holders.append(Holder(ns, "0.0.0.0", 8080))
        pid = holders[0].pid
        diagnosis = diagnose_bind(None, 8080, pid=pid)
        assert diagnosis.code is Code.PORT_IN_USE
        assert f"pid {pid}" in diagnosis.findings[0].summary
        by_path = diagnose_bind(LAB4, 8080, netns=f"/proc/{pid}/ns/net")
        assert by_path.code is Code.ADDRESS_CONFLICT
        ephemeral = diagnose_bind(None, 40000, pid=pid)
        fix = ephemeral.findings[0].fix
        assert fix is not None and fix.command is not None
        assert fix.command.startswith(f"nsenter --net=/proc/{pid}/ns/net sysctl -w ")
        apply_fix(ephemeral)
        assert diagnose_bind(None, 40000, pid=pid).ok
        assert real_bind(ns, "::", 40000) == 0

    def test_a_missing_namespace_path_is_bad_input(self) -> None:
        with pytest.raises(UsageError, match="no such file"):
            diagnose_bind(None, 8080, netns="/proc/999999999/ns/net")

    def test_ephemeral_range(self, ns: LabNamespace) -> None:
        assert ns.run(["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=40100-40110"]).returncode == 0
        diagnosis = diagnose_bind(None, 40000, netns=ns.name)
        assert diagnosis.code is Code.EPHEMERAL_RANGE
        assert diagnose_bind(None, 40105, netns=ns.name).ok  # already reserved
        apply_fix(diagnosis)
        reserved = ns.run(["sysctl", "-n", "net.ipv4.ip_local_reserved_ports"]).stdout.strip()
        assert reserved == "40000,40100-40110"  # the earlier reservation is kept
        assert diagnose_bind(None, 40000, netns=ns.name).ok
        assert real_bind(ns, "::", 40000) == 0

    @pytest.mark.parametrize("address", ["198.51.100.7", "2001:db8:ffff::7"])
    def test_address_not_local(self, ns: LabNamespace, address: str) -> None:
        diagnosis = diagnose_bind(address, 8080, netns=ns.name)
        assert diagnosis.code is Code.ADDRESS_NOT_LOCAL
        assert real_bind(ns, address, 8080) == errno.EADDRNOTAVAIL
        apply_fix(diagnosis)
        assert diagnose_bind(address, 8080, netns=ns.name).ok
        assert real_bind(ns, address, 8080) == 0

    def test_the_host_is_untouched(self, ns: LabNamespace) -> None:
        # The fixes run with `ip netns exec`: the host's own sysctls stay as they were.
        host_setting = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        before = host_setting.read_text()
        diagnosis = diagnose_bind(None, 80, user="nobody", netns=ns.name)
        apply_fix(diagnosis)
        assert host_setting.read_text() == before


# --- the command line: `portkit diagnose --bind` ----------------------------------------------


def cli(ns: LabNamespace, *args: str) -> subprocess.CompletedProcess[str]:
    """`portkit diagnose ARGS` run inside the namespace, as a user would."""
    return ns.run([sys.executable, "-m", "portkit", "diagnose", *args], timeout=60)


@needs_root
class TestCommandLine:
    def test_bindable_exits_0(self, ns: LabNamespace) -> None:
        done = cli(ns, "--bind", f"{LAB4}:8080/udp", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["kind"] == "bind" and report["code"] == "OK" and report["ok"] is True
        assert report["target"] == f"{LAB4}:8080/udp"
        assert report["findings"] == []
        assert {c["name"] for c in report["checks"]} >= {"address is local", "port free", "trial bind"}

    def test_in_use_exits_1_with_the_holder_and_its_fix(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        holders.append(Holder(ns, "0.0.0.0", 8080))
        done = cli(ns, "--bind", "8080", "--json")
        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["code"] == "PORT_IN_USE"
        finding = report["findings"][0]
        assert finding["fix"]["command"] == f"kill {holders[0].pid}"
        assert "bind" in {e["source"] for e in finding["evidence"]}

    def test_netns_diagnoses_a_bind_in_another_namespace_from_here(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        holders.append(Holder(ns, LAB4, 8085))
        argv = [sys.executable, "-m", "portkit", "diagnose", "--bind", f"{LAB4}:8085", "--netns", ns.name]
        done = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["code"] == "PORT_IN_USE"
        assert report["findings"][0]["fix"]["command"] == f"kill {holders[0].pid}"
        holders[0].stop()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and done.stdout.startswith("OK "), done.stdout + done.stderr

    def test_user_and_pid_choose_the_binder(self, ns: LabNamespace) -> None:
        done = cli(ns, "--bind", "80", "--user", "nobody")
        assert done.returncode == 1
        first = done.stdout.splitlines()[0]
        assert first.startswith("PRIVILEGED_PORT  *:80/tcp:") and "user nobody" in first
        # run under `ip netns exec`: the fix names the namespace, so it also works from the host
        assert f"$ ip netns exec {ns.name} sysctl -w net.ipv4.ip_unprivileged_port_start=80" in done.stdout
        assert cli(ns, "--bind", "80", "--pid", "1").returncode == 0  # init may bind it
        assert cli(ns, "--bind", "80").returncode == 0  # so may root, running portkit

    def test_explain_lists_every_check(self, ns: LabNamespace) -> None:
        done = cli(ns, "--bind", "198.51.100.9:8080", "--explain")
        assert done.returncode == 1
        assert done.stdout.startswith("ADDRESS_NOT_LOCAL  198.51.100.9:8080/tcp:")
        assert "[!!] trial bind: bind(198.51.100.9:8080): EADDRNOTAVAIL" in done.stdout
        assert "[ok] privileged port:" in done.stdout

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (("--bind", "80", "--pid", "4000000"), "no process with pid 4000000"),
            (("--bind", "80", "--user", "nosuchuser"), "invalid user 'nosuchuser'"),
            (("--bind", "70000"), "70000"),
            (("--bind", "nohost:80"), "nohost"),
            (("--bind", "80", "--netns", "pk-no-such-ns"), "unknown network namespace 'pk-no-such-ns'"),
            (("127.0.0.1:80", "--netns", "x"), "--netns, --pid and --user apply to --bind"),
        ],
    )
    def test_bad_input_exits_2_with_one_line(
        self, ns: LabNamespace, args: tuple[str, ...], says: str
    ) -> None:
        done = cli(ns, *args)
        assert done.returncode == 2
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr


@needs_root
class TestWithoutRoot:
    """portkit run by an ordinary user: what can be read is read, and the answer says what root adds."""

    def as_nobody(self, ns: LabNamespace, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        return ns.run(
            [*argv, sys.executable, "-m", "portkit", "diagnose", *args, "--json"], timeout=60, cwd="/"
        )

    def test_a_privileged_port_for_the_user_running_portkit(self, ns: LabNamespace) -> None:
        done = self.as_nobody(ns, "--bind", "80")
        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["code"] == "PRIVILEGED_PORT"
        trial = next(c for c in report["checks"] if c["name"] == "trial bind")
        assert "EACCES" in trial["detail"]  # the kernel agrees

    def test_a_holder_of_another_user_is_found_but_not_named(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        holders.append(Holder(ns, "0.0.0.0", 8080))
        done = self.as_nobody(ns, "--bind", "8080")
        assert done.returncode == 1, done.stderr
        report = json.loads(done.stdout)
        assert report["code"] == "PORT_IN_USE"
        assert "cannot see" in report["findings"][0]["summary"]
        assert report["certainty"] == "partial"
        assert any("root would name them" in limit for limit in report["limits"])

    def test_so_reuseport_sharing_is_tried_as_the_user_running_portkit_or_said_to_need_root(
        self, ns: LabNamespace, holders: list[Holder]
    ) -> None:
        holders.append(Holder(ns, LAB4, 8080, reuseport=True, user="nobody"))
        own = json.loads(self.as_nobody(ns, "--bind", f"{LAB4}:8080").stdout)
        assert own["code"] == "PORT_IN_USE"
        assert own["findings"][0]["fix"]["text"].startswith("set SO_REUSEPORT on the new socket before bind")
        holders.append(Holder(ns, LAB4, 8081, reuseport=True))  # root's
        other = json.loads(self.as_nobody(ns, "--bind", f"{LAB4}:8081").stdout)
        assert other["code"] == "PORT_IN_USE"
        assert "SO_REUSEPORT" not in other["findings"][0]["fix"]["text"]
        assert any("SO_REUSEPORT" in limit and "needs root" in limit for limit in other["limits"])
