"""A time model of one setup on one GPU, fitted to the cells already stored: what `--dry-run`
and `--budget-minutes` predict for cells that were never measured.

Three parts, each from stored ok offline cells of the same model, engine, mode and decoding on
one GPU (the named one, else the GPU most of them ran on):

- batch latency: duration_s = a x prefill tokens + b x decode steps + c x decode tokens + d
  (prefill tokens = B x I, decode steps = O, decode tokens = B x O; non-negative least squares);
- wall overhead: the median of (sweep_wall_s - their largest-batch probes) / (what the protocol's
  batches alone take) over cells that recorded their wall time: Python, meter and first-call
  overheads that the batch latency does not see (this is what left the old estimate 3-4x low on a
  CPU); probes are predicted separately, by the method (one when predicted, ~log2(B) + 6 searched);
- token budget: the median of B x (I + O) over cells measured at their largest batch, the memory
  model's constant (models.memory: the largest batch is free bytes / ((I + O) x bytes per token)),
  which predicts the batch an unresolved `batch: max` cell will run at.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from tokenjoule.spec import RunSpec

MIN_CELLS = 3  # fewer stored cells than this fit nothing (the guess is used, and says so)


def _beams(spec: RunSpec) -> int:
    return spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1


def features(batch_size: int, input_tokens: int, output_tokens: int, beams: int = 1) -> list[float]:
    rows = batch_size * beams
    return [float(rows * input_tokens), float(output_tokens), float(rows * output_tokens), 1.0]


@dataclass(frozen=True)
class TimeModel:
    coefficients: tuple[float, float, float, float]
    n_cells: int
    gpu_name: str | None
    wall_ratio: float = 1.0
    token_budget: float | None = None  # median B x (I + O) of cells measured at their largest batch

    def batch_s(self, batch_size: int, input_tokens: int, output_tokens: int, beams: int = 1) -> float:
        x = features(batch_size, input_tokens, output_tokens, beams)
        return max(1e-6, sum(c * v for c, v in zip(self.coefficients, x)))

    def max_batch(self, input_tokens: int, output_tokens: int, cap: int) -> int | None:
        if self.token_budget is None:
            return None
        return max(1, min(cap, int(self.token_budget // (input_tokens + output_tokens))))

    def label(self) -> str:
        where = f" on {self.gpu_name}" if self.gpu_name else ""
        return f"model (fit of {self.n_cells} stored cells{where}, wall x{self.wall_ratio:.2f})"


def _nonnegative_lstsq(x, y):
    """Least squares with every coefficient >= 0: refit without the terms that come out negative
    (a small active-set loop; 4 terms, so at most 4 refits). numpy only."""
    import numpy as np

    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active = [a for a, c in zip(active, sol) if c > 0] if (sol > 0).any() else []
    return coef


def _gpu(rec: Any) -> str | None:
    names = (rec.provenance or {}).get("gpu_names") or []
    return names[0] if names else None


def fit_time_model(records: list, gpu_name: str | None,
                   protocol_seconds: Callable[[RunSpec, float, float | None], float]) -> TimeModel | None:
    """Fit the model to `records` (ok offline cells of one setup); None with too few cells."""
    import numpy as np

    usable = []
    for rec in records:
        try:
            spec = RunSpec(**{k: v for k, v in rec.spec.items() if k in RunSpec.model_fields})
        except Exception:  # noqa: BLE001 - a stored spec this version cannot read is skipped
            continue
        if isinstance(rec.metrics.get("duration_s"), (int, float)) and rec.metrics["duration_s"] > 0:
            usable.append((rec, spec))
    if gpu_name is None and usable:
        counts = Counter(_gpu(r) for r, _ in usable)
        gpu_name = counts.most_common(1)[0][0]
    usable = [(r, s) for r, s in usable if _gpu(r) == gpu_name]
    if len(usable) < MIN_CELLS:
        return None
    x = np.array([features(s.batch_size, s.input_tokens, s.output_tokens, _beams(s)) for _, s in usable])
    y = np.array([float(r.metrics["duration_s"]) for r, _ in usable])
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    coef = tuple(float(c) for c in _nonnegative_lstsq(x / scale, y) / scale)
    model = TimeModel(coef, len(usable), gpu_name)  # type: ignore[arg-type]
    ratios = []
    for rec, spec in usable:
        wall = rec.metrics.get("sweep_wall_s")
        # A largest-batch search's probes are in the wall time; they are predicted apart
        # (CellTimeEstimator.probes_s), so they are taken out here: one probe = a 1-token pass
        # over B x (I + O) tokens.
        probes = rec.metrics.get("max_batch_probes") or 0
        if isinstance(wall, (int, float)) and probes:
            wall -= probes * model.batch_s(spec.batch_size, spec.input_tokens + spec.output_tokens, 1, _beams(spec))
        if isinstance(wall, (int, float)) and wall > 0:
            protocol_s = protocol_seconds(spec, float(rec.metrics["duration_s"]),
                                          rec.metrics.get("prefill_duration_s"))
            if protocol_s > 0:
                ratios.append(wall / protocol_s)
    budgets = [s.batch_size * (s.input_tokens + s.output_tokens) for r, s in usable
               if r.metrics.get("max_batch_probes") is not None or r.metrics.get("max_batch_method")]
    return TimeModel(coef, len(usable), gpu_name,  # type: ignore[arg-type]
                     wall_ratio=max(1.0, statistics.median(ratios)) if ratios else model.wall_ratio,
                     token_budget=float(statistics.median(budgets)) if budgets else None)
