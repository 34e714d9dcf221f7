"""The ledger's SQLite schema: its versions, the migration steps between them, and opening a file.

Theory of operation. The schema version is SQLite's `user_version`; `application_id` marks the
file as a portkit ledger. MIGRATIONS is an ordered list: step N turns a version N-1 file into
version N, and a new file runs every step from 1. Opening a file:

1. reads `application_id` and `user_version` without writing anything, so a damaged file, another
   program's database or a file written by a newer portkit is refused with one line and left
   exactly as it was (LedgerDamaged, exit 2; LedgerTooNew, exit 1);
2. switches to WAL (readers never wait for the writer, and a crash mid-write loses at most the
   transaction in flight) with a busy timeout, so a `watch` daemon and CLI runs share the file;
3. runs the missing steps inside one `BEGIN IMMEDIATE` transaction, reading the version again
   once it holds the write lock: two processes opening a new file at once migrate it once.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from portkit.errors import PortkitError, UsageError, quote

APPLICATION_ID = 0x706B6C67  # "pklg"
SQLITE_MAGIC = b"SQLite format 3\x00"

# Step N (index N-1) turns a version N-1 ledger into version N.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: observations (one per recorded command run) and the port facts each one saw.
    (
        """CREATE TABLE observations (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            time REAL NOT NULL,
            host TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            complete INTEGER NOT NULL DEFAULT 1,
            data TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX observations_kind_time ON observations (kind, time)",
        "CREATE INDEX observations_time ON observations (time)",
        """CREATE TABLE port_facts (
            observation INTEGER NOT NULL REFERENCES observations (id) ON DELETE CASCADE,
            port INTEGER NOT NULL,
            protocol TEXT NOT NULL,
            host TEXT NOT NULL,
            state TEXT NOT NULL,
            address TEXT NOT NULL DEFAULT '',
            netns TEXT NOT NULL DEFAULT '',
            exposure TEXT NOT NULL DEFAULT '',
            owners TEXT NOT NULL DEFAULT '[]',
            service TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX port_facts_port ON port_facts (port, protocol, observation)",
        "CREATE INDEX port_facts_observation ON port_facts (observation)",
    ),
    # 2: events (watch's listener opened/closed, owner changed, scan detected, ...).
    (
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            kind TEXT NOT NULL,
            host TEXT NOT NULL DEFAULT '',
            port INTEGER,
            protocol TEXT,
            fields TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX events_port ON events (port, protocol, time)",
        "CREATE INDEX events_time ON events (time)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class LedgerDamaged(UsageError):
    """The file is not a portkit ledger (damaged, not SQLite, or another program's database)."""


class LedgerTooNew(PortkitError):
    """The ledger was written by a newer portkit whose schema this one does not know."""

    exit_status = 1


class LedgerMissing(PortkitError):
    """Nothing has been recorded at this path yet."""

    exit_status = 1


def damaged(path: Path, exc: BaseException | str) -> LedgerDamaged:
    why = " ".join(str(exc).split())[:40]
    return LedgerDamaged(
        f"invalid ledger {quote(str(path))}: not a portkit ledger, or damaged ({why}); it is left as it is"
    )


def connect(
    path: Path, *, busy_timeout: float, create: bool, upto: int = SCHEMA_VERSION
) -> sqlite3.Connection:
    """An open, migrated connection to the ledger at `path` (created when `create`).

    `upto` stops the migrations at that version (tests build old files with it).
    """
    try:
        if path.is_dir():
            raise UsageError(f"invalid ledger {quote(str(path))}: it is a directory; expected a file path")
        if path.exists() and not path.is_file():  # /dev/null, a FIFO (reading it would hang), a socket
            raise UsageError(f"invalid ledger {quote(str(path))}: not a regular file; expected a file path")
        if not path.exists() or (not create and path.stat().st_size == 0):
            if not create:  # a reader creates nothing, not even in an empty file
                raise LedgerMissing(
                    f"no ledger at {quote(str(path))}: nothing was recorded yet (record with --record)"
                )
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            with path.open("rb") as existing:
                head = existing.read(100)
            # SQLite takes a file shorter than its header for an empty database and would write
            # one over it: only an empty file, or an SQLite file, is opened.
            if head and (len(head) < 100 or not head.startswith(SQLITE_MAGIC)):
                raise damaged(path, "not an SQLite file")
    except OSError as exc:  # a name too long, a file where a directory should be, no permission
        raise UsageError(f"invalid ledger path {quote(str(path))}: {exc.strerror or exc}") from None
    try:
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise PortkitError(f"cannot open the ledger {quote(str(path))}: {exc}") from None
    deadline = time.monotonic() + busy_timeout
    with _closed_on_error(db, path):
        while True:
            try:
                _prepare(db, path, upto, create)
                return db
            except sqlite3.OperationalError as exc:
                if not create and _needs_write(exc):
                    db.close()
                    if _wal_holds_data(path):  # what the log holds is part of the ledger
                        raise PortkitError(
                            f"cannot read the ledger {quote(str(path))}: its write-ahead log holds"
                            " records this user may not replay (no write access beside it); read it as"
                            " its owner"
                        ) from None
                    return _read_only(path, busy_timeout)
                # SQLite answers BUSY at once, without waiting, where waiting could deadlock
                # (a reader upgrading to writer, the switch to WAL): step back and try again.
                if not _busy(exc):  # I/O, a full disk, no permission: not the file's fault
                    raise unusable(path, exc) from None
                if time.monotonic() > deadline:
                    raise PortkitError(
                        f"the ledger {quote(str(path))} stayed locked by another writer: {exc}"
                    ) from None
                time.sleep(random.uniform(0.002, 0.03))


@contextlib.contextmanager
def _closed_on_error(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    """The block's errors close `db`; a file SQLite cannot read as a database is `damaged`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        db.close()
        raise damaged(path, exc) from None
    except BaseException:
        db.close()
        raise


def unusable(path: Path, exc: sqlite3.OperationalError) -> PortkitError:
    """An error of the file system, not of the file: one line (exit 1)."""
    if "readonly" in str(exc):
        return PortkitError(
            f"cannot write the ledger {quote(str(path))}: it is read-only for this user"
            " (or on a read-only file system); reading commands still read it"
        )
    return PortkitError(f"cannot use the ledger {quote(str(path))}: {exc}")


def _needs_write(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "readonly" in text or "unable to open" in text


def _wal_holds_data(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A reader's connection to a ledger it may read but not write, with no writer connected.

    A WAL file is read through its index (FILE-shm), which the first connection creates beside
    it: a user who may read a ledger in a directory they may not write (root's, under
    /var/lib) could not read it at all while no writer held that index open. With no WAL
    content everything is in the file itself, which `immutable` reads without the index.
    """
    uri = path.resolve().as_uri() + "?mode=ro&immutable=1"
    try:
        db = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise PortkitError(f"cannot open the ledger {quote(str(path))}: {exc}") from None
    with _closed_on_error(db, path):
        _check(db, path)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            raise PortkitError(
                f"the ledger {quote(str(path))} has schema version {version} and this user may not"
                f" write it: open it once as its owner to migrate it to version {SCHEMA_VERSION}"
            )
    return db


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _prepare(db: sqlite3.Connection, path: Path, upto: int, create: bool) -> None:
    tables = _check(db, path)
    if not tables and not create:  # an SQLite file with nothing in it: a reader leaves it so
        raise LedgerMissing(
            f"no ledger in {quote(str(path))}: nothing was recorded yet (record with --record)"
        )
    if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        # Switching to WAL rewrites the header: a file that has tables is checked first, so
        # a damaged one is refused before anything is written to it.
        if tables and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    _migrate(db, path, upto)


def _check(db: sqlite3.Connection, path: Path) -> int:
    """Refuse, without writing, what this portkit must not open; returns how many tables it has.

    The three reads share one read transaction: another process creating the ledger commits
    its tables and its application_id together, and this must see both or neither.
    """
    db.execute("BEGIN")
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    finally:
        db.execute("ROLLBACK")
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise damaged(path, f"application_id {app_id:#x}")
    if version > SCHEMA_VERSION:
        raise LedgerTooNew(
            f"the ledger {quote(str(path))} has schema version {version}; this portkit reads up to "
            f"{SCHEMA_VERSION}: use a newer portkit (the file is left as it is)"
        )
    return int(tables)


def _migrate(db: sqlite3.Connection, path: Path, upto: int) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version >= upto:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
        for step in range(version, upto):
            for statement in MIGRATIONS[step]:
                db.execute(statement)
        if version < upto:
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {upto}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
