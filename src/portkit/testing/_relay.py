"""A link with delay and loss, emulated in userspace between two TAP devices.

This kernel has no netem, so a lab link that needs delay or loss is two TAP devices, one in
each namespace, joined by this process: it reads a frame from one side, drops it with the
link's loss probability, otherwise holds it for half the round-trip time and writes it to the
other side. Run as `python -m portkit.testing._relay NS_A DEV_A NS_B DEV_B RTT_MS LOSS SEED [BUDGET]`.

With a BUDGET, each flow loses at most that many frames in all: a flow is the lab host's
port (TCP or UDP, either direction, or quoted in an ICMP error), and frames that belong to
no flow (ARP) are never lost. Loss is then real but recoverable by any tool that
retransmits at least BUDGET times, so two scanners must reach the same answers. SIGUSR1
gives every flow its whole budget again and restarts the random draws (the relay prints
`reset` once it has), so each of several scans on one lab meets the same lossy link.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

from portkit.testing import _netns

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536


def open_tap(netns: str, device: str) -> int:
    """Attach to an existing TAP device (made with `ip tuntap add`) inside `netns`."""
    _netns.enter_namespace(netns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def flow_of(frame: bytes, from_host: bool) -> int | None:
    """The lab host's port a frame belongs to (IPv4 TCP/UDP, or ICMP quoting one), else None."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = 14
    ihl = (frame[ip] & 0x0F) * 4
    proto = frame[ip + 9]
    l4 = ip + ihl
    if proto in (6, 17):
        offset = l4 if from_host else l4 + 2
        return proto << 16 | int.from_bytes(frame[offset : offset + 2], "big")
    if proto == 1 and len(frame) >= l4 + 8 + 20 + 4:
        inner = l4 + 8
        inner_proto = frame[inner + 9]
        ports = inner + (frame[inner] & 0x0F) * 4
        # An ICMP error from the host quotes a datagram sent to it: the host's port is the destination.
        return inner_proto << 16 | int.from_bytes(frame[ports + 2 : ports + 4], "big")
    return None


def relay(fd_a: int, fd_b: int, one_way_s: float, loss: float, seed: int, budget: int = 0) -> None:
    """Relay frames between two TAPs; fd_a is the lab host's side."""
    rng = random.Random(seed)
    lost: dict[int, int] = {}

    def reset(*_: object) -> None:
        lost.clear()
        rng.seed(seed)
        print("reset", flush=True)

    signal.signal(signal.SIGUSR1, reset)
    # Only now: SIGUSR1's default action would end the relay, so the lab may not send it before.
    print("ready", flush=True)
    # A constant delay keeps each direction FIFO, so a deque per direction is enough.
    queues: dict[int, collections.deque[tuple[float, bytes]]] = {
        fd_a: collections.deque(),
        fd_b: collections.deque(),
    }
    other = {fd_a: fd_b, fd_b: fd_a}
    poller = select.poll()
    for fd in (fd_a, fd_b):
        poller.register(fd, select.POLLIN)
    while True:
        now = time.monotonic()
        due = [q[0][0] for q in queues.values() if q]
        timeout = max(0.0, min(due) - now) * 1000 if due else 1000
        for fd, _ in poller.poll(timeout):
            for _ in range(256):
                try:
                    frame = os.read(fd, MAX_FRAME)
                except BlockingIOError:
                    break
                if loss and rng.random() < loss:
                    if not budget:
                        continue
                    flow = flow_of(frame, fd == fd_a)
                    if flow is not None and lost.get(flow, 0) < budget:
                        lost[flow] = lost.get(flow, 0) + 1
                        continue
                queues[other[fd]].append((time.monotonic() + one_way_s, frame))
        now = time.monotonic()
        for fd, queue in queues.items():
            while queue and queue[0][0] <= now:
                _, frame = queue.popleft()
                # A full device queue is one more lost frame.
                with contextlib.suppress(OSError):
                    os.write(fd, frame)


def main(argv: list[str]) -> None:
    ns_a, dev_a, ns_b, dev_b, rtt_ms, loss, seed, *rest = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fd_a = open_tap(ns_a, dev_a)
    fd_b = open_tap(ns_b, dev_b)
    relay(fd_a, fd_b, float(rtt_ms) / 2000, float(loss), int(seed), int(rest[0]) if rest else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
