"""Paper-matched synthetic workloads: BurstGPT and the paper's Azure conversation and code sets.

The paper's Tables 1-2 give four statistics of each length distribution (mean, population std,
median, p99) but not the traces themselves (BurstGPT cannot ship here; the paper's Azure sets are
not the 2023 traces we ship). We draw lengths from a distribution fitted to those statistics:

    family: a mixture of two discretised log-normals on the integers [1, max]
            P(k) = w LN(k; mu1, s1) / Z1 + (1 - w) LN(k; mu2, s2) / Z2,   max = 8 x p99
    fit:    least squares of the relative errors of the 4 statistics over (w, mu1, s1, mu2, s2),
            Nelder-Mead from a grid of starts (`fit_mixture`).

A single log-normal fits the output lengths well but misses the input statistics by up to 15%
(mean of Azure conversation input), which is why the second component is there. Five parameters
for four statistics: the fit is exact up to integer rounding of the quantiles, but not unique.
The fitted parameters ship as package data (`data/paper_lengths.json`, written by
`benchmarks/fit_paper_lengths.py`), so drawing a workload needs numpy only, and the fit
is not repeated in every process.

Input and output lengths are drawn *independently*: the paper gives no joint statistics.
Sampling is stratified inverse-CDF with a seeded shuffle (as in profiles.py), so the drawn
sample's statistics sit close to the fitted distribution's.
Every workload made here is named `paper:NAME` and carries `synthetic: True` in its provenance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads.request import Request, Workload

STATS = ("mean", "std", "median", "p99")
FAMILY = "mixture of two discretised log-normals on [1, 8 x p99], fitted to mean/std/median/p99"
PARAMS_FILE = "paper_lengths.json"
DEFAULT_N = 10_000
MAX_OVER_P99 = 8
# Tolerance of the shipped fit (relative, each statistic of the fitted distribution vs the paper).
FIT_TOLERANCE = 0.02


@dataclass(frozen=True)
class PaperWorkload:
    name: str
    description: str
    citation: str
    input_target: tuple[float, float, float, float]  # mean, std, median, p99 (tokens)
    output_target: tuple[float, float, float, float]


# The paper's Tables 1-2 (Fernandez et al., ACL 2025); see /work/shared/paper/NUMBERS.md.
PAPER_WORKLOADS: dict[str, PaperWorkload] = {
    w.name: w
    for w in (
        PaperWorkload("burstgpt", "BurstGPT (the paper's Table 1 statistics)",
                      "Wang et al., BurstGPT, 2024; statistics from Fernandez et al., ACL 2025, Table 1",
                      (256.80, 242.27, 215, 1038), (35.10, 108.59, 7, 478)),
        PaperWorkload("azure-conv", "Azure LLM inference, conversation (the paper's Table 2 statistics)",
                      "Azure Public Dataset via DynamoLLM; statistics from Fernandez et al., ACL 2025, Table 2",
                      (1631.58, 1529.64, 928, 6683), (105.51, 158.25, 41, 694)),
        PaperWorkload("azure-code", "Azure LLM inference, code (the paper's Table 2 statistics)",
                      "Azure Public Dataset via DynamoLLM; statistics from Fernandez et al., ACL 2025, Table 2",
                      (2511.28, 2133.54, 1930, 7685), (22.69, 74.78, 8, 271)),
    )
}


def list_paper_workloads() -> list[str]:
    return [f"paper:{n}" for n in PAPER_WORKLOADS]


# -- the distribution -------------------------------------------------------------------------
def mixture_pmf(params, max_tokens: int):
    """(k, P(k)) for k = 1..max_tokens; params = (logit w, mu1, log s1, mu2, log s2)."""
    import numpy as np

    k = np.arange(1, int(max_tokens) + 1, dtype=float)
    logk = np.log(k)
    w = 1.0 / (1.0 + math.exp(-float(params[0])))

    def component(mu: float, log_s: float):
        s = math.exp(log_s)
        d = np.exp(-((logk - mu) ** 2) / (2 * s * s)) / k
        total = d.sum()
        return d / total if total > 0 else np.full_like(k, 1.0 / len(k))

    return k, w * component(params[1], params[2]) + (1 - w) * component(params[3], params[4])


def pmf_stats(k, p) -> tuple[float, float, float, float]:
    """(mean, std, median, p99) of a discrete distribution; quantile q = smallest k with CDF >= q."""
    import numpy as np

    cdf = np.cumsum(p)
    mean = float((p * k).sum())
    std = float(math.sqrt(max(float((p * (k - mean) ** 2).sum()), 0.0)))
    pick = lambda q: float(k[min(int(np.searchsorted(cdf, q - 1e-12)), len(k) - 1)])  # noqa: E731
    return mean, std, pick(0.5), pick(0.99)


def relative_errors(drawn, target) -> list[float]:
    return [(d - t) / t for d, t in zip(drawn, target)]


def fit_mixture(target, max_over_p99: int = MAX_OVER_P99, starts: int = 60) -> dict[str, Any]:
    """Least-squares fit of the mixture to (mean, std, median, p99). Needs scipy (fit only).

    `starts` caps the grid of Nelder-Mead starting points (the objective has many local minima);
    the best start is then polished. Returns {"params", "max_tokens", "stats", "objective"}."""
    import itertools

    import numpy as np
    from scipy.optimize import minimize

    t = np.asarray(target, dtype=float)
    max_tokens = int(max_over_p99 * t[3])

    def objective(x) -> float:
        return float(((np.asarray(pmf_stats(*mixture_pmf(x, max_tokens))) - t) / t) ** 2 @ np.ones(4))

    grid = list(itertools.product((0, -1, 1, -2, 2), ((-0.5, 1.0), (-1.5, 0.5), (-2, 0.2), (0, 1.5)),
                                  ((0.5, 1.0), (0.3, 0.3), (0.8, 0.5))))[:starts]
    best = None
    for w0, (a, b), (s1, s2) in grid:
        x0 = [w0, math.log(t[2]) + a, math.log(s1), math.log(t[2]) + b, math.log(s2)]
        r = minimize(objective, x0, method="Nelder-Mead", options={"maxiter": 600, "xatol": 1e-4, "fatol": 1e-10})
        if best is None or r.fun < best.fun:
            best = r
        if best.fun < 1e-12:
            break
    r = minimize(objective, best.x, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-14})
    if r.fun > best.fun:
        r = best
    params = [float(v) for v in r.x]
    return {"params": params, "max_tokens": max_tokens, "stats": list(pmf_stats(*mixture_pmf(params, max_tokens))),
            "objective": float(r.fun)}


@lru_cache(maxsize=1)
def fitted_params() -> dict[str, Any]:
    """The shipped fit: {name: {"input": {...}, "output": {...}}, "_meta": {...}}."""
    try:
        text = resources.files("tokenjoule.workloads").joinpath("data", PARAMS_FILE).read_text()
    except FileNotFoundError:
        raise TokenjouleError(f"{PARAMS_FILE} is missing from the package; run benchmarks/fit_paper_lengths.py")
    return json.loads(text)


# -- drawing ----------------------------------------------------------------------------------
def _draw(fit: dict[str, Any], n: int, rng) -> list[int]:
    import numpy as np

    k, p = mixture_pmf(fit["params"], fit["max_tokens"])
    cdf = np.cumsum(p)
    u = (np.arange(n) + rng.random(n)) / n  # one draw per equal-probability stratum
    idx = np.minimum(np.searchsorted(cdf, u * cdf[-1], side="left"), len(cdf) - 1)
    return [int(v) for v in rng.permutation(k[idx].astype(np.int64))]


def paper_workload(name: str, n: int = DEFAULT_N, seed: int = 0) -> Workload:
    """A seeded synthetic workload matched to one of the paper's Table 1-2 length statistics."""
    import numpy as np

    key = name.removeprefix("paper:")
    if key not in PAPER_WORKLOADS:
        raise UnknownNameError("paper workload", name, list_paper_workloads())
    if n < 1:
        raise TokenjouleError(f"a paper workload needs at least 1 request, got n={n}")
    info, fits = PAPER_WORKLOADS[key], fitted_params()[key]
    rng = np.random.default_rng([seed, 11])
    ins = _draw(fits["input"], n, rng)
    outs = _draw(fits["output"], n, rng)
    return Workload(
        name=f"paper:{key} (synthetic)",  # the label travels into every table and JSON document
        requests=[Request(a, b) for a, b in zip(ins, outs)],
        provenance={
            "source": f"paper:{key}", "format": "synthetic", "synthetic": True, "label": "synthetic",
            "description": info.description, "citation": info.citation, "distribution": FAMILY,
            "independence": "input and output lengths drawn independently (the paper gives no joint statistics)",
            "target": {"input": dict(zip(STATS, info.input_target)), "output": dict(zip(STATS, info.output_target))},
            "n": n, "seed": seed, "removed": {}, "filters": [],
        },
    )


def fit_report(name: str, n: int = DEFAULT_N, seed: int = 0) -> list[dict[str, Any]]:
    """Per length and statistic: the paper's target, the fitted distribution's value and the
    drawn sample's value (population std, linear-interpolated percentiles as in stats.py)."""
    from tokenjoule.workloads.stats import LengthStats

    key = name.removeprefix("paper:")
    wl = paper_workload(key, n, seed)
    rows = []
    for side, target in (("input", PAPER_WORKLOADS[key].input_target), ("output", PAPER_WORKLOADS[key].output_target)):
        fit = fitted_params()[key][side]
        dist = pmf_stats(*mixture_pmf(fit["params"], fit["max_tokens"]))
        ls = LengthStats.of([getattr(r, f"{side}_tokens") for r in wl.requests])
        drawn = (ls.mean, ls.std, ls.median, ls.p99)
        for stat, t, d, s in zip(STATS, target, dist, drawn):
            rows.append({"workload": f"paper:{key}", "length": side, "stat": stat, "target": t, "fitted": d,
                         "drawn": s, "drawn_error": (s - t) / t})
    return rows


# The shipped traces that stand in for the paper's sets (same source, different year).
SHIPPED_COUNTERPART = {"azure-conv": "azure-conv-2023", "azure-code": "azure-code-2023", "burstgpt": None}


def paper_comparison(name: str, n: int = DEFAULT_N, seed: int = 0) -> list[dict[str, Any]]:
    """Per length and statistic: the paper's value, the synthetic sample's, and the shipped
    counterpart trace's (None when nothing ships, e.g. BurstGPT), with relative differences."""
    from tokenjoule.workloads.stats import workload_stats
    from tokenjoule.workloads.traces import load_trace

    key = name.removeprefix("paper:")
    rows = fit_report(key, n, seed)
    trace = SHIPPED_COUNTERPART.get(key)
    shipped = workload_stats(load_trace(trace)) if trace else None
    for row in rows:
        value = None
        if shipped is not None:
            ls = getattr(shipped, f"{row['length']}_tokens")
            value = float(getattr(ls, row["stat"]))
        row.update(shipped_trace=trace, shipped=value,
                   shipped_error=None if value is None else (value - row["target"]) / row["target"])
    return rows
