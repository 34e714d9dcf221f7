"""The watcher's I/O: read listeners now and then, read packets as they come, hand both to the
pure cores (`_listeners`, `_scans`), and pass their events on.

Costs, by design: listeners are read with a kernel-side filter (a TCP LISTEN dump walks only the
listening hash, not the 20,000 established sockets beside it), and owners (a walk of /proc) only
when the listeners changed. Packets reach Python only when the BPF program in `_packets` passes
them: connection attempts, their answers and unreachable errors, never a connection's data.
Without root there are no packet sockets: listener events still work, from the namespaces this
user may read; scans and accept counts need CAP_NET_RAW.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from portkit.errors import PermissionNeeded
from portkit.watch._listeners import AcceptEvent, ListenerRow, ListenerTracker, Owner
from portkit.watch._packets import (
    ETH_P_ALL,
    FILTER,
    FILTER_LENGTH,
    PACKET_OUTGOING,
    SO_ATTACH_FILTER,
    parse_packet,
)
from portkit.watch._scans import ACK, SYN, TCP, Detector, ScanEvent, Thresholds

Emit = Callable[[dict[str, Any]], None]
_BURST = 2000  # packets read from one socket before looking at the others and the clock
_RCVBUF = 4 << 20


@dataclass
class WatchOptions:
    interval: float = 0.5  # seconds between readings of the listeners (an event is this late at most)
    scans: bool = False
    accepts: bool = True  # count connections accepted per listener (needs packet sockets)
    accept_interval: float = 10.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    namespaces: Sequence[str] = ()  # only these (names); () every namespace
    block: float | None = None  # seconds to drop a detected scanner for (a portkit-owned nft table)
    duration: float | None = None  # stop after this long
    max_events: int | None = None  # stop after this many events
    ignore: Sequence[str] = ()  # sources never judged as scanners


def _owner(process: Any) -> Owner:
    exe = process.cmdline[0] if process.cmdline else process.name
    return Owner(
        process.pid,
        process.name,
        os.path.basename(exe),
        process.user,
        process.unit,
        process.container_name or process.container[:12],
    )


def read_listeners(namespaces: Sequence[str], with_owners: bool) -> tuple[list[ListenerRow], list[Any]]:
    """The listening sockets of every namespace (or of `namespaces`), owners included, and the
    namespaces read: the full reading, made when the quick one (`ListenerReader`) saw a change."""
    from portkit.sockets import ALL_STATES, SocketQuery, list_sockets

    inventory = list_sockets(
        SocketQuery(listening=True, states=ALL_STATES, with_processes=with_owners), all_netns=True
    )
    rows = [
        ListenerRow(
            row.netns,
            row.transport.value,
            row.local_address,
            row.local_port,
            row.inode,
            tuple(_owner(p) for p in row.processes) if with_owners else (),
        )
        for row in inventory.sockets
        if row.is_listener and (not namespaces or row.netns in namespaces)
    ]
    spaces = [n for n in inventory.namespaces if not namespaces or n.label in namespaces]
    return rows, spaces


def with_vanished(quick: Sequence[ListenerRow], full: Sequence[ListenerRow]) -> list[ListenerRow]:
    """The full reading, plus the listeners the quick reading saw that were gone by the time
    owners were read: a listener that lived a few milliseconds existed all the same (its
    owner is unknown), and is reported opened, then closed at the next reading."""
    known = {row.key for row in full}
    return [*full, *(row for row in quick if row.key not in known)]


class ListenerReader:
    """The quick reading, once a second: listeners only, over one netlink socket per namespace.

    A netlink socket belongs to the namespace it was made in, so each is made once (entering the
    namespace, which costs a thread and a setns) and then asked from this thread: a reading of
    fifteen namespaces is then a few dumps of their listening tables, not fifteen setns.
    """

    def __init__(self, namespaces: Sequence[str], notes: Callable[[str], None]) -> None:
        self.namespaces = namespaces
        self.notes = notes
        self.clients: dict[int, tuple[Any, Any]] = {}
        self.unreadable: set[int] = set()
        self.present: set[str] = set()  # the --netns names there at the last reading
        self.read_once = False

    def read(self) -> tuple[list[ListenerRow], list[Any]]:
        # LISTENING is LISTEN and CLOSE; the netlink layer never asks TCP for CLOSE, so a TCP
        # dump here walks the listening hash alone (see portkit.sockets._netlink).
        from portkit.sockets import LISTENING, SockDiagClient, Transport, all_namespaces, run_in

        spaces = [n for n in all_namespaces() if not self.namespaces or n.label in self.namespaces]
        if self.namespaces:  # a namespace named with --netns that goes (or comes back) is said
            present = {str(n.label) for n in spaces}
            for name in self.namespaces:
                if name in self.present and name not in present:
                    self.notes(f"network namespace {name} is gone: nothing is watched there until it is back")
                elif name not in self.present and name in present and self.read_once:
                    self.notes(f"network namespace {name} is back: watching it again")
            self.present = present
            self.read_once = True
        rows: list[ListenerRow] = []
        alive = set()
        denied: list[str] = []
        for space in spaces:
            alive.add(space.inode)
            entry = self.clients.get(space.inode)
            if entry is None:
                if space.inode in self.unreadable:
                    continue
                try:
                    entry = self.clients[space.inode] = (space, run_in(space, SockDiagClient))
                except PermissionNeeded:
                    if self.namespaces:  # named with --netns: watching nothing there would be silent
                        raise
                    self.unreadable.add(space.inode)
                    denied.append(str(space))
                    continue
                except OSError as exc:
                    self.unreadable.add(space.inode)
                    self.notes(f"cannot read the sockets of {space}: {exc}")
                    continue
            client = entry[1]
            try:
                for transport in (Transport.TCP, Transport.UDP):
                    for family in (4, 6):
                        for row in client.dump(transport, family, LISTENING, netns=space.label):
                            if row.is_listener:
                                rows.append(
                                    ListenerRow(
                                        row.netns,
                                        transport.value,
                                        row.local_address,
                                        row.local_port,
                                        row.inode,
                                    )
                                )
            except OSError:
                client.close()
                del self.clients[space.inode]
        for inode in [i for i in self.clients if i not in alive]:
            self.clients.pop(inode)[1].close()
        if denied:
            shown = ", ".join(denied[:3]) + (f" and {len(denied) - 3} more" if len(denied) > 3 else "")
            self.notes(f"cannot read the sockets of {shown}: entering a namespace needs root")
        return rows, [s for s in spaces if s.inode not in self.unreadable]

    def close(self) -> None:
        for _space, client in self.clients.values():
            client.close()
        self.clients.clear()


def open_capture(namespace: Any) -> socket.socket:
    """A packet socket inside `namespace` with the watcher's BPF program attached."""
    from portkit.sockets import run_in

    def make() -> socket.socket:
        return socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))

    try:
        sock = run_in(namespace, make)
    except PermissionError:
        raise PermissionNeeded("watching packets needs root (CAP_NET_RAW)") from None
    program = ctypes.create_string_buffer(FILTER, len(FILTER))
    fprog = struct.pack("HL", FILTER_LENGTH, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.setblocking(False)
    # Packets queued before the filter was attached are not filtered: let them go.
    with contextlib.suppress(BlockingIOError):
        for _ in range(100000):
            sock.recv(1)
    return sock


class Blocker:
    """Timed drops of scanners in a portkit-owned nft table per namespace, removed at close."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(1, int(seconds))
        self.table = f"portkit_watch_{os.getpid()}"
        self.made: dict[str | None, Any] = {}
        self._protected: dict[str | None, frozenset[str]] = {}

    def _nft(self, namespace: Any, script: str) -> None:
        subprocess.run(
            namespace.command(["nft", "-f", "-"]),
            input=script,
            text=True,
            capture_output=True,
            timeout=10,
            check=True,
        )

    def protected(self, namespace: Any) -> frozenset[str]:
        """The namespace's own addresses and its default gateways: never dropped, since a scan's
        source address can be forged (a spoofed scan from the gateway would cut the host off)."""
        if namespace.label in self._protected:
            return self._protected[namespace.label]
        found: set[str] = set()
        for argv in (["ip", "-j", "addr"], ["ip", "-j", "-4", "route"], ["ip", "-j", "-6", "route"]):
            try:
                proc = subprocess.run(
                    namespace.command(argv), capture_output=True, text=True, timeout=10, check=False
                )
                rows = json.loads(proc.stdout or "[]")
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
            for row in rows if isinstance(rows, list) else []:
                if not isinstance(row, dict):
                    continue
                for info in row.get("addr_info", []):
                    found.add(str(info.get("local", "")))
                if row.get("gateway"):
                    found.add(str(row["gateway"]))
        normal = set()
        for text in found:
            try:
                normal.add(str(ipaddress.ip_address(text.split("%")[0])))
            except ValueError:
                continue
        self._protected[namespace.label] = frozenset(normal)
        return self._protected[namespace.label]

    def block(self, namespace: Any, source: str) -> str:
        if source in self.protected(namespace):
            raise OSError(f"it is {namespace}'s own address or gateway, and a scan's source can be forged")
        if namespace.label not in self.made:
            self._nft(
                namespace,
                f"""table inet {self.table} {{
    set blocked4 {{ type ipv4_addr; flags timeout; }}
    set blocked6 {{ type ipv6_addr; flags timeout; }}
    chain prerouting {{
        type filter hook prerouting priority -300; policy accept;
        ip saddr @blocked4 drop
        ip6 saddr @blocked6 drop
    }}
}}
""",
            )
            self.made[namespace.label] = namespace
        family = "blocked6" if ":" in source else "blocked4"
        self._nft(
            namespace, f"add element inet {self.table} {family} {{ {source} timeout {self.seconds}s }}\n"
        )
        return f"inet {self.table} {family}: {source} for {self.seconds} s"

    def close(self) -> None:
        for namespace in self.made.values():
            subprocess.run(
                namespace.command(["nft", "delete", "table", "inet", self.table]),
                capture_output=True,
                timeout=10,
                check=False,
            )
        self.made.clear()


def run_watch(options: WatchOptions, emit: Emit, *, notes: Callable[[str], None] = lambda text: None) -> int:
    """Watch until `options.duration` or `max_events` (or KeyboardInterrupt); returns the events emitted.

    SIGTERM (how a service manager stops a daemon) raises `Terminated` here, so the scans still
    going are ended and the drops `--block` added are removed, as on Ctrl-C.
    """
    from portkit.firewall._live import _terminate_raises

    with _terminate_raises():
        return _watch(options, emit, notes)


def _watch(options: WatchOptions, emit: Emit, notes: Callable[[str], None]) -> int:
    detector = Detector(options.thresholds, options.ignore)
    reader = ListenerReader(options.namespaces, notes)
    tracker = ListenerTracker()
    captures: dict[int, tuple[Any, socket.socket]] = {}  # namespace inode -> (namespace, socket)
    by_fd: dict[int, tuple[Any, socket.socket]] = {}
    unwatchable: set[int] = set()  # namespaces a packet socket could not be opened in (said once)
    blocker = Blocker(options.block) if options.block else None
    accepted: dict[tuple[str | None, int], int] = {}
    listening_ports: set[tuple[str | None, int]] = set()
    want_packets = options.scans or options.accepts
    packets_ok = want_packets
    emitted = 0
    started = False
    start = time.monotonic()
    next_poll = start
    next_accepts = start + options.accept_interval

    def send(document: dict[str, Any]) -> None:
        nonlocal emitted
        emit(document)
        emitted += 1

    def on_scan(events: list[ScanEvent]) -> None:
        for event in events:
            document = event.to_json()
            if blocker is not None and event.kind == "scan":
                space = next((ns for ns, _s in captures.values() if ns.label == event.netns), None)
                if space is not None:
                    try:
                        document["blocked"] = blocker.block(space, event.source)
                    except (OSError, subprocess.SubprocessError) as exc:
                        document["blocked"] = None
                        notes(f"could not block {event.source}: {exc}")
            send(document)

    try:
        while True:
            now = time.monotonic()
            if options.duration is not None and now - start >= options.duration:
                break
            if options.max_events is not None and emitted >= options.max_events:
                break
            if now >= next_poll:
                next_poll = now + options.interval
                rows, spaces = reader.read()
                if tracker.changed(rows):
                    quick = rows
                    rows, spaces = read_listeners(options.namespaces, with_owners=True)
                    rows = with_vanished(quick, rows)
                    for event in tracker.update(rows, time.time()):
                        send(event.to_json())
                listening_ports = {(r.netns, r.port) for r in rows if r.protocol == "tcp"}
                if packets_ok:
                    seen_inodes = set()
                    for space in spaces:
                        seen_inodes.add(space.inode)
                        if space.inode in captures or space.inode in unwatchable:
                            continue
                        try:
                            sock = open_capture(space)
                        except PermissionNeeded as exc:
                            if options.scans:  # asked for outright: doing less would be silent
                                raise PermissionNeeded(
                                    f"--scans: {exc}; without it, drop --scans (listener events only)"
                                ) from None
                            packets_ok = False
                            notes(f"{exc}: accept counts are off")
                            break
                        except OSError as exc:
                            unwatchable.add(space.inode)
                            notes(f"cannot watch packets of {space}: {exc.strerror or exc}")
                            continue
                        captures[space.inode] = (space, sock)
                        by_fd[sock.fileno()] = (space, sock)
                    for inode in [i for i in captures if i not in seen_inodes]:
                        space, sock = captures.pop(inode)
                        by_fd.pop(sock.fileno(), None)
                        sock.close()
                if not started:
                    started = True
                    emit(  # not counted by max_events: it says the watch is live, not what happened
                        {
                            "event": "watch-started",
                            "time": time.time(),
                            "namespaces": [str(s) for s in spaces if s.inode not in reader.unreadable],
                            "packets": bool(by_fd),
                        }
                    )
                if options.scans:
                    on_scan(detector.tick(time.time()))
            if options.accepts and now >= next_accepts:
                seconds = options.accept_interval + (now - next_accepts)
                next_accepts = now + options.accept_interval
                for (netns, port), count in sorted(
                    accepted.items(), key=lambda item: (item[0][0] or "", item[0][1])
                ):
                    send(AcceptEvent(time.time(), netns, port, count, seconds).to_json())
                accepted.clear()
            wait = max(0.0, min(next_poll, next_accepts if options.accepts else next_poll) - time.monotonic())
            if options.duration is not None:
                wait = min(wait, max(0.0, start + options.duration - time.monotonic()))
            if not by_fd:
                time.sleep(wait)
                continue
            ready, _, _ = select.select(list(by_fd), [], [], wait)
            for fd in ready:
                space, sock = by_fd[fd]
                for _ in range(_BURST):
                    try:
                        data, address = sock.recvfrom(256)
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    seen = parse_packet(data, address[2] == PACKET_OUTGOING, space.label, time.time())
                    if seen is None:
                        continue
                    if (
                        seen.outgoing
                        and seen.proto == TCP
                        and seen.flags & (SYN | ACK) == SYN | ACK
                        and (space.label, seen.sport) in listening_ports
                    ):
                        key = (space.label, seen.sport)
                        accepted[key] = accepted.get(key, 0) + 1
                    if options.scans:
                        on_scan(detector.packet(seen))
    finally:
        reader.close()
        if options.scans:
            on_scan(detector.finish())
        for _space, sock in captures.values():
            sock.close()
        if blocker is not None:
            blocker.close()
    return emitted
