"""The firewall lab: two portkit.testing namespaces joined by a veth pair, a listener on the
server side, a prober on the client side, and hypothesis strategies for rule sets and probes.

The kernel is the oracle: a generated rule set is loaded into the server namespace, every
probe is a real TCP connect or UDP datagram from the client namespace, and what happened
(connected, refused, no route, silence, delivered) is compared with portkit's prediction.
Only addresses inside these namespaces are ever used. Everything is torn down in `close()`.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from portkit.firewall import (
    Chain,
    ChainType,
    CtState,
    Direction,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    NamedSet,
    Packet,
    Reject,
    RejectType,
    Ruleset,
    Table,
    Verdict,
    evaluate,
    import_nft_json,
    render_nft,
)
from portkit.firewall._eval import ANSWER_ERRNO
from portkit.testing import LabNamespace, connect

CLIENT4 = ("10.66.0.1", "10.66.0.3")
SERVER4 = ("10.66.0.2", "10.66.0.4")
CLIENT6 = ("fd66::1", "fd66::3")
SERVER6 = ("fd66::2", "fd66::4")
PORTS = tuple(range(2000, 2012))  # the server listens on these, TCP and UDP
SPORT_SPAN = 64  # logical source ports 0..63, shifted to a fresh block per example


def _run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, input=stdin, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


_LISTENER = textwrap.dedent("""
    import selectors, socket, sys
    ports = [int(p) for p in sys.argv[2].split(",")]
    log = open(sys.argv[1], "a", buffering=1)
    sel = selectors.DefaultSelector()
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                s.listen(512)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, (kind, port))
    sel.register(sys.stdin, selectors.EVENT_READ, None)

    def drain(sock, kind, port):
        # Everything the kernel has queued: handshakes completed, datagrams delivered.
        while True:
            try:
                if kind == socket.SOCK_STREAM:
                    c, peer = sock.accept()
                    log.write(f"tcp {peer[0]} {peer[1]} {port}\\n")
                    c.close()
                else:
                    data, peer = sock.recvfrom(2048)
                    log.write(f"udp {peer[0]} {peer[1]} {port}\\n")
            except BlockingIOError:
                return
            except OSError:
                return

    print("ready", flush=True)
    while True:
        for key, _ in sel.select(timeout=1):
            if key.data is None:
                if not sys.stdin.readline():
                    sys.exit(0)
                for k in list(sel.get_map().values()):
                    if k.data is not None:
                        drain(k.fileobj, *k.data)
                log.flush()
                print("synced", flush=True)
            else:
                drain(key.fileobj, *key.data)
""")

_PROBER = textwrap.dedent("""
    import errno, json, select, socket, sys, time
    probes = json.load(sys.stdin)
    deadline = float(sys.argv[1])
    socks = {}
    out = {}
    for i, p in enumerate(probes):
        fam = socket.AF_INET6 if ":" in p["dst"] else socket.AF_INET
        kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(fam, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            if fam == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR: report every ICMP error
            else:
                s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
        s.bind((p["src"], p["sport"]))
        s.setblocking(False)
        try:
            if kind == socket.SOCK_STREAM:
                s.connect_ex((p["dst"], p["dport"]))
            else:
                s.connect((p["dst"], p["dport"]))
                s.send(b"portkit probe")
        except OSError as e:
            out[i] = errno.errorcode.get(e.errno, str(e.errno))
            s.close()
            continue
        socks[s] = (i, kind)
    start = time.monotonic()
    end = start + deadline
    # Over a veth the ICMPv6 error for a SYN arrives while connect() still holds the socket
    # lock, so Linux keeps it as a soft error; the retransmitted SYN (after 1 s) then fails
    # hard. Pending IPv6 TCP probes get that long.
    v6_end = start + float(sys.argv[2])
    while socks and time.monotonic() < end or (time.monotonic() < v6_end and any(
            k == socket.SOCK_STREAM and s.family == socket.AF_INET6 for s, (i, k) in socks.items())):
        if time.monotonic() >= end:
            for s, (i, k) in list(socks.items()):
                if not (k == socket.SOCK_STREAM and s.family == socket.AF_INET6):
                    out[i] = "timeout" if k == socket.SOCK_STREAM else "silence"
                    s.close()
                    del socks[s]
        tcp_w = [s for s, (i, k) in socks.items() if k == socket.SOCK_STREAM]
        rd = [s for s in socks]
        r, w, _ = select.select(rd, tcp_w, [], max(0.0, min(0.05, v6_end - time.monotonic())))
        for s in set(r) | set(w):
            i, kind = socks[s]
            # SO_ERROR also returns *soft* errors (an ICMP error for the handshake's ACK on
            # an established connection), so ask the socket whether it is connected first.
            if kind == socket.SOCK_STREAM:
                try:
                    s.getpeername()
                    connected = True
                except OSError:
                    connected = False
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if connected or err in (errno.ECONNRESET, errno.EPIPE):
                    out[i] = "connected"
                else:
                    out[i] = errno.errorcode.get(err, str(err))
            else:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    out[i] = errno.errorcode.get(err, str(err))
                else:
                    try:
                        s.recv(2048)
                        out[i] = "reply"
                    except OSError as e:
                        out[i] = errno.errorcode.get(e.errno, str(e.errno))
            del socks[s]
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
            s.close()
    for s, (i, kind) in socks.items():
        out[i] = "timeout" if kind == socket.SOCK_STREAM else "silence"
        s.close()
    print(json.dumps([out[i] for i in range(len(probes))]))
""")


@dataclass(frozen=True)
class Probe:
    proto: str  # tcp | udp
    src: str
    sport: int  # logical 0..63
    dst: str
    dport: int

    def packet(self, base: int, iface: str, state: CtState = CtState.NEW) -> Packet:
        return Packet(
            6 if self.proto == "tcp" else 17,
            ipaddress.ip_address(self.src),
            ipaddress.ip_address(self.dst),
            base + self.sport,
            self.dport,
            iif=iface,
            state=state,
        )


class FirewallLab:
    """A client and a server namespace (portkit.testing) over a veth pair; rules go into the server."""

    def __init__(self) -> None:
        self.client_ns = LabNamespace("pk6c")
        self.server_ns = LabNamespace("pk6s")
        self.client = self.client_ns.name
        self.server = self.server_ns.name
        self.client_if = "pk6a"
        self.server_if = "pk6b"
        self.dir = Path(tempfile.mkdtemp(prefix="pk6-lab-"))
        self.log = self.dir / "listener.log"
        self.listener: subprocess.Popen[str] | None = None
        self.next_sport = 10000
        self._log_offset = 0

    def open(self) -> FirewallLab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        self.client_ns.open()
        self.server_ns.open()
        connect(
            self.client_ns,
            self.client_if,
            [*(f"{a}/24" for a in CLIENT4), *(f"{a}/64" for a in CLIENT6)],
            self.server_ns,
            self.server_if,
            [*(f"{a}/24" for a in SERVER4), *(f"{a}/64" for a in SERVER6)],
        )
        self.log.touch()
        self.listener = subprocess.Popen(
            self.server_ns.command(
                [sys.executable, "-c", _LISTENER, str(self.log), ",".join(map(str, PORTS))]
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.listener.stdout is not None
        line = self.listener.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(
                f"listener failed: {self.listener.stderr.read() if self.listener.stderr else ''}"
            )

    def _sync(self) -> None:
        assert self.listener is not None and self.listener.stdin and self.listener.stdout
        self.listener.stdin.write("sync\n")
        self.listener.stdin.flush()
        line = self.listener.stdout.readline()
        if line.strip() != "synced":
            raise RuntimeError(f"listener did not sync: {line!r}")

    def close(self) -> None:
        if self.listener is not None:
            self.listener.terminate()
            try:
                self.listener.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.listener.kill()
                self.listener.wait(timeout=5)
            self.listener = None
        self.client_ns.close()
        self.server_ns.close()
        for f in self.dir.glob("*"):
            f.unlink()
        self.dir.rmdir()

    # --- rules ---------------------------------------------------------------------------

    def load(self, ruleset: Ruleset) -> Ruleset:
        """Load a model into the server namespace; return what the kernel lists back."""
        script, problems = render_nft(ruleset)
        assert not problems, problems
        _run("ip", "netns", "exec", self.server, "nft", "-f", "-", stdin=script)
        return self.kernel_ruleset()

    def kernel_ruleset(self) -> Ruleset:
        out = _run("ip", "netns", "exec", self.server, "nft", "-j", "list", "ruleset").stdout
        return import_nft_json(out, source=f"netns {self.server}")

    def flush(self) -> None:
        _run("ip", "netns", "exec", self.server, "nft", "flush", "ruleset")

    # --- probes --------------------------------------------------------------------------

    def sport_block(self) -> int:
        """A fresh block of source ports, so no probe ever reuses a conntrack entry."""
        base = self.next_sport
        self.next_sport += SPORT_SPAN
        if self.next_sport > 60000:
            raise RuntimeError("source port blocks exhausted: open a new Lab")
        return base

    def run(
        self, probes: list[Probe], base: int, deadline: float = 0.3, v6_tcp_deadline: float = 1.4
    ) -> list[str]:
        """Fire all probes at once; return what each one observed."""
        doc = [
            {"proto": p.proto, "src": p.src, "sport": base + p.sport, "dst": p.dst, "dport": p.dport}
            for p in probes
        ]
        proc = _run(
            "ip",
            "netns",
            "exec",
            self.client,
            sys.executable,
            "-c",
            _PROBER,
            str(deadline),
            str(v6_tcp_deadline),
            stdin=json.dumps(doc),
        )
        seen = json.loads(proc.stdout)
        self._sync()  # the listener has logged every connection the kernel completed
        delivered = set()
        with self.log.open() as f:
            f.seek(self._log_offset)
            data = f.read()
            self._log_offset += len(data)
        for line in data.splitlines():
            proto, peer, sport, port = line.split()
            peer = peer.removeprefix("::ffff:")
            delivered.add((proto, str(ipaddress.ip_address(peer)), int(sport), int(port)))
        out = []
        for p, s in zip(probes, seen, strict=True):
            key = (p.proto, str(ipaddress.ip_address(p.src)), base + p.sport, p.dport)
            if p.proto == "tcp" and s == "connected":
                s = "connected+accepted" if key in delivered else "connected"
            elif p.proto == "udp" and s == "silence" and key in delivered:
                s = "delivered"
            out.append(s)
        return out


def predict(ruleset: Ruleset, probe: Probe, base: int, iface: str) -> str:
    """What the prober and the listener should see, according to portkit."""
    d = evaluate(ruleset, probe.packet(base, iface), direction=Direction.INPUT)
    if d.verdict is Verdict.DROP:
        return "timeout" if probe.proto == "tcp" else "silence"
    if d.verdict is Verdict.REJECT:
        return ANSWER_ERRNO[d.reject_with or ""]
    if probe.proto == "udp":
        return "delivered"
    ack = evaluate(ruleset, probe.packet(base, iface, CtState.ESTABLISHED), direction=Direction.INPUT)
    return "connected+accepted" if ack.verdict is Verdict.ACCEPT else "connected"


def shift_sports(ruleset: Ruleset, base: int) -> Ruleset:
    """Move logical source-port matches (0..63) to the block `base`."""

    def fix(m: Match) -> Match:
        if m.field is Field.SPORT:
            return replace(m, ranges=tuple((lo + base, hi + base) for lo, hi in m.ranges))
        return m

    tables = tuple(
        replace(
            t,
            chains=tuple(
                replace(c, rules=tuple(replace(r, matches=tuple(fix(m) for m in r.matches)) for r in c.rules))
                for c in t.chains
            ),
        )
        for t in ruleset.tables
    )
    return replace(ruleset, tables=tables)


# --- strategies -------------------------------------------------------------------------------

_V4_VALUES = [
    "10.66.0.1",
    "10.66.0.2",
    "10.66.0.3",
    "10.66.0.4",
    "10.66.0.0/30",
    "10.66.0.2/31",
    "10.66.0.0/29",
    "10.66.0.1-10.66.0.3",
    "10.66.0.3-10.66.0.4",
    "10.0.0.0/8",
]
_V6_VALUES = [
    "fd66::1",
    "fd66::2",
    "fd66::3",
    "fd66::4",
    "fd66::/126",
    "fd66::2/127",
    "fd66::/64",
    "fd66::1-fd66::3",
]
_REJECTS_ANY = [
    Reject(RejectType.ICMPX, c)
    for c in ("port-unreachable", "admin-prohibited", "host-unreachable", "no-route")
]
_REJECTS_V4 = [
    Reject(RejectType.ICMP, c)
    for c in (
        "port-unreachable",
        "host-unreachable",
        "net-unreachable",
        "admin-prohibited",
        "host-prohibited",
        "net-prohibited",
        "prot-unreachable",
    )
]
_REJECTS_V6 = [
    Reject(RejectType.ICMPV6, c)
    for c in ("port-unreachable", "admin-prohibited", "no-route", "addr-unreachable")
]


def _interval(text: str) -> tuple[int, tuple[int, int]]:
    from portkit.firewall._model import address_interval

    return address_interval(text)


@st.composite
def _address_match(draw: Any, fld: Field, sets: dict[str, NamedSet], fam: int) -> Match:
    key = f"{'s' if fld is Field.SADDR else 'd'}addrs4"
    if fam == 4 and key in sets and draw(st.booleans()):
        named = sets[key]
        return Match(fld, named.ranges, negate=draw(st.booleans()), family=4, set_name=named.name)
    pool = _V4_VALUES if fam == 4 else _V6_VALUES
    values = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    from portkit.model.intervals import merge_intervals

    ranges = merge_intervals([_interval(v)[1] for v in values])
    return Match(fld, ranges, negate=draw(st.booleans()), family=fam)


@st.composite
def _ports(draw: Any, low: int, high: int) -> tuple[tuple[int, int], ...]:
    from portkit.model.intervals import merge_intervals

    items = []
    for _ in range(draw(st.integers(1, 3))):
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, min(high, a + draw(st.sampled_from([0, 0, 1, 3, 8])))))
        items.append((a, b))
    return merge_intervals(items)


@st.composite
def _rule(
    draw: Any,
    table_family: Family,
    iface: str,
    targets: list[str],
    sets: dict[str, NamedSet],
    in_regular: bool,
) -> FilterRule:
    matches: list[Match] = []
    proto = draw(st.sampled_from([0, 6, 17]))
    if proto:
        if draw(st.booleans()) or True:
            matches.append(Match(Field.L4PROTO, ((proto, proto),), negate=False))
        if draw(st.booleans()):
            if "ports" in sets and draw(st.integers(0, 3)) == 0:
                named = sets["ports"]
                matches.append(
                    Match(
                        Field.DPORT,
                        named.ranges,
                        negate=draw(st.booleans()),
                        protos=(proto,),
                        set_name="ports",
                    )
                )
            else:
                matches.append(
                    Match(Field.DPORT, draw(_ports(1995, 2015)), negate=draw(st.booleans()), protos=(proto,))
                )
        if draw(st.integers(0, 3)) == 0:
            matches.append(
                Match(
                    Field.SPORT, draw(_ports(0, SPORT_SPAN - 1)), negate=draw(st.booleans()), protos=(proto,)
                )
            )
    # One IP family per rule: nft refuses `ip saddr ... ip6 daddr ...` (conflicting protocols).
    if table_family is Family.IP:
        fam = 4
    elif table_family is Family.IP6:
        fam = 6
    else:
        fam = draw(st.sampled_from([0, 0, 4, 6]))
    if fam:
        for fld in (Field.SADDR, Field.DADDR):
            if draw(st.integers(0, 2)) == 0:
                matches.append(draw(_address_match(fld, sets, fam)))
    if draw(st.integers(0, 4)) == 0:
        names = draw(
            st.lists(st.sampled_from([iface, "lo", "pk6*", "eth0"]), min_size=1, max_size=2, unique=True)
        )
        matches.append(Match(Field.IIF, names=tuple(names), negate=draw(st.booleans())))
    if draw(st.integers(0, 2)) == 0:
        states = draw(
            st.lists(
                st.sampled_from(["new", "established", "related", "invalid"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        )
        matches.append(Match(Field.CT_STATE, names=tuple(states), negate=draw(st.booleans())))
    if fam == 0 and table_family is Family.INET and draw(st.integers(0, 5)) == 0:
        v = draw(st.sampled_from([4, 6]))
        negate = draw(st.booleans())
        matches.append(Match(Field.NFPROTO, ((v, v),), negate=negate))
        fam = (10 - v) if negate else v
    choices = ["accept", "drop", "reject", "continue"]
    if targets:
        choices += ["jump", "goto"]
    if in_regular:
        choices.append("return")
    kind = draw(st.sampled_from(choices))
    counter = draw(st.booleans())
    if kind == "reject":
        pool = list(_REJECTS_ANY if table_family is Family.INET else [])
        if fam in (0, 4) and table_family in (Family.INET, Family.IP):
            pool += _REJECTS_V4
        if fam in (0, 6) and table_family in (Family.INET, Family.IP6):
            pool += _REJECTS_V6
        if proto == 6:
            pool.append(Reject(RejectType.TCP_RESET, ""))
        reject = draw(st.sampled_from(pool))
        return FilterRule(tuple(matches), FilterAction.REJECT, reject=reject, counter=counter)
    if kind in ("jump", "goto"):
        target = draw(st.sampled_from(targets))
        return FilterRule(tuple(matches), FilterAction(kind), target=target, counter=counter)
    return FilterRule(tuple(matches), FilterAction(kind), counter=counter or kind == "continue")


@st.composite
def _table(draw: Any, family: Family, name: str, iface: str, hooks: list[tuple[Hook, int]]) -> Table:
    sets: dict[str, NamedSet] = {}
    from portkit.model.intervals import merge_intervals

    if draw(st.booleans()):
        sets["ports"] = NamedSet("ports", "inet_service", draw(_ports(1995, 2015)), flags=("interval",))
    if family in (Family.INET, Family.IP) and draw(st.booleans()):
        vals = draw(st.lists(st.sampled_from(_V4_VALUES), min_size=1, max_size=3, unique=True))
        sets["saddrs4"] = NamedSet(
            "saddrs4", "ipv4_addr", merge_intervals([_interval(v)[1] for v in vals]), flags=("interval",)
        )
    n_regular = draw(st.integers(0, 3))
    regular_names = [f"r{i}" for i in range(n_regular)]
    chains: list[Chain] = []
    for i, rname in enumerate(regular_names):
        later = regular_names[i + 1 :]
        rules = draw(st.lists(_rule(family, iface, later, sets, True), min_size=1, max_size=4))
        chains.append(Chain(rname, tuple(rules)))
    base: list[Chain] = []
    for j, (hook, prio) in enumerate(hooks):
        rules = draw(st.lists(_rule(family, iface, regular_names, sets, False), min_size=0, max_size=6))
        policy = FilterAction.ACCEPT
        if hook is Hook.INPUT:
            policy = draw(st.sampled_from([FilterAction.ACCEPT, FilterAction.DROP]))
        base.append(Chain(f"{hook.value}{j}", tuple(rules), hook, ChainType.FILTER, prio, policy))
    return Table(family, name, (*base, *chains), tuple(sets.values()))


@st.composite
def rulesets(draw: Any, iface: str) -> Ruleset:
    """Random rule sets: one or two tables, base chains on input at different priorities
    (and sometimes on prerouting), regular chains with jumps and gotos, sets, ranges,
    negations, conntrack states and every reject kind."""
    tables = []
    layout = draw(st.sampled_from(["one", "two", "prerouting"]))
    if layout == "one":
        prios = draw(st.lists(st.sampled_from([-10, 0, 10]), min_size=1, max_size=2, unique=True))
        tables.append(draw(_table(Family.INET, "pk", iface, [(Hook.INPUT, p) for p in prios])))
    elif layout == "two":
        p1, p2 = draw(st.lists(st.sampled_from([-20, -5, 0, 5, 20]), min_size=2, max_size=2, unique=True))
        tables.append(draw(_table(Family.INET, "pk", iface, [(Hook.INPUT, p1)])))
        fam = draw(st.sampled_from([Family.IP, Family.IP6, Family.INET]))
        tables.append(draw(_table(fam, "pk2", iface, [(Hook.INPUT, p2)])))
    else:
        tables.append(draw(_table(Family.INET, "pk", iface, [(Hook.PREROUTING, -150), (Hook.INPUT, 0)])))
    return Ruleset(tuple(tables), "generated")


@st.composite
def probe_lists(draw: Any, size: int = 24) -> list[Probe]:
    probes = []
    used: set[tuple[str, str, int]] = set()
    for _ in range(size):
        fam = draw(st.sampled_from([4, 6]))
        src = draw(st.sampled_from(CLIENT4 if fam == 4 else CLIENT6))
        dst = draw(st.sampled_from(SERVER4 if fam == 4 else SERVER6))
        proto = draw(st.sampled_from(["tcp", "udp"]))
        sport = draw(st.integers(0, SPORT_SPAN - 1))
        if (proto, src, sport) in used:
            continue
        used.add((proto, src, sport))
        probes.append(Probe(proto, src, sport, dst, draw(st.sampled_from(PORTS))))
    return probes
