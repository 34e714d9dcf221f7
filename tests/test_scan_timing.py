"""The timing core: RTT estimate, congestion window, rate cap, retries, templates; no clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portkit.errors import UsageError
from portkit.scan._schedule import Schedule
from portkit.scan._timing import (
    TEMPLATES,
    CongestionWindow,
    RateLimiter,
    RttEstimator,
    allowed_tries,
    template,
)


def test_templates_carry_nmaps_values() -> None:
    t4, t5, t3 = template(4), template(5), template(3)
    assert (t4.min_rtt, t4.max_rtt, t4.initial_rtt, t4.max_retries) == (0.1, 1.25, 0.5, 6)
    assert (t5.min_rtt, t5.max_rtt, t5.initial_rtt, t5.max_retries, t5.host_timeout) == (
        0.05,
        0.3,
        0.25,
        2,
        900,
    )
    assert (t3.initial_rtt, t3.max_retries, t3.max_rtt) == (1.0, 10, 10.0)
    assert template(2).scan_delay == 0.4
    assert template(1).scan_delay == 15 and template(0).scan_delay == 300
    assert all(TEMPLATES[level].max_parallelism == 1 for level in (0, 1, 2))
    with pytest.raises(UsageError):
        template(6)


def test_rtt_timeout_is_srtt_plus_four_rttvar_clamped() -> None:
    est = RttEstimator(template(3))
    assert est.timeout == 1.0  # initial, before any sample
    est.sample(0.2)
    assert est.srtt == 0.2 and est.rttvar == 0.2
    assert est.timeout == pytest.approx(1.0)
    for _ in range(200):
        est.sample(0.2)
    assert est.timeout == pytest.approx(0.2, abs=0.01)
    for _ in range(200):
        est.sample(0.001)
    assert est.timeout == 0.1  # min_rtt
    t4 = RttEstimator(template(4))
    t4.sample(5.0)
    assert t4.timeout == 1.25  # max_rtt


@settings(deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20), min_size=1, max_size=50))
def test_timeout_always_within_template_bounds(samples: list[float]) -> None:
    tpl = template(4)
    est = RttEstimator(tpl)
    for s in samples:
        est.sample(s)
        assert tpl.min_rtt <= est.timeout <= tpl.max_rtt


def test_batched_replies_grow_the_window_like_single_ones() -> None:
    for drops in (0, 1, 3):
        one, many = CongestionWindow(template(3)), CongestionWindow(template(3))
        for _ in range(drops):
            one.on_drop()
            many.on_drop()
        for _ in range(500):
            one.on_reply()
        many.on_replies(500)
        assert many.cwnd == pytest.approx(one.cwnd)


def test_max_retries_fit_the_try_bits() -> None:
    assert template(3).with_options(max_retries=15).max_retries == 15
    with pytest.raises(UsageError):
        template(3).with_options(max_retries=16)


def test_congestion_window_grows_on_replies_and_halves_on_drops() -> None:
    cw = CongestionWindow(template(3))
    start = cw.cwnd
    for _ in range(10):
        cw.on_reply()
    assert cw.cwnd == start + 10  # slow start: one per reply
    cw.on_drop()
    assert cw.cwnd == (start + 10) / 2 and cw.ssthresh == cw.cwnd
    before = cw.cwnd
    cw.on_reply()
    assert cw.cwnd == pytest.approx(before + 1 / before)  # congestion avoidance
    assert cw.room(int(cw.cwnd)) == 0


def test_rate_limiter_caps_probes_per_second() -> None:
    limiter = RateLimiter(100, now=0.0)
    sent = 0
    t = 0.0
    while t < 2.0:
        sent += limiter.allow(t, 1000)
        t += 0.001
    assert 190 <= sent <= 215
    with pytest.raises(UsageError):
        RateLimiter(0)


def test_retry_budget_grows_only_after_lost_probes_are_seen() -> None:
    assert allowed_tries(0, 10) == 1
    assert allowed_tries(1, 10) == 2
    assert allowed_tries(3, 10) == 4
    assert allowed_tries(9, 6) == 6
    assert allowed_tries(0, 0) == 0


def test_schedule_retransmits_silent_probes_and_settles_them() -> None:
    tpl = template(4)
    sched = Schedule(iter(range(3)), nports=3, tpl=tpl)
    first = sched.next_probes(0.0)
    assert first == [(0, 0), (1, 0), (2, 0)]
    assert sched.answered(0, 0, 0.01)
    assert not sched.answered(0, 0, 0.02)  # a duplicate answer settles nothing
    assert sched.expired(0.4) == []
    assert sched.expired(0.6) == []  # 1 and 2 timed out (initial 0.5 s): retransmitted
    assert sorted(sched.next_probes(0.6)) == [(1, 1), (2, 1)]
    # A reply to a retransmission is a drop: the window halves and the retry budget grows.
    cwnd = sched.window.cwnd
    assert sched.answered(1, 1, 0.62)
    assert sched.window.cwnd == cwnd / 2
    assert sched.drops == 1
    silent = []
    t = 0.6
    while not sched.done and t < 30:
        t += 0.05
        silent += sched.expired(t)
        sched.next_probes(t)
    assert silent == [2]
    assert sched.done
    assert sched.retransmitted >= 2


def test_probes_time_out_by_their_hosts_timeout_now_not_when_they_left() -> None:
    """nmap's rule: the first probes leave under the initial timeout (0.5 s at -T4); once an RTT
    sample has brought the host's timeout down, they are retransmitted by the shorter one."""
    sched = Schedule(iter(range(3)), nports=3, tpl=template(4))
    assert sched.next_probes(0.0, limit=2) == [(0, 0), (1, 0)]
    assert sched.expired(0.0) == []  # armed while the timeout is still the initial 0.5 s
    assert sched.next_probes(0.01, limit=1) == [(2, 0)]
    assert sched.answered(2, 0, 0.06)  # RTT 50 ms: timeout 0.05 + 4 * 0.05 = 0.25 s
    assert sched.timeout(0) == pytest.approx(0.25)
    assert sched.expired(0.2) == [] and sched.next_probes(0.2) == []
    assert sched.expired(0.26) == []
    assert sorted(sched.next_probes(0.26)) == [(0, 1), (1, 1)]  # not at 0.5 s
    assert sched.next_wakeup(0.26) == pytest.approx(0.25)


def test_a_timeout_that_grew_after_a_probe_left_is_waited_for() -> None:
    sched = Schedule(iter(range(3)), nports=3, tpl=template(4))
    assert sched.next_probes(0.0, limit=1) == [(0, 0)]
    assert sched.answered(0, 0, 0.05)  # timeout 0.25 s
    assert sched.next_probes(0.1, limit=2) == [(1, 0), (2, 0)]
    assert sched.expired(0.1) == []  # probe 1 armed: due at 0.35 s by the timeout of the moment
    assert sched.answered(2, 0, 0.34)  # a slower answer: the timeout grows to about 0.41 s
    assert sched.timeout(0) > 0.4
    assert sched.expired(0.4) == [] and sched.next_probes(0.4) == []  # 0.3 s after it left: waits
    assert sched.expired(0.52) == [] and sched.next_probes(0.52) == [(1, 1)]


def test_schedule_respects_scan_delay_and_rate() -> None:
    tpl = template(2)  # scan delay 0.4 s, one probe at a time
    sched = Schedule(iter(range(5)), nports=5, tpl=tpl)
    assert len(sched.next_probes(0.0)) == 1
    assert sched.next_probes(0.1) == []
    sched.answered(0, 0, 0.1)
    assert sched.next_probes(0.2) == []
    assert len(sched.next_probes(0.41)) == 1
    rated = Schedule(iter(range(1000)), nports=1000, tpl=template(4), max_rate=50, now=0.0)
    sent = 0
    t = 0.0
    while t < 1.0:
        for key, _ in rated.next_probes(t):
            rated.answered(key, 0, t)
            sent += 1
        t += 0.01
    assert 45 <= sent <= 56


def test_host_timeout_stops_probing_a_host() -> None:
    tpl = template(4).with_options(host_timeout=1.0)
    sched = Schedule(iter(range(100)), nports=100, tpl=tpl)
    sched.window.cwnd = 1
    sched.next_probes(0.0)
    t = 0.0
    while not sched.done and t < 10:
        t += 0.2
        sched.expired(t)
        for key, tryno in sched.next_probes(t):
            sched.answered(key, tryno, t)
    assert sched.timed_out(0)
    assert sched.sent < 100


class IcmpRateLimitedHost:
    """A Linux host's ICMP errors as its kernel rations them (icmp_ratelimit 1000 ms): per peer, a
    bucket of 6 tokens refilled at one per second (inet_peer_xrlim_allow, XRLIM_BURST_FACTOR)."""

    def __init__(self) -> None:
        self.tokens = 6.0
        self.stamp = 0.0

    def answers(self, now: float) -> bool:
        self.tokens = min(6.0, self.tokens + (now - self.stamp))
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def udp_scan_of_closed_ports(
    hosts: int, nports: int, level: int = 3, pacing: bool = True
) -> tuple[set[int], float]:
    """Drive a schedule against hosts whose every port is closed (answered by a rate-limited ICMP
    port-unreachable, 1 ms later): the probes settled as silent, and when the scan ended."""
    targets = [IcmpRateLimitedHost() for _ in range(hosts)]
    sched = Schedule(iter(range(hosts * nports)), nports=nports, tpl=template(level), udp_pacing=pacing)
    silent: set[int] = set()
    in_flight: list[tuple[float, int, int]] = []
    t = 0.0
    while not sched.done and t < 600:
        for key, tryno in sched.next_probes(t):
            if targets[key // nports].answers(t):
                in_flight.append((t + 0.001, key, tryno))
        t += 0.005
        for item in [i for i in in_flight if i[0] <= t]:
            in_flight.remove(item)
            sched.answered(item[1], item[2], t)
        silent.update(sched.expired(t))
    assert sched.done
    return silent, t


def test_udp_scan_waits_out_icmp_rate_limits_as_nmap_does() -> None:
    """nmap's defences against rate-limited ICMP errors: the first retransmission of each new try
    number waits a second (rate-limit detection), and replies that only retransmissions got make
    the host's send delay grow (50 ms, doubling up to 1 s). Without them, every closed port after
    the sixth of a Linux host reads open|filtered."""
    unpaced, _ = udp_scan_of_closed_ports(1, 21, pacing=False)
    assert len(unpaced) > 5  # what the plain schedule reports: silence where ports are closed
    silent, elapsed = udp_scan_of_closed_ports(1, 21)
    assert silent == set()
    assert elapsed < 30
    # 40 closed ports: nmap 7.93 -sU took 36 s on a Linux peer, every port closed.
    silent, elapsed = udp_scan_of_closed_ports(1, 40)
    assert silent == set()
    assert elapsed < 60


def test_udp_pacing_holds_back_only_the_rate_limited_host() -> None:
    """The send delay is per host, as nmap's: three rate-limited hosts scanned together take about
    as long as one."""
    _, one = udp_scan_of_closed_ports(1, 30)
    silent, three = udp_scan_of_closed_ports(3, 30)
    assert silent == set()
    assert three < one * 1.5 + 2


def test_a_udp_scan_waiting_out_a_rate_limit_sleeps_until_then() -> None:
    """A host held back for rate-limit detection, whose send delay passed long ago, is due when
    the wait ends: the driver must sleep until then, not poll in a loop (a 20-port scan of a
    rate-limited host spent 3.7 s of CPU in 14 s)."""
    sched = Schedule(iter(range(3)), nports=3, tpl=template(3), udp_pacing=True)
    assert len(sched.next_probes(0.0)) == 3
    sched._boost(0, 0.0)  # a send delay of 50 ms, its last send at 0.0
    assert sched.expired(1.1) == []  # the initial 1 s timeout: all three go back for a second try
    assert sched.next_probes(1.1) == []  # the first retry of try 1 waits a second (until 2.1)
    assert not sched.can_send()
    assert sched.next_wakeup(1.2) >= 0.1  # not 0: nothing may go before 2.1 (the driver polls at most 0.1 s)
    assert [tryno for _, tryno in sched.next_probes(2.1)] == [1]  # then one, the delay after it
    assert sched.next_wakeup(2.11) == pytest.approx(0.04)
