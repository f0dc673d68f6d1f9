"""The binned energy estimate of a workload from measured cells (the paper's method).

    E_total = sum over bins b of charge(N_b, B_b, E_batch(b))   under a rounding (analysis.rounding):
      paper    (default) N_b / B_b x E_batch(b)                 (the paper's formula as written)
      ceil     ceil(N_b / B_b) x E_batch(b)                      (partly filled batches charged as full)
      measured floor(N_b / B_b) x E_batch(b) + E(N_b mod B_b)     (remainder batch at its own energy)

N_b: requests of the workload in bin b; B_b: the batch size of the cell measured for that bin;
E_batch(b): the measured energy of ONE full batch of B_b requests (`metrics["energy_j"]`).
`total_energy_j` follows the chosen rounding; `total_energy_unrounded_j` is always the N/B form
and `total_energy_ceil_j` always the ceil form, so every output can be compared across roundings.

Which cell answers a bin is analysis.selection's rule, shared with `savings`, `recommend` and
the report: the setup's offline ok cells of the bin's lengths, newest row per spec, measured
before estimated, the batch size with the least energy for the bin's requests, newest on a
tie (`SELECTION_RULE`, in every result's notes). A bin with no measurement is listed in `missing`; then the totals are None
(never a guess) and `partial_energy_j` holds the sum over the bins that were measured.

Opt-in: `tokenjoule.analysis.fit.predict_missing` adds *predicted* rows for the missing bins
(`predicted_rows`, `prediction`); then the total is measured + predicted, and both parts are
reported separately. Without it nothing here changes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tokenjoule.analysis.rounding import DEFAULT_ROUNDING, FORMULAS, charge_bin, check_rounding
from tokenjoule.analysis.selection import (
    SELECTION_RULE,
    bin_cost,
    cell_energy_j,
    choose_cell,
    energy_by_batch,
    gpus_of,
    setup_cells,
)
from tokenjoule.workloads.binning import BinnedWorkload, Bins, bin_workload
from tokenjoule.workloads.request import Workload

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class BinEstimate:
    input_tokens: int
    output_tokens: int
    n_requests: int
    batch_size: int
    batches_rounded: int
    energy_per_batch_j: float
    energy_j: float
    energy_unrounded_j: float
    cell_id: int | None
    duration_per_batch_s: float | None = None
    avg_power_w: float | None = None
    idle_power_w: float | None = None
    gpu_name: str | None = None
    dtype: str | None = None
    batch_sizes_available: tuple[int, ...] = ()
    # How the partly filled last batch was charged (analysis.rounding); energy_j follows `rounding`.
    rounding: str = DEFAULT_ROUNDING
    energy_ceil_j: float | None = None
    remainder_requests: int = 0
    partial_batch_energy_j: float = 0.0
    remainder_basis: str = ""
    remainder_predicted: bool = False
    remainder_cell_id: int | None = None


def bin_row(*, input_tokens: int, output_tokens: int, n_requests: int, batch_size: int, energy_per_batch_j: float,
            rounding: str = DEFAULT_ROUNDING, by_batch: dict | None = None, **extra) -> BinEstimate:
    """One bin's row under `rounding` (the per-bin arithmetic of analysis.rounding)."""
    charge = charge_bin(n_requests, batch_size, energy_per_batch_j, rounding, by_batch)
    return BinEstimate(
        input_tokens=input_tokens, output_tokens=output_tokens, n_requests=n_requests, batch_size=batch_size,
        batches_rounded=math.ceil(n_requests / batch_size), energy_per_batch_j=energy_per_batch_j,
        energy_j=charge.energy_j, energy_unrounded_j=n_requests / batch_size * energy_per_batch_j,
        energy_ceil_j=math.ceil(n_requests / batch_size) * energy_per_batch_j, rounding=rounding,
        remainder_requests=charge.remainder_requests, partial_batch_energy_j=charge.partial_energy_j,
        remainder_basis=charge.remainder_basis, remainder_predicted=charge.remainder_predicted,
        remainder_cell_id=charge.remainder_cell_id, **extra)


@dataclass(frozen=True)
class MissingCell:
    input_tokens: int
    output_tokens: int
    n_requests: int


@dataclass
class EstimateResult:
    workload: str
    model: str
    engine: str
    mode: str
    decoding: str
    bins: Bins
    overflow: str
    rows: list[BinEstimate]
    missing: list[MissingCell]
    n_total: int
    n_kept: int
    n_dropped: int
    dropped_reasons: dict[str, int]
    n_clipped: int = 0
    gpu_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    binned: BinnedWorkload | None = None
    batch_policy: str = SELECTION_RULE  # which cell answers each bin (analysis.selection)
    # Opt-in predictions for the missing bins (tokenjoule.analysis.fit); never part of `rows`.
    predicted_rows: list[BinEstimate] = field(default_factory=list)
    prediction: Any = None
    rounding: str = DEFAULT_ROUNDING

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def n_covered(self) -> int:
        return sum(r.n_requests for r in self.rows)

    @property
    def coverage_share(self) -> float:
        """Share of the workload's requests whose bin was measured (dropped requests uncovered)."""
        return self.n_covered / self.n_total if self.n_total else 0.0

    @property
    def partial_energy_j(self) -> float:
        return sum(r.energy_j for r in self.rows)

    @property
    def partial_energy_unrounded_j(self) -> float:
        return sum(r.energy_unrounded_j for r in self.rows)

    @property
    def predicted_complete(self) -> bool:
        """Every missing bin has a predicted row (only after the opt-in prediction)."""
        got = {(r.input_tokens, r.output_tokens) for r in self.predicted_rows}
        return self.prediction is not None and all((m.input_tokens, m.output_tokens) in got for m in self.missing)

    @property
    def measured_energy_j(self) -> float:
        return self.partial_energy_j

    @property
    def predicted_energy_j(self) -> float:
        return sum(r.energy_j for r in self.predicted_rows)

    @property
    def total_energy_j(self) -> float | None:
        if self.complete:
            return self.partial_energy_j
        return self.partial_energy_j + self.predicted_energy_j if self.predicted_complete else None

    @property
    def total_energy_unrounded_j(self) -> float | None:
        if self.complete:
            return self.partial_energy_unrounded_j
        if self.predicted_complete:
            return self.partial_energy_unrounded_j + sum(r.energy_unrounded_j for r in self.predicted_rows)
        return None

    @property
    def total_energy_ceil_j(self) -> float | None:
        if self.complete:
            return sum(r.energy_ceil_j for r in self.rows)
        if self.predicted_complete:
            return sum(r.energy_ceil_j for r in self.rows) + sum(r.energy_ceil_j for r in self.predicted_rows)
        return None

    @property
    def partial_batches_energy_j(self) -> float:
        """Energy charged to partly filled batches, over every bin with a row (measured + predicted)."""
        return sum(r.partial_batch_energy_j for r in self.rows + self.predicted_rows)

    @property
    def partial_share(self) -> float | None:
        """Share of the total charged to partly filled batches (None without a total)."""
        total = self.total_energy_j
        return self.partial_batches_energy_j / total if total else None

    @property
    def n_remainders_predicted(self) -> int:
        return sum(r.remainder_predicted for r in self.rows)

    @property
    def rounding_formula(self) -> str:
        return FORMULAS[self.rounding]

    @property
    def total_kwh(self) -> float | None:
        return None if self.total_energy_j is None else self.total_energy_j / J_PER_KWH

    @property
    def energy_per_request_j(self) -> float | None:
        """Total energy / requests kept by binning (dropped requests are not in the total)."""
        if self.total_energy_j is None or not self.n_kept:
            return None
        return self.total_energy_j / self.n_kept

    def missing_cells(self, batch: int | str = "max") -> list[dict[str, Any]]:
        """The missing bins as sweep cells (see tokenjoule.workloads.sweep_config)."""
        return [
            {"model": self.model, "engine": self.engine, "mode": self.mode, "decoding": self.decoding,
             "input_tokens": m.input_tokens, "output_tokens": m.output_tokens, "batch_size": batch}
            for m in self.missing
        ]

    def remainder_cells(self) -> list[dict[str, Any]]:
        """Sweep cells at batch N mod B for the bins whose partly filled batch was PREDICTED
        (rounding `measured`): measuring them makes those remainders measured."""
        return [
            {"model": self.model, "engine": self.engine, "mode": self.mode, "decoding": self.decoding,
             "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "batch_size": r.remainder_requests}
            for r in self.rows if r.remainder_predicted
        ]

    def to_dict(self) -> dict[str, Any]:
        d = self._base_dict()
        if self.prediction is None:
            return d
        d["rows"] = ([{**row, "predicted": False} for row in d["rows"]] +
                     [{**asdict(r), "batch_sizes_available": [], "predicted": True} for r in self.predicted_rows])
        d.update(measured_energy_j=self.measured_energy_j, predicted_energy_j=self.predicted_energy_j,
                 total_basis=self.prediction.label() if not self.complete else "measured",
                 prediction=self.prediction.to_dict())
        return d

    def _base_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "model": self.model, "engine": self.engine, "mode": self.mode,
            "decoding": self.decoding, "bins": self.bins.to_dict(), "overflow": self.overflow,
            "batch_policy": self.batch_policy,
            "rows": [{**asdict(r), "batch_sizes_available": list(r.batch_sizes_available)} for r in self.rows],
            "missing": [asdict(m) for m in self.missing], "complete": self.complete,
            "n_total": self.n_total, "n_kept": self.n_kept, "n_dropped": self.n_dropped,
            "n_clipped": self.n_clipped, "dropped_reasons": dict(self.dropped_reasons),
            "n_covered": self.n_covered, "coverage_share": self.coverage_share,
            "total_energy_j": self.total_energy_j, "total_energy_unrounded_j": self.total_energy_unrounded_j,
            "total_kwh": self.total_kwh, "energy_per_request_j": self.energy_per_request_j,
            "partial_energy_j": self.partial_energy_j, "partial_energy_unrounded_j": self.partial_energy_unrounded_j,
            "rounding": self.rounding, "rounding_formula": self.rounding_formula,
            "total_energy_ceil_j": self.total_energy_ceil_j,
            "partial_batches_energy_j": self.partial_batches_energy_j, "partial_share": self.partial_share,
            "remainders_predicted": self.n_remainders_predicted, "remainder_cells": self.remainder_cells(),
            "gpu_names": list(self.gpu_names), "notes": list(self.notes),
        }


def _energy(rec) -> float | None:
    return cell_energy_j(rec)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def select_cells(store, *, model: str, engine: str, mode: str, decoding: str = "greedy",
                 gpu_name: str | None = None) -> tuple[dict[tuple[int, int], list[Any]], list[str]]:
    """(input, output) -> the setup's candidate cells (analysis.selection), plus notes on what
    was left out. Which one answers a bin depends on its request count: `choose_cell`."""
    by_bin, unusable = setup_cells(store, model=model, engine=engine, mode=mode, decoding=decoding,
                                   gpu_name=gpu_name)
    notes = [f"{unusable} stored cell(s) ignored: no positive energy_j or no lengths/batch size"] if unusable else []
    return by_bin, notes


def binned_estimate(workload_or_binned: Workload | BinnedWorkload, store, *, model: str, engine: str,
                    mode: str, decoding: str = "greedy", bins: Bins | None = None, overflow: str = "drop",
                    gpu_name: str | None = None, rounding: str = DEFAULT_ROUNDING) -> EstimateResult:
    """Estimate a workload's energy from the store's measured cells (see the module docstring).

    A `BinnedWorkload` is used as is (then `bins`/`overflow` must not differ from its own)."""
    if isinstance(workload_or_binned, BinnedWorkload):
        binned = workload_or_binned
    else:
        binned = bin_workload(workload_or_binned, bins or Bins(), overflow)
    check_rounding(rounding)
    chosen, notes = select_cells(store, model=model, engine=engine, mode=mode, decoding=decoding, gpu_name=gpu_name)
    rows, missing, gpus = [], [], []
    estimated_ids, flagged_ids = [], []
    for (i, o), n in sorted(binned.counts.items()):
        rec = choose_cell(chosen.get((i, o), []), n, rounding=rounding)
        if rec is None:
            missing.append(MissingCell(i, o, n))
            continue
        sizes = tuple(sorted({int(r.batch_size) for r in chosen[(i, o)]}))
        flags = set(rec.flags)
        if rec.is_estimate:
            estimated_ids.append(rec.id)
        if flags - {"estimate"}:
            flagged_ids.append(rec.id)
        cost = bin_cost(rec, n, rounding, energy_by_batch(chosen[(i, o)]))
        b, e, batches = cost.batch_size, cell_energy_j(rec), cost.batches
        gpu = rec.gpu_name
        if gpu and gpu not in gpus:
            gpus.append(gpu)
        rows.append(BinEstimate(
            input_tokens=i, output_tokens=o, n_requests=n, batch_size=b, batches_rounded=batches,
            energy_per_batch_j=e, energy_j=cost.energy_j, energy_unrounded_j=cost.energy_unrounded_j, cell_id=rec.id,
            rounding=rounding, energy_ceil_j=cost.energy_ceil_j, remainder_requests=cost.remainder_requests,
            partial_batch_energy_j=cost.partial_energy_j, remainder_basis=cost.remainder_basis,
            remainder_predicted=cost.remainder_predicted, remainder_cell_id=cost.remainder_cell_id,
            duration_per_batch_s=_num(rec.metrics.get("duration_s")),
            avg_power_w=_num(rec.metrics.get("avg_power_w")), idle_power_w=_num(rec.metrics.get("idle_power_w")),
            gpu_name=gpu, dtype=rec.spec.get("dtype"), batch_sizes_available=sizes,
        ))
    if any(len(r.batch_sizes_available) > 1 for r in rows):
        notes.append("several batch sizes stored for some bins; the one with the least energy for the bin's "
                     "requests was used")
    n_pred = sum(r.remainder_predicted for r in rows)
    if n_pred:
        notes.append(f"{n_pred} bin(s) charge their partly filled batch a PREDICTED energy (no cell at that "
                     "batch size; see remainder_basis); measure them with `workload bins --remainders`")
    gpu_counts = sorted({gpus_of(r) for recs in chosen.values() for r in recs})
    if len(gpu_counts) > 1:
        notes.append(f"this setup has cells on different GPU counts ({', '.join(map(str, gpu_counts))}); each bin "
                     "uses the cheapest (`recommend` compares them as separate configurations)")
    if len(gpus) > 1:
        notes.append(f"cells come from several GPUs ({', '.join(gpus)}); pass gpu_name to use one")
    if estimated_ids:
        notes.append(f"{len(estimated_ids)} bin(s) use cells whose energy is an ESTIMATE (no energy sensor: "
                     f"CPU time x a per-core power), not a measurement: cells {_ids(estimated_ids)}")
    if flagged_ids:
        notes.append(f"{len(flagged_ids)} bin(s) use cells the meter flagged (see `tokenjoule results show ID`): "
                     f"cells {_ids(flagged_ids)}")
    return EstimateResult(
        workload=binned.name, model=model, engine=engine, mode=mode, decoding=decoding, bins=binned.bins,
        overflow=binned.overflow, rows=rows, missing=missing, n_total=binned.n_total, n_kept=binned.n_kept,
        n_dropped=binned.n_dropped, dropped_reasons=dict(binned.dropped_reasons), n_clipped=binned.n_clipped,
        gpu_names=gpus, notes=notes, binned=binned, rounding=rounding,
    )


def _ids(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:10])
    return shown + (f" (+{len(ids) - 10} more)" if len(ids) > 10 else "")
