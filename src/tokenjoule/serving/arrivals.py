"""Arrival processes: when each request of an online run is sent.

Every process is seeded with a local RNG and described by `ArrivalSpec.to_dict()`, which is
stored with the run. Times are seconds from the start of the run; the first request is sent
at t = 0 (so a run never begins with an idle gap that would dilute its energy).

- poisson:  exponential gaps with mean 1 / rate
- gamma:    gamma gaps with mean 1 / rate and shape = burstiness (1 = Poisson; < 1 burstier,
            > 1 more regular), the convention of vLLM's benchmark
- constant: gaps of exactly 1 / rate
- closed:   no schedule; N clients each send their next request when the previous finishes
- trace:    the trace's own timestamps, shifted to start at 0 and divided by the speed-up
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from tokenjoule.errors import TokenjouleError, UnknownNameError

ARRIVAL_PROCESSES = ("poisson", "gamma", "constant", "closed", "trace")


@dataclass(frozen=True)
class ArrivalSpec:
    process: str = "poisson"
    rate_rps: float | None = None  # poisson, gamma, constant
    burstiness: float = 1.0  # gamma shape
    concurrency: int | None = None  # closed
    speedup: float = 1.0  # trace
    seed: int = 0

    def __post_init__(self) -> None:
        if self.process not in ARRIVAL_PROCESSES:
            raise UnknownNameError("arrival process", self.process, ARRIVAL_PROCESSES)
        if self.process in ("poisson", "gamma", "constant"):
            if self.rate_rps is None or not self.rate_rps > 0:
                raise TokenjouleError(f"arrival {self.process} needs --rate > 0 (requests per second), got {self.rate_rps}")
        if self.process == "gamma" and not self.burstiness > 0:
            raise TokenjouleError(f"gamma arrivals need --burstiness > 0, got {self.burstiness}")
        if self.process == "closed" and (self.concurrency is None or self.concurrency < 1):
            raise TokenjouleError(f"closed-loop arrivals need --concurrency >= 1, got {self.concurrency}")
        if self.process == "trace" and not self.speedup > 0:
            raise TokenjouleError(f"trace replay needs --speedup > 0, got {self.speedup}")
        from tokenjoule.limits import (MAX_CONCURRENCY, MAX_RATE_RPS, MAX_SEED, MAX_SPEEDUP, MIN_RATE_RPS,
                                       check_range)

        if self.process in ("poisson", "gamma", "constant"):
            check_range("--rate", self.rate_rps, MIN_RATE_RPS, MAX_RATE_RPS)
        check_range("--burstiness", self.burstiness, 1e-3, 1e3)
        check_range("--concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        check_range("--speedup", self.speedup, 1e-6, MAX_SPEEDUP)
        check_range("--seed", self.seed, 0, MAX_SEED)

    @property
    def is_closed_loop(self) -> bool:
        return self.process == "closed"

    def to_dict(self) -> dict[str, Any]:
        """Only the parameters that apply to this process (the stored, hashed description)."""
        keep = {
            "poisson": ("rate_rps", "seed"),
            "gamma": ("rate_rps", "burstiness", "seed"),
            "constant": ("rate_rps",),
            "closed": ("concurrency",),
            "trace": ("speedup",),
        }[self.process]
        data = asdict(self)
        return {"process": self.process, **{k: data[k] for k in keep}}

    def schedule(self, n: int, trace_arrivals_s: Sequence[float] | None = None) -> list[float] | None:
        """Send times (s from the start) of `n` requests; None for closed-loop runs."""
        if n < 0:
            raise TokenjouleError(f"number of requests must be >= 0, got {n}")
        if self.process == "closed":
            return None
        if self.process == "trace":
            return trace_schedule(trace_arrivals_s, self.speedup)[:n] if n else []
        if n == 0:
            return []
        rng = np.random.default_rng(self.seed)
        assert self.rate_rps is not None
        mean_gap_s = 1.0 / self.rate_rps
        if self.process == "poisson":
            gaps = rng.exponential(mean_gap_s, size=n - 1)
        elif self.process == "gamma":
            gaps = rng.gamma(shape=self.burstiness, scale=mean_gap_s / self.burstiness, size=n - 1)
        else:  # constant
            gaps = np.full(n - 1, mean_gap_s)
        return [0.0] + np.cumsum(gaps).tolist()


def trace_schedule(arrivals_s: Sequence[float | None] | None, speedup: float = 1.0) -> list[float]:
    """A trace's own arrival times, shifted so the first is 0 and compressed by `speedup`."""
    if not arrivals_s or any(a is None for a in arrivals_s):
        raise TokenjouleError("trace replay needs a trace with a timestamp on every request "
                              "(use --arrival poisson/gamma/constant/closed for traces without)")
    if not speedup > 0:
        raise TokenjouleError(f"trace replay needs --speedup > 0, got {speedup}")
    times = [float(a) for a in arrivals_s]  # type: ignore[arg-type]
    if any(b < a for a, b in zip(times, times[1:])):
        raise TokenjouleError("trace timestamps must be non-decreasing")
    start = times[0]
    return [(t - start) / speedup for t in times]
