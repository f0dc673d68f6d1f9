#!/usr/bin/env python3
"""Offline-runner evidence on a GPU: the cells docs/RESULTS.md quotes for issue 2.

Llama-3.1-8B preset (random bf16 weights), 512 input / 64 output tokens, greedy, batch 1, 8 and
64, hf modes eager, compile and cudagraphs, measured by the real runner (runs.offline.run_group:
idle baseline, warm-up, calibrated >= 2 s windows, prefill/decode split) with the NVML meter.
Every cell is stored in $OUT/offline_evidence.db as it finishes, and $OUT/offline_evidence.json
/ .md are rewritten after every cell, so a timeout keeps what finished. One mode takes about
2-4 minutes on an H100 (compile/cudagraphs compile once per shape); run one mode per command:

    source benchmarks/device/env.sh && python benchmarks/offline_evidence.py --modes eager
    source benchmarks/device/env.sh && python benchmarks/offline_evidence.py --modes compile
    source benchmarks/device/env.sh && python benchmarks/offline_evidence.py --modes cudagraphs
    python benchmarks/offline_evidence.py --model tiny --device cpu --modes eager --batches 1 2 --quick  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.runs.offline import run_group  # noqa: E402
from tokenjoule.spec import RunSpec  # noqa: E402
from tokenjoule.store.db import ResultStore  # noqa: E402

COLUMNS = [
    ("mode", "mode"), ("batch", "batch_size"), ("J/out-token", "energy_per_output_token_j"),
    ("J/batch", "energy_j"), ("latency s", "duration_s"), ("avg W", "avg_power_w"), ("energy CV", "energy_cv"),
    ("latency CV", "duration_cv"), ("timeline vs counter", "timeline_disagreement"), ("idle W", "idle_power_w"),
    ("TTFT s", "ttft_s"), ("prefill J", "prefill_energy_j"), ("decode J", "decode_energy_j"),
    ("batches/window", "iterations_per_window"), ("flags", "flags"),
]


def row_of(rec) -> dict:
    m = rec.metrics
    row = {"id": rec.id, "status": rec.status, "mode": rec.spec["mode"], "batch_size": rec.spec["batch_size"],
           "error": rec.error}
    row.update({k: m.get(k) for _, k in COLUMNS if k not in row})
    return row


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(value)


def write_outputs(out: Path, rows: list[dict], meta: dict) -> None:
    (out / "offline_evidence.json").write_text(json.dumps({"meta": meta, "cells": rows}, indent=2, default=str))
    lines = [f"Card: {', '.join(meta.get('gpu_names') or ['?'])}; date (UTC): {meta['time_utc']}; "
             f"command: `{meta['command']}`", "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['mode']} | {r['batch_size']} | failed: {r['error']} |" + " |" * (len(COLUMNS) - 3))
            continue
        lines.append("| " + " | ".join(fmt(r.get(k)) for _, k in COLUMNS) + " |")
    (out / "offline_evidence.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--modes", nargs="+", default=["eager", "compile", "cudagraphs"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    ap.add_argument("--input", type=int, default=512)
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--min-window-s", type=float, default=2.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--quick", action="store_true", help="warmup 1, repeats 2, idle 1 s, windows 0.3 s")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.repeats, args.idle_s, args.min_window_s = 1, 2, 1.0, 0.3

    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "offline_evidence.db")
    meta = {"command": "python benchmarks/offline_evidence.py " + " ".join(sys.argv[1:]),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpu_names": None}
    rows: list[dict] = []

    def on_cell(spec, rec) -> None:
        meta["gpu_names"] = rec.provenance.get("gpu_names") or meta["gpu_names"]
        meta["provenance"] = rec.provenance
        rows.append(row_of(rec))
        write_outputs(out, rows, meta)
        m = rec.metrics
        print(f"{spec.label}: {rec.status} J/out-token={fmt(m.get('energy_per_output_token_j'))} "
              f"latency={fmt(m.get('duration_s'))} s W={fmt(m.get('avg_power_w'))} "
              f"CV={fmt(m.get('energy_cv'))} timeline={fmt(m.get('timeline_disagreement'))} "
              f"flags={fmt(m.get('flags'))} {rec.error or ''}", flush=True)

    for mode in args.modes:
        specs = [RunSpec(model=args.model, engine="hf", mode=mode, batch_size=b, input_tokens=args.input,
                         output_tokens=args.output, warmup=args.warmup, repeats=args.repeats, device=args.device,
                         min_window_s=args.min_window_s) for b in args.batches]
        t0 = time.perf_counter()
        run_group(specs, store, meter_kind=args.meter, idle_s=args.idle_s, on_cell=on_cell)
        print(f"mode {mode}: {time.perf_counter() - t0:.0f} s", flush=True)
    store.close()
    print((out / "offline_evidence.md").read_text())
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
