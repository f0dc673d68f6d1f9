"""The paper's case study (Table 4): binned totals of workloads on an unoptimized and an
optimized setup, next to the theoretical estimate under both conventions, and the savings.

    rows = case_study(store, model="llama-3.1-8b", workloads=CASE_STUDY_WORKLOADS)

Per workload and setup: the binned total (kWh, J per request; None while a bin is unmeasured,
with the measured part and the coverage), the theory under the tokenjoule and the paper
convention, the percentage above each and the multiple; per workload the savings of the
optimized over the unoptimized setup (only when both totals are complete). The store can be a
measured database or a shipped reference table (`tokenjoule.reference.reference_store`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tokenjoule.analysis.estimate import J_PER_KWH, binned_estimate
from tokenjoule.analysis.floors import compare_theory
from tokenjoule.analysis.rounding import DEFAULT_ROUNDING, FORMULAS
from tokenjoule.analysis.savings import Setup, parse_setup, savings_fraction
from tokenjoule.errors import TokenjouleError
from tokenjoule.workloads.binning import Bins, bin_workload

# The shipped Azure 2023 traces, and the paper-matched synthetic sets for what cannot ship.
CASE_STUDY_WORKLOADS = ("azure-conv-2023", "azure-code-2023", "paper:burstgpt", "paper:azure-conv",
                        "paper:azure-code")
BASELINE, OPTIMIZED = "hf:eager", "vllm:graphs"
# The paper's Table 4 (percent above theory, PyTorch / vLLM; savings), for side-by-side tables.
PAPER_TABLE4 = {"paper:burstgpt": (506.52, 63.75, 73.00), "paper:azure-code": (102.79, 26.59, 37.58),
                "paper:azure-conv": (490.23, 64.22, 72.18)}


@dataclass
class CaseRow:
    workload: str
    setup: str
    n_total: int
    n_kept: int
    coverage_share: float
    bins_occupied: int
    bins_missing: int
    total_energy_j: float | None
    total_energy_unrounded_j: float | None
    partial_energy_j: float
    energy_per_request_j: float | None
    theory_j: dict[str, float | None] = field(default_factory=dict)  # by convention
    above_theory_percent: dict[str, float | None] = field(default_factory=dict)
    multiple_of_theory: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_kwh(self) -> float | None:
        return None if self.total_energy_j is None else self.total_energy_j / J_PER_KWH

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_kwh": self.total_kwh}


@dataclass
class CaseStudy:
    model: str
    baseline: str
    optimized: str
    gpu: str | None
    rows: list[CaseRow]
    savings: dict[str, float | None]  # workload -> 1 - E_opt / E_base (None when incomplete)
    basis: str  # where the cells come from (a database path or a reference label)
    rounding: str = DEFAULT_ROUNDING
    # workload -> savings on the bins BOTH setups measured, for partial tables (where `savings`
    # is None): {"savings", "requests_share" (of the workload's kept requests), "bins"}
    common_savings: dict[str, dict[str, float | int] | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rounding": self.rounding, "rounding_formula": FORMULAS[self.rounding],
                "model": self.model, "baseline": self.baseline, "optimized": self.optimized, "gpu": self.gpu,
                "basis": self.basis, "rows": [r.to_dict() for r in self.rows], "savings": dict(self.savings),
                "common_savings": dict(self.common_savings),
                "paper_table4": {k: {"pytorch_above_theory_percent": v[0], "vllm_above_theory_percent": v[1],
                                     "savings_percent": v[2]} for k, v in PAPER_TABLE4.items()}}


def _row(workload, binned, store, model: str, setup: Setup, gpu: str | None, rounding: str) -> CaseRow:
    return _row_and_estimate(workload, binned, store, model, setup, gpu, rounding)[0]


def common_bin_savings(base: Any, opt: Any) -> dict[str, float | int] | None:
    """1 - E_opt / E_base over the bins both estimates measured, with the share of the requests
    those bins hold: the comparable part of two partial tables (None when they share no bin)."""
    b = {(r.input_tokens, r.output_tokens): r for r in base.rows}
    o = {(r.input_tokens, r.output_tokens): r for r in opt.rows}
    common = sorted(set(b) & set(o))
    e_base = sum(b[k].energy_j for k in common)
    if not common or e_base <= 0 or not base.n_kept:
        return None
    return {"savings": savings_fraction(e_base, sum(o[k].energy_j for k in common)),
            "requests_share": sum(b[k].n_requests for k in common) / base.n_kept, "bins": len(common)}


def _row_and_estimate(workload, binned, store, model: str, setup: Setup, gpu: str | None,
                      rounding: str) -> tuple[CaseRow, Any]:
    res = binned_estimate(binned, store, model=model, engine=setup.engine, mode=setup.mode, decoding=setup.decoding,
                          rounding=rounding)
    row = CaseRow(workload=workload.name, setup=f"{setup.engine}:{setup.mode}", n_total=res.n_total,
                  n_kept=res.n_kept, coverage_share=res.coverage_share, bins_occupied=len(binned.counts),
                  bins_missing=len(res.missing), total_energy_j=res.total_energy_j,
                  total_energy_unrounded_j=res.total_energy_unrounded_j, partial_energy_j=res.partial_energy_j,
                  energy_per_request_j=res.energy_per_request_j)
    if not res.complete:
        row.notes.append(f"{len(res.missing)} of {len(binned.counts)} bins unmeasured: no total, no theory")
        return row, res
    for convention in ("tokenjoule", "paper"):
        try:
            cmp = compare_theory(res, gpu=gpu, convention=convention)
        except TokenjouleError as exc:
            row.notes.append(f"theory ({convention}): {exc}")
            row.theory_j[convention] = row.above_theory_percent[convention] = None
            row.multiple_of_theory[convention] = None
            continue
        row.theory_j[convention] = cmp.theoretical_energy_j
        row.above_theory_percent[convention] = cmp.above_theory_percent
        row.multiple_of_theory[convention] = cmp.measured_multiple_of_theory
    return row, res


def case_study(store, *, model: str, workloads=CASE_STUDY_WORKLOADS, baseline: str = BASELINE,
               optimized: str = OPTIMIZED, gpu: str | None = None, bins: Bins | None = None,
               basis: str = "", n: int | None = None, seed: int = 0, rounding: str = DEFAULT_ROUNDING) -> CaseStudy:
    """The Table-4 view of every workload on both setups (see the module docstring)."""
    from tokenjoule.workloads.traces import resolve_workload

    base, opt = parse_setup(baseline), parse_setup(optimized)
    rows, savings, common = [], {}, {}
    for name in workloads:
        wl = resolve_workload(name, n=n, seed=seed)
        binned = bin_workload(wl, bins or Bins())
        (row_b, est_b), (row_o, est_o) = [_row_and_estimate(wl, binned, store, model, s, gpu, rounding)
                                          for s in (base, opt)]
        rows.extend([row_b, row_o])
        b, o = row_b.total_energy_j, row_o.total_energy_j
        savings[wl.name] = savings_fraction(b, o) if b and o else None
        common[wl.name] = None if savings[wl.name] is not None else common_bin_savings(est_b, est_o)
    return CaseStudy(model=model, baseline=baseline, optimized=optimized, gpu=gpu, rows=rows, savings=savings,
                     basis=basis, rounding=rounding, common_savings=common)
