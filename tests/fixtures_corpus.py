"""The real-world corpus lab: a rule set from tests/corpus/firewall loaded into a namespace by
the real tool, a SYN scan (nmap) from a peer namespace, and portkit's prediction of each port.

Each rule set gets its own client/server namespace pair (names carry the pid and a random
suffix). The server's veth is named as the rules expect (`pppoe-wan`, `eth0`, `zone3`...); both
sides hold only their own address with a host route to the peer, and static neighbour entries,
so a rule set that drops ICMPv6 or ARP-unrelated traffic does not break the lab. A listener
answers on every probed port, so an accepted SYN is `open`, a TCP reset `closed`, and a drop or
an ICMP error `filtered` (nmap's reason tells those two apart).

What portkit predicts comes from the rules as `fw check` reads them: the live ruleset of the
namespace (`read_live`, with the namespace's addresses and routes) and the rules file itself.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portkit.firewall import (
    CtState,
    Decision,
    Direction,
    Packet,
    Ruleset,
    Verdict,
    evaluate,
    export_ruleset,
    import_ufw,
    load_file,
    local_addresses,
    read_live,
)
from portkit.firewall._live import forwarding_state, route_lookup
from portkit.testing import LabNamespace, connect

CORPUS = Path(__file__).resolve().parent / "corpus" / "firewall"

# portkit's reject answers, as nmap names the reason of a filtered port.
NMAP_REASON = {
    "tcp-reset": "reset",
    "icmp-port-unreachable": "port-unreach",
    "icmpv6-port-unreachable": "port-unreach",
    "icmp-host-unreachable": "host-unreach",
    "icmp-net-unreachable": "net-unreach",
    "icmp-prot-unreachable": "proto-unreach",
    "icmp-admin-prohibited": "admin-prohibited",
    "icmp-host-prohibited": "host-prohibited",
    "icmp-net-prohibited": "net-prohibited",
}

# portkit's nft script import parses in a scratch namespace named after the pid: one at a time.
_PARSE_LOCK = threading.Lock()


def _run(
    args: list[str], *, stdin: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, input=stdin, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[:400]}")
    return proc


# --- specs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """How one rule set is probed (tests/corpus/firewall/specs.toml)."""

    name: str
    format: str
    family: int
    server_if: str
    server: str
    client: str
    tcp: tuple[int, ...]
    sport: int
    extra_links: tuple[str, ...] = ()
    ufw_input: str = "DROP"

    @property
    def path(self) -> Path:
        return CORPUS / self.name


def load_specs() -> list[Spec]:
    doc = tomllib.loads((CORPUS / "specs.toml").read_text())
    defaults = doc.pop("defaults")
    specs = []
    for name, table in doc.items():
        merged: dict[str, Any] = {**defaults, **table}
        specs.append(
            Spec(
                name=name,
                format=merged["format"],
                family=int(merged["family"]),
                server_if=merged["server_if"],
                server=merged["server"],
                client=merged["client"],
                tcp=tuple(int(p) for p in merged["tcp"]),
                sport=int(merged["sport"]),
                extra_links=tuple(merged.get("extra_links", ())),
                ufw_input=merged.get("ufw_input", "DROP"),
            )
        )
    return specs


# --- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A port as nmap reported it."""

    state: str  # open | closed | filtered
    reason: str  # syn-ack | reset | no-response | port-unreach | ...


@dataclass(frozen=True)
class Predicted:
    """A port as portkit predicts nmap will see it."""

    state: str
    reason: str | None  # None where portkit's answer has no nmap reason name we can map
    uncertain: bool
    why: str

    def agrees(self, seen: Seen) -> bool:
        if self.state != seen.state:
            return False
        return self.reason is None or self.reason == seen.reason


def is_uncertain(decision: Decision) -> bool:
    """Whether portkit marked its answer as not certain (`Decision.certain`: its branches, one
    per way an undecided match can go, end in more than one outcome). Notes about assumptions
    whose branches all agree do not make an answer uncertain."""
    return not decision.certain


def predict_port(
    ruleset: Ruleset,
    spec: Spec,
    port: int,
    *,
    local: frozenset[Any] | None = None,
    route: Any = None,
    forwarding: dict[int, bool] | None = None,
    limits: bool | None = None,
) -> Predicted:
    """What a SYN scan of `port` should see: the SYN's fate, then the SYN-ACK's on the way out.
    `limits`: rate limits stated as not reached (True), as `fw check --limits` states them."""
    client = ipaddress.ip_address(spec.client)
    server = ipaddress.ip_address(spec.server)
    syn = Packet(6, client, server, spec.sport, port, iif=spec.server_if, state=CtState.NEW)
    d = evaluate(
        ruleset, syn, local_addresses=local, route=route, forwarding=forwarding, listening=True, limits=limits
    )
    unsure = is_uncertain(d)
    why = d.reason
    if d.verdict is Verdict.DROP:
        return Predicted("filtered", "no-response", unsure, why)
    if d.verdict is Verdict.REJECT:
        answer = d.reject_with or ""
        state = "closed" if answer == "tcp-reset" else "filtered"
        return Predicted(state, NMAP_REASON.get(answer), unsure, why)
    if d.direction is not Direction.INPUT:
        # Accepted on the way to another host: the scan sees whatever that host does.
        state = d.scanner.state if d.scanner else "open"
        return Predicted(state, None, unsure, f"{d.direction.value}: {why}")
    synack = Packet(6, server, client, port, spec.sport, oif=spec.server_if, state=CtState.ESTABLISHED)
    out = evaluate(
        ruleset, synack, direction=Direction.OUTPUT, local_addresses=local, route=route, limits=limits
    )
    unsure = unsure or is_uncertain(out)
    if out.verdict is not Verdict.ACCEPT:
        return Predicted("filtered", None, unsure, f"SYN-ACK {out.outcome}: {out.reason}")
    return Predicted("open", "syn-ack", unsure, why)


# --- the lab ----------------------------------------------------------------------------------------

_LISTENER = textwrap.dedent("""
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for port in [int(p) for p in sys.argv[1].split(",")]:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            try:
                key.fileobj.accept()[0].close()
            except OSError:
                pass
""")

_UFW_PARSE = textwrap.dedent("""
    import gettext, json, shlex, sys
    gettext.install("ufw")
    import ufw.frontend
    bad = []
    for line in sys.stdin.read().splitlines():
        if not line.startswith("ufw "):
            continue
        try:
            ufw.frontend.parse_command(shlex.split(line))
        except (SystemExit, Exception) as e:
            bad.append(line)
    print(json.dumps(bad))
""")


class CorpusLab:
    """A client and a server namespace (portkit.testing) joined by a veth pair, for one rule set."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.client_ns = LabNamespace("pkcc")
        self.server_ns = LabNamespace("pkcs")
        self.client = self.client_ns.name
        self.server = self.server_ns.name
        self.client_if = "scan0"
        self.dir = Path(tempfile.mkdtemp(prefix="pkc-corpus-"))
        self.listener: subprocess.Popen[str] | None = None

    def __enter__(self) -> CorpusLab:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, which: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", which, *args]

    def _setup(self) -> None:
        s, spec = self.server, self.spec
        self.client_ns.open()
        self.server_ns.open()
        bits = 32 if spec.family == 4 else 128
        connect(
            self.client_ns, self.client_if, [f"{spec.client}/{bits}"],
            self.server_ns, spec.server_if, [f"{spec.server}/{bits}"],
        )  # fmt: skip
        for i, name in enumerate(spec.extra_links):
            self.server_ns.ip("link", "add", name, "type", "veth", "peer", "name", f"xpeer{i}")
            self.server_ns.ip("link", "set", name, "up")
            self.server_ns.ip("link", "set", f"xpeer{i}", "up")
        self.listener = subprocess.Popen(
            self.ns(s, sys.executable, "-c", _LISTENER, ",".join(map(str, spec.tcp))),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.listener.stdout is not None
        if self.listener.stdout.readline().strip() != "ready":
            raise RuntimeError("the corpus listener did not start")

    def close(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait(timeout=10)
            self.listener = None
        self.client_ns.close()
        self.server_ns.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- rules ---

    def flush(self) -> None:
        """Empty the server's rules: iptables-nft tables are nftables tables too."""
        _run(self.ns(self.server, "nft", "flush", "ruleset"))

    def load_original(self) -> None:
        spec = self.spec
        if spec.format == "nft":
            _run(self.ns(self.server, "nft", "-f", str(spec.path)))
        elif spec.format == "nft-json":
            _run(self.ns(self.server, "nft", "-j", "-f", str(spec.path)))
        elif spec.format in ("iptables", "ip6tables"):
            _run(self.ns(self.server, f"{spec.format}-restore"), stdin=spec.path.read_text())
        elif spec.format == "ufw":
            _run(self.ns(self.server, "/usr/lib/ufw/ufw-init", "--datadir", str(self.ufw_datadir()), "start"))
        else:
            raise ValueError(f"unknown corpus format {spec.format!r}")

    def ufw_datadir(self) -> Path:
        """ufw-init's data directory: the corpus rules and a defaults file of the test's own."""
        root = self.dir / "ufw"
        if not root.exists():
            (root / "etc" / "ufw").mkdir(parents=True)
            (root / "etc" / "default").mkdir(parents=True)
            for f in self.spec.path.iterdir():
                shutil.copy(f, root / "etc" / "ufw" / f.name)
            (root / "etc" / "ufw" / "sysctl.conf").write_text("")
            (root / "etc" / "ufw" / "ufw.conf").write_text("ENABLED=yes\nLOGLEVEL=low\n")
            (root / "etc" / "default" / "ufw").write_text(
                "IPV6=yes\n"
                f'DEFAULT_INPUT_POLICY="{self.spec.ufw_input}"\n'
                'DEFAULT_OUTPUT_POLICY="ACCEPT"\n'
                'DEFAULT_FORWARD_POLICY="DROP"\n'
                'DEFAULT_APPLICATION_POLICY="SKIP"\n'
                "MANAGE_BUILTINS=no\n"
                f"IPT_SYSCTL={root / 'etc' / 'ufw' / 'sysctl.conf'}\n"
                'IPT_MODULES=""\n'
            )
        return root

    def file_ruleset(self) -> Ruleset:
        """The rules as `fw check --rules FILE` reads them (a ufw directory with the test's own
        defaults file: `load_file` would read the host's /etc/default/ufw)."""
        spec = self.spec
        if spec.format == "ufw":
            datadir = self.ufw_datadir()
            return import_ufw(
                datadir / "etc" / "ufw",
                version=spec.family,
                defaults_file=datadir / "etc" / "default" / "ufw",
            )
        with _PARSE_LOCK:
            return load_file(spec.path)

    def live_ruleset(self) -> Ruleset:
        return read_live(self.server)

    def live_context(self) -> tuple[frozenset[Any], Any, dict[int, bool]]:
        """What `fw check --netns` reads besides the rules: addresses, routes and forwarding
        (IPv4's is the input interface's own setting)."""
        local = frozenset(ipaddress.ip_address(a) for a in local_addresses(self.server))
        forwarding = forwarding_state(self.server, self.spec.server_if)
        return local, route_lookup(self.server), forwarding

    # --- probes ---

    def scan(self) -> dict[int, Seen]:
        spec = self.spec
        args = [
            "nmap", "-sS", "-Pn", "-n", "--reason", "-oX", "-",
            "-p", ",".join(map(str, spec.tcp)),
            "-g", str(spec.sport),
            "-e", self.client_if,
            "--send-ip",  # the kernel resolves the neighbour (a static entry), not nmap
            "-r",  # ports in order: rate-limit rules (ufw limit, -m recent) then hit the same ports each run
            "--max-retries", "1",
            "--initial-rtt-timeout", "100ms",
            "--max-rtt-timeout", "1000ms",
            "--host-timeout", "60s",
        ]  # fmt: skip
        if spec.family == 6:
            args.append("-6")
        out = _run(self.ns(self.client, *args, spec.server), timeout=90).stdout
        seen: dict[int, Seen] = {}
        for port in ET.fromstring(out).iter("port"):
            st = port.find("state")
            assert st is not None
            seen[int(port.get("portid", "0"))] = Seen(st.get("state", ""), st.get("reason", ""))
        missing = set(spec.tcp) - set(seen)
        if missing:
            raise RuntimeError(f"nmap reported no state for ports {sorted(missing)}")
        return seen


# --- exports ---------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    target: str
    status: str  # validated | refused | failed | widened | not-validated | unread
    detail: str = ""
    problems: list[str] = field(default_factory=list)


EXPORT_TARGETS = ("nft", "iptables", "ip6tables", "ufw", "firewalld")


def check_export(lab: CorpusLab, model: Ruleset, target: str, original: dict[int, Seen]) -> ExportResult:
    """Export `model`, validate it with the real tool; where it loads, scan it and compare."""
    from portkit.errors import PortkitError

    try:
        text, problems = export_ruleset(model, target)
    except PortkitError as exc:
        return ExportResult(target, "refused", str(exc))
    if target == "firewalld" and shutil.which("firewall-cmd") is None:
        return ExportResult(target, "not-validated", "firewall-cmd is not installed", problems)
    if target == "ufw":
        ufw_python = "/usr/bin/python3"
        bad = json.loads(_run([ufw_python, "-c", _UFW_PARSE], stdin=text).stdout or "[]")
        if bad:
            return ExportResult(target, "failed", f"ufw's parser refuses: {bad[:3]}", problems)
        return ExportResult(target, "validated", "syntax checked by ufw's own parser (not loaded)", problems)
    lab.flush()
    if target == "nft":
        checked = _run(lab.ns(lab.server, "nft", "-c", "-f", "-"), stdin=text, check=False)
        load = lab.ns(lab.server, "nft", "-f", "-")
    else:
        checked = _run(lab.ns(lab.server, f"{target}-restore", "--test"), stdin=text, check=False)
        load = lab.ns(lab.server, f"{target}-restore")
    if checked.returncode != 0:
        return ExportResult(target, "failed", checked.stderr.strip()[:300], problems)
    loaded = _run(load, stdin=text, check=False)
    if loaded.returncode != 0:
        return ExportResult(
            target, "failed", f"passes the check, fails to load: {loaded.stderr.strip()[:300]}", problems
        )
    if target == {4: "ip6tables", 6: "iptables"}[lab.spec.family]:
        return ExportResult(
            target, "validated", "loaded (not scanned: the probes are of the other family)", problems
        )
    seen = lab.scan()
    wider = [p for p, s in seen.items() if s.state == "open" and original[p].state != "open"]
    if wider:
        return ExportResult(target, "widened", f"open after export, not before: {wider}", problems)
    return ExportResult(target, "validated", "loaded and scanned: never more open", problems)
