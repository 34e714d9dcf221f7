"""Rendering a `ScanResult`: nmap-like text, nmap XML, grepable (-oG), CSV and JSON.

Every format is made from the same result objects. The XML follows nmap's DTD
(/usr/share/nmap/nmap.dtd) so nmap's own tools (ndiff, xsltproc with nmap.xsl) read it.
The command line written into the JSON, XML and grepable headers is the caller's to give
(`command`, as the CLI does); without one, the result's own `command`, else "portkit scan".
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

from portkit.model.portstate import PortState
from portkit.model.services import CONFIDENCE_HARD, CONFIDENCE_SOFT, Method, ServiceRecord
from portkit.scan._results import HostResult, PortResult, ScanResult

XML_OUTPUT_VERSION = "1.05"
NMAP_COMPAT_VERSION = "7.93"  # the nmap output version our XML imitates


def _has_name(port: PortResult) -> bool:
    """Whether nmap would hold a name for the port (its serviceDeductions name, or a tunnel)."""
    svc = port.service
    return svc is not None and ((bool(svc.name) and svc.confidence > 0) or bool(svc.tunnel))


def service_column(port: PortResult, service_scan: bool = False) -> str:
    """The SERVICE column as nmap prints it: `ssl/http`, `ssh`, `unknown`, `domain?`.

    After service detection (`service_scan`), an open port named only by the port table
    (confidence 5 or less) gets nmap's question mark; "unknown" never does.
    """
    svc = port.service
    tunnel = "ssl/" if svc is not None and svc.tunnel == "ssl" else ""
    if svc is None or not _has_name(port) or not svc.name or svc.name == "unknown":
        return f"{tunnel}unknown"
    guessed = service_scan and port.state is PortState.OPEN and svc.confidence <= 5
    return f"{tunnel}{svc.name}{'?' if guessed else ''}"


def _version_text(port: PortResult, *, notes: bool = True) -> str:
    """The VERSION column: `product version (extrainfo)` as the service stated it.

    A table guess carries service detection's word on why nothing matched ("silent"); the
    text table shows it (`notes`), nmap's formats (XML, grepable) do not.
    """
    svc = port.service
    if svc is None or (svc.method is not Method.PROBED and not svc.extrainfo):
        return ""
    if svc.method is not Method.PROBED:
        return f"({svc.extrainfo})" if notes else ""
    text = " ".join(w for w in (svc.product, svc.version) if w)
    if svc.extrainfo:
        text = f"{text} ({svc.extrainfo})" if text else f"({svc.extrainfo})"
    return text


def _not_shown_line(host: HostResult, protocol: str) -> list[str]:
    """nmap's one line for the collapsed states: `Not shown: 98 closed tcp ports (reset), 41 ...`."""
    parts: list[str] = []
    for extra in host.extraports:
        plural = "" if extra.count == 1 else "s"
        parts.extend(f"{n} {extra.state} {protocol} port{plural} ({r})" for r, n in extra.reasons)
    return [f"Not shown: {', '.join(parts)}"] if parts else []


def render_text(result: ScanResult, *, reason: bool = False, open_only: bool = False) -> str:
    """nmap-like text: a report per host, then a summary line."""
    return "\n".join(iter_text(result, reason=reason, open_only=open_only))


def iter_text(result: ScanResult, *, reason: bool = False, open_only: bool = False) -> Iterator[str]:
    """`render_text` line by line, so a scan of a /16 is printed without one huge string."""
    out = _Lines()
    kind = "host discovery" if result.scan_type == "ping" else f"{result.scan_type} scan"
    out.append(
        f"portkit {kind} of {result.hosts_total} host{'s' if result.hosts_total != 1 else ''}"
        + (f", {result.nports} {result.protocol} ports" if result.nports else "")
    )
    for note in result.notes:
        out.append(f"Note: {note}")
    versions = result.service_scan or any(_version_text(p) for h in result.hosts for p in h.ports)
    for host in result.hosts:
        yield from out.flush()
        out.append("")
        name = f"{host.hostnames[0]} ({host.shown_address})" if host.hostnames else host.shown_address
        out.append(f"Scan report for {name}")
        latency = f" ({_two_digits(host.rtt)}s latency)" if host.rtt else ""
        status = "up" if host.status == "up" else "up, but timed out"
        out.append(f"Host is {status}, received {host.status_reason}{latency}.")
        if result.scan_type != "ping":
            out.extend(_port_table(result, host, reason=reason, open_only=open_only, versions=versions))
        if host.mac:
            out.append(f"MAC Address: {host.mac} ({host.mac_vendor or 'Unknown'})")
        out.extend(service_info_line(host))
    yield from out.flush()
    out.append("")
    out.append(summary_line(result))
    yield from out.flush()


def _port_table(
    result: ScanResult, host: HostResult, *, reason: bool, open_only: bool, versions: bool
) -> list[str]:
    """A host's "Not shown" line and its table of ports (with the detail lines under them)."""
    out = _not_shown_line(host, result.protocol.value)
    ports = [p for p in host.ports if not open_only or p.state is PortState.OPEN]
    if not ports:
        if not host.extraports:
            out.append("No ports answered before the scan ended.")
        return out
    header = ["PORT", "STATE", "SERVICE"] + (["REASON"] if reason else []) + (["VERSION"] if versions else [])
    rows = []
    for p in ports:
        row = [f"{p.port}/{p.protocol}", str(p.state), service_column(p, result.service_scan)]
        if reason:
            row.append(f"{p.reason} ttl {p.ttl}" if p.ttl else str(p.reason))
        if versions:
            row.append(_version_text(p))
        rows.append(row)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    out.append(" ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for p, row in zip(ports, rows, strict=True):
        out.append(" ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.extend(_detail_lines(p))
    return out


def service_info_line(host: HostResult) -> list[str]:
    """nmap's `Service Info: Host: ...; OS: Linux; Device: ...; CPE: cpe:/o:...` line for a host.

    Gathered over its open ports, first seen first, without repeats; application CPEs
    (cpe:/a:...) belong to their port, so only hardware and OS ones are listed.
    """
    fields: dict[str, list[str]] = {"Host": [], "OS": [], "Device": [], "CPE": []}
    for port in host.ports:
        svc = port.service
        if svc is None or port.state is not PortState.OPEN:
            continue
        seen = {
            "Host": [svc.hostname] if svc.hostname and svc.hostname not in host.hostnames else [],
            "OS": [svc.ostype] if svc.ostype else [],
            "Device": [svc.devicetype] if svc.devicetype else [],
            "CPE": [c for c in svc.cpe if not c.startswith("cpe:/a")],
        }
        for key, values in seen.items():
            fields[key].extend(v for v in values if v not in fields[key])
    parts = []
    for key, values in fields.items():
        if values:
            label = key if key == "CPE" or len(values) == 1 else f"{key}s"
            parts.append(f"{label}: {', '.join(values)}")
    return [f"Service Info: {'; '.join(parts)}"] if parts else []


class _Lines(list[str]):
    def flush(self) -> Iterator[str]:
        yield from self
        self.clear()


def _detail_lines(port: PortResult) -> list[str]:
    """nmap-style lines under a port for what service detection saw of its HTTP and TLS faces."""
    lines = []
    http = port.service.http if port.service is not None else None
    if http is not None:
        text = f"http: {http.status}"
        if http.title:
            text += f' "{http.title}"'
        if http.location:
            text += f" -> {http.location}"
        lines.append(text)
    tls = port.tls
    if tls is not None and tls.version:
        text = f"tls: {tls.version} {tls.cipher}" + (f" alpn {tls.alpn}" if tls.alpn else "")
        if tls.subject:
            text += f"; subject {tls.subject}"
            text += "; self-signed" if tls.self_signed else f"; issuer {tls.issuer}"
        if tls.not_after:
            text += f"; expires {tls.not_after[:10]}"
        lines.append(text)
    return [("|_ " if i == len(lines) - 1 else "|  ") + line for i, line in enumerate(lines)]


def _two_digits(seconds: float) -> str:
    """Two significant digits, never in exponent form (nmap: 0.000050s, 0.052s)."""
    places = max(0, 1 - math.floor(math.log10(seconds)))
    return f"{seconds:.{places}f}"


def summary_line(result: ScanResult) -> str:
    counts = result.state_counts()
    states = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    ports = f"; ports: {states}" if states else ""
    stopped = " (interrupted: partial results)" if result.interrupted else ""
    return (
        f"Done: {result.hosts_total} address{'es' if result.hosts_total != 1 else ''} "
        f"({result.hosts_up} host{'s' if result.hosts_up != 1 else ''} up){ports} "
        f"in {result.elapsed:.2f} s{stopped}"
    )


def command_line(result: ScanResult, command: str | None = None) -> str:
    """The command line a header names: `command` if given, else the result's, else "portkit scan"."""
    return command if command is not None else (result.command or "portkit scan")


def render_json(result: ScanResult, command: str | None = None) -> str:
    return "".join(iter_json(result, command))


def iter_json(result: ScanResult, command: str | None = None) -> Iterator[str]:
    """`json.dumps(result.to_json(), indent=2)`, host by host (same text, bounded memory)."""
    header = result.to_json(hosts=False)
    header["scan"]["command"] = command_line(result, command)
    yield '{\n  "scan": ' + json.dumps(header["scan"], indent=2).replace("\n", "\n  ") + ',\n  "hosts": ['
    for i, host in enumerate(result.hosts):
        yield ("," if i else "") + "\n    " + json.dumps(host.to_json(), indent=2).replace("\n", "\n    ")
    yield "\n  ]\n}" if result.hosts else "]\n}"


# -- nmap XML ------------------------------------------------------------------------------


def quoteattr(value: str) -> str:
    """An XML attribute value in double quotes (xml.sax.saxutils would import urllib and email)."""
    escaped = (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    )  # fmt: skip
    return f'"{escaped}"'


def _attrs(**values: object) -> str:
    return "".join(f" {k.rstrip('_')}={quoteattr(str(v))}" for k, v in values.items() if v is not None)


def _services_attr(result: ScanResult) -> str:
    return result.services or result.ports_spec


def render_xml(result: ScanResult, command: str | None = None) -> str:
    return "".join(iter_xml(result, command))


def iter_xml(result: ScanResult, command: str | None = None) -> Iterator[str]:
    """nmap XML, a host at a time; `command` is the command line for `<nmaprun args>`."""
    command = command_line(result, command)
    start = int(result.start)
    end = int(result.start + result.elapsed)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<!DOCTYPE nmaprun>"]
    lines.append(f'<?xml-stylesheet href={quoteattr(stylesheet_href())} type="text/xsl"?>')
    lines.append(f"<!-- {_comment_text(_initiated(result, command))} -->")
    lines.append(
        "<nmaprun"
        + _attrs(
            scanner="portkit",
            args=command,
            start=start,
            startstr=time.ctime(start),
            version=portkit_version(),
            xmloutputversion=XML_OUTPUT_VERSION,
        )
        + ">"
    )
    if result.scan_type != "ping":
        lines.append(
            "<scaninfo"
            + _attrs(
                type=result.scan_type,
                protocol=result.protocol.value,
                numservices=result.nports,
                services=_services_attr(result),
            )
            + "/>"
        )
    lines.append('<verbose level="0"/>')
    lines.append('<debugging level="0"/>')
    if result.scan_type != "ping":
        # nmap writes a hint for each host its discovery found on the link, before the reports.
        for host in result.hosts:
            if host.mac:
                lines.append("<hosthint>")
                lines.extend(_host_identity(host))
                lines.append("</hosthint>")
    for host in result.hosts:
        lines.append(
            f'<host starttime="{start}" endtime="{end}"'
            + (' timedout="true"' if host.status == "timeout" else "")
            + ">"
        )
        lines.extend(_host_identity(host))
        if result.scan_type != "ping":
            lines.append("<ports>")
            for extra in host.extraports:
                lines.append("<extraports" + _attrs(state=extra.state, count=extra.count) + ">")
                ranges = extra.ports or ("",) * len(extra.reasons)
                lines.extend(
                    "<extrareasons"
                    + _attrs(reason=r, count=n, proto=result.protocol.value, ports=where or None)
                    + "/>"
                    for (r, n), where in zip(extra.reasons, ranges, strict=True)
                )
                lines.append("</extraports>")
            for p in host.ports:
                lines.append("<port" + _attrs(protocol=p.protocol.value, portid=p.port) + ">")
                lines.append("<state" + _attrs(state=p.state, reason=p.reason, reason_ttl=p.ttl) + "/>")
                svc = p.service
                if svc is not None and _has_name(p):
                    attrs = _attrs(
                        name=svc.name or "unknown",
                        product=svc.product or None,
                        version=svc.version or None,
                        # a table guess's extrainfo is portkit's note ("silent"), not the service's
                        extrainfo=(svc.extrainfo if svc.method is Method.PROBED else "") or None,
                        hostname=svc.hostname or None,
                        ostype=svc.ostype or None,
                        devicetype=svc.devicetype or None,
                        tunnel=svc.tunnel or None,
                        method=svc.method,
                        conf=_nmap_confidence(svc),
                    )
                    if svc.cpe:
                        lines.append(f"<service{attrs}>")
                        lines.extend(f"<cpe>{_text(c)}</cpe>" for c in svc.cpe)
                        lines.append("</service>")
                    else:
                        lines.append(f"<service{attrs}/>")
                lines.append("</port>")
            lines.append("</ports>")
        if host.rtt is not None:
            # nmap's units: microseconds; rttvar and the timeout as the scan's estimator left them.
            srtt = int(host.rtt * 1e6)
            rttvar = int(host.rttvar * 1e6) if host.rttvar is not None else srtt
            timeout = int(host.timeout * 1e6) if host.timeout is not None else srtt + 4 * rttvar
            lines.append("<times" + _attrs(srtt=srtt, rttvar=rttvar, to=max(100000, timeout)) + "/>")
        lines.append("</host>")
        yield "\n".join(lines) + "\n"
        lines.clear()
    summary = (
        f"Nmap done at {time.ctime(end)}; {result.hosts_total} IP address"
        f"{'es' if result.hosts_total != 1 else ''} ({result.hosts_up} host"
        f"{'s' if result.hosts_up != 1 else ''} up) scanned in {result.elapsed:.2f} seconds"
    )
    lines.append("<runstats>")
    lines.append(
        "<finished"
        + _attrs(
            time=end,
            timestr=time.ctime(end),
            summary=summary,
            elapsed=f"{result.elapsed:.2f}",
            exit="error" if result.interrupted else "success",
            errormsg="interrupted" if result.interrupted else None,
        )
        + "/>"
    )
    down = max(0, result.hosts_total - result.hosts_up)
    lines.append("<hosts" + _attrs(up=result.hosts_up, down=down, total=result.hosts_total) + "/>")
    lines.append("</runstats>")
    lines.append("</nmaprun>")
    yield "\n".join(lines) + "\n"


def _nmap_confidence(svc: ServiceRecord) -> int:
    """nmap's XML rates every probed name 10 but tcpwrapped's 8; portkit rates a name from a
    soft match alone (the protocol, not the product) lower."""
    if svc.method is Method.PROBED and svc.confidence == CONFIDENCE_SOFT:
        return CONFIDENCE_HARD
    return svc.confidence


def _host_identity(host: HostResult) -> list[str]:
    """nmap's status, addresses and hostnames of a host (in <host> and in <hosthint>)."""
    family = "ipv6" if ":" in host.shown_address else "ipv4"
    lines = ["<status" + _attrs(state="up", reason=host.status_reason, reason_ttl=0) + "/>"]
    lines.append("<address" + _attrs(addr=host.shown_address, addrtype=family) + "/>")
    if host.mac:
        vendor = host.mac_vendor or None
        lines.append("<address" + _attrs(addr=host.mac, addrtype="mac", vendor=vendor) + "/>")
    if host.hostnames:
        lines.append("<hostnames>")
        lines.extend("<hostname" + _attrs(name=n, type="user") + "/>" for n in host.hostnames)
        lines.append("</hostnames>")
    else:
        lines.append("<hostnames>\n</hostnames>")
    return lines


NMAP_XSL_PATHS = (Path("/usr/share/nmap/nmap.xsl"), Path("/usr/local/share/nmap/nmap.xsl"))


def stylesheet_href() -> str:
    """nmap's <?xml-stylesheet?> target: the installed nmap.xsl as a file URL, else "nmap.xsl"."""
    found = next((p for p in NMAP_XSL_PATHS if p.is_file()), None)
    return found.as_uri() if found else "nmap.xsl"


def portkit_version() -> str:
    from portkit import __version__

    return __version__


def _initiated(result: ScanResult, command: str) -> str:
    return f"portkit {portkit_version()} scan initiated {time.ctime(result.start)} as: {command}"


def _comment_text(text: str) -> str:
    """Text safe inside an XML comment: escaped as nmap escapes it ("--" may not appear there)."""
    return _text(text).replace("--", "-&#45;").replace("--", "-&#45;")


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- grepable and CSV ----------------------------------------------------------------------


def _grepable_field(text: str) -> str:
    """nmap's grepable escape: a '/' inside a field becomes '|' (`ssl|http`), so fields split on '/'."""
    return text.replace("/", "|")


def render_grepable(result: ScanResult, command: str | None = None) -> str:
    """nmap's -oG, line for line, so scripts written for `nmap -oG` read it unchanged.

    The header and footer keep nmap's wording ("# Nmap 7.93 scan initiated ..." and
    "# Nmap done at ...", the marks such scripts look for); the command after "as:" says that
    portkit wrote it. Like nmap, "Ignored State" is written only when exactly one state was
    collapsed: the format has room for one.
    """
    lines = [
        f"# Nmap {NMAP_COMPAT_VERSION} scan initiated {time.ctime(result.start)} as: "
        + command_line(result, command)
    ]
    for host in result.hosts:
        name = host.hostnames[0] if host.hostnames else ""
        lines.append(f"Host: {host.shown_address} ({name})\tStatus: Up")
        if host.status == "timeout":  # nmap: the Up line, then this one, and no ports
            lines.append(f"Host: {host.shown_address} ({name})\tStatus: Timeout")
            continue
        if result.scan_type == "ping" or (not host.ports and not host.extraports):
            continue
        entries = []
        for p in host.ports:
            service = _grepable_field(service_column(p, result.service_scan)) if _has_name(p) else ""
            version = _grepable_field(_version_text(p, notes=False))
            entries.append(f"{p.port}/{p.state}/{p.protocol}//{service}//{version}/")
        line = f"Host: {host.shown_address} ({name})\tPorts: {', '.join(entries)}"
        if len(host.extraports) == 1:
            extra = host.extraports[0]
            line += f"\tIgnored State: {extra.state} ({extra.count})"
        lines.append(line)
    end = time.ctime(result.start + result.elapsed)
    lines.append(
        f"# Nmap done at {end} -- {result.hosts_total} IP address"
        f"{'es' if result.hosts_total != 1 else ''} ({result.hosts_up} host"
        f"{'s' if result.hosts_up != 1 else ''} up) scanned in {result.elapsed:.2f} seconds"
    )
    return "\n".join(lines) + "\n"


def _csv_service(port: PortResult) -> str:
    if port.service is None:
        return ""
    return f"ssl/{port.service.name}" if port.service.tunnel == "ssl" else port.service.name


def render_csv(result: ScanResult) -> str:
    """One row per listed port (collapsed ports are summarised per host as port "*").

    Host names (a PTR answer) and service versions (a banner) are the scanned side's words:
    they are written so that a spreadsheet shows them as text, never as a formula
    (portkit._spreadsheet)."""
    from portkit._spreadsheet import write_csv_row

    buffer = io.StringIO()
    header = ["host", "hostname", "port", "protocol", "state", "reason", "ttl", "service", "count"]
    write_csv_row(buffer, header)
    for host in result.hosts:
        name = host.hostnames[0] if host.hostnames else ""
        for p in host.ports:
            row: list[str | int | None] = [host.shown_address, name, p.port, str(p.protocol), str(p.state)]
            write_csv_row(buffer, [*row, str(p.reason), p.ttl, _csv_service(p), 1])
        for extra in host.extraports:
            for reason, count in extra.reasons:
                row = [host.shown_address, name, "*", str(result.protocol), str(extra.state)]
                write_csv_row(buffer, [*row, str(reason), None, None, count])
    return buffer.getvalue()
