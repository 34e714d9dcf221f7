"""Network namespaces for tests: unique names, entering one from Python, veth links between two.

Every name `unique_name` gives carries the process id and random digits, so two test runs on
one machine (or two labs in one run) never pick the same namespace. Deleting a namespace
removes every link, address, route and nftables rule inside it; a `LabNamespace` also kills the
processes still in it first, or they would keep it alive. Entering one uses setns(2) through
ctypes (`os.setns` arrived only in Python 3.12); setns moves the calling thread only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def unique_name(prefix: str) -> str:
    """`PREFIX-PID-RANDOM`: a namespace name no other run or lab on this machine picks."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise PortkitError(f"lab: {' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise PortkitError(f"setns failed: {os.strerror(err)}")


def enter_namespace(name: str) -> None:
    """Move the calling thread into the named namespace for good."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body in the named namespace, then return to the original one.

    Only the calling thread moves; sockets opened in the body stay in that namespace.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_namespace(name)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def delete(name: str) -> None:
    """Kill every process still in namespace `name`, then delete it (no error if it is gone).

    This process is spared when it has entered the namespace itself (a benchmark may).
    """
    me = str(os.getpid())
    for _ in range(20):
        listed = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, check=False, timeout=10
        ).stdout.split()
        pids = [pid for pid in listed if pid != me]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=10)


class LabNamespace:
    """A named network namespace with loopback up, deleted on close with everything in it.

    `with LabNamespace("pkfw") as ns:` creates `pkfw-PID-RANDOM`; `ns.run([...])` runs a
    command inside it, `with ns.inside():` moves this thread in. ICMP rate limits are off in
    it (they are per namespace), so every probe of a closed port gets its error back.
    """

    def __init__(self, prefix: str = "pk") -> None:
        self.name = unique_name(prefix)
        self._open = False

    @classmethod
    def named(cls, name: str) -> LabNamespace:
        """A namespace with exactly this name (already unique: say, a `Lab`'s tag and a host)."""
        ns = cls()
        ns.name = name
        return ns

    def __str__(self) -> str:
        return self.name

    def open(self) -> LabNamespace:
        if os.geteuid() != 0:
            raise PermissionNeeded("a network namespace needs root")
        _run(["ip", "netns", "add", self.name])
        self._open = True
        try:
            _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
            # Rate-limited ICMP errors would make closed UDP ports look open|filtered at random;
            # these sysctls are per namespace, so the machine's own settings are untouched.
            for key, value in (
                ("net.ipv4.icmp_ratelimit", "0"),
                ("net.ipv6.icmp.ratelimit", "0"),
                ("net.ipv4.icmp_msgs_per_sec", "100000"),
                ("net.ipv4.icmp_msgs_burst", "100000"),
            ):
                self.run(["sysctl", "-qw", f"{key}={value}"])
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._open:
            delete(self.name)
            self._open = False

    def __enter__(self) -> LabNamespace:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command inside and wait for it (kwargs go to subprocess.run; no check)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv), check=False, **kwargs)

    def ip(self, *args: str, stdin: str | None = None) -> str:
        """`ip -n NAME ARGS`, raising with ip's message when it fails."""
        return _run(["ip", "-n", self.name, *args], stdin)

    def nft(self, ruleset: str) -> None:
        """Load nftables text (`nft -f -`) into this namespace."""
        _run(self.command(["nft", "-f", "-"]), stdin=ruleset)

    def mac(self, device: str) -> str:
        return str(json.loads(self.ip("-j", "link", "show", "dev", device))[0]["address"])

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Run the body (this thread only) inside this namespace."""
        with inside(self.name):
            yield


def _host_route(mine: ipaddress.IPv4Interface | ipaddress.IPv6Interface, peer: str) -> bool:
    return ipaddress.ip_address(peer) not in mine.network


def connect(
    a: LabNamespace,
    a_device: str,
    a_addresses: Iterable[str],
    b: LabNamespace,
    b_device: str,
    b_addresses: Iterable[str],
) -> None:
    """Join `a` and `b` with a veth pair and give each end its addresses (`ADDR/BITS`).

    Each side learns the other's addresses as permanent neighbours, so no packet waits on
    ARP or neighbour discovery, and a rule set that drops ICMPv6 cannot break the link. A
    peer address outside every local subnet gets a host route on the link.
    """
    mine = {a.name: [ipaddress.ip_interface(x) for x in a_addresses]}
    mine[b.name] = [ipaddress.ip_interface(x) for x in b_addresses]
    _run(["ip", "link", "add", a_device, "netns", a.name, "type", "veth", "peer", "name", b_device,
          "netns", b.name])  # fmt: skip
    for ns, device in ((a, a_device), (b, b_device)):
        batch = [f"addr add {x} dev {device}" + (" nodad" if x.version == 6 else "") for x in mine[ns.name]]
        ns.ip("-batch", "-", stdin="\n".join([*batch, f"link set {device} up", ""]))
    for ns, device, peer, peer_device in ((a, a_device, b, b_device), (b, b_device, a, a_device)):
        lladdr = peer.mac(peer_device)
        lines = []
        for x in mine[peer.name]:
            address = str(x.ip)
            if not any(x.version == m.version and not _host_route(m, address) for m in mine[ns.name]):
                lines.append(f"route add {address}/{x.max_prefixlen} dev {device}")
            lines.append(f"neigh replace {address} lladdr {lladdr} dev {device} nud permanent")
        ns.ip("-batch", "-", stdin="\n".join([*lines, ""]))
