"""Opening a results store safely: one-line errors for every path or SQLite problem, never
creating a store when only reading, never modifying a file that is not a tokenjoule store,
and waiting for a busy writer for a bounded, reported time.

Why the order matters: `sqlite3.connect` creates an empty file for a missing path, and
`PRAGMA journal_mode=WAL` rewrites the header of whatever file it is given. So the path is
checked first, a read opens with `mode=rw` (never create), and the foreign-file check runs
before WAL is switched on or any table is created.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from tokenjoule.errors import TokenjouleError
from tokenjoule.limits import STORE_BUSY_TIMEOUT_S

log = logging.getLogger("tokenjoule.store")

# Columns any tokenjoule `cells` table has had since schema version 1.
REQUIRED_CELL_COLUMNS = frozenset({"id", "spec_hash", "kind", "status", "created_at", "spec_json",
                                   "metrics_json", "measurement_json", "provenance_json", "error"})
# SQLite's own bookkeeping tables, present in any database that used AUTOINCREMENT or ANALYZE.
_INTERNAL_TABLES = {"sqlite_sequence", "sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"}


MEMORY = ":memory:"


class StoreError(TokenjouleError):
    """A results store that cannot be opened, read or written; the message is one line."""


def busy_timeout_s() -> float:
    """The longest a store call waits for another process's write lock
    (`TOKENJOULE_BUSY_TIMEOUT_S`, default and maximum in `tokenjoule.limits`)."""
    raw = os.environ.get("TOKENJOULE_BUSY_TIMEOUT_S")
    if raw is None:
        return STORE_BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise StoreError(f"TOKENJOULE_BUSY_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
    if not 0 <= value <= 24 * 3600:
        raise StoreError(f"TOKENJOULE_BUSY_TIMEOUT_S must be between 0 and 86400, got {raw!r}")
    return value


def check_path(path: Path, *, create: bool) -> None:
    """Raise a one-line StoreError for a path SQLite could not use as a store file."""
    text = str(path)
    if not text or text in (".", ""):
        raise StoreError("the results store path is empty; pass --db FILE (e.g. tokenjoule.db)")
    if "\x00" in text:
        raise StoreError(f"results store path {text!r} contains a NUL byte")
    try:
        if path.is_dir():
            raise StoreError(f"{path} is a directory; --db needs a file, e.g. {path / 'tokenjoule.db'}")
        if path.exists():
            return
        if not create:
            raise StoreError(f"no results store at {path}; measure something first (tokenjoule measure ...) "
                             "or pass --db PATH of an existing store")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise StoreError(f"cannot create {path}: {parent} is a file, not a folder")
                break
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot use {path} as a results store: {exc.strerror or exc}") from None


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to `path` (created only when `create`), with a short busy timeout: waits
    longer than that go through `wait_busy` so they are bounded and reported."""
    if str(path) == MEMORY:  # an in-memory store (reference tables, tests): no file at all
        conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
        conn.text_factory = _decode_text
        conn.row_factory = sqlite3.Row
        return conn
    check_path(path, create=create)
    mode = "rwc" if create else "rw"
    if not create and not os.access(path, os.W_OK):
        mode = "ro"  # a read-only file can still be read
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=1.0, isolation_level=None, check_same_thread=False)
    except (sqlite3.Error, OSError, ValueError) as exc:
        raise StoreError(f"cannot open {path} as a results store: {exc}") from None
    conn.text_factory = _decode_text
    conn.row_factory = sqlite3.Row
    return conn


class Undecodable(bytes):
    """Text stored in a row that is not valid UTF-8 (a damaged row): kept as bytes so the
    reader can skip that row by id instead of failing the whole query."""


def _decode_text(raw: bytes) -> str | Undecodable:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(raw)


def check_tokenjoule_file(conn: sqlite3.Connection, path: Path, schema_version: int) -> int:
    """The store's schema version, after making sure the file is a tokenjoule store (or an empty
    database). Reads only; raises StoreError for another application's file."""
    def read() -> tuple[int, set, set]:
        # One read transaction, so the version and the tables are one snapshot (another process
        # may be creating the tables of this new store right now).
        conn.execute("BEGIN")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            columns = {r[1] for r in conn.execute("PRAGMA table_info(cells)")} if "cells" in tables else set()
        finally:
            conn.execute("COMMIT")
        return version, tables, columns

    try:
        version, tables, cell_columns = wait_busy(read, path, "read the store")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a tokenjoule results database ({exc})") from None
    own = tables - _INTERNAL_TABLES
    if version == 0 and own:
        raise StoreError(f"{path}: not a tokenjoule results database (an SQLite file with tables "
                         f"{', '.join(sorted(own)[:5])}); left unchanged; pass another --db")
    if version > 0 and not REQUIRED_CELL_COLUMNS <= cell_columns:
        raise StoreError(f"{path}: not a tokenjoule results database (schema version {version} but no "
                         "tokenjoule cells table); left unchanged; pass another --db")
    if version > schema_version:
        raise StoreError(f"{path}: schema version {version} is newer than this tokenjoule understands "
                         f"({schema_version}); upgrade tokenjoule")
    return version


def wait_busy(action, path: Path, what: str, timeout_s: float | None = None):
    """Run `action()` (one SQLite call), retrying while another process holds the lock, for at
    most `timeout_s` in all; the wait is logged once it passes a few seconds. Raises the last
    sqlite3.OperationalError when the bound is reached."""
    limit_s = busy_timeout_s() if timeout_s is None else timeout_s
    start = time.monotonic()
    reported = False
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            waited_s = time.monotonic() - start
            if waited_s >= limit_s:
                raise
            if not reported and waited_s >= 3.0:
                log.warning("%s: another process holds the write lock; waiting up to %.0f s to %s",
                            path, limit_s, what)
                reported = True
            time.sleep(0.05)


def is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text
