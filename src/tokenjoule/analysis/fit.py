"""Opt-in prediction of unmeasured bins from a small fit of the measured cells.

The binned estimate never totals a trace with unmeasured bins. With `predict_missing` the
missing bins get a *predicted* energy, kept apart from the measured ones and labelled as such
everywhere. The energy of one full batch of B requests of I input and O output tokens is

    E_batch(I, O, B) = a * B*I                (prefill compute, per input token)
                     + b * B*O                (compute per generated token)
                     + c * O                  (fixed cost per decode step: weights read, launches)
                     + d * B*O*(I + O/2)      (attention over the growing context)

fitted to the measured ok offline cells of the same model/engine/mode/decoding (and GPU) by
non-negative least squares on *relative* residuals (each row divided by its measured energy,
so a 1 J cell and a 10 kJ cell weigh the same). NNLS is exact subset enumeration: with four
terms, the NNLS optimum is the unconstrained least-squares solution on some subset of the
terms with all coefficients >= 0, so we try all 15 subsets and keep the best feasible one.

Batch size of a predicted bin: `predict_batch` if given, else the batch of the nearest measured
cell in log(I+O) (the largest batch measured for that cell's bin) scaled by
(I_near+O_near)/(I+O) (KV-cache memory scales with tokens per sequence), rounded down and
capped to [1, largest measured batch]; ties go to the smaller batch. Cells that a sweep measured
at the largest batch that fits (`metrics["max_batch_probes"]` present) are preferred as the
nearest cell: a cell measured at a fixed small batch says nothing about what fits.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from tokenjoule.analysis.estimate import BinEstimate, EstimateResult, _energy, bin_row
from tokenjoule.errors import TokenjouleError

TERMS: tuple[tuple[str, str, str], ...] = (
    ("a", "B*I", "prefill compute per input token"),
    ("b", "B*O", "compute per generated token"),
    ("c", "O", "fixed cost per decode step (weights read, kernel launches)"),
    ("d", "B*O*(I+O/2)", "attention over the growing context"),
)
N_TERMS = len(TERMS)
MIN_CELLS = N_TERMS + 2
MODEL_FORMULA = "E_batch = a*B*I + b*B*O + c*O + d*B*O*(I+O/2)"


@dataclass(frozen=True)
class FitCell:
    input_tokens: int
    output_tokens: int
    batch_size: int
    energy_j: float
    cell_id: int | None = None
    at_max_batch: bool = False  # measured at the largest batch a sweep's search found to fit


def features(input_tokens: float, output_tokens: float, batch_size: float) -> list[float]:
    i, o, b = float(input_tokens), float(output_tokens), float(batch_size)
    return [b * i, b * o, o, b * o * (i + o / 2.0)]


def nnls(a, y):
    """argmin ||a x - y|| subject to x >= 0, by enumerating the supports (few columns only)."""
    import numpy as np

    a, y = np.asarray(a, dtype=float), np.asarray(y, dtype=float)
    n = a.shape[1]
    best_x, best_r = np.zeros(n), float(np.dot(y, y))
    # Largest supports first: on exact data the full model wins and ties keep the richer fit.
    for size in range(n, 0, -1):
        for support in itertools.combinations(range(n), size):
            cols = list(support)
            sol, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if np.any(sol < 0):
                continue
            x = np.zeros(n)
            x[cols] = sol
            r = float(np.sum((a @ x - y) ** 2))
            if r < best_r * (1 - 1e-12) - 1e-300:
                best_x, best_r = x, r
    return best_x


def fit_coefficients(cells: list[FitCell]):
    """Non-negative coefficients (a, b, c, d) minimising the relative squared error."""
    import numpy as np

    a = np.array([features(c.input_tokens, c.output_tokens, c.batch_size) for c in cells])
    e = np.array([c.energy_j for c in cells])
    aw = a / e[:, None]  # relative residuals: (x.theta - E) / E
    # Column scaling for conditioning (the attention term is ~1e8 times the decode-step term).
    scale = np.linalg.norm(aw, axis=0)
    scale[scale == 0] = 1.0
    theta = nnls(aw / scale, np.ones(len(cells))) / scale
    return theta, int(np.linalg.matrix_rank(aw / scale))


@dataclass(frozen=True)
class EnergyFit:
    coefficients: tuple[float, ...]
    cells: tuple[FitCell, ...]
    loo_rel_errors: tuple[float, ...]
    rank: int
    gpu_name: str | None = None

    def predict_energy_j(self, input_tokens: float, output_tokens: float, batch_size: float) -> float:
        return float(sum(k * x for k, x in zip(self.coefficients, features(input_tokens, output_tokens, batch_size))))

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def loo_median_rel_error(self) -> float:
        import numpy as np

        return float(np.median(self.loo_rel_errors))

    @property
    def loo_max_rel_error(self) -> float:
        return float(max(self.loo_rel_errors))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": MODEL_FORMULA,
            "terms": [{"name": n, "feature": f, "meaning": m} for n, f, m in TERMS],
            "coefficients": {n: c for (n, _, _), c in zip(TERMS, self.coefficients)},
            "fit": "non-negative least squares on relative residuals",
            "loo_median_rel_error": self.loo_median_rel_error, "loo_max_rel_error": self.loo_max_rel_error,
            "n_cells": self.n_cells, "rank": self.rank, "gpu_name": self.gpu_name,
            "cells": [{"input_tokens": c.input_tokens, "output_tokens": c.output_tokens, "batch_size": c.batch_size,
                       "energy_j": c.energy_j, "cell_id": c.cell_id} for c in self.cells],
        }


def fit_energy_model(cells: list[FitCell], *, gpu_name: str | None = None, what: str = "this setup") -> EnergyFit:
    """Fit the model and its leave-one-out relative errors; refuses with < MIN_CELLS cells."""
    cells = list(cells)
    if len(cells) < MIN_CELLS:
        raise TokenjouleError(
            f"cannot predict unmeasured bins: the fit has {N_TERMS} terms and needs at least {MIN_CELLS} "
            f"measured cells (distinct input/output/batch) of {what}; found {len(cells)}. Measure more cells.")
    theta, rank = fit_coefficients(cells)
    if not any(t > 0 for t in theta):
        raise TokenjouleError(f"cannot predict unmeasured bins: the fit of {what} gave all-zero coefficients")
    loo = []
    for j, held_out in enumerate(cells):
        th, _ = fit_coefficients(cells[:j] + cells[j + 1:])
        pred = sum(k * x for k, x in zip(th, features(held_out.input_tokens, held_out.output_tokens,
                                                           held_out.batch_size)))
        loo.append(abs(float(pred) - held_out.energy_j) / held_out.energy_j)
    return EnergyFit(tuple(float(t) for t in theta), tuple(cells), tuple(loo), rank, gpu_name)


def fit_cells_from_store(store, *, model: str, engine: str, mode: str, decoding: str = "greedy",
                         gpu_name: str | None = None) -> tuple[list[FitCell], str | None]:
    """Distinct (input, output, batch) ok offline cells (newest row of each) and their GPU."""
    newest: dict[tuple[int, int, int], Any] = {}
    gpus: set[str] = set()
    for rec in store.find(status="ok", kind="offline", model=model, engine=engine, mode=mode,
                          decoding=decoding, gpu_name=gpu_name):
        try:
            key = (int(rec.spec["input_tokens"]), int(rec.spec["output_tokens"]), int(rec.spec["batch_size"]))
        except (KeyError, TypeError, ValueError):
            continue
        if _energy(rec) is None or min(key) < 1:
            continue
        gpu = rec.gpu_name
        if gpu:
            gpus.add(gpu)
        if key not in newest or (rec.id or 0) >= (newest[key].id or 0):
            newest[key] = rec
    if gpu_name is None and len(gpus) > 1:
        raise TokenjouleError(f"cannot predict unmeasured bins: the cells come from several GPUs "
                              f"({', '.join(sorted(gpus))}); pass --gpu-name to fit one")
    cells = [FitCell(i, o, b, _energy(rec), rec.id, "max_batch_probes" in rec.metrics)
             for (i, o, b), rec in sorted(newest.items())]
    return cells, gpu_name or (next(iter(gpus)) if gpus else None)


def predict_batch_size(cells: list[FitCell], input_tokens: int, output_tokens: int) -> tuple[int, str]:
    """Default batch for an unmeasured bin and a one-line reason (see the module docstring)."""
    if not cells:
        raise TokenjouleError("cannot choose a batch size: no measured cells")
    pool = [c for c in cells if c.at_max_batch] or list(cells)
    largest: dict[tuple[int, int], int] = {}
    for c in pool:
        largest[(c.input_tokens, c.output_tokens)] = max(largest.get((c.input_tokens, c.output_tokens), 0),
                                                         c.batch_size)
    cap = max(c.batch_size for c in cells)
    total = input_tokens + output_tokens
    options = []
    for (i, o), b in largest.items():
        scaled = min(cap, max(1, math.floor(b * (i + o) / total)))
        options.append((abs(math.log(i + o) - math.log(total)), scaled, i, o, b))
    dist, scaled, i, o, b = min(options)
    return scaled, f"nearest cell ({i}, {o}) at batch {b} x {i + o}/{total}, capped to [1, {cap}]"


@dataclass
class Prediction:
    """The fit plus how each predicted bin got its batch size (the `prediction` JSON object)."""

    fit: EnergyFit
    batch_policy: str
    bins: list[dict[str, Any]] = field(default_factory=list)

    def label(self) -> str:
        return (f"measured + predicted (fit, LOO error median {100 * self.fit.loo_median_rel_error:.1f}%, "
                f"max {100 * self.fit.loo_max_rel_error:.1f}%)")

    def to_dict(self) -> dict[str, Any]:
        return {**self.fit.to_dict(), "batch_policy": self.batch_policy, "bins": list(self.bins)}


def predict_missing(result: EstimateResult, store, *, predict_batch: int | None = None) -> EstimateResult:
    """A copy of `result` whose missing bins carry predicted rows (never mixed with measured rows)."""
    if predict_batch is not None and predict_batch < 1:
        raise TokenjouleError(f"--predict-batch must be a positive integer, got {predict_batch}")
    if not result.missing:
        return result
    gpu_filter = result.gpu_names[0] if len(result.gpu_names) == 1 else None
    what = f"{result.model} {result.engine}/{result.mode} {result.decoding}"
    cells, gpu = fit_cells_from_store(store, model=result.model, engine=result.engine, mode=result.mode,
                                      decoding=result.decoding, gpu_name=gpu_filter)
    fit = fit_energy_model(cells, gpu_name=gpu, what=what)
    policy = (f"batch {predict_batch} given with --predict-batch" if predict_batch is not None else
              "nearest measured cell in log(I+O) (preferring cells measured at their largest fitting batch), "
              "its batch x (I_near+O_near)/(I+O), capped to [1, largest measured]")
    pred = Prediction(fit, policy)
    rows, n_extrapolated = [], 0
    i_lo, i_hi = min(c.input_tokens for c in cells), max(c.input_tokens for c in cells)
    o_lo, o_hi = min(c.output_tokens for c in cells), max(c.output_tokens for c in cells)
    for m in result.missing:
        if predict_batch is not None:
            b, basis = predict_batch, "given"
        else:
            b, basis = predict_batch_size(cells, m.input_tokens, m.output_tokens)
        e = fit.predict_energy_j(m.input_tokens, m.output_tokens, b)
        if e <= 0:
            raise TokenjouleError(f"cannot predict bin ({m.input_tokens}, {m.output_tokens}): the fit gives {e} J")
        outside = not (i_lo <= m.input_tokens <= i_hi and o_lo <= m.output_tokens <= o_hi)
        n_extrapolated += outside
        rows.append(bin_row(
            input_tokens=m.input_tokens, output_tokens=m.output_tokens, n_requests=m.n_requests, batch_size=b,
            energy_per_batch_j=e, rounding=result.rounding, cell_id=None, gpu_name=gpu))
        pred.bins.append({"input_tokens": m.input_tokens, "output_tokens": m.output_tokens, "batch_size": b,
                          "batch_basis": basis, "energy_per_batch_j": e, "outside_measured_range": outside})
    notes = list(result.notes)
    notes.append(f"{len(rows)} unmeasured bin(s) predicted by a fit of {fit.n_cells} measured cells "
                 f"({MODEL_FORMULA}); predicted energy is not a measurement")
    if n_extrapolated:
        notes.append(f"{n_extrapolated} predicted bin(s) lie outside the measured input {i_lo}-{i_hi} / "
                     f"output {o_lo}-{o_hi} token ranges (extrapolated)")
    if fit.rank < N_TERMS:
        notes.append(f"the measured cells determine only {fit.rank} of the fit's {N_TERMS} terms; "
                     "predictions away from them are poorly constrained")
    return replace(result, predicted_rows=rows, prediction=pred, notes=notes)
