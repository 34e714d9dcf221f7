"""Bringing a `LabSpec` up as namespaces, a bridge, links and processes, and tearing it down.

Topology: a hub namespace holds a bridge; every host (the `client` included) is a namespace
joined to the bridge by a veth pair, or, when its link has delay or loss, by two TAP devices
and a relay process (`portkit.testing._relay`). Every namespace name is the spec's prefix, a
suffix unique to this lab (process id and random digits) and the host's name; everything lives
inside the lab's namespaces, so deleting them removes every link, address and nftables rule.
The processes the lab started are stopped by their handles, any left inside are killed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError
from portkit.testing import _netns
from portkit.testing._netns import LabNamespace
from portkit.testing._spec import LabHost, LabSpec

READY_TIMEOUT = 10.0


_run = _netns._run


def _wait_ready(proc: subprocess.Popen[str], what: str) -> None:
    _wait_line(proc, "ready", f"{what} did not start")


def _wait_line(proc: subprocess.Popen[str], expected: str, failure: str) -> None:
    """Wait for `proc` to print the line `expected`; kill it and raise if it does not."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != expected:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise PortkitError(f"lab: {failure}: {err.strip()[-400:]}")


def _stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """Stop what a lab started, newest first: SIGTERM, 3 s in all to exit, then SIGKILL; empties `procs`."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 3
    for proc in procs:
        try:
            proc.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


class Lab:
    """A running lab. Use as a context manager: `with Lab(spec) as lab: ...`."""

    def __init__(self, spec: LabSpec) -> None:
        self.spec = spec
        self.tag = _netns.unique_name(spec.prefix)
        self._procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[LabNamespace] = []
        self._relays: dict[str, subprocess.Popen[str]] = {}

    # -- addresses and names -------------------------------------------------------------

    def address(self, host: str) -> str:
        return self.spec.address(host)

    def address6(self, host: str) -> str:
        return self.spec.address6(host)

    def netns(self, host: str) -> str:
        """The name of `host`'s namespace (`ip netns exec NAME ...`)."""
        return f"{self.tag}-{self.spec.check_host(host)}"

    @property
    def hub(self) -> str:
        """The namespace holding the bridge every host is linked to."""
        return f"{self.tag}-hub"

    # -- running things in a host --------------------------------------------------------

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside `host`'s namespace."""
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def run(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a command inside `host` and wait for it (kwargs go to subprocess.run)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(host, argv), check=False, **kwargs)

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside `host`; the lab kills it on teardown."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.command(host, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def reset_loss(self, host: str) -> None:
        """Give every flow on `host`'s emulated link its whole loss budget again."""
        relay = self._relays.get(host)
        if relay is None:
            raise PortkitError(f"lab: host {host!r} has no emulated link")
        relay.send_signal(signal.SIGUSR1)
        _wait_line(relay, "reset", f"loss reset on {host}'s link")

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run the body (this thread only) inside `host`'s namespace."""
        with _netns.inside(self.netns(host)):
            yield

    def nft(self, host: str, ruleset: str) -> None:
        """Load more nftables text into `host` (e.g. `add rule inet lab input tcp dport 1 drop`)."""
        _run(self.command(host, ["nft", "-f", "-"]), stdin=ruleset)

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> None:
        if os.geteuid() != 0:
            raise PermissionNeeded("the lab needs root (network namespaces, veth, TAP, nftables)")
        try:
            self._add_netns(self.hub)
            _run(["ip", "-n", self.hub, "-batch", "-"], "link add br0 type bridge\nlink set br0 up\n")
            for index, host in enumerate(self.spec.all_hosts()):
                self._add_host(index, host)
            self._wait_arp_free()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        _stop_processes(self._procs)
        self._relays.clear()
        for ns in reversed(self._namespaces):
            ns.close()
        self._namespaces.clear()

    # -- building ------------------------------------------------------------------------

    def _add_netns(self, name: str) -> None:
        ns = LabNamespace.named(name)
        self._namespaces.append(ns)
        ns.open()

    def _add_host(self, index: int, host: LabHost) -> None:
        ns, hub = self.netns(host.name), self.hub
        self._add_netns(ns)
        port = f"p{index}"
        if host.link.emulated:
            _run(["ip", "-n", hub, "tuntap", "add", "mode", "tap", "name", port])
            _run(["ip", "-n", ns, "tuntap", "add", "mode", "tap", "name", "eth0"])
        else:
            _run(["ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
        _run(
            ["ip", "-n", ns, "-batch", "-"],
            f"addr add {self.address(host.name)}/{self.spec.prefixlen} dev eth0\n"
            f"addr add {self.address6(host.name)}/64 dev eth0 nodad\n"
            "link set eth0 up\n",
        )
        if host.link.emulated:
            relay = self.popen(
                host.name,
                [
                    sys.executable,
                    "-m",
                    "portkit.testing._relay",
                    ns,
                    "eth0",
                    hub,
                    port,
                    str(host.link.rtt_ms),
                    str(host.link.loss),
                    str(index),
                    str(host.link.loss_budget),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            _wait_ready(relay, f"link relay for {host.name}")
            self._relays[host.name] = relay
        if host.rules or host.nft:
            lines = [r.nft() for r in host.rules] + [ln for ln in host.nft.splitlines() if ln.strip()]
            body = "\n".join(f"    {line}" for line in lines)
            self.nft(
                host.name,
                "table inet lab {\n  chain input {\n"
                "    type filter hook input priority 0; policy accept;\n"
                f"{body}\n  }}\n}}\n",
            )
        if host.listeners:
            import json

            spec = [
                [lst.port, lst.protocol.value, lst.banner.hex(), lst.reply.value] for lst in host.listeners
            ]
            agent = self.popen(
                host.name,
                [sys.executable, "-m", "portkit.testing._agent", json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            _wait_ready(agent, f"listeners on {host.name}")

    def _wait_arp_free(self) -> None:
        """Pin the client's and every host's neighbour entries (IPv4 and IPv6), both ways.

        No probe then waits on ARP/NDP, and a lossy link cannot lose neighbour resolution
        itself (it did: with 50% loss each way, ARP failed often enough to drop every datagram).
        """
        import json

        def mac(host: str) -> str:
            out = _run(["ip", "-n", self.netns(host), "-j", "link", "show", "dev", "eth0"])
            return str(json.loads(out)[0]["address"])

        client = self.spec.all_hosts()[0].name
        client_mac = mac(client)
        for host in self.spec.hosts:
            pins = ((client, host.name, mac(host.name)), (host.name, client, client_mac))
            for where, peer, lladdr in pins:
                _run(
                    ["ip", "-n", self.netns(where), "-batch", "-"],
                    f"neigh replace {self.address(peer)} lladdr {lladdr} dev eth0 nud permanent\n"
                    f"neigh replace {self.address6(peer)} lladdr {lladdr} dev eth0 nud permanent\n",
                )


@contextlib.contextmanager
def lab(spec: LabSpec) -> Iterator[Lab]:
    """`with lab(spec) as running:` brings the lab up and always tears it down."""
    running = Lab(spec)
    running.up()
    try:
        yield running
    finally:
        running.down()
