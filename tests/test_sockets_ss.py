"""portkit's socket rows against `ss` for sockets the tests create: field by field."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

import fixtures_sockets as fx
from conftest import needs_root
from portkit.model import parse_port_spec
from portkit.sockets import SocketQuery, list_sockets, matches_from_spec


@pytest.fixture(scope="module")
def scene() -> Any:
    with fx.socket_scene() as made:
        yield made


def _ls(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("ls", "--json", *args)
    assert result.status == 0, result.stderr
    document: dict[str, Any] = result.json()
    return document


def test_every_state_the_test_made_matches_ss(cli: Any, scene: fx.Scene) -> None:
    spec = ",".join(map(str, scene.ports))
    ours = scene.mine(fx.portkit_rows(_ls(cli, "--all", "--port", spec)))
    theirs = scene.mine(fx.ss_rows(*fx.port_filter(scene.ports)))
    assert ours == theirs
    assert len(ours) == 11
    states = {row[1] for row in ours}
    # The scene really holds the states it claims, so the comparison covered them.
    assert {"LISTEN", "ESTAB", "TIME-WAIT", "FIN-WAIT-2", "CLOSE-WAIT", "UNCONN"} <= states
    assert {row[2] for row in ours} >= {"127.0.0.1", "::1"}
    assert any(row[6] == 5 for row in ours), "the 5 unread bytes show as Recv-Q"


def test_listening_view_matches_ss_l(cli: Any, scene: fx.Scene) -> None:
    spec = ",".join(map(str, scene.ports))
    ours = scene.mine(fx.portkit_rows(_ls(cli, "--port", spec)))
    theirs = {
        row for row in scene.mine(fx.ss_rows(*fx.port_filter(scene.ports))) if row[1] in ("LISTEN", "UNCONN")
    }
    assert ours == theirs
    assert {row[0] for row in ours} == {"tcp", "udp"}


@pytest.mark.parametrize(
    ("args", "ss_words"),
    [
        (["--proto", "tcp", "--state", "established"], ["-t", "state", "established"]),
        (["--proto", "tcp", "--state", "time-wait"], ["-t", "state", "time-wait"]),
        (["--proto", "udp", "-6"], ["-u", "-6"]),
        (["--proto", "tcp", "-4", "--state", "listen"], ["-t", "-4", "state", "listening"]),
    ],
)
def test_filters_match_ss_filters(cli: Any, scene: fx.Scene, args: list[str], ss_words: list[str]) -> None:
    spec = ",".join(map(str, scene.ports))
    ours = scene.mine(fx.portkit_rows(_ls(cli, "--all", "--port", spec, *args)))
    protos = "t" if "-t" in ss_words else "u"
    words = [w for w in ss_words if w not in ("-t", "-u")]
    theirs = scene.mine(fx.ss_rows(*words, *fx.port_filter(scene.ports), protos=protos))
    assert ours == theirs
    assert ours, "the filter should keep some of the scene's sockets"


def test_sport_and_dport_are_filtered_in_the_kernel(scene: fx.Scene) -> None:
    port = scene.names["tcp4"]
    by_src = list_sockets(SocketQuery(ports=matches_from_spec(parse_port_spec(str(port)), "src")))
    by_dst = list_sockets(SocketQuery(ports=matches_from_spec(parse_port_spec(str(port)), "dst")))
    assert by_src.sockets and all(s.local_port == port for s in by_src.sockets)
    assert by_dst.sockets and all(s.remote_port == port for s in by_dst.sockets)
    assert {s.state.label for s in by_src.sockets} >= {"LISTEN", "ESTAB"}
    theirs_src = fx.ss_rows("sport", "=", f":{port}", protos="t")
    assert {(s.local_port, s.remote_port, s.inode) for s in by_src.sockets} == {
        (row[3], row[5], row[9]) for row in theirs_src
    }


def test_port_ranges_and_protocol_prefixes(cli: Any, scene: fx.Scene) -> None:
    tcp4, udp4 = scene.names["tcp4"], scene.names["udp4"]
    rows = _ls(cli, "--all", "--port", f"T:{tcp4},U:{udp4}")["sockets"]
    assert {(r["protocol"], r["local"]["port"]) for r in rows if r["state"] in ("LISTEN", "UNCONN")} == {
        ("tcp", tcp4),
        ("udp", udp4),
    }
    low, high = sorted((tcp4, udp4))
    spanned = fx.portkit_rows(_ls(cli, "--all", "--sport", f"{low}-{high}"))
    theirs = fx.ss_rows("sport", ">=", f":{low}", "and", "sport", "<=", f":{high}")
    assert all(low <= row[3] <= high for row in spanned)
    # Other programs' sockets in the range come and go between the two readings: compare ours.
    assert scene.mine(spanned) == scene.mine(theirs)
    assert {r[3] for r in spanned} >= {low, high}


def test_tcp_info_agrees_with_ss_i(cli: Any, scene: fx.Scene) -> None:
    port = scene.names["tcp4"]
    rows = _ls(cli, "--all", "--info", "--proto", "tcp", "--sport", str(port), "--state", "established")
    [row] = rows["sockets"]
    info = row["tcp_info"]
    out = fx.subprocess.run(
        ["ss", "-Htni", "state", "established", "sport", "=", f":{port}"], capture_output=True, text=True
    ).stdout
    fields = dict(item.split(":", 1) for item in out.split() if ":" in item and item.count(":") == 1)
    assert int(fields["cwnd"]) == info["snd_cwnd"]
    assert int(fields["mss"]) == info["snd_mss"]
    assert int(fields["bytes_received"]) == info["bytes_received"] == 5
    json.dumps(info)


def test_piped_info_table_keeps_a_cell_for_rows_without_tcp_info(cli: Any, scene: fx.Scene) -> None:
    """`ls -i` piped (plain columns): UDP and TIME-WAIT rows have no tcp_info but still a cell."""
    spec = ",".join(map(str, scene.ports))
    result = cli("ls", "--all", "--info", "--port", spec)
    assert result.status == 0, result.stderr
    assert "internal error" not in result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[-2:] == ["TCP", "INFO"]
    states = {line.split()[1] for line in lines}
    assert {"UNCONN", "TIME-WAIT", "ESTAB"} <= states
    info_at = header.index("TCP INFO")
    for line in lines:
        proto, state = line.split()[:2]
        has_info = proto == "tcp" and state != "TIME-WAIT"
        assert line[info_at:].startswith("rtt ") if has_info else len(line) <= info_at, line
    watched = cli("ls", "--all", "--info", "--port", spec, "--watch", "0.1", "--count", "1")
    assert watched.status == 0 and "internal error" not in watched.stderr, watched.stderr
    assert "TCP INFO" in watched.stdout and "UNCONN" in watched.stdout


@needs_root
def test_named_netns_rows_match_ss_inside_it(cli: Any) -> None:
    with fx.named_netns() as ns, fx.listener_process("6", "tcp", netns=ns) as (proc, port):
        ours_doc = _ls(cli, "--all", "--netns", ns, "--processes")
        theirs = fx.ss_rows(netns=ns)
        assert fx.portkit_rows(ours_doc) == theirs
        assert {s["netns"] for s in ours_doc["sockets"]} == {ns}
        listener = [s for s in ours_doc["sockets"] if s["state"] == "LISTEN"]
        assert [(s["local"]["port"], [p["pid"] for p in s["processes"]]) for s in listener] == [
            (port, [proc.pid])
        ]
        # The host's table does not hold the namespace's sockets, and --all-netns labels them.
        host = fx.portkit_rows(_ls(cli, "--all", "--port", str(port)))
        assert not (host & theirs)
        everywhere = _ls(cli, "--all", "--all-netns", "--port", str(port))["sockets"]
        assert {(s["netns"], s["inode"]) for s in everywhere} >= {(ns, row[9]) for row in theirs}


def test_raw_sockets_match_ss_w(cli: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("raw sockets need root (CAP_NET_RAW)")
    raw4 = fx.socket.socket(fx.socket.AF_INET, fx.socket.SOCK_RAW, fx.socket.IPPROTO_ICMP)
    raw6 = fx.socket.socket(fx.socket.AF_INET6, fx.socket.SOCK_RAW, fx.socket.IPPROTO_ICMPV6)
    try:
        inodes = {os.fstat(s.fileno()).st_ino for s in (raw4, raw6)}
        doc = _ls(cli, "--all", "--proto", "raw")
        mine = {(r["family"], r["local"]["port"], r["state"]) for r in doc["sockets"] if r["inode"] in inodes}
        assert mine == {(4, 1, "UNCONN"), (6, 58, "UNCONN")}
        # ss -w has no inode column here (it reads /proc/net/raw when raw_diag is missing).
        out = fx.subprocess.run(["ss", "-Hwan"], capture_output=True, text=True, check=True).stdout
        theirs = set()
        for line in out.splitlines():
            state, _rq, _sq, local, *_ = line.split()
            family = 6 if local.startswith(("[", "*")) else 4
            port = local.rpartition(":")[2]
            theirs.add((family, {"ipv6-icmp": 58, "icmp": 1}.get(port) or int(port), state))
        assert mine <= theirs
    finally:
        raw4.close()
        raw6.close()


def test_pid_user_and_process_filters_match_ss_p(cli: Any) -> None:
    with fx.listener_process("4", "tcp") as (proc, port):
        doc = _ls(cli, "--all", "--pid", str(proc.pid))
        ours = {(r["local"]["port"], r["remote"]["port"], r["inode"]) for r in doc["sockets"]}
        assert all([p["pid"] for p in r["processes"]] == [proc.pid] for r in doc["sockets"])
        out = fx.subprocess.run(["ss", "-Htanpe"], capture_output=True, text=True, check=True).stdout
        theirs = set()
        for line in out.splitlines():
            if f"pid={proc.pid}," in line:
                _state, _rq, _sq, local, peer, *extra = line.split()
                ino = next(int(item[4:]) for item in extra if item.startswith("ino:"))
                theirs.add((fx._split_endpoint(local)[1], fx._split_endpoint(peer)[1], ino))
        assert ours == theirs and len(ours) == 3  # the listener and both ends of its connection
        by_name = _ls(cli, "--all", "--process", "python", "--port", str(port))
        assert {r["inode"] for r in by_name["sockets"]} >= {row[2] for row in ours}
        me = os.geteuid()
        by_user = _ls(cli, "--all", "--user", str(me), "--port", str(port))
        assert {r["uid"] for r in by_user["sockets"]} == {me} and len(by_user["sockets"]) == 3
        assert _ls(cli, "--all", "--user", "nobody", "--port", str(port))["sockets"] == []


@needs_root
def test_sockets_bound_to_a_device_show_it_as_ss_does_and_lo_is_loopback_only(cli: Any) -> None:
    """SO_BINDTODEVICE (and an IPv6 link-local scope) limit a socket to one interface: `ss` prints it
    as `0.0.0.0%lo:PORT`, and a wildcard socket bound to lo takes only this host's own packets
    (they alone arrive on lo), so it is no more exposed than one on 127.0.0.1."""
    with fx.named_netns() as ns:
        subprocess_run = fx.subprocess.run
        subprocess_run(
            ["ip", "-n", ns, "link", "add", "pkdev0", "type", "veth", "peer", "name", "pkdev1"], check=True
        )
        subprocess_run(["ip", "-n", ns, "link", "set", "pkdev0", "up"], check=True)
        subprocess_run(["ip", "-n", ns, "addr", "add", "fe80::7/64", "dev", "pkdev0", "nodad"], check=True)
        from portkit.testing import inside

        made = []
        with inside(ns):
            for family, address, device in (
                (fx.socket.AF_INET, ("0.0.0.0", 0), "lo"),
                (fx.socket.AF_INET, ("0.0.0.0", 0), "pkdev0"),
                (fx.socket.AF_INET6, ("fe80::7", 0, 0, fx.socket.if_nametoindex("pkdev0")), None),
            ):
                s = fx.socket.socket(family, fx.socket.SOCK_STREAM)
                if device:
                    s.setsockopt(fx.socket.SOL_SOCKET, fx.socket.SO_BINDTODEVICE, device.encode())
                s.bind(address)
                s.listen()
                made.append(s)
        try:
            ports = [s.getsockname()[1] for s in made]
            ss = subprocess_run(
                ["ip", "netns", "exec", ns, "ss", "-Htln"], capture_output=True, text=True, check=True
            ).stdout
            theirs = {line.split()[3] for line in ss.splitlines()}
            table = cli("ls", "--netns", ns, "--proto", "tcp", "--no-processes")
            assert table.status == 0, table.stderr
            ours = {line.split()[4] for line in table.stdout.splitlines()[2:]}
            assert ours == theirs
            assert {
                f"0.0.0.0%lo:{ports[0]}",
                f"0.0.0.0%pkdev0:{ports[1]}",
                f"[fe80::7]%pkdev0:{ports[2]}",
            } <= ours
            overview = cli("overview", "--netns", ns, "--json")
            exposure = {item["port"]: item["exposure"] for item in overview.json()["listeners"]}
            assert exposure[ports[0]] == "loopback"
            assert exposure[ports[1]] == "all"  # one interface, every address: never said to be less
            who = cli("who", f"{ports[0]}/tcp", "--netns", ns, "--json")
            assert who.json()["exposed"] is False
            held = cli("who", f"{ports[1]}/tcp", "--netns", ns)
            assert f"0.0.0.0%pkdev0:{ports[1]}" in held.stdout
        finally:
            for s in made:
                s.close()


@pytest.mark.parametrize("command", [("ls",), ("who", "22"), ("overview",)])
def test_an_empty_netns_name_is_bad_input_not_this_host(cli: Any, command: tuple[str, ...]) -> None:
    """`--netns "$NS"` with NS unset must not quietly report this host's sockets."""
    result = cli(*command, "--netns", "")
    assert result.status == 2, result.stdout
    assert "invalid network namespace name ''" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
