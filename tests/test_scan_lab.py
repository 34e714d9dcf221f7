"""The lab itself: hosts reachable only inside it, listeners, firewall rules, delay, loss, cleanup."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from fixtures_scan import lab_factory, needs_root  # noqa: F401
from portkit.errors import PortkitError, UsageError
from portkit.lab import Action, Host, Lab, LabSpec, Link, Listener, Reply, Rule
from portkit.model import Protocol

PREFIX = "pk4l"


def test_spec_addresses_and_names() -> None:
    spec = LabSpec(prefix="pk4", hosts=(Host("a"), Host("b")))
    assert spec.address("client") == "198.51.100.1"
    assert spec.address("a") == "198.51.100.10"
    assert spec.address("b") == "198.51.100.11"
    assert spec.address6("a") == "2001:db8:4b1::a"
    assert spec.netns("b") == "pk4-b"
    with pytest.raises(UsageError):
        spec.address("nope")
    with pytest.raises(UsageError):
        LabSpec(hosts=(Host("a"), Host("a")))
    with pytest.raises(UsageError):
        LabSpec(prefix="bad-prefix!", hosts=())


def test_rule_renders_nft() -> None:
    assert Rule(81, Action.DROP).nft() == "tcp dport 81 drop"
    assert Rule(53, Action.PORT_UNREACHABLE, Protocol.UDP).nft() == "udp dport 53 reject"
    assert Rule(84, Action.ADMIN_PROHIBITED).nft() == "tcp dport 84 reject with icmpx admin-prohibited"


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
            Host(
                "web",
                listeners=(
                    Listener(80, banner=b"hello"),
                    Listener(53, Protocol.UDP),
                    Listener(54, Protocol.UDP, reply=Reply.SILENT),
                ),
                rules=(Rule(81, Action.DROP), Rule(82, Action.RESET), Rule(84, Action.ADMIN_PROHIBITED)),
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
    assert os.path.exists(f"/run/netns/{PREFIX}-web")
    lab.down()
    assert not os.path.exists(f"/run/netns/{PREFIX}-web")
    assert not os.path.exists(f"/run/netns/{PREFIX}-hub")


@needs_root
def test_emulated_link_adds_delay_and_loss(lab_factory) -> None:  # noqa: F811
    spec = LabSpec(
        prefix=PREFIX,
        hosts=(
            Host.tcp("far", 22, link=Link(rtt_ms=40)),
            Host("lossy", (Listener(7, Protocol.UDP),), link=Link(loss=0.5)),
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
    spec = LabSpec(prefix=PREFIX, hosts=(Host.tcp("web", 80),))
    with pytest.raises(RuntimeError), Lab(spec) as lab:
        assert os.path.exists(f"/run/netns/{lab.netns('web')}")
        raise RuntimeError("boom")
    assert not os.path.exists(f"/run/netns/{PREFIX}-web")
    assert not os.path.exists(f"/run/netns/{PREFIX}-client")


@needs_root
def test_loss_budget_caps_losses_per_flow(lab_factory) -> None:  # noqa: F811
    """With a budget of one, every flow loses at most one frame: the second try always gets through."""
    spec = LabSpec(
        prefix=PREFIX,
        hosts=(Host("lossy", (Listener(7, Protocol.UDP),), link=Link(loss=0.6, loss_budget=1)),),
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
