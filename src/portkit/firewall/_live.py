"""The I/O layer: read the kernel's ruleset (this host or a named netns) and rule files.

Reading never changes anything. Parsing an nft script is done by nft itself, in a
throwaway network namespace, so portkit reads exactly what the kernel would load.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from portkit._textfile import read_text_file
from portkit.errors import PermissionNeeded, PortkitError, Terminated, UsageError, quote
from portkit.firewall._model import Field, FilterAction, Ruleset, Table
from portkit.model.endpoints import IPAddress
from portkit.model.protocols import IPV4, IPV6

if TYPE_CHECKING:
    from portkit.firewall._iptables import AddressTypes
    from portkit.model.portspec import PortNames

SCRATCH_NETNS_PREFIX = "portkit-parse-"  # + pid + random: parallel parses never collide
_NETNS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _prefix(netns: str | None) -> list[str]:
    if netns is None:
        return []
    if not _NETNS_RE.match(netns):
        raise UsageError(f"invalid netns name {netns!r}: expected letters, digits, '.', '_' or '-'")
    if not Path("/run/netns", netns).exists():
        raise UsageError(f"no network namespace {netns!r}: see 'ip netns list'")
    return ["ip", "netns", "exec", netns]


def run_tool(
    args: list[str], *, netns: str | None = None, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    tool = args[0]
    if shutil.which(tool) is None:
        raise PortkitError(
            f"{tool} is not installed (Debian package: {'nftables' if tool == 'nft' else 'iptables'})"
        )
    return subprocess.run(
        [*_prefix(netns), *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionNeeded(
            f"{what} needs root (CAP_NET_ADMIN): run with sudo; "
            "without it, pass a rules file (portkit fw show FILE)"
        )


def nft_json(netns: str | None = None) -> str:
    """`nft -j list ruleset` of this host or of a netns."""
    _need_root("reading the live nftables ruleset")
    proc = run_tool(["nft", "-j", "list", "ruleset"], netns=netns)
    if proc.returncode != 0:
        raise PortkitError(f"nft -j list ruleset failed: {proc.stderr.strip()}")
    return proc.stdout


def _has_xt(table: Table) -> bool:
    return any(
        m.field is Field.OPAQUE and '"xt"' in m.text for c in table.chains for r in c.rules for m in r.matches
    ) or any('"xt"' in s for c in table.chains for r in c.rules for s in r.opaque)


LEGACY_SUFFIX = "-legacy"  # iptables-legacy's `ip filter` is read as `ip filter-legacy`


def _legacy_tables(netns: str | None) -> tuple[list[Table], list[str]]:
    """iptables-legacy's tables (x_tables: the same hooks as nftables, unseen by nft) that can
    change a verdict or a rewrite: any rule, or a built-in chain whose policy is not ACCEPT.

    Named `TABLE-legacy`, as iptables-nft's table of the same name may sit beside it. Without
    the legacy tools nothing is read; the kernel has such tables only where they were used."""
    from portkit.firewall._iptables import import_iptables_save

    tables: list[Table] = []
    notes: list[str] = []
    addrtypes: AddressTypes | None = None
    for tool, version, names in (
        ("iptables-legacy-save", 4, "ip_tables_names"),
        ("ip6tables-legacy-save", 6, "ip6_tables_names"),
    ):
        if shutil.which(tool) is None:
            continue
        if netns is None:
            try:  # this namespace's loaded legacy tables: none, and there is nothing to run
                if not Path(f"/proc/net/{names}").read_text().split():
                    continue
            except OSError:
                continue
        proc = run_tool([tool], netns=netns)
        if proc.returncode != 0 or "*" not in proc.stdout:
            continue
        if addrtypes is None and "addrtype" in proc.stdout:
            addrtypes = address_types(netns)
        decoded = import_iptables_save(proc.stdout, version=version, source=tool, addrtypes=addrtypes)
        for t in decoded.tables:
            if any(c.rules or (c.hook is not None and c.policy is not FilterAction.ACCEPT) for c in t.chains):
                tables.append(replace(t, name=t.name + LEGACY_SUFFIX))
                notes.append(f"{t.family} {t.name}{LEGACY_SUFFIX}: iptables-legacy's {t.name} table ({tool})")
        notes.extend(n for n in decoded.notes if n)
    return tables, notes


def read_live(netns: str | None = None) -> Ruleset:
    """The live ruleset. Tables iptables-nft wrote with opaque `xt` expressions are re-read
    from iptables-save, which can decode them; iptables-legacy's tables, which nft does not
    list, are read from iptables-legacy-save (`_legacy_tables`)."""
    from portkit.firewall._nft import import_nft_json

    where = f"netns {netns}" if netns else "this host"
    ruleset = import_nft_json(nft_json(netns), source=f"live ruleset of {where}")
    legacy, legacy_notes = _legacy_tables(netns)
    ruleset = _with_nft_xt_decoded(ruleset, netns)
    if not legacy:
        return ruleset
    return Ruleset((*ruleset.tables, *legacy), ruleset.source, (*ruleset.notes, *legacy_notes))


def _with_nft_xt_decoded(ruleset: Ruleset, netns: str | None) -> Ruleset:
    from portkit.firewall._iptables import import_iptables_save

    opaque = [t for t in ruleset.tables if _has_xt(t)]
    if not opaque:
        return ruleset
    replaced: dict[tuple[str, str], Table] = {}
    addrtypes = address_types(netns)
    for tool, version in (("iptables-save", 4), ("ip6tables-save", 6)):
        # The nft backend's own: `iptables-save` may be the legacy one (update-alternatives),
        # which would print the legacy tables in place of these.
        nft_tool = tool.replace("-save", "-nft-save")
        proc = run_tool([nft_tool if shutil.which(nft_tool) else tool], netns=netns)
        if proc.returncode != 0:
            continue
        decoded = import_iptables_save(proc.stdout, version=version, source=tool, addrtypes=addrtypes)
        for t in decoded.tables:
            replaced[(t.family.value, t.name)] = t
    tables = []
    notes = [n for n in ruleset.notes if not any(f"{t.family} {t.name} " in n for t in opaque)]
    for t in ruleset.tables:
        if t in opaque and (t.family.value, t.name) in replaced:
            tables.append(replaced[(t.family.value, t.name)])
            notes.append(f"{t.family} {t.name}: read from iptables-save (iptables-nft xt expressions)")
        else:
            tables.append(t)
    return Ruleset(tuple(tables), ruleset.source, tuple(notes))


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """Inside this block SIGTERM raises Terminated, so `finally` clauses run and clean up.

    SIGTERM's default action ends the process at once, leaving behind whatever it had made
    outside itself (a scratch network namespace). Only the main thread can set a handler, and a
    handler someone else installed is left alone. A second SIGTERM while the first unwinds is
    ignored, so the cleanup it triggered is not itself cut short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_nft_script(text: str, *, source: str = "nft script") -> Ruleset:
    """Parse an nft script with nft itself, in a private throwaway namespace."""
    _need_root("reading an nft script (nft parses it in a private network namespace)")
    name = f"{SCRATCH_NETNS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    with _terminate_raises():  # SIGTERM mid-parse still deletes the namespace
        try:
            return _parse_in(name, text, source)
        finally:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _parse_in(name: str, text: str, source: str) -> Ruleset:
    from portkit.firewall._nft import import_nft_json

    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        raise PortkitError(f"cannot create a scratch network namespace: {created.stderr.strip()}")
    body = text if re.search(r"^\s*flush\s+ruleset", text, re.M) else "flush ruleset\n" + text
    loaded = run_tool(["nft", "-f", "-"], netns=name, stdin=body)
    if loaded.returncode != 0:
        first = loaded.stderr.strip().splitlines()[0] if loaded.stderr.strip() else "nft failed"
        raise UsageError(f"invalid nft script {source}: {first}")
    return import_nft_json(nft_json(name), source=source)


MAX_JSON_DEPTH = 64  # `nft -j` output nests about 12 deep; 64 leaves room for any real ruleset


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON (nft never writes it)")


def load_json(text: str, *, source: str) -> dict[str, Any]:
    """An nft JSON document from a user's file: a JSON object nested at most MAX_JSON_DEPTH deep."""
    too_deep = False
    document: Any = None
    try:
        document = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid nft JSON in {quote(source)}: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:  # nested deeper than Python's recursion limit
        too_deep = True
    except ValueError as exc:  # a number over int()'s 4,300 digits, 1e400, NaN, Infinity
        raise UsageError(f"invalid nft JSON in {quote(source)}: {str(exc)[:80]}") from None
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack and not too_deep:
        node, depth = stack.pop()
        too_deep = depth > MAX_JSON_DEPTH
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    if too_deep:
        raise UsageError(
            f"invalid nft JSON in {quote(source)}: nested more than {MAX_JSON_DEPTH} levels deep"
        )
    if not isinstance(document, dict):
        raise UsageError(f'invalid nft JSON in {quote(source)}: expected an object with an "nftables" list')
    return document


def detect_format(text: str) -> str:
    """nft-json | nft | iptables | ufw | policy."""
    stripped = text.lstrip()
    if stripped.startswith("{") and '"nftables"' in stripped[:2000]:
        return "nft-json"
    if "### tuple ###" in text or re.search(r"^:ufw-", text, re.M):
        return "ufw"
    if re.search(r"^\*(filter|nat|mangle|raw|security)\s*$", text, re.M):
        return "iptables"
    if re.search(r"^\s*(table|flush|define|add|include)\b", text, re.M):
        return "nft"
    return "policy"


def load_file(
    path: str | Path,
    *,
    fmt: str | None = None,
    ufw_defaults: str | Path | None = None,
    local_addresses: Collection[IPAddress] | None = None,
    names: PortNames | None = None,
) -> Ruleset:
    """A ruleset from a file in any supported format (detected unless `fmt` is given).

    `names` resolves service names in a portkit policy file's port lists; without it,
    portkit's registry.

    `local_addresses`, the host's own addresses, decide iptables' `-m addrtype --dst-type
    LOCAL` (undecided without them).

    A ufw rules directory takes its default policies from `ufw_defaults`, else from the
    `default/ufw` that goes with it (never from this host's unless that is the directory
    read); when there is none they are unknown and every policy is followed."""
    from portkit.firewall._iptables import AddressTypes, import_iptables_save
    from portkit.firewall._nft import import_nft_json
    from portkit.firewall._policy import parse_policy
    from portkit.firewall._ufw import import_ufw

    addrtypes = AddressTypes.from_addresses(local_addresses) if local_addresses is not None else None
    p = Path(path)
    if p.is_dir():
        # A ufw directory: the IPv4 tables, and the IPv6 ones when ufw keeps them.
        v4 = import_ufw(p, defaults_file=ufw_defaults, addrtypes=addrtypes)
        if not all((p / f"{n}6.rules").is_file() for n in ("before", "user", "after")):
            return v4
        v6 = import_ufw(p, version=6, defaults_file=ufw_defaults, addrtypes=addrtypes)
        notes = (*v4.notes, *(n for n in v6.notes if n not in v4.notes))
        return Ruleset((*v4.tables, *v6.tables), f"ufw rules in {p}", notes)
    text = read_text_file(p, what="rules file")
    kind = fmt or detect_format(text)
    if kind == "nft-json":
        document = load_json(text, source=str(p))
        try:
            return import_nft_json(document, source=str(p))
        except (
            TypeError,
            KeyError,
            AttributeError,
            IndexError,
            ValueError,
            OverflowError,
            StopIteration,
        ) as exc:
            if isinstance(exc, UsageError):
                raise
            # The importer reads nft's own output, whose shapes nft guarantees; a file can put
            # any JSON value anywhere (`"port": []`, a string for a list). Its shape, not portkit,
            # is what is wrong; nft's own output (read_live) still fails loudly.
            raise UsageError(
                f"invalid nft JSON in {quote(str(p))}: a value of an unexpected type or shape "
                f"({type(exc).__name__}: {quote(str(exc), 50)}); expected `nft -j list ruleset` output"
            ) from None
    if kind == "nft":
        return parse_nft_script(text, source=str(p))
    if kind in ("iptables", "ufw"):
        version = (
            6
            if re.search(r"(^|/)(ip6tables|user6|before6|after6)|\.v6$|6\.rules$", p.name)
            or re.search(r"-A \S+ .*-[sd] [0-9a-fA-F]*:[0-9a-fA-F:]*[/ ]", text)
            or _ip6tables_text(text)
            else 4
        )
        return import_iptables_save(text, version=version, source=str(p), addrtypes=addrtypes)
    if kind == "policy":
        return parse_policy(text, source=str(p), names=names)
    raise UsageError(f"unknown rules format {kind!r}: expected nft-json, nft, iptables, ufw or policy")


# What only ip6tables rules hold: ICMPv6 by any of its names, IPv6-only modules and reject types.
_IP6TABLES_WORDS = re.compile(
    r"(?:^|\s)(?:-p|--protocol)\s+(?:ipv6-icmp|icmpv6|icmp6|58)\b|--icmpv6-type\b"
    r"|--reject-with\s+icmp6-|(?:^|\s)-m\s+(?:rt|frag|hbh|dst|mh|ipv6header|icmp6)\b"
)


def _ip6tables_text(text: str) -> bool:
    """Whether iptables-save text is ip6tables': its own header says so, or a rule holds
    something only ip6tables takes (ICMPv6, an IPv6-only module, an IPv6 literal anywhere in
    its options, such as TPROXY's `--on-ip ::`)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# Generated by "):
            return "ip6tables-save" in line
        if line.startswith(("-A ", "-I ")):
            if _IP6TABLES_WORDS.search(line):
                return True
            for word in line.split():
                bracketed = re.match(r"\[([^]]*)\]", word)  # DNAT's [addr]:port
                addr = bracketed.group(1) if bracketed else word.split("/")[0]
                if ":" in addr and not addr.startswith("-"):
                    with contextlib.suppress(ValueError):
                        ipaddress.IPv6Address(addr)
                        return True
    return False


def local_addresses(netns: str | None = None) -> frozenset[str]:
    """The addresses assigned to this host's (or the netns's) interfaces."""
    try:
        proc = subprocess.run(
            [*_prefix(netns), "ip", "-j", "addr"], capture_output=True, text=True, timeout=10, check=False
        )
        data = json.loads(proc.stdout or "[]")
    except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(a["local"] for link in data for a in link.get("addr_info", []) if "local" in a)


def address_types(netns: str | None = None) -> AddressTypes | None:
    """The host's (or the netns's) local routing table, which `-m addrtype` reads; None when
    it cannot be read."""
    from portkit.firewall._iptables import AddressTypes

    routes: list[tuple[int, tuple[int, int], str]] = []
    for flag, version in (("-4", 4), ("-6", 6)):
        try:
            proc = subprocess.run(
                [*_prefix(netns), "ip", flag, "-j", "route", "show", "table", "local"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            data = json.loads(proc.stdout or "[]") if proc.returncode == 0 else None
        except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired):
            data = None
        if not isinstance(data, list):
            return None
        for route in data:
            dst = str(route.get("dst", ""))
            if dst == "default":
                dst = "0.0.0.0/0" if version == IPV4 else "::/0"
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            kind = str(route.get("type", "unicast"))
            routes.append((version, (int(net.network_address), int(net.broadcast_address)), kind))
    return AddressTypes(tuple(routes))


def route_lookup(netns: str | None = None) -> Callable[[IPAddress], str | None]:
    """The output interface the routing table picks for an address (`ip route get`): "" when
    it cannot be asked, None when the kernel has no route (unreachable, prohibited)."""
    cache: dict[str, str | None] = {}

    def lookup(address: IPAddress) -> str | None:
        key = str(address)
        if key not in cache:
            try:
                proc = subprocess.run(
                    [*_prefix(netns), "ip", "-j", "route", "get", key],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                if proc.returncode != 0 and _NO_ROUTE.search(proc.stderr):
                    cache[key] = None
                else:
                    data = json.loads(proc.stdout or "[]")
                    cache[key] = str(data[0].get("dev", "")) if data else ""
            except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired, IndexError):
                cache[key] = ""
        return cache[key]

    return lookup


def masquerade_lookup(netns: str | None = None) -> Callable[[str, IPAddress], IPAddress | None]:
    """The source address a masquerade on an output interface gives a packet to a destination,
    as the kernel picks it: IPv4 takes the interface's first primary global address on the next
    hop's subnet, else its first primary global one (inet_select_addr); IPv6 the source address
    selection for the destination (what `ip route get ... oif` reports as prefsrc). None when
    it cannot be read."""
    cache: dict[tuple[str, str], IPAddress | None] = {}

    def ask(args: list[str]) -> Any:
        try:
            proc = subprocess.run(
                [*_prefix(netns), "ip", "-j", *args], capture_output=True, text=True, timeout=10, check=False
            )
            return json.loads(proc.stdout or "[]") if proc.returncode == 0 else None
        except (OSError, json.JSONDecodeError, subprocess.TimeoutExpired):
            return None

    def lookup(oif: str, dst: IPAddress) -> IPAddress | None:
        key = (oif, str(dst))
        if key in cache:
            return cache[key]
        found: IPAddress | None = None
        if re.fullmatch(r"[A-Za-z0-9_.@:-]{1,15}", oif):
            flag = "-4" if dst.version == IPV4 else "-6"
            route = ask([flag, "route", "get", str(dst), "oif", oif])
            first = route[0] if isinstance(route, list) and route and isinstance(route[0], dict) else {}
            if dst.version == IPV4:
                hop = _address(first.get("gateway")) or dst
                links = ask(["-4", "addr", "show", "dev", oif])
                infos = [
                    a
                    for link in (links if isinstance(links, list) else [])
                    for a in link.get("addr_info", [])
                    if a.get("scope") == "global" and not a.get("secondary")
                ]
                for info in infos:
                    address = _address(info.get("local"))
                    if address is None:
                        continue
                    net = ipaddress.ip_network(f"{address}/{info.get('prefixlen', 32)}", strict=False)
                    if hop in net:
                        found = address
                        break
                    if found is None:
                        found = address
            else:
                found = _address(first.get("prefsrc"))
        cache[key] = found
        return found

    return lookup


def _address(text: object) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(text)) if text else None
    except ValueError:
        return None


# What `ip route get` says when the kernel has no usable route.
_NO_ROUTE = re.compile(r"unreachable|No route to host|Permission denied|prohibit", re.I)


def forwarding_state(netns: str | None = None, iif: str = "") -> dict[int, bool]:
    """Whether this host (or the netns) forwards IPv4 and IPv6 packets: the sysctls
    net.ipv4.ip_forward and net.ipv6.conf.all.forwarding. IPv4 asks the input interface
    (net.ipv4.conf.IIF.forwarding, which ip_forward sets for all) when it is named and
    exists. A version whose setting cannot be read is left out (unknown)."""
    paths = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}
    if iif and re.fullmatch(r"[A-Za-z0-9_.@:-]{1,15}", iif) and iif not in (".", ".."):
        found = _read_proc([f"/proc/sys/net/ipv4/conf/{iif}/forwarding"], netns)
        if found:
            return {IPV4: found[0] != "0", **{k: v for k, v in forwarding_state(netns).items() if k == IPV6}}
    values = _read_proc(list(paths.values()), netns)
    if len(values) != len(paths):
        return {}
    return {version: value != "0" for version, value in zip(paths, values, strict=True)}


def _read_proc(paths: list[str], netns: str | None) -> list[str]:
    """The contents of /proc/sys files as seen from the netns; [] if one cannot be read."""
    if netns is None:
        try:
            return [Path(p).read_text().strip() for p in paths]
        except OSError:
            return []
    try:
        proc = subprocess.run(
            [*_prefix(netns), "cat", *paths], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    values = proc.stdout.split()
    return values if proc.returncode == 0 and len(values) == len(paths) else []
