"""What `diagnose` answers with: codes, findings, the evidence behind them, and the checks made.

The codes are a stable vocabulary: scripts and tests match on their names, JSON carries them
as they are written here. `REACH_ORDER` and `BIND_ORDER` list them in the order a packet (or a
bind call) meets their causes; when several findings hold at once, the one earliest in that
order is the primary `code` (a client-side drop hides everything behind it).
"""

from __future__ import annotations

import dataclasses
import enum


class Code(enum.StrEnum):
    OK = "OK"
    # reach
    NAME_NOT_RESOLVED = "NAME_NOT_RESOLVED"
    FAMILY_MISMATCH = "FAMILY_MISMATCH"
    NO_ROUTE = "NO_ROUTE"
    ROUTE_BLACKHOLE = "ROUTE_BLACKHOLE"
    CLIENT_ERROR = "CLIENT_ERROR"
    FW_OUTPUT_DROP = "FW_OUTPUT_DROP"
    FW_OUTPUT_REJECT = "FW_OUTPUT_REJECT"
    FW_INPUT_DROP = "FW_INPUT_DROP"
    FW_INPUT_REJECT = "FW_INPUT_REJECT"
    FW_FORWARD_DROP = "FW_FORWARD_DROP"
    NO_LISTENER = "NO_LISTENER"
    BOUND_LOOPBACK_ONLY = "BOUND_LOOPBACK_ONLY"
    BOUND_OTHER_ADDRESS = "BOUND_OTHER_ADDRESS"
    NOT_PUBLISHED = "NOT_PUBLISHED"
    DNAT_TO_NOTHING = "DNAT_TO_NOTHING"
    BACKLOG_FULL = "BACKLOG_FULL"
    RP_FILTER = "RP_FILTER"
    FILTERED_UPSTREAM = "FILTERED_UPSTREAM"
    FW_REPLY_DROP = "FW_REPLY_DROP"
    WRONG_SERVICE = "WRONG_SERVICE"
    # bind
    PORT_IN_USE = "PORT_IN_USE"
    ADDRESS_CONFLICT = "ADDRESS_CONFLICT"
    TIME_WAIT_ONLY = "TIME_WAIT_ONLY"
    PRIVILEGED_PORT = "PRIVILEGED_PORT"
    EPHEMERAL_RANGE = "EPHEMERAL_RANGE"
    ADDRESS_NOT_LOCAL = "ADDRESS_NOT_LOCAL"


# The order a connection attempt meets each cause: name, family, the client's route and
# output firewall, then the path (router, rp_filter), the server's NAT and input firewall,
# and last the socket layer.
REACH_ORDER: tuple[Code, ...] = (
    Code.NAME_NOT_RESOLVED,
    Code.FAMILY_MISMATCH,
    Code.ROUTE_BLACKHOLE,
    Code.NO_ROUTE,
    Code.CLIENT_ERROR,
    Code.FW_OUTPUT_REJECT,
    Code.FW_OUTPUT_DROP,
    Code.FILTERED_UPSTREAM,
    Code.FW_FORWARD_DROP,
    Code.RP_FILTER,
    Code.FW_INPUT_REJECT,
    Code.FW_INPUT_DROP,
    Code.DNAT_TO_NOTHING,
    Code.NOT_PUBLISHED,
    Code.BOUND_LOOPBACK_ONLY,
    Code.BOUND_OTHER_ADDRESS,
    Code.NO_LISTENER,
    Code.BACKLOG_FULL,
    Code.FW_REPLY_DROP,
    Code.WRONG_SERVICE,
)

# A bind meets the address check, then the privilege check, then the port table.
BIND_ORDER: tuple[Code, ...] = (
    Code.ADDRESS_NOT_LOCAL,
    Code.PRIVILEGED_PORT,
    Code.PORT_IN_USE,
    Code.ADDRESS_CONFLICT,
    Code.TIME_WAIT_ONLY,
    Code.EPHEMERAL_RANGE,
)


class Source(enum.StrEnum):
    """How a piece of evidence was obtained."""

    NETLINK = "netlink"  # sock_diag, rtnetlink (routes, addresses)
    FIREWALL_MODEL = "firewall-model"  # portkit's evaluator over the ruleset read live
    NFT_TRACE = "nft-trace"  # `meta nftrace set 1` + the trace monitor
    DROP_REASON = "drop-reason"  # the skb:kfree_skb tracepoint's reason
    PROBE = "probe"  # a connect/SYN/UDP probe and its reply
    RESOLVER = "resolver"  # /etc/hosts, DNS
    SYSCTL = "sysctl"
    COUNTER = "counter"  # nstat/SNMP counters
    PROCESS = "process"  # /proc: owners, capabilities
    BIND = "bind"  # a real trial bind


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """One step of the chain: what was looked at, how, and what it showed."""

    looked_at: str
    source: Source
    showed: str


@dataclasses.dataclass(frozen=True, slots=True)
class Fix:
    """How to remove the cause: a command where one exists, else an instruction.

    `command` is a shell line a user can run as it is (it is what the counterfactual tests
    run); `text` says it in words, or alone when no single command fixes it (a config edit).
    """

    text: str
    command: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    code: Code
    summary: str
    evidence: tuple[Evidence, ...] = ()
    fix: Fix | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """A check that was made, whether it found something or not (`--explain` lists them).

    `passed` is None when the check could not be made (no privilege, no such facility);
    `detail` then says why and what would make it possible.
    """

    name: str
    passed: bool | None
    detail: str


class Certainty(enum.StrEnum):
    """How much of the path was inspected."""

    FULL = "full"  # both ends on this host: sockets, firewall and probe agree
    CLIENT_SIDE = "client-side"  # the server is not on this host: the probe and our side only
    PARTIAL = "partial"  # some checks could not be made (privileges); `limits` says which


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnosis:
    """The answer: findings in the order their causes are met; none means OK."""

    kind: str  # "reach" or "bind"
    target: str  # as the user wrote it, normalised: "host:port/proto"
    findings: tuple[Finding, ...]
    checks: tuple[Check, ...]
    certainty: Certainty = Certainty.FULL
    limits: tuple[str, ...] = ()  # what could not be looked at, and what root would add

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def code(self) -> Code:
        return self.findings[0].code if self.findings else Code.OK


def primary_first(findings: list[Finding], order: tuple[Code, ...]) -> tuple[Finding, ...]:
    """Findings sorted by where their cause sits on the path (stable for equal codes)."""
    rank = {code: index for index, code in enumerate(order)}
    return tuple(sorted(findings, key=lambda finding: rank.get(finding.code, len(order))))
