"""The console script's Click-free lanes (portkit.cli.entry) print what the Click commands print.

Click stays the reference: for `explain PORT`, `who PORT` and `ls [FLAGS]`, with and without
--json, good input and bad, both paths must give the same exit status, stdout and stderr.
The socket cases run in a private namespace holding known sockets, so that nothing else on
the machine changes the table between the two runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import needs_root
from portkit.cli.entry import lane_for, port_command
from portkit.testing import LabNamespace

LANE = "from portkit.cli.entry import main; main()"
CLICK = "from portkit.cli.main import main; main()"


def _both(args: list[str], prefix: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
    """Run `args` through the lane and through Click; require the same status, stdout, stderr."""
    assert lane_for(args) is not None  # the lane takes these arguments
    done = [
        subprocess.run(
            [*prefix, sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env
        )
        for code in (LANE, CLICK)
    ]
    lane, via_click = ((d.returncode, d.stdout, d.stderr) for d in done)
    assert lane == via_click


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "22"],
        ["explain", "22", "--json"],
        ["explain", "--json", "443/udp"],
        ["explain", "8080/tcp"],
        ["explain", "0"],
        ["explain", "99999"],
        ["explain", "abc", "--json"],
        ["explain", "5²"],
        ["explain", "22/sctp"],
    ],
)
def test_explain_lane_prints_what_click_prints(args: list[str]) -> None:
    _both(args)


def test_explain_lane_honours_the_registry_environment(tmp_path: Path) -> None:
    env = {**os.environ, "PORTKIT_NMAP_SERVICES": "", "PORTKIT_CACHE_DIR": str(tmp_path)}
    _both(["explain", "22"], env=env)
    _both(["explain", "9", "--json"], env=env)


@pytest.mark.parametrize(
    "argv",
    [
        ["explain"],
        ["explain", "--help"],
        ["explain", "22", "80"],
        ["explain", "--", "22"],
        ["explain", "-5"],
        ["explain", "22", "--json", "--json"],
        ["who", "22", "--kill"],
        ["who", "22", "--netns", "x"],
        ["ls", "--watch"],
        ["ls", "--port", "22"],
        ["overview"],
        [],
    ],
)
def test_everything_else_goes_to_click(argv: list[str]) -> None:
    assert lane_for(argv) is None


def test_port_commands_take_the_flag_before_or_after() -> None:
    assert port_command(["who", "--json", "53/udp"]) == ("who", "53/udp", True)
    assert port_command(["explain", "22"]) == ("explain", "22", False)


def test_the_lanes_do_not_import_click() -> None:
    code = (
        "import sys\n"
        "from portkit.cli.entry import lane_for\n"
        "for args in (['explain', '22'], ['explain', '80', '--json'], ['ls'], ['ls', '--json']):\n"
        "    lane_for(args)()\n"
        "sys.stdout.flush()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('click', 'rich')), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[]"


HOLDER = r"""
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
gone = socket.create_connection(server.getsockname())
server.accept()[0].close()
gone.close()
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind(("::1", 0))
print(server.getsockname()[1], udp.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def holder_namespace() -> Iterator[tuple[str, str, str]]:
    """A namespace with a listener (one connection, one TIME-WAIT) and a UDP socket: (name, tcp, udp)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a private network namespace)")
    namespace = LabNamespace("pk3ln").open()
    holder = None
    try:
        holder = subprocess.Popen(
            ["ip", "netns", "exec", namespace.name, sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        tcp, udp = holder.stdout.readline().split()
        yield namespace.name, tcp, udp
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        namespace.close()


@needs_root
@pytest.mark.parametrize(
    "args",
    [
        ["who", "{tcp}"],
        ["who", "{tcp}", "--json"],
        ["who", "{tcp}/tcp"],
        ["who", "{udp}/udp", "--json"],
        ["who", "{udp}"],
        ["who", "1"],
        ["who", "1", "--json"],
        ["who", "70000"],
        ["who", "22/raw"],
        ["ls"],
        ["ls", "--all"],
        ["ls", "-a", "-p"],
        ["ls", "-4", "-P"],
        ["ls", "-6"],
        ["ls", "-4", "-6"],
        ["ls", "--all", "--json"],
    ],
)
def test_socket_lanes_print_what_click_prints(
    holder_namespace: tuple[str, str, str], args: list[str]
) -> None:
    name, tcp, udp = holder_namespace
    _both([a.format(tcp=tcp, udp=udp) for a in args], prefix=("ip", "netns", "exec", name))
