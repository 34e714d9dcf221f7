"""JSON shapes of ls, who and overview (docs/json.md, "sockets"), and the fast JSON writer."""

from __future__ import annotations

import json
import socket
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import fixtures_sockets as fx
from portkit.sockets import SocketQuery, TcpState, list_sockets
from portkit.sockets._jsonout import json_text

SOCKET_KEYS = {
    "protocol",
    "family",
    "state",
    "local",
    "remote",
    "recv_q",
    "send_q",
    "uid",
    "inode",
    "interface",
    "netns",
    "processes",
}
PROCESS_KEYS = {"pid", "name", "cmdline", "uid", "user", "parents", "unit", "container"}


def test_ls_json_shape(cli: Any) -> None:
    with fx.listener_process("4", "tcp") as (proc, port):
        doc = cli("ls", "--json", "--port", str(port)).json()
        assert set(doc) == {
            "backend",
            "namespaces",
            "processes_looked_up",
            "processes_complete",
            "warnings",
            "sockets",
            "processes",
        }
        assert doc["backend"] == "netlink" and doc["processes_looked_up"] is True
        [row] = doc["sockets"]
        assert set(row) == SOCKET_KEYS
        assert row["local"] == {"address": "127.0.0.1", "port": port}
        assert row["processes"] == [{"pid": proc.pid, "name": row["processes"][0]["name"]}]
        assert set(doc["processes"][str(proc.pid)]) == PROCESS_KEYS
        assert doc["namespaces"][0]["current"] is True and doc["namespaces"][0]["name"] is None


def test_ls_all_json_without_processes(cli: Any) -> None:
    doc = cli("ls", "--all", "--json", "--proto", "tcp").json()
    assert doc["processes_looked_up"] is False and doc["processes"] == {}
    assert all(set(row) == SOCKET_KEYS and row["processes"] == [] for row in doc["sockets"])


def test_fast_json_text_equals_to_json() -> None:
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2])
    try:
        for query in (SocketQuery(), SocketQuery(with_processes=True, tcp_info=True)):
            inventory = list_sockets(query)
            assert inventory.sockets
            assert json.loads("".join(inventory.json_chunks())) == json.loads(json.dumps(inventory.to_json()))
    finally:
        client.close()
        listener.close()


def test_who_json_shape(cli: Any) -> None:
    with fx.listener_process("6", "udp") as (_proc, port):
        doc = cli("who", f"{port}/udp", "--json").json()
        assert set(doc) == {
            "port",
            "protocol",
            "service",
            "in_use",
            "holders",
            "processes",
            "connections",
            "time_wait",
            "clients",
            "advice",
            "explanation",
            "root_note",
            "risk",
            "exposed",
        }
        assert doc["port"] == port and doc["protocol"] == "udp" and doc["in_use"] is True
        assert set(doc["holders"][0]) == SOCKET_KEYS and set(doc["processes"][0]) == PROCESS_KEYS
        assert set(doc["advice"][0]) == {"command", "target"}


def test_overview_json_shape(cli: Any) -> None:
    with fx.listener_process("4", "tcp") as (proc, port):
        doc = cli("overview", "--json").json()
        assert set(doc) == {"listeners", "worth_a_look", "established_total", "root_note"}
        [mine] = [entry for entry in doc["listeners"] if entry["port"] == port and entry["protocol"] == "tcp"]
        assert set(mine) == {
            "protocol",
            "port",
            "exposure",
            "addresses",
            "service",
            "category",
            "risk",
            "processes",
            "units",
            "containers",
            "uid",
            "netns",
            "established",
            "owner_unknown",
        }
        assert mine["exposure"] == "loopback"
        assert mine["addresses"] == ["127.0.0.1"]
        assert mine["processes"][0]["pid"] == proc.pid
        assert mine["established"] == 1
        assert doc["established_total"] >= 2


# Values shaped like an inventory's header and processes, with every kind of string and number.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.sampled_from(list(TcpState)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None, max_examples=300)
@given(json_values)
def test_json_text_writes_what_json_dumps_writes(value: Any) -> None:
    assert json_text(value) == json.dumps(value)
