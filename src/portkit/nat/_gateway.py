"""Asking a gateway for a mapping, removing one, and surveying what the gateway answers.

Each operation tries the protocols it is given in order and records an `Attempt` for each, so
a failure names everything tried. A protocol that does not answer (timeout, ICMP port
unreachable, no IGD found) passes the turn to the next one; a gateway that answers and refuses
ends the request there, since asking another way would not change its policy.

NAT-PMP and PCP name a mapping by the client's address and internal port (PCP also by the
nonce), UPnP by the external port; so removing takes both ports (the internal one defaults
to the external one, as `map` does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from portkit.model import Transport
from portkit.nat import _pcp, _pmp
from portkit.nat._mapping import (
    Attempt,
    Gateway,
    GatewayRefused,
    Mapping,
    NoGatewayAnswer,
    Via,
    source_address_towards,
    tried,
)
from portkit.nat._udp import NoAnswer, pcp_ask, pmp_ask
from portkit.nat._upnp import IgdClient, UpnpFault, UpnpUnavailable

DEFAULT_DESCRIPTION = "portkit"


@dataclass(frozen=True)
class MapRequest:
    """What `nat map` asks for. `secret` keys the PCP nonce (see `_pcp.mapping_nonce`)."""

    protocol: Transport
    external_port: int
    internal_port: int
    lifetime: int
    secret: bytes = b""
    description: str = DEFAULT_DESCRIPTION
    timeout: float = 3.0


class _Refused(Exception):
    pass


def _client_address(gateway: str) -> str:
    return source_address_towards(gateway)


def _map_pcp(gateway: str, req: MapRequest, lifetime: int) -> Mapping | str:
    client = _client_address(gateway)
    nonce = _pcp.mapping_nonce(req.secret, client, req.protocol, req.internal_port)
    request = _pcp.map_request(client, req.protocol, req.internal_port, req.external_port, lifetime, nonce)
    answer = pcp_ask(gateway, request, req.timeout)
    if isinstance(answer, NoAnswer):
        return answer.reason
    if isinstance(answer, _pcp.VersionReply):
        return f"speaks version {answer.version}, not PCP" + (" (NAT-PMP)" if answer.version == 0 else "")
    if answer.result == _pcp.ResultCode.UNSUPP_VERSION:
        return "does not speak PCP version 2 (UNSUPP_VERSION)"
    if answer.result != _pcp.ResultCode.SUCCESS or answer.body is None:
        raise _Refused(f"refused: {_pcp.result_name(answer.result)}")
    body = answer.body
    return Mapping(Via.PCP, req.protocol, body.external_port, client, req.internal_port, answer.lifetime,
                   gateway, body.external_address, req.description)  # fmt: skip


def _pmp_external(gateway: str, timeout: float) -> str | NoAnswer:
    answer = pmp_ask(gateway, _pmp.ExternalAddressRequest(), timeout)
    if isinstance(answer, NoAnswer):
        return answer
    if isinstance(answer, _pmp.ExternalAddressResponse):
        return answer.address
    raise _Refused(f"refused: {_pmp.result_name(answer.result)}")


def _map_pmp(gateway: str, req: MapRequest, lifetime: int) -> Mapping | str:
    if lifetime:
        request = _pmp.MapRequest(req.protocol, req.internal_port, req.external_port, lifetime)
    else:
        request = _pmp.delete_request(req.protocol, req.internal_port)
    answer = pmp_ask(gateway, request, req.timeout)
    if isinstance(answer, NoAnswer):
        return answer.reason
    if not isinstance(answer, _pmp.MapResponse):
        if answer.result == _pmp.ResultCode.UNSUPPORTED_VERSION:  # a PCP-only server answers so
            return "does not speak NAT-PMP (UNSUPPORTED_VERSION)"
        raise _Refused(f"refused: {_pmp.result_name(answer.result)}")
    external: str | None = None
    if lifetime:
        found = _pmp_external(gateway, req.timeout)
        external = found if isinstance(found, str) else None
    return Mapping(Via.NATPMP, req.protocol, answer.external_port, _client_address(gateway),
                   answer.internal_port, answer.lifetime, gateway, external, req.description)  # fmt: skip


def _map_upnp(gateway: str, req: MapRequest, lifetime: int) -> Mapping | str:
    try:
        igd = IgdClient(gateway, req.timeout)
    except UpnpUnavailable as exc:
        return str(exc)
    try:
        igd.add(
            req.protocol, req.external_port, igd.lan_address, req.internal_port, lifetime, req.description
        )
        entry = igd.lookup(req.protocol, req.external_port)
        external = igd.external_address()
    except UpnpFault as exc:
        raise _Refused(f"refused: {exc}") from None
    granted = entry.lease if entry is not None else lifetime
    return Mapping(Via.UPNP, req.protocol, req.external_port, igd.lan_address, req.internal_port, granted,
                   igd.control_host, external, req.description)  # fmt: skip


def _refusal(via: Via, gateway: str, why: str, attempts: list[Attempt]) -> GatewayRefused:
    """The refusal, and what was tried before it when something was."""
    before = f" (before: {tried(attempts[:-1])})" if len(attempts) > 1 else ""
    return GatewayRefused(f"{via.title} at {gateway} {why}{before}")


_MAPPERS = {Via.PCP: _map_pcp, Via.NATPMP: _map_pmp, Via.UPNP: _map_upnp}


def map_port(gateway: Gateway, req: MapRequest, order: Sequence[Via]) -> tuple[Mapping, list[Attempt]]:
    """Ask for the mapping with the first protocol in `order` that answers.

    NoGatewayAnswer when none answers, GatewayRefused when one answers with a refusal.
    """
    attempts: list[Attempt] = []
    for via in order:
        try:
            outcome = _MAPPERS[via](gateway.address, req, req.lifetime)
        except _Refused as exc:
            attempts.append(Attempt(via, gateway.address, str(exc)))
            raise _refusal(via, gateway.address, str(exc), attempts) from None
        if isinstance(outcome, Mapping):
            attempts.append(Attempt(via, gateway.address, "ok"))
            return dataclasses.replace(outcome, requested_port=req.external_port), attempts
        attempts.append(Attempt(via, gateway.address, outcome))
    raise NoGatewayAnswer(f"no gateway answered {tried(attempts)}")


class _NotThere(Exception):
    pass


def _unmap_upnp(gateway: str, req: MapRequest, lifetime: int) -> Mapping | str:
    """DeletePortMapping of the external port, once GetSpecificPortMappingEntry shows that it
    maps to this host (UPnP names a mapping by its external port alone)."""
    try:
        igd = IgdClient(gateway, req.timeout)
    except UpnpUnavailable as exc:
        return str(exc)
    entry = igd.lookup(req.protocol, req.external_port)
    if entry is None:
        raise _NotThere(f"no mapping of {req.external_port}/{req.protocol}")
    if entry.internal_address != igd.lan_address:
        raise _Refused(f"refused: {req.external_port}/{req.protocol} maps to {entry.internal_address}, "
                       f"not this host ({igd.lan_address})")  # fmt: skip
    try:
        igd.delete(req.protocol, req.external_port)
    except UpnpFault as exc:
        raise _Refused(f"refused: {exc}") from None
    return Mapping(Via.UPNP, req.protocol, req.external_port, entry.internal_address, entry.internal_port, 0,
                   igd.control_host)  # fmt: skip


_REMOVERS = {Via.PCP: _map_pcp, Via.NATPMP: _map_pmp, Via.UPNP: _unmap_upnp}


def unmap_port(gateway: Gateway, req: MapRequest, order: Sequence[Via]) -> tuple[Via, list[Attempt]]:
    """Remove the mapping with the first protocol in `order` that removes it.

    UPnP names a mapping by its external port and can show it first, so it goes first in
    `UNMAP_AUTO_ORDER`; PCP and NAT-PMP remove the mapping of the internal port (each holds one
    per internal port and transport) and answer success whether or not one existed.
    NoGatewayAnswer when none answers; GatewayRefused when one refused or none had it.
    """
    attempts: list[Attempt] = []
    for via in order:
        try:
            outcome = _REMOVERS[via](gateway.address, req, 0)
        except _NotThere as exc:
            attempts.append(Attempt(via, gateway.address, str(exc)))
            continue
        except _Refused as exc:
            attempts.append(Attempt(via, gateway.address, str(exc)))
            raise _refusal(via, gateway.address, str(exc), attempts) from None
        if isinstance(outcome, Mapping):
            attempts.append(Attempt(via, gateway.address, "ok"))
            return via, attempts
        attempts.append(Attempt(via, gateway.address, outcome))
    if any(a.outcome.startswith("no mapping of ") for a in attempts):
        raise GatewayRefused(f"the gateway has no such mapping ({tried(attempts)})")
    raise NoGatewayAnswer(f"no gateway answered {tried(attempts)}")


@dataclass
class ProtocolSurvey:
    """What one protocol told about the gateway."""

    via: Via
    answers: bool
    detail: str  # the failure, or how it answered ("epoch 1234s", the IGD's URL)
    external_address: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via.value, "answers": self.answers, "detail": self.detail,
                "external_address": self.external_address}  # fmt: skip


@dataclass
class RouterSurvey:
    """`nat router`: the gateway, each protocol's answer, the external address, UPnP's mappings."""

    gateway: Gateway
    client_address: str
    protocols: list[ProtocolSurvey] = field(default_factory=list)
    mappings: list[Mapping] = field(default_factory=list)
    mappings_listed: bool = False  # only UPnP can list a gateway's mappings

    @property
    def external_address(self) -> str | None:
        return next((p.external_address for p in self.protocols if p.external_address), None)

    @property
    def answering(self) -> list[Via]:
        return [p.via for p in self.protocols if p.answers]

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway.to_json(),
            "client_address": self.client_address,
            "external_address": self.external_address,
            "protocols": [p.to_json() for p in self.protocols],
            "mappings_listed": self.mappings_listed,
            "mappings": [m.to_json() for m in self.mappings],
        }


def survey(gateway: Gateway, order: Sequence[Via], timeout: float) -> RouterSurvey:
    """Ask the gateway, with each protocol of `order`, whether it answers and what its external
    address is; list its mappings over UPnP. Nothing is mapped or changed."""
    address = gateway.address
    result = RouterSurvey(gateway, _client_address(address))
    for via in order:
        if via is Via.PCP:
            answer = pcp_ask(address, _pcp.announce_request(result.client_address), timeout)
            if isinstance(answer, NoAnswer):
                result.protocols.append(ProtocolSurvey(via, False, answer.reason))
            elif isinstance(answer, _pcp.VersionReply):
                result.protocols.append(ProtocolSurvey(via, False, f"answers in version {answer.version}"))
            elif answer.result != _pcp.ResultCode.SUCCESS:
                result.protocols.append(
                    ProtocolSurvey(via, True, f"ANNOUNCE: {_pcp.result_name(answer.result)}")
                )
            else:
                result.protocols.append(ProtocolSurvey(via, True, f"epoch {answer.epoch}s"))
        elif via is Via.NATPMP:
            pmp = pmp_ask(address, _pmp.ExternalAddressRequest(), timeout)
            if isinstance(pmp, NoAnswer):
                result.protocols.append(ProtocolSurvey(via, False, pmp.reason))
            elif isinstance(pmp, _pmp.ExternalAddressResponse):
                result.protocols.append(ProtocolSurvey(via, True, f"epoch {pmp.epoch}s", pmp.address))
            else:
                result.protocols.append(ProtocolSurvey(via, True, _pmp.result_name(pmp.result)))
        else:
            _survey_upnp(result, address, timeout)
    return result


def _survey_upnp(result: RouterSurvey, address: str, timeout: float) -> None:
    try:
        igd = IgdClient(address, timeout)
    except UpnpUnavailable as exc:
        result.protocols.append(ProtocolSurvey(Via.UPNP, False, str(exc)))
        return
    found = f"{igd.location} ({igd.found_by})" if igd.location else igd.found_by
    try:
        external: str | None = igd.external_address()
    except UpnpFault as exc:
        external = None
        detail = f"{found}; GetExternalIPAddress: {exc}"
    else:
        detail = found
    result.protocols.append(ProtocolSurvey(Via.UPNP, True, detail, external or None))
    now = time.time()
    result.mappings = [
        Mapping(
            Via.UPNP,
            e.protocol,
            e.external_port,
            e.internal_address,
            e.internal_port,
            e.lease,
            igd.control_host,
            external,
            e.description,
            now,
        )
        for e in igd.entries()
    ]
    result.mappings_listed = True
