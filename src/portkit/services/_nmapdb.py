"""Reading nmap's installed `nmap-service-probes` at run time (`--probes nmap`), never bundled.

The file's probes and rules become the same `Probe`/`MatchRule` objects as portkit's own
database. Field templates are rewritten to portkit's syntax (`$1` and `$P(1)` -> `{1}`,
`$SUBST(1,"_",".")` -> `{1/_/.}`); a regex Python cannot compile (PCRE-only syntax) is
skipped when it is first used, and counted.
"""

from __future__ import annotations

import re
from pathlib import Path

from portkit.model import Protocol
from portkit.services._probes import (
    NULL_PROBE,
    TLS_PROBE,
    MatchRule,
    Probe,
    ProbeDatabase,
    decode_payload,
    parse_ports,
)

_FIELD = re.compile(r"\s*(cpe:|[pvihod])(.)")
_SUBST = re.compile(r'\$SUBST\((\d+),"([^"/}]*)","([^"/}]*)"\)')
_PRINTABLE = re.compile(r"\$P\((\d+)\)")
_INT = re.compile(r"\$I\(\d+,\"[<>]\"\)")
_GROUP = re.compile(r"\$(\d+)")

_FIELD_NAMES = {
    "p": "product",
    "v": "version",
    "i": "extrainfo",
    "h": "hostname",
    "o": "ostype",
    "d": "devicetype",
}


def convert_template(text: str) -> str:
    """An nmap field template -> portkit's template syntax."""
    text = text.replace("{", "{{").replace("}", "}}")
    text = _SUBST.sub(r"{\1/\2/\3}", text)
    text = _PRINTABLE.sub(r"{\1}", text)
    text = _INT.sub("", text)  # binary integers: not rendered
    return _GROUP.sub(r"{\1}", text)


def parse_match_line(line: str) -> MatchRule | None:
    """`match ssh m|^SSH-([\\d.]+)-OpenSSH_(\\S+)| p/OpenSSH/ v/$2/` -> a MatchRule (None if malformed)."""
    keyword, _, rest = line.partition(" ")
    soft = keyword == "softmatch"
    service, _, rest = rest.strip().partition(" ")
    if len(rest) < 3 or rest[0] != "m":
        return None
    delim = rest[1]
    end = rest.find(delim, 2)
    if end < 0:
        return None
    pattern = rest[2:end]
    rest = rest[end + 1 :]
    flags = ""
    while rest[:1] in ("i", "s"):
        flags += rest[0]
        rest = rest[1:]
    fields: dict[str, str] = {}
    cpes: list[str] = []
    while rest.strip():
        m = _FIELD.match(rest)
        if m is None:
            break
        kind, field_delim = m.group(1), m.group(2)
        close = rest.find(field_delim, m.end())
        if close < 0:
            break
        value = rest[m.end() : close]
        rest = rest[close + 1 :]
        if kind == "cpe:":
            rest = rest[1:] if rest[:1] == "a" else rest
            cpes.append("cpe:/" + convert_template(value))
        else:
            fields[_FIELD_NAMES[kind]] = convert_template(value)
    return MatchRule(
        service=service,
        pattern=pattern,
        flags=flags,
        soft=soft,
        product=fields.get("product", ""),
        version=fields.get("version", ""),
        extrainfo=fields.get("extrainfo", ""),
        hostname=fields.get("hostname", ""),
        ostype=fields.get("ostype", ""),
        devicetype=fields.get("devicetype", ""),
        cpe=tuple(cpes),
    )


def parse_nmap_probes(text: str, source: str = "nmap") -> ProbeDatabase:
    """The text of an nmap-service-probes file -> a ProbeDatabase (plus portkit's TLS handshake)."""
    probes: list[Probe] = [Probe(TLS_PROBE, Protocol.TCP, b"", rarity=1)]
    current: dict[str, object] | None = None
    skipped = 0

    def close() -> None:
        if current is not None:
            probes.append(Probe(**current))  # type: ignore[arg-type]

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        directive, _, rest = line.partition(" ")
        if directive == "Probe":
            close()
            proto, _, rest = rest.partition(" ")
            name, _, rest = rest.partition(" ")
            if len(rest) < 3 or rest[0] != "q":
                current = None
                continue
            delim = rest[1]
            payload = rest[2 : rest.find(delim, 2)]
            protocol = Protocol.TCP if proto.upper() == "TCP" else Protocol.UDP
            current = {
                "name": NULL_PROBE if name == "NULL" else name,
                "protocol": protocol,
                "payload": decode_payload(payload),
                "rules": (),
            }
        elif current is None:
            continue
        elif directive in ("match", "softmatch"):
            rule = parse_match_line(line)
            if rule is None:
                skipped += 1
            else:
                current["rules"] = (*current["rules"], rule)  # type: ignore[misc]
        elif directive == "ports":
            current["ports"] = _ports(rest)
        elif directive == "sslports":
            current["tls_ports"] = _ports(rest)
        elif directive == "rarity":
            current["rarity"] = int(rest)
        elif directive == "fallback":
            current["fallback"] = tuple(NULL_PROBE if n == "NULL" else n for n in rest.split(","))
        # totalwaitms/tcpwrappedms are ignored on purpose: nmap's fixed waits assume one probe
        # after another over the Internet; portkit's waits follow the measured round-trip time.
    close()
    return ProbeDatabase(source=source, probes=tuple(probes), skipped=skipped)


def _ports(text: str) -> frozenset[int]:
    try:
        return parse_ports(text)
    except ValueError:
        return frozenset()


def load_nmap_probes(path: Path) -> ProbeDatabase:
    return parse_nmap_probes(path.read_text(encoding="latin-1"), str(path))
