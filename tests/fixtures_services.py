"""Real servers from Debian packages, on unusual loopback ports, for service detection tests.

`service_lab()` starts every server at once (each with its own temp config and data dir,
on a port the kernel just gave out, so the port number cannot give the answer), waits until
each accepts connections, yields a `ServiceLab`, and always stops them all afterwards.
Also used by bench/bench_services.py.

`service_lab(netns=NAME)` starts the same set inside a network namespace (a `portkit.testing.LabNamespace`):
each server runs under `ip netns exec`, and the lab's own sockets (readiness checks, the silent
and accept-then-close listeners) are made by a thread that has joined that namespace. Its
loopback then holds nothing but the lab, so a scan of all 65,535 ports sees only the lab.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from portkit.testing import enter_namespace

LOOPBACK = "127.0.0.1"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/nonexistent"))


SocketFactory = Callable[[int, int], socket.socket]


def free_port(kind: int = socket.SOCK_STREAM, make: SocketFactory = socket.socket) -> int:
    """A port free for both TCP and UDP right now (the kernel's choice, from the ephemeral range)."""
    for _ in range(50):
        with make(socket.AF_INET, kind) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with make(socket.AF_INET, other) as s:
                s.bind((LOOPBACK, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


def tool_version(argv: list[str], pattern: str) -> str:
    """The version a package's binary reports about itself (the oracle for the banner's version)."""
    import re

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else ""


@dataclass
class Server:
    """One running server: what it is, where it listens, what detection must say."""

    key: str
    port: int
    expect_name: str
    expect_product: str = ""
    expect_version: str = ""
    protocol: str = "tcp"
    tunnel: str = ""
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None


@dataclass
class ServiceLab:
    root: Path
    netns: str = ""
    servers: dict[str, Server] = field(default_factory=dict)
    _stops: list[Callable[[], None]] = field(default_factory=list)
    _maker: ThreadPoolExecutor | None = None

    def __getitem__(self, key: str) -> Server:
        return self.servers[key]

    def targets(self) -> list[tuple[str, int, str]]:
        return [(LOOPBACK, s.port, s.protocol) for s in self.servers.values()]

    def new_socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket in the lab's namespace (a socket keeps the namespace it was made in)."""
        if not self.netns:
            return socket.socket(family, kind)
        if self._maker is None:
            maker = ThreadPoolExecutor(1, initializer=enter_namespace, initargs=(self.netns,))
            self._maker = maker
            self._stops.append(maker.shutdown)
        return self._maker.submit(socket.socket, family, kind).result(timeout=10)

    def free_port(self, kind: int = socket.SOCK_STREAM) -> int:
        return free_port(kind, self.new_socket)

    def command(self, argv: list[str]) -> list[str]:
        """argv as run in the lab's namespace; `ip netns exec` execs it, so the pid stays the server's."""
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv


def _wait_tcp(lab: ServiceLab, port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), lab.new_socket() as s:
            s.settimeout(0.5)
            s.connect((LOOPBACK, port))
            return True
        time.sleep(0.05)
    return False


def _spawn(lab: ServiceLab, server: Server, argv: list[str], **kw: object) -> None:
    log = lab.root / f"{server.key}.log"
    server.log = log
    with open(log, "wb") as out:
        server.process = subprocess.Popen(
            lab.command(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **kw,  # type: ignore[call-overload]
        )
    lab.servers[server.key] = server


def _make_cert(root: Path) -> tuple[Path, Path]:
    key, cert = root / "tls.key", root / "tls.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
            "-subj", "/CN=portkit.test/O=portkit lab",
            "-addext", "subjectAltName=DNS:portkit.test,DNS:www.portkit.test,IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return key, cert


def _nginx(lab: ServiceLab) -> None:
    d = lab.root / "nginx"
    d.mkdir()
    key, cert = _make_cert(d)
    plain, tls = lab.free_port(), lab.free_port()
    (d / "index.html").write_text("<html><head><title>portkit lab page</title></head><body>hi</body></html>")
    (d / "nginx.conf").write_text(
        f"""
daemon off;
master_process off;
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    default_type text/html;
    server {{ listen {LOOPBACK}:{plain}; root {d}; location /old {{ return 301 /; }} }}
    server {{
        listen {LOOPBACK}:{tls} ssl;
        http2 on;
        ssl_certificate {cert}; ssl_certificate_key {key};
        root {d};
    }}
}}
"""
    )
    version = tool_version(["nginx", "-v"], r"nginx/([\d.]+)")
    if "http2 on" in (d / "nginx.conf").read_text():
        # nginx < 1.25 spells HTTP/2 as a listen parameter.
        major_minor = tuple(int(x) for x in version.split(".")[:2]) if version else (0, 0)
        if major_minor < (1, 25):
            text = (d / "nginx.conf").read_text().replace("        http2 on;\n", "")
            (d / "nginx.conf").write_text(text.replace(f"{tls} ssl;", f"{tls} ssl http2;"))
    _spawn(
        lab,
        Server("nginx", plain, "http", "nginx", version),
        ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "stderr"],
    )
    lab.servers["nginx-tls"] = Server("nginx-tls", tls, "http", "nginx", version, tunnel="ssl")


def _sshd(lab: ServiceLab) -> None:
    d = lab.root / "sshd"
    d.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True, timeout=30
    )
    port = lab.free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress {LOOPBACK}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    # The privilege-separation directory the package normally gets from systemd-tmpfiles.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    version = tool_version(["/usr/sbin/sshd", "-V"], r"OpenSSH_([\w.]+)")
    _spawn(
        lab,
        Server("sshd", port, "ssh", "OpenSSH", version),
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
    )


def _ssh_over_tls(lab: ServiceLab) -> None:
    """sshd behind a TLS terminator (socat, as stunnel would): the banner arrives inside TLS."""
    d = lab.root / "sshtls"
    d.mkdir()
    key, cert = _make_cert(d)
    port = lab.free_port()
    sshd = lab["sshd"]
    _spawn(
        lab, Server("ssh-tls", port, "ssh", "OpenSSH", sshd.expect_version, tunnel="ssl"),
        ["socat", f"OPENSSL-LISTEN:{port},bind={LOOPBACK},reuseaddr,fork,cert={cert},key={key},verify=0",
         f"TCP:{LOOPBACK}:{sshd.port}"],
    )  # fmt: skip


def _redis(lab: ServiceLab) -> None:
    d = lab.root / "redis"
    d.mkdir()
    port = lab.free_port()
    version = tool_version(["redis-server", "--version"], r"v=([\d.]+)")
    _spawn(
        lab, Server("redis", port, "redis", "Redis", version),
        ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--dir", str(d), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
    )  # fmt: skip


def _postgres(lab: ServiceLab) -> None:
    d = lab.root / "pg"
    d.mkdir()
    shutil.chown(d, "postgres", "postgres")
    data = d / "data"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
         "--no-sync", "-U", "postgres", "--no-instructions"],
        check=True, capture_output=True, timeout=120, cwd=d,
    )  # fmt: skip
    port = lab.free_port()
    _spawn(
        lab, Server("postgres", port, "postgresql", "PostgreSQL"),
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
         "-k", str(d), "-c", f"listen_addresses={LOOPBACK}", "-c", "fsync=off"],
        cwd=d,
    )  # fmt: skip


def _vsftpd(lab: ServiceLab) -> None:
    d = lab.root / "vsftpd"
    d.mkdir()
    (d / "ftp").mkdir()
    port = lab.free_port()
    (d / "vsftpd.conf").write_text(
        f"listen=YES\nlisten_ipv6=NO\nlisten_address={LOOPBACK}\nlisten_port={port}\nbackground=NO\n"
        f"anonymous_enable=YES\nanon_root={d}/ftp\nlocal_enable=NO\nseccomp_sandbox=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\n"
        f"xferlog_enable=NO\nvsftpd_log_file={d}/vsftpd.log\n"
    )
    version = tool_version(["vsftpd", "-v"], r"version ([\d.]+)")
    # vsftpd -v closes stdin and prints on it; fall back to the Debian package's version.
    if not version:
        version = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], capture_output=True, text=True, timeout=10
        ).stdout.split("-")[0]
    _spawn(lab, Server("vsftpd", port, "ftp", "vsftpd", version), ["vsftpd", str(d / "vsftpd.conf")])


def _dnsmasq(lab: ServiceLab) -> None:
    d = lab.root / "dnsmasq"
    d.mkdir()
    port = lab.free_port()
    version = tool_version(["dnsmasq", "--version"], r"version ([\d.]+)")
    argv = [
        "dnsmasq", "-k", "--conf-file=/dev/null", f"--port={port}", f"--listen-address={LOOPBACK}",
        "--bind-interfaces", "--no-resolv", "--no-hosts", f"--pid-file={d}/dnsmasq.pid", "--user=root",
        "--address=/portkit.test/127.0.0.1", "--log-facility=-",
    ]  # fmt: skip
    _spawn(lab, Server("dnsmasq", port, "domain", "dnsmasq", version), argv)
    lab.servers["dnsmasq-udp"] = Server("dnsmasq-udp", port, "domain", "dnsmasq", version, protocol="udp")


def _mosquitto(lab: ServiceLab) -> None:
    d = lab.root / "mosquitto"
    d.mkdir()
    port = lab.free_port()
    (d / "mosquitto.conf").write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
        f"pid_file {d}/mosquitto.pid\nuser root\n"
    )
    version = tool_version(["mosquitto", "-h"], r"mosquitto version ([\d.]+)")
    _spawn(
        lab,
        Server("mosquitto", port, "mqtt", "Mosquitto", version),
        ["mosquitto", "-c", str(d / "mosquitto.conf")],
    )


def _memcached(lab: ServiceLab) -> None:
    if not shutil.which("memcached"):
        return  # installed by scripts/install.sh --test; its own test skips without it
    port = lab.free_port()
    version = tool_version(["memcached", "-V"], r"memcached ([\d.]+)")
    _spawn(
        lab,
        Server("memcached", port, "memcached", "Memcached", version),
        # -U 0: TCP only, as a cache should be run; -u root: memcached refuses root without it.
        ["memcached", "-p", str(port), "-l", LOOPBACK, "-U", "0", "-u", "root", "-m", "16", "-c", "128"],
    )


def _python_http(lab: ServiceLab) -> None:
    d = lab.root / "www"
    d.mkdir()
    (d / "index.html").write_text("<html><title>python lab</title></html>")
    port = lab.free_port()
    # The server module's own version: what it puts in its Server header (SimpleHTTP/0.6).
    import http.server

    version = http.server.__version__
    _spawn(
        lab, Server("pyhttp", port, "http", "SimpleHTTPServer", version),
        [sys.executable, "-m", "http.server", str(port), "--bind", LOOPBACK, "--directory", str(d)],
    )  # fmt: skip


def _listeners(lab: ServiceLab) -> None:
    """A silent listener (accepts, never speaks) and an accept-then-close listener."""
    silent = lab.new_socket()
    silent.bind((LOOPBACK, 0))
    silent.listen(64)
    closer = lab.new_socket()
    closer.bind((LOOPBACK, 0))
    closer.listen(64)
    closer.settimeout(0.2)
    silent.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    # One thread each, blocking in accept(): on a loaded machine a shared loop answered the
    # accept-then-close port late enough for a probe's wait to end first (then it looks silent).
    def serve_silent() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = silent.accept()  # keep it open, never speak
                held.append(conn)

    def serve_closer() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = closer.accept()
                conn.close()

    threads = [threading.Thread(target=fn, daemon=True) for fn in (serve_silent, serve_closer)]
    for thread in threads:
        thread.start()

    def close() -> None:
        stop.set()
        for thread in threads:
            thread.join(2)
        for s in (silent, closer, *held):
            s.close()

    lab._stops.append(close)
    lab.servers["silent"] = Server("silent", silent.getsockname()[1], "unknown")
    lab.servers["closer"] = Server("closer", closer.getsockname()[1], "tcpwrapped")


STARTERS: dict[str, Callable[[ServiceLab], None]] = {
    "nginx": _nginx,
    "sshd": _sshd,
    "ssh-tls": _ssh_over_tls,
    "redis": _redis,
    "postgres": _postgres,
    "vsftpd": _vsftpd,
    "dnsmasq": _dnsmasq,
    "mosquitto": _mosquitto,
    "memcached": _memcached,
    "pyhttp": _python_http,
    "listeners": _listeners,
}


def _udp_ready(lab: ServiceLab, port: int, deadline: float) -> bool:
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07portkit\x04test\x00\x00\x01\x00\x01"
    while time.monotonic() < deadline:
        with lab.new_socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            with contextlib.suppress(OSError):
                s.sendto(query, (LOOPBACK, port))
                if s.recv(512):
                    return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def service_lab(
    only: tuple[str, ...] = (), startup_timeout: float = 60, netns: str = ""
) -> Iterator[ServiceLab]:
    """Start the servers (all, or `only` those keys), wait until they answer, stop them after.

    With `netns`, everything runs inside that (existing) network namespace.
    """
    root = Path(tempfile.mkdtemp(prefix="pk5-services-"))
    os.chmod(root, 0o755)
    lab = ServiceLab(root, netns)
    try:
        for key, start in STARTERS.items():
            if not only or key in only:
                start(lab)
        deadline = time.monotonic() + startup_timeout
        for server in lab.servers.values():
            if server.process is not None and server.process.poll() is not None:
                log = server.log.read_text(errors="replace") if server.log else ""
                raise RuntimeError(f"{server.key} exited at start: {log[-2000:]}")
            ready = (
                _udp_ready(lab, server.port, deadline)
                if server.protocol == "udp"
                else _wait_tcp(lab, server.port, deadline)
            )
            if not ready:
                raise RuntimeError(f"{server.key} is not answering on port {server.port}")
        yield lab
    finally:
        for server in lab.servers.values():
            proc = server.process
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for server in lab.servers.values():
            proc = server.process
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for stop in lab._stops:
            stop()
        shutil.rmtree(root, ignore_errors=True)
