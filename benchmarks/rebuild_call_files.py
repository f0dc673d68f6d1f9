"""Rebuild one bin-table call's rows CSV and summary from the store, when their transfer was lost.

`benchmarks/bin_table.py` writes `bin_table_rows.csv` and `bin_table_summary.json` next to the
store; the store holds every cell those files are made of. When a device call returns the store
but not the two files, this writes `<table>_<n>_rows.csv` / `_summary.json` from the store with
the same Row and summary code, marking as this call's the cells it names (`--cells`) and taking
the call's GPU-minutes from its own log line (`--gpu-minutes`, the figure bin_table.py printed).
The summary says it was rebuilt and from what, so a reader can tell it from a direct one.

    python benchmarks/rebuild_call_files.py --db benchmarks/results/bin_table_h200/bin_table.db \
        --table hf-eager --call 3 --cells 31,32 --gpu-minutes 2.79 \
        --log benchmarks/results/bin_table_h200/hf_eager_3.log \
        --command "python benchmarks/bin_table.py --tables hf-eager --db /tmp/bt/bin_table.db --out \$OUT/t --budget-minutes 4.2"
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))
sys.path.insert(0, str(ROOT))

import bin_table  # noqa: E402  (the script whose outputs this rebuilds)


def rebuild(db: Path, table: str, call: int, cells: set[int], gpu_minutes: float, log: str,
            command: str) -> tuple[Path, Path]:
    from tokenjoule.store.db import ResultStore

    engine, mode = bin_table.TABLES[table]
    store = ResultStore(db, create=False, read_only=True)
    try:
        latest: dict[tuple[int, int], object] = {}
        for rec in store.find(status="ok", engine=engine, mode=mode):
            if rec.kind != "offline" or rec.spec.get("protocol") != "adaptive":
                continue
            key = (rec.input_tokens, rec.output_tokens)
            if key not in latest or rec.id > latest[key].id:
                latest[key] = rec
        rows = []
        for b in bin_table.table_bins():
            rec = latest.get((b.input_tokens, b.output_tokens))
            if rec is None:
                continue
            rows.append(replace(bin_table.row_from_record(table, "adaptive", b, rec), resumed=rec.id not in cells))
        gpus = {r.gpu_name for r in latest.values() if r.gpu_name}
        # the call's date: when its last cell was stored
        date_utc = max((r.created_at for r in latest.values() if r.id in cells), default=None)
    finally:
        store.close()
    missing = cells - {r.cell_id for r in rows}
    if missing:
        raise SystemExit(f"cells {sorted(missing)} are not adaptive ok {table} cells of {db}")
    folder = db.parent
    stem = f"{table.replace('-', '_')}_{call}"
    rows_path, summary_path = folder / f"{stem}_rows.csv", folder / f"{stem}_summary.json"
    bin_table.write_rows(rows, rows_path)
    summary = {
        "rebuilt_from_store": (f"the call returned the store but not its rows/summary files; rebuilt by "
                               f"benchmarks/rebuild_call_files.py from {db.name}, this call's cells "
                               f"{sorted(cells)}, GPU-minutes from {log}"),
        "date_utc": date_utc, "command": command, "model": "llama-3.1-8b", "traces": list(bin_table.TRACES), "bins_in_table": len(bin_table.table_bins()),
        "gpu_names": sorted(gpus), "stopped_by_budget": True,
        "tables": bin_table.summarize(rows, {table: gpu_minutes * 60.0}, {table: 1}),
    }
    summary_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return rows_path, summary_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--table", required=True, choices=sorted(bin_table.TABLES))
    p.add_argument("--call", type=int, required=True, help="the call number n of the file names")
    p.add_argument("--cells", required=True, help="comma-separated ids of the cells this call measured")
    p.add_argument("--gpu-minutes", type=float, required=True, help="as the call's log printed it")
    p.add_argument("--log", required=True, help="the call's log, named in the summary")
    p.add_argument("--command", required=True, help="the bin_table.py command the call ran")
    a = p.parse_args(argv)
    cells = {int(c) for c in a.cells.split(",") if c.strip()}
    for path in rebuild(a.db, a.table, a.call, cells, a.gpu_minutes, a.log, a.command):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
