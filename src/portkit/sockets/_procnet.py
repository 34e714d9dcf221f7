"""The fallback reader: /proc/net/{tcp,tcp6,udp,udp6,raw,raw6}, for kernels without sock_diag.

`parse_table` is pure (text in, rows out). It yields the same rows as the netlink client except
where /proc holds less: a listener's Send-Q (its backlog, which /proc does not show; 0 here,
as in `netstat`) and the bound interface (0).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterable

from portkit.model.protocols import Transport
from portkit.sockets._model import Socket, TcpState

_FILES = {
    (Transport.TCP, 4): "tcp",
    (Transport.TCP, 6): "tcp6",
    (Transport.UDP, 4): "udp",
    (Transport.UDP, 6): "udp6",
    (Transport.RAW, 4): "raw",
    (Transport.RAW, 6): "raw6",
}
_STATES = {state.value: state for state in TcpState}


def _address(hex_text: str) -> str:
    """/proc prints each 32-bit word of the address in host byte order."""
    raw = bytes.fromhex(hex_text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def parse_table(
    text: str,
    transport: Transport,
    family: int,
    *,
    netns: str | None = None,
    keep: Callable[[int, TcpState, int, int], bool] | None = None,
) -> list[Socket]:
    """Rows of one /proc/net table; `keep(family, state, sport, dport)` filters before building."""
    rows: list[Socket] = []
    addresses: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_hex, local_port_hex = fields[1].split(":")
        remote_hex, remote_port_hex = fields[2].split(":")
        state = _STATES[int(fields[3], 16)]
        sport, dport = int(local_port_hex, 16), int(remote_port_hex, 16)
        if keep is not None and not keep(family, state, sport, dport):
            continue
        tx_hex, rx_hex = fields[4].split(":")
        local = addresses.get(local_hex) or addresses.setdefault(local_hex, _address(local_hex))
        remote = addresses.get(remote_hex) or addresses.setdefault(remote_hex, _address(remote_hex))
        rows.append(
            Socket(
                transport,
                family,
                state,
                local,
                sport,
                remote,
                dport,
                recv_q=int(rx_hex, 16),
                send_q=int(tx_hex, 16),
                uid=int(fields[7]),
                inode=int(fields[9]),
                interface=0,
                netns=netns,
            )
        )
    return rows


def read_tables(
    transports: Iterable[Transport],
    families: Iterable[int],
    *,
    root: str = "/proc/thread-self/net",
    netns: str | None = None,
    keep: Callable[[int, TcpState, int, int], bool] | None = None,
) -> list[Socket]:
    """Rows from the /proc/net tables under `root` (a namespace's view: /proc/PID/net)."""
    rows: list[Socket] = []
    wanted_families = list(families)
    for transport in transports:
        for family in wanted_families:
            try:
                with open(f"{root}/{_FILES[(transport, family)]}") as table:
                    text = table.read()
            except FileNotFoundError:  # IPv6 disabled, or no raw6 table
                continue
            rows.extend(parse_table(text, transport, family, netns=netns, keep=keep))
    return rows
