"""Where the ledger lives and whether a command records: `--record`, `--db PATH`, the config file.

The config file is $PORTKIT_CONFIG, else $XDG_CONFIG_HOME/portkit/config.toml, else
~/.config/portkit/config.toml; it is TOML with these top-level keys:

    record = true                       # every observing command records, as with --record
    db = "/var/lib/portkit/ledger.db"   # the ledger file, as with --db

The ledger is --db, else the config's `db`, else $XDG_STATE_HOME/portkit/ledger.db, else
~/.local/state/portkit/ledger.db. Only the CLI reads these; portkit.ledger takes a path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from portkit.errors import UsageError, quote

if TYPE_CHECKING:
    from portkit.ledger import Ledger

F = TypeVar("F", bound=Callable[..., Any])
CONFIG_KEYS = {"record": bool, "db": str}


@dataclass(frozen=True)
class Config:
    record: bool = False
    db: Path | None = None


def config_path(environ: Mapping[str, str]) -> Path:
    explicit = environ.get("PORTKIT_CONFIG")
    if explicit:
        return Path(explicit)
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "portkit" / "config.toml"


def load_config(environ: Mapping[str, str]) -> Config:
    """The config file's settings; defaults when there is no file. A bad file is a UsageError."""
    import tomllib

    from portkit._textfile import read_text_file

    path = config_path(environ)
    try:
        exists = path.exists()
    except OSError:
        # A directory on the way this user may not search (root's XDG_CONFIG_HOME kept under
        # `sudo -u`): no config of this user's can be there. A path the user named
        # (PORTKIT_CONFIG) is read anyway, and read_text_file says what is wrong with it.
        exists = False
    if not exists and not environ.get("PORTKIT_CONFIG"):
        return Config()
    text = read_text_file(path, what="config file", limit=1024 * 1024)
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        why = " ".join(str(exc).split())[:80]
        raise UsageError(f"invalid config file {quote(str(path))}: {why}") from None
    for key, value in doc.items():
        expected = CONFIG_KEYS.get(key)
        if expected is None:
            raise UsageError(
                f"invalid config file {quote(str(path))}: unknown key {quote(key)}; "
                f"expected {', '.join(CONFIG_KEYS)}"
            )
        if not isinstance(value, expected):
            word = "true or false" if expected is bool else "a string"
            raise UsageError(f"invalid config file {quote(str(path))}: {key} must be {word}")
    db = doc.get("db")
    if db is not None and (not db or "\0" in db):
        raise UsageError(f"invalid config file {quote(str(path))}: db must be a file path")
    return Config(record=bool(doc.get("record", False)), db=Path(db).expanduser() if db else None)


def default_ledger_path(environ: Mapping[str, str]) -> Path:
    state = environ.get("XDG_STATE_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".local" / "state"
    )
    return Path(state) / "portkit" / "ledger.db"


def ledger_path(db: str | None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if db is not None:
        if not db or "\0" in db:
            raise UsageError(f"invalid --db {quote(db)}: expected a file path")
        return Path(db)
    return load_config(env).db or default_ledger_path(env)


def open_ledger(db: str | None, *, create: bool) -> Ledger:
    from portkit.ledger import Ledger

    return Ledger.open(ledger_path(db), create=create)


def recording_ledger(record: bool | None, db: str | None) -> Ledger | None:
    """The ledger to record into, opened before the command observes anything (so a bad --db
    fails first), or None when this run does not record."""
    wanted = record if record is not None else load_config(os.environ).record
    if not wanted:
        return None
    return open_ledger(db, create=True)


def this_host() -> str:
    return socket.gethostname()


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db",
        metavar="PATH",
        help="The ledger file (default: db in the config, else $XDG_STATE_HOME/portkit/ledger.db).",
    )(fn)


def record_options(fn: F) -> F:
    """`--record/--no-record` and `--db PATH` for a command that observes something."""
    fn = db_option(fn)
    return click.option(
        "--record/--no-record",
        "record",
        default=None,
        help="Record what this run observed in the ledger (default: `record` in the config file).",
    )(fn)
