"""The two sides of `portkit diff`, from wherever they come.

Files: nmap or portkit XML (`-oX`), portkit scan JSON (`scan --json`), a socket inventory
(`portkit ls --json` or `portkit overview --json`); the format is told by the content. Ledger
observations (`Observation`) and live sockets become sides through the same PortSide values.
Everything a file holds is checked: a bad file is one UsageError naming it, never a crash.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from portkit.diff._compare import INVENTORY, OWNER_FIELDS, SCAN, HostSide, PortSide, Side
from portkit.errors import UsageError, quote
from portkit.ledger import NetnsScope, Observation, Owner, PortFact
from portkit.ledger._facts import exposure_name, service_text

PROTOCOLS = frozenset({"tcp", "udp", "sctp", "ip"})
_EXPOSURE_RANK = {"all": 3, "specific": 2, "loopback": 1, "": 0}
ACCEPTED = "expected nmap or portkit XML, portkit scan JSON, or `portkit ls/overview --json` output"


class _Bad(ValueError):
    """A structural fault in a file, turned into one UsageError by read_side_text."""


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{what} {quote(str(value)[:40])} is not text")
    return value


def _port(value: Any, what: str = "port") -> int:
    if isinstance(value, bool):
        raise _Bad(f"{what} {value!r} is not a port number")
    if isinstance(value, str):
        stripped = value.strip()
        if not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 5):
            raise _Bad(f"{what} {quote(value[:40])} is not a port number")
        value = int(stripped)
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise _Bad(f"{what} {quote(str(value)[:40])} is not a port 0-65535")
    return value


def _protocol(value: Any) -> str:
    text = _text(value, "protocol").lower()
    if text not in PROTOCOLS:
        raise _Bad(f"protocol {quote(text[:40])} is not one of tcp, udp, sctp, ip")
    return text


# --- scans -----------------------------------------------------------------------------------


def _xml_side(root: ET.Element, label: str) -> Side:
    if root.tag != "nmaprun":
        raise _Bad(f"the XML's root element is <{root.tag[:30]}>, not <nmaprun>")
    hosts: dict[str, HostSide] = {}
    for host in root.iter("host"):
        addresses = {a.get("addrtype", ""): a.get("addr", "") for a in host.findall("address")}
        key = addresses.get("ipv4") or addresses.get("ipv6") or addresses.get("mac") or ""
        if not key:
            raise _Bad("a <host> has no <address>")
        status = host.find("status")
        names = [h.get("name", "") for h in host.iter("hostname") if h.get("name")]
        ports: dict[tuple[int, str], PortSide] = {}
        collapsed: set[str] = set()
        for element in host.iter("extraports"):
            collapsed.add(_text(element.get("state"), "extraports state"))
        for element in host.iter("port"):
            state = element.find("state")
            if state is None or not state.get("state"):
                raise _Bad(f"port {quote(element.get('portid', '?')[:20])} has no <state>")
            svc = element.find("service")
            service = (
                service_text(
                    svc.get("name", ""),
                    svc.get("product", ""),
                    svc.get("version", ""),
                    svc.get("extrainfo", ""),
                )
                if svc is not None
                else ""
            )
            spec = (_port(element.get("portid"), "portid"), _protocol(element.get("protocol")))
            scripts = tuple(
                sorted(
                    (_text(e.get("id"), "script id"), _text(e.get("output"), "script output"))
                    for e in element.findall("script")
                )
            )
            ports[spec] = PortSide(state=state.get("state", ""), service=service, scripts=scripts)
        shown = f"{names[0]} ({key})" if names else key
        hosts[key] = HostSide(
            key, shown, status.get("state", "up") if status is not None else "up", ports, frozenset(collapsed)
        )
    args = root.get("args", "")
    start = root.get("startstr", "")
    scanner = root.get("scanner", "nmap")
    title = f"{scanner} scan" + (f" initiated {start}" if start else "") + (f" as: {args}" if args else "")
    return Side(SCAN, title or label, hosts)


def _scan_json_side(doc: Mapping[str, Any], label: str) -> Side:
    info = doc.get("scan")
    if not isinstance(info, dict) or not isinstance(doc.get("hosts"), list):
        raise _Bad('a scan document needs "scan" (an object) and "hosts" (a list)')
    hosts: dict[str, HostSide] = {}
    for host in doc["hosts"]:
        if not isinstance(host, dict):
            raise _Bad("a host is not an object")
        key = _text(host.get("address"), "address")
        if not key:
            raise _Bad("a host has no address")
        ports: dict[tuple[int, str], PortSide] = {}
        for port in _list(host.get("ports"), "ports"):
            if not isinstance(port, dict):
                raise _Bad("a port is not an object")
            svc = port.get("service")
            service = ""
            if isinstance(svc, dict):
                service = service_text(
                    *(_text(svc.get(k), f"service {k}") for k in ("name", "product", "version", "extrainfo"))
                )
            elif svc is not None:
                raise _Bad("a port's service is not an object")
            spec = (_port(port.get("port")), _protocol(port.get("protocol")))
            ports[spec] = PortSide(state=_text(port.get("state"), "state") or "unknown", service=service)
        collapsed = frozenset(
            _text(e.get("state"), "extraports state")
            for e in _list(host.get("extraports"), "extraports")
            if isinstance(e, dict)
        )
        names = [n for n in _list(host.get("hostnames"), "hostnames") if isinstance(n, str) and n]
        shown = f"{names[0]} ({key})" if names else key
        hosts[key] = HostSide(key, shown, _text(host.get("status"), "status") or "up", ports, collapsed)
    command = _text(info.get("command"), "command")
    start = info.get("start")
    when = _clock(start) if isinstance(start, int | float) and not isinstance(start, bool) else ""
    return Side(
        SCAN,
        f"portkit scan{f' initiated {when}' if when else ''}{f' as: {command}' if command else ''}",
        hosts,
    )


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f'"{what}" is not a list')
    return value


# --- inventories -----------------------------------------------------------------------------


def _merge(entries: Iterable[tuple[str, int, str, str, tuple[Owner, ...]]]) -> dict[str, HostSide]:
    """(netns, port, protocol, address, owners) rows -> one PortSide per namespace and port."""
    grouped: dict[str, dict[tuple[int, str], list[tuple[str, tuple[Owner, ...]]]]] = {}
    for netns, port, protocol, address, owners in entries:
        grouped.setdefault(netns, {}).setdefault((port, protocol), []).append((address, owners))
    hosts: dict[str, HostSide] = {}
    for netns, ports in grouped.items():
        sides = {}
        for spec, rows in ports.items():
            addresses = tuple(sorted({a for a, _ in rows}))
            owners = tuple(sorted({o for _, os in rows for o in os}))
            exposure = max((exposure_name(a) for a in addresses), key=_EXPOSURE_RANK.__getitem__, default="")
            sides[spec] = PortSide("listening", "", owners, addresses, exposure)
        hosts[netns] = HostSide(netns, netns, "up", sides)
    return hosts


def _ls_side(doc: Mapping[str, Any], label: str) -> Side:
    processes = doc.get("processes") or {}
    if not isinstance(processes, dict):
        raise _Bad('"processes" is not an object')
    rows = []
    for sock in _list(doc.get("sockets"), "sockets"):
        if not isinstance(sock, dict):
            raise _Bad("a socket is not an object")
        protocol = _text(sock.get("protocol"), "protocol")
        state = _text(sock.get("state"), "state")
        local = sock.get("local")
        remote = sock.get("remote")
        if not isinstance(local, dict) or not isinstance(remote, dict):
            raise _Bad('a socket needs "local" and "remote" objects')
        listening = state == "LISTEN" if protocol == "tcp" else state == "UNCONN" and remote.get("port") == 0
        if protocol not in ("tcp", "udp", "sctp") or not listening:
            continue
        owners = []
        for held in _list(sock.get("processes"), "processes"):
            if not isinstance(held, dict):
                raise _Bad("a socket's process is not an object")
            detail = processes.get(str(held.get("pid")), held)
            owners.append(_owner_from_process_json(detail if isinstance(detail, dict) else held))
        rows.append(
            (
                _text(sock.get("netns"), "netns"),
                _port(local.get("port")),
                protocol,
                _text(local.get("address"), "address"),
                tuple(owners),
            )
        )
    return Side(INVENTORY, label, _merge(rows))


def _owner_from_process_json(doc: Mapping[str, Any]) -> Owner:
    cmdline = doc.get("cmdline")
    first = cmdline[0] if isinstance(cmdline, list) and cmdline and isinstance(cmdline[0], str) else ""
    container = doc.get("container")
    name = ""
    if isinstance(container, dict):
        name = (
            _text(container.get("name"), "container name") or _text(container.get("id"), "container id")[:12]
        )
    pid = doc.get("pid")
    return Owner(
        name=_text(doc.get("name"), "process name"),
        exe=first.split()[0] if first.strip() else "",
        user=_text(doc.get("user"), "user"),
        unit=_text(doc.get("unit"), "unit"),
        container=name,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else 0,
    )


def _overview_side(doc: Mapping[str, Any], label: str) -> Side:
    rows = []
    for listener in _list(doc.get("listeners"), "listeners"):
        if not isinstance(listener, dict):
            raise _Bad("a listener is not an object")
        units = ",".join(_text(u, "unit") for u in _list(listener.get("units"), "units"))
        containers = ",".join(_text(c, "container") for c in _list(listener.get("containers"), "containers"))
        owners = tuple(
            Owner(
                name=_text(p.get("name"), "process name"),
                user=_text(p.get("user"), "user"),
                unit=units,
                container=containers,
                pid=p["pid"] if isinstance(p.get("pid"), int) and not isinstance(p.get("pid"), bool) else 0,
            )
            for p in _list(listener.get("processes"), "processes")
            if isinstance(p, dict)
        )
        port = _port(listener.get("port"))
        protocol = _protocol(listener.get("protocol"))
        netns = _text(listener.get("netns"), "netns")
        for address in _list(listener.get("addresses"), "addresses"):
            rows.append((netns, port, protocol, _text(address, "address"), owners))
    fields = frozenset(OWNER_FIELDS) - {"exe"}
    return Side(INVENTORY, label, _merge(rows), owner_fields=fields)


# --- entry points ----------------------------------------------------------------------------


def read_side_text(text: str, name: str) -> Side:
    """A side from a file's text (`name` is the path, for messages and the label)."""
    stripped = text.lstrip()
    label = name
    try:
        if stripped.startswith("<"):
            try:
                root = ET.fromstring(text)
            except ET.ParseError as exc:
                raise _Bad(f"not well-formed XML ({exc})") from None
            return _xml_side(root, label)
        if stripped.startswith("{"):
            try:
                doc = json.loads(text)
            except RecursionError:
                raise _Bad("JSON nested too deeply") from None
            except ValueError as exc:
                raise _Bad(f"not valid JSON ({exc})") from None
            if "scan" in doc and "hosts" in doc:
                return _scan_json_side(doc, label)
            if "sockets" in doc:
                return _ls_side(doc, f"inventory {name}")
            if "listeners" in doc:
                return _overview_side(doc, f"inventory {name}")
            raise _Bad("a JSON object without scan, sockets or listeners")
        raise _Bad("neither XML nor JSON" if stripped else "it is empty")
    except (_Bad, RecursionError) as exc:
        why = str(exc) if isinstance(exc, _Bad) else "nested too deeply"
        raise UsageError(f"invalid diff input {quote(name)}: {why}; {ACCEPTED}") from None


def read_side(path: str) -> Side:
    from portkit._textfile import read_text_file

    return read_side_text(read_text_file(path, what="diff input"), path)


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def side_from_observation(observation: Observation) -> Side:
    """A ledger observation (an inventory or a scan) as a side."""
    where = observation.host or "?"
    label = f"ledger #{observation.id}: {observation.kind} of {where} at {_clock(observation.time)}"
    if observation.kind == INVENTORY:
        scope = NetnsScope.from_json(observation.data.get("netns"))
        return inventory_side(observation.facts, label, host=observation.host, scope=scope)
    if observation.kind == SCAN:
        hosts: dict[str, dict[tuple[int, str], PortSide]] = {}
        for fact in observation.facts:
            hosts.setdefault(fact.host, {})[(fact.port, fact.protocol)] = PortSide(fact.state, fact.service)
        extra = observation.data.get("extraports", {})
        collapsed = {
            host: frozenset(e.get("state", "") for e in items if isinstance(e, dict))
            for host, items in (extra.items() if isinstance(extra, dict) else ())
            if isinstance(items, list)
        }
        scanned = observation.data.get("hosts", [])
        for host in scanned if isinstance(scanned, list) else []:
            if isinstance(host, str):
                hosts.setdefault(host, {})
        return Side(
            SCAN,
            label,
            {h: HostSide(h, h, "up", ports, collapsed.get(h, frozenset())) for h, ports in hosts.items()},
        )
    raise UsageError(f"ledger #{observation.id} is a {observation.kind}: diff compares scans or inventories")


def inventory_side(
    facts: Iterable[PortFact], label: str, host: str = "", scope: NetnsScope | None = None
) -> Side:
    """Inventory facts (from the ledger, or `portkit.ledger`'s inventory_facts of live sockets);
    `scope`: the namespaces they were read from (None: every one)."""
    return Side(
        INVENTORY,
        label,
        _merge((f.netns, f.port, f.protocol, f.address, f.owners) for f in facts if f.state == "listening"),
        host=host,
        scope=scope,
    )
