"""A direct replay on the CPU (tiny preset): the binned estimate against the same requests run.

    .venv/bin/python benchmarks/cpu_replay.py [--out DIR]

Measures a 3-bin table (tiny preset, hf eager, float32, batch 8, inputs 64/128/256, output 64,
warm-up 1, 3 windows of >= 2 s) with the auto meter (the CPU-time estimate without a sensor),
then `tokenjoule validate` of a seeded 200-request sample of task:translation against it.
Writes DIR/cpu_replay.db and DIR/cpu_replay.json (default /tmp/cpu_replay) and prints the
differences. About 4 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.runs.offline import run_group  # noqa: E402
from tokenjoule.runs.replay import ReplayConfig, run_replay  # noqa: E402
from tokenjoule.spec import RunSpec  # noqa: E402
from tokenjoule.store.db import ResultStore  # noqa: E402
from tokenjoule.workloads.binning import Bins  # noqa: E402

INPUT_EDGES, OUTPUT_EDGES, BATCH = (64, 128, 256), (64,), 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/cpu_replay"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ResultStore(args.out / "cpu_replay.db") as store:
        specs = [RunSpec(model="tiny", engine="hf", mode="eager", batch_size=BATCH, input_tokens=i, output_tokens=o,
                         warmup=1, repeats=3, device="cpu", dtype="float32", min_window_s=2.0, split_prefill=False)
                 for i in INPUT_EDGES for o in OUTPUT_EDGES]
        todo = [s for s in specs if not store.has_success(s.spec_hash())]
        if todo:
            run_group(todo, store, meter_kind="auto", idle_s=0)
        cfg = ReplayConfig(trace="task:translation", model="tiny", n=200, seed=0, device="cpu", dtype="float32",
                           bins=Bins(INPUT_EDGES, OUTPUT_EDGES))
        result = run_replay(cfg, store, meter_kind="auto")
    doc = result.to_dict()
    (args.out / "cpu_replay.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: doc[k] for k in ("n_kept", "measured_energy_j", "estimates_j", "differences",
                                          "fit_corrected_j", "fit_note", "tokens", "partial_batches", "method")},
                     indent=1))


if __name__ == "__main__":
    main()
