"""Synthetic workloads for the classical NLP tasks of the paper's Table 3.

Each profile gives the mean, standard deviation and maximum of the input length (tokens) of a
dataset, and the fixed output length the paper generated. We draw input lengths from a
*discretised log-normal truncated to [1, max]*: the probability of length k (1 <= k <= max)
is proportional to the log-normal density at k. The log-normal's (mu, sigma) are solved
(Newton's method) so that the truncated distribution's mean and standard deviation equal the
published ones exactly; the maximum is the truncation point, so no sample exceeds it.

Sampling is stratified inverse-CDF (one uniform draw inside each of n equal-probability
strata, then a seeded shuffle), so even 1,024 samples match the target mean and std closely.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads.request import Request, Workload


@dataclass(frozen=True)
class TaskProfile:
    name: str
    dataset: str
    input_mean_tokens: float
    input_std_tokens: float
    input_max_tokens: int
    output_tokens: int


# The paper's Table 3 (Fernandez et al., ACL 2025).
TASK_PROFILES: dict[str, TaskProfile] = {
    p.name: p
    for p in (
        TaskProfile("translation", "WMT-14", 49.96, 39.39, 550, 64),
        TaskProfile("generation", "WikiText-2", 136.89, 93.13, 547, 64),
        TaskProfile("classification", "IMDB", 292.48, 239.94, 3112, 1),
        TaskProfile("summarization", "CNN-DailyMail", 838.49, 400.70, 2386, 64),
    )
}


def _moments(mu: float, sigma: float, max_tokens: int):
    import numpy as np

    k = np.arange(1, max_tokens + 1, dtype=float)
    logk = np.log(k)
    # Log-normal density up to a constant; normalised over the support below.
    w = np.exp(-((logk - mu) ** 2) / (2 * sigma**2)) / k
    p = w / w.sum()
    mean = float((p * k).sum())
    std = float(np.sqrt(max((p * (k - mean) ** 2).sum(), 0.0)))
    return p, mean, std


@lru_cache(maxsize=None)
def fit_lengths(mean: float, std: float, max_tokens: int) -> tuple[float, float]:
    """(mu, sigma) of the log-normal whose truncation to [1, max] has this mean and std."""
    import numpy as np

    if not (1 <= mean < max_tokens and 0 < std):
        raise TokenjouleError(f"cannot fit lengths with mean {mean}, std {std}, max {max_tokens}")
    sigma2 = np.log(1 + (std / mean) ** 2)  # untruncated log-normal moments as the start
    x = np.array([np.log(mean) - sigma2 / 2, np.log(np.sqrt(sigma2))])
    target = np.array([mean, std])
    for _ in range(100):
        _, m, s = _moments(x[0], np.exp(x[1]), max_tokens)
        resid = np.array([m, s]) - target
        if np.all(np.abs(resid) < 1e-7 * target):
            return float(x[0]), float(np.exp(x[1]))
        jac = np.empty((2, 2))
        for j in range(2):
            dx = np.zeros(2)
            dx[j] = 1e-6
            _, m2, s2 = _moments(x[0] + dx[0], np.exp(x[1] + dx[1]), max_tokens)
            jac[:, j] = (np.array([m2, s2]) - np.array([m, s])) / 1e-6
        step = np.linalg.solve(jac, -resid)
        x = x + np.clip(step, -0.5, 0.5)  # damped: keeps the first steps from overshooting
    raise TokenjouleError(f"length fit did not converge for mean {mean}, std {std}, max {max_tokens}")


def sample_lengths(mean: float, std: float, max_tokens: int, n: int, seed: int = 0) -> list[int]:
    """n integer lengths in [1, max_tokens] with (close to) the given mean and std."""
    import numpy as np

    mu, sigma = fit_lengths(float(mean), float(std), int(max_tokens))
    p, _, _ = _moments(mu, sigma, int(max_tokens))
    cdf = np.cumsum(p)
    rng = np.random.default_rng(seed)
    u = (np.arange(n) + rng.random(n)) / n  # one draw per equal-probability stratum
    idx = np.minimum(np.searchsorted(cdf, u, side="left"), len(cdf) - 1)
    return [int(v) for v in rng.permutation(idx + 1)]


def task_profile(name: str, n: int = 1024, seed: int = 0) -> Workload:
    """A seeded synthetic workload for one of the paper's Table-3 tasks (no arrival times)."""
    if name not in TASK_PROFILES:
        raise UnknownNameError("task profile", name, list(TASK_PROFILES))
    if n < 1:
        raise TokenjouleError(f"a task profile needs at least 1 request, got n={n}")
    prof = TASK_PROFILES[name]
    lengths = sample_lengths(prof.input_mean_tokens, prof.input_std_tokens, prof.input_max_tokens, n, seed)
    requests = [Request(k, prof.output_tokens) for k in lengths]
    return Workload(
        name=f"task:{name}",
        requests=requests,
        provenance={
            "source": f"task:{name}",
            "format": "task-profile",
            "dataset": prof.dataset,
            "distribution": "discretised log-normal truncated to [1, max], fitted to mean/std",
            "target": {"input_mean_tokens": prof.input_mean_tokens, "input_std_tokens": prof.input_std_tokens,
                       "input_max_tokens": prof.input_max_tokens, "output_tokens": prof.output_tokens},
            "n": n,
            "seed": seed,
            "removed": {},
            "filters": [],
        },
    )
