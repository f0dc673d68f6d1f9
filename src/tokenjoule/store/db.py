"""SQLite results store with a versioned schema.

One row per measured cell (offline batch or online run), ok or failed. Every write is one
transaction, so a process killed mid-cell leaves the store as it was before that cell. The
spec's canonical hash (`RunSpec.spec_hash()`) is what sweeps resume on.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

# The record and its reads live in tokenjoule.records; re-exported for existing imports.
from tokenjoule.records import CellRecord, utc_now  # noqa: F401

DEFAULT_DB = "tokenjoule.db"
SCHEMA_VERSION = 1

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
]

_SPEC_COLUMNS = ("model", "engine", "mode", "batch_size", "input_tokens", "output_tokens",
                 "tensor_parallel", "pipeline_parallel")


class ResultStore:
    """Open (creating or migrating) a results database."""

    def __init__(self, path: str | Path = DEFAULT_DB):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            from tokenjoule.errors import TokenjouleError

            raise TokenjouleError(f"{self.path}: not a tokenjoule results database ({exc})") from None

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            from tokenjoule.errors import TokenjouleError

            raise TokenjouleError(
                f"{self.path}: schema version {version} is newer than this tokenjoule "
                f"understands ({SCHEMA_VERSION}); upgrade tokenjoule"
            )
        for target in range(version, SCHEMA_VERSION):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
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
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._transaction():
            cur = self._conn.execute(f"INSERT INTO cells ({cols}) VALUES ({marks})", list(row.values()))
        record.id, record.created_at = int(cur.lastrowid), created
        return record.id

    def get(self, cell_id: int) -> CellRecord | None:
        row = self._conn.execute("SELECT * FROM cells WHERE id = ?", (cell_id,)).fetchone()
        return _to_record(row) if row else None

    def has_success(self, spec_hash: str) -> bool:
        q = "SELECT 1 FROM cells WHERE spec_hash = ? AND status = 'ok' LIMIT 1"
        return self._conn.execute(q, (spec_hash,)).fetchone() is not None

    def has_failure(self, spec_hash: str) -> bool:
        q = "SELECT 1 FROM cells WHERE spec_hash = ? AND status = 'failed' LIMIT 1"
        return self._conn.execute(q, (spec_hash,)).fetchone() is not None

    def latest(self, spec_hash: str, status: str | None = "ok") -> CellRecord | None:
        q = "SELECT * FROM cells WHERE spec_hash = ?" + (" AND status = ?" if status else "")
        args: tuple = (spec_hash, status) if status else (spec_hash,)
        row = self._conn.execute(q + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return _to_record(row) if row else None

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
            where.append(f"{_column(name)} = ?"), args.append(value)
        sql = "SELECT * FROM cells" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_to_record(r) for r in self._conn.execute(sql, args)]

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

    def set_max_batch(self, key: str, max_batch: int, gpu_name: str | None, probes: list) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO max_batch (key, max_batch, gpu_name, probes_json, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, max_batch, gpu_name, json.dumps(probes), utc_now()),
            )

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

    def close(self) -> None:
        # Fold the write-ahead log into the main file, so that copying the one .db file
        # (e.g. out of a GPU host) carries every committed row.
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


def _to_record(row: sqlite3.Row) -> CellRecord:
    return CellRecord(
        id=row["id"], created_at=row["created_at"], kind=row["kind"], status=row["status"],
        spec_hash=row["spec_hash"], spec=json.loads(row["spec_json"]),
        metrics=json.loads(row["metrics_json"]), measurement=json.loads(row["measurement_json"]),
        provenance=json.loads(row["provenance_json"]), error=row["error"],
    )
