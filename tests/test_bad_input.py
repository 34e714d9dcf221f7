"""Bad input at every edge ends in exit 2 and one short line, never "internal error" (issue 12).

One regression test per class of input that used to crash: bytes that are not UTF-8, inputs
without end (/dev/zero) or too large, JSON nested too deep, CSV fields over csv's limit,
Unicode digits, numbers over int()'s 4,300 digits, out-of-range ports, nan/inf/negative
numbers, over-long inputs quoted in full. tests/test_bad_input_fuzz.py generates the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures_bad_input import assert_usage_error, run_main
from portkit._textfile import MAX_INPUT_BYTES, read_text_file
from portkit.errors import UsageError

POLICY = "default incoming drop\nallow tcp 22\n"
FLOW = "tcp 192.0.2.1:50000 -> 192.0.2.2:22"
NOT_UTF8 = b"allow tcp 22\n# caf\xe9 au lait\n"  # latin-1, the usual culprit
UFW_BEFORE = "*filter\n:ufw-before-input - [0:0]\n-A ufw-before-input -i lo -j ACCEPT\nCOMMIT\n"
UFW_USER = "*filter\n:ufw-user-input - [0:0]\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
UFW_AFTER = "*filter\n:ufw-after-input - [0:0]\nCOMMIT\n"
IANA_HEADER = "Service Name,Port Number,Transport Protocol,Description\n"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.rules"
    path.write_text(POLICY)
    return path


@pytest.fixture
def latin1(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.txt"
    path.write_bytes(NOT_UTF8)
    return path


def _ufw_dir(root: Path, user: bytes) -> Path:
    d = root / "ufw"
    d.mkdir()
    (d / "before.rules").write_text(UFW_BEFORE)
    (d / "user.rules").write_bytes(user)
    (d / "after.rules").write_text(UFW_AFTER)
    return d


# --- files: strict UTF-8, bounded size ---------------------------------------------------------


def test_reader_names_the_file_and_the_offset_of_the_bad_byte(latin1: Path) -> None:
    with pytest.raises(UsageError) as err:
        read_text_file(latin1, what="rules file")
    message = str(err.value)
    assert "not UTF-8" in message and "0xe9" in message
    assert f"offset {NOT_UTF8.index(0xE9)}" in message and "line 2" in message


def test_reader_caps_the_size_and_stops_reading(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(UsageError, match="larger than 1000 bytes"):
        read_text_file(path, what="rules file", limit=1000)
    assert read_text_file(path, what="rules file", limit=1001) == "x" * 1001
    with pytest.raises(UsageError, match="larger than 64 MiB"):  # never ends; read only cap + 1
        read_text_file("/dev/zero", what="rules file")
    assert MAX_INPUT_BYTES == 64 * 1024 * 1024


@pytest.mark.parametrize(
    "args",
    [
        ("fw", "show", "{file}"),
        ("fw", "lint", "{file}"),
        ("fw", "export", "--to", "nft", "{file}"),
        ("fw", "check", "--rules", "{file}", FLOW),
        ("fw", "check", "--rules", "{policy}", "--flows", "{file}"),
        ("fw", "check", "--rules", "{policy}", "--flows", "-"),
        ("scan", "-iL", "{file}"),
        ("scan", "-iL", "-"),
        ("scan", "127.0.0.1", "--exclude-file", "{file}"),
        ("forward", "--config", "{file}", "--check"),
        ("registry", "import", "{file}"),
    ],
)
@pytest.mark.parametrize("content", ["latin1", "/dev/zero"])
def test_file_inputs_refuse_bytes_that_are_not_utf8_and_endless_files(
    args: tuple[str, ...], content: str, latin1: Path, policy: Path
) -> None:
    file = str(latin1) if content == "latin1" else "/dev/zero"
    stdin = NOT_UTF8 if content == "latin1" else b"\0" * (MAX_INPUT_BYTES + 1)
    argv = [a.format(file=file, policy=policy) for a in args]
    line = assert_usage_error(run_main(*argv, stdin=stdin))
    assert ("not UTF-8" if content == "latin1" else "larger than 64 MiB") in line


def test_ufw_directory_with_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    good = _ufw_dir(tmp_path / "good", UFW_USER.encode())
    assert run_main("fw", "show", str(good)).status == 0
    bad = _ufw_dir(tmp_path, UFW_USER.encode() + b"# \xff\n")
    assert_usage_error(run_main("fw", "show", str(bad)), "user.rules", "not UTF-8", "0xff")


def test_nft_json_nested_a_thousand_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"nftables": ' + "[" * 1000 + "]" * 1000 + "}")
    assert_usage_error(run_main("fw", "show", str(path)), "nested more than 64 levels")
    path.write_text('{"nftables": [' + '{"a": ' * 100 + "1" + "}" * 100 + "]}")
    assert_usage_error(run_main("fw", "show", str(path)), "nested more than 64 levels")
    path.write_text('["nftables"]')
    assert_usage_error(run_main("fw", "show", "--format", "nft-json", str(path)), "expected an object")


def test_iana_csv_with_a_field_over_the_csv_limit(tmp_path: Path) -> None:
    path = tmp_path / "iana.csv"
    path.write_text(IANA_HEADER + "ssh,22,tcp,Secure Shell\n" + 'big,23,tcp,"' + "x" * 200_000 + '"\n')
    assert_usage_error(run_main("registry", "import", str(path)), "line 3", "field larger than field limit")


def test_iana_csv_unicode_digits_are_skipped_as_malformed(tmp_path: Path) -> None:
    path = tmp_path / "iana.csv"
    rows = ["ssh,22,tcp,Secure Shell", "sq,²,tcp,x", "ar,٢٢,tcp,x", f"long,{'9' * 5000},tcp,x"]
    path.write_text(IANA_HEADER + "\n".join(rows) + "\n")
    result = run_main("registry", "import", "--json", str(path))
    assert result.status == 0, result.stderr
    assert '"malformed port number": 3' in result.stdout


# --- numbers: ASCII digits only, within int()'s limits, finite, in range ------------------------

# superscript two, Arabic-Indic three, Bengali three, fullwidth three: all pass str.isdigit()
UNICODE_DIGITS = ["\u00b2", "\u0663", "\u09e9", "\uff13", "1\u00b2", "\u0663\u0663"]
HUGE = "9" * 5000  # int() refuses more than 4,300 digits with a ValueError


def _number_surfaces(value: str, policy: Path) -> list[tuple[str, ...]]:
    rules = ("--rules", str(policy))
    return [
        ("scan", f"127.0.0.1/{value}"),
        ("scan", f"127.0.0.{value}"),
        ("scan", "-p", value, "127.0.0.1"),
        ("scan", "-p", f"1-{value}", "127.0.0.1"),
        ("scan", "-p", f"top:{value}", "127.0.0.1"),
        ("scan", "-T", value, "127.0.0.1"),
        ("scan", "--max-retries", value, "127.0.0.1"),
        ("scan", "--max-rate", value, "127.0.0.1"),
        ("scan", "--seed", value, "127.0.0.1"),
        ("scan", "--host-timeout", f"{value}s", "127.0.0.1"),
        ("scan", "--sv", "--sv-intensity", value, "127.0.0.1"),
        ("explain", value),
        ("explain", f"22/{value}"),
        ("who", value),
        ("who", f"{value}/tcp"),
        ("lookup", "--limit", value, "ssh"),
        ("ls", "--pid", value),
        ("ls", "--port", value),
        ("ls", "--sport", f"T:{value}"),
        ("ls", "--watch", value, "--count", "1"),
        ("free-port", "--count", value),
        ("free-port", "--range", f"1-{value}"),
        ("fw", "check", *rules, f"tcp 192.0.2.1:{value} -> 192.0.2.2:22"),
        ("fw", "check", *rules, f"{value} 192.0.2.1 -> 192.0.2.2"),
        ("fw", "check", *rules, f"icmp 192.0.2.1 -> 192.0.2.2 type {value}"),
        ("fw", "check", *rules, f"icmp 192.0.2.1 -> 192.0.2.2 type 8 code {value}"),
        ("fw", "check", *rules, "--dst", "192.0.2.2", "--dport", value),
        ("fw", "check", *rules, "--dst", "192.0.2.2", "--sport", value),
        ("fw", "check", *rules, "--dst", "192.0.2.2", "--proto", value),
        ("fw", "check", *rules, "--dst", "192.0.2.2", "--proto", "icmp", "--icmp-type", value),
        ("forward", value, "127.0.0.1:80", "--check"),
        ("forward", "8080", f"127.0.0.1:{value}", "--check"),
        ("forward", "8080", f"localhost:{value}", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--max-connections", value, "--check"),
        ("forward", "8080", "127.0.0.1:80", "--idle-timeout", value, "--check"),
        ("forward", "8080", "127.0.0.1:80", "--drain-timeout", value, "--check"),
        ("forward", "--stats", "--pid", value),
    ]


@pytest.mark.parametrize("value", [*UNICODE_DIGITS, HUGE])
def test_numbers_accept_only_ascii_digits_and_sane_sizes(value: str, policy: Path) -> None:
    for args in _number_surfaces(value, policy):
        assert_usage_error(run_main(*args))


def test_forward_check_with_an_out_of_range_port_on_a_hostname() -> None:
    """getaddrinfo() raises OverflowError for a port over 65535."""
    assert_usage_error(run_main("forward", "8080", "localhost:99999999", "--check"), "'99999999'")
    assert_usage_error(run_main("forward", "8080", "localhost:70000", "--check"), "ports are 0-65535")


@pytest.mark.parametrize(
    "args",
    [
        ("lookup", "--limit", "-3", "ssh"),
        ("ls", "--pid", "-5"),
        ("ls", "--pid", "0"),
        ("ls", "--proto", ""),
        ("ls", "--proto", "tcp,,udp"),
        ("ls", "--user", "no\0body"),
        ("ls", "--watch", "nan", "--count", "1"),
        ("ls", "--watch", "inf", "--count", "1"),
        ("ls", "--watch", "-1", "--count", "1"),
        ("scan", "--max-rate", "nan", "127.0.0.1"),
        ("scan", "--max-rate", "inf", "127.0.0.1"),
        ("scan", "--max-rate", "-1", "127.0.0.1"),
        ("scan", "--max-rate", "1e400", "127.0.0.1"),
        ("scan", "--host-timeout", "99999999999s", "127.0.0.1"),
        ("forward", "8080", "127.0.0.1:80", "--idle-timeout", "nan", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--idle-timeout", "inf", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--connect-timeout", "inf", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--connect-timeout", "-0.5", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--udp-idle-timeout", "-inf", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--drain-timeout", "nan", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--drain-timeout", "-1", "--check"),
        ("forward", "8080", "127.0.0.1:80", "--max-connections", "-1", "--check"),
        ("forward", "--stats", "--pid", "-4"),
        ("fw", "apply", "--confirm-within", "nan", "/nonexistent"),
        ("fw", "apply", "--confirm-within", "\u0661\u0660s", "/nonexistent"),
    ],
)
def test_options_that_were_accepted_silently(args: tuple[str, ...]) -> None:
    assert_usage_error(run_main(*args))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1"])
def test_forward_config_numbers_are_finite(value: str, tmp_path: Path) -> None:
    path = tmp_path / "forward.toml"
    for key in ("idle_timeout", "connect_timeout", "udp_idle_timeout"):
        path.write_text(f'[[rule]]\nlisten = 8080\ntarget = "127.0.0.1:80"\n{key} = {value}\n')
        assert_usage_error(run_main("forward", "--config", str(path), "--check"), key)


def test_forward_config_shapes_toml_allows(tmp_path: Path) -> None:
    path = tmp_path / "forward.toml"
    for text in ("rule = [1, 2]\n", "x = " + "[" * 2000 + "]" * 2000 + "\n", "rule = [[]]\n"):
        path.write_text(text)
        assert_usage_error(run_main("forward", "--config", str(path), "--check"), "invalid config")


# --- quoting: at most ~60 characters of the bad input -------------------------------------------

LONG = "x" * 200 + "END"


def test_quote_keeps_start_end_and_length() -> None:
    from portkit.errors import quote

    assert quote("22") == "'22'"
    shown = quote(LONG)
    assert len(shown) <= 60 and shown.startswith("'xxx") and "END'" in shown and "203 chars" in shown
    assert len(quote("\0" * 500)) <= 60  # repr expands control bytes; the limit is on what is shown


@pytest.mark.parametrize(
    "args",
    [
        ("scan", "-p", LONG, "127.0.0.1"),
        ("scan", "-p", "22," + LONG, "127.0.0.1"),
        ("scan", LONG),
        ("scan", "127.0.0.1/" + LONG),
        ("explain", LONG),
        ("who", "22/" + LONG),
        ("ls", "--port", LONG),
        ("ls", "--state", LONG),
        ("ls", "--proto", LONG),
        ("ls", "--user", LONG),
        ("ls", "--backend", LONG),
        ("ls", "--" + LONG),
        (LONG,),
        ("lookup", "--limit", LONG, "ssh"),
        ("fw", "check", "--rules", "/nonexistent/" + LONG, "tcp 192.0.2.1 -> 192.0.2.2:22"),
        ("fw", "show", "--format", LONG, "/dev/null"),
        ("forward", LONG, "127.0.0.1:80", "--check"),
        ("forward", "8080", LONG, "--check"),
        ("forward", "8080", "127.0.0.1:80", "--allow", LONG, "--check"),
        ("forward", "8080", "127.0.0.1:80", "--congestion", LONG, "--check"),
        ("registry", "import", "/nonexistent/" + LONG),
    ],
)
def test_errors_quote_at_most_about_60_characters(args: tuple[str, ...], policy: Path) -> None:
    line = assert_usage_error(run_main(*args))
    assert "x" * 61 not in line, line


def test_flow_errors_quote_at_most_about_60_characters(policy: Path) -> None:
    for flow in (LONG, f"tcp {LONG} -> 192.0.2.2:22", f"tcp 192.0.2.1 -> 192.0.2.2:22 state {LONG}"):
        line = assert_usage_error(run_main("fw", "check", "--rules", str(policy), flow))
        assert "x" * 61 not in line, line


# --- shapes: structures nested or typed unlike the real thing ------------------------------------


def test_iana_xml_nested_deep_takes_linear_time(tmp_path: Path) -> None:
    """Every <record> inside every other used to be read whole: 100,000 deep took minutes."""
    import time

    path = tmp_path / "deep.xml"
    path.write_text("<registry>" + "<record>" * 100_000 + "</record>" * 100_000 + "</registry>")
    started = time.monotonic()
    assert_usage_error(run_main("registry", "import", str(path)), "no usable IANA records")
    assert time.monotonic() - started < 10
    path.write_text(
        '<registry xmlns="http://www.iana.org/assignments"><record><name>ssh</name>'
        "<protocol>tcp</protocol><number>22</number><description>The Secure Shell "
        '<xref type="rfc" data="rfc4251"/> Protocol</description></record></registry>'
    )
    result = run_main("registry", "import", "--json", str(path))
    assert result.status == 0 and '"imported": 1' in result.stdout


@pytest.mark.parametrize("value", ["[]", "{}", '"x"', "null", "9" * 5000])
def test_nft_json_values_of_the_wrong_shape(value: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    valid = (Path(__file__).parent / "data" / "bad_input" / "rules.json").read_text()
    assert '"port": 80' in valid
    path.write_text(valid.replace('"port": 80', f'"port": {value}'))
    result = run_main("fw", "show", str(path))
    if result.status != 0:  # some shapes are read as "no port"; none may crash
        assert_usage_error(result, "invalid nft JSON")


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_nft_json_numbers_that_are_not_finite(value: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    valid = (Path(__file__).parent / "data" / "bad_input" / "rules.json").read_text()
    path.write_text(valid.replace('"prio": 0', f'"prio": {value}'))
    assert_usage_error(run_main("fw", "show", str(path)), "invalid nft JSON")


def test_iptables_chain_declaration_without_a_name(tmp_path: Path) -> None:
    path = tmp_path / "rules.v4"
    path.write_text("*filter\n:\nCOMMIT\n")
    assert_usage_error(run_main("fw", "show", "--format", "iptables", str(path)), ":2:", "chain name")


def test_ufw_chain_declaration_without_a_name(tmp_path: Path) -> None:
    d = _ufw_dir(tmp_path, UFW_USER.replace(":ufw-user-input - [0:0]", ":\n:ufw-user-input - [0:0]").encode())
    assert_usage_error(run_main("fw", "show", str(d)), "user.rules", "chain name")


@pytest.mark.parametrize("value", [*UNICODE_DIGITS, HUGE, "256"])
def test_policy_icmp_types_are_ascii_numbers_0_255(value: str, tmp_path: Path) -> None:
    path = tmp_path / "policy"
    path.write_text(f"allow icmp type {value}\n")
    assert_usage_error(run_main("fw", "show", "--format", "policy", str(path)), "invalid ICMP type")
    path.write_text("allow icmp type 8\n")
    assert run_main("fw", "show", "--format", "policy", str(path)).status == 0


def test_click_messages_quote_at_most_about_60_characters_even_when_short() -> None:
    value = "b" * 100  # the line stays under 200 characters, the quote must still be short
    line = assert_usage_error(run_main("ls", "--backend", value))
    assert "b" * 61 not in line and "100 chars" in line


def test_nft_json_statement_that_is_an_empty_object(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    valid = (Path(__file__).parent / "data" / "bad_input" / "rules.json").read_text()
    path.write_text(valid.replace('"accept": null', "", 1))
    assert_usage_error(run_main("fw", "show", str(path)), "invalid nft JSON")


def test_internal_error_line_stays_short_when_the_exception_carries_input() -> None:
    from portkit.cli.entry import failure_line

    line = failure_line(KeyError("9" * 5000))
    assert line.startswith("portkit: internal error: KeyError: '999") and "(5002 chars)" in line
    assert len(line) < 240 and "PORTKIT_DEBUG=1" in line
    assert failure_line(ValueError("short")) == (
        "portkit: internal error: ValueError: short "
        "(run again with PORTKIT_DEBUG=1 for the traceback, and please report it)"
    )
