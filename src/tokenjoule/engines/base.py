"""The `Engine` protocol and the registry that imports engines lazily by name.

An engine loads one model once (`load`) and then runs batches of synthetic requests of
exact lengths (`generate`). `tokenjoule --help` must never import torch or vLLM, so the
registry holds import paths, not classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenjoule.errors import UnknownNameError
from tokenjoule.spec import ENGINE_MODES, RunSpec

ENGINE_CLASSES: dict[str, str] = {
    "hf": "tokenjoule.engines.hf:HFEngine",
    "vllm": "tokenjoule.engines.vllm_offline:VLLMEngine",
}


@dataclass
class GenerationResult:
    """What one batch produced. Token counts are verified against the request."""

    input_tokens: list[int]  # per request
    output_tokens: list[int]  # per request (generated, EOS ignored)
    duration_s: float  # wall time of the batch, device synchronised
    acceptance_rate: float | None = None  # speculative decoding: accepted / proposed draft tokens
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_output_tokens(self) -> int:
        return sum(self.output_tokens)

    @property
    def total_input_tokens(self) -> int:
        return sum(self.input_tokens)


class Engine(Protocol):
    name: str

    def load(self, spec: RunSpec) -> None:
        """Load the model (and draft model) the spec names on its device. Called once per
        model/engine/mode group; `generate` may then run any lengths and batch sizes."""

    def generate(self, spec: RunSpec, output_tokens: int | None = None) -> GenerationResult:
        """Run one batch of `spec.batch_size` requests of `spec.input_tokens` seeded random
        token ids, generating exactly `output_tokens` (default `spec.output_tokens`) each."""

    def synchronize(self) -> None:
        """Wait for queued device work (called at measurement window edges)."""

    def device_indices(self) -> list[int]:
        """CUDA device indices the engine uses (empty on CPU)."""

    def provenance(self) -> dict[str, Any]:
        """Software versions (torch, transformers, vllm...) and the model's parameter count."""

    def close(self) -> None: ...


def get_engine(name: str) -> Engine:
    """Instantiate an engine by name, importing its module only now."""
    if name not in ENGINE_CLASSES:
        raise UnknownNameError("engine", name, list(ENGINE_MODES))
    module_name, cls_name = ENGINE_CLASSES[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
