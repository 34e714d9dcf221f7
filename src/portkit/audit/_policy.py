"""The exposure policy: which services this host declares, who may reach each, who should own it.

A TOML file (`exposure.toml`), read strictly: an unknown key, a port out of range or a zone
that does not exist is an error naming it, never a silently ignored line. `render_policy`
writes one from what listens now (`portkit audit --init`), so a first policy is a review of the
present state rather than a blank page.

    version = 1
    [zones]
    lan = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10"]

    [[service]]
    port = 22
    protocol = "tcp"
    reach = "any"          # loopback | lan | any: the widest zone that may reach it
    owner = "sshd"         # a process name or a systemd unit (optional)
    netns = ""             # "" the host's own namespace, a name, or "*" any (default "")
"""

from __future__ import annotations

import enum
import ipaddress
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from portkit.model.errors import UsageError, quote
from portkit.model.protocols import Transport

POLICY_VERSION = 1
ANY_NETNS = "*"

# RFC 1918, RFC 4193 unique-local and link-local: what "lan" means unless the policy says.
DEFAULT_LAN: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")


class Zone(enum.IntEnum):
    """Who may reach a service, narrowest first: each zone includes the ones before it."""

    NONE = 0  # nobody (a listener no packet can reach)
    LOOPBACK = 1
    LAN = 2
    ANY = 3

    def __str__(self) -> str:
        return self.name.lower()


ZONE_WORDS = {"loopback": Zone.LOOPBACK, "lan": Zone.LAN, "any": Zone.ANY}


@dataclass(frozen=True)
class DeclaredService:
    port: int
    protocol: Transport
    reach: Zone
    owner: str = ""
    netns: str = ""
    note: str = ""

    def matches(self, port: int, protocol: Transport, netns: str | None) -> bool:
        if (port, protocol) != (self.port, self.protocol):
            return False
        return self.netns == ANY_NETNS or self.netns == (netns or "")

    def __str__(self) -> str:
        where = {"": "", ANY_NETNS: " in any netns"}.get(self.netns, f" in netns {self.netns}")
        return f"{self.port}/{self.protocol}{where}"


@dataclass(frozen=True)
class ExposurePolicy:
    services: tuple[DeclaredService, ...] = ()
    lan: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(n) for n in DEFAULT_LAN)
    )
    source: str = ""

    def declared(self, port: int, protocol: Transport, netns: str | None) -> DeclaredService | None:
        """The service declared for the port in `netns`: one naming that namespace outranks one
        declared in any namespace ("*"), wherever each stands in the file."""
        found = [s for s in self._by_port.get((port, protocol), ()) if s.matches(port, protocol, netns)]
        return next((s for s in found if s.netns != ANY_NETNS), found[0] if found else None)

    @cached_property
    def _by_port(self) -> dict[tuple[int, Transport], list[DeclaredService]]:
        index: dict[tuple[int, Transport], list[DeclaredService]] = {}
        for service in self.services:
            index.setdefault((service.port, service.protocol), []).append(service)
        return index


_SERVICE_KEYS = {"port", "protocol", "reach", "owner", "netns", "note"}
_TOP_KEYS = {"version", "zones", "service"}


def _bad(source: str, what: str, value: object, accepted: str) -> UsageError:
    return UsageError(f"{source}: invalid {what} {quote(value)}: {accepted}")


def parse_exposure_policy(text: str, *, source: str = "policy") -> ExposurePolicy:
    """The policy in `text`, or a UsageError naming the first thing wrong with it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not a TOML exposure policy: {str(exc)[:100]}") from None
    except (ValueError, RecursionError):  # an integer of over 4,300 digits; arrays nested too deep
        raise UsageError(
            f"{source}: not a TOML exposure policy: a number too long or nesting too deep"
        ) from None
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _bad(source, "key", unknown[0], f"expected one of {', '.join(sorted(_TOP_KEYS))}")
    version = data.get("version", POLICY_VERSION)
    if type(version) is not int or version != POLICY_VERSION:  # 1.0 == 1 and True == 1 in Python
        raise _bad(source, "version", version, f"this portkit reads policy version {POLICY_VERSION}")
    lan = DEFAULT_LAN
    zones = data.get("zones", {})
    if not isinstance(zones, dict) or set(zones) - {"lan"}:
        raise _bad(source, "[zones]", zones, "expected a table with one key, lan = [networks]")
    if "lan" in zones:
        given = zones["lan"]
        if not isinstance(given, list) or not all(isinstance(n, str) for n in given):
            raise _bad(source, "zones.lan", given, 'expected a list of networks, e.g. ["192.168.0.0/16"]')
        lan = tuple(given)
    networks = []
    for text_net in lan:
        try:
            networks.append(ipaddress.ip_network(text_net, strict=False))
        except ValueError:
            raise _bad(source, "network in zones.lan", text_net, "expected an address/prefix") from None
    entries = data.get("service", [])
    if not isinstance(entries, list):
        raise _bad(source, "service", entries, "expected [[service]] tables")
    services: list[DeclaredService] = []
    for number, entry in enumerate(entries, 1):
        services.append(_service(entry, f"{source}: service #{number}"))
    seen: set[tuple[int, Transport, str]] = set()
    for service in services:
        key = (service.port, service.protocol, service.netns)
        if key in seen:
            raise UsageError(f"{source}: {service} is declared twice: declare each service once")
        seen.add(key)
    return ExposurePolicy(tuple(services), tuple(networks), source)


def _service(entry: object, where: str) -> DeclaredService:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected a table with port, protocol and reach")
    unknown = sorted(set(entry) - _SERVICE_KEYS)
    if unknown:
        raise _bad(where, "key", unknown[0], f"expected {', '.join(sorted(_SERVICE_KEYS))}")
    port = entry.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise _bad(where, "port", port, "ports are 1-65535")
    protocol_word = entry.get("protocol", "tcp")
    if not isinstance(protocol_word, str) or protocol_word not in ("tcp", "udp", "sctp"):
        raise _bad(where, "protocol", protocol_word, "expected tcp, udp or sctp")
    reach_word = entry.get("reach")
    if not isinstance(reach_word, str) or reach_word not in ZONE_WORDS:  # a list is not hashable
        raise _bad(where, "reach", reach_word, "expected loopback, lan or any")
    strings = {}
    for key in ("owner", "netns", "note"):
        value = entry.get(key, "")
        if not isinstance(value, str) or len(value) > 256 or _breaks_line(value):
            raise _bad(where, key, value, "expected a one-line string of at most 256 characters")
        strings[key] = value
    return DeclaredService(
        port,
        Transport(protocol_word),
        ZONE_WORDS[reach_word],
        strings["owner"],
        strings["netns"],
        strings["note"],
    )


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(value: str) -> str:
    """A TOML basic string: control characters escaped (a process name may hold any of them)."""
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _breaks_line(value: str) -> bool:
    return "\n" in value or "\r" in value


@dataclass(frozen=True)
class PolicyEntry:
    """What `render_policy` declares for one listener (the audit decides the zone and owner)."""

    port: int
    protocol: Transport
    reach: Zone
    owner: str
    netns: str
    note: str


def render_policy(entries: Iterable[PolicyEntry], lan: Sequence[str] = DEFAULT_LAN) -> str:
    """A policy file declaring `entries`: the text `portkit audit --init` writes."""
    lines = [
        "# portkit exposure policy: the services this host declares, who may reach each",
        "# (loopback, lan or any) and who should own it. Written by `portkit audit --init`",
        "# from what listened then: review every entry before trusting it.",
        f"version = {POLICY_VERSION}",
        "",
        "[zones]",
        "lan = [" + ", ".join(_toml_string(n) for n in lan) + "]",
    ]
    seen: set[tuple[int, Transport, str]] = set()
    for entry in sorted(entries, key=lambda e: (e.netns, e.protocol.value, e.port)):
        key = (entry.port, entry.protocol, entry.netns)
        if key in seen or entry.reach is Zone.NONE:
            continue
        seen.add(key)
        lines += ["", "[[service]]", f"port = {entry.port}", f'protocol = "{entry.protocol.value}"']
        lines.append(f'reach = "{entry.reach}"')
        if entry.owner and not _breaks_line(entry.owner):  # the parser takes one-line strings only
            lines.append(f"owner = {_toml_string(entry.owner)}")
        if entry.netns:
            lines.append(f"netns = {_toml_string(entry.netns)}")
        if entry.note and not _breaks_line(entry.note):
            lines.append(f"note = {_toml_string(entry.note)}")
    return "\n".join(lines) + "\n"
