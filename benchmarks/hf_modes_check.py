"""Check the transformers engine on a GPU: exact token counts and the speed of each mode.

Llama-3.1-8B preset (random weights), 512 input / 64 output tokens:
  - modes eager, compile, cudagraphs at batch 1 and 8 (greedy);
  - then one cell each of beam search (4 beams), sampling, and speculative decoding
    (draft llama-3.2-1b, batch 1, 4 lookahead tokens; eager).
Each cell: warm-up calls (the first one compiles in compile/cudagraphs modes, timed
separately as first_call_s), then timed repeats, then as many prefill-only calls (1 new
token, same cache) so the per-step decode time is (full - prefill) / (output_tokens - 1);
every call's output count is checked. CUDA-graph recordings and replays are counted per phase
(first call / warm-up / timed): in mode cudagraphs the timed phase must show replays and no
recordings (the engine keeps one static KV cache per shape; with a new cache per call the
graphs would be re-recorded every call). --compare-per-call-cache adds cells that run the
compiled modes with transformers' per-call static cache, to see that difference.
Energy is read from the NVML total-energy counter around the timed repeats when available
(whole-GPU energy including idle draw; a check, not a measurement protocol: the runner does
that properly). Results go to $OUT/hf_modes_check.json after every cell, so a crash keeps
what finished. Takes about 3-4 minutes on an H100 (most of it torch.compile).

    source benchmarks/device/env.sh && python benchmarks/hf_modes_check.py
    python benchmarks/hf_modes_check.py --model tiny --modes eager --batches 1 --no-extras   # smoke test
    python benchmarks/hf_modes_check.py --modes cudagraphs --batches 8 --no-extras --compare-per-call-cache
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


class CudaGraphCounter:
    """Counts CUDA-graph recordings and replays by wrapping torch's CUDA graph tree manager
    (torch._inductor.cudagraph_trees, the backend of torch.compile mode "reduce-overhead").
    `available` is False (and counts stay None) when this torch has no such methods."""

    def __init__(self) -> None:
        self.recorded = 0
        self.replayed = 0
        self.available = False
        try:
            from torch._inductor.cudagraph_trees import CUDAGraphTreeManager
        except Exception:
            return
        if not all(hasattr(CUDAGraphTreeManager, m) for m in ("record_function", "execute_node")):
            return
        record, execute = CUDAGraphTreeManager.record_function, CUDAGraphTreeManager.execute_node

        def record_function(mgr: Any, *a: Any, **kw: Any) -> Any:
            self.recorded += 1
            return record(mgr, *a, **kw)

        def execute_node(mgr: Any, *a: Any, **kw: Any) -> Any:
            self.replayed += 1
            return execute(mgr, *a, **kw)

        CUDAGraphTreeManager.record_function = record_function
        CUDAGraphTreeManager.execute_node = execute_node
        self.available = True

    def snapshot(self) -> tuple[int, int]:
        return self.recorded, self.replayed

    def since(self, snap: tuple[int, int]) -> dict[str, int | None]:
        if not self.available:
            return {"recorded": None, "replayed": None}
        return {"recorded": self.recorded - snap[0], "replayed": self.replayed - snap[1]}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def run_cell(engine: Any, spec: RunSpec, warmup: int, repeats: int, read_j: Callable[[], float | None],
             graphs: CudaGraphCounter) -> dict[str, Any]:
    before = dynamo_counters()
    expected = [spec.output_tokens] * spec.batch_size

    def call(output_tokens: int | None = None) -> Any:
        res = engine.generate(spec, output_tokens=output_tokens)
        want = expected if output_tokens is None else [output_tokens] * spec.batch_size
        if res.output_tokens != want:
            raise RuntimeError(f"produced {res.output_tokens}, expected {want}")
        return res

    phases: dict[str, dict[str, int | None]] = {}
    snap = graphs.snapshot()
    t0 = time.perf_counter()
    first = call()
    first_call_s = time.perf_counter() - t0
    phases["first_call"], snap = graphs.since(snap), graphs.snapshot()
    for _ in range(max(warmup - 1, 0)):
        call()
    phases["warmup"], snap = graphs.since(snap), graphs.snapshot()
    durations, acceptance, cache_use = [], [], []
    e0 = read_j()
    for _ in range(repeats):
        res = call()
        durations.append(res.duration_s)
        cache_use.append(res.extra.get("kv_cache"))
        if res.acceptance_rate is not None:
            acceptance.append(res.acceptance_rate)
    e1 = read_j()
    phases["timed"], snap = graphs.since(snap), graphs.snapshot()
    # prefill-only calls (speculative decoding has no separate prefill worth timing)
    prefill_s: list[float] = []
    if spec.output_tokens > 1 and spec.decoding.strategy != "speculative":
        call(1)  # the prefill may take a path the full calls did not (no decode step)
        for _ in range(repeats):
            prefill_s.append(call(1).duration_s)
        phases["prefill"] = graphs.since(snap)
    after = dynamo_counters()
    mean_s = _mean(durations)
    out_tokens = spec.batch_size * spec.output_tokens
    energy_j = (e1 - e0) / repeats if e0 is not None and e1 is not None else None
    decode_step_ms = 1000 * (mean_s - _mean(prefill_s)) / (spec.output_tokens - 1) if prefill_s else None
    return {
        "first_call_s": first_call_s,
        "first_call_kv_cache": first.extra.get("kv_cache"),
        "duration_s": durations,
        "mean_duration_s": mean_s,
        "throughput_tokens_per_s": out_tokens / mean_s,
        "ms_per_output_token_incl_prefill": 1000 * mean_s / spec.output_tokens,
        "prefill_duration_s": prefill_s,
        "mean_prefill_duration_s": _mean(prefill_s) if prefill_s else None,
        "decode_ms_per_step": decode_step_ms,
        "output_tokens_checked": True,
        "energy_per_batch_j": energy_j,
        "energy_per_output_token_j": energy_j / out_tokens if energy_j is not None else None,
        "acceptance_rate": sum(acceptance) / len(acceptance) if acceptance else None,
        "kv_cache_timed": cache_use,
        "cudagraphs": phases,
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
    ap.add_argument("--compare-per-call-cache", action="store_true",
                    help="also run each compiled-mode cell with transformers' per-call static cache")
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = ap.parse_args()

    import torch
    import transformers

    from tokenjoule.engines import hf as hf_module
    from tokenjoule.engines.hf import HFEngine

    out_path = Path(args.out) / "hf_modes_check.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    device_index = int(args.device.split(":")[1]) if ":" in args.device else 0
    read_j, energy_method = energy_reader(device_index) if args.device != "cpu" else ((lambda: None), "cpu")
    base = dict(model=args.model, engine="hf", device=args.device, input_tokens=args.input_tokens,
                output_tokens=args.output_tokens, warmup=args.warmup, repeats=args.repeats)
    # (label, spec, per_call_cache)
    cells: list[tuple[str, RunSpec, bool]] = []
    for mode in args.modes.split(","):
        for b in (int(x) for x in args.batches.split(",")):
            cells.append((f"{mode} greedy b{b}", RunSpec(**base, mode=mode, batch_size=b), False))
            if args.compare_per_call_cache and mode != "eager":
                cells.append((f"{mode} greedy b{b} per-call", RunSpec(**base, mode=mode, batch_size=b), True))
    if not args.no_extras:
        cells += [
            ("eager beam4 b1", RunSpec(**base, mode="eager", batch_size=1, decoding=DecodingSpec(strategy="beam", num_beams=4)), False),
            ("eager sample b8", RunSpec(**base, mode="eager", batch_size=8, decoding=DecodingSpec(strategy="sample")), False),
            ("eager speculative b1", RunSpec(**base, mode="eager", batch_size=1, decoding=DecodingSpec(
                strategy="speculative", draft_model=args.draft, lookahead_tokens=4)), False),
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
    graphs = CudaGraphCounter()
    report["cudagraph_counter"] = "cudagraph_trees manager hooks" if graphs.available else "unavailable in this torch"
    engine = HFEngine()
    kept_cache_rule = hf_module.reuses_static_cache
    started = time.perf_counter()
    for label, spec, per_call in cells:
        print(f"[{time.perf_counter() - started:6.1f}s] {label} ...", flush=True)
        # per-call: the engine's beam-search path (transformers builds a static cache per call)
        hf_module.reuses_static_cache = (lambda s: False) if per_call else kept_cache_rule
        try:
            engine.load(spec)
            cell = run_cell(engine, spec, args.warmup, args.repeats, read_j, graphs)
            report["cells"][label] = {"spec": spec.canonical(), "per_call_cache": per_call, **cell}
        except Exception as exc:  # one failed cell must not end the check
            report["cells"][label] = {"spec": spec.canonical(), "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc(limit=8)}
            if isinstance(exc, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
        finally:
            hf_module.reuses_static_cache = kept_cache_rule
        report["provenance"] = engine.provenance()
        report["elapsed_s"] = time.perf_counter() - started
        out_path.write_text(json.dumps(report, indent=2, default=str))
    engine.close()

    print(f"\n{report['gpu_name']} | torch {torch.__version__} | transformers {transformers.__version__}")
    def fmt(v: Any, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    print(f"{'cell':<32}{'first s':>9}{'mean s':>9}{'tok/s':>10}{'decode ms/step':>16}{'J/out tok':>11}"
          f"{'accept':>8}{'graphs rec/replay (timed)':>27}")
    for label, c in report["cells"].items():
        if "error" in c:
            print(f"{label:<32} ERROR {c['error'][:100]}")
            continue
        timed = c["cudagraphs"]["timed"]
        rec = f"{fmt(timed['recorded'], 'd')}/{fmt(timed['replayed'], 'd')}"
        print(f"{label:<32}{c['first_call_s']:9.1f}{c['mean_duration_s']:9.3f}{c['throughput_tokens_per_s']:10.1f}"
              f"{fmt(c['decode_ms_per_step'], '.2f'):>16}{fmt(c['energy_per_output_token_j'], '.4f'):>11}"
              f"{fmt(c['acceptance_rate'], '.2f'):>8}{rec:>27}")
    print(f"\nwrote {out_path} ({report['elapsed_s']:.0f} s)")
    return 1 if any("error" in c for c in report["cells"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
