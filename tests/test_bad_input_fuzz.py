"""Property-based fuzzing of every input surface: malformed input never crashes portkit.

Each test takes valid inputs (tests/data/bad_input/, and valid option values) and mutates
them the ways real bad input looks: bytes that are not UTF-8, truncation, a number replaced
by a 5,000-digit one or by Unicode digits, NaN and infinity, nesting a thousand deep, a
line duplicated or dropped, a separator inserted. The CLI runs in-process (portkit.cli.main
.main, as the console script runs it). The property: the run either succeeds (exit 0, or 1
where the command uses 1 for a finding) or ends with exit 2 and exactly one short line on
stderr; never "internal error", never a traceback. Where a mutation is invalid for sure
(bytes that are not UTF-8), exit 2 is required.

Nothing here sends a packet: scans stop after their input is parsed (HostTable is where the
scan would start), name resolution is answered locally for "localhost" only, and `forward`
always runs with --check. Each test is bounded by max_examples; the file runs in about a
minute (PORTKIT_FUZZ_SCALE=N for N times more). The number of inputs tried per surface is
printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import needs_root
from fixtures_bad_input import MAX_LINE, MainResult, run_main

DATA = Path(__file__).parent / "data" / "bad_input"
TRIED: Counter[str] = Counter()

# PORTKIT_FUZZ_SCALE=N runs N times as many inputs, drawn at random instead of the fixed set.
SCALE = int(os.environ.get("PORTKIT_FUZZ_SCALE", "1"))
FUZZ = settings(
    deadline=None,
    derandomize=SCALE == 1,  # CI: the same inputs on every run, so a failure reproduces
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

# --- mutations ---------------------------------------------------------------------------------

UNICODE_DIGITS = ["\u00b2", "\u0663", "\u09e9", "\uff13", "\u2155", "\U0001d7d9"]
NUMBERS = [
    "9" * 5000,
    "99999999999999999999",
    "65536",
    "256",
    "-1",
    "-0",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "0x10",
]
SEPARATORS = [":", "-", ",", "/", ".", "*", "[", "]", "{", "}", '"', "'", "#", ";", "=", " ", "->", "\\", "%"]
NOT_UTF8 = [b"\xff", b"\xfe\xfe", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]


def _digit_runs(text: str) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isascii() and ch.isdigit():
            start = i if start is None else start
        elif start is not None:
            runs.append((start, i))
            start = None
    return runs


def _words(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"[^\s,:;=/\[\]{}()\"']+", text)]


@st.composite
def mutated_text(draw: st.DrawFn, valid: list[str], *, max_steps: int = 3, nul: bool = True) -> str:
    """A valid text with 1-`max_steps` textual mutations applied."""
    text = draw(st.sampled_from(valid))
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(
            st.sampled_from(
                [
                    "number",
                    "unicode-digit",
                    "word",
                    "truncate",
                    "cut-line",
                    "insert",
                    "delete",
                    "duplicate",
                    "junk",
                ]
            )
        )
        pos = draw(st.integers(0, len(text)))
        runs = _digit_runs(text)
        if kind in ("number", "unicode-digit") and runs:
            a, b = draw(st.sampled_from(runs))
            new = draw(st.sampled_from(NUMBERS if kind == "number" else UNICODE_DIGITS))
            text = text[:a] + (new if kind == "number" else text[a:b].replace(text[a], new, 1)) + text[b:]
        elif kind == "word" and _words(text):  # a whole word becomes a number: `type ²`, `-p 9999...`
            a, b = draw(st.sampled_from(_words(text)))
            text = text[:a] + draw(st.sampled_from(NUMBERS + UNICODE_DIGITS)) + text[b:]
        elif kind == "truncate":
            text = text[:pos]
        elif kind == "cut-line":  # the rest of one line goes: `:INPUT DROP` -> `:`
            end = text.find("\n", pos)
            text = text[:pos] + (text[end:] if end >= 0 else "")
        elif kind == "insert":
            text = text[:pos] + draw(st.sampled_from(SEPARATORS + UNICODE_DIGITS)) + text[pos:]
        elif kind == "delete" and text:
            end = draw(st.integers(pos, min(len(text), pos + 8)))
            text = text[:pos] + text[end:]
        elif kind == "duplicate" and text:
            lines = text.splitlines(keepends=True) or [text]
            i = draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[: i + 1] + lines[i:])
        else:
            alphabet = st.characters(codec="utf-8", exclude_characters="" if nul else "\0")
            text = text[:pos] + draw(st.text(alphabet, max_size=6)) + text[pos:]
    return text


@st.composite
def mutated_bytes(draw: st.DrawFn, valid: list[str]) -> tuple[bytes, bool]:
    """A valid file's text mutated; sometimes bytes that are not UTF-8 too (then True)."""
    data = draw(mutated_text(valid)).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        return data, False
    pos = draw(st.integers(0, len(data)))
    return data[:pos] + draw(st.sampled_from(NOT_UTF8)) + data[pos:], True


def _arg(valid: list[str]) -> st.SearchStrategy[str]:
    """A mutated command-line value (argv cannot hold a NUL byte)."""
    return mutated_text(valid, nul=False)


# --- the property ------------------------------------------------------------------------------


def check(surface: str, result: MainResult, ok: tuple[int, ...] = (0,), *, invalid: bool = False) -> None:
    TRIED[surface] += 1
    where = f"{surface}: portkit {' '.join(a[:100] for a in result.args)}"
    assert "internal error" not in result.stderr, f"{where}\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"{where}\n{result.stderr}"
    if invalid:
        assert result.status == 2, f"{where}: exit {result.status} for input that is invalid for sure"
    if result.status == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1, f"{where}: {result.stderr!r}"
        assert len(lines[0]) <= MAX_LINE, f"{where}: {len(lines[0])} characters: {lines[0]!r}"
    else:
        assert result.status in ok, f"{where}: exit {result.status}: {result.stderr!r}"


@pytest.fixture(scope="module", autouse=True)
def report_tried(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many inputs each surface was fed (pytest's capture is lifted for it)."""
    yield
    if not TRIED:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = [f"fuzz inputs tried: {sum(TRIED.values())} in {len(TRIED)} surfaces"]
    lines += [f"  {surface:<34} {count}" for surface, count in sorted(TRIED.items())]
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No packet leaves: scans stop once parsed, names resolve locally ('localhost' only)."""
    import portkit.scan._engine as engine
    import portkit.scan._targets as targets
    from portkit.errors import UsageError

    def stop(*_: Any) -> None:
        raise click.exceptions.Exit(0)  # everything the user gave was parsed and accepted

    def resolve(name: str) -> list[str]:
        if name.rstrip(".").lower() == "localhost":
            return ["127.0.0.1"]
        raise UsageError(f"invalid target {name[:40]!r}: cannot resolve it (offline test)")

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise OverflowError("getaddrinfo(): port must be 0-65535.")  # as the real one does
        if str(host).rstrip(".").lower() != "localhost":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(engine, "HostTable", stop)
    monkeypatch.setattr(targets, "system_resolver", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# --- command-line values -----------------------------------------------------------------------

PORT_SPECS = ["22", "1-1024", "80,443", "T:80,U:53", "-", "-1024", "60000-", "ssh,https", "top:100", "S:9899"]
PORT_PROTOS = ["22", "53/udp", "443/tcp", "65535", "0/tcp"]


@settings(FUZZ, max_examples=600 * SCALE)
@given(spec=_arg(PORT_SPECS), option=st.sampled_from(["-p", "--port", "--sport", "--dport"]))
def test_port_specs(spec: str, option: str, offline: None) -> None:
    if option == "-p":
        check("scan -p", run_main("scan", "-p", spec, "127.0.0.1"))
    else:
        check(f"ls {option}", run_main("ls", option, spec, "--json"))


@settings(FUZZ, max_examples=400 * SCALE)
@given(text=_arg(PORT_PROTOS), command=st.sampled_from(["explain", "who", "history"]))
def test_port_and_protocol_arguments(text: str, command: str) -> None:
    # who: 1 = nothing uses it; history: 1 = no ledger, or nothing recorded about the port
    check(command, run_main(command, text, "--json"), ok=(0, 1))


TARGETS = [
    "127.0.0.1",
    "127.0.0.0/30",
    "127.0.0.1-3",
    "127.0.0.1-127.0.0.4",
    "127.0.0.1,2.*",
    "127.0-1.0.1",
    "::1",
    "[::1]",
    "::1/126",
    "localhost",
    "localhost/31",
]


@settings(FUZZ, max_examples=600 * SCALE)
@given(target=_arg(TARGETS), exclude=st.booleans())
def test_scan_targets(target: str, exclude: bool, offline: None) -> None:
    args = ("127.0.0.1", "--exclude", target) if exclude else (target,)
    check("scan TARGET", run_main("scan", "-sT", "-p", "22", *args))


NUMBER_OPTIONS: list[tuple[tuple[str, ...], tuple[str, ...], list[str]]] = [
    (("lookup", "--limit"), ("ssh",), ["0", "3", "40"]),
    (("ls", "--pid"), ("--json",), ["1", "4242"]),
    (("ls", "--watch"), ("--count", "1", "--json"), ["2", "0.5"]),
    (("ls", "--count"), ("--json",), ["1", "5"]),  # without --watch: never loops
    (("ls", "--proto"), ("--json",), ["tcp", "udp,raw", "tcp,udp"]),
    (("ls", "--state"), ("--json",), ["established", "listen,time-wait", "connected"]),
    (("ls", "--user"), ("--json",), ["0", "root", "65534"]),
    (("free-port", "--count"), (), ["1", "3"]),
    (("free-port", "--range"), (), ["20000-30000", "1024-49151"]),
    (("scan", "-T"), ("127.0.0.1",), ["0", "4", "5"]),
    (("scan", "--max-retries"), ("127.0.0.1",), ["0", "2", "15"]),
    (("scan", "--max-rate"), ("127.0.0.1",), ["100", "0.5", "1e6"]),
    (("scan", "--seed"), ("127.0.0.1",), ["0", "42", "-7"]),
    (("scan", "--host-timeout"), ("127.0.0.1",), ["30s", "500ms", "5m", "2h", "1.5"]),
    (("scan", "--scan-delay"), ("127.0.0.1",), ["10ms", "1s"]),
    (("scan", "--sv", "--sv-intensity"), ("127.0.0.1",), ["0", "7", "light", "all"]),
    (("forward", "8080", "127.0.0.1:80", "--check", "--idle-timeout"), (), ["0", "300", "2.5"]),
    (("forward", "8080", "127.0.0.1:80", "--check", "--connect-timeout"), (), ["5", "0.1"]),
    (("forward", "8080", "127.0.0.1:80", "--check", "--udp", "--udp-idle-timeout"), (), ["60"]),
    (("forward", "8080", "127.0.0.1:80", "--check", "--udp", "--udp-max-clients"), (), ["4096", "1"]),
    (("forward", "8080", "127.0.0.1:80", "--check", "--max-connections"), (), ["10000", "1"]),
    (("forward", "8080", "127.0.0.1:80", "--check", "--drain-timeout"), (), ["10", "0"]),
    (("forward", "--stats", "--pid"), ("--json",), ["1", "999999"]),
    (("fw", "apply", "--confirm-within"), ("/nonexistent/rules",), ["30s", "90", "2m"]),
    (("ledger", "prune", "--older-than"), (), ["90d", "12h", "2w", "30m"]),  # 1: no ledger
    (("history", "22", "--host"), (), ["127.0.0.1", "::1", "myhost"]),
]


@settings(FUZZ, max_examples=1500 * SCALE)
@given(data=st.data())
def test_number_and_choice_options(data: st.DataObject, offline: None) -> None:
    head, tail, valid = data.draw(st.sampled_from(NUMBER_OPTIONS))
    value = data.draw(_arg(valid))
    # ok=1: `forward --stats` finds no forwarder; `free-port` finds fewer ports than asked
    check(
        " ".join(head[:2]) if head[0] != "forward" else f"forward {head[-1]}",
        run_main(*head, value, *tail),
        ok=(0, 1),
    )


FORWARD_ARGS = {
    "listen": ["8080", "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080"],
    "target": ["127.0.0.1:80", "[::1]:443", "localhost:5432"],
    "--allow": ["192.0.2.0/24", "::1", "127.0.0.1"],
    "--congestion": ["auto", "system", "reno", "cubic"],
}


@settings(FUZZ, max_examples=600 * SCALE)
@given(data=st.data())
def test_forward_arguments(data: st.DataObject, offline: None) -> None:
    which = data.draw(st.sampled_from(sorted(FORWARD_ARGS)))
    value = data.draw(_arg(FORWARD_ARGS[which]))
    args = {"listen": "8080", "target": "127.0.0.1:80"}
    options: list[str] = []
    if which in args:
        args[which] = value
    else:
        options = [which, value]
    # 1: the congestion algorithm is not available in this kernel (a runtime check)
    check(
        f"forward {which}",
        run_main("forward", args["listen"], args["target"], "--check", *options),
        ok=(0, 1),
    )


FLOWS = (DATA / "flows.txt").read_text().splitlines()[1:]
FLOW_OPTIONS = {
    "--proto": ["tcp", "udp", "icmp", "icmpv6", "6", "132"],
    "--icmp-type": ["echo-request", "8", "0", "destination-unreachable"],
    "--src": ["192.0.2.1", "2001:db8::1"],
    "--dst": ["192.0.2.2", "10.0.0.2"],
    "--sport": ["50000", "0", "65535"],
    "--dport": ["22", "443", "0"],
    "--state": ["new", "established", "related", "invalid"],
    "--in": ["eth0", "lo"],
}


@settings(FUZZ, max_examples=800 * SCALE)
@given(data=st.data())
def test_fw_check_flows_and_options(data: st.DataObject) -> None:
    rules = ("--rules", str(DATA / "policy.rules"))
    if data.draw(st.booleans()):
        flow = data.draw(_arg(FLOWS))
        check("fw check FLOW", run_main("fw", "check", *rules, flow), ok=(0, 1))
        return
    option = data.draw(st.sampled_from(sorted(FLOW_OPTIONS)))
    value = data.draw(_arg(FLOW_OPTIONS[option]))
    base = {"--dst": "192.0.2.2", "--dport": "22"} | ({"--proto": "icmp"} if option == "--icmp-type" else {})
    base[option] = value
    args = [x for kv in base.items() for x in kv]
    check(f"fw check {option}", run_main("fw", "check", *rules, *args), ok=(0, 1))


# --- files ---------------------------------------------------------------------------------------


def _texts(*names: str) -> list[str]:
    return [(DATA / name).read_text() for name in names]


def _file_surface(
    tmp_path: Path, name: str, content: tuple[bytes, bool], args: Callable[[str], tuple[str, ...]]
) -> tuple[MainResult, bool]:
    data, not_utf8 = content
    path = tmp_path / name
    path.write_bytes(data)
    return run_main(*args(str(path))), not_utf8


def _rules(fmt: str) -> st.SearchStrategy[tuple[str, ...]]:
    """A rules-file command, with `--format fmt` or leaving the format to detection."""
    return st.tuples(st.sampled_from(RULE_COMMANDS), st.sampled_from([("--format", fmt), ()])).map(
        lambda t: (*t[0], *t[1])
    )


RULE_COMMANDS: list[tuple[str, ...]] = [
    ("fw", "show"),
    ("fw", "lint", "--no-ssh", "--fail-on", "never"),
    ("fw", "export", "--to", "nft"),
    ("fw", "export", "--to", "iptables"),
]


@settings(FUZZ, max_examples=500 * SCALE)
@given(content=mutated_bytes(_texts("iptables.rules")), command=_rules("iptables"))
def test_iptables_save_files(content: tuple[bytes, bool], command: tuple[str, ...], tmp_path: Path) -> None:
    result, not_utf8 = _file_surface(tmp_path, "rules.v4", content, lambda p: (*command, p))
    check("file: iptables-save", result, ok=(0, 1), invalid=not_utf8)


@settings(FUZZ, max_examples=500 * SCALE)
@given(content=mutated_bytes(_texts("policy.rules")), command=_rules("policy"))
def test_policy_files(content: tuple[bytes, bool], command: tuple[str, ...], tmp_path: Path) -> None:
    result, not_utf8 = _file_surface(tmp_path, "policy", content, lambda p: (*command, p))
    check("file: policy", result, ok=(0, 1), invalid=not_utf8)


@st.composite
def mutated_json(draw: st.DrawFn) -> tuple[bytes, bool]:
    """nft JSON mutated as text, or nested far too deep, or with a value swapped for junk."""
    valid = (DATA / "rules.json").read_text()
    kind = draw(st.sampled_from(["text", "text", "deep", "value"]))
    if kind == "deep":
        depth = draw(st.sampled_from([65, 200, 1000, 5000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a": ', "}")]))
        nested = opener * depth + "1" + closer * depth
        pos = valid.index('"expr": [') + len('"expr": [')
        return (valid[:pos] + nested + "," + valid[pos:]).encode(), False
    if kind == "value":
        junk = draw(
            st.sampled_from(["null", "[]", "{}", '"x"', "-1", "1e400", "9" * 5000, "true", '"\\ud800"'])
        )
        quoted = [i for i in range(len(valid)) if valid.startswith('": ', i)]
        pos = draw(st.sampled_from(quoted)) + 3
        end = pos + 1
        while end < len(valid) and valid[end] not in ",}]\n":
            end += 1
        return (valid[:pos] + junk + valid[end:]).encode(), False
    return draw(mutated_bytes([valid]))


@settings(FUZZ, max_examples=600 * SCALE)
@given(content=mutated_json(), command=_rules("nft-json"))
def test_nft_json_files(content: tuple[bytes, bool], command: tuple[str, ...], tmp_path: Path) -> None:
    result, not_utf8 = _file_surface(tmp_path, "rules.json", content, lambda p: (*command, p))
    check("file: nft JSON", result, ok=(0, 1), invalid=not_utf8)


@needs_root
@settings(FUZZ, max_examples=60 * SCALE)
@given(content=mutated_bytes(_texts("rules.nft")))
def test_nft_scripts(content: tuple[bytes, bool], tmp_path: Path) -> None:
    """nft itself parses these, in a scratch namespace (about 50 ms each)."""
    result, not_utf8 = _file_surface(
        tmp_path, "rules.nft", content, lambda p: ("fw", "show", "--format", "nft", p)
    )
    check("file: nft script", result, invalid=not_utf8)


UFW_FILES = ("before.rules", "user.rules", "after.rules")


@settings(FUZZ, max_examples=300 * SCALE)
@given(which=st.sampled_from(UFW_FILES), data=st.data())
def test_ufw_directories(which: str, data: st.DataObject, tmp_path: Path) -> None:
    ufw = tmp_path / "ufw"
    if not ufw.exists():
        shutil.copytree(DATA / "ufw", ufw)
    for name in UFW_FILES:
        shutil.copy(DATA / "ufw" / name, ufw / name)
    body, not_utf8 = data.draw(mutated_bytes(_texts(f"ufw/{which}")))
    (ufw / which).write_bytes(body)
    check("file: ufw directory", run_main("fw", "show", str(ufw)), invalid=not_utf8)


@settings(FUZZ, max_examples=400 * SCALE)
@given(content=mutated_bytes(_texts("flows.txt")), stdin=st.booleans())
def test_flows_files(content: tuple[bytes, bool], stdin: bool, tmp_path: Path) -> None:
    rules = ("fw", "check", "--rules", str(DATA / "policy.rules"), "--flows")
    if stdin:
        result, not_utf8 = run_main(*rules, "-", stdin=content[0]), content[1]
    else:
        result, not_utf8 = _file_surface(tmp_path, "flows", content, lambda p: (*rules, p))
    check("file: --flows", result, ok=(0, 1), invalid=not_utf8)


@settings(FUZZ, max_examples=400 * SCALE)
@given(content=mutated_bytes(_texts("targets.txt")), option=st.sampled_from(["-iL", "--exclude-file"]))
def test_target_files(content: tuple[bytes, bool], option: str, tmp_path: Path, offline: None) -> None:
    target = () if option == "-iL" else ("127.0.0.1",)
    result, not_utf8 = _file_surface(
        tmp_path, "targets", content, lambda p: ("scan", "-sT", "-p", "22", option, p, *target)
    )
    check(f"file: scan {option}", result, invalid=not_utf8)


@settings(FUZZ, max_examples=500 * SCALE)
@given(content=mutated_bytes(_texts("forward.toml")))
def test_forward_configs(content: tuple[bytes, bool], tmp_path: Path, offline: None) -> None:
    result, not_utf8 = _file_surface(
        tmp_path, "forward.toml", content, lambda p: ("forward", "--config", p, "--check")
    )
    check("file: forward --config", result, ok=(0, 1), invalid=not_utf8)


@settings(FUZZ, max_examples=400 * SCALE)
@given(content=mutated_bytes(_texts("iana.csv")), big=st.booleans())
def test_registry_csv(content: tuple[bytes, bool], big: bool, tmp_path: Path) -> None:
    data, not_utf8 = content
    if big:  # a field over csv's 128 KiB limit somewhere
        pos = data.find(b"\n") + 1
        data = data[:pos] + b'big,9,tcp,"' + b"x" * 140_000 + b'"\n' + data[pos:]
    result, _ = _file_surface(tmp_path, "iana.csv", (data, not_utf8), lambda p: ("registry", "import", p))
    check("file: registry CSV", result, invalid=not_utf8 or big)


DIFF_FILES = ("diff-scan.xml", "diff-scan.json", "diff-ls.json")
DIFF_PARTNER = {
    "diff-scan.xml": "diff-scan.json",
    "diff-scan.json": "diff-scan.xml",
    "diff-ls.json": "diff-ls.json",
}


@settings(FUZZ, max_examples=600 * SCALE)
@given(which=st.sampled_from(DIFF_FILES), data=st.data(), first=st.booleans())
def test_diff_files(which: str, data: st.DataObject, first: bool, tmp_path: Path) -> None:
    content = data.draw(mutated_bytes(_texts(which)))
    partner = str(DATA / DIFF_PARTNER[which])
    args = (lambda p: ("diff", p, partner)) if first else (lambda p: ("diff", partner, p, "--json"))
    result, not_utf8 = _file_surface(tmp_path, "side", content, args)
    check("file: diff A B", result, ok=(0, 1), invalid=not_utf8)  # 1: something changed


LEDGER_REFS = ["@now", "@yesterday", "@12", "@-2h", "@-7d", "@2026-12-01T10:00", "@2026-12-01T10:00:00+01:00"]


@settings(FUZZ, max_examples=300 * SCALE)
@given(ref=_arg(LEDGER_REFS))
def test_diff_ledger_references(ref: str, tmp_path: Path) -> None:
    # 1: no ledger at the default path, or a change between the sides
    check(
        "diff @REF",
        run_main("diff", ref, str(DATA / "diff-ls.json"), "--db", str(tmp_path / "l.db")),
        ok=(0, 1),
    )


@settings(FUZZ, max_examples=300 * SCALE)
@given(content=mutated_bytes(['record = false\ndb = "/nonexistent/portkit/ledger.db"\n']))
def test_config_files(content: tuple[bytes, bool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`history` reads the config for the ledger's path and never creates a ledger."""
    data, not_utf8 = content
    config = tmp_path / "config.toml"
    config.write_bytes(data)
    monkeypatch.setenv("PORTKIT_CONFIG", str(config))
    check("file: config.toml", run_main("history", "22"), ok=(0, 1), invalid=not_utf8)


@pytest.fixture(scope="module")
def ledger_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from portkit.ledger import INVENTORY, Ledger, Owner, PortFact

    path = tmp_path_factory.mktemp("ledger") / "ledger.db"
    with Ledger.open(path) as ledger:
        for i in range(40):
            fact = PortFact(
                22 + i % 3, "tcp", "h", "listening", "0.0.0.0", owners=(Owner("sshd", pid=i + 1),)
            )
            ledger.record(INVENTORY, [fact], host="h", time=float(i))
            ledger.record_event("listener-opened", {"i": i}, port=22, protocol="tcp", time=float(i))
    return path.read_bytes()


@settings(FUZZ, max_examples=200 * SCALE)
@given(
    data=st.data(),
    command=st.sampled_from([("history", "22"), ("ledger", "export", "--csv"), ("diff", "@1", "@2")]),
)
def test_damaged_ledger_files(
    ledger_bytes: bytes, data: st.DataObject, command: tuple[str, ...], tmp_path: Path
) -> None:
    """A ledger with bytes overwritten or cut: a clean answer or one line, and the file untouched."""
    raw = bytearray(ledger_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos : pos + 4] = data.draw(st.binary(min_size=4, max_size=4))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path / "ledger.db"
    path.write_bytes(bytes(raw))
    result = run_main(*command, "--db", str(path))
    check("file: ledger", result, ok=(0, 1))
    if result.status == 2:
        assert path.read_bytes() == bytes(raw), "a refused ledger was modified"


# --- audit, watch, nat -------------------------------------------------------------------------


@pytest.fixture
def stop_before_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """audit, watch and nat map stop once their input is parsed and accepted (nothing is read
    from the host, no packet leaves); nat add plans without reading the host's state."""
    import functools

    import portkit.audit
    import portkit.nat
    import portkit.watch

    def stop(*_: Any, **__: Any) -> None:
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(portkit.audit, "run_audit", stop)
    monkeypatch.setattr(portkit.watch, "run_watch", stop)
    monkeypatch.setattr(portkit.nat, "map_port", stop)
    monkeypatch.setattr(portkit.nat, "unmap_port", stop)
    monkeypatch.setattr(portkit.nat, "plan_forward", functools.partial(portkit.nat.plan_forward, live=False))


@settings(FUZZ, max_examples=500 * SCALE)
@given(
    content=mutated_bytes(_texts("exposure.toml")), output=st.sampled_from([(), ("--json",), ("--sarif",)])
)
def test_audit_policy_files(
    content: tuple[bytes, bool], output: tuple[str, ...], tmp_path: Path, stop_before_io: None
) -> None:
    result, not_utf8 = _file_surface(
        tmp_path, "exposure.toml", content, lambda p: ("audit", "--policy", p, *output)
    )
    check("file: audit --policy", result, invalid=not_utf8)


AUDIT_OPTIONS = {
    "--fail-on": ["info", "low", "medium", "high", "critical"],
    "--netns": ["pk-no-such-netns", "a"],
    "--from": ["pk-no-such-netns", "b"],
    "--policy": [str(DATA / "exposure.toml"), "/nonexistent/exposure.toml", "-"],
}


@settings(FUZZ, max_examples=400 * SCALE)
@given(data=st.data())
def test_audit_options(data: st.DataObject, stop_before_io: None) -> None:
    option = data.draw(st.sampled_from(sorted(AUDIT_OPTIONS)))
    value = data.draw(_arg(AUDIT_OPTIONS[option]))
    check(f"audit {option}", run_main("audit", option, value, "--json"))


WATCH_OPTIONS = {
    "--interval": ["1s", "500ms", "2"],
    "--accept-interval": ["10s", "1m"],
    "--scan-ports": ["15", "1", "65535"],
    "--scan-hosts": ["25", "1"],
    "--scan-window": ["5m", "30s"],
    "--ignore": ["192.0.2.1", "2001:db8::1"],
    "--duration": ["10s", "1h"],
    "--count": ["1", "100"],
    "--netns": ["pk-no-such-netns"],
    "--block": ["10m", "1h"],
    "--exec": ["cat >/dev/null", "logger -t portkit"],
}


@settings(FUZZ, max_examples=800 * SCALE)
@given(data=st.data())
def test_watch_options(data: st.DataObject, stop_before_io: None) -> None:
    option = data.draw(st.sampled_from(sorted(WATCH_OPTIONS)))
    value = data.draw(_arg(WATCH_OPTIONS[option]))
    extra = ("--scans",) if option == "--block" else ()
    check(f"watch {option}", run_main("watch", option, value, *extra, "--json"))


NAT_ADD_ARGS = {
    "public": ["8443", "80", "65535"],
    "target": ["192.168.1.100:443", "[fd00::5]:443", "10.0.0.2:80"],
    "--in": ["eth0", "wan0"],
    "--public-addr": ["203.0.113.1", "2001:db8::1"],
    "--lan": ["192.168.1.0/24", "10.0.0.0/8"],
    "--zone": ["public", "dmz"],
}


@settings(FUZZ, max_examples=600 * SCALE)
@given(data=st.data(), fmt=st.sampled_from(["nft", "iptables", "firewalld", "ufw"]))
def test_nat_add_arguments(data: st.DataObject, fmt: str, stop_before_io: None, offline: None) -> None:
    which = data.draw(st.sampled_from(sorted(NAT_ADD_ARGS)))
    value = data.draw(_arg(NAT_ADD_ARGS[which]))
    args = {"public": "8443", "target": "192.168.1.100:443"}
    options: list[str] = ["--hairpin"] if which == "--lan" else []
    if which in args:
        args[which] = value
    else:
        options += [which, value]
        fmt = "firewalld" if which == "--zone" else fmt
    check(f"nat add {which}", run_main("nat", "add", args["public"], args["target"], "--to", fmt, *options))


NAT_MAP_ARGS = {
    "public": ["8443", "1", "65535"],
    "internal": ["443", "22"],
    "--lease": ["3600", "1", "86400"],
    "--gateway": ["192.168.1.1", "10.0.0.1"],
    "--timeout": ["3", "0.5", "120"],
    "--description": ["portkit", "web server"],
    "--via": ["auto", "pcp", "natpmp", "upnp"],
}


@settings(FUZZ, max_examples=600 * SCALE)
@given(data=st.data(), command=st.sampled_from(["map", "unmap"]))
def test_nat_map_arguments(data: st.DataObject, command: str, stop_before_io: None) -> None:
    which = data.draw(st.sampled_from(sorted(NAT_MAP_ARGS)))
    if command == "unmap" and which in ("internal", "--lease", "--description"):
        which = "public"
    value = data.draw(_arg(NAT_MAP_ARGS[which]))
    public = value if which == "public" else "8443"
    positional = [public, value] if which == "internal" else [public]
    options = [] if which in ("public", "internal") else [which, value]
    gateway = [] if which == "--gateway" else ["--gateway", "192.0.2.1"]
    check(f"nat {command} {which}", run_main("nat", command, *positional, *gateway, *options, "--json"))


NAT_CHECK_ARGS = {
    "public": ["203.0.113.1:8443", "[2001:db8::1]:443", "198.51.100.7:80"],
    "--timeout": ["3s", "500ms", "1m"],
    "--router": ["pk-no-such-router"],
}


@settings(FUZZ, max_examples=300 * SCALE)
@given(data=st.data())
def test_nat_check_and_rm_arguments(data: st.DataObject, offline: None) -> None:
    """Stops at the unknown --from namespace at the latest: nothing is probed."""
    if data.draw(st.booleans()):
        ident = data.draw(_arg(["tcp-8443", "udp-53", "tcp-203.0.113.1-8443", "tcp-2001:db8::1-443"]))
        # 1: no rule carries the tag (read from the live ruleset, nothing changed without --apply)
        check("nat rm ID", run_main("nat", "rm", ident, "--netns", "pk-no-such-netns"), ok=(0, 1))
        return
    which = data.draw(st.sampled_from(sorted(NAT_CHECK_ARGS)))
    value = data.draw(_arg(NAT_CHECK_ARGS[which]))
    public = value if which == "public" else "203.0.113.1:8443"
    options = [] if which == "public" else [which, value]
    result = run_main("nat", "check", public, "--from", "pk-no-such-netns", *options)
    check(f"nat check {which}", result, invalid=True)  # the namespace does not exist


# --- diagnose ----------------------------------------------------------------------------------


@pytest.fixture
def diagnose_stops_before_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """`diagnose --bind` checks its binder and address as it would, then stops before the trial
    bind (a real bind in the host namespace could take a port another test is about to use)."""
    import portkit.diagnose
    from portkit.diagnose import _bind

    def stop(address: str | None, port: int, protocol: Any, **kwargs: Any) -> None:
        _bind.validate_bind_address(address)
        uid = kwargs.get("uid")
        _bind.read_binder(kwargs.get("pid"), kwargs.get("user") if uid is None else uid)
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(portkit.diagnose, "diagnose_bind", stop)


DIAGNOSE_ARGS = {
    "target": ["127.0.0.1:80", "[::1]:8080/udp", "localhost:443/tcp", "example.org:22"],
    "--timeout": ["1", "0.5", "600"],
    "--expect": ["http", "ssh"],
    "--from": ["pk-no-such-netns", "/proc/1/ns/net"],
}
DIAGNOSE_BIND_ARGS = {
    "--bind": ["80", "127.0.0.1:80/tcp", "[::]:53/udp", "0", "[2001:db8::1]:443"],
    "--pid": ["1", "4194304", "999999"],
    "--user": ["root", "nobody", "0", "65534"],
}


@settings(FUZZ, max_examples=500 * SCALE)
@given(data=st.data(), as_json=st.booleans())
def test_diagnose_reach_arguments(data: st.DataObject, as_json: bool, offline: None) -> None:
    """Every value is parsed before the unknown --from namespace stops the run: nothing is probed."""
    which = data.draw(st.sampled_from(sorted(DIAGNOSE_ARGS)))
    value = data.draw(_arg(DIAGNOSE_ARGS[which]))
    target = value if which == "target" else "127.0.0.1:80"
    options = [] if which in ("target", "--from") else [which, value]
    where = value if which == "--from" and not value.startswith("/proc/") else "pk-no-such-netns"
    result = run_main("diagnose", target, "--from", where, *options, *(["--json"] if as_json else []))
    check(f"diagnose {which}", result, invalid=True)


@settings(FUZZ, max_examples=400 * SCALE)
@given(data=st.data())
def test_diagnose_bind_arguments(data: st.DataObject, diagnose_stops_before_io: None) -> None:
    which = data.draw(st.sampled_from(sorted(DIAGNOSE_BIND_ARGS)))
    value = data.draw(_arg(DIAGNOSE_BIND_ARGS[which]))
    bind = value if which == "--bind" else "8080"
    options = [] if which == "--bind" else [which, value]
    check(f"diagnose --bind {which}", run_main("diagnose", "--bind", bind, *options, "--json"), ok=(0, 1))
