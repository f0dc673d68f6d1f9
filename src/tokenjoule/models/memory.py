"""A memory model of one loaded engine: the largest batch of a bin, predicted instead of hunted.

A batch of B requests of I input and O output tokens (R = B x beams rows) peaks at about

    peak(B) = weights + fixed + R x (I + O) x (kv_bytes_per_token + activation_bytes_per_token)

- weights: the bytes the loaded model holds (counted on the device after `load`);
- kv_bytes_per_token: 2 (K, V) x layers x kv_heads x head_dim x dtype bytes, from the
  architecture (`Architecture.kv_bytes_per_token`), exact for a dense KV cache;
- activation_bytes_per_token: the engine's prefill activation peak per token in flight (MLP
  intermediates, attention workspaces), the one number that is CALIBRATED, once per (model,
  engine, mode, GPU), from one or two profiled prefills of a small batch: with two, the fixed
  workspace is fitted too; with one it is taken as 0;
- fixed: workspaces that do not grow with the batch (cuBLAS, allocator slack).

The token count R x (I + O) matches `probe_memory` (one forward over the full final length):
the probe that confirms the prediction tests the same quantity the model predicts.

The prediction is floor((capacity x headroom - weights - fixed) / (rows per request x (I + O) x
bytes per token)), capped to the search ceiling. `headroom` (default 0.98) leaves room for
fragmentation, so one confirming probe usually fits; a probe that does not steps down
(runs.max_batch). Pure arithmetic; the profiled numbers come from runs.max_batch.

vLLM preallocates its KV cache, so there "the largest batch" is what one generate call can run
at once: floor(kv_cache_tokens / (beams x (I + O))), bounded by the scheduler's max_num_seqs
(`vllm_max_batch`); docs/METHOD.md says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from tokenjoule.errors import TokenjouleError

DEFAULT_HEADROOM = 0.98


@dataclass(frozen=True)
class MemoryProfile:
    """One profiled prefill: `rows` sequences of `tokens_per_row` tokens peaked at `peak_bytes`."""

    rows: int
    tokens_per_row: int
    peak_bytes: float

    @property
    def tokens(self) -> int:
        return self.rows * self.tokens_per_row


@dataclass(frozen=True)
class MemoryModel:
    capacity_bytes: float
    weights_bytes: float
    kv_bytes_per_token: float
    activation_bytes_per_token: float
    fixed_bytes: float = 0.0
    method: str = "calibrated"  # how the profile peaks were read: cuda-max-allocated, rss-sampled, ...
    headroom: float = DEFAULT_HEADROOM
    profiles: tuple[MemoryProfile, ...] = ()

    @property
    def bytes_per_token(self) -> float:
        return self.kv_bytes_per_token + self.activation_bytes_per_token

    @property
    def free_bytes(self) -> float:
        """What batches may use: capacity x headroom minus weights and fixed workspaces."""
        return self.capacity_bytes * self.headroom - self.weights_bytes - self.fixed_bytes

    def peak_bytes(self, batch_size: int, input_tokens: int, output_tokens: int, beams: int = 1) -> float:
        return (self.weights_bytes + self.fixed_bytes
                + batch_size * beams * (input_tokens + output_tokens) * self.bytes_per_token)

    def predict_max_batch(self, input_tokens: int, output_tokens: int, beams: int = 1,
                          cap: int | None = None) -> int:
        """The largest batch predicted to fit (0 when not even one request does)."""
        per_request = beams * (input_tokens + output_tokens) * self.bytes_per_token
        if per_request <= 0:
            raise TokenjouleError(f"memory model has no per-token bytes ({self.bytes_per_token}); recalibrate")
        b = max(0, math.floor(self.free_bytes / per_request))
        return min(b, cap) if cap is not None else b

    def refit(self, profile: MemoryProfile) -> "MemoryModel":
        """This model fitted again with one more profiled point, typically a probe that fitted at
        a bin's full size: the per-token bytes then span the smallest profile to the largest, as
        seen at scale, not extrapolated a hundredfold from the calibration's small prefills
        (allocator fragmentation grows with the tensors)."""
        method = self.method if self.method.endswith("+probe") else f"{self.method}+probe"
        return calibrate((*self.profiles, profile), capacity_bytes=self.capacity_bytes,
                         weights_bytes=self.weights_bytes, kv_bytes_per_token=self.kv_bytes_per_token,
                         method=method, headroom=self.headroom)

    def with_usable_bytes(self, usable_bytes: float) -> "MemoryModel":
        """This model with the device memory batches may really use (capacity x headroom) set to
        `usable_bytes`, e.g. learned from probes that failed below the calibrated capacity."""
        from dataclasses import replace

        return replace(self, capacity_bytes=usable_bytes / self.headroom)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [asdict(p) for p in self.profiles]
        return d


def calibrate(profiles: Sequence[MemoryProfile], *, capacity_bytes: float, weights_bytes: float,
              kv_bytes_per_token: float, method: str, headroom: float = DEFAULT_HEADROOM) -> MemoryModel:
    """Fit activation bytes per token (and, with two profiles of different sizes, the fixed
    workspace) to profiled peaks: peak - weights = fixed + tokens x (kv + activation)."""
    if not profiles:
        raise TokenjouleError("memory calibration needs at least one profiled prefill")
    pts = sorted({(p.tokens, p.peak_bytes - weights_bytes) for p in profiles})
    if any(t <= 0 for t, _ in pts):
        raise TokenjouleError("memory calibration profiles need rows >= 1 and tokens_per_row >= 1")
    if len(pts) >= 2 and pts[-1][0] != pts[0][0]:
        (t0, m0), (t1, m1) = pts[0], pts[-1]
        slope = (m1 - m0) / (t1 - t0)
        fixed = max(0.0, m0 - slope * t0)
    else:
        t0, m0 = pts[-1]
        slope, fixed = m0 / t0, 0.0
    # A profile can read lower than the KV cache alone (allocator reuse, a sampled RSS); the
    # KV bytes are exact, so the activation term is never negative.
    activation = max(0.0, slope - kv_bytes_per_token)
    return MemoryModel(capacity_bytes=float(capacity_bytes), weights_bytes=float(weights_bytes),
                       kv_bytes_per_token=float(kv_bytes_per_token), activation_bytes_per_token=activation,
                       fixed_bytes=fixed, method=method, headroom=headroom, profiles=tuple(profiles))


def vllm_max_batch(kv_cache_tokens: int, input_tokens: int, output_tokens: int, beams: int = 1,
                   max_num_seqs: int | None = None, cap: int | None = None) -> int:
    """Requests one vLLM generate call runs at once: those whose full-length KV fits the
    preallocated cache, bounded by the scheduler's max_num_seqs and the search ceiling."""
    per_request = beams * (input_tokens + output_tokens)
    if kv_cache_tokens <= 0 or per_request <= 0:
        return 0
    b = kv_cache_tokens // per_request
    for bound in (max_num_seqs, cap):
        if bound is not None:
            b = min(b, bound)
    return int(b)
