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
