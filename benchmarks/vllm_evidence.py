"""GPU evidence: llama-3.1-8b (random weights) on one GPU, J per output token for
vLLM graphs vs vLLM eager vs transformers eager at batch 1, 8, 64 (512 in / 64 out).

Each engine runs in its own subprocess (a vLLM engine does not reliably give its GPU memory
back inside one process), all writing to one results database. Fits in about 8 minutes on an
H100 (vLLM start with graph capture ~45 s; each cell = warm-up + 3 windows of >= 2 s).

    export PYTHONPATH=/tmp/vsite:$PYTHONPATH VLLM_USE_FLASHINFER_SAMPLER=0
    python benchmarks/vllm_evidence.py --out $OUT
Writes $OUT/vllm_evidence.db and $OUT/vllm_evidence.json; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PARTS = {"vllm-graphs": ("vllm", "graphs"), "vllm-eager": ("vllm", "eager"), "hf-eager": ("hf", "eager")}


def run_part(part: str, args) -> None:
    from tokenjoule.runs.offline import run_group
    from tokenjoule.spec import RunSpec
    from tokenjoule.store.db import ResultStore

    engine, mode = PARTS[part]
    options = {"max_model_len": 1024} if engine == "vllm" else {}
    specs = [RunSpec(model=args.model, engine=engine, mode=mode, batch_size=b, input_tokens=args.input_tokens,
                     output_tokens=args.output_tokens, warmup=1, repeats=3, min_window_s=2.0, split_prefill=False,
                     device="cuda", engine_options=options) for b in args.batches]
    with ResultStore(args.db) as store:
        for spec, rec in zip(specs, run_group(specs, store, meter_kind="auto", idle_s=5.0)):
            m = rec.metrics
            print(f"[{part}] b{spec.batch_size}: {rec.status} {m.get('energy_per_output_token_j')} J/tok "
                  f"{rec.error or ''}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--input-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.db = args.db or str(out / "vllm_evidence.db")
    if args.part:
        run_part(args.part, args)
        return

    timings = {}
    for part in args.parts:
        t0 = time.time()
        cmd = [sys.executable, __file__, "--part", part, "--db", args.db, "--out", str(out), "--model", args.model,
               "--input-tokens", str(args.input_tokens), "--output-tokens", str(args.output_tokens),
               "--batches", *map(str, args.batches)]
        rc = subprocess.call(cmd)
        timings[part] = {"rc": rc, "wall_s": round(time.time() - t0, 1)}
        print(f"== {part}: rc {rc}, {timings[part]['wall_s']} s", flush=True)

    from tokenjoule.store.db import ResultStore

    rows = []
    with ResultStore(args.db) as store:
        for rec in store.find(status=None, kind="offline", model=args.model):
            m, s = rec.metrics, rec.spec
            rows.append({"engine": s["engine"], "mode": s["mode"], "batch_size": s["batch_size"], "status": rec.status,
                         "energy_per_output_token_j": m.get("energy_per_output_token_j"),
                         "energy_cv": m.get("energy_cv"), "duration_s": m.get("duration_s"),
                         "avg_power_w": m.get("avg_power_w"), "method": m.get("method"),
                         "gpu": (rec.provenance.get("gpu_names") or [None])[0], "error": rec.error})
    (out / "vllm_evidence.json").write_text(json.dumps({"rows": rows, "parts": timings,
                                                        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                        "args": {k: v for k, v in vars(args).items() if k != "part"}},
                                                       indent=1))
    print(f"\n{args.model}, {args.input_tokens} in / {args.output_tokens} out, GPU {rows[0]['gpu'] if rows else '?'}")
    print(f"{'engine/mode':<14}{'batch':>6}{'J/out tok':>12}{'CV':>8}{'latency s':>11}{'W':>8}  status")
    for r in sorted(rows, key=lambda r: (r["engine"], r["mode"], r["batch_size"])):
        f = lambda v, p: "n/a" if v is None else format(v, p)  # noqa: E731
        print(f"{r['engine'] + '/' + r['mode']:<14}{r['batch_size']:>6}{f(r['energy_per_output_token_j'], '.4f'):>12}"
              f"{f(r['energy_cv'], '.1%'):>8}{f(r['duration_s'], '.3f'):>11}{f(r['avg_power_w'], '.0f'):>8}  "
              f"{r['status']} {r['error'] or ''}")


if __name__ == "__main__":
    main()
