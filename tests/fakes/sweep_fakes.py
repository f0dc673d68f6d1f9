"""Fakes for sweep tests: an engine with a planted memory limit (probe_memory), one that
sleeps (so a subprocess can be killed mid-sweep), and a config helper."""

from __future__ import annotations

import time
from typing import Any

from tokenjoule.engines.base import CAP_PROBE_MEMORY
from tokenjoule.spec import RunSpec

from fakes.fake_engine import FakeEngine, FakeOutOfMemoryError


class LimitEngine(FakeEngine):
    """A fake engine whose memory holds at most `limit_batch` requests (all lengths alike).
    `probe_memory` counts its calls; `fail_input_tokens` makes generate raise a non-OOM error
    for cells of that input length; `measure_limit_batch` (below limit_batch) makes the full
    measurement run out of memory although the probe fitted."""

    capabilities = frozenset({CAP_PROBE_MEMORY})

    def __init__(self, limit_batch: int = 1_000_000, fail_input_tokens: int | None = None,
                 measure_limit_batch: int | None = None, sleep_s: float = 0.0, **kw: Any):
        super().__init__(**kw)
        self.limit_batch = limit_batch
        self.fail_input_tokens = fail_input_tokens
        self.measure_limit_batch = measure_limit_batch
        self.sleep_s = sleep_s
        self.probes: list[int] = []

    def probe_memory(self, spec: RunSpec) -> None:
        self.probes.append(spec.batch_size)
        if spec.batch_size > self.limit_batch:
            raise FakeOutOfMemoryError(f"CUDA out of memory (probe at batch {spec.batch_size})")

    def generate(self, spec: RunSpec, output_tokens: int | None = None):
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_input_tokens is not None and spec.input_tokens == self.fail_input_tokens:
            raise RuntimeError(f"engine exploded at input {spec.input_tokens}")
        limit = self.measure_limit_batch or self.limit_batch
        if spec.batch_size > limit:
            raise FakeOutOfMemoryError(f"CUDA out of memory (batch {spec.batch_size})")
        return super().generate(spec, output_tokens)


class MemoryEngine(FakeEngine):
    """A fake engine with a planted device memory: a batch of b requests of I + O tokens needs
    weights + fixed + b x (I + O) x bytes_per_token; beyond `capacity_bytes` it runs out of memory
    (probe and generate alike). `peak_bytes` is what a profiler would read."""

    capabilities = frozenset({CAP_PROBE_MEMORY})

    def __init__(self, capacity_bytes: float = 80e9, weights_bytes: float = 16e9, fixed_bytes: float = 1e9,
                 bytes_per_token: float = 331_072.0, **kw: Any):
        super().__init__(**kw)
        self.capacity_bytes, self.weights_bytes = capacity_bytes, weights_bytes
        self.fixed_bytes, self.bytes_per_token = fixed_bytes, bytes_per_token
        self.probes: list[int] = []

    def peak_bytes(self, spec: RunSpec) -> float:
        tokens = spec.batch_size * (spec.input_tokens + spec.output_tokens)
        return self.weights_bytes + self.fixed_bytes + tokens * self.bytes_per_token

    def limit(self, input_tokens: int, output_tokens: int) -> int:
        free = self.capacity_bytes - self.weights_bytes - self.fixed_bytes
        return int(free // ((input_tokens + output_tokens) * self.bytes_per_token))

    def probe_memory(self, spec: RunSpec) -> float:
        self.probes.append(spec.batch_size)
        if self.peak_bytes(spec) > self.capacity_bytes:
            raise FakeOutOfMemoryError(f"CUDA out of memory (probe at batch {spec.batch_size})")
        return self.peak_bytes(spec)

    def generate(self, spec: RunSpec, output_tokens: int | None = None):
        if self.peak_bytes(spec) > self.capacity_bytes:
            raise FakeOutOfMemoryError(f"CUDA out of memory (batch {spec.batch_size})")
        return super().generate(spec, output_tokens)


def planted_calibration(engine: MemoryEngine, spec: RunSpec, rows=(1, 4), tokens_per_row: int = 1024):
    """What runs.max_batch.calibrate_engine measures, read from the planted device instead."""
    from tokenjoule.models.memory import MemoryProfile, calibrate

    profiles = []
    for r in rows:
        trial = spec.model_copy(update={"batch_size": r, "input_tokens": tokens_per_row // 2,
                                        "output_tokens": tokens_per_row // 2})
        engine.probe_memory(trial)
        profiles.append(MemoryProfile(r, tokens_per_row, engine.peak_bytes(trial)))
    return calibrate(profiles, capacity_bytes=engine.capacity_bytes, weights_bytes=engine.weights_bytes,
                     kv_bytes_per_token=131_072, method="planted")


# A 6-cell grid of the tiny preset on the CPU that real `tokenjoule sweep` processes measure in
# seconds (the kill, concurrent-sweep and worker tests share it).
TINY_GRID_YAML = """\
model: tiny
device: cpu
warmup: 1
repeats: 1
min_window_s: 0
split_prefill: false
idle_s: 0
input_tokens: [8, 16, 32]
output_tokens: 4
batch: [1, 2]
"""
