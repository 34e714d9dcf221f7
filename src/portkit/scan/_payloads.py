"""UDP probe payloads: a request each service answers, since most stay silent on an empty datagram.

Ports without a payload get an empty datagram, as nmap sends them.
"""

from __future__ import annotations

# DNS: a server-status query with no questions (nmap's choice: every server answers it).
_DNS = bytes.fromhex("000010000000000000000000")
# NTP: a version-4 client request.
_NTP = bytes.fromhex(
    "e30004fa000100000001000000000000000000000000000000000000000000000000000000000000c54f234b71b152f3"
)
# SNMP v1 GetRequest for sysDescr.0 with community "public".
_SNMP = bytes.fromhex("302602010004067075626c6963a019020400000000020100020100300b300906052b060102010500")
# NetBIOS name service: node status request for "*".
_NBSTAT = bytes.fromhex(
    "80f00010000100000000000020434b4141414141414141414141414141414141414141414141414141414141410000210001"
)
# SSDP discovery.
_SSDP = (
    b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
    b'MAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n'
)
# ONC RPC portmapper NULL call.
_RPC = bytes.fromhex("72fe1d130000000000000002000186a00000000200000000000000000000000000000000")
# mDNS: PTR query for _services._dns-sd._udp.local.
_MDNS = bytes.fromhex(
    "000000000001000000000000095f7365727669636573075f646e732d7364045f756470056c6f63616c00000c0001"
)
# TFTP: read request for a file that need not exist (servers answer with an error packet).
_TFTP = b"\x00\x01r7tftp.txt\x00octet\x00"
# memcached (UDP frame header + "stats").
_MEMCACHED = bytes.fromhex("0001000000010000") + b"stats\r\n"
# IKE: ISAKMP main-mode header with no proposals; many daemons answer with a notify.
_IKE = bytes.fromhex("5b5e64c03e99b51100000000000000000110020000000000000000280000000c00000001")

PAYLOADS: dict[int, bytes] = {
    53: _DNS,
    69: _TFTP,
    111: _RPC,
    123: _NTP,
    137: _NBSTAT,
    161: _SNMP,
    500: _IKE,
    1900: _SSDP,
    5353: _MDNS,
    11211: _MEMCACHED,
}


def payload_for(port: int) -> bytes:
    return PAYLOADS.get(port, b"")
