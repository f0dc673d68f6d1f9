"""How long a sweep cell will take: from stored cells of the same lengths and batch when the
store has them ("history"), else from a time model fitted to the setup's stored cells on that
GPU ("model", runs.time_model), else a labelled guess. Used by `--dry-run`, the progress bar's
ETA and `--budget-minutes`.

While a sweep runs, the predictions are rescaled by (measured wall time / predicted time) of
the cells measured so far, so the ETA learns the machine's real speed after one cell.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from tokenjoule.spec import RunSpec

# The guess, for when nothing similar is stored: a mid-size model on one data-centre GPU.
GUESS_PREFILL_S_PER_TOKEN = 5e-5  # prefill throughput ~20k tokens/s
GUESS_DECODE_S_PER_STEP = 0.025  # one decode step of the whole batch
GUESS_LOAD_S = 30.0  # one model load + idle baseline, per group
GUESS_MAX_BATCH = 64  # batch assumed for an unresolved `batch: max` cell
GUESS_PROBES = 12  # probes of a largest-batch search (about 2 x log2 of the limit)


@dataclass(frozen=True)
class CellEstimate:
    seconds: float
    source: str  # "history" (stored cells) or "guess"


def cell_seconds(spec: RunSpec, batch_s: float, prefill_s: float | None = None) -> float:
    """Wall time of one cell given the latency of one batch (see runs.offline: warm-up batches,
    one calibration batch, then `repeats` windows of at least `min_window_s`; under the adaptive
    protocol, runs.windows: a short warm-up, two windows, the first batch one of them when long)."""
    if spec.protocol == "adaptive":
        return _adaptive_seconds(spec, batch_s, prefill_s)
    window_s = max(spec.min_window_s, batch_s)
    total = (spec.warmup + 1) * batch_s + spec.repeats * window_s
    if spec.split_prefill and spec.output_tokens > 1:
        p = prefill_s if prefill_s is not None else batch_s / max(spec.output_tokens, 1)
        total += (min(spec.warmup, 1) + 1) * p + spec.repeats * max(spec.min_window_s, p)
    return total


def _adaptive_seconds(spec: RunSpec, batch_s: float, prefill_s: float | None) -> float:
    from tokenjoule.runs.windows import MIN_WINDOWS, warmup_plan

    p = prefill_s if prefill_s is not None else batch_s / max(spec.output_tokens, 1)
    plan = warmup_plan(spec.engine, spec.mode, "adaptive", spec.warmup)

    def phase(one_s: float) -> float:
        if one_s >= spec.min_window_s:  # the first batch is window 1
            return MIN_WINDOWS * one_s
        return one_s + MIN_WINDOWS * spec.min_window_s  # calibration batch, then full windows

    total = plan.full_length * batch_s + plan.short * 2 * p + phase(batch_s)
    if spec.split_prefill and spec.output_tokens > 1:
        total += p + phase(p)
    return total


def guess_batch_s(spec: RunSpec) -> float:
    beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
    prefill = GUESS_PREFILL_S_PER_TOKEN * spec.batch_size * beams * spec.input_tokens
    return prefill + GUESS_DECODE_S_PER_STEP * spec.output_tokens


class CellTimeEstimator:
    """Predict cell wall times; `observe` measured ones to calibrate the rest."""

    def __init__(self, store: Any | None, gpu_name: str | None = None, max_batch_method: str = "search",
                 max_batch_cap: int = 1024):
        self.store = store
        self.gpu_name = gpu_name
        self.max_batch_method, self.max_batch_cap = max_batch_method, max_batch_cap
        self.predicted_s = 0.0
        self.measured_s = 0.0
        self._models: dict[tuple, Any] = {}

    def time_model(self, spec: RunSpec):
        """The fitted time model of this cell's setup (runs.time_model), or None."""
        from tokenjoule.runs.time_model import fit_time_model

        key = (spec.model, spec.engine, spec.mode, spec.decoding.strategy)
        if key not in self._models:
            recs = [] if self.store is None else self.store.find(
                status="ok", kind="offline", model=spec.model, engine=spec.engine, mode=spec.mode,
                decoding=spec.decoding.strategy)
            self._models[key] = fit_time_model(recs, self.gpu_name, cell_seconds) if recs else None
        return self._models[key]

    def probes_s(self, spec: RunSpec, model) -> float:
        """Largest-batch probes of an unresolved cell: one under predict, ~log2(B) + 6 searched."""
        import math

        n = 1 if self.max_batch_method == "predict" else math.log2(max(spec.batch_size, 2)) + 6
        probe = model.batch_s(spec.batch_size, spec.input_tokens + spec.output_tokens, 1)
        return n * probe

    def predict(self, spec: RunSpec, unresolved_max: bool = False) -> CellEstimate:
        est = self._from_history(spec, unresolved_max)
        if est is not None:
            return est
        model = self.time_model(spec)
        if model is not None:
            extra = 0.0
            if unresolved_max:
                b = model.max_batch(spec.input_tokens, spec.output_tokens, self.max_batch_cap) or GUESS_MAX_BATCH
                spec = spec.model_copy(update={"batch_size": b})
                extra = self.probes_s(spec, model)
            beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
            batch_s = model.batch_s(spec.batch_size, spec.input_tokens, spec.output_tokens, beams)
            prefill_s = model.batch_s(spec.batch_size, spec.input_tokens, 1, beams)
            return CellEstimate(cell_seconds(spec, batch_s, prefill_s) * model.wall_ratio + extra, "model")
        if unresolved_max:
            spec = spec.model_copy(update={"batch_size": GUESS_MAX_BATCH})
            probes_s = GUESS_PROBES * guess_batch_s(spec.model_copy(update={"output_tokens": 1}))
            return CellEstimate(cell_seconds(spec, guess_batch_s(spec)) + probes_s, "guess")
        return CellEstimate(cell_seconds(spec, guess_batch_s(spec)), "guess")

    def _from_history(self, spec: RunSpec, unresolved_max: bool) -> CellEstimate | None:
        if self.store is None:
            return None
        similar = self.store.find(
            status="ok", kind="offline", model=spec.model, engine=spec.engine, mode=spec.mode,
            decoding=spec.decoding.strategy, input_tokens=spec.input_tokens,
            output_tokens=spec.output_tokens, batch_size=None if unresolved_max else spec.batch_size,
        )
        if not similar:
            return None
        if unresolved_max:  # the largest stored batch is the best stand-in for "max"
            top = max(r.spec.get("batch_size") or 0 for r in similar)
            similar = [r for r in similar if (r.spec.get("batch_size") or 0) == top]
        # Wall times only of cells measured with this protocol (others ran other batches).
        walls = [r.metrics["sweep_wall_s"] for r in similar if r.metrics.get("sweep_wall_s")
                 and r.spec.get("protocol", "full") == spec.protocol]
        if walls:
            return CellEstimate(statistics.median(walls), "history")
        batches = [r.metrics["duration_s"] for r in similar if r.metrics.get("duration_s")]
        if not batches:
            return None
        prefills = [r.metrics["prefill_duration_s"] for r in similar if r.metrics.get("prefill_duration_s")]
        prefill = statistics.median(prefills) if prefills else None
        return CellEstimate(cell_seconds(spec, statistics.median(batches), prefill), "history")

    # -- calibration during a run ---------------------------------------------------------
    def observe(self, predicted_s: float, measured_s: float) -> None:
        self.predicted_s += predicted_s
        self.measured_s += measured_s

    @property
    def scale(self) -> float:
        """Measured / predicted over the cells measured so far (1 before the first)."""
        if self.predicted_s <= 0 or self.measured_s <= 0:
            return 1.0
        return self.measured_s / self.predicted_s

    def calibrated(self, predicted_s: float) -> float:
        return predicted_s * self.scale


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
