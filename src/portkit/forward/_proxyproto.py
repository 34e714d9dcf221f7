"""The HAProxy PROXY protocol header (v1 text, v2 binary), so a backend sees the real client.

Specification: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt. Pure functions:
given the client's and the forwarder's addresses, the bytes to send first on the target side.
"""

from __future__ import annotations

import ipaddress
import struct

from portkit.forward._rules import ProxyProtocol

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY_COMMAND = 0x21  # version 2, command PROXY
_V2_TCP4 = 0x11  # AF_INET, STREAM
_V2_TCP6 = 0x21  # AF_INET6, STREAM

Address = tuple[str, int]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def proxy_header(version: ProxyProtocol, source: Address, destination: Address) -> bytes:
    """The header announcing a TCP connection from `source` to `destination` (the listen side)."""
    if version is ProxyProtocol.NONE:
        return b""
    src, dst = _ip(source[0]), _ip(destination[0])
    if src.version != dst.version:
        # A v4 client on a dual-stack v6 listener: say so in v6 terms.
        src, dst = (
            ipaddress.IPv6Address(f"::ffff:{src}") if src.version == 4 else src,
            (ipaddress.IPv6Address(f"::ffff:{dst}") if dst.version == 4 else dst),
        )
    if version is ProxyProtocol.V1:
        family = "TCP4" if src.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")
    code = _V2_TCP4 if src.version == 4 else _V2_TCP6
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY_COMMAND, code, len(body)) + body


def parse_proxy_header(data: bytes) -> tuple[Address, Address, int]:
    """(source, destination, header length) from a v1 or v2 header; ValueError if there is none.

    The forwarder never reads PROXY headers; this is the receiving side, for tests and tools.
    """
    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n")
        if end < 0:
            raise ValueError("incomplete PROXY v1 header")
        parts = data[:end].decode("ascii").split(" ")
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ValueError(f"malformed PROXY v1 header {data[:end]!r}")
        return (parts[2], int(parts[4])), (parts[3], int(parts[5])), end + 2
    if data.startswith(V2_SIGNATURE):
        if len(data) < 16:
            raise ValueError("incomplete PROXY v2 header")
        command, family, length = struct.unpack("!BBH", data[12:16])
        body = data[16 : 16 + length]
        if command != _V2_PROXY_COMMAND or len(body) < length:
            raise ValueError("malformed PROXY v2 header")
        size = 4 if family == _V2_TCP4 else 16
        src = str(ipaddress.ip_address(body[:size]))
        dst = str(ipaddress.ip_address(body[size : 2 * size]))
        sport, dport = struct.unpack("!HH", body[2 * size : 2 * size + 4])
        return (src, sport), (dst, dport), 16 + length
    raise ValueError("no PROXY header")
