"""The scan's I/O driver takes every setting from its arguments: no environment, no sys.argv."""

from __future__ import annotations

import ast
import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import portkit.scan
from portkit.cli.scan import _environment_options, _to_stderr
from portkit.model import Protocol
from portkit.scan import PortState, ScanOptions, ScanType, run_scan
from portkit.scan import output as render

SCAN_PACKAGE = Path(portkit.scan.__file__).parent


def _reads_of_the_process_environment(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name = f"{node.value.id}.{node.attr}"
            if name in ("os.environ", "os.getenv", "os.environb", "sys.argv"):
                found.append(f"line {node.lineno}: {name}")
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
            found += [
                f"line {node.lineno}: from {node.module} import {a.name}"
                for a in node.names
                if a.name in ("environ", "getenv", "environb", "argv")
            ]
    return found


@pytest.mark.parametrize("module", sorted(SCAN_PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_the_scanner_reads_no_environment_and_no_argv(module: Path) -> None:
    assert _reads_of_the_process_environment(ast.parse(module.read_text())) == []


def test_the_check_finds_what_it_looks_for() -> None:
    text = "import os, sys\nfrom os import environ\nx = os.environ.get('A')\ny = sys.argv[1]\n"
    assert len(_reads_of_the_process_environment(ast.parse(text))) == 3


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_settings_come_from_the_options(
    listener: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The variables the CLI honours and a stray command line change nothing in the library.
    monkeypatch.setenv("PORTKIT_SCAN_DEBUG", "1")
    monkeypatch.setenv("PORTKIT_SCAN_WORKERS", "2")
    monkeypatch.setattr(sys, "argv", ["pytest", "scan", "--not-this"])
    lines: list[str] = []
    options = ScanOptions(
        targets=["127.0.0.1"],
        ports=f"{listener},{listener + 1 if listener < 65535 else 1}",
        scan_type=ScanType.CONNECT,
        skip_discovery=True,
        seed=5,
        debug=lines.append,
    )
    result = run_scan(options)
    assert capsys.readouterr().err == ""
    io = "c" if importlib.util.find_spec("portkit.scan._connectio") else "python"  # the C path if built
    assert lines == [f"workers=1 io={io} sent=2 retrans=0 drops=0 cwnd=" + lines[0].rsplit("=", 1)[1]]
    assert result.command == "" and result.args == {"seed": 5, "timing": 3}
    assert result.hosts[0].port(listener, Protocol.TCP).state is PortState.OPEN  # type: ignore[union-attr]
    # The writers take the command line from their caller.
    assert 'args="portkit scan 127.0.0.1"' in render.render_xml(result, "portkit scan 127.0.0.1")
    assert render.render_grepable(result).splitlines()[0].endswith(" as: portkit scan")
    assert '"command": "x y"' in render.render_json(result, "x y")
    options.workers = 2
    lines.clear()
    run_scan(options)
    assert [line.split()[0] for line in lines] == ["workers=2", "workers=2"]


class OneService:
    """A registry whose only service, "mine", is on `port`."""

    def __init__(self, port: int) -> None:
        self.port = port

    def ports_for_name(self, name: str) -> list[tuple[int, Protocol]]:
        return [(self.port, Protocol.TCP)] if name == "mine" else []

    def top_ports(self, count: int, protocol: Protocol) -> list[int]:
        return [self.port][:count]


def test_the_caller_gives_the_registry_and_the_port_names(listener: int) -> None:
    options = ScanOptions(
        targets=["127.0.0.1"], ports="mine", scan_type=ScanType.CONNECT, skip_discovery=True
    )
    result = run_scan(options, registry=OneService(listener), port_names=lambda port, protocol: f"p{port}")
    assert (result.nports, result.services) == (1, str(listener))
    port = result.hosts[0].port(listener)
    assert port is not None and port.service is not None and port.service.name == f"p{listener}"
    top = run_scan(
        ScanOptions(targets=["127.0.0.1"], ports="top:1", scan_type=ScanType.CONNECT, skip_discovery=True),
        registry=OneService(listener),
        port_names=lambda port, protocol: "",
    )
    listed = top.hosts[0].port(listener)
    assert listed is not None and listed.service is None  # no name, no <service>, as nmap


def test_the_cli_maps_the_environment_onto_options() -> None:
    assert _environment_options({}) == {"workers": None, "pure_python": False, "debug": None}
    assert _environment_options(
        {"PORTKIT_SCAN_WORKERS": "3", "PORTKIT_SCAN_PURE": "1", "PORTKIT_SCAN_DEBUG": "1"}
    ) == {"workers": 3, "pure_python": True, "debug": _to_stderr}
    assert _environment_options({"PORTKIT_SCAN_WORKERS": "0", "PORTKIT_SCAN_PURE": "0"})["workers"] is None
    assert _environment_options({"PORTKIT_SCAN_WORKERS": "two"})["workers"] is None
