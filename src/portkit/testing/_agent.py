"""The process that plays a lab host's services: TCP listeners and UDP responders.

Runs inside the host's namespace as `python -m portkit.testing._agent JSON`, where JSON lists
`[port, protocol, banner_hex, reply]`. TCP: accept, send the banner, close. UDP: echo each
datagram back, or stay silent. Prints `ready` once every socket is bound.
"""

from __future__ import annotations

import json
import selectors
import signal
import socket
import sys


def _bind(port: int, protocol: str) -> socket.socket:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    sock.setblocking(False)
    return sock


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    socks: dict[int, socket.socket] = {}
    for port, protocol, banner_hex, reply in json.loads(argv[0]):
        sock = _bind(port, protocol)
        socks[sock.fileno()] = sock
        selector.register(sock, selectors.EVENT_READ, (protocol, bytes.fromhex(banner_hex), reply))
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            protocol, banner, reply = key.data
            sock = socks[key.fd]
            try:
                if protocol == "tcp":
                    conn, _ = sock.accept()
                    if banner:
                        conn.setblocking(True)
                        conn.settimeout(1)
                        conn.sendall(banner)
                    conn.close()
                else:
                    data, peer = sock.recvfrom(65535)
                    if reply == "echo":
                        sock.sendto(data, peer)
            except OSError:
                continue


if __name__ == "__main__":
    main(sys.argv[1:])
