"""Live statistics per rule: connections, bytes each way, refusals and errors.

Counters are plain integers bumped by the engines (one thread writes each counter, readers
take a snapshot), so counting costs next to nothing on the fast path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RuleStats:
    """Counters of one rule since the forwarder started (kept across reloads)."""

    rule: str
    protocol: str
    listen: str
    target: str
    engine: str
    active: int = 0  # open connections (TCP) or client mappings (UDP)
    total: int = 0  # connections accepted / client mappings created
    refused_allow: int = 0  # source not in the allow-list
    refused_limit: int = 0  # over max_connections (overflow = refuse) or UDP table evictions
    connect_errors: int = 0  # target refused, unreachable or timed out
    resets: int = 0  # connections ended by a reset from either side
    idle_closed: int = 0  # closed by the idle timeout
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client
    datagrams_up: int = 0
    datagrams_down: int = 0
    retired: bool = False  # the rule was removed by a reload; its connections still drain

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "protocol": self.protocol,
            "listen": self.listen,
            "target": self.target,
            "engine": self.engine,
            "active": self.active,
            "total": self.total,
            "refused_allow": self.refused_allow,
            "refused_limit": self.refused_limit,
            "connect_errors": self.connect_errors,
            "resets": self.resets,
            "idle_closed": self.idle_closed,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "datagrams_up": self.datagrams_up,
            "datagrams_down": self.datagrams_down,
            "retired": self.retired,
        }

    @property
    def errors(self) -> int:
        return self.connect_errors + self.resets


@dataclass
class ForwarderStats:
    """The whole forwarder: one RuleStats per rule ever served."""

    pid: int
    started: float = field(default_factory=time.time)
    reloads: int = 0
    draining: bool = False
    rules: dict[str, RuleStats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "uptime": round(time.time() - self.started, 3),
            "reloads": self.reloads,
            "draining": self.draining,
            "rules": [r.to_json() for r in self.rules.values()],
        }
