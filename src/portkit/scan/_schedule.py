"""The scan's pure core: which probe goes out when, which are retransmitted, which are settled.

Theory of operation: every probe is one index into the hosts x ports space
(`host * nports + port_index`), drawn lazily from a keyed permutation. `next_probes(now)`
hands the driver the probes it may send now (retransmissions first, then fresh ones), within
the congestion window, the rate cap and the scan delay. The driver reports each answer with
`answered(key, tryno, now)` and asks `expired(now)` for probes whose last try went unanswered
past the host's timeout: those are retransmitted while nmap's retry budget allows
(`allowed_tries`), parked if the budget may still grow, and otherwise settled as silent.
No clock or socket appears here.

A probe has timed out when `now - sent_at` exceeds its host's timeout *now*, as nmap judges
it, not the timeout the host had when the probe went out: the first probes of a scan leave
before any RTT sample (under the template's initial timeout, 0.5 s at -T4) and must not wait
for it once samples have brought the timeout down (to min_rtt, 0.1 s at -T4). So each host
keeps its armed probes in a heap by send time, and one timer per host says when its oldest
probe is due; a new RTT sample that shortens the timeout moves that timer earlier.

UDP scans (`udp_pacing`) add nmap's defences against rate-limited ICMP errors (Linux sends a
peer 6 port-unreachables at once, then one a second; scan_engine.cc): the first retransmission
of each new try number to a host waits a second (rate-limit detection), and a host whose
replies come mostly to retransmissions, or first to a fourth try (a fifth at -T4 and up), gets
a send delay between its probes, 50 ms and doubling up to 1 s. Both hold back only that host:
its fresh probes wait in a per-host queue while the others' go out.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator
from itertools import compress, islice, repeat

from portkit.scan._timing import (
    CongestionWindow,
    RateLimiter,
    RttEstimator,
    Template,
    allowed_tries,
)

RLD_WAIT = 1.0  # nmap's RLD_TIME_MS
UDP_MAX_DELAY = 1.0  # nmap's maxUDPScanDelay, which -T4 and -T5 leave alone
UDP_FIRST_DELAY = 0.05  # boostScanDelay's first step for UDP
HELD_MAX = 1 << 16  # fresh probes waiting for their held-back hosts, at most


class Schedule:
    def __init__(
        self,
        order: Iterator[int],
        nports: int,
        tpl: Template,
        *,
        max_rate: float | None = None,
        now: float = 0.0,
        udp_pacing: bool = False,
    ) -> None:
        self.tpl = tpl
        self.nports = nports
        self._fresh = order
        self._fresh_done = False
        self.window = CongestionWindow(tpl)
        self.rate = RateLimiter(max_rate, now) if max_rate else None
        self.outstanding: dict[int, tuple[int, float]] = {}  # key -> (tryno, sent at)
        self._timers: list[tuple[float, int]] = []  # (when the host's oldest armed probe is due, host)
        self._due: dict[int, float] = {}  # host -> its live timer (other entries are stale)
        self._armed: dict[int, list[tuple[float, int, int]]] = {}  # host -> heap of (sent at, key, tryno)
        # Probes handed out but not yet on the timer heap: most loopback answers arrive before
        # the driver next asks about time, and those never cost a heap push and pop.
        self._unarmed: list[tuple[int, int]] = []
        self._unarmed_fresh: list[int] = []  # the same for first tries, as bare keys
        self._retry: deque[tuple[int, int]] = deque()
        self._bench: list[tuple[int, int]] = []
        self._rtt: dict[int, RttEstimator] = {}
        self._sampled: dict[int, float] = {}
        self._best_try: dict[int, int] = {}
        self._host_started: dict[int, float] = {}
        self.timed_out_hosts: set[int] = set()
        self._last_send = -1e18
        self.sent = 0
        self.retransmitted = 0
        self.drops = 0
        # UDP pacing (see the module docstring), per host; all empty without it.
        self.udp_pacing = udp_pacing
        self._max_delay = max(UDP_MAX_DELAY, tpl.scan_delay)
        self._drop_share = 0.40 if tpl.level >= 4 else 0.30
        self._boost_try = 4 if tpl.level >= 4 else 3
        self._delay: dict[int, float] = {}
        self._host_sent: dict[int, float] = {}
        self._rld_until: dict[int, float] = {}
        self._max_try_sent: dict[int, int] = {}
        self._good: dict[int, int] = {}
        self._dropped: dict[int, int] = {}
        self._last_boost: dict[int, float] = {}
        self._held: dict[int, deque[int]] = {}
        self._held_count = 0
        self._all_blocked = False

    # -- per-host timing -----------------------------------------------------------------

    def rtt(self, host: int) -> RttEstimator:
        est = self._rtt.get(host)
        if est is None:
            est = self._rtt[host] = RttEstimator(self.tpl)
        return est

    def timeout(self, host: int) -> float:
        return self.rtt(host).timeout

    # -- sending -------------------------------------------------------------------------

    def _send_room(self, now: float, limit: int) -> int | None:
        """How many probes may leave now (the window, --scan-delay, --max-rate); None while
        --scan-delay holds every probe back."""
        room = min(limit, self.window.room(len(self.outstanding)))
        if self.tpl.scan_delay > 0:
            if now - self._last_send < self.tpl.scan_delay:
                return None
            room = min(room, 1)
        if self.rate is not None and room:
            room = self.rate.allow(now, room)
        return room

    def next_probes(self, now: float, limit: int = 1 << 30) -> list[tuple[int, int]]:
        """(key, tryno) pairs to send now; the caller must send them all."""
        if self.udp_pacing:
            return self._next_paced(now, limit)
        room = self._send_room(now, limit)
        if room is None:
            return []
        out: list[tuple[int, int]] = []
        nports, host_timeout = self.nports, self.tpl.host_timeout
        outstanding, fresh = self.outstanding, self._fresh
        while len(out) < room:
            if self._retry:
                key, tryno = self._retry.popleft()
                self.retransmitted += 1
            elif not self._fresh_done:
                nxt = next(fresh, None)
                if nxt is None:
                    self._fresh_done = True
                    continue
                key, tryno = nxt, 0
            else:
                break
            if host_timeout:
                host = key // nports
                started = self._host_started.setdefault(host, now)
                if host in self.timed_out_hosts:
                    continue
                if now - started > host_timeout:
                    self.timed_out_hosts.add(host)
                    continue
            outstanding[key] = (tryno, now)
            out.append((key, tryno))
        if out:
            self._last_send = now
            self.sent += len(out)
            self._unarmed.extend(out)
        return out

    def next_batch(self, now: float, limit: int = 1 << 30) -> tuple[list[int], list[tuple[int, int]]]:
        """`next_probes` for drivers' hot paths: (fresh keys, whose try is 0; retransmissions).

        Same window, rate and order as `next_probes` (retransmissions first), but fresh probes
        come off the order in C (islice), with no per-probe tuple or bookkeeping in Python.
        """
        if self.tpl.host_timeout or self.tpl.scan_delay > 0 or self.udp_pacing:
            probes = self.next_probes(now, limit)
            return [k for k, t in probes if not t], [(k, t) for k, t in probes if t]
        room = min(limit, self.window.room(len(self.outstanding)))
        if self.rate is not None and room:
            room = self.rate.allow(now, room)
        if room <= 0:
            return [], []
        outstanding = self.outstanding
        retries: list[tuple[int, int]] = []
        retry = self._retry
        while retry and len(retries) < room:
            key, tryno = retry.popleft()
            outstanding[key] = (tryno, now)
            retries.append((key, tryno))
        if retries:
            self.retransmitted += len(retries)
            self._unarmed.extend(retries)
            room -= len(retries)
        fresh: list[int] = []
        if room and not self._fresh_done:
            fresh = list(islice(self._fresh, room))
            if len(fresh) < room:
                self._fresh_done = True
            outstanding.update(zip(fresh, repeat((0, now))))
            self._unarmed_fresh.extend(fresh)
        if fresh or retries:
            self._last_send = now
            self.sent += len(fresh) + len(retries)
        return fresh, retries

    def _arm(self) -> None:
        """Put the still-unanswered probes handed out since the last call on their hosts' heaps."""
        outstanding = self.outstanding
        if self._unarmed_fresh:
            # Most were answered already: find the rest in C.
            for key in filter(outstanding.__contains__, self._unarmed_fresh):
                tryno, sent_at = outstanding[key]
                if not tryno:
                    self._arm_one(sent_at, key, 0)
            self._unarmed_fresh.clear()
        for key, tryno in self._unarmed:
            pending = outstanding.get(key)
            if pending is not None and pending[0] == tryno:
                self._arm_one(pending[1], key, tryno)
        self._unarmed.clear()

    def _arm_one(self, sent_at: float, key: int, tryno: int) -> None:
        host = key // self.nports
        armed = self._armed.get(host)
        if armed is None:
            armed = self._armed[host] = []
        heapq.heappush(armed, (sent_at, key, tryno))
        if armed[0][2] == tryno and armed[0][1] == key:  # the host's oldest: its timer follows it
            self._set_timer(host, sent_at + self.timeout(host))

    def _set_timer(self, host: int, due: float) -> None:
        """The host's oldest armed probe is due at `due` (any earlier timer of the host stands)."""
        current = self._due.get(host)
        if current is None or due < current:
            self._due[host] = due
            heapq.heappush(self._timers, (due, host))

    def _sample(self, host: int, rtt: float) -> None:
        """An RTT sample for `host`; a shorter timeout brings its armed probes' timer forward."""
        est = self._rtt.get(host)
        if est is None:
            est = self._rtt[host] = RttEstimator(self.tpl)
        before = est.timeout
        est.sample(rtt)
        if est.timeout < before:
            armed = self._armed.get(host)
            if armed:
                self._set_timer(host, armed[0][0] + est.timeout)

    # -- UDP pacing ----------------------------------------------------------------------

    def _next_paced(self, now: float, limit: int) -> list[tuple[int, int]]:
        """`next_probes` with per-host holds: retransmissions first, then held fresh probes of
        hosts free to send again, then new ones (a held-back host's go to its queue)."""
        room = self._send_room(now, limit)
        if room is None:
            return []
        out: list[tuple[int, int]] = []
        nports = self.nports
        retry = self._retry
        for _ in range(len(retry)):
            if len(out) >= room:
                break
            key, tryno = retry.popleft()
            host = key // nports
            if self._held_back(host, now) or self._rate_limit_wait(host, tryno, now):
                retry.append((key, tryno))
                continue
            self.retransmitted += 1
            self._send_paced(key, tryno, host, now, out)
        for host in list(self._held):
            if len(out) >= room:
                break
            if self._held_back(host, now):
                continue
            queue = self._held[host]
            while queue and len(out) < room and not self._held_back(host, now):
                self._held_count -= 1
                self._send_paced(queue.popleft(), 0, host, now, out)
            if not queue:
                del self._held[host]
        while len(out) < room and not self._fresh_done and self._held_count < HELD_MAX:
            fresh = next(self._fresh, None)
            if fresh is None:
                self._fresh_done = True
                break
            host = fresh // nports
            if self._held_back(host, now):
                self._held.setdefault(host, deque()).append(fresh)
                self._held_count += 1
                continue
            self._send_paced(fresh, 0, host, now, out)
        self._all_blocked = len(out) < room
        if out:
            self._last_send = now
            self.sent += len(out)
            self._unarmed.extend(out)
        return out

    def _send_paced(self, key: int, tryno: int, host: int, now: float, out: list[tuple[int, int]]) -> None:
        if self.tpl.host_timeout:
            started = self._host_started.setdefault(host, now)
            if host in self.timed_out_hosts:
                return
            if now - started > self.tpl.host_timeout:
                self.timed_out_hosts.add(host)
                return
        self.outstanding[key] = (tryno, now)
        self._host_sent[host] = now
        out.append((key, tryno))

    def _held_back(self, host: int, now: float) -> bool:
        """Whether `host` may not be sent a probe now: waiting out a rate limit, or its delay."""
        until = self._rld_until.get(host)
        if until is not None:
            if now < until:
                return True
            del self._rld_until[host]
        delay = self._delay.get(host, 0.0)
        return delay > 0 and now - self._host_sent.get(host, -math.inf) < delay

    def _rate_limit_wait(self, host: int, tryno: int, now: float) -> bool:
        """nmap's rate-limit detection: the first retransmission of a new try number to a host
        waits RLD_WAIT (so a rate limit's bucket refills), and the host with it."""
        if tryno <= self._max_try_sent.get(host, 0) or self.nports < 2:
            return False
        self._max_try_sent[host] = tryno
        self._rld_until[host] = now + RLD_WAIT
        return True

    def _pace_answer(self, host: int, tryno: int, sent_at: float, best_before: int, now: float) -> None:
        """Count a reply as good or as a drop (a reply to a retransmission sent since the last
        boost) and boost the host's send delay as nmap's ultrascan_adjust_timing does."""
        if tryno > 0 and sent_at > self._last_boost.get(host, -math.inf):
            self._dropped[host] = self._dropped.get(host, 0) + 1
        else:
            self._good[host] = self._good.get(host, 0) + 1
        bad, good = self._dropped.get(host, 0), self._good.get(host, 0)
        if bad > 10 and bad / (bad + good) > self._drop_share:
            self._boost(host, now)
        if tryno > best_before and tryno > self._boost_try:
            self._boost(host, now)

    def _boost(self, host: int, now: float) -> None:
        delay = self._delay.get(host, 0.0)
        delay = UDP_FIRST_DELAY if delay == 0 else min(delay * 2, UDP_MAX_DELAY)
        self._delay[host] = min(delay, self._max_delay)
        self._last_boost[host] = now
        self._dropped[host] = self._good[host] = 0

    # -- answers and silence -------------------------------------------------------------

    def answered(self, key: int, tryno: int, now: float) -> bool:
        """Record an answer to try `tryno` of probe `key`; False if the probe is no longer pending."""
        pending = self.outstanding.pop(key, None)
        if pending is None:
            return False
        last_try, sent_at = pending
        host = key // self.nports
        # One RTT sample per host per instant: drivers pass the time of a whole receive batch,
        # and a thousand samples of the same batch would teach the estimator nothing more.
        if tryno == last_try and self._sampled.get(host) != now:
            self._sampled[host] = now
            self._sample(host, now - sent_at)
        if tryno > 0:
            # Something was lost on the way: the first probe or its answer.
            self.window.on_drop()
            self.drops += 1
        else:
            self.window.on_reply()
        best_before = self._best_try.get(host, 0)
        if tryno > best_before:
            self._best_try[host] = tryno
        if self.udp_pacing:
            self._pace_answer(host, tryno, sent_at, best_before, now)
        return True

    def answered_batch(
        self, answers: list[tuple[int, int, int, int]], now: float
    ) -> list[tuple[int, int, int]]:
        """`answered` for many (key, tryno, code, ttl) at once: the (key, code, ttl) still pending."""
        if self.udp_pacing:
            return [(key, code, ttl) for key, tryno, code, ttl in answers if self.answered(key, tryno, now)]
        outstanding, nports, sampled = self.outstanding, self.nports, self._sampled
        accepted: list[tuple[int, int, int]] = []
        first_tries = 0
        for key, tryno, code, ttl in answers:
            pending = outstanding.pop(key, None)
            if pending is None:
                continue
            accepted.append((key, code, ttl))
            if tryno == 0 and pending[0] == 0:
                first_tries += 1
                host = key // nports
                if sampled.get(host) != now:
                    sampled[host] = now
                    self._sample(host, now - pending[1])
                continue
            # The slow path (retransmissions) keeps answered()'s exact bookkeeping.
            outstanding[key] = pending
            accepted.pop()
            if self.answered(key, tryno, now):
                accepted.append((key, code, ttl))
        self.window.on_replies(first_tries)
        return accepted

    def answered_columns(
        self, keys: list[int], trynos: bytes, codes: bytes, ttls: bytes, now: float
    ) -> tuple[list[int], bytes, bytes]:
        """`answered_batch` for answers as columns (a C driver's output): the columns still pending.

        First tries (all a loopback scan sees) are settled with C-speed builtins: one dict pop
        per answer, one RTT sample per host, the window grown once; answers to retransmissions
        go through `answered_batch`'s exact bookkeeping.
        """
        if trynos.count(0) != len(trynos) or self.udp_pacing:
            accepted = self.answered_batch(list(zip(keys, trynos, codes, ttls, strict=True)), now)
            return [a[0] for a in accepted], bytes(a[1] for a in accepted), bytes(a[2] for a in accepted)
        pending = list(map(self.outstanding.pop, keys, repeat(None)))
        nports, sampled = self.nports, self._sampled
        first_host = keys[0] // nports if keys else 0
        if keys and min(keys) // nports == max(keys) // nports == first_host:
            if sampled.get(first_host) != now:
                # The first answer whose probe's last try was the first one (answered()'s rule).
                for p in pending:
                    if p is not None and p[0] == 0:
                        sampled[first_host] = now
                        self._sample(first_host, now - p[1])
                        break
        else:
            for key, p in zip(keys, pending, strict=True):
                if p is not None and p[0] == 0:
                    host = key // nports
                    if sampled.get(host) != now:
                        sampled[host] = now
                        self._sample(host, now - p[1])
        missing = pending.count(None)
        self.window.on_replies(len(keys) - missing)
        if not missing:
            return keys, codes, ttls
        return list(compress(keys, pending)), bytes(compress(codes, pending)), bytes(compress(ttls, pending))

    def expired(self, now: float) -> list[int]:
        """Probes settled as silent now (their last allowed try timed out)."""
        if self._unarmed or self._unarmed_fresh:
            self._arm()
        silent: list[int] = []
        timers, nports, outstanding = self._timers, self.nports, self.outstanding
        while timers and timers[0][0] <= now:
            due, host = heapq.heappop(timers)
            if self._due.get(host) != due:
                continue  # replaced by an earlier timer, or the host has nothing armed
            del self._due[host]
            armed = self._armed[host]
            timeout = self.timeout(host)
            while armed and armed[0][0] + timeout <= now:
                _, key, tryno = heapq.heappop(armed)
                pending = outstanding.get(key)
                if pending is None or pending[0] != tryno:
                    continue
                del outstanding[key]
                if host in self.timed_out_hosts:
                    continue
                if tryno < allowed_tries(self._best_try.get(host, 0), self.tpl.max_retries):
                    self._retry.append((key, tryno + 1))
                elif tryno < self.tpl.max_retries:
                    self._bench.append((key, tryno))
                else:
                    silent.append(key)
            if armed:
                # Not due yet by the host's current timeout (it may have grown since the timer was set).
                self._set_timer(host, armed[0][0] + timeout)
            else:
                del self._armed[host]
        if self._bench and self._idle():
            # The budget can grow no more: retry what it now allows, settle the rest.
            bench, self._bench = self._bench, []
            for key, tryno in bench:
                host = key // nports
                if tryno < allowed_tries(self._best_try.get(host, 0), self.tpl.max_retries):
                    self._retry.append((key, tryno + 1))
                else:
                    silent.append(key)
        return silent

    def can_send(self) -> bool:
        """Whether `next_probes` could hand out a probe right now (ignoring the rate cap)."""
        has_work = bool(self._retry) or not self._fresh_done or bool(self._held)
        if self.rate is not None and self.rate.tokens < 1:
            return False
        if self.udp_pacing and self._all_blocked:
            return False
        return has_work and self.window.room(len(self.outstanding)) > 0 and not self.tpl.scan_delay

    def _idle(self) -> bool:
        return self._fresh_done and not self.outstanding and not self._retry and not self._held

    @property
    def done(self) -> bool:
        return self._idle() and not self._bench

    def next_wakeup(self, now: float) -> float:
        """Seconds until something may change without an answer arriving."""
        if self._unarmed or self._unarmed_fresh:
            self._arm()
        timers = self._timers
        while timers and self._due.get(timers[0][1]) != timers[0][0]:
            heapq.heappop(timers)  # stale: its host's timer moved earlier or is gone
        waits = [timers[0][0] - now] if timers else [0.1]
        if self.rate is not None and (self._retry or not self._fresh_done):
            waits.append(self.rate.wait())
        if self.tpl.scan_delay:
            waits.append(self._last_send + self.tpl.scan_delay - now)
        if self.udp_pacing and (self._retry or self._held):
            # Each host with a probe waiting is free when both its rate-limit wait and its send
            # delay are over (a past delay must not hide a wait still to come).
            nports, inf = self.nports, math.inf
            for host in {key // nports for key, _ in self._retry} | set(self._held):
                free = max(
                    self._rld_until.get(host, -inf),
                    self._host_sent.get(host, -inf) + self._delay.get(host, 0.0),
                )
                waits.append(free - now)
        return max(0.0, min(waits))

    def timed_out(self, host: int) -> bool:
        return host in self.timed_out_hosts
