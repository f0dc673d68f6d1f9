"""GPU evidence for several GPUs (needs a machine with >= 4 GPUs):

1. the paper-parallel preset (Figure 6: llama-3.1-8b at tensor parallel 1, 2, 4 and
   r1-distill-qwen-32b at 2, 4; batch 1 and 64; hf eager and, when vLLM is importable, vllm
   graphs), one sweep;
2. one pipeline-parallel vLLM cell (pp 2);
3. the same 4-cell sweep on one GPU and on two GPUs (`--gpus 0` vs `--gpus 0,1`: one worker
   per GPU), to compare their wall times.

Every step is an ordinary tokenjoule command (printed before it runs); the results go to
--out: parallel_evidence.db (steps 1-2), workers_1gpu.db / workers_2gpu.db (step 3),
parallel_evidence.json (commands, exit codes, wall times, one row per cell) and
parallel_evidence.csv (the rows). `--dry-run` prints the commands and writes nothing.

    python benchmarks/parallel_evidence.py --out $OUT [--quick] [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MIN_GPUS = 4
# Step 3: four short cells on a small model (each a few seconds), the same on 1 and 2 GPUs.
WORKER_GRID_YAML = """\
model: llama-3.2-1b
engine: hf
mode: eager
input_tokens: 512
output_tokens: 64
batch_size: [1, 8, 16, 32]
warmup: 1
repeats: 3
"""
PP_CELL = ["--model", "llama-3.1-8b", "--engine", "vllm", "--mode", "graphs", "--tp", "1", "--pp", "2",
           "--batch-size", "8", "--input-tokens", "512", "--output-tokens", "64"]


def tokenjoule(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from tokenjoule.cli.main import main; sys.exit(main(sys.argv[1:]))",
            *args]


def steps(out: Path, quick: bool, budget_minutes: float | None = None) -> list[tuple[str, list[str], Path | None]]:
    """(name, command, store) of every step, in order. The sweeps resume from their stores when
    run again; `budget_minutes` bounds the paper-parallel sweep."""
    db = out / "parallel_evidence.db"
    grid = out / "workers_grid.yaml"
    preset = ["sweep", "--preset", "paper-parallel", "--db", str(db), "--no-progress"] + (["--quick"] if quick else [])
    if budget_minutes is not None:
        preset += ["--budget-minutes", f"{budget_minutes:g}"]
    return [
        ("paper-parallel", tokenjoule(*preset), db),
        ("vllm-pp2", tokenjoule("measure", *PP_CELL, "--db", str(db), "--json"), db),
        ("sweep-1gpu", tokenjoule("sweep", str(grid), "--db", str(out / "workers_1gpu.db"), "--gpus", "0"),
         out / "workers_1gpu.db"),
        ("sweep-2gpu", tokenjoule("sweep", str(grid), "--db", str(out / "workers_2gpu.db"), "--gpus", "0,1"),
         out / "workers_2gpu.db"),
    ]


def visible_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cell_rows(db: Path, step: str) -> list[dict[str, Any]]:
    from tokenjoule.store.db import ResultStore

    if not db.is_file():
        return []
    rows = []
    with ResultStore(db, create=False, read_only=True) as store:
        for rec in store.find(status=None, kind="offline"):
            s, m = rec.spec, rec.metrics
            pp = int(s.get("pipeline_parallel") or 1)
            rows.append({"step": "vllm-pp2" if pp > 1 else step, "cell_id": rec.id, "status": rec.status, "model": s.get("model"),
                         "engine": s.get("engine"), "mode": s.get("mode"), "batch_size": s.get("batch_size"),
                         "tensor_parallel": s.get("tensor_parallel"), "pipeline_parallel": s.get("pipeline_parallel"),
                         "energy_j": m.get("energy_j"), "duration_s": m.get("duration_s"),
                         "gpu_energy_by_device_j": json.dumps(m.get("gpu_energy_by_device_j") or {}),
                         "flags": ",".join(rec.flags), "method": rec.method, "gpus": ",".join(rec.gpu_names),
                         "error": rec.error})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "parallel_evidence"))
    ap.add_argument("--quick", action="store_true", help="paper-parallel --quick (batch 1 only)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    ap.add_argument("--budget-minutes", type=float, help="stop the paper-parallel sweep inside this budget")
    args = ap.parse_args()
    out = Path(args.out)
    plan = steps(out, args.quick, args.budget_minutes)
    if args.dry_run:
        print(f"# would write to {out}; the 4-cell grid of steps sweep-1gpu/sweep-2gpu:")
        print("\n".join(f"#   {line}" for line in WORKER_GRID_YAML.splitlines()))
        for name, cmd, _ in plan:
            print(f"{name}: {shlex.join(['tokenjoule', *cmd[3:]])}")
        return 0
    gpus = visible_gpus()
    if gpus < MIN_GPUS:
        print(f"error: this evidence needs at least {MIN_GPUS} GPUs, {gpus} visible; use --dry-run to see the "
              "commands", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "workers_grid.yaml").write_text(WORKER_GRID_YAML)
    results, rows, seen = [], [], set()
    for name, cmd, db in plan:
        print(f"== {name}: {shlex.join(['tokenjoule', *cmd[3:]])}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd)
        results.append({"step": name, "command": shlex.join(["tokenjoule", *cmd[3:]]), "rc": rc,
                        "wall_s": round(time.monotonic() - t0, 1)})
        print(f"== {name}: exit {rc}, {results[-1]['wall_s']} s", flush=True)
    for name, _, db in plan:
        if db is not None and db not in seen:
            seen.add(db)
            rows += cell_rows(db, name)
    walls = {r["step"]: r["wall_s"] for r in results}
    summary = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpus_visible": gpus,
               "steps": results, "rows": rows,
               "worker_speedup_2gpu_vs_1gpu": (walls["sweep-1gpu"] / walls["sweep-2gpu"]
                                               if walls.get("sweep-2gpu") else None)}
    (out / "parallel_evidence.json").write_text(json.dumps(summary, indent=1, default=str))
    with open(out / "parallel_evidence.csv", "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {out / 'parallel_evidence.json'} and {out / 'parallel_evidence.csv'} ({len(rows)} cells)")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
