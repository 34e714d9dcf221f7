"""The conntrack table of this host or a named namespace, as `conntrack -L` shows it.

Read from /proc/net/nf_conntrack when the kernel has it (many do not build it any more),
else over ctnetlink (NETLINK_NETFILTER, IPCTNL_MSG_CT_GET dump; layouts from
linux/netfilter/nfnetlink.h and nfnetlink_conntrack.h). `decode_dump` is pure: netlink bytes
in, `Connection` values out. Reading needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS = 1, 2, 3
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
IPS_SRC_NAT, IPS_DST_NAT = 0x10, 0x20
_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")


@dataclass(frozen=True)
class Tuple:
    protocol: int
    src: str
    dst: str
    sport: int
    dport: int

    def __str__(self) -> str:
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"


@dataclass(frozen=True)
class Connection:
    """One conntrack entry: the tuple as it arrived and the one replies carry (after NAT)."""

    original: Tuple
    reply: Tuple
    status: int = 0

    @property
    def dnat(self) -> bool:
        """Whether the destination was rewritten (a DNAT/REDIRECT binding)."""
        return bool(self.status & IPS_DST_NAT) or self.reply.src != self.original.dst

    def __str__(self) -> str:
        return f"{self.original} (reply {self.reply})"

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.original.protocol,
            "original": str(self.original),
            "reply": str(self.reply),
            "dnat": self.dnat,
        }


def _attrs(blob: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(blob):
        length, kind = _NLA.unpack_from(blob, off)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = blob[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


def _tuple(blob: bytes) -> Tuple:
    top = _attrs(blob)
    ip, proto = _attrs(top.get(CTA_TUPLE_IP, b"")), _attrs(top.get(CTA_TUPLE_PROTO, b""))
    if CTA_IP_V4_SRC in ip:
        src, dst = (str(ipaddress.IPv4Address(ip[k])) for k in (CTA_IP_V4_SRC, CTA_IP_V4_DST))
    else:
        src, dst = (str(ipaddress.IPv6Address(ip.get(k, bytes(16)))) for k in (CTA_IP_V6_SRC, CTA_IP_V6_DST))

    def port(key: int) -> int:
        raw = proto.get(key)
        return struct.unpack("!H", raw[:2])[0] if raw and len(raw) >= 2 else 0

    number = proto.get(CTA_PROTO_NUM, b"\0")[0]
    return Tuple(number, src, dst, port(CTA_PROTO_SRC_PORT), port(CTA_PROTO_DST_PORT))


def decode_dump(buf: bytes) -> tuple[list[Connection], bool]:
    """The entries in one recv() buffer of a ctnetlink dump, and whether the dump ended."""
    found: list[Connection] = []
    off = 0
    while off + _HDR.size <= len(buf):
        length, kind, _flags, _seq, _pid = _HDR.unpack_from(buf, off)
        if length < _HDR.size:
            break
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", buf, off + _HDR.size)[0]
            if errno:
                raise OSError(errno, os.strerror(errno))
            return found, True
        attrs = _attrs(buf[off + _HDR.size + 4 : off + length])  # after struct nfgenmsg
        if CTA_TUPLE_ORIG in attrs and CTA_TUPLE_REPLY in attrs:
            status = struct.unpack("!I", attrs[CTA_STATUS][:4])[0] if CTA_STATUS in attrs else 0
            found.append(Connection(_tuple(attrs[CTA_TUPLE_ORIG]), _tuple(attrs[CTA_TUPLE_REPLY]), status))
        off += (length + 3) & ~3
    return found, False


def _dump_netlink() -> list[Connection]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.settimeout(5)
        found: list[Connection] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
            body = struct.pack("=BBH", family, 0, 0)
            sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
            done = False
            while not done:
                entries, done = decode_dump(sock.recv(1 << 16))
                found.extend(entries)
        return found
    finally:
        sock.close()


_PROC_LINE = re.compile(
    r"^\S+\s+\d+\s+\S+\s+(\d+)\s.*?src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?.*?"
    r"src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?"
)


def parse_proc(text: str) -> list[Connection]:
    """/proc/net/nf_conntrack lines as entries."""
    found = []
    for line in text.splitlines():
        m = _PROC_LINE.match(line)
        if not m:
            continue
        proto = int(m.group(1))
        orig = Tuple(proto, m.group(2), m.group(3), int(m.group(4) or 0), int(m.group(5) or 0))
        reply = Tuple(proto, m.group(6), m.group(7), int(m.group(8) or 0), int(m.group(9) or 0))
        found.append(Connection(orig, reply, IPS_DST_NAT if reply.src != orig.dst else 0))
    return found


def read_conntrack() -> list[Connection]:
    """Every conntrack entry of the calling thread's network namespace."""
    if os.geteuid() != 0:
        raise PermissionNeeded("reading the conntrack table needs root (CAP_NET_ADMIN)")
    try:
        # /proc/net is the thread group leader's namespace; thread-self follows setns(2).
        with open("/proc/thread-self/net/nf_conntrack") as proc:
            return parse_proc(proc.read())
    except OSError:
        pass
    try:
        return _dump_netlink()
    except OSError as exc:
        raise PortkitError(f"cannot read the conntrack table over netlink: {exc.strerror or exc}") from None
