"""The watcher's pure cores: scan detection, packet parsing and listener events, fed by hand."""

from __future__ import annotations

import ipaddress
import os
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from portkit.watch import (
    Detector,
    ListenerEvent,
    ListenerRow,
    ListenerTracker,
    Owner,
    ProbeKind,
    Seen,
    Thresholds,
    classify_probe,
    parse_packet,
)

ACK, SYN, RST, FIN, PSH, URG = 0x10, 0x02, 0x04, 0x01, 0x08, 0x20
US, THEM = "10.0.0.1", "10.0.0.66"


def attempt(t: float, port: int, flags: int = SYN, options: int = 4, src: str = THEM) -> Seen:
    return Seen(t, "lab", False, src, US, 6, 40000, port, flags, options)


def answer(t: float, port: int, flags: int, dst: str = THEM) -> Seen:
    return Seen(t, "lab", True, US, dst, 6, port, 40000, flags)


def feed(detector: Detector, packets: list[Seen]) -> list[dict[str, object]]:
    events = []
    for seen in packets:
        events += [e.to_json() for e in detector.packet(seen)]
    return events


def test_syn_scan_of_closed_ports_is_detected_at_the_threshold() -> None:
    detector = Detector(Thresholds(ports=15))
    packets = []
    for n in range(20):
        packets += [attempt(n * 0.01, 1000 + n), answer(n * 0.01 + 0.001, 1000 + n, RST | ACK)]
    events = feed(detector, packets)
    [event] = events
    assert event["event"] == "scan" and event["scan_type"] == "SYN" and event["source"] == THEM
    assert len(event["ports"]) == 15  # detected on the 15th failed port, not later
    assert event["addresses"] == [US] and event["closed"] == 15
    ended = [e.to_json() for e in detector.tick(100.0)]
    assert [e["event"] for e in ended] == ["scan-ended"] and len(ended[0]["ports"]) == 20


def test_connect_scan_is_told_by_its_options() -> None:
    detector = Detector(Thresholds(ports=5))
    packets = [
        p for n in range(5) for p in (attempt(n, 2000 + n, options=20), answer(n + 0.1, 2000 + n, RST | ACK))
    ]
    [event] = feed(detector, packets)
    assert event["scan_type"] == "connect"


def test_unanswered_attempts_fail_after_the_answer_timeout() -> None:
    detector = Detector(Thresholds(ports=5, answer_timeout=2.0))
    assert feed(detector, [attempt(0.1 * n, 3000 + n) for n in range(10)]) == []
    assert detector.tick(1.5) == []
    [event] = detector.tick(2.5)
    assert event.kind == "scan" and event.filtered == 6  # those sent by 0.5 s


def test_busy_clients_and_restarts_raise_nothing() -> None:
    detector = Detector()
    packets = []
    for n in range(5000):  # a burst of connections to one open port, from a few sources
        src = f"10.0.1.{n % 50}"
        packets += [attempt(n * 0.001, 443, options=20, src=src), answer(n * 0.001, 443, SYN | ACK, dst=src)]
    for n in range(30):  # a restarting service refuses for a moment
        packets += [attempt(10 + n * 0.1, 8080, options=20), answer(10 + n * 0.1, 8080, RST | ACK)]
    assert feed(detector, packets) == []
    assert detector.tick(20.0) == []


def test_horizontal_scan_of_one_port() -> None:
    """25 hosts whose port 22 fails (refused at once, or unanswered until the answer timeout)
    make a scan; a client that reaches 30 web servers (a container's traffic, seen as this
    host forwards it) does not."""
    refused = Detector(Thresholds(hosts=25))
    packets = []
    for n in range(25):
        packets.append(Seen(n * 0.01, "lab", False, THEM, f"10.0.2.{n}", 6, 40000, 22, SYN, 4))
        packets.append(Seen(n * 0.01 + 0.001, "lab", True, f"10.0.2.{n}", THEM, 6, 22, 40000, RST | ACK))
    [event] = feed(refused, packets)
    assert "25 hosts" in str(event["reason"]) and event["ports"] == [22]
    silent = Detector(Thresholds(hosts=25))
    unanswered = [Seen(n * 0.01, "lab", False, THEM, f"10.0.2.{n}", 6, 40000, 22, SYN, 4) for n in range(25)]
    assert feed(silent, unanswered) == []
    [event] = silent.tick(3.0)
    assert "25 hosts" in event.reason and event.filtered == 25
    browsing = Detector(Thresholds(hosts=25))
    packets = []
    for n in range(30):
        server = f"198.51.100.{n}"
        packets.append(Seen(n * 0.1, "lab", False, THEM, server, 6, 40000 + n, 443, SYN, 20))
        packets.append(Seen(n * 0.1 + 0.02, "lab", True, server, THEM, 6, 443, 40000 + n, SYN | ACK))
    assert feed(browsing, packets) == [] and browsing.tick(10.0) == []


def test_stealth_probes_count_whatever_the_answer() -> None:
    assert classify_probe(attempt(0, 1, FIN)) is ProbeKind.FIN
    assert classify_probe(attempt(0, 1, 0)) is ProbeKind.NULL
    assert classify_probe(attempt(0, 1, FIN | PSH | URG)) is ProbeKind.XMAS
    assert classify_probe(attempt(0, 1, ACK)) is None  # an ACK is a connection's, or an ACK scan's
    assert classify_probe(attempt(0, 1, FIN | ACK)) is None  # a connection's close
    detector = Detector(Thresholds(ports=6))
    [event] = feed(detector, [attempt(n, 100 + n, FIN | PSH | URG) for n in range(6)])
    assert event["scan_type"] == "Xmas"


def test_ack_family_scans_are_seen_by_the_bare_rsts_they_draw() -> None:
    """nmap -sA/-sW/-sM send segments with ACK set (not passed to the watcher); the kernel
    answers each on a port with no connection with a RST without ACK."""
    detector = Detector(Thresholds(ports=15))
    packets = [answer(n * 0.01, 1 + n, RST) for n in range(20)]  # from the probed port to 40000
    [event] = feed(detector, packets)
    assert event["event"] == "scan" and event["scan_type"] == "ACK" and event["source"] == THEM
    assert len(event["ports"]) == 15 and event["closed"] == 15 and event["addresses"] == [US]
    # A RST with ACK is an answer to an attempt (a SYN's or a FIN probe's), never one itself.
    assert feed(Detector(Thresholds(ports=2)), [answer(n, 1 + n, RST | ACK) for n in range(10)]) == []
    assert feed(Detector(Thresholds(ports=2), ignore=[THEM]), packets) == []


def test_late_segments_and_backscatter_are_no_ack_scan() -> None:
    """Bare RSTs that answer segments of flows the watcher saw open: late data to 30 ephemeral
    ports this host aborted (its SYNs seen going out), SYN-ACKs to SYNs someone forged in this
    host's name (seen coming in); and late ACKs of many connections, all to one port."""
    server = "198.51.100.7"
    aborted = Detector(Thresholds(ports=15))
    packets = []
    for n in range(30):
        packets.append(Seen(n * 0.1, "lab", True, US, server, 6, 50000 + n, 443, SYN, 20))
        packets.append(Seen(n * 0.1 + 0.01, "lab", False, server, US, 6, 443, 50000 + n, SYN | ACK, 20))
    for n in range(30):
        packets.append(Seen(10 + n * 0.1, "lab", True, US, server, 6, 50000 + n, 443, RST))
    assert feed(aborted, packets) == [] and aborted.tick(20.0) == []
    backscatter = Detector(Thresholds(ports=15))
    packets = []
    for n in range(30):
        packets.append(Seen(n * 0.1, "lab", False, server, US, 6, 80, 1000 + n * 7, SYN | ACK, 20))
        packets.append(Seen(n * 0.1 + 0.001, "lab", True, US, server, 6, 1000 + n * 7, 80, RST))
    assert feed(backscatter, packets) == []
    one_port = Detector(Thresholds(ports=15))
    late_acks = [Seen(n * 0.1, "lab", True, US, f"10.0.3.{n}", 6, 8080, 40000 + n, RST) for n in range(50)]
    assert feed(one_port, late_acks) == [] and one_port.tick(10.0) == []


def test_flows_are_remembered_within_the_window_and_the_memory_bound() -> None:
    detector = Detector(Thresholds(ports=3, window=60.0, flow_memory=4))
    opened = []
    for n in range(6):  # connections to ports 10-15, one a second, each accepted
        opened += [attempt(n, 10 + n, options=20), answer(n + 0.001, 10 + n, SYN | ACK)]
    assert feed(detector, opened) == [] and len(detector.flows) == 4  # 10 and 11 forgotten
    assert detector.tick(63.5) == [] and len(detector.flows) == 2  # 12 and 13 older than the window
    # Late segments to all six, their sockets gone: only the forgotten flows' count.
    [event] = feed(detector, [answer(64 + n * 0.01, 10 + n, RST) for n in range(6)])
    assert event["closed"] == 3 and event["scan_type"] == "ACK" and event["reason"].startswith("3 ports")
    assert detector.sources[("lab", THEM)].failed[US] == {(10, 6), (11, 6), (12, 6), (13, 6)}  # not 14, 15


def test_udp_scan_closed_by_icmp() -> None:
    detector = Detector(Thresholds(ports=4))
    packets = []
    for n in range(4):
        packets.append(Seen(n, None, False, THEM, US, 17, 5353, 600 + n))
        quoted = (THEM, US, 17, 5353, 600 + n)
        packets.append(Seen(n + 0.01, None, True, US, THEM, 1, icmp_type=3, quoted=quoted))
    [event] = feed(detector, packets)
    assert event["scan_type"] == "UDP" and event["closed"] == 4


def test_replies_to_this_hosts_own_datagrams_are_no_udp_scan() -> None:
    """Thirty DNS lookups from this host, each from another ephemeral port: the server's
    answers arrive on thirty ports, and are answers, not attempts (its server is no scanner,
    and --block would have cut this host off its DNS). A reply after the window is an attempt."""
    resolver = "10.0.0.53"
    detector = Detector()
    packets = []
    for n in range(30):
        packets.append(Seen(n * 0.1, None, True, US, resolver, 17, 40000 + n, 53))
        packets.append(Seen(n * 0.1 + 0.01, None, False, resolver, US, 17, 53, 40000 + n))
    assert feed(detector, packets) == []
    assert detector.tick(10.0) == []
    # This host's UDP service answering a client settles the client's attempt as open.
    served = Detector(Thresholds(ports=2))
    assert feed(served, [Seen(0, None, False, THEM, US, 17, 5000, 53)]) == []
    assert feed(served, [Seen(0.1, None, True, US, THEM, 17, 53, 5000)]) == []
    assert served.tick(5.0) == [] and served.sources[(None, THEM)].attempts[(US, 53, 17)].outcome == "open"
    late = Detector(Thresholds(ports=3, udp_reply=60))
    sent = [Seen(n, None, True, US, resolver, 17, 41000 + n, 53) for n in range(3)]
    replies = [Seen(100 + n, None, False, resolver, US, 17, 53, 41000 + n) for n in range(3)]
    assert feed(late, sent) == [] and late.tick(99.0) == []
    assert feed(late, replies) == [] and [e.kind for e in late.tick(110.0)] == ["scan"]


def test_ignored_sources_are_never_judged() -> None:
    detector = Detector(Thresholds(ports=2), ignore=[THEM])
    assert feed(detector, [attempt(n, n + 1) for n in range(10)]) == []


def _ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + payload


def _tcp(sport: int, dport: int, flags: int, options: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, offset << 4, flags, 1024, 0, 0) + options


@given(st.integers(1, 65535), st.integers(1, 65535), st.integers(0, 255))
def test_parse_tcp_ipv4(sport: int, dport: int, flags: int) -> None:
    seen = parse_packet(
        _ipv4("192.0.2.1", "192.0.2.2", 6, _tcp(sport, dport, flags, b"\x02\x04\x05\xb4")), False, "x", 1.0
    )
    assert seen is not None
    assert (seen.src, seen.dst, seen.sport, seen.dport, seen.flags, seen.options) == (
        "192.0.2.1",
        "192.0.2.2",
        sport,
        dport,
        flags,
        4,
    )


def test_parse_ipv6_and_icmp_quote() -> None:
    v6 = struct.pack("!IHBB16s16s", 0x60000000, 20, 6, 64, ipaddress.IPv6Address("2001:db8::1").packed,
                     ipaddress.IPv6Address("2001:db8::2").packed) + _tcp(5, 80, SYN)  # fmt: skip
    seen = parse_packet(v6, False, None, 0.0)
    assert seen is not None and (seen.src, seen.dport, seen.flags) == ("2001:db8::1", 80, SYN)
    udp = _ipv4("198.51.100.9", "192.0.2.2", 17, struct.pack("!HHHH", 5353, 161, 8, 0))
    icmp = _ipv4("192.0.2.2", "198.51.100.9", 1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + udp)
    seen = parse_packet(icmp, True, None, 0.0)
    assert seen is not None and seen.quoted == ("198.51.100.9", "192.0.2.2", 17, 5353, 161)


@given(st.binary(max_size=120))
def test_parse_never_raises(data: bytes) -> None:
    parse_packet(data, False, None, 0.0)


def _row(
    port: int, inode: int, name: str, pid: int, exe: str = "", unit: str = "", user: str = "root"
) -> ListenerRow:
    return ListenerRow(None, "tcp", "0.0.0.0", port, inode, (Owner(pid, name, exe or name, user, unit, ""),))


def test_the_same_program_under_another_user_is_an_owner_change() -> None:
    tracker = ListenerTracker()
    tracker.update([_row(8080, 1, "python3", 10, user="www-data")], 0.0)
    assert tracker.update([_row(8080, 2, "python3", 11, user="www-data")], 1.0) == []  # a restart
    events = tracker.update([_row(8080, 3, "python3", 12, user="nobody")], 2.0)
    assert [(e.kind, e.before[0].user, e.row.owners[0].user) for e in events] == [
        ("owner-changed", "www-data", "nobody")
    ]


def test_listener_events_and_pid_noise() -> None:
    tracker = ListenerTracker()
    assert tracker.update([_row(80, 1, "nginx", 10)], 0.0) == []  # the baseline
    events = tracker.update([_row(80, 2, "nginx", 11), _row(22, 3, "sshd", 12)], 1.0)
    assert [(e.kind, e.row.port) for e in events] == [("listener-opened", 22)]  # a new nginx PID is no change
    events = tracker.update([_row(80, 4, "apache2", 13), _row(22, 3, "sshd", 12)], 2.0)
    assert [(e.kind, e.row.port, e.before[0].name) for e in events] == [("owner-changed", 80, "nginx")]
    events = tracker.update([_row(22, 3, "sshd", 12)], 3.0)
    assert [(e.kind, e.row.port) for e in events] == [("listener-closed", 80)]
    assert not tracker.changed([_row(22, 3, "sshd", 12)]) and tracker.changed([_row(22, 5, "sshd", 12)])


def test_ignored_sources_are_written_as_the_packet_reader_writes_them(monkeypatch: Any) -> None:
    """--ignore 2001:DB8:0::1 must spare the source the reader reports as 2001:db8::1."""
    import click

    import portkit.watch
    from fixtures_bad_input import run_main

    seen: list[Any] = []

    def capture(options: Any, *_: Any, **__: Any) -> None:
        seen.append(options)
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(portkit.watch, "run_watch", capture)
    result = run_main("watch", "--ignore", "2001:DB8:0::1", "--ignore", "192.0.2.1", "--json")
    assert result.status == 0, result.stderr
    assert seen[0].ignore == ("2001:db8::1", "192.0.2.1")


def test_a_listener_gone_before_its_owner_was_read_is_still_reported(monkeypatch: Any) -> None:
    """The quick reading saw a listener that was gone when owners were read a moment later (it
    lived a few milliseconds): it is reported opened, with its owner unknown, then closed."""
    from portkit.watch import WatchOptions, _run

    fleeting = ListenerRow("lab", "tcp", "0.0.0.0", 7777, 41)
    quick = iter([[], [fleeting], []])

    class QuickReader:
        unreadable: set[int] = set()

        def __init__(self, *_: Any) -> None:
            pass

        def read(self) -> tuple[list[ListenerRow], list[Any]]:
            return next(quick, []), []

        def close(self) -> None:
            pass

    monkeypatch.setattr(_run, "ListenerReader", QuickReader)
    monkeypatch.setattr(_run, "read_listeners", lambda *_a, **_k: ([], []))  # always too late
    events: list[dict[str, Any]] = []
    options = WatchOptions(interval=0.01, accepts=False, max_events=2, duration=10)
    _run.run_watch(options, events.append)
    assert [(e["event"], e.get("port"), e.get("owners")) for e in events] == [
        ("watch-started", None, None),
        ("listener-opened", 7777, []),
        ("listener-closed", 7777, []),
    ]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_hooks_that_fail_hang_or_leave_stdin_unread_never_block_the_caller(tmp_path: Any) -> None:
    import time

    from portkit.cli.watch import HookRunner

    notes: list[str] = []
    started = tmp_path / "started"
    # Never reads its stdin (a scan of every port is far more than a pipe holds), then hangs.
    runner = HookRunner(f"echo $$ >> {started}; sleep 600", 0.5, notes.append)
    big = {"event": "scan", "ports": list(range(1, 65536))}
    t0 = time.monotonic()
    for _ in range(20):
        runner.submit(big)
    assert time.monotonic() - t0 < 1.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(started.read_text().split() if started.exists() else []) < 20:
        time.sleep(0.05)
    runner.close(grace=5)
    groups = [int(g) for g in started.read_text().split()]
    assert len(groups) == 20
    # sh and its sleep: the whole group goes (the orphaned sleep once init has reaped it).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.05)
    assert not any(_group_alive(g) for g in groups)
    assert any("ran too long and was killed" in n for n in notes)
    assert notes[-1] == "--exec: 20 killed (ran over 0.5 s, or still ran at exit)"

    failing = HookRunner("cat > /dev/null; exit 3", 5, notes.append)
    for _ in range(3):
        failing.submit({"event": "listener-opened"})
    failing.close(grace=5)
    assert "--exec: the hook for a listener-opened event exited with status 3" in notes
    assert notes[-1] == "--exec: 3 failed"

    waiting = HookRunner("sleep 600", 60, notes.append)  # at exit, the grace ends what waits
    for _ in range(10):
        waiting.submit({"event": "accepts"})
    t0 = time.monotonic()
    waiting.close(grace=0.5)
    assert time.monotonic() - t0 < 5
    assert notes[-1] == (
        "--exec: 8 killed (ran over 60 s, or still ran at exit), 2 events not passed to a hook"
    )


def test_an_event_line_writes_out_the_control_characters_of_a_process_name() -> None:
    from portkit.cli.watch import describe

    row = ListenerRow("lab", "tcp", "0.0.0.0", 7333, 9, (Owner(42, "\x1b[2K\rok\x07", "x", "u", "", ""),))
    line = describe(ListenerEvent("listener-opened", 0.0, row).to_json())
    assert "\\x1b[2K\\x0dok\\x07/42" in line and not any(ch in line for ch in "\x1b\r\x07"), line
