"""The socket inventory as JSON text: every fast writer behind `portkit ls --json`, in one place.

The reference is `json.dumps(inventory.to_json())`, that is `Socket.to_json()` for each row;
every writer here produces text that parses to the same value, and
tests/test_sockets_jsonout.py holds each of them to that on a real mixed inventory.

Why fast writers at all: `portkit ls --all --json` is measured against `ss -tan` on tens of
thousands of sockets, and a dict per row passed through json.dumps costs more than `ss` takes
for the whole table. So rows are written as text directly, one f-string per row, with the few
values that are not plain numbers (state label, namespace, processes) looked up ready-made:

- `inventory_chunks`: the whole document, a batch of rows at a time (a recv() buffer's worth;
  joining megabytes of rows first would copy them once more).
- `json_text`: json.dumps of the header's plain values without importing json.
- `socket_lines`: rows already built as `Socket`s.
- `raw_rows_text`: rows still in the kernel's bytes (`_netlink.RawRows`), written from the
  netlink messages without becoming Sockets; in C by `portkit.sockets._diagrows.json_text`
  when that module is built, else by `raw_rows_lines`, its Python reference (tests run both
  and require the same bytes).

Rows of one process share one tuple of processes, so its JSON is made once, keyed by id().
This module imports neither json nor typing at load: it is on the path of `portkit ls --json`
(portkit.sockets, "Import cost").
"""

from __future__ import annotations

from itertools import repeat

from portkit.sockets._model import Socket, TcpState

try:
    from portkit.sockets import _diagrows
except ImportError:  # installed without a C compiler: the Python path does the same work
    _diagrows = None  # type: ignore[assignment]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from portkit.sockets._inventory import Inventory
    from portkit.sockets._netlink import RawRows
    from portkit.sockets._process import ProcessInfo
    from portkit.sockets._tcpinfo import TcpInfo


def inventory_chunks(inventory: Inventory, header: dict[str, object]) -> Iterator[str]:
    """`json.dumps(inventory.to_json())` as text chunks, one socket per line (`header` is the
    document's fields before "sockets")."""
    dumps = json_text
    yield dumps(header)[:-1] + ', "sockets": [\n'
    # Indexed by the state's number: an IntEnum's hash runs Python code, a list index does not.
    state_text = [""] * 256
    for known in TcpState:
        state_text[known] = known.label
    procs_text: dict[int, str] = {}
    separator = ""
    built: list[Socket] = []
    for part in (*inventory._rows, None):
        if isinstance(part, Socket):
            built.append(part)
            continue
        if built:
            yield separator + socket_lines(built, state_text, procs_text)
            separator = ",\n"
            built = []
        if part is not None:
            yield separator
            yield raw_rows_text(part, state_text, dumps(part.netns), procs_text)
            separator = ",\n"
    processes = {str(pid): p.to_json() for pid, p in sorted(inventory._processes.items())}
    yield '\n], "processes": ' + dumps(processes) + "}\n"


def json_text(value: object) -> str:
    """`json.dumps(value)`, without importing json for the plain values of a header.

    None, booleans, ints, lists, dicts with str keys and strings that need no escape are
    written here exactly as json.dumps writes them (its default separators); anything else
    (floats, tuples, enums, a string with a quote or a control character) goes to json.dumps,
    whose output for a part is the same text it writes inside a whole.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    # Exact types only (isinstance alone would let subclasses such as IntEnum through).
    kind = type(value)
    if kind is int and isinstance(value, int):
        return int.__repr__(value)
    if kind is str and isinstance(value, str):
        if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            return f'"{value}"'
    elif kind is list and isinstance(value, list):
        return "[" + ", ".join([json_text(item) for item in value]) + "]"
    elif kind is dict and isinstance(value, dict) and all(type(key) is str for key in value):
        return "{" + ", ".join([f"{json_text(key)}: {json_text(item)}" for key, item in value.items()]) + "}"
    import json

    return json.dumps(value)


def add_procs_text(procs_text: dict[int, str], held: Iterable[tuple[ProcessInfo, ...]]) -> None:
    """Add the JSON of every process tuple in `held` to `procs_text` (keyed by id() of the tuple)."""
    import json

    for key, procs in {id(procs): procs for procs in held}.items():
        if key not in procs_text:
            procs_text[key] = json.dumps([{"pid": p.pid, "name": p.name} for p in procs])


def socket_lines(sockets: list[Socket], state_text: list[str], procs_text: dict[int, str]) -> str:
    """`Socket.to_json()` of each built row as text, joined by ",\\n"."""
    import json

    netns_text = {ns: json.dumps(ns) for ns in {s.netns for s in sockets}}
    add_procs_text(procs_text, (s.processes for s in sockets))
    # Each row unpacks into its fields by their names, in Socket's order (a test checks the
    # names against Socket._fields), which costs less per row than reading 15 attributes.
    # fmt: off
    return ",\n".join([
        f'{{"protocol": "{transport._value_}", "family": {family}, "state": "{state_text[state]}", '
        f'"local": {{"address": "{local_address}", "port": {local_port}}}, '
        f'"remote": {{"address": "{remote_address}", "port": {remote_port}}}, '
        f'"recv_q": {recv_q}, "send_q": {send_q}, "uid": {uid}, "inode": {inode}, '
        f'"interface": {interface or "null"}, "netns": {netns_text[netns]}, '
        f'"processes": {procs_text[id(processes)]}'
        f'{"" if tcp_info is None else _tcp_info_json(tcp_info)}}}'
        for (transport, family, state, local_address, local_port, remote_address, remote_port,
             recv_q, send_q, uid, inode, interface, netns, processes, tcp_info)
        in sockets
    ])
    # fmt: on


def _tcp_info_json(info: TcpInfo) -> str:
    import json

    return ', "tcp_info": ' + json.dumps(info.to_json())


def raw_rows_text(rows: RawRows, state_text: list[str], netns_json: str, procs_text: dict[int, str]) -> str:
    """`raw_rows_lines` joined by ",\\n": in C when portkit.sockets._diagrows is built."""
    if _diagrows is None:
        return ",\n".join(raw_rows_lines(rows, state_text, netns_json, procs_text))
    head = f'{{"protocol": "{rows.transport.value}", "family": {rows.version}, "state": "'
    netns_part = f', "netns": {netns_json}, "processes": '
    tail: str | list[str]
    if rows.owners is None:
        tail = netns_part + "[]}"
    else:
        held = list(rows.processes())
        add_procs_text(procs_text, held)
        tail = [f"{netns_part}{procs_text[id(procs)]}}}" for procs in held]
    return _diagrows.json_text(rows.body, rows.size, rows.count, rows.version, head, state_text, tail)


def raw_rows_lines(
    rows: RawRows, state_text: Sequence[str], netns_json: str, procs_text: dict[int, str]
) -> list[str]:
    """`Socket.to_json()` of every socket of `rows` as text, read from the netlink messages;
    the Python reference of `_diagrows.json_text`."""
    from portkit.sockets._netlink import _ADDRESS_TEXT, _column_structs

    whole, ports, _check, _inode = _column_structs(rows.size)
    text = _ADDRESS_TEXT[rows.version]
    # What every row of the batch shares is written once, not substituted per row.
    head = f'{{"protocol": "{rows.transport.value}", "family": {rows.version}, "state": "'
    netns_part = f', "netns": {netns_json}, "processes": '
    if rows.owners is None:
        tails: Iterable[str] = repeat(netns_part + "[]}", rows.count)
    else:
        held = list(rows.processes())
        add_procs_text(procs_text, held)
        tails = [f"{netns_part}{procs_text[id(procs)]}}}" for procs in held]
    # Each message unpacks into struct inet_diag_msg's fields as named here (see _netlink._ROW).
    # fmt: off
    return [
        f'{head}{state_text[state]}", "local": {{"address": "{text[src]}", "port": {sport}}}, '
        f'"remote": {{"address": "{text[dst]}", "port": {dport}}}, '
        f'"recv_q": {rqueue}, "send_q": {wqueue}, "uid": {uid}, "inode": {inode}, '
        f'"interface": {ifindex or "null"}{tail}'
        for (_len, _type, _family, state, _sp, _dp, src, dst, ifindex, rqueue, wqueue, uid, inode),
            (sport, dport), tail
        in zip(whole.iter_unpack(rows.body), ports.iter_unpack(rows.body), tails, strict=True)
    ]
    # fmt: on
