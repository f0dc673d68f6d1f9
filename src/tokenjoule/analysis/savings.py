"""Energy saved by an optimized setup over a baseline on the same workload.

saved = 1 - E_optimized / E_baseline, both binned estimates of the same workload and model
(the paper's 73% headline: 1 - 1.6375 / 6.0652 for BurstGPT on an RTX A6000).
A setup is written "engine:mode[:decoding]", e.g. "hf:eager" or "vllm:graphs:greedy".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenjoule.analysis.estimate import EstimateResult, binned_estimate
from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads.binning import Bins, bin_workload


@dataclass(frozen=True)
class Setup:
    engine: str
    mode: str
    decoding: str = "greedy"

    def __str__(self) -> str:
        return f"{self.engine}:{self.mode}:{self.decoding}"


def parse_setup(text: str) -> Setup:
    from tokenjoule.spec import DECODING_STRATEGIES, ENGINE_MODES

    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise TokenjouleError(f"setup must be engine:mode[:decoding] (e.g. hf:eager, vllm:graphs), got {text!r}")
    engine, mode = parts[0], parts[1]
    decoding = parts[2] if len(parts) == 3 else "greedy"
    if engine not in ENGINE_MODES:
        raise UnknownNameError("engine", engine, list(ENGINE_MODES))
    if mode not in ENGINE_MODES[engine]:
        raise UnknownNameError(f"mode for engine {engine}", mode, ENGINE_MODES[engine])
    if decoding not in DECODING_STRATEGIES:
        raise UnknownNameError("decoding", decoding, DECODING_STRATEGIES)
    return Setup(engine, mode, decoding)


def savings_fraction(baseline_j: float, optimized_j: float) -> float:
    """1 - optimized / baseline (negative when the 'optimized' setup uses more energy)."""
    if not baseline_j > 0:
        raise TokenjouleError(f"baseline energy must be positive, got {baseline_j}")
    if optimized_j < 0:
        raise TokenjouleError(f"optimized energy must be non-negative, got {optimized_j}")
    return 1.0 - optimized_j / baseline_j


@dataclass
class SavingsResult:
    baseline: EstimateResult
    optimized: EstimateResult

    @property
    def complete(self) -> bool:
        return self.baseline.complete and self.optimized.complete

    @property
    def saved_fraction(self) -> float | None:
        if not self.complete:
            return None
        return savings_fraction(self.baseline.total_energy_j, self.optimized.total_energy_j)

    @property
    def saved_j(self) -> float | None:
        if not self.complete:
            return None
        return self.baseline.total_energy_j - self.optimized.total_energy_j

    def to_dict(self) -> dict[str, Any]:
        frac = self.saved_fraction
        return {"baseline": self.baseline.to_dict(), "optimized": self.optimized.to_dict(),
                "complete": self.complete, "saved_fraction": frac,
                "saved_percent": None if frac is None else 100 * frac, "saved_j": self.saved_j}


def compare_setups(workload, store, *, model: str, baseline: Setup | str, optimized: Setup | str,
                   bins: Bins | None = None, overflow: str = "drop", gpu_name: str | None = None,
                   rounding: str = "paper") -> SavingsResult:
    """Binned estimates of both setups on the same binned workload."""
    base = parse_setup(baseline) if isinstance(baseline, str) else baseline
    opt = parse_setup(optimized) if isinstance(optimized, str) else optimized
    binned = bin_workload(workload, bins or Bins(), overflow)
    results = [binned_estimate(binned, store, model=model, engine=s.engine, mode=s.mode, decoding=s.decoding,
                               gpu_name=gpu_name, rounding=rounding) for s in (base, opt)]
    return SavingsResult(*results)
