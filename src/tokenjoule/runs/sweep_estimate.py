"""How long a sweep cell will take: from stored cells when the store has similar ones, else a
labelled guess. Used by `--dry-run`, the progress bar's ETA and `--budget-minutes`.

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
    one calibration batch, then `repeats` windows of at least `min_window_s`)."""
    window_s = max(spec.min_window_s, batch_s)
    total = (spec.warmup + 1) * batch_s + spec.repeats * window_s
    if spec.split_prefill and spec.output_tokens > 1:
        p = prefill_s if prefill_s is not None else batch_s / max(spec.output_tokens, 1)
        total += (min(spec.warmup, 1) + 1) * p + spec.repeats * max(spec.min_window_s, p)
    return total


def guess_batch_s(spec: RunSpec) -> float:
    beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
    prefill = GUESS_PREFILL_S_PER_TOKEN * spec.batch_size * beams * spec.input_tokens
    return prefill + GUESS_DECODE_S_PER_STEP * spec.output_tokens


class CellTimeEstimator:
    """Predict cell wall times; `observe` measured ones to calibrate the rest."""

    def __init__(self, store: Any | None):
        self.store = store
        self.predicted_s = 0.0
        self.measured_s = 0.0

    def predict(self, spec: RunSpec, unresolved_max: bool = False) -> CellEstimate:
        est = self._from_history(spec, unresolved_max)
        if est is not None:
            return est
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
        walls = [r.metrics["sweep_wall_s"] for r in similar if r.metrics.get("sweep_wall_s")]
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
