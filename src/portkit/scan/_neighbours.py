"""Link-layer addresses of scanned hosts on a directly attached network, from the kernel.

nmap learns a LAN host's MAC address from its own ARP or neighbour-discovery exchange and
reports it (`MAC Address: ...`, `<address addrtype="mac">`). Every packet a scan sends to an
on-link host goes through the kernel's neighbour table first, so after the scan that table
(rtnetlink RTM_GETNEIGH, as `ip neigh` reads it) holds the same answer. Hosts reached through
a router have no entry of their own, and the scanner's own addresses none at all: neither gets
a MAC, as with nmap.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import struct
from pathlib import Path

_RTM_NEWNEIGH = 28
_RTM_GETNEIGH = 30
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NDA_DST = 1
_NDA_LLADDR = 2
# Entries whose address was resolved: reachable, stale, delay, probe, permanent.
_NUD_RESOLVED = 0x02 | 0x04 | 0x08 | 0x10 | 0x80

MAC_PREFIX_PATHS = (
    Path("/usr/share/nmap/nmap-mac-prefixes"),
    Path("/usr/local/share/nmap/nmap-mac-prefixes"),
)


def parse_neighbours(data: bytes) -> tuple[dict[str, str], bool]:
    """RTM_NEWNEIGH messages -> ({address: "AA:BB:CC:DD:EE:FF"}, whether the dump is done)."""
    found: dict[str, str] = {}
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return found, True
        if kind in (_NLMSG_DONE, _NLMSG_ERROR):
            return found, True
        if kind == _RTM_NEWNEIGH and length >= 28:
            family, _, _, _ifindex, state, _, _ = struct.unpack_from("=BBHiHBB", data, offset + 16)
            attrs = offset + 28
            dst = lladdr = b""
            while attrs + 4 <= offset + length:
                alen, atype = struct.unpack_from("=HH", data, attrs)
                if alen < 4:
                    break
                value = data[attrs + 4 : attrs + alen]
                if atype == _NDA_DST:
                    dst = value
                elif atype == _NDA_LLADDR:
                    lladdr = value
                attrs += (alen + 3) & ~3
            if state & _NUD_RESOLVED and len(lladdr) == 6 and any(lladdr) and dst:
                if family == socket.AF_INET and len(dst) == 4:
                    found[str(ipaddress.IPv4Address(dst))] = lladdr.hex(":").upper()
                elif family == socket.AF_INET6 and len(dst) == 16:
                    found[str(ipaddress.IPv6Address(dst))] = lladdr.hex(":").upper()
        offset += (length + 3) & ~3
    return found, False


def neighbour_macs() -> dict[str, str]:
    """Every resolved neighbour of this network namespace: address -> MAC ({} when unreadable)."""
    found: dict[str, str] = {}
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError:
        return found
    with sock:
        sock.settimeout(2.0)
        # nlmsghdr, then ndmsg with family AF_UNSPEC: both IPv4 and IPv6 neighbours.
        request = struct.pack("=IHHII", 28, _RTM_GETNEIGH, _NLM_F_REQUEST | _NLM_F_DUMP, 1, os.getpid())
        request += struct.pack("=BBHiHBB", socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0)
        try:
            sock.send(request)
            while True:
                part, done = parse_neighbours(sock.recv(1 << 16))
                found.update(part)
                if done:
                    break
        except OSError:
            return found
    return found


@functools.lru_cache(maxsize=1)
def _vendors() -> dict[str, str]:
    for path in MAC_PREFIX_PATHS:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        table = {}
        for line in text.splitlines():
            prefix, _, vendor = line.partition(" ")
            if prefix and not prefix.startswith("#") and vendor:
                table[prefix.upper()] = vendor.strip()
        return table
    return {}


def mac_vendor(mac: str) -> str:
    """The owner of a MAC address's prefix, as nmap names it (nmap-mac-prefixes); "" if unknown."""
    digits = mac.replace(":", "").upper()
    table = _vendors()
    return next((table[digits[:n]] for n in (9, 7, 6) if digits[:n] in table), "")
