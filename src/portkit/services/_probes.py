"""The probe database: what to send to a port, and the rules that read its reply.

portkit's own database is `probes.toml` beside this module: a list of `[[probe]]` tables
(payload, protocol, ports where the probe is likely to be answered, rarity 1-9), each with
its `[[probe.match]]` rules (a regex over the reply and the fields it yields). See the
header of `probes.toml` for the format. `portkit.services._nmapdb` reads nmap's
`nmap-service-probes` into the same objects.
"""

from __future__ import annotations

import functools
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from portkit.errors import UsageError
from portkit.model import Protocol

# TLS is not a payload but a handshake; the engine performs it for the probe of this name.
TLS_PROBE = "tls"
NULL_PROBE = "null"


@dataclass(frozen=True)
class MatchRule:
    """A regex over a reply and the service fields it yields.

    Field templates name the regex's groups: `{version}` or `{1}`; `{1/_/.}` replaces `_`
    by `.` in group 1. A group that did not take part renders as nothing.
    """

    service: str
    pattern: str
    flags: str = ""  # "i" ignore case, "s" dot matches newline
    soft: bool = False
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    hostname: str = ""
    ostype: str = ""
    devicetype: str = ""
    cpe: tuple[str, ...] = ()

    def regex(self) -> re.Pattern[bytes] | None:
        """The compiled pattern, or None when it does not compile (nmap's PCRE extras)."""
        return _compile(self.pattern, self.flags)


@functools.cache
def _compile(pattern: str, flags: str) -> re.Pattern[bytes] | None:
    value = 0
    if "i" in flags:
        value |= re.IGNORECASE
    if "s" in flags:
        value |= re.DOTALL
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nmap's PCRE `[[:alpha:]]` makes re warn
            return re.compile(pattern.encode("latin-1"), value)
    except (re.error, UnicodeEncodeError, OverflowError, RecursionError):
        return None


@dataclass(frozen=True)
class Probe:
    """What to send, where it is likely to be answered, and how to read the answer."""

    name: str
    protocol: Protocol
    payload: bytes
    rarity: int = 5
    ports: frozenset[int] = frozenset()
    tls_ports: frozenset[int] = frozenset()
    rules: tuple[MatchRule, ...] = ()
    fallback: tuple[str, ...] = ()  # other probes whose rules also read this probe's replies
    wait: float = 0.0  # seconds to wait for a reply; 0 = the engine's RTT-based default

    @functools.cached_property
    def services(self) -> frozenset[str]:
        """The services this probe can recognise (narrows probing after a soft match)."""
        return frozenset(r.service for r in self.rules)

    def likely_on(self, port: int, *, tls: bool = False) -> bool:
        return port in (self.tls_ports if tls else self.ports)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.name}"


@dataclass(frozen=True)
class ProbeDatabase:
    """Every probe of one source (portkit's own, or nmap's file), in file order."""

    source: str
    probes: tuple[Probe, ...]
    skipped: int = 0  # rules that could not be read (nmap regexes Python cannot compile)
    _by_name: dict[tuple[Protocol, str], Probe] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for p in self.probes:
            self._by_name.setdefault((p.protocol, p.name), p)

    def get(self, protocol: Protocol, name: str) -> Probe | None:
        return self._by_name.get((protocol, name))

    def for_protocol(self, protocol: Protocol) -> list[Probe]:
        return [p for p in self.probes if p.protocol is protocol]

    @property
    def rule_count(self) -> int:
        return sum(len(p.rules) for p in self.probes)


_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[0rnt\\aefv]|.)", re.DOTALL)
_SIMPLE_ESCAPES = {
    b"0": b"\0", b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\",
    b"a": b"\a", b"e": b"\x1b", b"f": b"\f", b"v": b"\v",
}  # fmt: skip


def decode_payload(text: str) -> bytes:
    r"""A payload written with C escapes (`\r\n`, `\0`, `\x16`) -> its bytes."""

    def one(m: re.Match[bytes]) -> bytes:
        token = m.group(1)
        if token[:1] == b"x" and len(token) == 3:
            return bytes([int(token[1:], 16)])
        return _SIMPLE_ESCAPES.get(token, token)

    return _ESCAPE.sub(one, text.encode("latin-1"))


def parse_ports(text: str) -> frozenset[int]:
    """`"21,22,8000-8010"` -> the set of those ports (probe files only; users go through PortSpec)."""
    ports: set[int] = set()
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        first, _, last = item.partition("-")
        lo, hi = int(first), int(last or first)
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"bad port range {item!r}")
        ports.update(range(lo, hi + 1))
    return frozenset(ports)


def _rule_from_toml(doc: dict[str, Any], where: str) -> MatchRule:
    unknown = set(doc) - {
        "service", "pattern", "flags", "soft", "product", "version", "extrainfo",
        "hostname", "ostype", "devicetype", "cpe",
    }  # fmt: skip
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    cpe = doc.get("cpe", ())
    rule = MatchRule(
        service=str(doc["service"]),
        pattern=str(doc["pattern"]),
        flags=str(doc.get("flags", "")),
        soft=bool(doc.get("soft", False)),
        product=str(doc.get("product", "")),
        version=str(doc.get("version", "")),
        extrainfo=str(doc.get("extrainfo", "")),
        hostname=str(doc.get("hostname", "")),
        ostype=str(doc.get("ostype", "")),
        devicetype=str(doc.get("devicetype", "")),
        cpe=(cpe,) if isinstance(cpe, str) else tuple(str(c) for c in cpe),
    )
    if rule.regex() is None:
        raise ValueError(f"{where}: pattern does not compile: {rule.pattern!r}")
    return rule


def load_toml(text: str, source: str = "builtin") -> ProbeDatabase:
    """Read a probe database written in portkit's format."""
    doc = tomllib.loads(text)
    probes = []
    for i, p in enumerate(doc.get("probe", [])):
        where = f"probe #{i + 1} ({p.get('name', '?')})"
        rules = tuple(_rule_from_toml(m, f"{where} match #{j + 1}") for j, m in enumerate(p.get("match", [])))
        probes.append(
            Probe(
                name=str(p["name"]),
                protocol=Protocol(p.get("protocol", "tcp")),
                payload=decode_payload(str(p.get("payload", ""))),
                rarity=int(p.get("rarity", 5)),
                ports=parse_ports(str(p.get("ports", ""))),
                tls_ports=parse_ports(str(p.get("tls_ports", ""))),
                rules=rules,
                fallback=tuple(p.get("fallback", ())),
                wait=float(p.get("wait_ms", 0)) / 1000,
            )
        )
    return ProbeDatabase(source=source, probes=tuple(probes))


@functools.lru_cache(maxsize=1)
def builtin_database() -> ProbeDatabase:
    """portkit's own probes and rules (`probes.toml`)."""
    text = resources.files("portkit.services").joinpath("probes.toml").read_text(encoding="utf-8")
    return load_toml(text, "builtin")


NMAP_PROBES_FILE = Path("/usr/share/nmap/nmap-service-probes")


def load_database(which: str | Path = "builtin") -> ProbeDatabase:
    """`builtin`, `nmap` (the installed nmap-service-probes) or a path to either format."""
    if str(which) == "builtin":
        return builtin_database()
    from portkit.services._nmapdb import load_nmap_probes

    if str(which) == "nmap":
        if not NMAP_PROBES_FILE.is_file():
            raise UsageError(f"--probes nmap: {NMAP_PROBES_FILE} not found (install nmap, or use builtin)")
        return load_nmap_probes(NMAP_PROBES_FILE)
    path = Path(which)
    if not path.is_file():
        raise UsageError(f"invalid probe database {str(which)!r}: expected builtin, nmap or a file path")
    if path.suffix == ".toml":
        try:
            return load_toml(path.read_text(encoding="utf-8"), str(path))
        except (ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"invalid probe database {str(path)!r}: {exc}") from None
    return load_nmap_probes(path)
