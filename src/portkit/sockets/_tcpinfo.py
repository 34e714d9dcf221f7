"""`struct tcp_info` as a value: what `ss -i` shows about a TCP connection's internals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TcpInfo:
    """The useful part of the kernel's `struct tcp_info` (what `ss -i` prints). Times in microseconds."""

    rto: int
    ato: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    lost: int
    retrans: int
    rtt: int
    rttvar: int
    snd_ssthresh: int
    snd_cwnd: int
    total_retrans: int
    pacing_rate: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    segs_in: int
    min_rtt: int
    delivery_rate: int
    bytes_sent: int
    bytes_retrans: int

    def __str__(self) -> str:
        return (
            f"rtt {self.rtt / 1000:g}/{self.rttvar / 1000:g}ms cwnd {self.snd_cwnd} mss {self.snd_mss} "
            f"sent {self.bytes_sent}B acked {self.bytes_acked}B recv {self.bytes_received}B "
            f"retrans {self.retrans}/{self.total_retrans}"
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
