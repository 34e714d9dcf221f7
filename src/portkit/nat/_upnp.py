"""UPnP-IGD through the `miniupnpc` binding: find the gateway's IGD, read its external address,
add, delete and list port mappings.

miniupnpc (the MiniUPnP project's client, whose daemon twin is miniupnpd) does the SSDP
discovery, reads the device description and speaks SOAP to the WANIPConnection service; PyPI
ships it as a binary wheel, and it is imported only when a UPnP request is made.

Finding the IGD: with a known gateway address, one unicast SSDP M-SEARCH to its port 1900
(UPnP Device Architecture 1.1 section 1.3.2 allows unicast searches) gives the description URL,
and miniupnpc is pointed at that URL, so no multicast is sent. Only when the gateway does not
answer unicast does miniupnpc's multicast discovery run (239.255.255.250:1900), and `portkit`
does that only for `nat map`, `nat unmap` and `nat router`.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from portkit.model import Transport

SSDP_PORT = 1900
IGD_SEARCH_TARGET = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
MAX_LISTED = 4096  # GetGenericPortMappingEntry indices read at most


class UpnpUnavailable(Exception):
    """No IGD was found, or the binding is missing; the message says which."""


class UpnpFault(Exception):
    """The IGD answered an action with an error (a UPnP error code and description)."""


def msearch(host: str, search_target: str = IGD_SEARCH_TARGET, mx: int = 1) -> bytes:
    """An SSDP M-SEARCH request (UDA 1.1 section 1.3.2)."""
    lines = [
        "M-SEARCH * HTTP/1.1",
        f"HOST: {host}:{SSDP_PORT}",
        'MAN: "ssdp:discover"',
        f"MX: {mx}",
        f"ST: {search_target}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def parse_ssdp_response(data: bytes) -> dict[str, str] | None:
    """The headers of an SSDP search response (names lower-cased), or None if it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    status, _, rest = text.partition("\r\n")
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "200":
        return None
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers[name.strip().lower()] = value.strip()
    return headers if "location" in headers else None


def unicast_search(gateway: str, timeout: float) -> str | None:
    """The IGD description URL the gateway gives to a unicast M-SEARCH, or None."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((gateway, SSDP_PORT))
        try:
            sock.send(msearch(gateway))
        except OSError:
            return None
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                return None
            try:
                headers = parse_ssdp_response(sock.recv(4096))
            except OSError:
                return None  # ICMP port unreachable: nothing listens for SSDP there
            if headers is not None:
                return headers["location"]
    return None


@dataclass(frozen=True)
class UpnpEntry:
    """One row of GetGenericPortMappingEntry."""

    protocol: Transport
    external_port: int
    internal_address: str
    internal_port: int
    description: str
    enabled: bool
    remote_host: str
    lease: int


def _binding() -> Any:
    try:
        import miniupnpc  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise UpnpUnavailable("the miniupnpc package is not installed (pip install miniupnpc)") from None
    return miniupnpc


@contextlib.contextmanager
def _c_stderr_captured() -> Iterator[list[str]]:
    """Collect what the C library writes to file descriptor 2 (miniupnpc reports socket errors
    with perror), so it becomes part of portkit's one-line answer instead of stray lines."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines())


def _fault(exc: Exception) -> UpnpFault:
    return UpnpFault(str(exc) or type(exc).__name__)


class IgdClient:
    """An Internet Gateway Device found on the LAN, and the actions portkit asks of it."""

    def __init__(self, gateway: str | None, timeout: float, *, multicast: bool = True) -> None:
        """Find the IGD: by unicast search of `gateway`, else (with `multicast`) by SSDP multicast."""
        upnp = _binding().UPnP()
        upnp.discoverdelay = max(100, int(timeout * 1000))
        self.location = unicast_search(gateway, timeout) if gateway else None
        try:
            if self.location is not None:
                upnp.selectigd(self.location)
                self.found_by = "unicast SSDP search"
            elif multicast:
                error = ""
                with _c_stderr_captured() as said:
                    try:
                        count = upnp.discover()
                    except Exception as exc:  # "Miniupnpc Socket error"; perror said why on fd 2
                        count, error = 0, str(exc)
                if count == 0:
                    why = said[-1] if said else error
                    head = "SSDP search failed" if error else f"no answer to an SSDP search in {timeout:g}s"
                    raise UpnpUnavailable(head + (f" ({why})" if why else ""))
                upnp.selectigd()
                self.found_by = "multicast SSDP search"
            else:
                raise UpnpUnavailable(f"no answer to a unicast SSDP search in {timeout:g}s")
        except UpnpUnavailable:
            raise
        except Exception as exc:  # the binding raises plain Exception("No UPnP device discovered")
            # A failed discovery with errno 0 comes out as strerror(0), "Success".
            message = str(exc) if str(exc) not in ("", "Success") else "no IGD answered"
            raise UpnpUnavailable(f"{message} (SSDP search, {timeout:g}s)") from None
        self._upnp = upnp
        self.control_host = urlsplit(self.location or "").hostname or gateway or ""

    @property
    def lan_address(self) -> str:
        """The address of this host on the IGD's LAN: the internal client of its mappings."""
        return str(self._upnp.lanaddr)

    def external_address(self) -> str:
        try:
            return str(self._upnp.externalipaddress())
        except Exception as exc:
            raise _fault(exc) from None

    def add(
        self,
        protocol: Transport,
        external_port: int,
        internal_address: str,
        internal_port: int,
        lease: int,
        description: str,
    ) -> None:
        try:
            self._upnp.addportmapping(external_port, protocol.value.upper(), internal_address, internal_port,
                                      description, "", lease)  # fmt: skip
        except Exception as exc:
            raise _fault(exc) from None

    def delete(self, protocol: Transport, external_port: int) -> None:
        try:
            self._upnp.deleteportmapping(external_port, protocol.value.upper())
        except Exception as exc:
            raise _fault(exc) from None

    def lookup(self, protocol: Transport, external_port: int) -> UpnpEntry | None:
        """GetSpecificPortMappingEntry: the mapping of this external port, or None."""
        try:
            row = self._upnp.getspecificportmapping(external_port, protocol.value.upper())
        except Exception:
            return None
        if row is None:
            return None
        (address, port, description, enabled, lease) = row
        return UpnpEntry(protocol, external_port, str(address), int(port), str(description), bool(enabled),
                         "", int(lease))  # fmt: skip

    def entries(self) -> Iterator[UpnpEntry]:
        """GetGenericPortMappingEntry from index 0 until the IGD says the index is past the end."""
        for index in range(MAX_LISTED):
            try:
                row = self._upnp.getgenericportmapping(index)
            except Exception:
                return
            if row is None:
                return
            port, proto, (address, internal_port), description, enabled, remote, lease = row
            protocol = Transport.parse(str(proto))
            yield UpnpEntry(protocol, int(port), str(address), int(internal_port), str(description),
                            bool(int(enabled)), str(remote), int(lease))  # fmt: skip
