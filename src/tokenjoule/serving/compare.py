"""Offline vs online on the same requests (`tokenjoule compare-serving`), as in Section 3.3
of Fernandez et al. (2025).

The same requests (same lengths, same seeded prompt ids) are run twice:
- online: a server started for the purpose receives them at a rate (serve-bench; continuous
  batching as requests arrive), energy over the whole run;
- offline: one `LLM.generate` call over all prompts at once (vLLM batches them continuously
  from a full queue), energy over that call.

Reported: relative_difference = (E_offline - E_online) / E_offline.
Sign convention: negative means the online run used MORE energy than the offline batch for the
same work (the usual case: requests trickle in, batches run part-empty and the GPU idles
between arrivals); positive means online used less.

The online run goes first and its server is stopped before the offline engine loads, so the
two never share the GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.serving.arrivals import ArrivalSpec
from tokenjoule.records import CellRecord
from tokenjoule.store.db import ResultStore

COMPARE_ENGINES = ("vllm",)


def relative_difference(offline_energy_j: float | None, online_energy_j: float | None) -> float | None:
    """(E_offline - E_online) / E_offline; None when either is missing or E_offline is not > 0."""
    if offline_energy_j is None or online_energy_j is None or not offline_energy_j > 0:
        return None
    return (offline_energy_j - online_energy_j) / offline_energy_j


def comparison_metrics(offline: dict[str, Any], online: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side numbers from the two runs' metrics (energy_j, duration_s,
    output_tokens_total, requests_ok)."""
    out: dict[str, Any] = {"relative_difference": relative_difference(offline.get("energy_j"), online.get("energy_j"))}
    for side, m in (("offline", offline), ("online", online)):
        e, n, tok = m.get("energy_j"), m.get("requests_ok"), m.get("output_tokens_total")
        out[f"{side}_energy_j"] = e
        out[f"{side}_duration_s"] = m.get("duration_s")
        out[f"{side}_energy_per_request_j"] = e / n if e is not None and n else None
        out[f"{side}_energy_per_output_token_j"] = e / tok if e is not None and tok else None
        out[f"{side}_output_tokens_total"] = tok
    return out


@dataclass
class CompareConfig:
    trace: str
    model: str
    engine: str = "vllm"
    mode: str = "graphs"
    arrival: ArrivalSpec = field(default_factory=lambda: ArrivalSpec("poisson", rate_rps=4.0))
    n_requests: int = 200
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    meter: str = "auto"
    idle_s: float = 5.0
    seed: int = 0
    warmup_requests: int = 2
    engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in COMPARE_ENGINES:
            raise UnknownNameError("engine for compare-serving", self.engine, COMPARE_ENGINES)


def run_offline_requests(cfg: CompareConfig, requests, meter, avoid=()) -> dict[str, Any]:
    """All requests in one offline `LLM.generate` call inside one meter window."""
    from tokenjoule.engines.vllm_offline import VLLMEngine
    from tokenjoule.spec import RunSpec

    spec = RunSpec(model=cfg.model, engine="vllm", mode=cfg.mode, batch_size=1, input_tokens=1, output_tokens=1,
                   seed=cfg.seed, device="cuda", engine_options=cfg.engine_options)
    engine = VLLMEngine()
    engine.load(spec)
    try:
        # A short warm-up (not measured) so first-call costs stay out of the window.
        engine.generate_requests([(r.input_tokens, r.output_tokens) for r in requests[: max(1, cfg.warmup_requests)]],
                                 seed=cfg.seed + 1_000_000)
        with meter.window(sync=engine.synchronize) as w:
            t0 = time.perf_counter()
            result = engine.generate_requests([(r.input_tokens, r.output_tokens) for r in requests], seed=cfg.seed,
                                             avoid=avoid)
            wall = time.perf_counter() - t0
        m = w.result
        return {"energy_j": m.energy_j, "duration_s": m.duration_s, "generate_s": wall,
                "requests_ok": len(result.output_tokens), "output_tokens_total": result.total_output_tokens,
                "input_tokens_total": result.total_input_tokens, "method": m.method, "flags": list(m.flags),
                "avg_power_w": m.avg_power_w, "measurement": m.to_dict(with_samples=False),
                "provenance": engine.provenance()}
    finally:
        engine.close()


def run_compare(cfg: CompareConfig, store: ResultStore, meter: Any | None = None,
                on_stage: Callable[[str], None] | None = None,
                offline_runner: Callable[..., dict[str, Any]] = run_offline_requests,
                online_runner: Callable[..., CellRecord] | None = None) -> dict[str, Any]:
    """Online first, then offline; stores both runs and returns the comparison (runners are
    injectable so the arithmetic and bookkeeping can be tested without a GPU)."""
    from tokenjoule.serving.bench import ServeBenchConfig, _preset_info, build_requests, run_serve_bench

    if online_runner is None and offline_runner is run_offline_requests:
        from tokenjoule.engines.vllm_offline import INSTALL, vllm_available

        if not vllm_available():  # say so before measuring idle power or starting anything
            from tokenjoule.errors import MissingDependencyError

            raise MissingDependencyError("vLLM", INSTALL)
    stage = on_stage or (lambda s: None)
    bench_cfg = ServeBenchConfig(model=cfg.model, arrival=cfg.arrival, launch=cfg.engine, mode=cfg.mode,
                                 workload=cfg.trace, n_requests=cfg.n_requests, max_input_tokens=cfg.max_input_tokens,
                                 max_output_tokens=cfg.max_output_tokens, meter=cfg.meter, idle_s=cfg.idle_s,
                                 warmup_requests=cfg.warmup_requests, seed=cfg.seed)
    own_meter = meter is None
    if meter is None:
        from tokenjoule.energy import make_meter

        meter = make_meter(cfg.meter)
    try:
        online = (online_runner or run_serve_bench)(bench_cfg, store, meter=meter, on_stage=stage)
        info = _preset_info(cfg.model)
        workload = build_requests(bench_cfg, info["max_model_len"])
        stage("running the same requests offline")
        offline = offline_runner(cfg, workload.requests, meter, avoid=info["avoid"])
    finally:
        if own_meter:
            meter.close()
    if offline.get("energy_j") is None:
        raise TokenjouleError(f"the offline run has no energy reading ({offline.get('method')}); cannot compare")
    result = comparison_metrics(offline, online.metrics)
    spec = {"model": cfg.model, "engine": cfg.engine, "mode": cfg.mode, "workload": cfg.trace,
            "n_requests": len(workload), "comparison": "offline-all-at-once", "seed": cfg.seed,
            "max_input_tokens": cfg.max_input_tokens, "max_output_tokens": cfg.max_output_tokens}
    metrics = {k: v for k, v in offline.items() if k not in ("measurement", "provenance")}
    metrics.update(compared_online_cell=online.id, relative_difference=result["relative_difference"])
    offline_record = CellRecord.comparison(spec, metrics, offline.get("measurement") or {},
                                           {**online.provenance, **(offline.get("provenance") or {})})
    store.add(offline_record)
    result.update(online_cell=online.id, offline_cell=offline_record.id)
    return result
