"""SocketQuery, Inventory and Namespace behave as the frozen dataclasses they replaced.

They are plain slotted classes (portkit.sockets._value) so that `portkit ls --json` need not
import dataclasses; what a caller can do with a frozen dataclass must still work.
"""

from __future__ import annotations

import copy
import pickle

import pytest

from portkit.sockets import Inventory, Namespace, Socket, SocketQuery, TcpState, Transport

ROW = Socket(Transport.TCP, 4, TcpState.LISTEN, "127.0.0.1", 22, "0.0.0.0", 0, 0, 0, 0, 7, 0)
VALUES = [
    SocketQuery(),
    SocketQuery(transports=(Transport.UDP,), listening=True, pids=frozenset({1}), count_states=frozenset()),
    Namespace(None, 4026531840, None),
    Namespace("pk3-x", 4026532000, "/run/netns/pk3-x", 12),
    Inventory(_rows=(ROW,), backend="netlink", namespaces=(Namespace(None, 1, None),), counted={None: 3}),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_equal_copies_by_pickle_copy_and_replace(value: object) -> None:
    assert pickle.loads(pickle.dumps(value)) == value
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value
    assert value.replace() == value  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_fields_cannot_be_assigned_or_deleted(value: object) -> None:
    name = type(value)._fields[1]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        setattr(value, name, None)
    with pytest.raises(AttributeError):
        delattr(value, name)
    with pytest.raises(AttributeError):
        value.unknown = 1  # type: ignore[attr-defined]


def test_equality_hash_and_repr_go_by_fields() -> None:
    assert SocketQuery(listening=True) == SocketQuery(listening=True)
    assert SocketQuery(listening=True) != SocketQuery()
    assert hash(SocketQuery(tcp_info=True)) == hash(SocketQuery(tcp_info=True))
    assert len({Namespace(None, 1, None), Namespace(None, 1, None), Namespace("a", 1, "/a")}) == 2
    assert SocketQuery() != Namespace(None, 1, None)
    assert repr(Namespace("a", 2, "/p", 3)) == "Namespace(label='a', inode=2, path='/p', pid=3)"
    assert SocketQuery().replace(listening=True) == SocketQuery(listening=True)
    with pytest.raises(TypeError):
        SocketQuery().replace(listen=True)


def test_an_inventory_compares_by_sockets_not_by_processes_looked_up() -> None:
    one = Inventory(_rows=(ROW,), backend="netlink", namespaces=(), _processes={1: None})  # type: ignore[dict-item]
    other = Inventory(_rows=(ROW,), backend="netlink", namespaces=())
    assert one == other  # _processes takes no part, as with field(compare=False)
    assert one != other.replace(backend="proc")
    assert "_processes" not in repr(one)
    assert one.replace(hidden_pids=2).hidden_pids == 2 and one.replace(hidden_pids=2).sockets == (ROW,)
