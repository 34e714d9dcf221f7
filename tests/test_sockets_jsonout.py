"""Every fast JSON writer of the socket inventory (portkit.sockets._jsonout) against the reference,
`json.dumps(Socket.to_json())`, line by line, on a real mixed table: listeners, established
connections, TIME-WAIT, FIN-WAIT-2/CLOSE-WAIT, UDP unconnected and connected, both families.
Unix sockets are not part of the inventory (it lists the inet families only).

Each writer runs with the C module and with the pure-Python path where both exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest

import fixtures_sockets as fx
from portkit.sockets import SocketQuery, TcpState, Transport, _jsonout, _netlink, list_sockets
from portkit.sockets._inventory import Inventory
from portkit.sockets._model import Socket
from portkit.sockets._netlink import RawRows

QUERIES = {
    "lazy rows": SocketQuery(),
    "lazy rows with processes": SocketQuery(with_processes=True),
    "built rows with tcp_info": SocketQuery(tcp_info=True, with_processes=True),
    "built rows, filtered": SocketQuery(listening=True),
}


@contextmanager
def _python_only() -> Iterator[None]:
    """The JSON writers as an install without a C compiler has them."""
    saved = [getattr(module, "_diagrows") for module in (_netlink, _jsonout)]  # noqa: B009
    for module in (_netlink, _jsonout):
        setattr(module, "_diagrows", None)  # noqa: B010
    try:
        yield
    finally:
        for module, original in zip((_netlink, _jsonout), saved, strict=True):
            setattr(module, "_diagrows", original)  # noqa: B010


def _reference(sockets: list[Socket]) -> list[Any]:
    return [json.loads(json.dumps(s.to_json())) for s in sockets]


def _state_text() -> list[str]:
    text = [""] * 256
    for state in TcpState:
        text[state] = state.label
    return text


def _joined(lines: Callable[[], list[str]]) -> str:
    return ",\n".join(lines())


def _writers(inventory: Inventory) -> Iterator[tuple[str, list[Socket], Callable[[], str]]]:
    """(name, the rows it writes, the writer) for every batch of the inventory and every path."""
    for part in inventory._rows:
        if isinstance(part, RawRows):
            rows, netns = part.build(), json.dumps(part.netns)
            yield "raw_rows_text", rows, partial(_jsonout.raw_rows_text, part, _state_text(), netns, {})
            lines = partial(_jsonout.raw_rows_lines, part, _state_text(), netns, {})
            yield "raw_rows_lines", rows, partial(_joined, lines)
    built = [part for part in inventory._rows if isinstance(part, Socket)]
    if built:
        yield "socket_lines", built, lambda: _jsonout.socket_lines(built, _state_text(), {})


def _check_every_line(inventory: Inventory) -> set[str]:
    used: set[str] = set()
    for name, rows, write in _writers(inventory):
        lines = write().split(",\n")
        assert len(lines) == len(rows), name
        assert [json.loads(line) for line in lines] == _reference(rows), name
        used.add(name)
    document = "".join(inventory.json_chunks())
    assert json.loads(document) == json.loads(json.dumps(inventory.to_json()))
    return used


@pytest.fixture(scope="module")
def scene() -> Iterator[fx.Scene]:
    with fx.socket_scene() as scene:
        yield scene


def _covers_the_scene(inventory: Inventory, scene: fx.Scene, listening: bool) -> None:
    """The table holds the scene's kinds of rows, so the comparison is not over an easy subset."""
    mine = [s for s in inventory.sockets if scene.owns(s.local_port, s.remote_port)]
    kinds = {(s.transport, s.family, s.state) for s in mine}
    assert (Transport.TCP, 4, TcpState.LISTEN) in kinds and (Transport.TCP, 6, TcpState.LISTEN) in kinds
    assert (Transport.UDP, 4, TcpState.CLOSE) in kinds
    if not listening:
        assert (Transport.TCP, 4, TcpState.ESTABLISHED) in kinds
        assert (Transport.TCP, 4, TcpState.TIME_WAIT) in kinds
        assert (Transport.TCP, 6, TcpState.FIN_WAIT2) in kinds
        assert (Transport.TCP, 6, TcpState.CLOSE_WAIT) in kinds
        assert (Transport.UDP, 6, TcpState.ESTABLISHED) in kinds


@pytest.mark.parametrize("name", list(QUERIES))
def test_every_fast_line_is_socket_to_json(scene: fx.Scene, name: str) -> None:
    query = QUERIES[name]
    inventory = list_sockets(query)
    _covers_the_scene(inventory, scene, query.listening)
    used = _check_every_line(inventory)
    if name.startswith("lazy"):
        assert {"raw_rows_text", "raw_rows_lines"} <= used  # the kernel's bytes, written directly
    else:
        assert "socket_lines" in used  # (UDP rows of the tcp_info query stay lazy: no tcp_info there)
    with _python_only():
        assert _check_every_line(list_sockets(query)) == used


def test_proc_backend_rows_are_written_as_to_json(scene: fx.Scene) -> None:
    inventory = list_sockets(SocketQuery(with_processes=True), backend="proc")
    _covers_the_scene(inventory, scene, listening=False)
    assert _check_every_line(inventory) == {"socket_lines"}


def test_processes_of_a_row_are_written_as_to_json(scene: fx.Scene) -> None:
    inventory = list_sockets(SocketQuery(with_processes=True))
    ours = [s for s in inventory.sockets if scene.owns(s.local_port, s.remote_port) and s.processes]
    assert ours, "this process holds the scene's sockets: they must show it"
    _check_every_line(inventory)


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -7, 2**70, "plain", 'a "quote"', "tab\there", "é", [1, "x"], {"k": [None]}, 1.5, (1, 2)],
)
def test_header_encoder_writes_what_json_dumps_writes(value: Any) -> None:
    assert _jsonout.json_text(value) == json.dumps(value)


def test_socket_fields_are_read_by_name() -> None:
    # `_with_owners` swaps a row's processes by position: the position comes from the field's name.
    from portkit.sockets import _inventory

    assert Socket._fields[_inventory._PROCESSES] == "processes"


def test_built_rows_unpack_into_sockets_fields_by_name() -> None:
    # socket_lines unpacks each row into variables named as Socket's fields, in their order.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(_jsonout.socket_lines))
    [target] = [
        node.target
        for node in ast.walk(tree)
        if isinstance(node, ast.comprehension) and isinstance(node.target, ast.Tuple)
    ]
    assert isinstance(target, ast.Tuple)
    names = tuple(elt.id for elt in target.elts if isinstance(elt, ast.Name))
    assert names == Socket._fields
