"""`:CHAIN POLICY` lines: portkit takes and refuses what iptables-restore does, with the real tool as oracle.

The oracle is a real load into a network namespace made for the test: `iptables-restore --test`
of the nf_tables backend does not check policies (it passes `:INPUT FROB`), a real load does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conftest import needs_root
from portkit.errors import UsageError
from portkit.firewall import FilterAction, import_iptables_save
from portkit.testing import LabNamespace

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="needs iptables-restore"),
]


@contextmanager
def _netns() -> Iterator[str]:
    with LabNamespace("pkipt") as ns:
        yield ns.name


def _kernel_load(text: str, tool: str = "iptables-restore") -> tuple[bool, str]:
    """Whether `tool` loads `text` for real in a fresh namespace, and the filter table it then holds."""
    with _netns() as ns:
        loaded = subprocess.run(
            ["ip", "netns", "exec", ns, tool], input=text, capture_output=True, text=True, timeout=30
        )
        saved = subprocess.run(
            ["ip", "netns", "exec", ns, tool.replace("-restore", "-save"), "-t", "filter"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return loaded.returncode == 0, saved.stdout


def _portkit(text: str) -> tuple[bool, str]:
    try:
        ruleset = import_iptables_save(text, source="rules")
    except UsageError as exc:
        return False, str(exc)
    chains = {c.name: c for t in ruleset.tables for c in t.chains}
    return True, " ".join(f"{name}={c.policy.value}" for name, c in sorted(chains.items()))


def _text(declaration: str) -> str:
    return f"*filter\n:{declaration}\nCOMMIT\n"


BUILTIN = [
    "INPUT FROB [0:0]", "INPUT accept [0:0]", "INPUT RETURN [0:0]", "INPUT QUEUE [0:0]", "INPUT",
    "INPUT ACCEPT [0:0]", "INPUT DROP [0:0]", "INPUT DROP", "INPUT - [0:0]", "FORWARD DROP [12:345]",
]  # fmt: skip
USER = ["mine - [0:0]", "mine", "mine ACCEPT [0:0]", "mine FROB [0:0]"]


@pytest.mark.parametrize("declaration", BUILTIN + USER)
def test_policy_refused_exactly_when_iptables_restore_refuses_it(declaration: str) -> None:
    text = _text(declaration)
    kernel_ok, saved = _kernel_load(text)
    ours_ok, detail = _portkit(text)
    assert ours_ok == kernel_ok, (declaration, detail, saved)
    if not ours_ok:
        # One line that names the place, the chain and what is accepted.
        name = declaration.split()[0]
        assert "\n" not in detail and "rules:2" in detail and repr(name) in detail
        assert ("ACCEPT or DROP" if name.isupper() else "expected - (user chains have none)") in detail
        return
    chain = declaration.split()[0]
    if chain.isupper():
        # The policy the kernel then holds is the one portkit models.
        [line] = [ln for ln in saved.splitlines() if ln.startswith(f":{chain} ")]
        assert f"{chain}={line.split()[1].lower()}" in detail


@pytest.mark.parametrize("declaration", ["mine ACCEPT [0:0]", "mine DROP [0:0]", "mine FROB [0:0]"])
def test_a_word_on_a_user_chain_is_ignored_as_the_nf_tables_backend_does(declaration: str) -> None:
    text = _text(declaration)
    kernel_ok, saved = _kernel_load(text)
    assert kernel_ok and ":mine - [0:0]" in saved  # loaded, the word dropped
    if shutil.which("iptables-legacy-restore"):
        legacy = subprocess.run(
            ["iptables-legacy-restore", "--test"], input=text, capture_output=True, text=True, timeout=30
        )
        assert "Bad built-in chain name" in legacy.stderr  # the legacy backend refuses it
    ruleset = import_iptables_save(text, source="rules")
    [chain] = [c for t in ruleset.tables for c in t.chains if c.name == "mine"]
    assert chain.hook is None and chain.policy is FilterAction.ACCEPT
    [note] = ruleset.notes
    assert note.startswith("rules:2: policy") and "ignored" in note and "legacy" in note


def test_the_cli_exits_2_with_one_line(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.v4"
    rules.write_text("*filter\n:INPUT FROB [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n")
    result = cli("fw", "show", str(rules))
    assert result.status == 2
    [line] = result.stderr.strip().splitlines()
    assert "invalid policy 'FROB' for chain 'INPUT'" in line and "rules.v4:2" in line
    assert "expected ACCEPT or DROP" in line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (":INPUT ACCEPT [0:0]\n*filter\nCOMMIT\n", "a chain outside a *table section"),
        ("*filter\n:\nCOMMIT\n", "':' without a chain name"),
    ],
)
def test_chain_lines_iptables_restore_refuses_are_refused(text: str, says: str) -> None:
    kernel_ok, _saved = _kernel_load(text)
    assert not kernel_ok
    with pytest.raises(UsageError, match=re.escape(says)):
        import_iptables_save(text)


GOTO_RULES = ["-g ACCEPT", "-g DROP", "-g RETURN", "--goto REJECT", "-g mine", "-j mine", "-j ACCEPT"]


@pytest.mark.parametrize("rule", [*GOTO_RULES, "-j nosuch", "-g Other"])
def test_goto_refused_exactly_when_iptables_restore_refuses_it(rule: str) -> None:
    # insights-core's IPTABLES_SAVE has `-A INPUT ... -g ACCEPT`: iptables-restore refuses it
    # ("Chain 'ACCEPT' does not exist"); portkit read it as an accept.
    text = f"*filter\n:INPUT ACCEPT [0:0]\n:mine - [0:0]\n-A INPUT -p tcp --dport 22 {rule}\nCOMMIT\n"
    kernel_ok, _saved = _kernel_load(text)
    ours_ok, said = _portkit(text)
    assert ours_ok == kernel_ok, said
    if not ours_ok:
        assert "rules:4" in said and "chain" in said


COMMANDS = [
    # -I inserts at the head (or at the position given), not at the end.
    "-A INPUT -p tcp --dport 22 -j DROP\n-I INPUT -p tcp --dport 22 -j ACCEPT\n",
    "-A INPUT -p tcp --dport 22 -j DROP\n-A INPUT -p tcp --dport 23 -j DROP\n"
    "-I INPUT 2 -p tcp --dport 23 -j ACCEPT\n-I INPUT 4 -p tcp --dport 24 -j REJECT\n",
    # -N declares a chain and -P sets a built-in chain's policy, as hand-written files do.
    "-N LOGREJECT\n-A LOGREJECT -j REJECT\n-A INPUT -p tcp --dport 22 -j LOGREJECT\n-P INPUT DROP\n",
    "-P FORWARD DROP\n-P OUTPUT ACCEPT\n",
]


@pytest.mark.parametrize("commands", COMMANDS)
def test_restore_commands_read_as_iptables_restore_runs_them(commands: str) -> None:
    # iptables-restore runs -I, -N and -P lines; portkit appended -I rules (the wrong order:
    # a DROP before the ACCEPT inserted above it) and refused -N and -P.
    text = f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{commands}COMMIT\n"
    kernel_ok, saved = _kernel_load(text)
    assert kernel_ok
    ours = import_iptables_save(text)
    theirs = import_iptables_save(saved)

    def shape(rs: object) -> list[tuple[str, str, list[str]]]:
        return sorted(
            (c.name, c.policy.value, [str(r) for r in c.rules])
            for t in rs.tables  # type: ignore[attr-defined]
            for c in t.chains
        )

    assert shape(ours) == shape(theirs)


@pytest.mark.parametrize(
    ("commands", "says"),
    [
        ("-I INPUT 3 -j ACCEPT\n", "position 3"),
        ("-N INPUT\n", "already exists"),
        ("-P nosuch DROP\n", "built-in"),
    ],
)
def test_restore_commands_iptables_refuses_are_refused(commands: str, says: str) -> None:
    text = f"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n{commands}COMMIT\n"
    kernel_ok, _saved = _kernel_load(text)
    assert not kernel_ok
    with pytest.raises(UsageError, match=says):
        import_iptables_save(text)
