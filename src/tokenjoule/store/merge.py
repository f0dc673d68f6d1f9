"""Merge results stores (`tokenjoule results merge A.db B.db ... -o OUT.db`), e.g. the stores
of the N tasks of a job array each run with `sweep --shard i/N`.

What is copied. Every cell row, except one already in OUT with the same (spec_hash,
created_at, status): a cell is one measurement, stored once when it ended, so that triple
names it, and merging the same stores twice (or a store into a merge that holds it already)
adds nothing. The largest-batch cache (`max_batch`, newest entry per key wins: a later entry
is a step-down after an out-of-memory measurement) and the sweeps' bins (`sweep_bins`,
identical rows once). Claims are not copied: they belong to live processes of one store.

Inputs are only read (opened read-only, never migrated); a file that is not a tokenjoule
store is refused with one line before OUT is touched. Each input is copied in one
transaction, so a crash leaves OUT with whole inputs only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tokenjoule.errors import TokenjouleError
from tokenjoule.store.connect import wait_busy
from tokenjoule.store.db import ResultStore


@dataclass
class MergeResult:
    cells_added: int = 0
    cells_present: int = 0  # rows already in OUT (or met twice among the inputs)
    max_batch: int = 0  # cache entries added or made newer
    bins: int = 0
    inputs: list[tuple[str, int]] = field(default_factory=list)  # (path, cells added from it)


def merge_stores(sources: Sequence[str | Path], output: str | Path) -> MergeResult:
    """Copy the cells, largest-batch cache and bins of `sources` into `output` (created when
    missing). Returns what was added."""
    if not sources:
        raise TokenjouleError("give at least one store to merge (tokenjoule results merge A.db B.db -o OUT.db)")
    out_path = Path(output)
    stores = []
    try:
        for src in sources:  # every input checked before OUT is created or changed
            if Path(src).exists() and out_path.exists() and Path(src).resolve() == out_path.resolve():
                raise TokenjouleError(f"{src} is the output file; give it only as -o (its cells are kept)")
            stores.append(ResultStore(src, create=False, read_only=True))
        result = MergeResult()
        with ResultStore(out_path) as out:
            for store in stores:
                # A retry after a busy store redoes the whole (rolled back) input, so counts start afresh.
                part = wait_busy(lambda: _copy(store, out), out.path, "merge into the store")
                result.cells_added += part.cells_added
                result.cells_present += part.cells_present
                result.max_batch += part.max_batch
                result.bins += part.bins
                result.inputs.append((str(store.path), part.cells_added))
        return result
    finally:
        for store in stores:
            store.close()


def _copy(src: ResultStore, out: ResultStore) -> MergeResult:
    s, o, result = src._conn, out._conn, MergeResult()
    out_columns = [r[1] for r in o.execute("PRAGMA table_info(cells)") if r[1] != "id"]
    src_columns = {r[1] for r in s.execute("PRAGMA table_info(cells)")}
    columns = [c for c in out_columns if c in src_columns]
    names = ", ".join(columns)
    with out._transaction():
        for row in s.execute(f"SELECT {names} FROM cells ORDER BY id"):
            values = dict(zip(columns, row))
            if o.execute("SELECT 1 FROM cells WHERE spec_hash = ? AND created_at = ? AND status = ?",
                         (values["spec_hash"], values["created_at"], values["status"])).fetchone():
                result.cells_present += 1
                continue
            o.execute(f"INSERT INTO cells ({names}) VALUES ({', '.join('?' for _ in columns)})", row)
            result.cells_added += 1
        if src._has_table("max_batch"):
            for key, size, gpu, probes, created in s.execute(
                    "SELECT key, max_batch, gpu_name, probes_json, created_at FROM max_batch"):
                have = o.execute("SELECT created_at FROM max_batch WHERE key = ?", (key,)).fetchone()
                if have is None or str(have[0]) < str(created):
                    o.execute("INSERT OR REPLACE INTO max_batch (key, max_batch, gpu_name, probes_json, created_at)"
                              " VALUES (?, ?, ?, ?, ?)", (key, size, gpu, probes, created))
                    result.max_batch += 1
        if src._has_table("sweep_bins"):
            for row in s.execute("SELECT model, input_edges_json, output_edges_json, source, created_at "
                                 "FROM sweep_bins ORDER BY id"):
                if not o.execute("SELECT 1 FROM sweep_bins WHERE model IS ? AND input_edges_json = ? AND "
                                 "output_edges_json = ? AND source IS ? AND created_at = ?", tuple(row)).fetchone():
                    o.execute("INSERT INTO sweep_bins (model, input_edges_json, output_edges_json, source, "
                              "created_at) VALUES (?, ?, ?, ?, ?)", tuple(row))
                    result.bins += 1
    return result
