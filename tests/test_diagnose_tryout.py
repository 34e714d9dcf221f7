"""diagnose as a new user meets it: inputs people type, and scenarios outside the fault matrix."""

from __future__ import annotations

import pytest

from fixtures_bad_input import assert_usage_error, run_main


@pytest.mark.parametrize("text", ["::1", "::", "2001:db8::5/udp"])
@pytest.mark.parametrize("form", [(), ("--bind",)])
def test_an_ipv6_address_without_a_port_says_so(text: str, form: tuple[str, ...]) -> None:
    line = assert_usage_error(run_main("diagnose", *form, text), "no port")
    assert "[:]" not in line  # never a bracketed fragment of the address as the suggestion


@pytest.mark.parametrize("text", ["::1:80", "fe80::1:80"])
def test_an_ipv6_address_and_port_without_brackets_gets_the_bracketed_form(text: str) -> None:
    host, _, port = text.rpartition(":")
    assert_usage_error(run_main("diagnose", text), f"[{host}]:{port}")


@pytest.mark.parametrize("text", ["[fe80::1]:80", "[fe80::1%lo]:80/udp"])
def test_a_link_local_bind_is_refused_not_called_bindable(text: str) -> None:
    """Without its scope id a link-local bind fails (EINVAL) whatever the port's state."""
    assert_usage_error(run_main("diagnose", "--bind", text), "link-local")
