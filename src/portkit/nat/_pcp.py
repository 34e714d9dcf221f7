"""PCP (RFC 6887) as pure code: MAP and ANNOUNCE requests and responses, and the timing.

Theory of operation: every PCP message is a 24-byte common header, an opcode-specific body and
options (type, reserved, 16-bit length, data padded to 4 bytes), at most 1100 bytes and a
multiple of 4 in all (section 7). A request carries the client's own address (an IPv4 one
written IPv4-mapped, ::ffff:a.b.c.d); a server that sees another source address (a NAT in
between) answers ADDRESS_MISMATCH. MAP (opcode 1) asks for a mapping of an internal port,
suggesting an external port and address; the server answers with what it assigned and the
lifetime it grants, which may differ from the request. The 96-bit nonce names the mapping:
renewing or deleting (lifetime 0) must repeat the nonce that created it, or the server refuses
(section 11.2), so the caller picks a nonce it can derive again (`mapping_nonce`). ANNOUNCE
(opcode 0, no body) asks nothing and is answered, which tells whether a server speaks PCP.

A server that speaks only NAT-PMP answers a PCP request with a NAT-PMP "unsupported version"
(version byte 0), which `decode_response` returns as `VersionReply` (section 9).

Retransmission (section 8.1.1): the first wait is IRT = 3 s, then each wait doubles up to
MRT = 1024 s, every one jittered by a random factor in [0.9, 1.1]; the driver stops at its
own timeout, since the RFC's MRD of 0 means "keep trying".
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from portkit.model import Transport

PORT = 5351
VERSION = 2
RESPONSE_BIT = 0x80
HEADER = 24
MAP_BODY = 36
MAX_MESSAGE = 1100
NONCE_SIZE = 12
IRT = 3.0
MRT = 1024.0


class MalformedPacket(ValueError):
    """Bytes that are not a well-formed PCP message."""


class Opcode(enum.IntEnum):
    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class ResultCode(enum.IntEnum):
    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


def _address16(address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed).packed
    return ip.packed


def _address_text(packed: bytes) -> str:
    ip = ipaddress.IPv6Address(packed)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


@dataclass(frozen=True)
class PcpOption:
    code: int
    data: bytes = b""

    def encode(self) -> bytes:
        padded = self.data + b"\0" * (-len(self.data) % 4)
        return struct.pack("!BBH", self.code, 0, len(self.data)) + padded


def _encode_options(options: tuple[PcpOption, ...]) -> bytes:
    return b"".join(o.encode() for o in options)


def _decode_options(data: bytes) -> tuple[PcpOption, ...]:
    found: list[PcpOption] = []
    at = 0
    while at < len(data):
        if len(data) - at < 4:
            raise MalformedPacket(f"PCP option header cut short at byte {at}")
        code, _, length = struct.unpack_from("!BBH", data, at)
        end = at + 4 + length
        if end > len(data):
            raise MalformedPacket(f"PCP option {code} of {length} bytes runs past the message")
        found.append(PcpOption(code, bytes(data[at + 4 : end])))
        at = end + (-length % 4)
    return tuple(found)


@dataclass(frozen=True)
class MapBody:
    """MAP's body, the same in a request (suggestions) and a response (what was assigned)."""

    nonce: bytes
    protocol: int  # IANA protocol number; 0 means all protocols
    internal_port: int
    external_port: int
    external_address: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"PCP nonce of {len(self.nonce)} bytes: {NONCE_SIZE} expected")
        if not (0 <= self.protocol <= 0xFF and 0 <= self.internal_port <= 0xFFFF
                and 0 <= self.external_port <= 0xFFFF):  # fmt: skip
            raise ValueError("PCP MAP protocol 0-255 and ports 0-65535 expected")

    @property
    def transport(self) -> Transport | None:
        return Transport.from_number(self.protocol)

    def encode(self) -> bytes:
        return (
            self.nonce
            + struct.pack("!B3xHH", self.protocol, self.internal_port, self.external_port)
            + _address16(self.external_address)
        )

    @classmethod
    def decode(cls, data: bytes) -> MapBody:
        if len(data) < MAP_BODY:
            raise MalformedPacket(f"PCP MAP body of {len(data)} bytes: {MAP_BODY} expected")
        protocol, internal, external = struct.unpack_from("!B3xHH", data, NONCE_SIZE)
        return cls(bytes(data[:NONCE_SIZE]), protocol, internal, external, _address_text(data[20:36]))


@dataclass(frozen=True)
class PcpRequest:
    opcode: Opcode
    lifetime: int
    client_address: str
    body: MapBody | None = None
    options: tuple[PcpOption, ...] = ()

    def __post_init__(self) -> None:
        if (self.opcode is Opcode.MAP) != (self.body is not None):
            raise ValueError("a PCP MAP request has a MAP body; other requests here have none")
        if not 0 <= self.lifetime <= 0xFFFFFFFF:
            raise ValueError(f"PCP lifetime {self.lifetime}: expected 0 to 2**32-1")

    def encode(self) -> bytes:
        header = struct.pack("!BBHI", VERSION, self.opcode, 0, self.lifetime) + _address16(
            self.client_address
        )
        body = self.body.encode() if self.body is not None else b""
        return header + body + _encode_options(self.options)


def map_request(
    client_address: str,
    protocol: Transport,
    internal_port: int,
    external_port: int,
    lifetime: int,
    nonce: bytes,
) -> PcpRequest:
    """A MAP request; lifetime 0 deletes the mapping `nonce` created."""
    body = MapBody(nonce, protocol.number, internal_port, external_port)
    return PcpRequest(Opcode.MAP, lifetime, client_address, body)


def announce_request(client_address: str) -> PcpRequest:
    return PcpRequest(Opcode.ANNOUNCE, 0, client_address)


@dataclass(frozen=True)
class PcpResponse:
    opcode: Opcode | int
    result: ResultCode | int
    lifetime: int
    epoch: int
    body: MapBody | None = None
    options: tuple[PcpOption, ...] = field(default=())

    def encode(self) -> bytes:
        header = struct.pack("!BBxBII12x", VERSION, RESPONSE_BIT | self.opcode, self.result, self.lifetime,
                             self.epoch)  # fmt: skip
        body = self.body.encode() if self.body is not None else b""
        return header + body + _encode_options(self.options)


@dataclass(frozen=True)
class VersionReply:
    """The server answered in another version: it does not speak this one (0 is NAT-PMP)."""

    version: int


def _check_size(data: bytes, what: str) -> None:
    if len(data) < HEADER or len(data) > MAX_MESSAGE or len(data) % 4:
        raise MalformedPacket(f"PCP {what} of {len(data)} bytes: 24 to 1100 and a multiple of 4 expected")


def decode_response(data: bytes) -> PcpResponse | VersionReply:
    """A response from bytes; MalformedPacket when they are not one."""
    if len(data) >= 2 and data[0] != VERSION and data[1] & RESPONSE_BIT:
        return VersionReply(data[0])
    _check_size(data, "response")
    version, op, result, lifetime, epoch = struct.unpack_from("!BBxBII", data)
    if version != VERSION or not op & RESPONSE_BIT:
        raise MalformedPacket(f"not a PCP response (version {version}, opcode byte {op})")
    opcode_number = op & ~RESPONSE_BIT
    opcode: Opcode | int = (
        Opcode(opcode_number) if opcode_number in Opcode._value2member_map_ else opcode_number
    )
    code: ResultCode | int = ResultCode(result) if result in ResultCode._value2member_map_ else result
    rest = data[HEADER:]
    body = None
    if opcode == Opcode.MAP:
        if len(rest) < MAP_BODY:
            raise MalformedPacket(f"PCP MAP response without its {MAP_BODY}-byte body")
        body, rest = MapBody.decode(rest), rest[MAP_BODY:]
    elif opcode != Opcode.ANNOUNCE:
        return PcpResponse(opcode, code, lifetime, epoch)  # an opcode portkit never sends
    return PcpResponse(opcode, code, lifetime, epoch, body, _decode_options(rest))


def decode_request(data: bytes) -> PcpRequest:
    """A request from bytes (what a server reads); MalformedPacket when they are not one."""
    _check_size(data, "request")
    version, op, lifetime = struct.unpack_from("!BBxxI", data)
    if version != VERSION or op & RESPONSE_BIT or op not in (Opcode.ANNOUNCE, Opcode.MAP):
        raise MalformedPacket(f"not a PCP ANNOUNCE or MAP request (version {version}, opcode byte {op})")
    client = _address_text(data[8:24])
    rest = data[HEADER:]
    body = None
    if op == Opcode.MAP:
        body, rest = MapBody.decode(rest), rest[MAP_BODY:]
    return PcpRequest(Opcode(op), lifetime, client, body, _decode_options(rest))


def answers(request: PcpRequest, response: PcpResponse | VersionReply) -> bool:
    """Whether `response` answers `request`: same opcode and, for MAP, the same nonce, protocol and
    internal port (section 11.3: anything else is a reply to another request and is ignored)."""
    if isinstance(response, VersionReply):
        return True
    if response.opcode != request.opcode:
        return False
    if request.body is None:
        return True
    if response.body is None:
        return False
    mine, theirs = request.body, response.body
    return (mine.nonce, mine.protocol, mine.internal_port) == (
        theirs.nonce,
        theirs.protocol,
        theirs.internal_port,
    )


def retransmit_delays(uniform: Callable[[float, float], float]) -> Iterator[float]:
    """Waits between sends: IRT = 3 s, doubling to MRT = 1024 s, each times (1 + RAND) with RAND
    in [-0.1, 0.1] drawn from `uniform(a, b)` (random.uniform in use, fixed in tests). Endless:
    the caller stops at its timeout."""
    wait = (1 + uniform(-0.1, 0.1)) * IRT
    while True:
        yield wait
        wait = (1 + uniform(-0.1, 0.1)) * min(2 * wait, MRT)


def mapping_nonce(secret: bytes, client_address: str, protocol: Transport, internal_port: int) -> bytes:
    """A nonce this client derives again for the same mapping, so a later `unmap` or renewal from
    another process repeats it; unguessable to others as long as `secret` is private."""
    digest = hashlib.sha256(b"portkit-pcp-nonce\0" + secret + b"\0" + _address16(client_address)
                            + struct.pack("!BH", protocol.number, internal_port))  # fmt: skip
    return digest.digest()[:NONCE_SIZE]


def result_name(result: ResultCode | int) -> str:
    return result.name if isinstance(result, ResultCode) else f"result code {result}"
