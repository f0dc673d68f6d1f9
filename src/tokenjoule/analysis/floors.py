"""Measured-binned energy vs the theoretical estimate and the roofline floors (paper Table 4).

- theoretical_energy_j: E = TDP / peak FLOP/s x FLOPs of the kept requests at their *real*
  lengths (the FLOPs at the binned lengths are reported too);
- roofline floor: for each bin, the batches the measured total charges under its rounding
  (`floor_batches`: N/B of B by default), each at least `roofline_batch(...).total_s` long; energy floor = that time x TDP, and x the measured
  active power of the bin's cell (avg_power_w - idle_power_w), None with a reason when the cell
  lacks either number.
- theory_percent_of_measured = 100 x theory / measured; measured_multiple_of_theory = measured / theory.

Two conventions for the theoretical estimate (`convention`, labelled in every output):
- "tokenjoule" (default): the card's *dense* peak FLOP/s, FLOPs at each request's real lengths;
- "paper" (`--paper-constants`): the sparsity-enabled datasheet peak the paper divided by
  (309.7 TFLOP/s bf16 for the A6000; 2 x dense elsewhere) and FLOPs at the bin edges, as the
  paper's Table 4 computes it. It is about half of the tokenjoule value at the same FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tokenjoule.analysis import theory
from tokenjoule.analysis.estimate import EstimateResult
from tokenjoule.analysis.gpus import GPUSpec, get_gpu
from tokenjoule.errors import TokenjouleError

CONVENTIONS = {
    "tokenjoule": "dense peak FLOP/s, FLOPs at each request's real lengths",
    "paper": "sparsity-enabled peak FLOP/s (the paper's constant), FLOPs at the bin edges",
}

_PRECISION_OF_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "auto": "bf16", None: "bf16"}


@dataclass
class TheoryComparison:
    workload: str
    model: str
    engine: str
    mode: str
    gpu: str
    precision: str
    measured_energy_j: float
    flops: float
    flops_binned: float
    theoretical_energy_j: float
    floor_time_s: float
    floor_energy_tdp_j: float
    floor_energy_active_j: float | None
    floor_notes: list[str] = field(default_factory=list)
    convention: str = "tokenjoule"
    peak_flops_s: float | None = None  # the FLOP/s the theory divided by

    @property
    def convention_label(self) -> str:
        return f"{self.convention}: {CONVENTIONS[self.convention]}"

    @property
    def above_theory_percent(self) -> float:
        """The paper's Table-4 number: 100 x (measured / theory - 1)."""
        return 100.0 * (self.measured_energy_j / self.theoretical_energy_j - 1.0)

    @property
    def theory_percent_of_measured(self) -> float:
        return 100.0 * self.theoretical_energy_j / self.measured_energy_j

    @property
    def measured_multiple_of_theory(self) -> float:
        return self.measured_energy_j / self.theoretical_energy_j

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "theory_percent_of_measured": self.theory_percent_of_measured,
                "measured_multiple_of_theory": self.measured_multiple_of_theory,
                "above_theory_percent": self.above_theory_percent, "convention_label": self.convention_label}


def default_gpu(result: EstimateResult) -> GPUSpec:
    """The GPU named in the measured cells' provenance (it must be one card, in the table)."""
    if not result.gpu_names:
        raise TokenjouleError("the measured cells name no GPU (CPU runs?); choose a table row with --gpu NAME")
    if len(result.gpu_names) > 1:
        raise TokenjouleError(f"cells come from several GPUs ({', '.join(result.gpu_names)}); choose one with --gpu")
    return get_gpu(result.gpu_names[0])


def theory_energy_j(flops_real: float, flops_binned: float, card: GPUSpec, precision: str,
                    convention: str = "tokenjoule") -> tuple[float, float]:
    """(theoretical energy J, peak FLOP/s used) under a convention (see the module docstring)."""
    if convention not in CONVENTIONS:
        from tokenjoule.errors import UnknownNameError

        raise UnknownNameError("theory convention", convention, list(CONVENTIONS))
    if convention == "paper":
        peak = card.sparse_peak_flops(precision)
        return card.tdp_w / peak * flops_binned, peak
    peak = card.peak_flops(precision)
    return card.tdp_w / peak * flops_real, peak


def floor_batches(n_requests: int, batch_size: int, rounding: str) -> list[tuple[float, int]]:
    """(how many, of what size) batches the floor counts for a bin, as the measured total charges
    them (analysis.rounding): N/B batches of B (paper), ceil(N/B) of B (ceil), or floor(N/B) of B
    plus one of N mod B (measured). The floor then bounds the same work the total charges."""
    if rounding == "ceil":
        return [(float(math.ceil(n_requests / batch_size)), batch_size)]
    if rounding == "measured":
        full, rest = divmod(n_requests, batch_size)
        return [(float(full), batch_size)] + ([(1.0, rest)] if rest else [])
    return [(n_requests / batch_size, batch_size)]


def compare_theory(result: EstimateResult, *, gpu: GPUSpec | str | None = None, precision: str | None = None,
                   arch=None, convention: str = "tokenjoule") -> TheoryComparison:
    """Table-4 view of one complete estimate under a theory convention ("tokenjoule" or "paper")."""
    if not result.complete:
        cells = ", ".join(f"in{m.input_tokens}/out{m.output_tokens}" for m in result.missing)
        raise TokenjouleError(f"cannot compare with theory: unmeasured bins {cells}")
    if result.binned is None:
        raise TokenjouleError("the estimate carries no binned workload to count FLOPs on")
    card = get_gpu(gpu) if isinstance(gpu, str) else (gpu or default_gpu(result))
    dtypes = {r.dtype for r in result.rows}
    prec = precision or _PRECISION_OF_DTYPE.get(next(iter(dtypes)) if len(dtypes) == 1 else None, "bf16")
    dtype_bytes = 4 if prec in ("fp32", "tf32") else (1 if prec == "fp8" else 2)
    arch = arch or theory.architecture_for(result.model)
    b = result.binned
    real = theory.workload_flops(arch, b.real_input_tokens, b.real_output_tokens)
    binned = theory.workload_flops(arch, b.binned_input_tokens, b.binned_output_tokens)
    energy_theory, peak = theory_energy_j(real.total_flops, binned.total_flops, card, prec, convention)
    floor_s, floor_active, notes = 0.0, 0.0, []
    for r in result.rows:
        t = sum(count * theory.roofline_batch(arch, card, r.input_tokens, r.output_tokens, size, prec,
                                              dtype_bytes).total_s
                for count, size in floor_batches(r.n_requests, r.batch_size, result.rounding))
        floor_s += t
        if floor_active is not None:
            if r.avg_power_w is None or r.idle_power_w is None:
                floor_active = None
                notes.append(f"cell {r.cell_id} (in{r.input_tokens}/out{r.output_tokens}) lacks "
                             "avg_power_w or idle_power_w: no active-power floor")
            else:
                floor_active += t * max(r.avg_power_w - r.idle_power_w, 0.0)
    return TheoryComparison(
        workload=result.workload, model=result.model, engine=result.engine, mode=result.mode, gpu=card.name,
        precision=prec, measured_energy_j=float(result.total_energy_j), flops=real.total_flops,
        flops_binned=binned.total_flops, theoretical_energy_j=energy_theory, floor_time_s=floor_s,
        floor_energy_tdp_j=floor_s * card.tdp_w, floor_energy_active_j=floor_active, floor_notes=notes,
        convention=convention, peak_flops_s=peak,
    )
