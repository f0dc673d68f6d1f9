"""A results store filled with a realistic, planted set of cells (no GPU, no runner).

The numbers come from a small closed-form cost model (below), so tests know the answers:
energy per request falls with batch size, time per output token rises with it, and the
engine/mode factors make vLLM with CUDA graphs the cheapest configuration. The cells cover
every figure and table of the report:

- the length grid of Figure 2 (hf/eager/greedy, batch 1, 8, 64);
- decoding strategies (Figure 3), engines and modes (Figure 5) at 512 in / 64 out;
- dense and MoE models (Figure 4), tensor parallelism (Figure 6);
- the bins of `PLANTED_TRACE_ROWS` for several configurations (binned estimate, recommend);
- online cells at three arrival rates (Figure 9);
- some flagged measurements, one CPU-time estimate and one failed (out-of-memory) cell.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenjoule.store.db import CellRecord, ResultStore

MODEL = "llama-3.1-8b"
GPU = "NVIDIA H100 80GB HBM3"

# Bins the planted trace falls into (input bin, output bin) and lengths that map to them.
PLANTED_BINS = ((128, 64), (512, 64), (1024, 256))
BIN_BATCHES = (1, 8, 32, 64)
# (engine, mode, decoding, tensor_parallel) measured for every planted bin.
BIN_CONFIGS = (
    ("hf", "eager", "greedy", 1),
    ("hf", "eager", "speculative", 1),
    ("hf", "compile", "greedy", 1),
    ("hf", "cudagraphs", "greedy", 1),
    ("vllm", "eager", "greedy", 1),
    ("vllm", "graphs", "greedy", 1),
    ("vllm", "graphs", "greedy", 2),
)
# Known answer of the cost model: cheapest configuration per request at any batch.
BEST_CONFIG = ("vllm", "graphs", "greedy", 1)

_ENGINE_FACTOR = {("hf", "eager"): 1.0, ("hf", "compile"): 0.8, ("hf", "cudagraphs"): 0.62,
                  ("vllm", "eager"): 0.55, ("vllm", "graphs"): 0.4}
_MODEL_FACTOR = {"llama-3.1-8b": 1.0, "olmo-7b": 0.9, "olmo-1b": 0.16, "olmoe-1b-7b": 0.3,
                 "llama-3.2-1b": 0.15}
_MODEL_PARAMS = {"llama-3.1-8b": (8.03e9, 8.03e9), "olmo-7b": (6.89e9, 6.89e9),
                 "olmo-1b": (1.18e9, 1.18e9), "olmoe-1b-7b": (6.92e9, 1.28e9),
                 "llama-3.2-1b": (1.24e9, 1.24e9)}


def planted_trace_rows() -> list[tuple[str, int, int]]:
    """Rows (timestamp, input tokens, output tokens) of a small Azure-format trace whose
    requests fall into PLANTED_BINS: 40 + 25 + 10 requests."""
    rows = []
    lengths = [(100, 50)] * 40 + [(400, 60)] * 25 + [(1000, 200)] * 10
    for i, (inp, out) in enumerate(lengths):
        rows.append((f"2023-11-16 18:15:{i % 60:02d}.{i:07d}", inp, out))
    return rows


def write_planted_trace(path: str | Path) -> Path:
    """Write the planted trace as an Azure 2023 CSV (TIMESTAMP,ContextTokens,GeneratedTokens)."""
    path = Path(path)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [f"{ts},{i},{o}" for ts, i, o in planted_trace_rows()]
    path.write_text("\n".join(lines) + "\n")
    return path


def cost_model(model: str, engine: str, mode: str, decoding: str, batch_size: int,
               input_tokens: int, output_tokens: int, tensor_parallel: int = 1) -> dict[str, float]:
    """Closed-form prefill/decode durations and energies of one batch (planted, not measured)."""
    f = _ENGINE_FACTOR[(engine, mode)] * _MODEL_FACTOR[model]
    if decoding == "speculative":
        f *= 0.75 if batch_size <= 8 else 1.3
    elif decoding == "beam":
        f *= 2.4
    elif decoding == "sample":
        f *= 1.04
    speedup = 1.0 if tensor_parallel == 1 else 0.8 * tensor_parallel
    prefill_s = _MODEL_FACTOR[model] * (0.004 + 2.0e-5 * batch_size * input_tokens) / speedup
    step_s = f * (0.016 + 0.0004 * batch_size + 1.0e-8 * batch_size * input_tokens) / speedup
    decode_s = step_s * max(output_tokens - 1, 0)
    util = min(1.0, 0.3 + batch_size / 64)
    decode_power_w = tensor_parallel * (150 + 450 * util)
    prefill_energy_j = tensor_parallel * 600 * prefill_s
    decode_energy_j = decode_power_w * decode_s
    return {"prefill_duration_s": prefill_s, "decode_duration_s": decode_s,
            "prefill_energy_j": prefill_energy_j, "decode_energy_j": decode_energy_j,
            "duration_s": prefill_s + decode_s, "energy_j": prefill_energy_j + decode_energy_j}


@dataclass
class PlantedStore:
    """What was planted: ids by role, so tests can check links and flags."""

    path: Path
    ids: dict[str, list[int]] = field(default_factory=dict)

    def add_id(self, role: str, cell_id: int) -> None:
        self.ids.setdefault(role, []).append(cell_id)


def _provenance(model: str, gpu_count: int, cpu_only: bool = False) -> dict[str, Any]:
    params, active = _MODEL_PARAMS[model]
    return {
        "gpu_names": [] if cpu_only else [GPU] * gpu_count, "gpu_count": 0 if cpu_only else gpu_count,
        "driver_version": None if cpu_only else "570.124.06", "cuda_version": None if cpu_only else "12.8",
        "power_limit_w": [] if cpu_only else [700.0] * gpu_count, "torch_version": "2.11.0",
        "transformers_version": "5.17.0", "vllm_version": "0.26.0", "tokenjoule_version": "0.1.0",
        "hostname": "planted-host", "cpu_name": "Planted Xeon", "time_utc": "2025-06-01T12:00:00+00:00",
        "model_params": params, "model_active_params": active,
    }


def _measurement(energy_j: float, duration_s: float, tp: int, flags: tuple[str, ...],
                 method: str, with_samples: bool) -> dict[str, Any]:
    samples = []
    if with_samples:
        n = 20
        avg_w = energy_j / duration_s / tp
        for k in range(n):
            t = duration_s * k / (n - 1)
            ramp = 0.85 + 0.3 * math.sin(math.pi * k / (n - 1))  # rises then falls around avg
            samples.append([round(t, 4), [round(avg_w * ramp, 2)] * tp])
    gpu = None if method.startswith("estimate") else energy_j
    return {
        "method": method, "duration_s": duration_s, "gpu_energy_j": gpu,
        "gpu_energy_by_device_j": {} if gpu is None else {str(d): energy_j / tp for d in range(tp)},
        "gpu_energy_reason": "no GPU energy sensor" if gpu is None else None,
        "timeline_energy_j": energy_j * (1.12 if "timeline-disagrees" in flags else 0.99),
        "timeline_disagreement": 0.12 if "timeline-disagrees" in flags else -0.01,
        "idle_power_w": 70.0 * tp, "cpu_energy_j": None, "cpu_energy_reason": "RAPL not readable",
        "dram_energy_j": None, "dram_energy_reason": "RAPL not readable", "flags": list(flags),
        "samples": samples, "notes": {},
    }


def _spec(model: str, engine: str, mode: str, decoding: str, b: int, i: int, o: int, tp: int) -> dict:
    dec: dict[str, Any] = {"strategy": decoding}
    if decoding == "speculative":
        dec.update(draft_model="llama-3.2-1b", lookahead_tokens=4, ngram=False)
    return {"model": model, "engine": engine, "mode": mode, "decoding": dec, "batch_size": b,
            "input_tokens": i, "output_tokens": o, "warmup": 3, "repeats": 3, "device": "auto",
            "dtype": "auto", "seed": 0, "tensor_parallel": tp, "pipeline_parallel": 1,
            "min_window_s": 2.0, "split_prefill": True, "engine_options": {}}


def _hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def offline_record(model: str, engine: str, mode: str, decoding: str, b: int, i: int, o: int,
                   tp: int = 1, flags: tuple[str, ...] = (), method: str = "simulated",
                   with_samples: bool = False) -> CellRecord:
    """One offline cell with every metric the runner writes, from `cost_model`."""
    c = cost_model(model, engine, mode, decoding, b, i, o, tp)
    e, d = c["energy_j"], c["duration_s"]
    meas = _measurement(e, d, tp, flags, method, with_samples)
    metrics = {
        "energy_j": e, "energy_std_j": 0.01 * e, "energy_cv": 0.01, "duration_s": d,
        "duration_std_s": 0.005 * d, "duration_cv": 0.005, "energy_per_request_j": e / b,
        "energy_per_output_token_j": e / (b * o), "energy_per_token_j": e / (b * (i + o)),
        "avg_power_w": e / d, "throughput_tokens_per_s": b * o / d, "ttft_s": c["prefill_duration_s"],
        "prefill_energy_j": c["prefill_energy_j"], "prefill_duration_s": c["prefill_duration_s"],
        "decode_energy_j": c["decode_energy_j"], "decode_duration_s": c["decode_duration_s"],
        "active_energy_j": e - 70.0 * tp * d, "idle_power_w": 70.0 * tp,
        "timeline_energy_j": meas["timeline_energy_j"], "timeline_disagreement": meas["timeline_disagreement"],
        "cpu_energy_j": None, "dram_energy_j": None, "iterations_per_window": max(1, math.ceil(2.0 / d)),
        "repeats": 3, "acceptance_rate": 0.7 if decoding == "speculative" else None,
        "method": method, "flags": list(flags), "input_tokens_total": b * i, "output_tokens_total": b * o,
    }
    if not method.startswith("estimate"):  # the per-GPU split the runner stores (runs.metrics.per_gpu_metrics)
        metrics["gpu_energy_by_device_j"] = {str(d): e / tp for d in range(tp)}
        metrics["gpus_measured"] = tp
    spec = _spec(model, engine, mode, decoding, b, i, o, tp)
    return CellRecord(spec=spec, spec_hash=_hash(spec), kind="offline", metrics=metrics,
                      measurement=meas, provenance=_provenance(model, tp, method.startswith("estimate")))


def online_record(rate_rps: float, engine: str = "vllm", mode: str = "graphs",
                  trace: str = "planted", n_requests: int = 75) -> CellRecord:
    """One online run: continuous batching makes J/request fall as the rate rises, but stays
    above the best offline batches (as in the paper's Figure 9)."""
    per_req_j = 80.0 / (1.0 + 0.05 * rate_rps)
    e = per_req_j * n_requests
    d = n_requests / rate_rps + 5.0
    ttft50 = 30.0 + 8.0 * rate_rps
    tpot50 = 12.0 + 1.5 * rate_rps
    # The shape serve-bench stores (serving.bench.online_spec): the trace is the "workload".
    spec = {"model": MODEL, "engine": engine, "mode": mode, "n_requests": n_requests, "workload": trace,
            "arrival": {"process": "poisson", "rate_rps": rate_rps, "seed": 0}}
    metrics = {
        "energy_j": e, "duration_s": d, "energy_per_request_j": per_req_j,
        "energy_per_output_token_j": per_req_j / 60.0, "avg_power_w": e / d,
        "ttft_ms_p50": ttft50, "ttft_ms_p90": 1.6 * ttft50, "ttft_ms_p99": 2.5 * ttft50,
        "tpot_ms_p50": tpot50, "tpot_ms_p90": 1.3 * tpot50, "tpot_ms_p99": 1.8 * tpot50,
        "e2e_ms_p50": ttft50 + 60 * tpot50, "e2e_ms_p99": 2.5 * ttft50 + 60 * 1.8 * tpot50,
        "goodput_rps": 0.95 * rate_rps, "method": "simulated", "flags": [],
    }
    meas = _measurement(e, d, 1, (), "simulated", True)
    return CellRecord(spec=spec, spec_hash=_hash(spec), kind="online", metrics=metrics,
                      measurement=meas, provenance=_provenance(MODEL, 1))


def plant_store(path: str | Path) -> PlantedStore:
    """Create (or extend) the store at `path` with the planted cells; returns ids by role."""
    out = PlantedStore(Path(path))
    store = ResultStore(path)
    seen: set[str] = set()

    def add(role: str, rec: CellRecord) -> None:
        if rec.spec_hash in seen:  # one row per spec, like a resumed sweep
            return
        seen.add(rec.spec_hash)
        out.add_id(role, store.add(rec))

    try:
        # Figure 2: length grids, with timelines on batch 8 and two flagged cells.
        for b in (1, 8, 64):
            for i in (128, 256, 512, 1024, 2048):
                flags = ("short-window",) if (b, i) == (1, 128) else ()
                add("lengths", offline_record(MODEL, "hf", "eager", "greedy", b, i, 64, flags=flags,
                                              with_samples=(b == 8 and i == 512)))
            for o in (8, 16, 32, 64, 128):
                flags = ("timeline-disagrees",) if (b, o) == (64, 8) else ()
                add("lengths", offline_record(MODEL, "hf", "eager", "greedy", b, 512, o, flags=flags))
        # Figure 3 and 5 at 512/64; the trace bins for every configuration.
        for b in BIN_BATCHES:
            for dec in ("greedy", "sample", "beam", "speculative"):
                add("decoding", offline_record(MODEL, "hf", "eager", dec, b, 512, 64))
            for engine, mode, dec, tp in BIN_CONFIGS:
                for i, o in PLANTED_BINS:
                    add("bins", offline_record(MODEL, engine, mode, dec, b, i, o, tp=tp,
                                               with_samples=(engine == "vllm" and b == 64 and i == 512)))
        # Figure 4: dense vs MoE.
        for m in ("olmo-1b", "olmo-7b", "olmoe-1b-7b"):
            for b in (1, 8):
                add("moe", offline_record(m, "hf", "eager", "greedy", b, 512, 64))
        # Figure 6: tensor parallelism.
        for tp in (2, 4):
            for b in BIN_BATCHES:
                add("tp", offline_record(MODEL, "vllm", "graphs", "greedy", b, 512, 64, tp=tp))
        # A CPU-time estimate (labelled) and a failed cell.
        add("estimate", offline_record("llama-3.2-1b", "hf", "eager", "greedy", 1, 128, 8,
                                       flags=("estimate",), method="estimate-cpu-time"))
        failed_spec = _spec(MODEL, "hf", "eager", "greedy", 512, 2048, 64, 1)
        out.add_id("failed", store.add(CellRecord(spec=failed_spec, spec_hash=_hash(failed_spec),
                                                  status="failed", provenance=_provenance(MODEL, 1),
                                                  error="CUDA out of memory")))
        for rate in (1.0, 4.0, 16.0):
            add("online", online_record(rate))
    finally:
        store.close()
    return out
