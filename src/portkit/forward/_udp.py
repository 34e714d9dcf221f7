"""UDP forwarding: one upstream socket per client address, replies back to that client only.

Runs on the asyncio loop with raw non-blocking sockets (loop.add_reader + recvfrom/send),
one datagram in -> the same datagram out, zero-length ones included. Which client owns
which upstream socket, and when a mapping expires or is evicted, is `ClientTable`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from portkit.forward._log import EventLog
from portkit.forward._rules import ForwardRule
from portkit.forward._sockets import error_name, peer, target_family
from portkit.forward._stats import RuleStats
from portkit.forward._udptable import ClientTable, Mapping

MAX_DATAGRAM = 65535
BATCH = 64  # datagrams per readiness callback, so one busy socket cannot starve the loop
SWEEP_INTERVAL = 0.25


class UdpRelay:
    """One UDP rule: the listening socket and its table of client mappings."""

    def __init__(self, sock: socket.socket, rule: ForwardRule, stats: RuleStats, log: EventLog) -> None:
        self.sock = sock
        self.rule = rule
        self.stats = stats
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.table: ClientTable[socket.socket] = ClientTable(
            rule.limits.udp_max_clients, rule.limits.udp_idle_timeout
        )
        self.closed = False
        self.loop.add_reader(sock.fileno(), self._from_clients)
        self._sweeper = self.loop.create_task(self._sweep())

    def update(self, rule: ForwardRule) -> None:
        self.rule = rule
        self.table.max_clients = rule.limits.udp_max_clients
        self.table.idle_timeout = rule.limits.udp_idle_timeout

    def _from_clients(self) -> None:
        for _ in range(BATCH):
            try:
                data, address = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier reply to a client: nothing to do
            now = time.monotonic()
            entry = self.table.get(address, now)
            if entry is None:
                entry = self._map(address, now)
                if entry is None:
                    continue
            try:
                entry.upstream.send(data)
            except (BlockingIOError, InterruptedError):
                continue  # a full send buffer drops the datagram, as the network would
            except OSError as exc:
                self.stats.connect_errors += 1
                self.log(
                    "error",
                    stage="udp-send",
                    rule=self.rule.label,
                    client=peer(address),
                    error=error_name(exc),
                )
                continue
            self.stats.datagrams_up += 1
            self.stats.bytes_up += len(data)

    def _map(self, address: Any, now: float) -> Mapping[socket.socket] | None:
        if not self.rule.allows(address[0]):
            self.stats.refused_allow += 1
            self.log("refuse", rule=self.rule.label, client=peer(address), reason="allow-list")
            return None
        target = self.rule.target
        upstream = socket.socket(target_family(target), socket.SOCK_DGRAM)
        try:
            upstream.setblocking(False)
            upstream.connect((str(target.address), target.port))
        except OSError as exc:
            upstream.close()
            self.stats.connect_errors += 1
            self.log(
                "error",
                stage="udp-connect",
                rule=self.rule.label,
                client=peer(address),
                error=error_name(exc),
            )
            return None
        for old in self.table.add(address, upstream, now):
            self.stats.refused_limit += 1
            self.log("udp-evict", rule=self.rule.label, client=peer(old.client), reason="table-full")
            self._drop(old)
        self.loop.add_reader(upstream.fileno(), self._from_target, address, upstream)
        self.stats.active += 1
        self.stats.total += 1
        self.log("udp-map", rule=self.rule.label, client=peer(address), target=str(target))
        return self.table.get(address, now)

    def _from_target(self, address: Any, upstream: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data = upstream.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ECONNREFUSED: the target's port is closed (ICMP port unreachable).
                self.stats.connect_errors += 1
                self.log(
                    "error",
                    stage="udp-recv",
                    rule=self.rule.label,
                    client=peer(address),
                    error=error_name(exc),
                )
                return
            if self.closed:
                return
            self.table.touch(address, time.monotonic())
            try:
                self.sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                continue
            self.stats.datagrams_down += 1
            self.stats.bytes_down += len(data)

    def _drop(self, entry: Mapping[socket.socket]) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(entry.upstream.fileno())
        entry.upstream.close()
        self.stats.active -= 1

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for entry in self.table.expire(time.monotonic()):
                self.log("udp-expire", rule=self.rule.label, client=peer(entry.client))
                self._drop(entry)

    def close_listener(self) -> None:
        """Stop taking datagrams from new and old clients (a removed rule, a drain)."""
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        self.close_listener()
        self._sweeper.cancel()
        for entry in list(self.table):
            self.table.remove(entry.client)
            self._drop(entry)
        self.sock.close()
