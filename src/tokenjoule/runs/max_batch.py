"""The largest batch of a bin from the memory model: predict, confirm with one probe, step down.

Replaces the doubling + bisection hunt of runs.batch_search (about log2(L) + 6 full-length
probes per bin) by: calibrate the engine's memory model once per load (models.memory, one or
two small profiled prefills), predict each bin's largest batch, probe ONCE at the prediction,
and on out-of-memory step down by MAX_BATCH_STEP (x0.8) until a probe fits. Every cell records
`max_batch_predicted`, `max_batch_probes` (count), `max_batch_probe_sizes` and
`max_batch_method` (see `MaxBatchResult.metrics`).

How peaks are read (the calibration's `method`):
- `cuda-max-allocated`: torch.cuda.max_memory_allocated around `probe_memory` on the engine's
  device; capacity = free + reserved device memory at calibration time.
- `rss-sampled`: on CPU, the process's resident set sampled every millisecond during the probe
  (Linux /proc/self/statm); capacity = MemAvailable + the resident set before the probe.
- `vllm-kv-cache`: vLLM preallocates its KV cache; no profile is needed (models.memory.vllm_max_batch).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tokenjoule.engines.base import CAP_KV_CACHE_TOKENS, CAP_PROBE_MEMORY, supports
from tokenjoule.models.memory import DEFAULT_HEADROOM, MemoryModel, MemoryProfile, calibrate, vllm_max_batch
from tokenjoule.spec import RunSpec, memory_key

MAX_BATCH_STEP = 0.8
# After a step down, one more probe climbs to the refitted model's prediction when that lies
# more than this share above the batch that fitted (the step leaves up to 20% on the table).
CLIMB_MIN_GAIN = 0.05
# Once probes showed the usable memory, predictions keep this share of the lower of its bounds.
USABLE_MARGIN = 0.98
# Lengths of the calibration prefills: long enough that activations dominate allocator noise,
# short enough to take well under a second on an 8B model.
PROFILE_TOKENS = 1024
PROFILE_ROWS = (1, 4)


@dataclass
class MaxBatchResult:
    """`max_batch` is None when even batch 1 does not fit."""

    max_batch: int | None
    predicted: int | None
    method: str
    probes: list[dict[str, Any]] = field(default_factory=list)  # {"batch_size", "fits", "how"}

    def metrics(self) -> dict[str, Any]:
        return {"max_batch_predicted": self.predicted, "max_batch_probes": len(self.probes),
                "max_batch_probe_sizes": [p["batch_size"] for p in self.probes],
                "max_batch_method": self.method}


def step_down(batch_size: int, step: float = MAX_BATCH_STEP) -> int:
    return max(1, min(batch_size - 1, int(batch_size * step)))


def confirm_max_batch(fits: Callable[[int], bool], predicted: int, cap: int, method: str,
                      how: str = "probe", step: float = MAX_BATCH_STEP) -> MaxBatchResult:
    """Probe at the prediction (clamped to [1, cap]); on out-of-memory step down until one fits."""
    probes: list[dict[str, Any]] = []
    b = max(1, min(predicted, cap))
    while True:
        ok = bool(fits(b))
        probes.append({"batch_size": b, "fits": ok, "how": how})
        if ok:
            return MaxBatchResult(b, predicted, method, probes)
        if b == 1:
            return MaxBatchResult(None, predicted, method, probes)
        b = step_down(b, step)


# -- calibration on a loaded engine --------------------------------------------------------------
def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def sampled_peak_rss(run: Callable[[], None], interval_s: float = 0.001) -> tuple[int, int]:
    """(resident bytes before, peak resident bytes during) `run()`, sampled by a thread."""
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        run()
    finally:
        done.set()
        t.join()
    return before, max(peak[0], _rss_bytes())


def _kv_bytes_per_token(spec: RunSpec, dtype_bytes: int) -> float:
    from tokenjoule.models.architecture import architecture_from_config
    from tokenjoule.models.registry import resolve_model

    source = resolve_model(spec.model)
    if source.config is None:
        return 0.0  # an HF id without a local config: the calibration's slope carries the KV bytes
    return float(architecture_from_config(source.config).kv_bytes_per_token(dtype_bytes))


def _dtype_bytes(engine: Any) -> int:
    dtype = str(engine.provenance().get("dtype", "bfloat16"))
    return 4 if "32" in dtype else (1 if "8" in dtype else 2)


def calibrate_engine(engine: Any, spec: RunSpec, rows: tuple[int, ...] = PROFILE_ROWS,
                     tokens_per_row: int = PROFILE_TOKENS) -> MemoryModel:
    """Profile `rows` prefills of `tokens_per_row` tokens with engine.probe_memory and fit the model."""
    import torch

    probe = engine.probe_memory
    devices = engine.device_indices()
    half = max(1, tokens_per_row // 2)
    trials = [spec.model_copy(update={"batch_size": r, "input_tokens": tokens_per_row - half,
                                      "output_tokens": half}) for r in rows]
    kv = _kv_bytes_per_token(spec, _dtype_bytes(engine))
    profiles = []
    if devices and torch.cuda.is_available():
        dev = devices[0]
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        weights = torch.cuda.memory_allocated(dev)
        free, _total = torch.cuda.mem_get_info(dev)
        capacity = free + torch.cuda.memory_reserved(dev)
        for trial in trials:
            torch.cuda.reset_peak_memory_stats(dev)
            probe(trial)
            profiles.append(MemoryProfile(trial.batch_size, tokens_per_row, torch.cuda.max_memory_allocated(dev)))
        return calibrate(profiles, capacity_bytes=capacity, weights_bytes=weights, kv_bytes_per_token=kv,
                         method="cuda-max-allocated")
    base: int | None = None
    for trial in trials:
        before, peak = sampled_peak_rss(lambda t=trial: probe(t))  # type: ignore[misc]
        base = before if base is None else min(base, before)
        profiles.append(MemoryProfile(trial.batch_size, tokens_per_row, peak))
    assert base is not None  # PROFILE_ROWS is never empty
    return calibrate(profiles, capacity_bytes=_mem_available_bytes() + base, weights_bytes=base,
                     kv_bytes_per_token=kv, method="rss-sampled")


def predict_for(engine: Any, spec: RunSpec, model: MemoryModel | None, cap: int) -> tuple[int, str]:
    """The predicted largest batch of this cell and the method that produced it."""
    beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
    kv_tokens = engine.kv_cache_tokens() if supports(engine, CAP_KV_CACHE_TOKENS) else None
    if spec.engine == "vllm" and kv_tokens is not None:
        seqs = engine.max_num_seqs()
        return max(1, vllm_max_batch(kv_tokens, spec.input_tokens, spec.output_tokens, beams, seqs, cap)), \
            "vllm-kv-cache"
    if model is None:
        raise ValueError("a memory model is needed for engines without a KV-cache capacity")
    return max(1, model.predict_max_batch(spec.input_tokens, spec.output_tokens, beams, cap)), \
        f"memory-model ({model.method})"


def predicted_max_batch(engine: Any, spec: RunSpec, model: MemoryModel | None, cap: int,
                        fits: Callable[[int], bool], how: str = "probe") -> MaxBatchResult:
    predicted, method = predict_for(engine, spec, model, cap)
    return confirm_max_batch(fits, predicted, cap, method, how)


def annotate_peaks(probes: list[dict[str, Any]], fits: Any) -> None:
    """Add the peak bytes each fitting probe reported (EngineFits.peaks) to its stored entry."""
    for p in probes:
        if p["fits"] and p["batch_size"] in getattr(fits, "peaks", {}):
            p["peak_bytes"] = fits.peaks[p["batch_size"]]


# -- the sweep's hook ----------------------------------------------------------------------------
MAX_BATCH_METHODS = ("search", "predict")


class MaxBatchResolver:
    """`batch: max` by prediction: one calibration per loaded engine, then one probe per bin.

    Answers are cached in the store under the same key as the search's (runs.batch_search), so a
    resumed sweep probes nothing. An engine without `probe_memory`, or whose calibration fails,
    falls back to the search and says so in `max_batch_method`."""

    def __init__(self, store: Any, cap: int):
        self.store, self.cap = store, cap
        self.models: dict[tuple, MemoryModel | str] = {}
        # per loaded model: [highest fitting probe peak, lowest failing predicted peak] in bytes
        self.usable_bounds: dict[tuple, list[float]] = {}

    @staticmethod
    def _model_key(engine: Any, spec: RunSpec, gpu_name: str | None) -> tuple:
        return (id(engine), spec.model, spec.engine, spec.mode, spec.dtype, spec.device, gpu_name)

    def memory_model(self, engine: Any, spec: RunSpec, gpu_name: str | None) -> MemoryModel | str:
        from tokenjoule.records import error_text, is_out_of_memory

        key = self._model_key(engine, spec, gpu_name)
        if key not in self.models:
            if not supports(engine, CAP_PROBE_MEMORY):
                self.models[key] = "the engine has no probe_memory"
            else:
                try:
                    self.models[key] = calibrate_engine(engine, spec)
                    self.seed_from_store(key, spec, gpu_name)
                except Exception as exc:  # noqa: BLE001 - calibration failing falls back to the search
                    if is_out_of_memory(exc):
                        from tokenjoule.runs.batch_search import release_memory

                        release_memory()
                    self.models[key] = f"calibration failed: {error_text(exc)}"
        return self.models[key]

    def _model_or_reason(self, engine: Any, spec: RunSpec, gpu_name: str | None) -> MemoryModel | str | None:
        """The memory model (hf), None (vLLM: its KV-cache capacity answers), or why neither can
        predict (then the search runs)."""
        if spec.engine != "vllm":
            return self.memory_model(engine, spec, gpu_name)
        if not supports(engine, CAP_KV_CACHE_TOKENS) or engine.kv_cache_tokens() is None:
            return "the engine reports no KV-cache capacity"
        return None

    def predict(self, engine: Any, spec: RunSpec, gpu_name: str | None) -> tuple[int | None, bool]:
        """(the largest batch this cell will be measured at, whether it is already known) without
        probing: the cached answer, else the memory model's prediction (calibrating once per load),
        else None (the engine falls back to the search). Lets a caller with a time budget decide
        before it spends the probes."""
        from tokenjoule.runs.batch_search import max_batch_key

        cached = self.store.get_max_batch(max_batch_key(spec, gpu_name, self.cap))
        if cached is not None:
            return cached, True
        model = self._model_or_reason(engine, spec, gpu_name)
        if isinstance(model, str):
            return None, False
        return max(1, min(predict_for(engine, spec, model, self.cap)[0], self.cap)), False

    def learn(self, model_key: tuple, shape: tuple[int, int, int], probes: list[dict[str, Any]]) -> MemoryModel | None:
        """Teach the load's memory model what probes of one shape (input, output, beams) showed:

        - slope: refit on the `peak_bytes` of each probe that fitted (an at-scale point, not the
          calibration's small prefills extrapolated a hundredfold);
        - usable memory: a probe that failed although the model said it fits bounds what the
          allocator really hands out (seen on an H200 with transformers eager: probes peaking at
          120 GB fitted, ones predicted at 132-133 GB did not, on a 141 GB card whose free +
          reserved memory x 0.98, the calibrated capacity, is about 137 GB). The bounds [highest fitting peak, lowest failing predicted peak] hold
          for the load; once a failure contradicts the model, it predicts with USABLE_MARGIN of
          the lower of the two, so the next bin's one probe fits.
        """
        current = self.models.get(model_key)
        if not isinstance(current, MemoryModel):
            return None
        i, o, beams = shape
        bounds = self.usable_bounds.setdefault(model_key, [0.0, math.inf])
        for p in probes:
            if p.get("fits") and p.get("peak_bytes"):
                current = current.refit(MemoryProfile(p["batch_size"] * beams, i + o, float(p["peak_bytes"])))
                bounds[0] = max(bounds[0], float(p["peak_bytes"]))
        for p in probes:
            if p.get("fits") is False:
                bounds[1] = min(bounds[1], current.peak_bytes(p["batch_size"], i, o, beams))
        if bounds[0] > 0 and bounds[1] <= current.capacity_bytes * current.headroom:
            # the model's capacity was too high: predict below both bounds (fragmentation varies
            # with the shape, so a failing peak can lie under another shape's fitting one: on the
            # H200, 120.06 GB failed at 4096/64 where 120.23 GB fitted at 256/256)
            current = current.with_usable_bytes(min(bounds) * USABLE_MARGIN)
        self.models[model_key] = current
        return current

    def stored_probes(self, spec: RunSpec, gpu_name: str | None) -> list[tuple[tuple[int, int, int], list]]:
        """((input, output, beams), probes) of every bin earlier loads stored for this model,
        engine, mode, dtype, engine options, parallelism and GPU (the largest-batch cache keeps
        every probe with its peak)."""
        entries = getattr(self.store, "max_batch_entries", None)
        if entries is None:
            return []
        same = ("model", "engine", "mode", "dtype", "engine_options", "tensor_parallel", "pipeline_parallel",
                "gpu_name")
        mine = json.loads(memory_key(spec, gpu_name, self.cap))
        out = []
        for key, probes in entries(gpu_name):
            if all(key.get(k) == mine.get(k) for k in same):
                d = key.get("decoding") or {}
                beams = int(d.get("num_beams") or 1) if d.get("strategy") == "beam" else 1
                out.append(((int(key["input_tokens"]), int(key["output_tokens"]), beams), probes))
        return out

    def seed_from_store(self, model_key: tuple, spec: RunSpec, gpu_name: str | None) -> None:
        """Learn from the probes earlier loads stored (`stored_probes`): a resumed table starts
        with the lesson instead of paying its first bin's failed probes again."""
        for shape, probes in self.stored_probes(spec, gpu_name):
            self.learn(model_key, shape, probes)

    def model_from_stored_probes(self, spec: RunSpec, gpu_name: str | None) -> MemoryModel | None:
        """A memory model from stored probes alone, without an engine (for a dry run): peak =
        fixed + tokens x bytes per token fitted to the fitting probes' peaks (weights inside
        `fixed`), usable memory bounded by the fitting and failing probes as in `learn`. None
        with fewer than two fitting probes of different sizes."""
        stored = self.stored_probes(spec, gpu_name)
        profiles = [MemoryProfile(p["batch_size"] * beams, i + o, float(p["peak_bytes"]))
                    for (i, o, beams), probes in stored for p in probes if p.get("fits") and p.get("peak_bytes")]
        if len({pr.tokens for pr in profiles}) < 2:
            return None
        top = max(pr.peak_bytes for pr in profiles)
        key = ("stored-probes", spec.model, spec.engine, spec.mode, spec.dtype, gpu_name)
        # capacity = the highest fitting peak until a failure says less
        self.models[key] = calibrate(profiles, capacity_bytes=top / DEFAULT_HEADROOM, weights_bytes=0.0,
                                     kv_bytes_per_token=0.0, method="stored probes")
        self.usable_bounds.pop(key, None)
        for shape, probes in stored:
            self.learn(key, shape, probes)
        model = self.models.pop(key)
        self.usable_bounds.pop(key, None)
        return model if isinstance(model, MemoryModel) else None

    def _learn_and_climb(self, model_key: tuple, spec: RunSpec, fits: Any, how: str,
                         res: MaxBatchResult) -> MaxBatchResult:
        """Learn from this bin's probes (`learn`), then, after a step down, climb once to the
        prediction from the middle of the usable-memory bounds when that lies more than
        CLIMB_MIN_GAIN above the batch that fitted: the answer then sits near the real limit,
        not up to 20% below it."""
        beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
        shape = (spec.input_tokens, spec.output_tokens, beams)
        annotate_peaks(res.probes, fits)
        if res.max_batch is None:
            return res
        model = self.learn(model_key, shape, res.probes)
        failed = [p["batch_size"] for p in res.probes if not p["fits"]]
        if model is None or not failed or res.max_batch not in getattr(fits, "peaks", {}):
            return res
        bounds = self.usable_bounds[model_key]
        middle = model.with_usable_bytes((bounds[0] + bounds[1]) / 2) if math.isfinite(bounds[1]) else model
        target = min(middle.predict_max_batch(*shape, self.cap), min(failed) - 1)
        if target <= res.max_batch * (1 + CLIMB_MIN_GAIN):
            return res
        ok = bool(fits(target))
        res.probes.append({"batch_size": target, "fits": ok, "how": how})
        annotate_peaks(res.probes, fits)
        if ok:
            res.max_batch = target
            res.method += ", climbed on the probe's peak"
        self.learn(model_key, shape, res.probes[-1:])
        return res

    def resolve(self, engine: Any, spec: RunSpec, gpu_name: str | None) -> MaxBatchResult:
        from tokenjoule.runs.batch_search import engine_fits, max_batch_key, search_max_batch

        key = max_batch_key(spec, gpu_name, self.cap)
        cached = self.store.get_max_batch(key)
        if cached is not None:
            return MaxBatchResult(cached, None, "cached", [])
        fits, how = engine_fits(engine, spec)
        model = self._model_or_reason(engine, spec, gpu_name)
        if isinstance(model, str):
            search = search_max_batch(fits, self.cap, how)
            res = MaxBatchResult(search.max_batch, None, f"search ({model})", search.probes)
        else:
            res = predicted_max_batch(engine, spec, model, self.cap, fits, how)
            if model is not None:
                res = self._learn_and_climb(self._model_key(engine, spec, gpu_name), spec, fits, how, res)
        annotate_peaks(res.probes, fits)
        if res.max_batch is not None:
            self.store.set_max_batch(key, res.max_batch, gpu_name, res.probes)
        return res
