"""The lab itself: hosts reachable only inside it, listeners, firewall rules, delay, loss, cleanup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import needs_root
from fixtures_scan import lab_factory  # noqa: F401
from portkit.errors import PortkitError, UsageError
from portkit.model import Protocol
from portkit.testing import (
    Lab,
    LabAction,
    LabHost,
    LabLink,
    LabListener,
    LabNamespace,
    LabReply,
    LabRule,
    LabSpec,
    connect,
    unique_name,
)

PREFIX = "pk4l"


def test_spec_addresses_and_names() -> None:
    spec = LabSpec(prefix="pk4", hosts=(LabHost("a"), LabHost("b")))
    assert spec.address("client") == "198.51.100.1"
    assert spec.address("a") == "198.51.100.10"
    assert spec.address("b") == "198.51.100.11"
    assert spec.address6("a") == "2001:db8:4b1::a"
    with pytest.raises(UsageError):
        spec.address("nope")
    with pytest.raises(UsageError):
        LabSpec(hosts=(LabHost("a"), LabHost("a")))
    with pytest.raises(UsageError):
        LabSpec(prefix="bad-prefix!", hosts=())


def test_rule_renders_nft() -> None:
    assert LabRule(81, LabAction.DROP).nft() == "tcp dport 81 drop"
    assert LabRule(53, LabAction.PORT_UNREACHABLE, Protocol.UDP).nft() == "udp dport 53 reject"
    assert LabRule(84, LabAction.ADMIN_PROHIBITED).nft() == "tcp dport 84 reject with icmpx admin-prohibited"


def _connect(address: str, port: int, timeout: float = 1.0) -> str:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            return "open:" + sock.recv(100).decode()
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return f"error:{exc.errno}"


@needs_root
def test_lab_hosts_listeners_and_rules(lab_factory) -> None:  # noqa: F811
    spec = LabSpec(
        prefix=PREFIX,
        hosts=(
            LabHost(
                "web",
                listeners=(
                    LabListener(80, banner=b"hello"),
                    LabListener(53, Protocol.UDP),
                    LabListener(54, Protocol.UDP, reply=LabReply.SILENT),
                ),
                rules=(
                    LabRule(81, LabAction.DROP),
                    LabRule(82, LabAction.RESET),
                    LabRule(84, LabAction.ADMIN_PROHIBITED),
                ),
            ),
        ),
    )
    lab: Lab = lab_factory(spec)
    web = lab.address("web")
    # The lab subnet exists only inside the lab: the host has no route to it.
    route = subprocess.run(["ip", "route", "get", web], capture_output=True, text=True).stdout
    assert "pk4" not in route and "br0" not in route
    with lab.inside("client"):
        assert _connect(web, 80) == "open:hello"
        assert _connect(lab.address6("web"), 80) == "open:hello"
        assert _connect(web, 81, 0.3) == "timeout"
        assert _connect(web, 82) == "refused"
        assert _connect(web, 84).startswith("error:")  # EHOSTUNREACH from admin-prohibited
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(1)
            udp.sendto(b"ping", (web, 53))
            assert udp.recvfrom(100)[0] == b"ping"
            udp.sendto(b"ping", (web, 54))
            with pytest.raises(TimeoutError):
                udp.recvfrom(100)
    names = [lab.netns("web"), lab.netns("client"), lab.hub]
    assert all(os.path.exists(f"/run/netns/{n}") for n in names)
    lab.down()
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)


@needs_root
def test_emulated_link_adds_delay_and_loss(lab_factory) -> None:  # noqa: F811
    spec = LabSpec(
        prefix=PREFIX,
        hosts=(
            LabHost.tcp("far", 22, link=LabLink(rtt_ms=40)),
            LabHost("lossy", (LabListener(7, Protocol.UDP),), link=LabLink(loss=0.5)),
        ),
    )
    lab = lab_factory(spec)
    with lab.inside("client"):
        times = []
        for _ in range(3):
            start = time.monotonic()
            assert _connect(lab.address("far"), 22, 2) == "open:"
            times.append(time.monotonic() - start)
        assert 0.038 <= min(times) < 2.0  # generous: a loaded machine delays the relay too
        # Half the frames are lost each way, so about a quarter of echo round trips succeed.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.setblocking(False)
            for i in range(100):
                udp.sendto(b"%d" % i, (lab.address("lossy"), 7))
                time.sleep(0.001)
            time.sleep(0.3)
            replies = 0
            while True:
                try:
                    udp.recv(100)
                    replies += 1
                except BlockingIOError:
                    break
        assert 5 <= replies <= 50


@needs_root
def test_lab_cleans_up_after_failure() -> None:
    spec = LabSpec(prefix=PREFIX, hosts=(LabHost.tcp("web", 80),))
    with pytest.raises(RuntimeError), Lab(spec) as lab:
        names = [lab.netns("web"), lab.netns("client"), lab.hub]
        assert all(os.path.exists(f"/run/netns/{n}") for n in names)
        raise RuntimeError("boom")
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)


def test_namespace_names_are_unique_per_run_and_lab() -> None:
    """Two labs of one spec (in this run or another) never share a namespace name."""
    spec = LabSpec(prefix=PREFIX, hosts=(LabHost("web"),))
    one, two = Lab(spec), Lab(spec)
    assert one.netns("web") != two.netns("web") and one.hub != two.hub
    assert one.netns("web").startswith(f"{PREFIX}-{os.getpid()}-") and one.netns("web").endswith("-web")
    assert len({unique_name("pk") for _ in range(100)}) == 100
    with pytest.raises(UsageError):
        one.netns("nope")


@needs_root
def test_namespace_removes_what_is_left_inside() -> None:
    """A process still running in a namespace is killed and the namespace deleted on close."""
    with LabNamespace("pk4n") as ns:
        sleeper = subprocess.Popen(ns.command(["sleep", "60"]))
        assert ns.run(["ip", "-j", "addr", "show", "lo"]).stdout.count("127.0.0.1") == 1
    assert sleeper.wait(10) != 0
    assert not os.path.exists(f"/run/netns/{ns.name}")


@needs_root
def test_connect_pins_neighbours_and_routes_host_addresses() -> None:
    with LabNamespace("pk4a") as a, LabNamespace("pk4b") as b:
        connect(a, "va", ["10.77.0.1/24", "10.78.0.1/32"], b, "vb", ["10.77.0.2/24", "10.79.0.2/32"])
        neigh = a.ip("neigh", "show", "dev", "va")
        assert "10.77.0.2" in neigh and "10.79.0.2" in neigh and "PERMANENT" in neigh
        assert "10.79.0.2 dev va" in a.ip("route")
        # A RST back from a closed port: the route and the neighbour work both ways.
        with b.inside(), socket.socket() as tcp:
            tcp.settimeout(2)
            tcp.bind(("10.79.0.2", 0))
            with pytest.raises(ConnectionRefusedError):
                tcp.connect(("10.78.0.1", 9))


@needs_root
def test_loss_budget_caps_losses_per_flow(lab_factory) -> None:  # noqa: F811
    """With a budget of one, every flow loses at most one frame: the second try always gets through."""
    spec = LabSpec(
        prefix=PREFIX,
        hosts=(LabHost("lossy", (LabListener(7, Protocol.UDP),), link=LabLink(loss=0.6, loss_budget=1)),),
    )
    lab = lab_factory(spec)
    with lab.inside("client"), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.3)

        def losses() -> int:
            lost_once = 0
            for _ in range(20):
                udp.sendto(b"x", (lab.address("lossy"), 7))
                try:
                    udp.recv(10)
                except TimeoutError:
                    lost_once += 1
                    udp.sendto(b"x", (lab.address("lossy"), 7))
                    assert udp.recv(10) == b"x"  # the flow's budget is spent: nothing more is lost
            return lost_once

        assert losses() == 1  # one flow (this socket's port 7 exchange): one loss, ever
        assert losses() == 0
        lab.reset_loss("lossy")  # the whole budget again, for the next tool to meet
        assert losses() == 1
    with pytest.raises(PortkitError, match="no emulated link"):
        lab.reset_loss("client")


@needs_root
def test_a_process_inside_its_own_namespace_survives_closing_it() -> None:
    """A benchmark that entered its namespace for good may still delete it, and live on."""
    code = (
        "import os\nfrom portkit.testing import LabNamespace, enter_namespace\n"
        "ns = LabNamespace('pk4self').open()\nenter_namespace(ns.name)\nns.close()\n"
        "print('alive', os.path.exists('/run/netns/' + ns.name))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "alive False\n"), proc.stderr


def test_lab_names_do_not_collide_with_portkits_public_names() -> None:
    import portkit
    import portkit.testing

    assert not set(portkit.testing.__all__) & set(portkit.__all__)
    assert all(hasattr(portkit.testing, name) for name in portkit.testing.__all__)
