"""Forwarding rules: what to listen on, where to send it, and the limits that apply.

A rule comes from the command line (`portkit forward 8080 10.0.0.5:80`) or from a TOML file
with one `[[rule]]` table per rule. Everything here is parsing and validation; nothing opens
a socket. Bad input raises `UsageError` with one line naming the input and what is accepted.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from portkit._ifaces import known_interface
from portkit._textfile import read_text_file
from portkit.errors import UsageError, quote
from portkit.model import Endpoint, Transport, parse_address, validate_port

DEFAULT_LISTEN_ADDRESS = "127.0.0.1"
CONGESTION_CHOICES = ("auto", "system")  # besides the name of a kernel algorithm
MAX_COUNT = 10**9  # connections or UDP clients at most (file descriptors run out far sooner)
MAX_TIMEOUT = 30 * 86400  # seconds; a timeout beyond a month is a typo, and huge ones overflow timers
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Overflow(enum.Enum):
    """What happens to a new connection when a rule is at its connection limit."""

    REFUSE = "refuse"  # accept and reset at once: the client learns immediately
    QUEUE = "queue"  # stop accepting: the kernel's backlog holds it until a slot frees

    def __str__(self) -> str:
        return self.value


class ProxyProtocol(enum.Enum):
    """The HAProxy PROXY protocol header sent to the target before any client byte."""

    NONE = "none"
    V1 = "v1"
    V2 = "v2"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Limits:
    """Per-rule limits. Timeouts are seconds; 0 disables the idle timeout."""

    max_connections: int = 10_000
    overflow: Overflow = Overflow.REFUSE
    idle_timeout: float = 300.0
    connect_timeout: float = 5.0
    udp_max_clients: int = 4096
    udp_idle_timeout: float = 60.0

    def to_json(self) -> dict[str, Any]:
        return {
            "max_connections": self.max_connections,
            "overflow": self.overflow.value,
            "idle_timeout": self.idle_timeout,
            "connect_timeout": self.connect_timeout,
            "udp_max_clients": self.udp_max_clients,
            "udp_idle_timeout": self.udp_idle_timeout,
        }


@dataclass(frozen=True)
class ForwardRule:
    """One forwarding rule: connections (or datagrams) to `listen` go to `target`."""

    listen: Endpoint
    target: Endpoint
    protocol: Transport = Transport.TCP
    allow: tuple[Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    proxy_protocol: ProxyProtocol = ProxyProtocol.NONE
    name: str = ""
    congestion: str = "auto"  # TCP congestion control of our legs: auto, system, or an algorithm

    @property
    def key(self) -> tuple[Transport, Endpoint]:
        """What identifies a rule across reloads: its protocol and listen endpoint."""
        return (self.protocol, self.listen)

    @property
    def label(self) -> str:
        return self.name or f"{self.protocol}/{self.listen}"

    def allows(self, address: str) -> bool:
        """Whether a client at `address` may use this rule (an empty allow-list admits everyone)."""
        if not self.allow:
            return True
        client = ipaddress.ip_address(address.partition("%")[0])
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
            client = client.ipv4_mapped
        return any(client in net for net in self.allow)

    def __str__(self) -> str:
        return f"{self.protocol} {self.listen} -> {self.target}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.label,
            "protocol": self.protocol.value,
            "listen": self.listen.to_json(),
            "target": self.target.to_json(),
            "allow": [str(n) for n in self.allow],
            "proxy_protocol": self.proxy_protocol.value,
            "congestion": self.congestion,
            "limits": self.limits.to_json(),
        }


def parse_listen(text: str | int) -> Endpoint:
    """A listen endpoint. A bare port listens on 127.0.0.1; any other address must be written out."""
    raw = str(text).strip()
    if not raw.isascii():  # '²'.isdigit() is True, yet no port (validate_port would crash on it)
        raise UsageError(
            f"invalid listen address {quote(raw)}: expected PORT or ADDRESS:PORT, e.g. 8080 or 0.0.0.0:8080"
        )
    if raw.startswith(("*:", ":")):
        port = raw.rpartition(":")[2][:5]
        raise UsageError(
            f"invalid listen address {quote(raw)}: write the address out, e.g. 0.0.0.0:{port} "
            f"for every interface or 127.0.0.1:{port} for this host only"
        )
    return _with_known_zone(
        raw, "listen address", Endpoint.parse(raw, default_address=DEFAULT_LISTEN_ADDRESS)
    )


def _with_known_zone(raw: str, what: str, endpoint: Endpoint) -> Endpoint:
    """`endpoint`, once its IPv6 zone (`fe80::1%eth0`) names an interface of this namespace:
    the socket calls resolve the zone, and an unknown one raises there (gaierror), not as an errno."""
    zone = getattr(endpoint.address, "scope_id", None)
    if zone and not known_interface(zone):
        raise UsageError(
            f"invalid {what} {quote(raw)}: no interface {quote(zone, 20)} here ('ip link' lists them)"
        )
    return endpoint


def parse_target(text: str) -> Endpoint:
    """A target: ADDRESS:PORT, [IPv6]:PORT, or HOSTNAME:PORT (resolved once, now)."""
    raw = str(text).strip()
    host, _, port = raw.rpartition(":")
    if not port.isascii():
        raise UsageError(
            f"invalid target {quote(raw)}: expected ADDRESS:PORT or HOST:PORT, e.g. 10.0.0.5:80 or db:5432"
        )
    try:
        endpoint = Endpoint.parse(raw)
    except UsageError:
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or ":" in host:
            raise UsageError(
                f"invalid target {quote(raw)}: expected ADDRESS:PORT or HOST:PORT, "
                "e.g. 10.0.0.5:80 or db:5432"
            ) from None
    else:
        return _with_known_zone(raw, "target", endpoint)
    number = validate_port(port)
    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"invalid target {quote(raw)}: cannot resolve {quote(host)} ({exc})") from None
    return Endpoint(parse_address(str(infos[0][4][0])), number)


def parse_cidr(text: str) -> Network:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise UsageError(
            f"invalid allow-list entry {quote(text)}: expected an address or CIDR, e.g. 192.0.2.0/24 or ::1"
        ) from None


def parse_congestion(value: Any) -> str:
    """`auto`, `system`, or an algorithm's name (whether this kernel has it is checked at start)."""
    text = str(value).strip().lower()
    if text in CONGESTION_CHOICES:
        return text
    if not text or not text.isascii() or not text.replace("_", "").isalnum() or len(text) > 15:
        raise UsageError(
            f"invalid congestion {quote(value)}: expected auto, system or an algorithm's name, "
            "e.g. reno or cubic"
        )
    return text


def _number(key: str, value: Any, *, minimum: float, maximum: float, integer: bool = False) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
        or not math.isfinite(value)
    ):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"invalid {key} {quote(repr(value))}: expected {kind} >= {minimum}")
    if value < minimum:
        raise UsageError(f"invalid {key} {quote(repr(value))}: must be >= {minimum}")
    if value > maximum:
        raise UsageError(f"invalid {key} {quote(repr(value))}: must be <= {maximum}")
    return value


def _enum(enum_cls: type[enum.Enum], key: str, value: Any) -> Any:
    try:
        return enum_cls(str(value).lower())
    except ValueError:
        choices = ", ".join(str(m.value) for m in enum_cls)
        raise UsageError(f"invalid {key} {quote(value)}: expected one of {choices}") from None


def make_limits(options: Mapping[str, Any], base: Limits | None = None) -> Limits:
    """Limits from `options` (keys as in Limits); unknown keys are the caller's concern."""
    limits = base or Limits()
    changes: dict[str, Any] = {}
    for key in ("max_connections", "udp_max_clients"):
        if options.get(key) is not None:
            changes[key] = _number(key, options[key], minimum=1, maximum=MAX_COUNT, integer=True)
    for key in ("idle_timeout", "connect_timeout", "udp_idle_timeout"):
        if options.get(key) is not None:
            changes[key] = float(_number(key, options[key], minimum=0, maximum=MAX_TIMEOUT))
    if changes.get("connect_timeout") == 0:
        raise UsageError("invalid connect_timeout 0: must be > 0 seconds")
    if options.get("overflow") is not None:
        changes["overflow"] = _enum(Overflow, "overflow", options["overflow"])
    return replace(limits, **changes)


def make_rule(
    listen: str | int,
    target: str,
    *,
    protocol: str | Transport = Transport.TCP,
    allow: Sequence[str] = (),
    proxy_protocol: str | ProxyProtocol = ProxyProtocol.NONE,
    limits: Limits | None = None,
    name: str = "",
    congestion: str = "auto",
) -> ForwardRule:
    """A validated rule from user input (command line or one TOML table)."""
    proto = protocol if isinstance(protocol, Transport) else Transport.parse(str(protocol))
    if proto not in (Transport.TCP, Transport.UDP):
        raise UsageError(f"invalid protocol {quote(protocol)}: expected tcp or udp")
    pp = (
        proxy_protocol
        if isinstance(proxy_protocol, ProxyProtocol)
        else _enum(ProxyProtocol, "proxy_protocol", proxy_protocol)
    )
    if pp is not ProxyProtocol.NONE and proto is Transport.UDP:
        raise UsageError(f"invalid proxy_protocol {pp.value!r} for udp: the PROXY header is sent on TCP only")
    choice = parse_congestion(congestion)
    if choice != "auto" and proto is Transport.UDP:
        raise UsageError(f"invalid congestion {choice!r} for udp: congestion control is a TCP setting")
    lep, tep = parse_listen(listen), parse_target(target)
    networks = tuple(parse_cidr(c) for c in allow)
    return ForwardRule(lep, tep, proto, networks, limits or Limits(), pp, name, choice)


_RULE_KEYS = {"name", "listen", "target", "protocol", "allow", "proxy_protocol", "congestion"}
_RULE_KEYS |= set(Limits().to_json())
_TOP_KEYS = {"rule", "defaults"}


def parse_config(text: str, *, source: str = "config") -> tuple[ForwardRule, ...]:
    """Rules from TOML text: optional `[defaults]` (limits) and one `[[rule]]` per rule."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"invalid config {source}: {exc}") from None
    except RecursionError:  # arrays or inline tables nested beyond Python's recursion limit
        raise UsageError(f"invalid config {source}: nested too deeply") from None
    except ValueError:  # an integer over int()'s 4,300 digits (tomllib lets it through to int())
        raise UsageError(f"invalid config {source}: a number with too many digits") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise UsageError(
            f"invalid config {source}: unknown key {quote(sorted(unknown)[0])}; expected [defaults], [[rule]]"
        )
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"invalid config {source}: [defaults] must be a table")
    bad = set(defaults) - set(Limits().to_json())
    if bad:
        raise UsageError(f"invalid config {source}: unknown key {quote(sorted(bad)[0])} in [defaults]")
    base = make_limits(defaults)
    tables = doc.get("rule", [])
    if not isinstance(tables, list) or not tables:
        raise UsageError(f"invalid config {source}: no rules; add one [[rule]] with listen and target")
    rules: list[ForwardRule] = []
    seen: set[tuple[Transport, Endpoint]] = set()
    for number, table in enumerate(tables, 1):
        where = f"{source} rule {number}"
        if not isinstance(table, dict):
            raise UsageError(f"invalid config {where}: [[rule]] must be a table with listen and target")
        bad = set(table) - _RULE_KEYS
        if bad:
            raise UsageError(f"invalid config {where}: unknown key {quote(sorted(bad)[0])}")
        for key in ("listen", "target"):
            if key not in table:
                raise UsageError(f"invalid config {where}: missing {quote(key)}")
        allow = table.get("allow", [])
        if isinstance(allow, str):
            allow = [allow]
        try:
            rule = make_rule(
                table["listen"],
                table["target"],
                protocol=table.get("protocol", "tcp"),
                allow=allow,
                proxy_protocol=table.get("proxy_protocol", "none"),
                limits=make_limits(table, base),
                name=str(table.get("name", "")),
                congestion=table.get("congestion", "auto"),
            )
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        if rule.key in seen:
            raise UsageError(
                f"invalid config {where}: {rule.protocol}/{rule.listen} is already a rule's listen"
            )
        for earlier, other in enumerate(rules, 1):
            tcp = rule.protocol is Transport.TCP is other.protocol
            if tcp and _listens_overlap(rule.listen, other.listen):
                # 0.0.0.0 takes the port on every IPv4 address, [::] on every address.
                raise UsageError(
                    f"invalid config {where}: {rule.listen} overlaps rule {earlier}'s {other.listen}"
                )
        seen.add(rule.key)
        rules.append(rule)
    return tuple(rules)


def _listens_overlap(a: Endpoint, b: Endpoint) -> bool:
    """Whether two TCP listens contend for one port: one is a wildcard covering the other's
    address (0.0.0.0 its IPv4 ones; [::], which the forwarder binds dual-stack, every one).
    Port 0 asks for a free port and never contends."""
    if a.port != b.port or a.port == 0:
        return False
    for wild, other in ((a, b), (b, a)):
        if wild.address.is_unspecified and (wild.family == 6 or other.family == 4):
            return True
    return False


def load_config(path: str | Path) -> tuple[ForwardRule, ...]:
    return parse_config(read_text_file(path, what="config"), source=str(path))
