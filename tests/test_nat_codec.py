"""NAT-PMP and PCP as pure code: byte layouts from the RFCs, round trips, malformed packets, the
retransmission schedules; the UDP driver against a loopback responder; the default route; the
commands' bad input (refused before anything is sent, so no root and no lab)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import run_cli
from portkit.model import Transport
from portkit.nat import _pcp, _pmp, _upnp
from portkit.nat._mapping import parse_route_table
from portkit.nat._udp import NoAnswer, exchange

ports = st.integers(0, 0xFFFF)
lifetimes = st.integers(0, 0xFFFFFFFF)
transports = st.sampled_from([Transport.TCP, Transport.UDP])
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
nonces = st.binary(min_size=12, max_size=12)


# -- NAT-PMP (RFC 6886) ---------------------------------------------------------------------


def test_pmp_requests_are_the_rfc_layout() -> None:
    assert _pmp.ExternalAddressRequest().encode() == b"\x00\x00"
    # Section 3.3: version 0, opcode 2 (TCP), reserved, internal port, suggested external, lifetime.
    packet = _pmp.MapRequest(Transport.TCP, 8080, 18080, 7200).encode()
    assert packet == bytes.fromhex("0002 0000 1f90 46a0 00001c20".replace(" ", ""))
    assert _pmp.delete_request(Transport.UDP, 53).encode() == bytes.fromhex("000100000035000000000000")


def test_pmp_responses_decode_from_rfc_bytes() -> None:
    external = bytes.fromhex("0080 0000 0000012c cb007105".replace(" ", ""))
    assert _pmp.decode_response(external) == _pmp.ExternalAddressResponse(
        _pmp.ResultCode.SUCCESS, 300, "203.0.113.5"
    )
    mapped = bytes.fromhex("0082 0000 0000012c 1f90 46a0 00000e10".replace(" ", ""))
    assert _pmp.decode_response(mapped) == _pmp.MapResponse(
        Transport.TCP, _pmp.ResultCode.SUCCESS, 300, 8080, 18080, 3600
    )
    refused = bytes.fromhex("0082 0002 0000012c 1f90 0000 00000000".replace(" ", ""))
    assert _pmp.decode_response(refused) == _pmp.ErrorResponse(2, _pmp.ResultCode.NOT_AUTHORIZED, 300)


@given(transports, st.integers(1, 0xFFFF), ports, lifetimes)
def test_pmp_map_request_round_trip(protocol: Transport, internal: int, external: int, life: int) -> None:
    request = _pmp.MapRequest(protocol, internal, external, life)
    assert _pmp.decode_request(request.encode()) == request


@given(st.integers(0, 0xFFFFFFFF), ipv4)
def test_pmp_external_address_response_round_trip(epoch: int, address: str) -> None:
    response = _pmp.ExternalAddressResponse(_pmp.ResultCode.SUCCESS, epoch, address)
    decoded = _pmp.decode_response(response.encode())
    assert decoded == response
    assert _pmp.answers(_pmp.ExternalAddressRequest(), decoded)


@given(transports, st.integers(0, 0xFFFFFFFF), st.integers(1, 0xFFFF), ports, lifetimes)
def test_pmp_map_response_round_trip(
    protocol: Transport, epoch: int, internal: int, external: int, life: int
) -> None:
    response = _pmp.MapResponse(protocol, _pmp.ResultCode.SUCCESS, epoch, internal, external, life)
    decoded = _pmp.decode_response(response.encode())
    assert decoded == response
    assert _pmp.answers(_pmp.MapRequest(protocol, internal, 0, 60), decoded)
    other = Transport.UDP if protocol is Transport.TCP else Transport.TCP
    assert not _pmp.answers(_pmp.MapRequest(other, internal, 0, 60), decoded)
    assert not _pmp.answers(_pmp.ExternalAddressRequest(), decoded)


@given(st.sampled_from([0, 1, 2]), st.integers(1, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_pmp_error_response_round_trip(opcode: int, result: int, epoch: int) -> None:
    response = _pmp.ErrorResponse(opcode, _pmp._result(result), epoch)
    decoded = _pmp.decode_response(response.encode())
    assert decoded == response
    assert isinstance(decoded, _pmp.ErrorResponse)


@given(st.binary(max_size=40))
def test_pmp_decoding_any_bytes_returns_or_raises_malformed(data: bytes) -> None:
    try:
        response = _pmp.decode_response(data)
    except _pmp.MalformedPacket:
        return
    # Whatever decodes is a response, and a success always carries its fields.
    assert len(data) >= 8 and data[1] & 0x80
    if isinstance(response, _pmp.MapResponse | _pmp.ExternalAddressResponse):
        assert response.result == _pmp.ResultCode.SUCCESS


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "at least 8"),
        (b"\x00\x80\x00\x00\x00\x00\x00", "at least 8"),
        (b"\x00\x02\x00\x00\x00\x00\x00\x00", "request, not a response"),
        (bytes.fromhex("0082 0000 0000012c".replace(" ", "")), "too short"),  # success without fields
    ],
)
def test_pmp_malformed_responses_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(_pmp.MalformedPacket, match=why):
        _pmp.decode_response(data)


def test_pmp_retransmission_is_250ms_doubling_nine_times() -> None:
    delays = list(_pmp.retransmit_delays())
    assert delays == [0.25 * 2**i for i in range(9)]
    assert sum(delays[:-1]) == 63.75  # the ninth send; the client gives up 64 s later


# -- PCP (RFC 6887) -------------------------------------------------------------------------


def test_pcp_map_request_is_the_rfc_layout() -> None:
    nonce = bytes(range(12))
    packet = _pcp.map_request("192.168.1.10", Transport.TCP, 443, 8443, 7200, nonce).encode()
    assert len(packet) == 60
    version, opcode, reserved, lifetime = struct.unpack_from("!BBHI", packet)
    assert (version, opcode, reserved, lifetime) == (2, 1, 0, 7200)
    assert packet[8:24] == bytes(10) + b"\xff\xff" + bytes([192, 168, 1, 10])  # IPv4-mapped
    assert packet[24:36] == nonce
    assert packet[36] == 6 and packet[37:40] == bytes(3)
    assert struct.unpack_from("!HH", packet, 40) == (443, 8443)
    assert packet[44:60] == bytes(10) + b"\xff\xff" + bytes(4)  # no external address suggested


def test_pcp_announce_is_a_bare_header() -> None:
    packet = _pcp.announce_request("10.0.0.2").encode()
    assert len(packet) == 24 and packet[:8] == bytes([2, 0, 0, 0, 0, 0, 0, 0])


@given(nonces, st.sampled_from([6, 17]), st.integers(1, 0xFFFF), ports, lifetimes, ipv4 | ipv6, ipv4 | ipv6)
def test_pcp_map_request_round_trip(
    nonce: bytes, proto: int, internal: int, external: int, life: int, client: str, suggested: str
) -> None:
    body = _pcp.MapBody(nonce, proto, internal, external, suggested)
    request = _pcp.PcpRequest(_pcp.Opcode.MAP, life, client, body)
    assert _pcp.decode_request(request.encode()) == request


@given(
    nonces,
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    ports,
    lifetimes,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    ipv4 | ipv6,
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=20)), max_size=3),
)
def test_pcp_map_response_round_trip(
    nonce: bytes,
    proto: int,
    internal: int,
    external: int,
    life: int,
    epoch: int,
    result: int,
    address: str,
    options: list[tuple[int, bytes]],
) -> None:
    body = _pcp.MapBody(nonce, proto, internal, external, address)
    code = _pcp.ResultCode(result) if result in _pcp.ResultCode._value2member_map_ else result
    response = _pcp.PcpResponse(
        _pcp.Opcode.MAP, code, life, epoch, body, tuple(_pcp.PcpOption(c, d) for c, d in options)
    )
    decoded = _pcp.decode_response(response.encode())
    assert decoded == response
    request = _pcp.PcpRequest(_pcp.Opcode.MAP, 60, "10.0.0.2", _pcp.MapBody(nonce, proto, internal, 0))
    assert _pcp.answers(request, decoded)
    stranger = _pcp.MapBody(bytes(a ^ 1 for a in nonce), proto, internal, 0)
    assert not _pcp.answers(_pcp.PcpRequest(_pcp.Opcode.MAP, 60, "10.0.0.2", stranger), decoded)


def test_pcp_natpmp_server_reply_is_a_version_reply() -> None:
    # A NAT-PMP-only gateway answers version 2 with its version 0 "unsupported version".
    assert _pcp.decode_response(bytes.fromhex("0081000100000010")) == _pcp.VersionReply(0)


@given(st.binary(max_size=120))
def test_pcp_decoding_any_bytes_returns_or_raises_malformed(data: bytes) -> None:
    try:
        decoded = _pcp.decode_response(data)
    except _pcp.MalformedPacket:
        return
    if isinstance(decoded, _pcp.PcpResponse):
        assert 24 <= len(data) <= 1100 and len(data) % 4 == 0


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bytes(4), "24 to 1100"),
        (bytes([2, 0x81]) + bytes(22), "without its 36-byte body"),
        (bytes([2, 0x81]) + bytes(25), "multiple of 4"),
        (bytes([2, 0x81]) + bytes(58) + bytes([1, 0, 0, 9]), "runs past"),  # option longer than the rest
        (bytes([2, 0x01]) + bytes(58), "not a PCP response"),
        (bytes([2, 0x81]) + bytes(1102), "24 to 1100"),
    ],
)
def test_pcp_malformed_responses_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(_pcp.MalformedPacket, match=why):
        _pcp.decode_response(data)


def test_pcp_retransmission_follows_rfc_8_1_1() -> None:
    no_jitter = _pcp.retransmit_delays(lambda a, b: 0.0)
    waits = [next(no_jitter) for _ in range(12)]
    assert waits[:5] == [3.0, 6.0, 12.0, 24.0, 48.0]
    assert waits[-1] == 1024.0 and max(waits) == 1024.0
    high = _pcp.retransmit_delays(lambda a, b: b)
    assert next(high) == pytest.approx(3.3)
    assert next(high) == pytest.approx(1.1 * 6.6)


def test_pcp_nonce_is_stable_per_mapping_and_keyed() -> None:
    one = _pcp.mapping_nonce(b"k", "192.168.1.10", Transport.TCP, 443)
    assert one == _pcp.mapping_nonce(b"k", "192.168.1.10", Transport.TCP, 443)
    assert len(one) == 12
    assert one != _pcp.mapping_nonce(b"k", "192.168.1.10", Transport.UDP, 443)
    assert one != _pcp.mapping_nonce(b"other", "192.168.1.10", Transport.TCP, 443)


# -- SSDP -----------------------------------------------------------------------------------


def test_ssdp_search_and_response() -> None:
    request = _upnp.msearch("192.168.1.1").decode()
    assert request.startswith("M-SEARCH * HTTP/1.1\r\n") and request.endswith("\r\n\r\n")
    assert "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1" in request
    reply = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nLocation: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"
    assert _upnp.parse_ssdp_response(reply) == {
        "cache-control": "max-age=120",
        "location": "http://192.168.1.1:5000/rootDesc.xml",
    }
    assert _upnp.parse_ssdp_response(b"NOTIFY * HTTP/1.1\r\nLOCATION: x\r\n\r\n") is None
    assert _upnp.parse_ssdp_response(b"HTTP/1.1 200 OK\r\n\r\n") is None
    assert _upnp.parse_ssdp_response(b"\xff\xfe") is None


@given(st.binary(max_size=200))
def test_ssdp_parser_takes_any_bytes(data: bytes) -> None:
    headers = _upnp.parse_ssdp_response(data)
    assert headers is None or "location" in headers


# -- the default route ----------------------------------------------------------------------

ROUTE_TABLE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
wlan0\t00000000\t0100000A\t0003\t0\t0\t50\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
tun0\t00000000\t00000000\t0001\t0\t0\t10\t00000000\t0\t0\t0
bad line
"""


def test_default_route_is_read_from_proc_net_route() -> None:
    # The lowest metric wins; a default route without a gateway (a tunnel) is not one to ask.
    assert parse_route_table(ROUTE_TABLE) == [("wlan0", "10.0.0.1", 50), ("eth0", "192.168.1.1", 100)]
    assert parse_route_table(ROUTE_TABLE.splitlines()[0]) == []


# -- the UDP driver, against a responder on loopback ----------------------------------------


class Responder:
    """A UDP socket on 127.0.0.1 that ignores the first `drop` datagrams and answers the rest
    with what `reply` makes of them."""

    def __init__(self, drop: int, replies: list[bytes]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[float] = []
        self.drop = drop
        self.replies = replies
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                _, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.received.append(time.monotonic())
            if len(self.received) > self.drop:
                for reply in self.replies:
                    self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def responder_factory() -> Iterator[list[Responder]]:
    made: list[Responder] = []
    yield made
    for r in made:
        r.close()


def _accept_pmp_external(datagram: bytes) -> _pmp.Response | None:
    response = _pmp.decode_response(datagram)
    return response if _pmp.answers(_pmp.ExternalAddressRequest(), response) else None


def test_driver_retransmits_until_answered(responder_factory: list[Responder]) -> None:
    good = _pmp.ExternalAddressResponse(_pmp.ResultCode.SUCCESS, 5, "11.250.42.2").encode()
    responder = Responder(drop=2, replies=[good])
    responder_factory.append(responder)
    start = time.monotonic()
    answer = exchange("127.0.0.1", responder.port, b"\0\0", _accept_pmp_external, _pmp.retransmit_delays(), 5)
    assert isinstance(answer, _pmp.ExternalAddressResponse) and answer.address == "11.250.42.2"
    assert len(responder.received) == 3
    gaps = [b - a for a, b in zip(responder.received, responder.received[1:], strict=False)]
    assert gaps[0] == pytest.approx(0.25, abs=0.1) and gaps[1] == pytest.approx(0.5, abs=0.1)
    assert time.monotonic() - start < 1.5


def test_driver_skips_malformed_and_unrelated_replies(responder_factory: list[Responder]) -> None:
    good = _pmp.ExternalAddressResponse(_pmp.ResultCode.SUCCESS, 5, "11.250.42.2").encode()
    unrelated = _pmp.MapResponse(Transport.TCP, _pmp.ResultCode.SUCCESS, 5, 1, 2, 3).encode()
    responder = Responder(drop=0, replies=[b"\x00", unrelated, good])
    responder_factory.append(responder)
    answer = exchange("127.0.0.1", responder.port, b"\0\0", _accept_pmp_external, _pmp.retransmit_delays(), 2)
    assert isinstance(answer, _pmp.ExternalAddressResponse)


def test_driver_gives_up_at_its_timeout(responder_factory: list[Responder]) -> None:
    responder = Responder(drop=1000, replies=[])
    responder_factory.append(responder)
    start = time.monotonic()
    answer = exchange(
        "127.0.0.1", responder.port, b"\0\0", _accept_pmp_external, _pmp.retransmit_delays(), 1.0
    )
    elapsed = time.monotonic() - start
    assert isinstance(answer, NoAnswer) and "no answer in 1s" in answer.reason
    assert 0.95 <= elapsed < 1.5
    assert len(responder.received) == 3  # at 0, 0.25 and 0.75 s; the next would be at 1.75 s


def test_driver_reports_a_closed_port_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    answer = exchange("127.0.0.1", port, b"\0\0", _accept_pmp_external, _pmp.retransmit_delays(), 5)
    assert isinstance(answer, NoAnswer) and answer.reason == f"port {port} unreachable"
    assert time.monotonic() - start < 1


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["nat", "map", "0"], "'0'"),
        (["nat", "map", "70000"], "'70000'"),
        (["nat", "map", "8443", "0"], "'0'"),
        (["nat", "map", "http"], "'http'"),
        (["nat", "map", "8443", "--lease", "0"], "'0'"),
        (["nat", "map", "8443", "--gateway", "router.lan"], "'router.lan'"),
        (["nat", "unmap", "65536"], "'65536'"),
        (["nat", "map", "8443", "--via", "smoke"], "'smoke'"),
        # miniupnpc sends it unescaped, and a mapping with over 63 characters is not listed
        (["nat", "map", "8443", "--description", "a<b"], "'a<b'"),
        (["nat", "map", "8443", "--description", "x" * 64], "(64 chars)"),
        (["nat", "map", "8443", "--description", "tab\there"], "'tab\\there'"),
        (["nat", "map", "8443", "--description", "\u00e9" * 32], "bytes (UTF-8)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], quoted: str) -> None:
    result = run_cli(*args)
    assert result.status == 2, result
    assert result.stdout == "" and result.stderr.count("\n") == 1 and quoted in result.stderr


def test_a_pcp_only_server_reply_to_natpmp_reads_as_unsupported_version() -> None:
    # RFC 6887 section 9: a PCP server answers a version-0 request with a version-2 header,
    # result UNSUPP_VERSION; read as NAT-PMP that is the same result code, and the client moves on.
    pcp_reply = _pcp.PcpResponse(_pcp.Opcode.ANNOUNCE, _pcp.ResultCode.UNSUPP_VERSION, 0, 77).encode()
    decoded = _pmp.decode_response(pcp_reply)
    assert isinstance(decoded, _pmp.ErrorResponse)
    assert decoded.result == _pmp.ResultCode.UNSUPPORTED_VERSION
    assert _pmp.answers(_pmp.ExternalAddressRequest(), decoded)
