"""nft JSON statements and expressions (libnftables-json(5)) written back in nft syntax.

portkit keeps a rule part it cannot model as the JSON `nft -j` gave it; people read it in the
syntax `nft list ruleset` prints, and that text loads again: `nft -c` accepts what this renders
and lists it as the same JSON (tests/test_firewall_nftexpr.py checks that with the real nft).

One table per kind of node: statements, verdicts, expressions keyed by their JSON name.
Anything this renderer does not know is written as its compact JSON, never as invented syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# Match operators nft prints; `==` and `in` are implicit (`tcp dport 22`, `ct status dnat`).
_IMPLICIT_OPS = {"==", "in"}
_BINARY_OPS = ("&", "|", "^", "<<", ">>")
# Keys whose string values are names nft quotes (interface names, helpers, osf names).
_QUOTED_META = {"iifname", "oifname", "ibrname", "obrname", "ibriport", "obriport", "sdifname"}
_BARE = re.compile(r"[A-Za-z0-9_./:*+\-]+")
_VERDICTS = ("accept", "drop", "continue", "return", "queue")


def render_json_text(text: str) -> str:
    """`text` in nft syntax when it is a JSON statement (or a list of them), else unchanged."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[", '"')):
        return text
    try:
        node = json.loads(stripped)
    except ValueError:
        return text
    if isinstance(node, str):
        return node  # a statement nft -j has no JSON form for, which it writes as nft text
    if isinstance(node, list):
        return " ".join(render_statement(s) for s in node)
    return render_statement(node)


def render_embedded_json(text: str) -> str:
    """`text` (a note, a message) with each nft JSON statement in it written in nft syntax."""
    decoder = json.JSONDecoder()
    out: list[str] = []
    at = 0
    while (start := text.find("{", at)) >= 0:
        try:
            node, end = decoder.raw_decode(text, start)
        except ValueError:
            out.append(text[at : start + 1])
            at = start + 1
            continue
        before = text[at:start]
        keyword = before.rstrip().rpartition(" ")[2]
        if isinstance(node, dict) and len(node) == 1 and next(iter(node)) in _STATEMENTS:
            rendered = render_statement(node)
            if rendered == _raw(node):  # not a statement after all: `{"set": [...]}` is a value too
                rendered = render_expr(node)
        elif keyword in _STATEMENTS and before.endswith(" "):
            # "limit {...}": a statement's arguments after its name
            before = before[: len(before) - len(keyword) - 1]
            rendered = render_statement({keyword: node})
        else:
            rendered = render_expr(node)
        out.append(before + rendered)
        at = end
    out.append(text[at:])
    return "".join(out)


def render_statement(stmt: Any) -> str:
    """One statement of a rule's `expr` list in nft syntax."""
    if isinstance(stmt, str):
        # nft -j writes a statement it has no JSON form for (`update @map { ... }`) as nft text.
        return stmt
    if not isinstance(stmt, dict) or len(stmt) != 1:
        return _raw(stmt)
    key, val = next(iter(stmt.items()))
    if key in _VERDICTS and val is None:
        return str(key)
    render = _STATEMENTS.get(key)
    if render is None:
        return _raw(stmt)
    try:
        return render(val)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return _raw(stmt)


def render_expr(expr: Any, quote: bool = False) -> str:
    """One expression (left or right of a match, a set element, a NAT address ...)."""
    if isinstance(expr, bool):
        return "exists" if expr else "missing"
    if isinstance(expr, int | float):
        return str(expr)
    if isinstance(expr, str):
        return _string(expr, quote)
    if isinstance(expr, list):
        # A list outside a set is a flag combination: `ct state established,related`.
        return ",".join(render_expr(e, quote) for e in expr)
    if not isinstance(expr, dict) or len(expr) != 1:
        return _raw(expr)
    key, val = next(iter(expr.items()))
    if key in _BINARY_OPS:
        left, right = val
        return f"{_operand(left, quote)} {key} {_operand(right, quote)}"
    if key in _VERDICTS and val is None:
        return str(key)
    render = _EXPRESSIONS.get(key)
    if render is None:
        return _raw(expr)
    try:
        return render(val, quote)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return _raw(expr)


def _raw(node: Any) -> str:
    return json.dumps(node, separators=(",", ":"), sort_keys=True)


def _string(text: str, quote: bool) -> str:
    if text.startswith("@") or text.startswith("$"):
        return text  # a named set or map, a variable
    if not quote and _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _operand(expr: Any, quote: bool) -> str:
    text = render_expr(expr, quote)
    if isinstance(expr, dict) and next(iter(expr), None) in _BINARY_OPS:
        return f"({text})"
    if isinstance(expr, list) and len(expr) > 1:
        return "(" + " | ".join(render_expr(e, quote) for e in expr) + ")"
    return text


def _quotes(left: Any) -> bool:
    """Whether string values compared with `left` are names nft writes in quotes."""
    if isinstance(left, dict):
        if "meta" in left:
            return left["meta"].get("key") in _QUOTED_META
        if "osf" in left:
            return True
        if "concat" in left:
            return False
    return False


# --- expressions ------------------------------------------------------------------------------


def _payload(val: dict[str, Any], quote: bool) -> str:
    if "protocol" in val:
        return f"{val['protocol']} {val['field']}"
    return f"@{val['base']},{val['offset']},{val['len']}"  # raw payload: base, bit offset, bit length


def _meta(val: dict[str, Any], quote: bool) -> str:
    return f"meta {val['key']}"


def _ct(val: dict[str, Any], quote: bool) -> str:
    words = ["ct"]
    if val.get("dir"):
        words.append(val["dir"])
    if val.get("family"):
        words.append(val["family"])
    words.append(val["key"])
    return " ".join(words)


def _set(val: Any, quote: bool) -> str:
    if isinstance(val, str):
        return val  # "@name"
    items = val if isinstance(val, list) else [val]
    return "{ " + ", ".join(_element(item, quote) for item in items) + " }"


def _element(item: Any, quote: bool) -> str:
    # A map's element is a [key, value] pair.
    if isinstance(item, list) and len(item) == 2:
        return f"{render_expr(item[0], quote)} : {render_expr(item[1])}"
    return render_expr(item, quote)


def _elem(val: dict[str, Any], quote: bool) -> str:
    words = [render_expr(val["val"], quote)]
    for option in ("timeout", "expires"):
        if option in val:
            words.append(f"{option} {_seconds(val[option])}")
    if "comment" in val:
        words.append(f"comment {_string(val['comment'], True)}")
    return " ".join(words)


def _seconds(value: Any) -> str:
    return f"{value}s" if isinstance(value, int) else str(value)


def _prefix(val: dict[str, Any], quote: bool) -> str:
    return f"{render_expr(val['addr'])}/{val['len']}"


def _range(val: list[Any], quote: bool) -> str:
    low, high = val
    return f"{render_expr(low, quote)}-{render_expr(high, quote)}"


def _concat(val: list[Any], quote: bool) -> str:
    return " . ".join(render_expr(e, quote) for e in val)


def _map(val: dict[str, Any], quote: bool) -> str:
    return f"{render_expr(val['key'])} map {render_expr(val['data'])}"


def _exthdr(val: dict[str, Any], quote: bool) -> str:
    text = f"exthdr {val['name']}"
    return f"{text} {val['field']}" if "field" in val else text


def _option(kind: str) -> Callable[[dict[str, Any], bool], str]:
    def render(val: dict[str, Any], quote: bool) -> str:
        text = f"{kind} {val['name']}"
        return f"{text} {val['field']}" if "field" in val else text

    return render


def _rt(val: dict[str, Any], quote: bool) -> str:
    return " ".join(["rt", *([val["family"]] if val.get("family") else []), val["key"]])


def _socket(val: dict[str, Any], quote: bool) -> str:
    return f"socket {val['key']}"


def _osf(val: dict[str, Any], quote: bool) -> str:
    ttl = f" ttl {val['ttl']}" if val.get("ttl") else ""
    return f"osf{ttl} {val['key']}"


def _fib(val: dict[str, Any], quote: bool) -> str:
    flags = val.get("flags", [])
    return f"fib {' . '.join(flags if isinstance(flags, list) else [flags])} {val['result']}"


def _numgen(val: dict[str, Any], quote: bool) -> str:
    offset = f" offset {val['offset']}" if val.get("offset") else ""
    return f"numgen {val['mode']} mod {val['mod']}{offset}"


def _jhash(val: dict[str, Any], quote: bool) -> str:
    seed = f" seed {hex(val['seed'])}" if "seed" in val else ""
    offset = f" offset {val['offset']}" if val.get("offset") else ""
    return f"jhash {render_expr(val['expr'])} mod {val['mod']}{seed}{offset}"


def _symhash(val: dict[str, Any], quote: bool) -> str:
    offset = f" offset {val['offset']}" if val.get("offset") else ""
    return f"symhash mod {val['mod']}{offset}"


def _verdict_expr(kind: str) -> Callable[[dict[str, Any], bool], str]:
    def render(val: dict[str, Any], quote: bool) -> str:
        return f"{kind} {val['target']}"

    return render


_EXPRESSIONS: dict[str, Callable[[Any, bool], str]] = {
    "payload": _payload,
    "meta": _meta,
    "ct": _ct,
    "set": _set,
    "elem": _elem,
    "prefix": _prefix,
    "range": _range,
    "concat": _concat,
    "map": _map,
    "exthdr": _exthdr,
    "tcp option": _option("tcp option"),
    "ip option": _option("ip option"),
    "sctp chunk": _option("sctp chunk"),
    "rt": _rt,
    "socket": _socket,
    "osf": _osf,
    "fib": _fib,
    "numgen": _numgen,
    "jhash": _jhash,
    "symhash": _symhash,
    "jump": _verdict_expr("jump"),
    "goto": _verdict_expr("goto"),
}


# --- statements -------------------------------------------------------------------------------


def _match(val: dict[str, Any]) -> str:
    left, right, op = val["left"], val["right"], val["op"]
    quote = _quotes(left)
    left_text = render_expr(left)
    if isinstance(right, bool):  # `exthdr frag exists`, `tcp option maxseg missing`
        return f"{left_text} {render_expr(right)}" if op == "==" else f"{left_text} {op} {render_expr(right)}"
    right_text = _operand(right, quote) if isinstance(right, dict) else render_expr(right, quote)
    if op == "==" and isinstance(left, dict) and next(iter(left), None) in _BINARY_OPS:
        return f"{left_text} == {right_text}"  # `tcp flags & (syn | ack) == syn`, as nft lists it
    if op in _IMPLICIT_OPS:
        return f"{left_text} {right_text}"
    return f"{left_text} {op} {right_text}"


def _counter(val: Any) -> str:
    if isinstance(val, str):
        return f'counter name "{val}"'
    if isinstance(val, dict) and ("packets" in val or "bytes" in val):
        return f"counter packets {val.get('packets', 0)} bytes {val.get('bytes', 0)}"
    return "counter"


def _log(val: Any) -> str:
    words = ["log"]
    val = val or {}
    if "prefix" in val:
        words.append(f"prefix {_string(val['prefix'], True)}")
    if "level" in val:
        words.append(f"level {val['level']}")
    if "group" in val:
        words.append(f"group {val['group']}")
    if "snaplen" in val:
        words.append(f"snaplen {val['snaplen']}")
    if "queue-threshold" in val:
        words.append(f"queue-threshold {val['queue-threshold']}")
    flags = val.get("flags", [])
    for flag in flags if isinstance(flags, list) else [flags]:
        words.append(f"flags {flag}")
    return " ".join(words)


def _limit(val: dict[str, Any]) -> str:
    over = "over " if val.get("inv") else ""
    unit = val.get("rate_unit", "packets")
    rate = (
        f"{val['rate']}/{val.get('per', 'second')}"
        if unit == "packets"
        else (f"{val['rate']} {unit}/{val.get('per', 'second')}")
    )
    words = [f"limit rate {over}{rate}"]
    if val.get("burst"):
        burst_unit = val.get("burst_unit", "packets" if unit == "packets" else "bytes")
        words.append(f"burst {val['burst']} {burst_unit}")
    return " ".join(words)


def _quota(val: dict[str, Any]) -> str:
    over = "over " if val.get("inv") else ""
    text = f"quota {over}{val['val']} {val.get('val_unit', 'bytes')}"
    if val.get("used"):
        text += f" used {val['used']} {val.get('used_unit', 'bytes')}"
    return text


def _ct_count(val: dict[str, Any]) -> str:
    return f"ct count {'over ' if val.get('inv') else ''}{val['val']}"


def _reject(val: Any) -> str:
    if not val:
        return "reject"
    kind = val.get("type")
    if kind == "tcp reset":
        return "reject with tcp reset"
    if kind and "expr" in val:
        return f"reject with {kind} {val['expr']}"
    if kind:
        return f"reject with {kind}"
    return "reject"


def _nat(kind: str) -> Callable[[Any], str]:
    def render(val: Any) -> str:
        if not val:
            return kind
        words = [kind]
        target = ""
        if "addr" in val:
            family = val.get("family")
            target = render_expr(val["addr"])
            if family:
                words.append(family)
        if "port" in val:
            if ":" in target:  # an IPv6 address before a port is bracketed: `[2001:db8::1]:80`
                target = f"[{target}]"
            target = f"{target}:{render_expr(val['port'])}"
        if target:
            words += ["to", target]
        flags = val.get("flags", [])
        if flags:
            words.append(",".join(flags if isinstance(flags, list) else [flags]))
        return " ".join(words)

    return render


def _tproxy(val: dict[str, Any]) -> str:
    words = ["tproxy"]
    if val.get("family"):
        words.append(val["family"])
    target = render_expr(val["addr"]) if "addr" in val else ""
    if "port" in val:
        target = f"{target}:{render_expr(val['port'])}"
    return " ".join([*words, "to", target])


def _queue(val: Any) -> str:
    if not val:
        return "queue"
    words = ["queue"]
    flags = val.get("flags", [])
    if flags:
        words.append("flags " + ",".join(flags if isinstance(flags, list) else [flags]))
    if "num" in val:
        words.append(f"to {render_expr(val['num'])}")
    return " ".join(words)


def _verdict_stmt(kind: str) -> Callable[[dict[str, Any]], str]:
    def render(val: dict[str, Any]) -> str:
        return f"{kind} {val['target']}"

    return render


def _vmap(val: dict[str, Any]) -> str:
    return f"{render_expr(val['key'])} vmap {render_expr(val['data'])}"


def _mangle(val: dict[str, Any]) -> str:
    return f"{render_expr(val['key'])} set {render_expr(val['value'], _quotes(val['key']))}"


def _set_stmt(val: dict[str, Any]) -> str:
    inner = [render_expr(val["elem"])]
    inner.extend(render_statement(s) for s in val.get("stmt", []))
    return f"{val['op']} {val['set']} {{ {' '.join(inner)} }}"


def _map_stmt(val: dict[str, Any]) -> str:
    inner = [render_expr(val["elem"])]
    inner.extend(render_statement(s) for s in val.get("stmt", []))
    return f"{val['op']} {val['map']} {{ {' '.join(inner)} : {render_expr(val['data'])} }}"


def _meter(val: dict[str, Any]) -> str:
    size = f" size {val['size']}" if val.get("size") else ""
    stmt = val["stmt"]
    stmts = stmt if isinstance(stmt, list) else [stmt]
    inner = " ".join([render_expr(val["key"]), *(render_statement(s) for s in stmts)])
    return f"meter {val['name']}{size} {{ {inner} }}"


def _notrack(val: Any) -> str:
    return "notrack"


def _ct_object(kind: str) -> Callable[[Any], str]:
    def render(val: Any) -> str:
        return f"ct {kind} set {render_expr(val, True)}"

    return render


def _dup(val: dict[str, Any]) -> str:
    words = ["dup", "to", render_expr(val["addr"])] if "addr" in val else ["dup"]
    if "dev" in val:
        words += ["device", render_expr(val["dev"], True)]
    return " ".join(words)


def _fwd(val: dict[str, Any]) -> str:
    if "addr" in val:
        family, addr, dev = val.get("family", "ip"), render_expr(val["addr"]), render_expr(val["dev"], True)
        return f"fwd {family} to {addr} device {dev}"
    return f"fwd to {render_expr(val['dev'], True)}"


def _flow(val: dict[str, Any]) -> str:
    return f"flow {val.get('op', 'add')} {val['flowtable']}"


def _synproxy(val: Any) -> str:
    words = ["synproxy"]
    val = val or {}
    if "mss" in val:
        words.append(f"mss {val['mss']}")
    if "wscale" in val:
        words.append(f"wscale {val['wscale']}")
    flags = val.get("flags", [])
    words.extend(flags if isinstance(flags, list) else [flags])
    return " ".join(words)


def _xt(val: dict[str, Any]) -> str:
    # iptables-nft's compatibility expressions have no nft syntax; nft lists them as a comment.
    return f"xt {val.get('type', 'match')} {_string(str(val.get('name', '?')), True)}"


def _last(val: Any) -> str:
    if isinstance(val, dict) and "used" in val:
        return f"last used {val['used']}"
    return "last"


def _secmark(val: Any) -> str:
    return f"meta secmark set {render_expr(val, True)}"


_STATEMENTS: dict[str, Callable[[Any], str]] = {
    "match": _match,
    "counter": _counter,
    "log": _log,
    "limit": _limit,
    "quota": _quota,
    "ct count": _ct_count,
    "reject": _reject,
    "snat": _nat("snat"),
    "dnat": _nat("dnat"),
    "masquerade": _nat("masquerade"),
    "redirect": _nat("redirect"),
    "tproxy": _tproxy,
    "queue": _queue,
    "jump": _verdict_stmt("jump"),
    "goto": _verdict_stmt("goto"),
    "vmap": _vmap,
    "mangle": _mangle,
    "set": _set_stmt,
    "map": _map_stmt,
    "meter": _meter,
    "notrack": _notrack,
    "ct helper": _ct_object("helper"),
    "ct timeout": _ct_object("timeout"),
    "ct expectation": _ct_object("expectation"),
    "dup": _dup,
    "fwd": _fwd,
    "flow": _flow,
    "synproxy": _synproxy,
    "xt": _xt,
    "last": _last,
    "secmark": _secmark,
}
