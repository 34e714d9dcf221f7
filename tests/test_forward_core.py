"""The forwarder's pure cores: the connection state machine, rules and config, PROXY headers, UDP table."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portkit.errors import UsageError
from portkit.forward import (
    TRANSITIONS,
    ClientTable,
    ConnectionState,
    Event,
    ForwardAction,
    Overflow,
    ProxyProtocol,
    State,
    make_rule,
    parse_config,
    parse_listen,
    parse_proxy_header,
    proxy_header,
)

# --- state machine ----------------------------------------------------------------------------


def _run(*events: Event) -> tuple[State, list[ForwardAction]]:
    machine = ConnectionState()
    actions: list[ForwardAction] = []
    for event in events:
        actions += machine.handle(event)
    return machine.state, actions


def test_half_close_passes_fin_on_and_keeps_the_other_direction() -> None:
    state, actions = _run(Event.CONNECTED, Event.CLIENT_EOF)
    assert state is State.CLIENT_DONE and actions == [ForwardAction.START_RELAY, ForwardAction.SHUT_TARGET_WR]
    machine = ConnectionState(State.CLIENT_DONE)
    assert machine.reading_from("target") and not machine.reading_from("client")
    assert machine.handle(Event.TARGET_EOF) == (ForwardAction.SHUT_CLIENT_WR, ForwardAction.CLOSE_BOTH)
    assert machine.state is State.CLOSED


def test_resets_are_passed_on_as_resets() -> None:
    for live in (State.OPEN, State.CLIENT_DONE, State.TARGET_DONE):
        assert TRANSITIONS[(live, Event.TARGET_RESET)] == (
            State.RESET,
            (ForwardAction.RESET_CLIENT, ForwardAction.CLOSE_BOTH),
        )
        assert TRANSITIONS[(live, Event.CLIENT_RESET)] == (
            State.RESET,
            (ForwardAction.RESET_TARGET, ForwardAction.CLOSE_BOTH),
        )


def test_unreachable_target_resets_the_client() -> None:
    assert _run(Event.CONNECT_FAILED) == (State.RESET, [ForwardAction.RESET_CLIENT, ForwardAction.CLOSE_BOTH])


@given(st.lists(st.sampled_from(list(Event)), max_size=12))
def test_any_event_sequence_closes_at_most_once_and_finished_is_final(events: list[Event]) -> None:
    machine = ConnectionState()
    closes = 0
    for event in events:
        was_finished = machine.finished
        actions = machine.handle(event)
        closes += actions.count(ForwardAction.CLOSE_BOTH)
        if was_finished:
            assert actions == () and machine.finished
        # A FIN is never sent the same way twice, and never after a reset.
        assert actions.count(ForwardAction.SHUT_TARGET_WR) <= 1
    assert closes == (1 if machine.finished else 0)


# --- rules and config -------------------------------------------------------------------------


def test_listen_defaults_to_loopback_and_other_addresses_are_written_out() -> None:
    assert str(parse_listen("8080")) == "127.0.0.1:8080"
    assert str(parse_listen(8080)) == "127.0.0.1:8080"
    assert str(parse_listen("0.0.0.0:8080")) == "0.0.0.0:8080"
    assert str(parse_listen("[::]:8080")) == "[::]:8080"
    for implicit in (":8080", "*:8080"):
        with pytest.raises(UsageError, match="write the address out"):
            parse_listen(implicit)


@given(st.integers(min_value=0, max_value=65535))
def test_bare_port_always_listens_on_loopback(port: int) -> None:
    assert parse_listen(str(port)).address.is_loopback


@settings(max_examples=60)
@given(st.text(max_size=30))
def test_listen_parser_accepts_or_raises_usage_error(text: str) -> None:
    try:
        parse_listen(text)
    except UsageError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("8080", "10.0.0.5"), "invalid target"),
        (("8080", "10.0.0.5:99999"), "invalid port"),
        (("99999", "10.0.0.5:80"), "invalid port"),
        (("8080", "10.0.0.5:80", {"allow": ["10.0.0.0/33"]}), "invalid allow-list"),
        (("8080", "10.0.0.5:80", {"protocol": "sctp"}), "expected tcp or udp"),
        (("8080", "10.0.0.5:80", {"protocol": "udp", "proxy_protocol": "v1"}), "TCP only"),
    ],
)
def test_bad_rules_name_the_input(args: tuple, message: str) -> None:
    *positional, options = args if isinstance(args[-1], dict) else (*args, {})
    with pytest.raises(UsageError, match=message):
        make_rule(*positional, **options)


def test_allow_list_matches_cidrs_and_mapped_addresses() -> None:
    rule = make_rule("8080", "127.0.0.1:80", allow=["10.0.0.0/8", "::1"])
    assert rule.allows("10.1.2.3") and rule.allows("::1") and rule.allows("::ffff:10.9.9.9")
    assert not rule.allows("192.0.2.1") and not rule.allows("127.0.0.1")
    assert make_rule("8080", "127.0.0.1:80").allows("203.0.113.9")  # empty list: everyone


def test_config_with_defaults_and_rules(tmp_path: Path) -> None:
    rules = parse_config(
        """
        [defaults]
        idle_timeout = 60
        max_connections = 100

        [[rule]]
        name = "web"
        listen = 8080
        target = "127.0.0.1:80"
        allow = ["192.0.2.0/24"]
        proxy_protocol = "v2"
        overflow = "queue"

        [[rule]]
        listen = "0.0.0.0:5353"
        target = "localhost:53"
        protocol = "udp"
        idle_timeout = 5
        """
    )
    web, dns = rules
    assert web.label == "web" and str(web.listen) == "127.0.0.1:8080"
    assert web.limits.idle_timeout == 60 and web.limits.max_connections == 100
    assert web.limits.overflow is Overflow.QUEUE and web.proxy_protocol is ProxyProtocol.V2
    assert web.allow == (ipaddress.ip_network("192.0.2.0/24"),)
    assert dns.label == "udp/0.0.0.0:5353" and dns.limits.idle_timeout == 5
    assert dns.target.address.is_loopback


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]\n", "invalid config"),
        ("", "no rules"),
        ("[[rule]]\nlisten = 80\n", "missing 'target'"),
        ("[[rule]]\nlisten = 80\ntarget = '127.0.0.1:1'\ncolour = 'red'\n", "unknown key 'colour'"),
        ("[[rule]]\nlisten = 80\ntarget = '127.0.0.1:1'\nidle_timeout = -1\n", "idle_timeout"),
        ("[[rule]]\nlisten = 80\ntarget = '127.0.0.1:1'\nmax_connections = 'lots'\n", "max_connections"),
        (
            "[[rule]]\nlisten = 80\ntarget = '127.0.0.1:1'\n[[rule]]\nlisten = 80\ntarget = '127.0.0.1:2'\n",
            "already",
        ),
        ("[defaults]\nspeed = 9\n[[rule]]\nlisten = 80\ntarget = '127.0.0.1:1'\n", "unknown key 'speed'"),
    ],
)
def test_bad_config_is_one_line_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_config(text)
    assert "\n" not in str(info.value)


# --- PROXY protocol ---------------------------------------------------------------------------


def test_proxy_v1_header_is_the_documented_text() -> None:
    header = proxy_header(ProxyProtocol.V1, ("192.0.2.1", 56324), ("10.0.0.1", 443))
    assert header == b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n"


def test_proxy_v2_header_layout() -> None:
    header = proxy_header(ProxyProtocol.V2, ("192.0.2.1", 56324), ("10.0.0.1", 443))
    assert header[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert header[12:16] == b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 address bytes
    assert header[16:20] == socket.inet_aton("192.0.2.1") and header[24:26] == (56324).to_bytes(2, "big")


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@settings(max_examples=60)
@given(addresses, st.integers(0, 65535), addresses, st.integers(0, 65535), st.sampled_from(["v1", "v2"]))
def test_proxy_headers_round_trip(src: str, sport: int, dst: str, dport: int, version: str) -> None:
    header = proxy_header(ProxyProtocol(version), (src, sport), (dst, dport))
    source, destination, length = parse_proxy_header(header + b"rest")
    assert length == len(header)
    assert (source[1], destination[1]) == (sport, dport)
    # A v4 and a v6 address in one header are both written as v6 (v4-mapped): same addresses.
    assert _unmapped(source[0]) == _unmapped(src)
    assert _unmapped(destination[0]) == _unmapped(dst)


def _unmapped(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# --- UDP client table -------------------------------------------------------------------------


def test_client_table_evicts_least_recently_used_and_expires_idle() -> None:
    table: ClientTable[str] = ClientTable(max_clients=2, idle_timeout=10)
    assert table.add("a", "sock-a", now=0) == []
    assert table.add("b", "sock-b", now=1) == []
    table.touch("a", now=2)  # a is now the most recent
    evicted = table.add("c", "sock-c", now=3)
    assert [e.client for e in evicted] == ["b"]
    assert table.get("b", now=3) is None and len(table) == 2
    assert [e.client for e in table.expire(now=12.5)] == ["a"]
    assert [e.client for e in table] == ["c"]
    assert table.expire(now=13.5) and len(table) == 0


def test_runtime_dir_comes_from_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from portkit.forward import runtime_dir

    monkeypatch.setenv("PORTKIT_RUNTIME_DIR", "/nowhere/from-the-process")  # never looked at
    assert runtime_dir({"PORTKIT_RUNTIME_DIR": "/a", "RUNTIME_DIRECTORY": "/b"}) == Path("/a")
    assert runtime_dir({"RUNTIME_DIRECTORY": "/b:/c"}) == Path("/b")  # systemd lists several
    if os.geteuid() == 0:
        assert runtime_dir({"XDG_RUNTIME_DIR": "/x"}) == Path("/run/portkit")
    else:
        assert runtime_dir({"XDG_RUNTIME_DIR": "/x"}) == Path("/x/portkit")
        assert runtime_dir({}) == Path(f"/tmp/portkit-{os.getuid()}")
