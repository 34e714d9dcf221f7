"""The Click-free lane of the console script (portkit.cli.entry) means what the Click `ls` means.

Click stays the reference: every lane flag, alone and in pairs, must parse to the same `ls`
parameters and the same SocketQuery as Click gives, and both paths must print the same JSON
for the same sockets.
"""

from __future__ import annotations

import inspect
import itertools
import json
import subprocess
import sys

import pytest

from conftest import needs_root
from portkit.cli._lsquery import ls_query
from portkit.cli.entry import LS_JSON_FLAGS, ls_json_params
from portkit.cli.sockets import ls
from portkit.testing import LabNamespace

QUERY_PARAMS = set(inspect.signature(ls_query).parameters)


def _click_params(args: list[str]) -> dict[str, object]:
    return dict(ls.make_context("ls", list(args)).params)


@pytest.mark.parametrize(
    "flags", [[f] for f in LS_JSON_FLAGS] + [list(p) for p in itertools.permutations(LS_JSON_FLAGS, 2)]
)
def test_lane_flags_parse_as_click_parses_them(flags: list[str]) -> None:
    args = [*flags, "--json"] if "--json" not in flags else flags
    lane = ls_json_params(["ls", *args])
    assert lane is not None
    click_params = _click_params(args)
    expected = {**_click_params(["--json"]), **lane}
    assert click_params == expected
    # ... and so to the same query (-4 with -6 is refused by both, in ls_query).
    if not (click_params["only4"] and click_params["only6"]):
        from_click = ls_query(**{k: v for k, v in click_params.items() if k in QUERY_PARAMS})  # type: ignore[arg-type]
        from_lane = ls_query(**{k: v for k, v in lane.items() if k in QUERY_PARAMS})
        assert from_click == from_lane


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["ls"],
        ["ls", "--all"],
        ["ls", "--json", "--proto", "udp"],
        ["ls", "--json", "--help"],
        ["ls", "--json", "-ap"],
        ["ls", "--json", "--watch"],
        ["who", "22", "--json"],
        ["overview", "--json"],
    ],
)
def test_everything_else_goes_to_click(argv: list[str]) -> None:
    assert ls_json_params(argv) is None


HOLDER = r"""
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind(("::1", 0))
print("ready", flush=True)
sys.stdin.read()
"""


@needs_root
@pytest.mark.parametrize("flags", [["--all"], ["--all", "-p"], [], ["-4", "--no-processes"]])
def test_lane_prints_what_click_prints(flags: list[str]) -> None:
    namespace = LabNamespace("pk3pe").open()
    netns = namespace.name
    holder = None
    try:
        holder = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        inside = ["ip", "netns", "exec", netns, sys.executable]
        args = ["ls", *flags, "--json"]
        lane = subprocess.run([*inside, "-m", "portkit", *args], capture_output=True, text=True, timeout=60)
        via_click = subprocess.run(
            [*inside, "-c", "from portkit.cli.main import main; main()", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (lane.returncode, lane.stderr) == (via_click.returncode, via_click.stderr) == (0, "")
        ours, theirs = json.loads(lane.stdout), json.loads(via_click.stdout)
        assert ours == theirs
        assert ours["sockets"]  # the holder's sockets are there
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        namespace.close()


def test_lane_reports_errors_the_click_way(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("ls", "-4", "-6", "--json")
    assert result.status == 2
    assert result.stderr.strip() == "portkit: error: -4 and -6 exclude each other: give at most one"
    assert result.stdout == ""


def test_lane_reports_a_failed_write_the_click_way() -> None:
    # /dev/full refuses every write with ENOSPC: one line on stderr and status 1, as Click's path.
    outcomes = []
    for code in ("from portkit.cli.entry import main; main()", "from portkit.cli.main import main; main()"):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [sys.executable, "-c", code, "ls", "--json"],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
            )
        outcomes.append((done.returncode, done.stderr))
    lane, via_click = outcomes
    assert lane == via_click
    assert lane[0] == 1 and lane[1].count("\n") == 1
    assert lane[1] == "portkit: error: cannot write the output: No space left on device\n"
