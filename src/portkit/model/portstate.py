"""A port's state and the reason for it, in nmap's words (nmap's `portlist.h` and `reason.cc`).

The scanner reports them, the firewall predicts them (`ScannerView`), and the services and
socket views join on them. Both are `StrEnum`s: a member equals and serialises as nmap's
word (`PortState.OPEN_FILTERED == "open|filtered"`), so JSON and XML carry the strings nmap
prints and code that compares with those strings keeps working.
"""

from __future__ import annotations

import enum


class PortState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    FILTERED = "filtered"
    UNFILTERED = "unfiltered"
    OPEN_FILTERED = "open|filtered"
    CLOSED_FILTERED = "closed|filtered"


class Reason(enum.StrEnum):
    """nmap's reason strings (reason.cc)."""

    SYN_ACK = "syn-ack"
    RESET = "reset"
    CONN_REFUSED = "conn-refused"
    UDP_RESPONSE = "udp-response"
    NET_UNREACH = "net-unreach"
    HOST_UNREACH = "host-unreach"
    PROTO_UNREACH = "proto-unreach"
    PORT_UNREACH = "port-unreach"
    NET_PROHIBITED = "net-prohibited"
    HOST_PROHIBITED = "host-prohibited"
    ADMIN_PROHIBITED = "admin-prohibited"
    NO_RESPONSE = "no-response"
    TIME_EXCEEDED = "time-exceeded"
