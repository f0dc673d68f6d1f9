"""Time load + statistics + binning + binned estimate of a 20,000-request trace (CPU only).

Target: under 1 s in total on a 2-core machine. The trace is written in the Azure 2023 format
(7-digit fractional timestamps) with lengths resampled (seeded) from the shipped
azure-conv-2023 trace; the results store holds one measured cell per occupied bin, written
before the clock starts (filling the store is not part of the workflow being timed).

    python benchmarks/bench_workloads.py [--requests 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path


def write_trace(path: Path, n: int, seed: int) -> None:
    from tokenjoule.workloads import load_trace

    source = load_trace("azure-conv-2023").requests
    rng = random.Random(seed)
    t = datetime(2023, 11, 16, 18, 15, 46, 680590)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for _ in range(n):
        t += timedelta(microseconds=rng.randint(1, 400_000))
        r = rng.choice(source)
        lines.append(f"{t:%Y-%m-%d %H:%M:%S.%f}{rng.randint(0, 9)},{r.input_tokens},{r.output_tokens}")
    path.write_text("\n".join(lines) + "\n")


def fill_store(db: Path, trace: Path) -> None:
    from tokenjoule.store.db import CellRecord, ResultStore
    from tokenjoule.workloads import bin_workload, load_trace

    binned = bin_workload(load_trace(trace))
    with ResultStore(db) as store:
        for k, (i, o) in enumerate(sorted(binned.counts)):
            spec = {"model": "llama-3.1-8b", "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
                    "batch_size": 64, "input_tokens": i, "output_tokens": o}
            store.add(CellRecord(spec=spec, spec_hash=f"bench{k}", metrics={"energy_j": 1.0 + i * o / 1e3},
                                 provenance={"gpu_names": ["NVIDIA H100 80GB HBM3"]}))


def run_once(trace: Path, db: Path) -> dict[str, float]:
    from tokenjoule.analysis.estimate import binned_estimate
    from tokenjoule.store.db import ResultStore
    from tokenjoule.workloads import bin_workload, load_trace, workload_stats

    times = {}
    t0 = time.perf_counter()
    workload = load_trace(trace)
    t1 = time.perf_counter()
    workload_stats(workload)
    t2 = time.perf_counter()
    binned = bin_workload(workload)
    t3 = time.perf_counter()
    with ResultStore(db) as store:
        result = binned_estimate(binned, store, model="llama-3.1-8b", engine="hf", mode="eager")
    t4 = time.perf_counter()
    assert result.complete, "every occupied bin was stored"
    times.update(load_s=t1 - t0, stats_s=t2 - t1, bin_s=t3 - t2, estimate_s=t4 - t3, total_s=t4 - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace, db = Path(tmp) / "trace.csv", Path(tmp) / "bench.db"
        write_trace(trace, args.requests, args.seed)
        fill_store(db, trace)
        import numpy  # noqa: F401  (imported once, as in any session; its import is not the workload)

        runs = [run_once(trace, db) for _ in range(args.repeats)]
    print(f"{args.requests:,} requests, {args.repeats} runs, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}")
    for key in ("load_s", "stats_s", "bin_s", "estimate_s", "total_s"):
        vals = [r[key] for r in runs]
        print(f"  {key:<11} median {statistics.median(vals) * 1e3:8.1f} ms   min {min(vals) * 1e3:8.1f} ms")
    total = statistics.median(r["total_s"] for r in runs)
    print(f"load+stats+bin+estimate: {total:.3f} s (target < 1 s): {'PASS' if total < 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
