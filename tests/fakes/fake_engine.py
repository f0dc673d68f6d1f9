"""A deterministic engine for runner and CLI tests: scripted durations, exact token counts,
optional out-of-memory errors. It advances a FakeClock instead of sleeping."""

from __future__ import annotations

from typing import Any

from tokenjoule.engines.base import EngineBase, GenerationResult
from tokenjoule.spec import RunSpec

from fakes.clock_meter import FakeClock


class FakeOutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError (matched by its message)."""


class FakeEngine(EngineBase):
    """Duration of one batch = prefill_s_per_token x batch x input + decode_s_per_step x (out - 1)
    + prefill step, unless `durations_s` scripts the first calls (e.g. a slow first warm-up)."""

    name = "fake"
    capabilities: frozenset[str] = frozenset()

    def __init__(
        self,
        clock: FakeClock | None = None,
        prefill_s_per_token: float = 1e-4,
        decode_s_per_step: float = 0.01,
        durations_s: list[float] | None = None,
        oom_on_load: bool = False,
        oom_at_batch: int | None = None,
        acceptance_rate: float | None = None,
    ):
        self.clock = clock or FakeClock()
        self.prefill_s_per_token = prefill_s_per_token
        self.decode_s_per_step = decode_s_per_step
        self.durations_s = list(durations_s or [])
        self.oom_on_load = oom_on_load
        self.oom_at_batch = oom_at_batch
        self.acceptance_rate = acceptance_rate
        self.calls: list[tuple[int, int]] = []  # (batch_size, output_tokens) per generate
        self.loaded: RunSpec | None = None
        self.load_count = 0
        self.closed = False
        self.sync_count = 0

    def batch_duration_s(self, spec: RunSpec, output_tokens: int) -> float:
        prefill = self.prefill_s_per_token * spec.batch_size * spec.input_tokens
        return prefill + self.decode_s_per_step * output_tokens

    def load(self, spec: RunSpec) -> None:
        self.load_count += 1
        if self.oom_on_load:
            raise FakeOutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.loaded = spec

    def generate(self, spec: RunSpec, output_tokens: int | None = None) -> GenerationResult:
        assert self.loaded is not None, "generate before load"
        out = spec.output_tokens if output_tokens is None else output_tokens
        if self.oom_at_batch is not None and spec.batch_size >= self.oom_at_batch:
            raise FakeOutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 1.00 GiB\n(batch {spec.batch_size})"
            )
        self.calls.append((spec.batch_size, out))
        duration = self.durations_s.pop(0) if self.durations_s else self.batch_duration_s(spec, out)
        self.clock.advance(duration)
        return GenerationResult(
            input_tokens=[spec.input_tokens] * spec.batch_size,
            output_tokens=[out] * spec.batch_size,
            duration_s=duration,
            acceptance_rate=self.acceptance_rate,
        )

    def synchronize(self) -> None:
        self.sync_count += 1

    def device_indices(self) -> list[int]:
        return []

    def provenance(self) -> dict[str, Any]:
        return {"torch_version": "fake", "model_params": 1000, "model_active_params": 1000}

    def close(self) -> None:
        self.closed = True
