"""Charging each bin at its requests' real lengths instead of its upper edges (`estimate --lengths mean`).

The paper's binned estimate measures one batch per bin at the bin's upper edges (I*, O*) and
charges every request of the bin as if it had those lengths. Real requests sit below the edges,
so the estimate overcharges: docs/RESULTS.md section 11 compares it with a direct replay of the
same requests (vLLM, H200) and gives the edge and real token counts of that sample.

`mean` keeps each bin's measured E_batch and rescales it by the energy model of analysis.fit,
fitted to the same table's cells, from the edges to the mean real lengths of the bin's requests:

    E_bin = N/B x E_batch x Ê(mean I, mean O, B) / Ê(I*, O*, B)

It is a model-based correction, so its totals are labelled as such: the measurement still
decides each bin's level, the fit only its slope between the edge and the mean (section 11 shows
how close it came to the replay). It needs the fit (at least six distinct cells of the
setup); otherwise it is refused with the fit's reason. It models offline continuous batching
(vLLM) best: a static-batching deployment pads each batch to its longest request, which lies
between the mean and the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenjoule.errors import TokenjouleError

LENGTH_MODES = ("edges", "mean")
DEFAULT_LENGTHS = "edges"


def check_lengths(mode: str) -> str:
    if mode not in LENGTH_MODES:
        from tokenjoule.errors import UnknownNameError

        raise UnknownNameError("lengths", mode, LENGTH_MODES)
    return mode


@dataclass
class LengthCorrection:
    """An estimate's bins rescaled from their edges to their requests' mean lengths."""

    workload: str
    engine: str
    mode: str
    edges_energy_j: float  # the measured bins' total at the edges, `paper` rounding (N/B)
    mean_energy_j: float  # the same bins at their requests' mean lengths (model-based)
    per_bin: list[dict[str, Any]] = field(default_factory=list)
    fit_note: str = ""
    label: str = ("bins rescaled from their edges to their requests' mean lengths by the fit of the table's "
                  "cells (a model-based correction, not a measurement of those lengths)")

    @property
    def change(self) -> float:
        """(mean - edges) / edges."""
        return self.mean_energy_j / self.edges_energy_j - 1 if self.edges_energy_j else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"lengths": "mean", "label": self.label, "edges_energy_j": self.edges_energy_j,
                "mean_energy_j": self.mean_energy_j, "change": self.change, "fit": self.fit_note,
                "per_bin": self.per_bin}


def at_mean_lengths(estimate, store, *, gpu_name: str | None = None) -> LengthCorrection:
    """Rescale the measured bins of `estimate` (a binned_estimate result that kept its BinnedWorkload)
    to their requests' mean real lengths. Raises TokenjouleError when the fit is refused."""
    from tokenjoule.analysis.fit import fit_cells_from_store, fit_energy_model

    binned = estimate.binned
    if binned is None or binned.real_input_tokens is None:
        raise TokenjouleError("--lengths mean needs the requests' own lengths (a binned trace), not bin counts only")
    cells, gpu = fit_cells_from_store(store, model=estimate.model, engine=estimate.engine, mode=estimate.mode,
                                      decoding=estimate.decoding, gpu_name=gpu_name)
    fit = fit_energy_model(cells, gpu_name=gpu, what=f"{estimate.model} {estimate.engine}/{estimate.mode}")
    edges_total = mean_total = 0.0
    per_bin = []
    for row in estimate.rows:
        mask = (binned.binned_input_tokens == row.input_tokens) & (binned.binned_output_tokens == row.output_tokens)
        if not mask.any():
            continue
        mean_in, mean_out = float(binned.real_input_tokens[mask].mean()), float(binned.real_output_tokens[mask].mean())
        at_edges = fit.predict_energy_j(row.input_tokens, row.output_tokens, row.batch_size)
        if at_edges <= 0:
            raise TokenjouleError(f"the fit predicts no energy at bin in{row.input_tokens}/out{row.output_tokens}; "
                                  "--lengths mean cannot rescale it")
        factor = fit.predict_energy_j(mean_in, mean_out, row.batch_size) / at_edges
        edges_j = row.n_requests / row.batch_size * row.energy_per_batch_j
        edges_total += edges_j
        mean_total += edges_j * factor
        per_bin.append({"bin": [row.input_tokens, row.output_tokens], "requests": row.n_requests,
                        "mean_input_tokens": mean_in, "mean_output_tokens": mean_out, "factor": factor,
                        "edges_energy_j": edges_j, "mean_energy_j": edges_j * factor})
    note = (f"fit {fit.n_cells} cells, LOO error median {100 * fit.loo_median_rel_error:.1f}%, "
            f"max {100 * fit.loo_max_rel_error:.1f}%")
    return LengthCorrection(estimate.workload, estimate.engine, estimate.mode, edges_total, mean_total, per_bin, note)
