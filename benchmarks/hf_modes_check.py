"""Check the transformers engine on a GPU: exact token counts and the speed of each mode.

Llama-3.1-8B preset (random weights), 512 input / 64 output tokens:
  - modes eager, compile, cudagraphs at batch 1 and 8 (greedy);
  - then one cell each of beam search (4 beams), sampling, and speculative decoding
    (draft llama-3.2-1b, batch 1, 4 lookahead tokens; eager).
Each cell: warm-up calls (the first one compiles in compile/cudagraphs modes, timed
separately as first_call_s), then timed repeats; every call's output count is checked.
Energy is read from the NVML total-energy counter around the timed repeats when available
(whole-GPU energy including idle draw; a check, not a measurement protocol: the runner does
that properly). Results go to $OUT/hf_modes_check.json after every cell, so a crash keeps
what finished. Takes about 3-4 minutes on an H100 (most of it torch.compile).

    source benchmarks/device/env.sh && python benchmarks/hf_modes_check.py
    python benchmarks/hf_modes_check.py --model tiny --modes eager --batches 1 --no-extras   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.spec import DecodingSpec, RunSpec  # noqa: E402


def energy_reader(device_index: int) -> tuple[Callable[[], float | None], str]:
    """A function returning the GPU's cumulative energy in J (None when unreadable), and why."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:  # no NVML, or the counter is not supported on this GPU
        return (lambda: None), f"nvml energy counter unreadable: {exc}"
    return (lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0), "nvml-counter"


def dynamo_counters() -> dict[str, int]:
    """Graph and CUDA-graph-skip counters (to tell whether compile/cudagraphs really engaged)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:
        return {}
    out = {"unique_graphs": int(counters["stats"].get("unique_graphs", 0))}
    # every inductor counter (cudagraph_skips, re-recordings...), whatever this torch calls them
    out |= {f"inductor.{k}": int(v) for k, v in counters["inductor"].items()}
    return out


def run_cell(engine: Any, spec: RunSpec, warmup: int, repeats: int, read_j: Callable[[], float | None]) -> dict[str, Any]:
    before = dynamo_counters()
    expected = [spec.output_tokens] * spec.batch_size
    t0 = time.perf_counter()
    first = engine.generate(spec)
    first_call_s = time.perf_counter() - t0
    if first.output_tokens != expected:
        raise RuntimeError(f"first call produced {first.output_tokens}, expected {expected}")
    for _ in range(max(warmup - 1, 0)):
        engine.generate(spec)
    durations, acceptance = [], []
    e0 = read_j()
    for _ in range(repeats):
        res = engine.generate(spec)
        if res.output_tokens != expected:
            raise RuntimeError(f"produced {res.output_tokens}, expected {expected}")
        durations.append(res.duration_s)
        if res.acceptance_rate is not None:
            acceptance.append(res.acceptance_rate)
    e1 = read_j()
    after = dynamo_counters()
    mean_s = sum(durations) / len(durations)
    out_tokens = spec.batch_size * spec.output_tokens
    energy_j = (e1 - e0) / repeats if e0 is not None and e1 is not None else None
    return {
        "first_call_s": first_call_s,
        "duration_s": durations,
        "mean_duration_s": mean_s,
        "throughput_tokens_per_s": out_tokens / mean_s,
        "ms_per_decode_step": 1000 * mean_s / spec.output_tokens,
        "output_tokens_checked": True,
        "energy_per_batch_j": energy_j,
        "energy_per_output_token_j": energy_j / out_tokens if energy_j is not None else None,
        "acceptance_rate": sum(acceptance) / len(acceptance) if acceptance else None,
        "extra": {k: v for k, v in res.extra.items() if k != "note"},
        "dynamo": {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--draft", default="llama-3.2-1b")
    ap.add_argument("--modes", default="eager,compile,cudagraphs")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--input-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-extras", action="store_true", help="skip the beam/sample/speculative cells")
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = ap.parse_args()

    import torch
    import transformers

    from tokenjoule.engines.hf import HFEngine

    out_path = Path(args.out) / "hf_modes_check.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    device_index = int(args.device.split(":")[1]) if ":" in args.device else 0
    read_j, energy_method = energy_reader(device_index) if args.device != "cpu" else ((lambda: None), "cpu")
    base = dict(model=args.model, engine="hf", device=args.device, input_tokens=args.input_tokens,
                output_tokens=args.output_tokens, warmup=args.warmup, repeats=args.repeats)
    cells: list[tuple[str, RunSpec]] = []
    for mode in args.modes.split(","):
        for b in (int(x) for x in args.batches.split(",")):
            cells.append((f"{mode} greedy b{b}", RunSpec(**base, mode=mode, batch_size=b)))
    if not args.no_extras:
        cells += [
            ("eager beam4 b1", RunSpec(**base, mode="eager", batch_size=1, decoding=DecodingSpec(strategy="beam", num_beams=4))),
            ("eager sample b8", RunSpec(**base, mode="eager", batch_size=8, decoding=DecodingSpec(strategy="sample"))),
            ("eager speculative b1", RunSpec(**base, mode="eager", batch_size=1, decoding=DecodingSpec(
                strategy="speculative", draft_model=args.draft, lookahead_tokens=4))),
        ]

    report: dict[str, Any] = {
        "script": "benchmarks/hf_modes_check.py",
        "argv": sys.argv[1:],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": platform.node(),
        "gpu_name": torch.cuda.get_device_name(device_index) if torch.cuda.is_available() else None,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "energy_method": energy_method,
        "weights": "random (preset); speculative acceptance is not meaningful",
        "cells": {},
    }
    engine = HFEngine()
    started = time.perf_counter()
    for label, spec in cells:
        print(f"[{time.perf_counter() - started:6.1f}s] {label} ...", flush=True)
        try:
            engine.load(spec)
            report["cells"][label] = {"spec": spec.canonical(), **run_cell(engine, spec, args.warmup, args.repeats, read_j)}
        except Exception as exc:  # one failed cell must not end the check
            report["cells"][label] = {"spec": spec.canonical(), "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc(limit=8)}
            if isinstance(exc, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
        report["provenance"] = engine.provenance()
        report["elapsed_s"] = time.perf_counter() - started
        out_path.write_text(json.dumps(report, indent=2, default=str))
    engine.close()

    print(f"\n{report['gpu_name']} | torch {torch.__version__} | transformers {transformers.__version__}")
    print(f"{'cell':<24}{'first s':>9}{'mean s':>9}{'tok/s':>10}{'ms/step':>9}{'J/out tok':>11}{'accept':>8}")
    for label, c in report["cells"].items():
        if "error" in c:
            print(f"{label:<24} ERROR {c['error'][:100]}")
            continue
        jpt = c["energy_per_output_token_j"]
        acc = c["acceptance_rate"]
        print(f"{label:<24}{c['first_call_s']:9.1f}{c['mean_duration_s']:9.3f}{c['throughput_tokens_per_s']:10.1f}"
              f"{c['ms_per_decode_step']:9.2f}{(f'{jpt:.4f}' if jpt is not None else '-'):>11}"
              f"{(f'{acc:.2f}' if acc is not None else '-'):>8}")
    print(f"\nwrote {out_path} ({report['elapsed_s']:.0f} s)")
    return 1 if any("error" in c for c in report["cells"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
