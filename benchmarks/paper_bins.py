"""Measure the `paper-bins` table on a GPU and print the binned estimates of two traces.

The evidence for docs/RESULTS.md: every occupied (input, output) bin of the Azure 2023
conversation and code traces (their union), for llama-3.1-8b (random weights) on hf/eager,
greedy, at the largest batch that fits, warm-up 1, repeats 2, no prefill split. Cells run
most-requested bin first, so a session stopped by --budget-minutes has measured the bins that
weigh most in the estimate. Resumable: pass the database of the previous session back with
--db (or --seed-db) and it continues where it stopped.

    python benchmarks/paper_bins.py --budget-minutes 7            # writes into $OUT (or ./out)
    python benchmarks/paper_bins.py --seed-db benchmarks/results/paper_bins_h100.db --budget-minutes 7

Outputs (in --out, default $OUT): paper_bins.db (the store), paper_bins_cells.csv (ok rows),
paper_bins_summary.json (GPU, date, command, GPU minutes, cells, estimates). Needs only
torch/transformers/pandas/pyyaml/rich/nvidia-ml-py plus pydantic and typer; tokenjoule is
imported from src/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TRACES = ("azure-conv-2023", "azure-code-2023")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT)")
    p.add_argument("--db", default=None, help="results database (default OUT/paper_bins.db)")
    p.add_argument("--seed-db", default=None, help="copy this database to --db first (resume a session)")
    p.add_argument("--budget-minutes", type=float, default=7.0, help="stop before a cell past this")
    p.add_argument("--quick", action="store_true", help="only the most requested bins (see the preset)")
    p.add_argument("--meter", default="auto", help="auto | nvml | estimate | simulated")
    p.add_argument("--device", default=None, help="override the device (e.g. cpu for a dry check)")
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--max-batch-cap", type=int, default=1024, help="ceiling of the largest-batch search")
    p.add_argument("--dry-run", action="store_true")
    return p.parse_args(argv)


def export_csv(store, path: Path) -> int:
    df = store.to_dataframe(status="ok")
    df.to_csv(path, index=False)
    return len(df)


def estimates(store, model: str) -> list[dict]:
    """Binned estimates of each trace from the measured cells (the estimate API)."""
    try:
        from tokenjoule.analysis.estimate import binned_estimate
    except ImportError as exc:  # pragma: no cover - only if the analysis module is absent
        print(f"estimate API not available: {exc}")
        return []
    from tokenjoule.workloads import load_trace

    out = []
    for trace in TRACES:
        result = binned_estimate(load_trace(trace), store, model=model, engine="hf", mode="eager")
        data = result.to_dict()
        out.append({k: data[k] for k in ("workload", "complete", "n_total", "n_kept", "n_dropped",
                                         "n_covered", "coverage_share", "total_energy_j", "total_kwh",
                                         "energy_per_request_j", "partial_energy_j", "gpu_names", "notes")}
                   | {"missing_bins": len(data["missing"]), "bins": len(data["rows"]) + len(data["missing"])})
        status = "complete" if result.complete else f"PARTIAL: {len(result.missing)} bins not measured yet"
        total = result.total_energy_j
        print(f"{trace}: {status}; {result.n_kept} of {result.n_total} requests binned; "
              f"covered {result.coverage_share:.1%}; "
              + (f"total {total:.1f} J ({total / 3.6e6:.4f} kWh), {result.energy_per_request_j:.2f} J/request"
                 if total is not None else f"measured part {result.partial_energy_j:.1f} J"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tokenjoule.runs.sweep import run_sweep
    from tokenjoule.runs.sweep_presets import build_preset
    from tokenjoule.store.db import ResultStore

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else out / "paper_bins.db"
    if args.seed_db and Path(args.seed_db).is_file() and Path(args.seed_db).resolve() != db.resolve():
        shutil.copyfile(args.seed_db, db)
        print(f"resuming from {args.seed_db}")
    config = build_preset("paper-bins", model=args.model, quick=args.quick, trace=",".join(TRACES),
                          warmup=1, repeats=2, idle_s=args.idle_s, max_batch_cap=args.max_batch_cap)
    if args.device:
        config = config.override(device=args.device)
    command = " ".join(["python", "benchmarks/paper_bins.py", *(argv if argv is not None else sys.argv[1:])])
    store = ResultStore(db)
    started = time.monotonic()
    try:
        summary = run_sweep(config, store, meter_kind=args.meter, dry_run=args.dry_run,
                            budget_minutes=None if args.dry_run else args.budget_minutes,
                            resume_command="copy the database back into the repository, then: python "
                                           "benchmarks/paper_bins.py --seed-db benchmarks/results/"
                                           f"{db.name} --budget-minutes {args.budget_minutes:g}")
        if args.dry_run:
            for c in summary.cells:
                print(f"{c.status:8s} {c.label} {c.reason or ''}")
            print(f"estimated {summary.estimated_s / 60:.1f} min (guess unless similar cells are stored)")
            return 0
        for c in summary.cells:
            if c.status in ("ok", "failed"):
                print(f"{c.status:6s} {c.label} -> batch {c.batch_size} in {c.wall_s:.1f} s"
                      + (f" ({c.reason})" if c.reason else ""))
        print(f"this session: {summary.done} measured, {summary.failed} failed, {summary.skipped} skipped, "
              f"{summary.not_run} left; GPU minutes {summary.gpu_minutes:.2f}; wall {summary.wall_s / 60:.1f} min")
        if summary.resume_command:
            print(f"resume with: {summary.resume_command}")
        n_rows = export_csv(store, out / "paper_bins_cells.csv")
        ok = store.find(status="ok", model=args.model, engine="hf", mode="eager")
        # Wall minutes of every stored cell (all sessions) x the GPUs it ran on.
        total_gpu_min = sum((r.metrics.get("sweep_wall_s") or 0) * len(r.provenance.get("engine_devices") or [])
                            for r in ok) / 60
        ests = estimates(store, args.model)
        gpu = (ok[0].provenance.get("gpu_names") or ["?"])[0] if ok else None
        report = {
            "gpu_name": gpu, "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command, "model": args.model, "engine": "hf", "mode": "eager", "traces": list(TRACES),
            "cells_total": summary.total, "cells_ok_in_store": len(ok), "csv_rows": n_rows,
            "session": {"measured": summary.done, "failed": summary.failed, "skipped": summary.skipped,
                        "not_run": summary.not_run, "gpu_minutes": summary.gpu_minutes,
                        "wall_s": summary.wall_s, "stopped_by_budget": summary.stopped_by_budget},
            "gpu_minutes_all_sessions": total_gpu_min, "estimates": ests,
            "script_wall_s": time.monotonic() - started,
        }
        (out / "paper_bins_summary.json").write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {db}, {out / 'paper_bins_cells.csv'} ({n_rows} rows), {out / 'paper_bins_summary.json'}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
