"""NAT-PMP (RFC 6886) as pure code: requests and responses to and from bytes, and the timing.

Theory of operation: a client sends a request to the gateway's UDP port 5351 and waits; with
no answer it sends again after 250 ms, then doubles the wait each time, nine sends in all
(section 3.1). Two requests exist: the external address (opcode 0) and a mapping (opcode 1 for
UDP, 2 for TCP) for an internal port, with a suggested external port and a lifetime in seconds.
A lifetime of 0 deletes the mapping, and then the suggested external port must be 0 too
(section 3.4): the gateway finds the mapping by the client's address and internal port, so
deleting needs the internal port, not the external one. Every response has opcode
128 + the request's opcode, a 16-bit result code and the gateway's epoch (seconds since its
mappings were last reset).

Nothing here touches a socket; `portkit.nat._udp` sends what this encodes and feeds back what
arrives. Everything that arrives goes through `decode_response`, which raises `MalformedPacket`
for anything that is not a whole NAT-PMP response, and `answers` decides whether a decoded
response is the one a request waits for (a stray or late reply to another request is not).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from portkit.model import Transport

PORT = 5351
VERSION = 0
RESPONSE_BIT = 0x80
INITIAL_WAIT = 0.25  # seconds before the first retransmission (section 3.1)
MAX_SENDS = 9  # the ninth goes out 63.75 s after the first; the client gives up 64 s later


class MalformedPacket(ValueError):
    """Bytes that are not a well-formed NAT-PMP message."""


class Opcode(enum.IntEnum):
    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class ResultCode(enum.IntEnum):
    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2  # refused: the gateway supports NAT-PMP but has it turned off
    NETWORK_FAILURE = 3  # e.g. the gateway has no external address yet
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


_MAP_OPCODE = {Transport.UDP: Opcode.MAP_UDP, Transport.TCP: Opcode.MAP_TCP}
_OPCODE_PROTOCOL = {v: k for k, v in _MAP_OPCODE.items()}


@dataclass(frozen=True)
class ExternalAddressRequest:
    def encode(self) -> bytes:
        return struct.pack("!BB", VERSION, Opcode.EXTERNAL_ADDRESS)


@dataclass(frozen=True)
class MapRequest:
    """Map `internal_port` (of the sender) to `external_port` (a suggestion) for `lifetime` s."""

    protocol: Transport
    internal_port: int
    external_port: int
    lifetime: int

    def __post_init__(self) -> None:
        if self.protocol not in _MAP_OPCODE:
            raise ValueError(f"NAT-PMP maps tcp and udp, not {self.protocol}")
        if not (1 <= self.internal_port <= 0xFFFF and 0 <= self.external_port <= 0xFFFF):
            raise ValueError(f"NAT-PMP ports: internal 1-65535, external 0-65535, not "
                             f"{self.internal_port}, {self.external_port}")  # fmt: skip
        if not 0 <= self.lifetime <= 0xFFFFFFFF:
            raise ValueError(f"NAT-PMP lifetime {self.lifetime}: expected 0 to 2**32-1")

    @property
    def opcode(self) -> Opcode:
        return _MAP_OPCODE[self.protocol]

    def encode(self) -> bytes:
        return struct.pack(
            "!BBHHHI", VERSION, self.opcode, 0, self.internal_port, self.external_port, self.lifetime
        )


Request = ExternalAddressRequest | MapRequest


def delete_request(protocol: Transport, internal_port: int) -> MapRequest:
    """The request that deletes this client's mapping of `internal_port` (section 3.4)."""
    return MapRequest(protocol, internal_port, 0, 0)


@dataclass(frozen=True)
class ExternalAddressResponse:
    result: ResultCode
    epoch: int
    address: str

    def encode(self) -> bytes:
        packed = ipaddress.IPv4Address(self.address).packed
        return struct.pack("!BBHI4s", VERSION, RESPONSE_BIT | Opcode.EXTERNAL_ADDRESS, self.result,
                           self.epoch, packed)  # fmt: skip


@dataclass(frozen=True)
class MapResponse:
    protocol: Transport
    result: ResultCode
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int

    def encode(self) -> bytes:
        return struct.pack("!BBHIHHI", VERSION, RESPONSE_BIT | _MAP_OPCODE[self.protocol], self.result,
                           self.epoch, self.internal_port, self.external_port, self.lifetime)  # fmt: skip


@dataclass(frozen=True)
class ErrorResponse:
    """A response too short for its opcode's fields: what a gateway sends back with a result code
    for a version or opcode it does not support (the 8-byte common header only)."""

    opcode: int
    result: ResultCode | int
    epoch: int

    def encode(self) -> bytes:
        return struct.pack("!BBHI", VERSION, RESPONSE_BIT | self.opcode, self.result, self.epoch)


Response = ExternalAddressResponse | MapResponse | ErrorResponse


def _result(value: int) -> ResultCode | int:
    try:
        return ResultCode(value)
    except ValueError:
        return value  # a code RFC 6886 does not define: kept as a number, never success


def decode_response(data: bytes) -> Response:
    """A response from bytes; MalformedPacket when they are not one.

    A version-0 response with a result code other than success may carry only the 8-byte
    header, and then is an `ErrorResponse`.
    """
    if len(data) < 8:
        raise MalformedPacket(f"NAT-PMP response of {len(data)} bytes: at least 8 expected")
    version, op, result, epoch = struct.unpack_from("!BBHI", data)
    if not op & RESPONSE_BIT:
        raise MalformedPacket(f"NAT-PMP opcode {op} is a request, not a response")
    opcode = op & ~RESPONSE_BIT
    code = _result(result)
    if version != VERSION:
        # Only an error can be read from a version this code does not speak.
        return ErrorResponse(opcode, code, epoch)
    if opcode == Opcode.EXTERNAL_ADDRESS and len(data) >= 12 and code == ResultCode.SUCCESS:
        address = str(ipaddress.IPv4Address(data[8:12]))
        return ExternalAddressResponse(ResultCode.SUCCESS, epoch, address)
    if opcode in _OPCODE_PROTOCOL and len(data) >= 16:
        internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
        if code != ResultCode.SUCCESS:
            return ErrorResponse(opcode, code, epoch)
        protocol = _OPCODE_PROTOCOL[Opcode(opcode)]
        return MapResponse(protocol, ResultCode.SUCCESS, epoch, internal, external, lifetime)
    if opcode == Opcode.EXTERNAL_ADDRESS and len(data) >= 12:
        return ErrorResponse(opcode, code, epoch)
    if code == ResultCode.SUCCESS:
        raise MalformedPacket(f"NAT-PMP success for opcode {opcode} in {len(data)} bytes: too short")
    return ErrorResponse(opcode, code, epoch)


def decode_request(data: bytes) -> Request:
    """A request from bytes (what a gateway reads); MalformedPacket when they are not one."""
    if len(data) < 2:
        raise MalformedPacket(f"NAT-PMP request of {len(data)} bytes: at least 2 expected")
    version, op = data[0], data[1]
    if version != VERSION or op & RESPONSE_BIT:
        raise MalformedPacket(f"not a NAT-PMP version-0 request (version {version}, opcode {op})")
    if op == Opcode.EXTERNAL_ADDRESS:
        return ExternalAddressRequest()
    if op in _OPCODE_PROTOCOL and len(data) >= 12:
        _, internal, external, lifetime = struct.unpack_from("!HHHI", data, 2)
        try:
            return MapRequest(_OPCODE_PROTOCOL[Opcode(op)], internal, external, lifetime)
        except ValueError as exc:
            raise MalformedPacket(str(exc)) from None
    raise MalformedPacket(f"NAT-PMP request opcode {op} in {len(data)} bytes: not a known request")


def answers(request: Request, response: Response) -> bool:
    """Whether `response` is the answer to `request` (same opcode; same internal port for a map)."""
    if isinstance(request, ExternalAddressRequest):
        return isinstance(response, ExternalAddressResponse) or (
            isinstance(response, ErrorResponse) and response.opcode == Opcode.EXTERNAL_ADDRESS
        )
    if isinstance(response, MapResponse):
        return response.protocol is request.protocol and response.internal_port == request.internal_port
    return isinstance(response, ErrorResponse) and response.opcode == request.opcode


def retransmit_delays() -> Iterator[float]:
    """How long to wait after each send before sending again: 0.25 s doubling, nine sends."""
    for attempt in range(MAX_SENDS):
        yield INITIAL_WAIT * 2**attempt


def result_name(result: ResultCode | int) -> str:
    return result.name if isinstance(result, ResultCode) else f"result code {result}"
