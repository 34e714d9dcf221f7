"""A link with delay and loss, emulated in userspace between two TAP devices.

This kernel has no netem, so a lab link that needs delay or loss is two TAP devices, one in
each namespace, joined by this process: it reads a frame from one side, drops it with the
link's loss probability, otherwise holds it for half the round-trip time and writes it to the
other side. Run as `python -m portkit.lab._relay NS_A DEV_A NS_B DEV_B RTT_MS LOSS SEED`.
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

from portkit.lab import _netns

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_FRAME = 65536


def open_tap(netns: str, device: str) -> int:
    """Attach to an existing TAP device (made with `ip tuntap add`) inside `netns`."""
    _netns.enter(netns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def relay(fd_a: int, fd_b: int, one_way_s: float, loss: float, seed: int) -> None:
    rng = random.Random(seed)
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
    ns_a, dev_a, ns_b, dev_b, rtt_ms, loss, seed = argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fd_a = open_tap(ns_a, dev_a)
    fd_b = open_tap(ns_b, dev_b)
    print("ready", flush=True)
    relay(fd_a, fd_b, float(rtt_ms) / 2000, float(loss), int(seed))


if __name__ == "__main__":
    main(sys.argv[1:])
