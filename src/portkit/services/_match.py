"""The pure core of service detection: read a reply with the rules, choose the next probes.

No sockets here. `match_reply` turns the bytes a port sent into an `Identification`
(hard: the service is known; soft: the protocol is known, keep probing with narrower
probes). `plan_probes` orders the probes still worth sending to a port, most likely first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from portkit.model import Protocol
from portkit.services._probes import NULL_PROBE, TLS_PROBE, MatchRule, Probe, ProbeDatabase


@dataclass(frozen=True)
class Identification:
    """What one rule made of one reply."""

    service: str
    soft: bool
    probe: str
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    hostname: str = ""
    ostype: str = ""
    devicetype: str = ""
    cpe: tuple[str, ...] = ()

    def __str__(self) -> str:
        kind = "soft" if self.soft else "hard"
        words = " ".join(w for w in (self.product, self.version) if w)
        return f"{self.service} [{kind}, {self.probe}] {words}".rstrip()


_TEMPLATE = re.compile(r"\{\{|\}\}|\{(\w+)(?:/([^/}]*)/([^/}]*))?\}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


_CPE_RESERVED = re.compile(r"[:/?#\[\]@!$&'()*+,;=%<>\"]")


def _cpe_value(text: str) -> str:
    """A matched value made safe inside a CPE URI (CPE 2.2, 5.4): escaped, '_' for blanks, lower case."""
    text = _CPE_RESERVED.sub(lambda c: f"%{ord(c.group()):02X}", text)
    return re.sub(r"\s", "_", text).lower()


def _cpes(templates: tuple[str, ...], m: re.Match[bytes]) -> tuple[str, ...]:
    """A rule's CPEs, as nmap keeps them: one per part (the last a, h and o), in that order."""
    by_part: dict[str, str] = {}
    for template in templates:
        cpe = render(template, m, _cpe_value)
        part = cpe[5:6] if cpe.startswith("cpe:/") else ""
        if part in ("a", "h", "o"):
            by_part[part] = cpe
    return tuple(by_part[p] for p in "aho" if p in by_part)


def _group(m: re.Match[bytes], key: str) -> str:
    try:
        value = m.group(int(key) if key.isdigit() else key)
    except IndexError:
        return ""
    if value is None:
        return ""
    # nmap's $P(): only the printable characters of what the server sent.
    return _UNPRINTABLE.sub("", value.decode("latin-1"))


def render(template: str, m: re.Match[bytes], transform: Callable[[str], str] | None = None) -> str:
    """Fill a field template (`OpenSSH {version}`) from a regex match (each value `transform`ed)."""
    if "{" not in template:
        return template

    def one(t: re.Match[str]) -> str:
        if t.group(0) in ("{{", "}}"):
            return t.group(0)[0]
        value = _group(m, t.group(1))
        if t.group(2) is not None:
            value = value.replace(t.group(2), t.group(3) or "")
        return transform(value) if transform else value

    text = " ".join(_TEMPLATE.sub(one, template).split())
    # A missing optional group leaves separators behind: "(, protocol 2.0)" -> "protocol 2.0".
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    text = re.sub(r"^[\s,;]+|[\s,;:]+$", "", text)
    return re.sub(r"\s*[,;]\s*(?=[,;]|$)", "", text)


def _apply(rule: MatchRule, probe: str, reply: bytes) -> Identification | None:
    regex = rule.regex()
    if regex is None:
        return None
    m = regex.search(reply)
    if m is None:
        return None
    return Identification(
        service=rule.service,
        soft=rule.soft,
        probe=probe,
        product=render(rule.product, m),
        version=render(rule.version, m),
        extrainfo=render(rule.extrainfo, m),
        hostname=render(rule.hostname, m),
        ostype=render(rule.ostype, m),
        devicetype=render(rule.devicetype, m),
        cpe=_cpes(rule.cpe, m),
    )


def _rules_for(probe: Probe, db: ProbeDatabase) -> Iterable[MatchRule]:
    yield from probe.rules
    for name in probe.fallback:
        # A fallback may be the same exchange over the other transport (DNS over TCP and UDP).
        other = db.get(probe.protocol, name) or db.get(
            Protocol.UDP if probe.protocol is Protocol.TCP else Protocol.TCP, name
        )
        if other is not None and other is not probe:
            yield from other.rules
    # A server that speaks first sends its banner on every connection, whatever we sent.
    if probe.name != NULL_PROBE and probe.protocol is Protocol.TCP and NULL_PROBE not in probe.fallback:
        null = db.get(Protocol.TCP, NULL_PROBE)
        if null is not None:
            yield from null.rules


def match_reply(reply: bytes, probe: Probe, db: ProbeDatabase, *, within: str = "") -> Identification | None:
    """The first hard match of `reply` under `probe`'s rules (then its fallbacks'), else the
    first soft one. `within` (a soft-matched service) keeps only rules for that service."""
    if not reply:
        return None
    soft: Identification | None = None
    for rule in _rules_for(probe, db):
        if within and rule.service != within:
            continue
        if rule.soft and soft is not None:
            continue
        found = _apply(rule, probe.name, reply)
        if found is None:
            continue
        if not found.soft:
            return found
        soft = found
    return soft


def _hinted(probe: Probe, hints: Iterable[str]) -> bool:
    return any(h == s or h.startswith(s + "-") or s.startswith(h) for h in hints for s in probe.services)


def plan_probes(
    db: ProbeDatabase,
    protocol: Protocol,
    port: int,
    *,
    intensity: int,
    hints: Iterable[str] = (),
    within: str = "",
    tls: bool = False,
    exclude: Iterable[str] = (),
) -> list[Probe]:
    """The probes still worth sending to `port`, most likely first.

    A probe is worth sending when its rarity is within `intensity` or it is registered for
    the port (nmap's rule); after a soft match (`within`), only probes that can name that
    service. Order: registered for the port, then those for the registry's guess (`hints`),
    then by rarity, then file order.
    """
    hints = [h.lower() for h in hints if h]
    skip = {NULL_PROBE, TLS_PROBE, *exclude}
    chosen: list[tuple[tuple[int, int, int, int], Probe]] = []
    for index, probe in enumerate(db.for_protocol(protocol)):
        if probe.name in skip:
            continue
        likely = probe.likely_on(port, tls=tls) or (tls and probe.likely_on(port))
        if not likely and probe.rarity > intensity:
            continue
        if within and within not in probe.services:
            continue
        key = (0 if likely else 1, 0 if _hinted(probe, hints) else 1, probe.rarity, index)
        chosen.append((key, probe))
    chosen.sort(key=lambda kv: kv[0])
    return [p for _, p in chosen]
