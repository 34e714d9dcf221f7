"""Who holds a socket: the inode -> process map from /proc/*/fd, and what each process is.

The map is built once per command and only when the output needs processes. Every process's
fd table is read (a shared socket has several holders). Reading the links of a process's fds
is the hot loop on a busy host (one readlinkat per fd, as with `ss -p` and lsof): it has a C
twin, portkit.sockets._fdlinks, used when built; the Python path (the reference) stops
reading a process's fds once it holds every wanted inode, the C one reads them all in less.

`parse_cgroup` and `parse_docker_proxy` are pure; the rest reads /proc (and, for container
names, the docker API socket when it exists).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator
from itertools import repeat

from portkit.sockets._process import ProcessInfo
from portkit.sockets._value import FrozenValue

try:
    from portkit.sockets import _fdlinks
except ImportError:  # installed without a C compiler: _socket_inodes_py does the same work
    _fdlinks = None  # type: ignore[assignment]

_SOCKET_PREFIX = "socket:["


@functools.lru_cache(maxsize=256)
def user_name(uid: int) -> str:
    """The login name of a uid, or the number when /etc/passwd does not know it."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class OwnerMap:
    """inode -> pids holding it, and whether every process's fd table could be read.

    The pid tuples are shared: every socket held by one process alone maps to the same
    `(pid,)`, which keeps the map cheap to build and to look processes up from. A plain
    mutable record (find_owners fills it in), without dataclasses (portkit.sockets, "Import cost").
    """

    __slots__ = ("complete", "hidden_pids", "owners")

    def __init__(
        self, owners: dict[int, tuple[int, ...]] | None = None, complete: bool = True, hidden_pids: int = 0
    ) -> None:
        self.owners: dict[int, tuple[int, ...]] = {} if owners is None else owners
        self.complete = complete
        self.hidden_pids = hidden_pids

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, OwnerMap)
        return self._values() == other._values()

    def _values(self) -> tuple[dict[int, tuple[int, ...]], bool, int]:
        return self.owners, self.complete, self.hidden_pids

    __hash__ = None  # type: ignore[assignment]  # mutable, as a non-frozen dataclass

    def __repr__(self) -> str:
        owners, complete, hidden = self._values()
        return f"OwnerMap(owners={owners!r}, complete={complete!r}, hidden_pids={hidden!r})"


def find_owners(wanted: set[int] | None) -> OwnerMap:
    """Map socket inodes to pids by reading every /proc/PID/fd (only the `wanted` ones, if given).

    Every process is read even when each wanted inode has been seen: a socket is shared by
    every process that inherited it across fork() or received it by SCM_RIGHTS (a
    pre-forked server's master and workers), and, as with `ss -p` and `lsof`, each of them
    is a holder.
    """
    result = OwnerMap()
    owners = result.owners
    targets = None if wanted is None else frozenset(wanted) - {0}
    if targets is not None and not targets:
        return result
    for pid_text in os.listdir("/proc"):
        if not pid_text.isdigit():
            continue
        try:
            fd_dir = os.open(f"/proc/{pid_text}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            result.complete = False
            result.hidden_pids += 1
            continue
        except OSError:  # the process exited meanwhile
            continue
        pid = int(pid_text)
        try:
            if targets is None:
                _add_all(owners, pid, _socket_inodes(fd_dir))
            else:
                _add_wanted(owners, pid, fd_dir, targets)
        finally:
            os.close(fd_dir)
    return result


def _add_all(owners: dict[int, tuple[int, ...]], pid: int, inodes: list[int]) -> None:
    single = (pid,)
    shared = owners.keys() & inodes
    # Sockets shared with processes seen before (a pre-forked server's listener) keep every
    # holder; the rest, nearly all of them, are added in one C-level update.
    earlier = {inode: owners[inode] for inode in shared}
    owners.update(zip(inodes, repeat(single)))
    for inode, holders in earlier.items():
        owners[inode] = holders if pid in holders else (*holders, pid)


def _add_wanted(owners: dict[int, tuple[int, ...]], pid: int, fd_dir: int, targets: frozenset[int]) -> None:
    """Add this process as a holder of each wanted inode it holds (once, however many fds)."""
    if _fdlinks is not None:
        seen: set[int] = set()
        for inode in _socket_inodes(fd_dir):
            if inode in targets and inode not in seen:
                seen.add(inode)
                owners[inode] = (*owners.get(inode, ()), pid)
        return
    _add_wanted_py(owners, pid, fd_dir, targets)


def _add_wanted_py(
    owners: dict[int, tuple[int, ...]], pid: int, fd_dir: int, targets: frozenset[int]
) -> None:
    """Read fds one by one and stop once this process holds every wanted inode: a server's
    listener is usually among its first fds, before the thousands of connections it accepted."""
    readlink = os.readlink
    prefix = _SOCKET_PREFIX
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return
    seen: set[int] = set()
    for name in names:
        try:
            link = readlink(name, dir_fd=fd_dir)
        except OSError:
            continue
        if link.startswith(prefix):
            inode = int(link[8:-1])
            if inode in targets and inode not in seen:
                seen.add(inode)
                holders = owners.get(inode, ())
                owners[inode] = (*holders, pid)
                if len(seen) == len(targets):
                    return


def _socket_inodes(fd_dir: int) -> list[int]:
    """The socket inodes among one process's open fds (the fd directory opened as `fd_dir`), in
    directory order: in C by portkit.sockets._fdlinks when it is built, else `_socket_inodes_py`
    (tests run both and require the same list)."""
    if _fdlinks is not None:
        try:
            return _fdlinks.socket_inodes(fd_dir)
        except OSError:
            return []
    return _socket_inodes_py(fd_dir)


def _socket_inodes_py(fd_dir: int) -> list[int]:
    """`_socket_inodes` in Python: the reference, and the path without a C compiler."""
    readlink = os.readlink
    try:
        names = os.listdir(fd_dir)
        try:
            links = [readlink(name, dir_fd=fd_dir) for name in names]
        except OSError:  # an fd closed between listdir and readlink: skip just that one
            links = []
            for name in names:
                try:
                    links.append(readlink(name, dir_fd=fd_dir))
                except OSError:
                    continue
    except OSError:
        return []
    # "socket:[12345]"
    return [int(link[8:-1]) for link in links if link.startswith(_SOCKET_PREFIX)]


# Compiled on first use (parse_cgroup), not at import: `portkit who` and `ls -p` import this
# module on every run, and most runs describe no process whose cgroup needs them.
_CONTAINER_PATTERN_TEXT = (
    (r"docker-([0-9a-f]{64})\.scope", "docker"),
    (r"/docker/([0-9a-f]{64})", "docker"),
    (r"libpod-(?:conmon-)?([0-9a-f]{64})\.scope", "podman"),
    (r"/libpod_parent/libpod-([0-9a-f]{64})", "podman"),
    (r"cri-containerd-([0-9a-f]{64})\.scope", "containerd"),
    (r"crio-(?:conmon-)?([0-9a-f]{64})\.scope", "cri-o"),
    (r"/kubepods[^ ]*/([0-9a-f]{64})", "containerd"),
    (r"/containerd/[^/]+/([0-9a-f]{64})", "containerd"),
)


@functools.cache
def _container_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple((re.compile(text), runtime) for text, runtime in _CONTAINER_PATTERN_TEXT)


@functools.cache
def _unit_pattern() -> re.Pattern[str]:
    return re.compile(r"[^/]+\.(?:service|scope)$")


class CgroupPlace(FrozenValue):
    """Where /proc/PID/cgroup puts a process: its systemd unit and container, if any."""

    _fields = ("unit", "container", "runtime")
    __slots__ = _fields
    unit: str
    container: str
    runtime: str

    def __init__(self, unit: str = "", container: str = "", runtime: str = "") -> None:
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "container", container)
        object.__setattr__(self, "runtime", runtime)


def parse_cgroup(text: str) -> CgroupPlace:
    """The systemd unit (`ssh.service`) and container id from a /proc/PID/cgroup file (v1 or v2)."""
    for line in text.splitlines():
        for pattern, runtime in _container_patterns():
            found = pattern.search(line)
            if found:
                return CgroupPlace(unit="", container=found.group(1), runtime=runtime)
    unit = ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        # The unit lives in cgroup v2's hierarchy (0::) or v1's name=systemd one.
        if len(parts) != 3 or parts[1] not in ("", "name=systemd"):
            continue
        for part in reversed(parts[2].split("/")):
            if _unit_pattern().match(part):
                unit = part
                break
        if unit:
            break
    return CgroupPlace(unit=unit)


class DockerProxy(FrozenValue):
    """What a `docker-proxy` process forwards: host ip:port -> container ip:port."""

    _fields = ("protocol", "host_ip", "host_port", "container_ip", "container_port")
    __slots__ = _fields
    protocol: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int

    def __init__(
        self, protocol: str, host_ip: str, host_port: int, container_ip: str, container_port: int
    ) -> None:
        setter = object.__setattr__
        setter(self, "protocol", protocol)
        setter(self, "host_ip", host_ip)
        setter(self, "host_port", host_port)
        setter(self, "container_ip", container_ip)
        setter(self, "container_port", container_port)


def parse_docker_proxy(cmdline: Iterable[str]) -> DockerProxy | None:
    """The forwarding of a `docker-proxy -proto tcp -host-ip ... -container-port 80` command line."""
    args = list(cmdline)
    if not args or os.path.basename(args[0]) != "docker-proxy":
        return None
    values: dict[str, str] = {}
    for index, arg in enumerate(args[1:-1], 1):
        if arg.startswith("-"):
            values[arg.lstrip("-")] = args[index + 1]
    try:
        return DockerProxy(
            values.get("proto", "tcp"),
            values["host-ip"],
            int(values["host-port"]),
            values["container-ip"],
            int(values["container-port"]),
        )
    except (KeyError, ValueError):
        return None


_DOCKER_SOCKET = "/var/run/docker.sock"


def _docker_containers() -> list[dict[str, object]]:
    """`GET /containers/json` from the docker API, or [] when docker is absent or not answering."""
    if not os.path.exists(_DOCKER_SOCKET):
        return []
    import http.client
    import json
    import socket

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect(_DOCKER_SOCKET)
            self.sock = sock

    try:
        connection = _UnixConnection("localhost", timeout=2)
        connection.request("GET", "/containers/json")
        response = connection.getresponse()
        if response.status != 200:
            return []
        data = json.loads(response.read())
        connection.close()
    except (OSError, ValueError, http.client.HTTPException):
        return []
    return data if isinstance(data, list) else []


def _container_name(entry: dict[str, object]) -> str:
    names = entry.get("Names")
    if isinstance(names, list) and names:
        return str(names[0]).lstrip("/")
    return str(entry.get("Id", ""))[:12]


class ProcessTable:
    """Describes processes by pid, reading each /proc/PID once per command."""

    def __init__(self) -> None:
        self._cache: dict[int, ProcessInfo | None] = {}
        self._names: dict[int, tuple[str, int]] = {}
        self._containers: list[dict[str, object]] | None = None

    def _stat(self, pid: int) -> tuple[str, int]:
        """(comm, ppid) from /proc/PID/stat."""
        found = self._names.get(pid)
        if found is None:
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    raw = stat.read().decode(errors="replace")
                name = raw[raw.index("(") + 1 : raw.rindex(")")]
                ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                name, ppid = "", 0
            found = self._names[pid] = (name, ppid)
        return found

    def user(self, uid: int) -> str:
        return user_name(uid)

    def describe(self, pid: int) -> ProcessInfo | None:
        if pid in self._cache:
            return self._cache[pid]
        name, ppid = self._stat(pid)
        info: ProcessInfo | None = None
        if name:
            info = self._describe(pid, name, ppid)
        self._cache[pid] = info
        return info

    def _describe(self, pid: int, name: str, ppid: int) -> ProcessInfo:
        base = f"/proc/{pid}"
        try:
            with open(f"{base}/cmdline", "rb") as f:
                cmdline = tuple(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
        except OSError:
            cmdline = ()
        try:
            uid = os.stat(base).st_uid
        except OSError:
            uid = -1
        try:
            with open(f"{base}/cgroup") as f:
                place = parse_cgroup(f.read())
        except OSError:
            place = CgroupPlace()
        parents: list[tuple[int, str]] = []
        parent, seen = ppid, {pid}
        while parent > 0 and parent not in seen and len(parents) < 32:
            seen.add(parent)
            parent_name, grandparent = self._stat(parent)
            if not parent_name:
                break
            parents.append((parent, parent_name))
            parent = grandparent
        container, runtime, container_name = place.container, place.runtime, ""
        if container and runtime == "docker":
            container_name = self._docker_name(container)
        elif name == "docker-proxy":
            proxy = parse_docker_proxy(cmdline)
            if proxy is not None:
                container, runtime, container_name = self._docker_proxy_target(proxy)
        return ProcessInfo(
            pid=pid,
            name=name,
            cmdline=cmdline,
            uid=uid,
            user=self.user(uid) if uid >= 0 else "",
            parents=tuple(parents),
            unit=place.unit,
            container=container,
            container_runtime=runtime,
            container_name=container_name,
        )

    def _containers_list(self) -> list[dict[str, object]]:
        if self._containers is None:
            self._containers = _docker_containers()
        return self._containers

    def _docker_name(self, container_id: str) -> str:
        for entry in self._containers_list():
            if entry.get("Id") == container_id:
                return _container_name(entry)
        return ""

    def _docker_proxy_target(self, proxy: DockerProxy) -> tuple[str, str, str]:
        """The container a docker-proxy publishes for: matched by its address on a docker network."""
        for entry in self._containers_list():
            settings = entry.get("NetworkSettings")
            networks = settings.get("Networks") if isinstance(settings, dict) else None
            if not isinstance(networks, dict):
                continue
            for network in networks.values():
                if isinstance(network, dict) and network.get("IPAddress") == proxy.container_ip:
                    return str(entry.get("Id", "")), "docker", _container_name(entry)
        return "", "", ""


class _ProcessesByPids(dict[tuple[int, ...], tuple[ProcessInfo, ...]]):
    """pids -> their ProcessInfo values, each process read from /proc the first time it is asked for."""

    def __init__(self, table: ProcessTable, described: dict[int, ProcessInfo]) -> None:
        super().__init__({(): ()})
        self._table = table
        self._described = described

    def __missing__(self, pids: tuple[int, ...]) -> tuple[ProcessInfo, ...]:
        infos = []
        for pid in pids:
            info = self._described.get(pid)
            if info is None:
                info = self._table.describe(pid)
                if info is None:  # gone, or not readable
                    continue
                self._described[pid] = info
            infos.append(info)
        # One shared tuple per set of holders: rows of one process point at the same value.
        found = self[pids] = tuple(infos)
        return found


class Holders:
    """inode -> the processes holding that socket, read lazily.

    A scan of /proc/*/fd sees every socket of the host (unix sockets, other namespaces); only
    the processes whose sockets are actually listed are described, each once. `processes`
    holds those described so far, by pid.
    """

    def __init__(self, owners: OwnerMap, table: ProcessTable | None = None) -> None:
        self._pids = owners.owners
        self.processes: dict[int, ProcessInfo] = {}
        self._infos = _ProcessesByPids(table or ProcessTable(), self.processes)

    def __contains__(self, inode: object) -> bool:
        return inode in self._pids

    def get(self, inode: int) -> tuple[ProcessInfo, ...]:
        """The processes holding `inode`, () when none (or none visible)."""
        return self._infos[self._pids.get(inode, ())]

    def lookup(self, inodes: Iterable[int]) -> Iterator[tuple[ProcessInfo, ...]]:
        """`get` for many inodes at once, as a C-level map (the decoder's hot path)."""
        return map(self._infos.__getitem__, map(self._pids.get, inodes, repeat(())))
