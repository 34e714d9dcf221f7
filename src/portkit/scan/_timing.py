"""Rule 1 for timing: RTT estimation, congestion window, rate cap and templates, with no clock.

Theory of operation: the caller passes `now` (seconds, monotonic) into everything, so the
whole of a scan's pacing can be replayed in a test. Per host, `RttEstimator` keeps nmap's
smoothed RTT and variance (timeout = srtt + 4 * rttvar, clamped to the template's bounds).
One `CongestionWindow` bounds the probes in flight: it grows by one per reply in slow start
and by 1/cwnd afterwards, and halves on a drop. A drop is a reply to a retransmission (the
first probe or its answer was lost); silence alone is not a drop, because a firewall that
drops probes is the normal case for a scanner. `RateLimiter` is a token bucket for
`--max-rate`. `Template` holds `-T0`..`-T5` with nmap's values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from portkit.errors import UsageError

MAX_RETRIES = 15


@dataclass(frozen=True)
class Template:
    """A timing template; times in seconds. Values are nmap's (nmap.cc, `-T`)."""

    level: int
    name: str
    min_rtt: float
    max_rtt: float
    initial_rtt: float
    max_retries: int
    scan_delay: float = 0.0
    max_scan_delay: float = 1.0
    host_timeout: float = 0.0  # 0: none
    max_parallelism: int = 0  # 0: no cap beyond the congestion window's
    initial_cwnd: float = 10.0
    max_cwnd: float = 300.0

    def with_options(
        self,
        *,
        max_retries: int | None = None,
        host_timeout: float | None = None,
        min_rtt: float | None = None,
        max_rtt: float | None = None,
        initial_rtt: float | None = None,
        scan_delay: float | None = None,
    ) -> Template:
        changes: dict[str, float | int] = {}
        for key, value in (
            ("max_retries", max_retries),
            ("host_timeout", host_timeout),
            ("min_rtt", min_rtt),
            ("max_rtt", max_rtt),
            ("initial_rtt", initial_rtt),
            ("scan_delay", scan_delay),
        ):
            if value is not None:
                if value < 0:
                    raise UsageError(f"invalid --{key.replace('_', '-')} {value}: must not be negative")
                if key == "max_retries" and value > MAX_RETRIES:
                    # Raw probes carry the try number in 4 bits of the source port.
                    raise UsageError(f"invalid --max-retries {value}: at most {MAX_RETRIES}")
                changes[key] = value
        return replace(self, **changes)  # type: ignore[arg-type]


TEMPLATES: dict[int, Template] = {
    0: Template(
        0,
        "paranoid",
        0.1,
        10.0,
        300.0,
        10,
        scan_delay=300.0,
        max_scan_delay=300.0,
        max_parallelism=1,
        initial_cwnd=1,
        max_cwnd=1,
    ),
    1: Template(
        1,
        "sneaky",
        0.1,
        10.0,
        15.0,
        10,
        scan_delay=15.0,
        max_scan_delay=15.0,
        max_parallelism=1,
        initial_cwnd=1,
        max_cwnd=1,
    ),
    2: Template(
        2,
        "polite",
        0.1,
        10.0,
        1.0,
        10,
        scan_delay=0.4,
        max_scan_delay=1.0,
        max_parallelism=1,
        initial_cwnd=1,
        max_cwnd=1,
    ),
    # portkit's own congestion bounds start above nmap's (it keeps nmap's RTT and retry values):
    # probes are cheap and the window still halves on every drop.
    3: Template(3, "normal", 0.1, 10.0, 1.0, 10, initial_cwnd=64, max_cwnd=2048),
    4: Template(4, "aggressive", 0.1, 1.25, 0.5, 6, max_scan_delay=0.01, initial_cwnd=128, max_cwnd=4096),
    5: Template(
        5,
        "insane",
        0.05,
        0.3,
        0.25,
        2,
        max_scan_delay=0.005,
        host_timeout=900.0,
        initial_cwnd=256,
        max_cwnd=8192,
    ),
}


def template(level: int) -> Template:
    if level not in TEMPLATES:
        raise UsageError(f"invalid timing template -T{level}: expected -T0 to -T5")
    return TEMPLATES[level]


class RttEstimator:
    """nmap's per-host timeout: srtt + 4 * rttvar, clamped to [min_rtt, max_rtt]."""

    __slots__ = ("rttvar", "srtt", "tpl")  # one per host: a /16 has 65,536 of them

    def __init__(self, tpl: Template) -> None:
        self.tpl = tpl
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        rtt = max(0.0, min(rtt, 2 * self.tpl.max_rtt))
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = max(0.005, rtt)  # nmap starts the variance at max(5 ms, rtt)
            return
        delta = rtt - self.srtt
        self.srtt += delta / 8
        self.rttvar += (abs(delta) - self.rttvar) / 4

    @property
    def timeout(self) -> float:
        if self.srtt is None:
            return self.tpl.initial_rtt
        return min(self.tpl.max_rtt, max(self.tpl.min_rtt, self.srtt + 4 * self.rttvar))


class CongestionWindow:
    """How many probes may be in flight: slow start, congestion avoidance, halving on drops."""

    def __init__(self, tpl: Template) -> None:
        self.low = 1.0
        self.high = float(tpl.max_parallelism or tpl.max_cwnd)
        self.cwnd = min(self.high, tpl.initial_cwnd)
        self.ssthresh = self.high

    def on_reply(self) -> None:
        self.cwnd += 1.0 if self.cwnd < self.ssthresh else 1.0 / self.cwnd
        self.cwnd = min(self.cwnd, self.high)

    def on_replies(self, count: int) -> None:
        """`on_reply` `count` times (a receive batch at once)."""
        while count > 0 and self.cwnd < self.ssthresh and self.cwnd < self.high:
            step = min(count, int(self.ssthresh - self.cwnd) + 1)
            self.cwnd = min(self.cwnd + step, self.high)
            count -= step
        for _ in range(count):
            if self.cwnd >= self.high:
                break
            self.on_reply()

    def on_drop(self) -> None:
        self.ssthresh = max(2.0, self.cwnd / 2)
        self.cwnd = max(self.low, self.cwnd / 2)

    def room(self, in_flight: int) -> int:
        return max(0, int(self.cwnd) - in_flight)


class RateLimiter:
    """A token bucket: at most `rate` probes per second, bursts up to a tenth of a second's worth."""

    def __init__(self, rate: float, now: float = 0.0) -> None:
        if rate <= 0:
            raise UsageError(f"invalid --max-rate {rate}: must be a positive number of packets per second")
        self.rate = rate
        self.burst = max(1.0, rate / 10)
        self.tokens = 1.0
        self.stamp = now

    def allow(self, now: float, wanted: int) -> int:
        """How many of `wanted` probes may go now (and take their tokens)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    def wait(self) -> float:
        """Seconds until the next token."""
        return max(0.0, (1 - self.tokens) / self.rate)


def allowed_tries(max_successful_try: int, max_retries: int) -> int:
    """How many retransmissions a silent probe gets, as nmap decides it.

    One at first; more only after the host has answered some retransmission (which shows that
    probes or replies do get lost there), and never more than --max-retries.
    """
    return min(max_retries, max(1, max_successful_try + 1))
