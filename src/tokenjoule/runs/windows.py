"""Adaptive measurement windows: warm-up sized to the mode, repeats that stop when windows agree.

Two protocols (`RunSpec.protocol`):

- ``full`` (default, the historical protocol): `spec.warmup` full-length warm-up batches, 2-3
  calibration batches, then `spec.repeats` windows, whatever they show.
- ``adaptive``:
  * warm-up by mode (`warmup_plan`): eager modes need no full-length warm-up, only a SHORT one
    (the same batch with 2 output tokens: prefill + one decode step) to pay first-call costs
    (kernel selection, allocator growth); modes that capture or compile per shape (hf compile,
    hf cudagraphs) need one full-length batch, which is their capture; vLLM captures its CUDA
    graphs when the engine loads, so vLLM needs only the short warm-up;
  * the first measured batch runs inside a meter window: if it alone lasts `min_window_s` it IS
    the first window (a batch longer than the minimum window is one window); otherwise it is
    calibration and sets the iterations per window;
  * windows repeat until the last two agree (`stop_rule`): default two windows within 1% in
    energy per batch; a third otherwise (`max_windows`), then stop and say they disagreed;
  * when the agreement came after earlier windows that disagreed, those earlier windows are
    SETTLING windows (`settling_count`): kept in the record, left out of the cell's figures.
    Seen on an H200 (2026-12-02, transformers eager, batches of 88-814): in 9 of 10 bins the
    first full-length batch ran 1.1-2.1x as long and drew 2-22% more energy as the two after it,
    which agreed within 1% (most likely the caching allocator growing to the batch's full KV
    cache, which the short warm-up never reaches). Averaging it in biased those cells 0.5-7.3%
    high (docs/RESULTS.md, section 8).

Every cell records its warm-ups, its windows and why it stopped (`stop_reason`). Pure
functions; runs.offline calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.records import STOP_AGREE, settling_count  # noqa: F401  (the rule lives with the records it reads)
from tokenjoule.spec import PROTOCOLS
DEFAULT_AGREE_REL = 0.01
DEFAULT_MAX_WINDOWS = 3
MIN_WINDOWS = 2
SHORT_WARMUP_OUTPUT_TOKENS = 2
# (engine, mode) pairs that compile or capture per input shape inside generate.
CAPTURE_PER_SHAPE = {("hf", "compile"), ("hf", "cudagraphs")}

STOP_MAX_WINDOWS = "max-windows"
STOP_FIXED = "fixed-repeats"
STOP_NO_ENERGY = "no-energy"


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UnknownNameError("protocol", protocol, PROTOCOLS)
    return protocol


@dataclass(frozen=True)
class WarmupPlan:
    full_length: int  # warm-up batches at the cell's own output length
    short: int  # warm-up batches of SHORT_WARMUP_OUTPUT_TOKENS output tokens
    reason: str

    def to_dict(self) -> dict:
        return {"full_length": self.full_length, "short": self.short, "reason": self.reason}


def warmup_plan(engine: str, mode: str, protocol: str, requested: int) -> WarmupPlan:
    """How to warm up a cell: `requested` full-length batches under `full`, by mode under `adaptive`."""
    check_protocol(protocol)
    if protocol == "full":
        return WarmupPlan(requested, 0, f"protocol full: {requested} full-length warm-up batch(es)")
    if (engine, mode) in CAPTURE_PER_SHAPE:
        return WarmupPlan(1, 0, f"{engine}/{mode} compiles/captures per shape: one full-length batch")
    if engine == "vllm":
        return WarmupPlan(0, 1, "vLLM captures its graphs at load: one short batch for first-call costs")
    return WarmupPlan(0, 1, f"{engine}/{mode} runs eagerly: one short batch for first-call costs")


def relative_spread(values: Sequence[float]) -> float | None:
    """(max - min) / mean of positive values; None when it cannot be computed."""
    if len(values) < 2 or any(v is None for v in values):
        return None
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean > 0 else None


def stop_rule(energies_j: Sequence[float | None], *, agree_rel: float = DEFAULT_AGREE_REL,
              max_windows: int = DEFAULT_MAX_WINDOWS, min_windows: int = MIN_WINDOWS) -> str | None:
    """After the windows so far (energy per batch of each), why to stop, or None to go on.

    Stops with STOP_AGREE once at least `min_windows` windows exist and the last two agree
    within `agree_rel` (relative spread); with STOP_MAX_WINDOWS at `max_windows`; with
    STOP_NO_ENERGY when a window has no energy reading (more windows cannot help)."""
    if max_windows < min_windows:
        raise TokenjouleError(f"max_windows ({max_windows}) must be at least {min_windows}")
    if any(e is None for e in energies_j):
        return STOP_NO_ENERGY if len(energies_j) >= min_windows else None
    n = len(energies_j)
    if n >= min_windows:
        spread = relative_spread([float(e) for e in energies_j[-2:] if e is not None])
        if spread is not None and spread <= agree_rel:
            return STOP_AGREE
    if n >= max_windows:
        return STOP_MAX_WINDOWS
    return None


def stop_summary(reason: str, energies_j: Sequence[float | None], agree_rel: float) -> dict:
    """What a cell records about its windows: count, why it stopped, the last two's spread, and
    the settling windows left out (how many, and their energy above the agreeing ones)."""
    vals = [e for e in energies_j if e is not None]
    spread = relative_spread(vals[-2:]) if len(vals) >= 2 else None
    k = settling_count(reason, len(energies_j))
    excess = None
    if k and all(e is not None for e in energies_j):
        settled = [float(e) for e in energies_j[k:] if e is not None]
        early = [float(e) for e in energies_j[:k] if e is not None]
        base = sum(settled) / len(settled)
        excess = (sum(early) / len(early)) / base - 1 if base > 0 else None
    return {"stop_reason": reason, "windows": len(energies_j), "window_spread_rel": spread,
            "windows_agree_rel": agree_rel, "settling_windows": k, "settling_excess_rel": excess}

