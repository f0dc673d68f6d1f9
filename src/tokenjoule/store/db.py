"""SQLite results store with a versioned schema.

One row per measured cell (offline batch or online run), ok or failed. Every write is one
transaction, so a process killed mid-cell leaves the store as it was before that cell. The
spec's canonical hash (`RunSpec.spec_hash()`) is what sweeps resume on.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from tokenjoule.limits import INT64_MAX
# The record and its reads live in tokenjoule.records; re-exported for existing imports.
from tokenjoule.records import CellRecord, utc_now  # noqa: F401
from tokenjoule.store import claims as _claims
from tokenjoule.store.connect import (MEMORY, StoreError, Undecodable, busy_timeout_s, check_tokenjoule_file,
                                      connect, is_busy, wait_busy)

log = logging.getLogger("tokenjoule.store")

DEFAULT_DB = "tokenjoule.db"
SCHEMA_VERSION = 3
# Metrics that are dicts but belong in the flat frame (as JSON text): the per-GPU energy split
# of a multi-GPU cell, which the report's tensor-parallel figure shows.
JSON_METRIC_COLUMNS = ("gpu_energy_by_device_j", "foreign_processes_by_device")

# Each entry upgrades the schema from version i to i + 1. Append; never edit a shipped one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE cells (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        spec_hash TEXT NOT NULL,
        kind TEXT NOT NULL,            -- offline | online
        status TEXT NOT NULL,          -- ok | failed
        created_at TEXT NOT NULL,      -- UTC ISO 8601
        model TEXT, engine TEXT, mode TEXT, decoding TEXT,
        batch_size INTEGER, input_tokens INTEGER, output_tokens INTEGER,
        tensor_parallel INTEGER, pipeline_parallel INTEGER,
        gpu_name TEXT, gpu_count INTEGER, method TEXT,
        energy_j REAL, duration_s REAL, energy_per_output_token_j REAL,
        spec_json TEXT NOT NULL, metrics_json TEXT NOT NULL, measurement_json TEXT NOT NULL,
        provenance_json TEXT NOT NULL, error TEXT
    );
    CREATE INDEX cells_hash ON cells (spec_hash, status);
    CREATE INDEX cells_model ON cells (model, engine, mode);
    CREATE TABLE max_batch (
        key TEXT PRIMARY KEY,          -- model/engine/mode/lengths/GPU, see runs.sweep
        max_batch INTEGER NOT NULL,
        gpu_name TEXT,
        probes_json TEXT NOT NULL,     -- the (batch, fits) probes that found it
        created_at TEXT NOT NULL
    );
    """,
    # 2: claims, so two processes on one store never measure the same cell twice
    _claims.CLAIMS_SQL,
    # 2 -> 3: the length bins a sweep was planned for, so estimates reuse them (bins travel with cells)
    """
    CREATE TABLE sweep_bins (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model TEXT,                    -- the sweep's model(s), comma-separated (NULL: any model)
        input_edges_json TEXT NOT NULL,
        output_edges_json TEXT NOT NULL,
        source TEXT,                   -- the sweep config (file or preset) that declared them
        created_at TEXT NOT NULL
    );
    """,
]

_SPEC_COLUMNS = ("model", "engine", "mode", "batch_size", "input_tokens", "output_tokens",
                 "tensor_parallel", "pipeline_parallel")


class ResultStore:
    """Open (creating or migrating) a results database.

    `create=False` opens an existing store only (reading never creates one). `read_only=True`
    also leaves it exactly as it is: no switch to WAL and no schema upgrade (an older store is
    read as it is; tables it lacks read as empty), so reading a committed evidence file never
    rewrites it. A file that is not a tokenjoule store is refused before anything in it
    changes. A read-only file opens for reading; writes to it (like any failed write) keep the
    record in a side file.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, create: bool = True, read_only: bool = False):
        self.path = Path(path)
        self.corrupt_ids: list[int] = []  # rows skipped by the last read (damaged JSON/text)
        self._conn = connect(self.path, create=create and not read_only)
        try:
            check_tokenjoule_file(self._conn, self.path, SCHEMA_VERSION)
            self.writable = not read_only and self._writable()
            if self.writable:
                try:
                    self._set_wal()
                except sqlite3.OperationalError as exc:
                    if is_busy(exc):
                        raise
                    # e.g. a folder we may not create the -wal file in: still readable
                    log.warning("%s: opened read-only (%s)", self.path, exc)
                    self.writable = False
            if self.writable:
                wait_busy(lambda: self._conn.execute("PRAGMA synchronous=FULL"), self.path, "open the store")
                self._migrate()
        except StoreError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if is_busy(exc):
                raise StoreError(f"{self.path}: another process held the store locked for more than "
                                 f"{busy_timeout_s():g} s (TOKENJOULE_BUSY_TIMEOUT_S); try again") from None
            raise StoreError(f"{self.path}: not a tokenjoule results database ({exc})") from None

    # -- schema ---------------------------------------------------------------------------
    def _writable(self) -> bool:
        return str(self.path) == MEMORY or os.access(self.path, os.W_OK)

    def _set_wal(self) -> None:
        mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            wait_busy(lambda: self._conn.execute("PRAGMA journal_mode=WAL").fetchone(), self.path,
                      "switch the store to WAL")

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        wait_busy(lambda: self._conn.execute("BEGIN IMMEDIATE"), self.path, "upgrade the store")
        try:
            # Read again under the write lock: another process opening the same new store at
            # the same moment may have created the tables already.
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for target in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {target + 1}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _has_table(self, name: str) -> bool:
        q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._conn.execute(q, (name,)).fetchone() is not None

    # -- claims (see store.claims) --------------------------------------------------------
    def claim(self, spec_hash: str) -> bool:
        """Take the cell `spec_hash` for this process; False when a live process holds it.
        The caller measures only after True, then calls `release`. Check `has_success`
        after a True claim too: another process may have finished the cell just before."""
        if not self.writable or not self._has_table("claims"):
            return True  # a read-only store is never measured into; nothing to split
        def take() -> bool:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                won = _claims.try_claim(self._conn, spec_hash)
                self._conn.execute("COMMIT")
                return won
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        try:
            return bool(wait_busy(take, self.path, "claim a cell"))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot claim cell {spec_hash}: {exc}") from None

    def release(self, spec_hash: str) -> None:
        """Give back a claim taken by this process (a no-op when it holds none)."""
        if not self.writable or not self._has_table("claims"):
            return
        try:
            wait_busy(lambda: _claims.release(self._conn, spec_hash), self.path, "release a cell")
        except sqlite3.Error as exc:
            # A claim left behind goes stale with its owner; it never blocks a later run for long.
            log.warning("%s: could not release the claim on %s (%s)", self.path, spec_hash, exc)

    def heartbeat(self, spec_hash: str) -> None:
        """Say that this process is still measuring `spec_hash` (long cells)."""
        if self.writable and self._has_table("claims"):
            try:
                wait_busy(lambda: _claims.heartbeat(self._conn, spec_hash), self.path, "renew a claim")
            except sqlite3.Error:
                pass

    def claims(self) -> list[dict[str, Any]]:
        if not self._has_table("claims"):
            return []
        return [dict(r) for r in self._conn.execute("SELECT * FROM claims ORDER BY started_at")]

    # -- cells ----------------------------------------------------------------------------
    def add(self, record: CellRecord) -> int:
        """Insert one cell in its own transaction; returns its id."""
        spec = record.spec
        measurement = record.measurement or {}
        created = record.created_at or utc_now()
        row = {
            "spec_hash": record.spec_hash, "kind": record.kind, "status": record.status,
            "created_at": created, "decoding": record.decoding,
            **{c: spec.get(c) for c in _SPEC_COLUMNS},
            "gpu_name": record.gpu_name, "gpu_count": record.gpu_count, "method": record.method,
            "energy_j": record.energy_j, "duration_s": record.duration_s,
            "energy_per_output_token_j": record.energy_per_output_token_j,
            "spec_json": json.dumps(spec, sort_keys=True),
            "metrics_json": json.dumps(record.metrics, sort_keys=True),
            "measurement_json": json.dumps(measurement),
            "provenance_json": json.dumps(record.provenance, sort_keys=True),
            "error": record.error,
        }
        for name in _SPEC_COLUMNS:  # an integer SQLite cannot hold is text, never an OverflowError
            if isinstance(row[name], int) and not -INT64_MAX - 1 <= row[name] <= INT64_MAX:
                row[name] = str(row[name])
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)

        def insert() -> int:
            with self._transaction():
                cur = self._conn.execute(f"INSERT INTO cells ({cols}) VALUES ({marks})", list(row.values()))
            return int(cur.lastrowid)

        try:
            if not self.writable:
                raise sqlite3.OperationalError("attempt to write a readonly database (file is read-only)")
            record.id = wait_busy(insert, self.path, "write a cell")
        except sqlite3.Error as exc:
            self._keep_unsaved(record, created, exc)
        record.created_at = created
        return record.id

    def _keep_unsaved(self, record: CellRecord, created: str, exc: sqlite3.Error) -> None:
        """A write failed after the measurement finished: keep the record in the side file and
        say where, in one line (never lose a measurement to a locked or damaged store)."""
        from tokenjoule.store.salvage import save_unsaved

        data = {**record.to_dict(), "created_at": created, "id": None}
        why = "the store stayed locked by another process" if is_busy(exc) else str(exc)
        try:
            side = save_unsaved(self.path, data)
        except OSError as side_exc:
            raise StoreError(f"{self.path}: could not store the cell ({why}) nor write a side file "
                             f"({side_exc}); record: {json.dumps(data, default=str)[:2000]}") from None
        raise StoreError(f"{self.path}: could not store the cell ({why}); the record is kept in {side}; "
                         f"add it later with: tokenjoule results import {side} --db PATH") from None

    def import_unsaved(self, path: str | Path) -> tuple[int, list[int]]:
        """Add the records of a side file (see store.salvage); returns (added, damaged line
        numbers). A record already in the store (same spec hash and time) is not added twice."""
        from tokenjoule.store.salvage import read_unsaved

        added, damaged = 0, []
        try:
            entries = list(read_unsaved(Path(path)))
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
        for number, data in entries:
            try:
                record = CellRecord(spec=dict(data["spec"]), spec_hash=str(data["spec_hash"]),
                                    kind=str(data.get("kind", "offline")), status=str(data.get("status", "ok")),
                                    metrics=dict(data.get("metrics") or {}),
                                    measurement=dict(data.get("measurement") or {}),
                                    provenance=dict(data.get("provenance") or {}), error=data.get("error"),
                                    created_at=data.get("created_at"))
            except (TypeError, KeyError, ValueError):
                damaged.append(number)
                continue
            q = "SELECT 1 FROM cells WHERE spec_hash = ? AND created_at = ? LIMIT 1"
            if self._conn.execute(q, (record.spec_hash, record.created_at)).fetchone():
                continue
            self.add(record)
            added += 1
        return added, damaged

    def get(self, cell_id: int) -> CellRecord | None:
        if not isinstance(cell_id, int) or not 0 <= cell_id <= INT64_MAX:
            return None  # no row has such an id (and SQLite cannot bind it)
        row = self._conn.execute("SELECT * FROM cells WHERE id = ?", (cell_id,)).fetchone()
        if not row:
            return None
        self.corrupt_ids = []
        records = self._records([row])
        return records[0] if records else None

    def _records(self, rows) -> list[CellRecord]:
        """Decode rows, skipping damaged ones with one warning naming their ids."""
        out, bad = [], []
        for row in rows:
            try:
                out.append(_to_record(row))
            except CorruptRowError:
                bad.append(int(row["id"]))
        if bad:
            self.corrupt_ids.extend(bad)
            shown = ", ".join(str(i) for i in bad[:20]) + (f" (+{len(bad) - 20} more)" if len(bad) > 20 else "")
            log.warning("%s: skipped %d damaged row(s) (ids %s): unreadable JSON or text", self.path, len(bad), shown)
        return out

    def has_success(self, spec_hash: str) -> bool:
        q = "SELECT 1 FROM cells WHERE spec_hash = ? AND status = 'ok' LIMIT 1"
        return self._conn.execute(q, (spec_hash,)).fetchone() is not None

    def has_failure(self, spec_hash: str) -> bool:
        q = "SELECT 1 FROM cells WHERE spec_hash = ? AND status = 'failed' LIMIT 1"
        return self._conn.execute(q, (spec_hash,)).fetchone() is not None

    def latest(self, spec_hash: str, status: str | None = "ok") -> CellRecord | None:
        q = "SELECT * FROM cells WHERE spec_hash = ?" + (" AND status = ?" if status else "")
        args: tuple = (spec_hash, status) if status else (spec_hash,)
        self.corrupt_ids = []
        for row in self._conn.execute(q + " ORDER BY id DESC", args):
            records = self._records([row])
            if records:
                return records[0]
        return None

    def find(self, status: str | None = "ok", kind: str | None = None, **columns: Any) -> list[CellRecord]:
        """Cells matching the given indexed columns (model=, engine=, mode=, decoding=,
        batch_size=, input_tokens=, output_tokens=, gpu_name=...), oldest first."""
        where, args = [], []
        if status:
            where.append("status = ?"), args.append(status)
        if kind:
            where.append("kind = ?"), args.append(kind)
        for name, value in columns.items():
            if value is None:
                continue
            if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
                return []  # no stored cell can have it
            where.append(f"{_column(name)} = ?"), args.append(value)
        sql = "SELECT * FROM cells" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        self.corrupt_ids = []
        return self._records(self._conn.execute(sql, args))

    def all(self, status: str | None = None) -> list[CellRecord]:
        return self.find(status=status)

    def count(self, status: str | None = None) -> int:
        if status:
            return self._conn.execute("SELECT COUNT(*) FROM cells WHERE status = ?", (status,)).fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]

    # -- largest fitting batch (sweep OOM search cache) -----------------------------------
    def get_max_batch(self, key: str) -> int | None:
        row = self._conn.execute("SELECT max_batch FROM max_batch WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    def max_batch_entries(self, gpu_name: str | None = None) -> list[tuple[dict, list]]:
        """(key as a dict, probes) of every cached largest batch (of one GPU when named): the
        probes of earlier loads, which runs.max_batch learns the usable memory from."""
        sql, args = "SELECT key, probes_json FROM max_batch", ()
        if gpu_name is not None:
            sql, args = sql + " WHERE gpu_name = ?", (gpu_name,)
        out = []
        for key, probes in self._conn.execute(sql, args).fetchall():
            try:
                parsed = json.loads(key)
            except ValueError:  # a key from before keys were JSON: nothing to learn from it
                continue
            if isinstance(parsed, dict):
                out.append((parsed, json.loads(probes or "[]")))
        return out

    def set_max_batch(self, key: str, max_batch: int, gpu_name: str | None, probes: list) -> None:
        def write() -> None:
            with self._transaction():
                self._conn.execute(
                    "INSERT OR REPLACE INTO max_batch (key, max_batch, gpu_name, probes_json, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, max_batch, gpu_name, json.dumps(probes), utc_now()),
                )
        try:
            wait_busy(write, self.path, "cache the largest batch")
        except sqlite3.Error as exc:
            # Only a cache (the probes are redone next time): never worth ending a sweep over.
            log.warning("%s: could not cache the largest batch for %s (%s)", self.path, key, exc)

    # -- sweep bins -----------------------------------------------------------------------
    def add_bins(self, input_edges: list[int], output_edges: list[int], model: str | None = None,
                 source: str | None = None) -> None:
        """Remember the bins a sweep was planned for (read back by `latest_bins`)."""
        with self._transaction():
            self._conn.execute(
                "INSERT INTO sweep_bins (model, input_edges_json, output_edges_json, source, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (model, json.dumps([int(e) for e in input_edges]), json.dumps([int(e) for e in output_edges]),
                 source, utc_now()))

    def latest_bins(self, model: str | None = None) -> dict[str, Any] | None:
        """The most recently stored sweep bins (for `model`, or declared for any model), or None:
        {"input_edges", "output_edges", "model", "source", "created_at"}."""
        try:
            rows = self._conn.execute("SELECT * FROM sweep_bins ORDER BY id DESC").fetchall()
        except sqlite3.OperationalError:  # a store opened without migrating (read-only file): no bins
            return None
        for row in rows:
            models = [m for m in (row["model"] or "").split(",") if m]
            if model is None or not models or model in models:
                return {"input_edges": json.loads(row["input_edges_json"]),
                        "output_edges": json.loads(row["output_edges_json"]), "model": row["model"],
                        "source": row["source"], "created_at": row["created_at"]}
        return None

    # -- analysis helpers -----------------------------------------------------------------
    def to_dataframe(self, status: str | None = None):
        """All cells as a flat pandas DataFrame: indexed columns + metrics + spec fields."""
        import pandas as pd

        rows = []
        for rec in self.find(status=status):
            flat: dict[str, Any] = {"id": rec.id, "created_at": rec.created_at, "kind": rec.kind,
                                    "status": rec.status, "spec_hash": rec.spec_hash, "error": rec.error}
            for k, v in rec.spec.items():
                flat[k] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
            flat["decoding"] = rec.decoding
            for k, v in rec.metrics.items():
                if not isinstance(v, (dict, list)):
                    flat[k] = v
                elif k in JSON_METRIC_COLUMNS:
                    flat[k] = json.dumps(v, sort_keys=True)
            flat["method"] = rec.method
            flat["flags"] = ",".join(rec.flags)
            flat["gpu_name"] = rec.gpu_name  # None without a GPU (never the CPU's name)
            flat["cell_kind"] = rec.cell_kind
            flat["is_estimate"] = rec.is_estimate
            flat["gpu_count"] = rec.gpu_count
            rows.append(flat)
        return pd.DataFrame(rows)

    def _transaction(self):
        return _Transaction(self._conn)

    def backup(self, dest: str | Path) -> int:
        """A consistent single-file copy of the store at `dest` (SQLite's online backup API:
        it reads committed rows, those still in the -wal file included, while other processes
        keep writing). Returns the number of cells copied. `dest` must not exist."""
        dest = Path(dest)
        if str(dest) in ("", "."):
            raise StoreError("the backup path is empty; give a FILE")
        try:
            if dest.exists() or dest.is_symlink():
                raise StoreError(f"{dest} already exists; give a new file name (a backup never overwrites)")
            if dest.resolve() == self.path.resolve():
                raise StoreError("the backup must be a different file from the store")
            if not dest.parent.is_dir():
                raise StoreError(f"cannot write {dest}: folder {dest.parent} does not exist")
        except OSError as exc:
            raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from None
        try:
            target = sqlite3.connect(str(dest))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {dest}: {exc}") from None
        try:
            wait_busy(lambda: self._conn.backup(target), self.path, "copy the store")
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            n = int(target.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
        except sqlite3.Error as exc:
            target.close()
            dest.unlink(missing_ok=True)
            raise StoreError(f"could not copy {self.path} to {dest}: {exc}") from None
        target.close()
        return n

    def close(self) -> None:
        # Fold the write-ahead log into the main file when no one else is using it. This is a
        # courtesy, not a guarantee: after a crash (kill -9) the newest rows live only in the
        # -wal file, so copy a store with `tokenjoule results backup FILE`, never by copying
        # the .db file alone.
        if self.writable:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # another connection is mid-transaction; SQLite checkpoints later
        self._conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[CellRecord]:
        return iter(self.find(status=None))


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


_ALLOWED_COLUMNS = {"spec_hash", "kind", "status", "model", "engine", "mode", "decoding", "batch_size",
                    "input_tokens", "output_tokens", "tensor_parallel", "pipeline_parallel",
                    "gpu_name", "gpu_count", "method"}


def _column(name: str) -> str:
    if name not in _ALLOWED_COLUMNS:
        raise ValueError(f"cannot filter cells on {name!r}; valid: {', '.join(sorted(_ALLOWED_COLUMNS))}")
    return name


class CorruptRowError(ValueError):
    """A stored row whose JSON or text cannot be read (see ResultStore._records)."""


def _json_dict(row: sqlite3.Row, column: str) -> dict[str, Any]:
    text = row[column]
    if not isinstance(text, str) or isinstance(text, Undecodable):
        raise CorruptRowError(column)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CorruptRowError(column) from None
    if not isinstance(value, dict):
        raise CorruptRowError(column)
    return value


def _text(row: sqlite3.Row, column: str, optional: bool = False) -> str | None:
    value = row[column]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise CorruptRowError(column)
    return value


def _to_record(row: sqlite3.Row) -> CellRecord:
    return CellRecord(
        id=row["id"], created_at=_text(row, "created_at", optional=True), kind=_text(row, "kind"),
        status=_text(row, "status"), spec_hash=_text(row, "spec_hash"), spec=_json_dict(row, "spec_json"),
        metrics=_json_dict(row, "metrics_json"), measurement=_json_dict(row, "measurement_json"),
        provenance=_json_dict(row, "provenance_json"), error=_text(row, "error", optional=True),
    )
