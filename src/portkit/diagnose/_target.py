"""What `diagnose` is asked about: `HOST:PORT[/tcp|/udp]` to reach, `[ADDR:]PORT[/proto]` to bind.

IPv6 addresses are written in brackets (`[::1]:80`), as in URLs: without them the last colon
of `::1:80` could belong to the address. A host name is what a resolver accepts (RFC 1123
labels, plus `_`); anything else is refused here, before any look-up.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from portkit.errors import UsageError, quote
from portkit.model.ports import parse_decimal
from portkit.model.protocols import Transport

_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_ACCEPTED = "expected HOST:PORT[/tcp|/udp], e.g. example.org:443 or [::1]:8080/udp"
_BIND_ACCEPTED = "expected [ADDR:]PORT[/tcp|/udp], e.g. 8080, 127.0.0.1:80/tcp or [::]:53/udp"


@dataclass(frozen=True, slots=True)
class ReachTarget:
    host: str  # a name or an address, without brackets
    port: int
    transport: Transport = Transport.TCP

    def __str__(self) -> str:
        return f"{_host_text(self.host)}:{self.port}/{self.transport.value}"


@dataclass(frozen=True, slots=True)
class BindTarget:
    address: str | None  # None: the wildcard of every family
    port: int
    transport: Transport = Transport.TCP

    def __str__(self) -> str:
        where = f"{_host_text(self.address)}:" if self.address else ""
        return f"{where}{self.port}/{self.transport.value}"


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _transport(text: str, whole: str, accepted: str) -> Transport:
    if text.lower() == "tcp":
        return Transport.TCP
    if text.lower() == "udp":
        return Transport.UDP
    raise UsageError(f"invalid protocol in {quote(whole)}: {accepted}")


def _port(text: str, whole: str, accepted: str, *, zero: bool = False) -> int:
    number = parse_decimal(text)
    if number is None:
        raise UsageError(f"invalid port in {quote(whole)}: ports are whole numbers; {accepted}")
    if not (0 if zero else 1) <= number <= 65535:
        raise UsageError(f"invalid port in {quote(whole)}: ports are {0 if zero else 1}-65535")
    return number


def valid_host(host: str) -> bool:
    """An IP address or a host name a resolver would look up."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if name.rsplit(".", 1)[-1].isdigit():
        # No top-level domain is all digits: this is an address written as inet_aton reads
        # it (`1.2.3` is 1.2.0.3, `010.0.0.1` is octal, `2130706433` is 127.0.0.1), which the
        # resolver would turn into an address the user did not write. Only dotted quads.
        return False
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def _split(text: str, whole: str, accepted: str) -> tuple[str, str]:
    """`[v6]:rest` or `host:rest` -> (host, rest)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise UsageError(f"invalid target {quote(whole)}: {accepted}")
        host = text[1:end]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise UsageError(f"invalid address in {quote(whole)}: brackets hold an IPv6 address") from None
        return host, text[end + 2 :]
    host, sep, rest = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"invalid target {quote(whole)}: {accepted}")
    if ":" in host:
        if not _is_ipv6(host) and _is_ipv6(text.partition("/")[0]):  # `::1`: an address, no port
            raise UsageError(f"invalid target {quote(whole)}: no port; {accepted}")
        raise UsageError(f"invalid target {quote(whole)}: write an IPv6 address in brackets, [{host}]:{rest}")
    return host, rest


def parse_reach_target(text: str) -> ReachTarget:
    """`example.org:443`, `10.0.0.5:53/udp`, `[::1]:8080/tcp` -> a ReachTarget."""
    whole = text
    text = text.strip()
    host, rest = _split(text, whole, _ACCEPTED)
    port_text, slash, proto = rest.partition("/")
    port = _port(port_text, whole, _ACCEPTED)
    transport = _transport(proto, whole, _ACCEPTED) if slash else Transport.TCP
    host = _ascii_name(host)
    if not valid_host(host):
        raise UsageError(f"invalid host in {quote(whole)}: expected a host name or an IP address")
    refuse_link_local(host, whole)
    return ReachTarget(host, port, transport)


def refuse_link_local(host: str, whole: str) -> None:
    """A UsageError for an IPv6 link-local target: reaching one needs the interface as a scope
    id, which the diagnosis (routes, probe, firewall packet) does not carry; unscoped, connect()
    fails with EINVAL, and an unknown scope cannot even be parsed by the probe."""
    if _is_ipv6(host) and ipaddress.ip_address(host).is_link_local:
        raise UsageError(
            f"invalid address in {quote(whole)}: IPv6 link-local (fe80::/10) targets are not diagnosed; "
            "give a global, unique-local or loopback address"
        )


def _ascii_name(host: str) -> str:
    """An internationalised name in the IDNA (punycode) form the resolver is asked for;
    anything that has no such form is returned as it is, to be refused."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def parse_bind_target(text: str) -> BindTarget:
    """`8080`, `127.0.0.1:80/tcp`, `[::]:53/udp` -> a BindTarget (port 0: any free port)."""
    whole = text
    text = text.strip()
    address: str | None = None
    if text.startswith("[") or ":" in text.partition("/")[0]:
        address, text = _split(text, whole, _BIND_ACCEPTED)
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"invalid address in {quote(whole)}: a bind address is an IP address") from None
        if parsed.is_link_local and parsed.version == 6:
            # A link-local bind needs its interface as a scope id, which the diagnosis does not
            # carry; without it the kernel answers EINVAL, never "bindable".
            raise UsageError(
                f"invalid address in {quote(whole)}: IPv6 link-local (fe80::/10) binds are not diagnosed; "
                "give a global, unique-local or loopback address"
            )
        address = str(parsed)
    port_text, slash, proto = text.partition("/")
    port = _port(port_text, whole, _BIND_ACCEPTED, zero=True)
    transport = _transport(proto, whole, _BIND_ACCEPTED) if slash else Transport.TCP
    return BindTarget(address, port, transport)
