"""The reach fault matrix: a healthy client / router / server set of namespaces, and one fault each.

Topology (addresses from a 10.X.Y.0/24 block picked at random per lab, so parallel runs and
other labs do not share them):

    client 10.X.1.2 --- 10.X.1.1 router 10.X.2.1 --- 10.X.2.2 server (docker0 10.X.4.1) --- 10.X.4.2 container
                                        10.X.3.1 --- 10.X.3.2 server   (a second link: asymmetric routes)
                                        10.X.5.1 --- 10.X.5.2 "remote"  (10.X.9.9 behind it)

The server emulates a Docker host (Docker is not installed here): a bridge to a container
namespace and Docker's iptables chains (nat DOCKER from PREROUTING, filter FORWARD policy drop
through DOCKER-USER and DOCKER), so publishing a port is a DNAT in nat DOCKER plus an accept in
filter DOCKER, as `docker run -p` writes them. "remote" stands in for a network that is not this
machine's: its namespace is held only by an open descriptor of this process, so no inventory of
namespaces on this host can see it (no /run/netns name, no process in it).

`ReachLab.serve` opens listeners inside a namespace from this process (a thread accepts), and
each `FaultCase` injects one fault into the healthy lab and says how to take it out again.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from portkit.testing._netns import LabNamespace, connect

_DOCKER_RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {net} ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -i eth0 -o eth1 -j ACCEPT
-A FORWARD -i eth1 -o eth0 -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
"""


# The remote network answers this port with ICMP admin-prohibited (a filtering router's
# answer), every other TCP port with silence.
PROHIBITED_PORT = 40443


class _Listener:
    """A socket bound inside a namespace by this process; a thread accepts (or not)."""

    def __init__(self, sock: socket.socket, accept: bool, banner: bytes, udp: bool) -> None:
        self.sock = sock
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if accept:
            self._thread = threading.Thread(target=self._run, args=(banner, udp), daemon=True)
            self._thread.start()

    def _run(self, banner: bytes, udp: bool) -> None:
        sel = selectors.DefaultSelector()
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ)
        while not self._stop.is_set():
            if not sel.select(0.05):
                continue
            try:
                if udp:
                    data, peer = self.sock.recvfrom(4096)
                    self.sock.sendto(data or b"pong", peer)
                    continue
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if banner:
                with contextlib.suppress(OSError):
                    conn.sendall(banner)
            self.accepted.append(conn)
        sel.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@dataclass
class ReachLab:
    """The running topology: namespaces by role, addresses, and what the cases opened."""

    client: LabNamespace = field(default_factory=lambda: LabNamespace("pkdc"))
    router: LabNamespace = field(default_factory=lambda: LabNamespace("pkdr"))
    server: LabNamespace = field(default_factory=lambda: LabNamespace("pkds"))
    container: LabNamespace = field(default_factory=lambda: LabNamespace("pkdk"))
    block: int = field(default_factory=lambda: random.randrange(16, 250))
    _remote_fd: int = -1
    _listeners: list[_Listener] = field(default_factory=list)
    _clients: list[socket.socket] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def net(self, subnet: int, host: int) -> str:
        return f"10.{self.block}.{subnet}.{host}"

    def net6(self, subnet: int, host: int) -> str:
        return f"fd00:{self.block:x}:{subnet}::{host:x}"

    @property
    def server_address6(self) -> str:
        return self.net6(2, 2)

    @property
    def server_address(self) -> str:
        return self.net(2, 2)

    @property
    def remote_address(self) -> str:
        return self.net(9, 9)

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> ReachLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _build(self) -> None:
        for ns in (self.client, self.router, self.server, self.container):
            ns.open()
        n = self.net
        v6 = self.net6
        connect(self.client, "eth0", [f"{n(1, 2)}/24", f"{v6(1, 2)}/64"], self.router, "eth0",
                [f"{n(1, 1)}/24", f"{v6(1, 1)}/64"])  # fmt: skip
        connect(self.router, "eth1", [f"{n(2, 1)}/24", f"{v6(2, 1)}/64"], self.server, "eth0",
                [f"{n(2, 2)}/24", f"{v6(2, 2)}/64"])  # fmt: skip
        connect(self.router, "eth2", [f"{n(3, 1)}/24"], self.server, "eth1", [f"{n(3, 2)}/24"])
        connect(self.server, "docker0", [f"{n(4, 1)}/24"], self.container, "eth0", [f"{n(4, 2)}/24"])
        self.client.ip("route", "add", "default", "via", n(1, 1))
        self.server.ip("route", "add", "default", "via", n(2, 1))
        self.client.ip("-6", "route", "add", "default", "via", v6(1, 1))
        self.server.ip("-6", "route", "add", "default", "via", v6(2, 1))
        self.container.ip("route", "add", "default", "via", n(4, 1))
        for ns in (self.router, self.server):
            self.sysctl(ns, "net.ipv4.ip_forward=1")
        self.sysctl(self.router, "net.ipv6.conf.all.forwarding=1")
        self.restore(self.server, _DOCKER_RULES.format(net=f"{n(4, 0)}/24"))
        # The remote network: a namespace only this process's descriptor keeps alive.
        remote = LabNamespace("pkdx")
        remote.open()
        try:
            connect(self.router, "eth3", [f"{n(5, 1)}/24"], remote, "eth0", [f"{n(5, 2)}/24"])
            remote.ip("addr", "add", f"{self.remote_address}/32", "dev", "lo")
            remote.ip("route", "add", "default", "via", n(5, 1))
            remote.nft(
                "table inet remote { chain input {\n"
                "  type filter hook input priority 0;\n"
                f"  tcp dport {PROHIBITED_PORT} reject with icmpx admin-prohibited\n"
                "  tcp dport 1-65535 drop\n}\n}\n"
            )
            self.router.ip("route", "add", f"{n(9, 0)}/24", "via", n(5, 2))
            self._remote_fd = os.open(f"/run/netns/{remote.name}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            subprocess.run(["ip", "netns", "del", remote.name], capture_output=True, check=False)

    def close(self) -> None:
        self.stop_services()
        if self._remote_fd >= 0:
            os.close(self._remote_fd)  # the last reference: the kernel frees the namespace
            self._remote_fd = -1
        for ns in (self.container, self.server, self.router, self.client):
            ns.close()
            shutil.rmtree(f"/etc/netns/{ns.name}", ignore_errors=True)

    # -- tools ---------------------------------------------------------------------------------

    def sh(self, ns: LabNamespace, command: str) -> str:
        proc = ns.run(["sh", "-c", command])
        if proc.returncode != 0:
            raise RuntimeError(f"{ns}: {command}: {proc.stderr.strip()}")
        return str(proc.stdout)

    def sysctl(self, ns: LabNamespace, setting: str) -> str:
        return self.sh(ns, f"sysctl -qw {setting}")

    def restore(self, ns: LabNamespace, rules: str) -> None:
        proc = ns.run(["iptables-restore"], input=rules)
        if proc.returncode != 0:
            raise RuntimeError(f"{ns}: iptables-restore: {proc.stderr.strip()}")

    def serve(
        self,
        ns: LabNamespace,
        address: str,
        port: int,
        *,
        udp: bool = False,
        backlog: int = 128,
        accept: bool = True,
        banner: bytes = b"",
        v6only: bool | None = None,
    ) -> _Listener:
        """A listener on address:port inside `ns`, owned by this process until stop_services()."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with ns.inside():
            sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((address, port))
        if not udp:
            sock.listen(backlog)
        listener = _Listener(sock, accept, banner, udp)
        self._listeners.append(listener)
        return listener

    def connect_from_client(
        self, address: str, port: int, timeout: float = 2.0, origin: str = "client"
    ) -> socket.socket:
        """A real connection from the client (or `origin`) namespace, open until stop_services()."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        ns: LabNamespace = getattr(self, origin)
        with ns.inside():
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        self._clients.append(sock)
        sock.connect((address, port))
        return sock

    def hosts_file(self, ns: LabNamespace, text: str) -> None:
        """/etc/netns/NAME/hosts: what `ip netns exec` shows programs in `ns` as /etc/hosts."""
        os.makedirs(f"/etc/netns/{ns.name}", exist_ok=True)
        with open(f"/etc/netns/{ns.name}/hosts", "w", encoding="utf-8") as handle:
            handle.write(text)

    def reachable(self, address: str, port: int, timeout: float = 2.0, origin: str = "client") -> bool:
        try:
            self.connect_from_client(address, port, timeout, origin).close()
            return True
        except OSError:
            return False

    def spawn(self, ns: LabNamespace, argv: list[str], address: str, port: int) -> subprocess.Popen[bytes]:
        """A real daemon inside `ns`, ready once `address:port` accepts (stopped by stop_services())."""
        proc = subprocess.Popen(ns.command(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._processes.append(proc)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for _ in range(100):
            with ns.inside():
                probe = socket.socket(family, socket.SOCK_STREAM)
            with probe:
                probe.settimeout(0.2)
                if probe.connect_ex((address, port)) == 0:
                    return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{ns}: {argv[0]} did not listen on {address}:{port}")

    def stop_services(self) -> None:
        for proc in self._processes:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._processes.clear()
        for sock in self._clients:
            sock.close()
        self._clients.clear()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    udp: bool = False
    expect: str | None = None
    origin: str = "client"  # the lab namespace the diagnosis (and the real connection) runs from


@dataclass(frozen=True)
class FaultCase:
    """One fault (or none: a healthy control) and the code a diagnosis must give for it.

    `inject` builds the fault into the healthy lab and returns the target to diagnose from the
    client; `undo` takes the fault out again (after a counterfactual fix, what is left of it).
    """

    name: str
    code: str
    inject: Callable[[ReachLab, int], Target]
    undo: Callable[[ReachLab, int], object] = lambda lab, port: None
    timeout: float = 1.0
    needs: tuple[str, ...] = ()  # programs the case runs (the test skips it when one is missing)


def _nft_table(lab: ReachLab, ns: LabNamespace, hook: str, statement: str) -> str:
    return lab.sh(
        ns,
        f"nft 'add table inet pkfault; "
        f"add chain inet pkfault {hook} {{ type filter hook {hook} priority 0; }}; "
        f"add rule inet pkfault {hook} {statement}'",
    )


def _drop_table(lab: ReachLab, ns: LabNamespace) -> None:
    ns.run(["nft", "delete", "table", "inet", "pkfault"])


def _serving(lab: ReachLab, port: int, **kwargs: object) -> Target:
    lab.serve(lab.server, "0.0.0.0", port, **kwargs)  # type: ignore[arg-type]
    return Target(lab.server_address, port)


def _ruled(host: str, hook: str, statement: str) -> Callable[[ReachLab, int], Target]:
    """A fault that is one nft rule (`{port}` in `statement` is the case's port) in the `hook`
    chain of the lab's `host` ("client", "router" or "server"), in front of a serving server."""

    def inject(lab: ReachLab, port: int) -> Target:
        _nft_table(lab, getattr(lab, host), hook, statement.format(port=port))
        return _serving(lab, port)

    return inject


def _busy(lab: ReachLab, port: int) -> Target:
    lab.serve(lab.server, "0.0.0.0", port)
    for _ in range(2000):
        lab.connect_from_client(lab.server_address, port)
    return Target(lab.server_address, port)


def _backlog(lab: ReachLab, port: int) -> Target:
    lab.serve(lab.server, "0.0.0.0", port, backlog=1, accept=False)
    for _ in range(2):
        lab.connect_from_client(lab.server_address, port)
    # The kernel holds connections past the backlog only in SYN-RECV; fill the queue for sure.
    for _ in range(3):
        with contextlib.suppress(OSError):
            lab.connect_from_client(lab.server_address, port, timeout=0.3)
    return Target(lab.server_address, port)


def _no_route(lab: ReachLab, port: int) -> Target:
    lab.serve(lab.server, "0.0.0.0", port)
    lab.client.ip("route", "del", "default")
    return Target(lab.server_address, port)


def _blackhole(lab: ReachLab, port: int) -> Target:
    lab.serve(lab.server, "0.0.0.0", port)
    lab.client.ip("route", "add", "blackhole", f"{lab.server_address}/32")
    return Target(lab.server_address, port)


# The client's one source port, held by a connection to the target: the next connect() to the
# same address and port finds no free one (EADDRNOTAVAIL), as a busy proxy or a client leaking
# connections does with the whole range.
_ONE_SOURCE_PORT = "net.ipv4.ip_local_port_range=50000 50000"
_DEFAULT_SOURCE_PORTS = "net.ipv4.ip_local_port_range=32768 60999"


def _no_source_port(lab: ReachLab, port: int) -> Target:
    target = _serving(lab, port)
    lab.sh(lab.client, f"sysctl -qw '{_ONE_SOURCE_PORT}'")
    lab.connect_from_client(target.host, port)
    return target


def _rp(lab: ReachLab, port: int) -> Target:
    lab.serve(lab.server, "0.0.0.0", port)
    lab.server.ip("route", "add", lab.net(1, 0) + "/24", "via", lab.net(3, 1))
    lab.sysctl(lab.server, "net.ipv4.conf.all.rp_filter=1")
    return Target(lab.server_address, port)


def _rp_undo(lab: ReachLab, port: int) -> None:
    lab.server.run(["ip", "route", "del", lab.net(1, 0) + "/24"])
    lab.sysctl(lab.server, "net.ipv4.conf.all.rp_filter=0")
    lab.sysctl(lab.server, "net.ipv4.conf.eth0.rp_filter=0")


def _localhost(lab: ReachLab, port: int) -> Target:
    lab.hosts_file(lab.server, "127.0.0.1 localhost\n::1 localhost\n")
    lab.serve(lab.server, "127.0.0.1", port)
    return Target("localhost", port, origin="server")


def _localhost_undo(lab: ReachLab, port: int) -> None:
    shutil.rmtree(f"/etc/netns/{lab.server.name}", ignore_errors=True)


def _policy_dropped(host: str, hook: str) -> Callable[[ReachLab, int], Target]:
    """A fault that is a `hook` chain with policy drop and no rule, in the lab's `host`, in front
    of a serving server."""

    def inject(lab: ReachLab, port: int) -> Target:
        lab.sh(getattr(lab, host), f"nft 'add table inet pkfault; add chain inet pkfault {hook} "
               f"{{ type filter hook {hook} priority 0; policy drop; }}'")  # fmt: skip
        return _serving(lab, port)

    return inject



def _local(lab: ReachLab, port: int) -> Target:
    lab.serve(lab.server, "0.0.0.0", port)
    return Target(lab.server_address, port, origin="server")


def _published(lab: ReachLab, port: int, origin: str) -> Target:
    lab.serve(lab.container, "0.0.0.0", port)
    lab.sh(lab.server, f"iptables -t nat -A DOCKER ! -i docker0 -p tcp --dport {port} "
           f"-j DNAT --to-destination {lab.net(4, 2)}:{port} && iptables -A DOCKER -d {lab.net(4, 2)}/32 "
           f"! -i docker0 -o docker0 -p tcp --dport {port} -j ACCEPT")  # fmt: skip
    return Target(lab.server_address, port, origin=origin)


def _docker_user_drop(lab: ReachLab, port: int) -> Target:
    target = _published(lab, port, "client")
    lab.sh(lab.server, f"iptables -I DOCKER-USER -p tcp --dport {port} -j DROP")
    return target


def _docker_user_undo(lab: ReachLab, port: int) -> None:
    lab.server.run(["iptables", "-D", "DOCKER-USER", "-p", "tcp", "--dport", str(port), "-j", "DROP"])
    _publish_undo(lab, port)


def _redis_loopback(lab: ReachLab, port: int) -> Target:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--dir", "/tmp"]  # fmt: skip
    lab.spawn(lab.server, argv, "127.0.0.1", port)
    return Target(lab.server_address, port)


def _publish_undo(lab: ReachLab, port: int) -> None:
    lab.sh(
        lab.server,
        "iptables -t nat -F DOCKER && iptables -t nat -A DOCKER -i docker0 -j RETURN && iptables -F DOCKER",
    )


CASES: tuple[FaultCase, ...] = (
    FaultCase("healthy-local", "OK", _local),
    FaultCase("family-localhost", "FAMILY_MISMATCH", _localhost, _localhost_undo),
    FaultCase(
        "fw-input-policy-drop",
        "FW_INPUT_DROP",
        _policy_dropped("server", "input"),
        lambda lab, p: _drop_table(lab, lab.server),
    ),
    FaultCase(
        "healthy-published",
        "OK",
        lambda lab, p: _published(lab, p, "client"),
        lambda lab, p: _publish_undo(lab, p),
    ),
    FaultCase(
        "healthy-published-from-host",
        "OK",
        lambda lab, p: _published(lab, p, "server"),
        lambda lab, p: _publish_undo(lab, p),
    ),
    FaultCase(
        "not-published-from-host",
        "NOT_PUBLISHED",
        lambda lab, p: (
            lab.serve(lab.container, "0.0.0.0", p),
            Target(lab.server_address, p, origin="server"),
        )[1],
        lambda lab, p: _publish_undo(lab, p),
    ),
    FaultCase("docker-user-drop", "FW_FORWARD_DROP", _docker_user_drop, _docker_user_undo),
    FaultCase(
        "healthy-v6", "OK", lambda lab, p: (lab.serve(lab.server, "::", p), Target(lab.server_address6, p))[1]
    ),
    FaultCase(
        "family-v4-only",
        "FAMILY_MISMATCH",
        lambda lab, p: (lab.serve(lab.server, "0.0.0.0", p), Target(lab.server_address6, p))[1],
    ),
    FaultCase(
        "fw-input-drop-v6",
        "FW_INPUT_DROP",
        lambda lab, p: (
            _nft_table(lab, lab.server, "input", f"ip6 daddr {lab.server_address6} tcp dport {p} drop"),
            lab.serve(lab.server, "::", p),
            Target(lab.server_address6, p),
        )[2],
        lambda lab, p: _drop_table(lab, lab.server),
    ),
    FaultCase("redis-loopback-only", "BOUND_LOOPBACK_ONLY", _redis_loopback, needs=("redis-server",)),
    FaultCase(
        "healthy-dual-stack",
        "OK",
        lambda lab, p: (lab.serve(lab.server, "::", p, v6only=False), Target(lab.server_address, p))[1],
    ),
    FaultCase(
        "fw-input-drop-dual-stack",
        "FW_INPUT_DROP",
        lambda lab, p: (
            _nft_table(lab, lab.server, "input", f"tcp dport {p} drop"),
            lab.serve(lab.server, "::", p, v6only=False),
            Target(lab.server_address, p),
        )[2],
        lambda lab, p: _drop_table(lab, lab.server),
    ),
    FaultCase(
        "upstream-prohibited", "FILTERED_UPSTREAM", lambda lab, p: Target(lab.remote_address, PROHIBITED_PORT)
    ),
    FaultCase("router-no-route", "NO_ROUTE", lambda lab, p: Target(lab.net(7, 7), p)),
    FaultCase("no-listener-udp", "NO_LISTENER", lambda lab, p: Target(lab.server_address, p, udp=True)),
    FaultCase("healthy", "OK", lambda lab, p: _serving(lab, p)),
    FaultCase("healthy-busy", "OK", _busy),
    FaultCase(
        "healthy-udp",
        "OK",
        lambda lab, p: (
            lab.serve(lab.server, "0.0.0.0", p, udp=True),
            Target(lab.server_address, p, udp=True),
        )[1],
    ),
    FaultCase(
        "healthy-expect",
        "OK",
        lambda lab, p: (
            lab.serve(lab.server, "0.0.0.0", p, banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
            Target(lab.server_address, p, expect="ssh"),
        )[1],
    ),
    FaultCase("name-not-resolved", "NAME_NOT_RESOLVED", lambda lab, p: Target("no-such-host.invalid", p)),
    FaultCase(
        "family-v6only",
        "FAMILY_MISMATCH",
        lambda lab, p: (lab.serve(lab.server, "::", p, v6only=True), Target(lab.server_address, p))[1],
    ),
    FaultCase(
        "no-route",
        "NO_ROUTE",
        _no_route,
        lambda lab, p: lab.client.ip("route", "replace", "default", "via", lab.net(1, 1)),
    ),
    FaultCase(
        "route-blackhole",
        "ROUTE_BLACKHOLE",
        _blackhole,
        lambda lab, p: lab.client.run(["ip", "route", "del", f"{lab.server_address}/32"]) and None,
    ),
    FaultCase(
        "fw-output-drop",
        "FW_OUTPUT_DROP",
        _ruled("client", "output", "tcp dport {port} drop"),
        lambda lab, p: _drop_table(lab, lab.client),
    ),
    FaultCase(
        "fw-output-reject",
        "FW_OUTPUT_REJECT",
        _ruled("client", "output", "tcp dport {port} reject with tcp reset"),
        lambda lab, p: _drop_table(lab, lab.client),
    ),
    FaultCase(
        "fw-input-drop",
        "FW_INPUT_DROP",
        _ruled("server", "input", "tcp dport {port} drop"),
        lambda lab, p: _drop_table(lab, lab.server),
    ),
    FaultCase(
        "fw-input-reject",
        "FW_INPUT_REJECT",
        _ruled("server", "input", "tcp dport {port} reject with tcp reset"),
        lambda lab, p: _drop_table(lab, lab.server),
    ),
    FaultCase(
        "fw-input-drop-iptables",
        "FW_INPUT_DROP",
        lambda lab, p: (
            lab.sh(lab.server, f"iptables -I INPUT -p tcp --dport {p} -j DROP"),
            _serving(lab, p),
        )[1],
        lambda lab, p: (
            lab.server.run(["iptables", "-D", "INPUT", "-p", "tcp", "--dport", str(p), "-j", "DROP"]) and None
        ),
    ),
    FaultCase(
        "fw-forward-drop",
        "FW_FORWARD_DROP",
        _ruled("router", "forward", "tcp dport {port} drop"),
        lambda lab, p: _drop_table(lab, lab.router),
    ),
    FaultCase(
        "forwarding-off",
        "FW_FORWARD_DROP",
        lambda lab, p: (lab.sysctl(lab.router, "net.ipv4.ip_forward=0"), _serving(lab, p))[1],
        lambda lab, p: lab.sysctl(lab.router, "net.ipv4.ip_forward=1"),
    ),
    FaultCase(
        "no-source-port",
        "CLIENT_ERROR",
        _no_source_port,
        lambda lab, p: lab.sh(lab.client, f"sysctl -qw '{_DEFAULT_SOURCE_PORTS}'"),
    ),
    FaultCase("no-listener", "NO_LISTENER", lambda lab, p: Target(lab.server_address, p)),
    FaultCase(
        "bound-loopback-only",
        "BOUND_LOOPBACK_ONLY",
        lambda lab, p: (lab.serve(lab.server, "127.0.0.1", p), Target(lab.server_address, p))[1],
    ),
    FaultCase(
        "bound-other-address",
        "BOUND_OTHER_ADDRESS",
        lambda lab, p: (lab.serve(lab.server, lab.net(3, 2), p), Target(lab.server_address, p))[1],
    ),
    FaultCase(
        "not-published",
        "NOT_PUBLISHED",
        lambda lab, p: (lab.serve(lab.container, "0.0.0.0", p), Target(lab.server_address, p))[1],
        _publish_undo,
    ),
    FaultCase(
        "dnat-to-nothing",
        "DNAT_TO_NOTHING",
        lambda lab, p: (
            lab.sh(
                lab.server,
                f"iptables -t nat -A DOCKER ! -i docker0 -p tcp --dport {p} "
                f"-j DNAT --to-destination {lab.net(4, 2)}:{p + 1} && "
                f"iptables -A DOCKER -d {lab.net(4, 2)}/32 ! -i docker0 -o docker0 "
                f"-p tcp --dport {p + 1} -j ACCEPT",
            ),
            Target(lab.server_address, p),
        )[1],
        _publish_undo,
    ),
    FaultCase("backlog-full", "BACKLOG_FULL", _backlog),
    FaultCase("rp-filter", "RP_FILTER", _rp, _rp_undo),
    FaultCase("filtered-upstream", "FILTERED_UPSTREAM", lambda lab, p: Target(lab.remote_address, p)),
    FaultCase(
        "wrong-service",
        "WRONG_SERVICE",
        lambda lab, p: (
            lab.serve(lab.server, "0.0.0.0", p, banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
            Target(lab.server_address, p, expect="http"),
        )[1],
    ),
    # A router whose forward chain drops by policy and has no rule for established flows: the
    # fix must let the replies back too, or the connection still fails.
    FaultCase(
        "fw-forward-policy-drop",
        "FW_FORWARD_DROP",
        _policy_dropped("router", "forward"),
        lambda lab, p: _drop_table(lab, lab.router),
    ),
    # The request gets through and the answers do not: a client whose input policy drops with
    # no rule for established flows, a server dropping its own port's answers on output, a
    # router that forwards one way only.
    FaultCase(
        "fw-reply-drop-client",
        "FW_REPLY_DROP",
        _policy_dropped("client", "input"),
        lambda lab, p: _drop_table(lab, lab.client),
    ),
    FaultCase(
        "fw-reply-drop-server",
        "FW_REPLY_DROP",
        _ruled("server", "output", "tcp sport {port} drop"),
        lambda lab, p: _drop_table(lab, lab.server),
    ),
    FaultCase(
        "fw-reply-drop-router",
        "FW_REPLY_DROP",
        _ruled("router", "forward", "tcp sport {port} drop"),
        lambda lab, p: _drop_table(lab, lab.router),
    ),
)


@contextlib.contextmanager
def reach_lab() -> Iterator[ReachLab]:
    """`with reach_lab() as lab:` builds the healthy topology and always removes it."""
    lab = ReachLab()
    with lab:
        yield lab
