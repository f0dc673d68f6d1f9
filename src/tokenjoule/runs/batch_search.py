"""The largest batch that fits: doubling from 1, then bisection, cached in the results store.

The paper measures each bin at its largest fitting batch. Finding it costs one probe per
tried batch size: `engine.probe_memory(spec)` when the engine declares CAP_PROBE_MEMORY (a cheap forward pass
at the full sequence length that raises the framework's out-of-memory error), else one real
`engine.generate`. Doubling brackets the limit in about log2(limit) probes and bisection
pins it to within `BISECTION_RESOLUTION` of the limit (a probe of a large batch is a full
forward pass over batch x (input + output) tokens, seconds each on an 8B model, and the
last few percent of batch size change energy per token by less than the run-to-run noise),
so a limit L costs at most 2*log2(L) + 2 probes, and about log2(L) + 6 in practice.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenjoule.engines.base import CAP_PROBE_MEMORY, Engine, supports
from tokenjoule.records import is_out_of_memory  # noqa: F401  (re-exported for callers)
from tokenjoule.spec import DEFAULT_MAX_BATCH_CAP, RunSpec, memory_key

# Bisection stops once the bracket [fits, does not fit) is narrower than this share of the
# batch that fits: the answer is then at most ~3% below the true limit (exact below 32).
BISECTION_RESOLUTION = 1 / 32


def release_memory() -> None:
    """Free what an out-of-memory attempt left behind, so the next probe starts clean."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class BatchSearch:
    """The answer of one search. `max_batch` is None when even batch 1 does not fit."""

    max_batch: int | None
    probes: list[dict[str, Any]] = field(default_factory=list)  # {"batch_size", "fits", "how"}
    cached: bool = False


def search_max_batch(fits: Callable[[int], bool], cap: int, how: str = "probe",
                     resolution: float = BISECTION_RESOLUTION) -> BatchSearch:
    """Largest b in [1, cap] with fits(b) (to within `resolution` x b), assuming fits is
    monotone (fits(b) => fits(b-1)). resolution=0 gives the exact limit."""
    probes: list[dict[str, Any]] = []

    def probe(b: int) -> bool:
        ok = bool(fits(b))
        probes.append({"batch_size": b, "fits": ok, "how": how})
        return ok

    if not probe(1):
        return BatchSearch(None, probes)
    lo, hi = 1, None  # lo fits; hi (when known) does not
    b = 2
    while b <= cap:
        if probe(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if hi is None:
        if lo == cap:
            return BatchSearch(cap, probes)
        if probe(cap):
            return BatchSearch(cap, probes)
        hi = cap
    while hi - lo > max(1, int(lo * resolution)):
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return BatchSearch(lo, probes)


def max_batch_key(spec: RunSpec, gpu_name: str | None, cap: int = DEFAULT_MAX_BATCH_CAP) -> str:
    """The cache key of the largest fitting batch: `spec.memory_key` (kept under this name)."""
    return memory_key(spec, gpu_name, cap)


class EngineFits:
    """fits(batch) for one engine and cell: probe_memory when the engine declares it, else
    generate. Out-of-memory means "does not fit"; any other error propagates. `peaks` holds the
    peak device bytes each fitting probe reported (engines that can read it)."""

    def __init__(self, engine: Engine, spec: RunSpec):
        self.engine, self.spec = engine, spec
        self.probe = supports(engine, CAP_PROBE_MEMORY)
        self.peaks: dict[int, float] = {}

    def __call__(self, batch_size: int) -> bool:
        trial = self.spec.model_copy(update={"batch_size": batch_size})
        try:
            if self.probe:
                peak = self.engine.probe_memory(trial)
                if isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0:
                    self.peaks[batch_size] = float(peak)
            else:
                self.engine.generate(trial)
            return True
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is an answer
            if is_out_of_memory(exc):
                release_memory()
                return False
            raise


def engine_fits(engine: Engine, spec: RunSpec) -> tuple[EngineFits, str]:
    """(fits(batch), "probe" | "generate") for this engine and cell (see EngineFits)."""
    fits = EngineFits(engine, spec)
    return fits, "probe" if fits.probe else "generate"


def find_max_batch(store: Any, engine: Engine, spec: RunSpec, gpu_name: str | None, cap: int) -> BatchSearch:
    """The cached answer for this cell's key, or a fresh search (then cached)."""
    key = max_batch_key(spec, gpu_name, cap)
    cached = store.get_max_batch(key)
    if cached is not None:
        return BatchSearch(cached, [], cached=True)
    fits, how = engine_fits(engine, spec)
    result = search_max_batch(fits, cap, how)
    if result.max_batch is not None:
        store.set_max_batch(key, result.max_batch, gpu_name, result.probes)
    return result


def lower_max_batch(store: Any, spec: RunSpec, gpu_name: str | None, cap: int, new_max: int,
                    failed_batch: int, probes: list[dict[str, Any]]) -> None:
    """Record that a full measurement at `failed_batch` ran out of memory: the cached largest
    batch becomes `new_max`, so a resumed sweep measures at the batch that worked."""
    entry = {"batch_size": failed_batch, "fits": False, "how": "measure"}
    store.set_max_batch(max_batch_key(spec, gpu_name, cap), new_max, gpu_name, probes + [entry])
