"""Summary statistics of a workload: lengths, timing, burstiness, length correlation.

Conventions (so numbers can be checked by hand):
- std is the population standard deviation (ddof=0); percentiles interpolate linearly
  (numpy's default), so the median of [1, 2, 3, 4] is 2.5.
- duration_s = last arrival - first arrival; mean_rate_rps = (n - 1) / duration_s, i.e. one
  over the mean inter-arrival gap (n arrivals bound n - 1 gaps).
- burstiness = coefficient of variation (std / mean) of the inter-arrival gaps: 1 for a
  Poisson process, 0 for constant spacing, > 1 for bursty traffic.
- input_output_correlation is Pearson's r of (input, output) lengths.
A value that cannot be computed is None, with the reason in `notes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tokenjoule.workloads.request import Workload


@dataclass(frozen=True)
class LengthStats:
    mean: float
    std: float
    median: float
    p90: float
    p99: float
    min: int
    max: int
    total: int

    @classmethod
    def of(cls, values) -> "LengthStats":
        import numpy as np

        a = np.asarray(values, dtype=np.int64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(mean=float(a.mean()), std=float(a.std()), median=float(p50), p90=float(p90),
                   p99=float(p99), min=int(a.min()), max=int(a.max()), total=int(a.sum()))


@dataclass(frozen=True)
class WorkloadStats:
    name: str
    requests: int
    input_tokens: LengthStats
    output_tokens: LengthStats
    duration_s: float | None
    mean_rate_rps: float | None
    burstiness: float | None
    input_output_correlation: float | None
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def workload_stats(workload: Workload) -> WorkloadStats:
    import numpy as np

    if len(workload) == 0:
        from tokenjoule.errors import TokenjouleError

        raise TokenjouleError(f"workload {workload.name!r} has no requests")
    ins = np.fromiter((r.input_tokens for r in workload.requests), dtype=np.int64, count=len(workload))
    outs = np.fromiter((r.output_tokens for r in workload.requests), dtype=np.int64, count=len(workload))
    notes: list[str] = []
    duration = rate = burst = None
    if workload.has_arrivals:
        t = np.sort(np.fromiter((r.arrival_s for r in workload.requests), dtype=float, count=len(workload)))
        duration = float(t[-1] - t[0])
        gaps = np.diff(t)
        if len(gaps) == 0 or duration <= 0:
            notes.append("rate and burstiness need at least two distinct arrival times")
        else:
            rate = float(len(gaps) / duration)
            burst = float(gaps.std() / gaps.mean())
    else:
        notes.append("no arrival times: duration, rate and burstiness are undefined")
    corr = None
    if ins.std() == 0 or outs.std() == 0:
        notes.append("correlation undefined: input or output lengths are all equal")
    else:
        corr = float(np.corrcoef(ins, outs)[0, 1])
    return WorkloadStats(
        name=workload.name, requests=len(workload), input_tokens=LengthStats.of(ins),
        output_tokens=LengthStats.of(outs), duration_s=duration, mean_rate_rps=rate, burstiness=burst,
        input_output_correlation=corr, notes=notes, provenance=dict(workload.provenance),
    )
