"""Apply a rule set safely, the way iptables-apply does: validate, save, apply atomically,
and roll back unless the user confirms in time.

`apply_ruleset` checks the new rules with `nft -c`, saves the running ruleset, loads the new
one in a single nft transaction (the script starts with `flush ruleset`, so the swap is
atomic), then either asks on the terminal (`interactive=True`) or leaves a detached guard
process that restores the saved rules at the deadline unless `confirm_apply` runs first.
A rule set that cuts the user's own SSH session therefore undoes itself.

State lives in <state_root>/<netns|host>/: previous.nft, new.nft, state.json, where
`state_root` is the caller's (`portkit fw` honours $PORTKIT_FW_STATE), STATE_ROOT by default.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portkit.errors import PermissionNeeded, PortkitError, UsageError
from portkit.firewall._live import _NETNS_RE, run_tool
from portkit.firewall._model import Ruleset

STATE_ROOT = Path("/run/portkit/fw")
"""Where apply keeps its state when the caller names no `state_root`."""

# The guard runs with this process's import path, given on its command line: portkit need
# not be installed where the interpreter would find it on its own.
_GUARD_BOOT = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from portkit.firewall._apply import main; sys.exit(main(sys.argv[2:]))"
)


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    status: str  # pending | confirmed | rolled-back | kept | nothing-pending | invalid
    target: str  # "this host" / "netns NAME"
    message: str
    deadline: float | None = None
    guard_pid: int | None = None

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "target": self.target,
            "message": self.message,
            "deadline": self.deadline,
            "guard_pid": self.guard_pid,
        }


def _state_dir(netns: str | None, state_root: Path | None) -> Path:
    """Where an apply on `netns` (None: this host) keeps its state. A name is checked first: an
    empty one (`--netns "$NS"`, NS unset) must not stand for this host."""
    if netns is not None and not _NETNS_RE.match(netns):
        raise UsageError(f"invalid netns name {netns!r}: expected letters, digits, '.', '_' or '-'")
    return (state_root or STATE_ROOT) / (f"netns-{netns}" if netns is not None else "host")


def _target(netns: str | None) -> str:
    return f"netns {netns}" if netns else "this host"


def _restore(netns: str | None, saved: str) -> None:
    body = saved if saved.lstrip().startswith("flush ruleset") else "flush ruleset\n" + saved
    proc = run_tool(["nft", "-f", "-"], netns=netns, stdin=body)
    if proc.returncode != 0:
        raise PortkitError(f"roll-back failed on {_target(netns)}: {proc.stderr.strip()}")


def apply_ruleset(
    ruleset: Ruleset,
    *,
    netns: str | None = None,
    confirm_within: float = 30.0,
    interactive: bool = False,
    state_root: Path | None = None,
) -> ApplyResult:
    from portkit.firewall._nft import render_nft

    if os.geteuid() != 0:
        raise PermissionNeeded("applying firewall rules needs root (CAP_NET_ADMIN): run with sudo")
    script, problems = render_nft(ruleset)
    if problems:
        raise UsageError(
            "refusing to apply rules portkit cannot render faithfully: " + "; ".join(problems[:3])
        )
    state = _state_dir(netns, state_root)
    if (state / "state.json").exists():
        old = json.loads((state / "state.json").read_text())
        if old.get("status") == "pending" and _alive(old.get("guard_pid")):
            raise UsageError(
                f"an apply is already pending on {_target(netns)}: run 'portkit fw confirm' "
                "or 'portkit fw rollback' first"
            )
    state.mkdir(parents=True, exist_ok=True)
    new_file = state / "new.nft"
    new_file.write_text(script)
    check = run_tool(["nft", "-c", "-f", str(new_file)], netns=netns)
    if check.returncode != 0:
        first = (check.stderr.strip().splitlines() or ["nft -c failed"])[0]
        return ApplyResult(False, "invalid", _target(netns), f"nft -c rejected the rules: {first}")
    saved = run_tool(["nft", "list", "ruleset"], netns=netns)
    if saved.returncode != 0:
        raise PortkitError(f"cannot save the running ruleset: {saved.stderr.strip()}")
    previous = state / "previous.nft"
    previous.write_text("flush ruleset\n" + saved.stdout)
    # A roll-back is only a promise if the saved rules load again (tables iptables-nft wrote
    # with xt expressions, for one, do not): check before touching anything.
    restorable = run_tool(["nft", "-c", "-f", str(previous)], netns=netns)
    if restorable.returncode != 0:
        first = (restorable.stderr.strip().splitlines() or ["nft -c failed"])[0]
        return ApplyResult(
            False,
            "invalid",
            _target(netns),
            f"refusing to apply: the running rules could not be restored on roll-back ({first}); "
            "save them with iptables-save and apply with iptables-apply instead",
        )
    loaded = run_tool(["nft", "-f", str(new_file)], netns=netns)
    if loaded.returncode != 0:
        return ApplyResult(
            False, "invalid", _target(netns), f"nft refused the rules: {loaded.stderr.strip()}"
        )
    deadline = time.time() + confirm_within
    if interactive:
        return _ask(netns, saved.stdout, confirm_within, deadline)
    guard = subprocess.Popen(
        [sys.executable, "-c", _GUARD_BOOT, json.dumps(sys.path), "guard", str(state), str(confirm_within)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _write_state(state, {"status": "pending", "netns": netns, "deadline": deadline, "guard_pid": guard.pid})
    return ApplyResult(
        True,
        "pending",
        _target(netns),
        f"new rules applied on {_target(netns)}; run 'portkit fw confirm"
        f"{' --netns ' + netns if netns else ''}' within {confirm_within:g}s or they are "
        "rolled back",
        deadline,
        guard.pid,
    )


def _ask(netns: str | None, saved: str, seconds: float, deadline: float) -> ApplyResult:
    sys.stderr.write(f"Rules applied on {_target(netns)}. Keep them? [y/N] (rolling back in {seconds:g}s) ")
    sys.stderr.flush()
    answer = ""
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, deadline - time.time()))
    if ready:
        answer = sys.stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return ApplyResult(True, "kept", _target(netns), "new rules kept")
    _restore(netns, saved)
    why = "no answer in time" if not ready else "not confirmed"
    return ApplyResult(False, "rolled-back", _target(netns), f"{why}: previous rules restored")


def _write_state(state: Path, doc: dict[str, Any]) -> None:
    tmp = state / "state.json.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(state / "state.json")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _pending(netns: str | None, state_root: Path | None) -> tuple[Path, dict[str, Any]] | None:
    state = _state_dir(netns, state_root)
    try:
        doc = json.loads((state / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if doc.get("status") != "pending":
        return None
    return state, doc


def confirm_apply(*, netns: str | None = None, state_root: Path | None = None) -> ApplyResult:
    """Keep the pending rules: mark them confirmed and stop the guard."""
    found = _pending(netns, state_root)
    if found is None:
        try:
            last = json.loads((_state_dir(netns, state_root) / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            last = {}
        if last.get("status") == "rolled-back":
            return ApplyResult(
                False,
                "rolled-back",
                _target(netns),
                "too late: the rules were not confirmed in time and have been rolled back",
            )
        return ApplyResult(False, "nothing-pending", _target(netns), "no apply is waiting for confirmation")
    state, doc = found
    if time.time() > float(doc.get("deadline", 0)) or not _alive(doc.get("guard_pid")):
        return ApplyResult(
            False, "rolled-back", _target(netns), "too late: the rules were already rolled back"
        )
    _write_state(state, {**doc, "status": "confirmed"})
    _stop(doc.get("guard_pid"))
    return ApplyResult(True, "confirmed", _target(netns), "new rules confirmed and kept")


def rollback_apply(*, netns: str | None = None, state_root: Path | None = None) -> ApplyResult:
    """Restore the saved rules now."""
    found = _pending(netns, state_root)
    if found is None:
        return ApplyResult(False, "nothing-pending", _target(netns), "no apply is waiting for confirmation")
    state, doc = found
    _stop(doc.get("guard_pid"))
    _restore(netns, (state / "previous.nft").read_text())
    _write_state(state, {**doc, "status": "rolled-back"})
    return ApplyResult(True, "rolled-back", _target(netns), "previous rules restored")


def _stop(pid: Any) -> None:
    if _alive(pid):
        with contextlib.suppress(OSError):
            os.kill(int(pid), signal.SIGTERM)


def _guard(state: Path, seconds: float) -> int:
    """The detached guard: wait, then roll back unless the state says confirmed."""
    stop = {"now": False}

    def on_term(_sig: int, _frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop["now"]:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    try:
        doc = json.loads((state / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        doc = {}
    if stop["now"] or doc.get("status") != "pending":
        return 0
    netns = doc.get("netns")
    _restore(netns, (state / "previous.nft").read_text())
    _write_state(state, {**doc, "status": "rolled-back"})
    return 0


def main(argv: list[str]) -> int:
    """The guard process's entry point: `guard STATE_DIR SECONDS`."""
    if len(argv) == 3 and argv[0] == "guard":
        return _guard(Path(argv[1]), float(argv[2]))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
