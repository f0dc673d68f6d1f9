"""The `Engine` protocol and the registry that imports engines lazily by name.

An engine loads one model once (`load`) and then runs batches of synthetic requests of
exact lengths (`generate`). `tokenjoule --help` must never import torch or vLLM, so the
registry holds import paths, not classes.

Optional capabilities are declared, never discovered with getattr: an engine lists what it
can do in `capabilities` (a frozenset of the CAP_* names below) and implements the matching
methods; `EngineBase` gives every optional method a default (raising `CapabilityMissing`,
or None for `kv_cache_tokens`) so a caller asks `supports(engine, CAP_...)` first.

- CAP_PROBE_MEMORY: `probe_memory(spec)` runs a cheap pass at the cell's full size and raises
  the framework's out-of-memory error when it does not fit (the largest-batch search uses it,
  else one real `generate`).
- CAP_GENERATE_REQUESTS: `generate_requests(lengths, seed)` runs requests of their own
  (input, output) lengths in one call (compare-serving's offline side; the replay of `validate`).
- CAP_KV_CACHE_TOKENS: `kv_cache_tokens()` is the preallocated KV cache size in tokens.
- CAP_TENSOR_PARALLEL / CAP_PIPELINE_PARALLEL: the engine runs a cell with `tensor_parallel` /
  `pipeline_parallel` above 1 on that many GPUs. `ENGINE_CAPABILITIES` holds what each
  registered engine declares, so `check_parallel(spec)` can refuse a cell before anything (torch
  included) is imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from tokenjoule.errors import TokenjouleError, UnknownNameError
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


CAP_PROBE_MEMORY = "probe_memory"
CAP_GENERATE_REQUESTS = "generate_requests"
CAP_KV_CACHE_TOKENS = "kv_cache_tokens"
CAP_TENSOR_PARALLEL = "tensor_parallel"
CAP_PIPELINE_PARALLEL = "pipeline_parallel"
CAPABILITIES = (CAP_PROBE_MEMORY, CAP_GENERATE_REQUESTS, CAP_KV_CACHE_TOKENS, CAP_TENSOR_PARALLEL,
                CAP_PIPELINE_PARALLEL)
# What each registered engine declares (its class sets `capabilities` from here: one owner).
# transformers has tensor parallelism (tp_plan, under torch.distributed) but no pipeline
# parallelism for generation; vLLM has both.
ENGINE_CAPABILITIES: dict[str, frozenset[str]] = {
    "hf": frozenset({CAP_PROBE_MEMORY, CAP_GENERATE_REQUESTS, CAP_TENSOR_PARALLEL}),
    "vllm": frozenset({CAP_PROBE_MEMORY, CAP_GENERATE_REQUESTS, CAP_KV_CACHE_TOKENS, CAP_TENSOR_PARALLEL,
                       CAP_PIPELINE_PARALLEL}),
}


class CapabilityMissing(NotImplementedError):
    """An optional engine method was called on an engine that does not declare it."""


@runtime_checkable
class Engine(Protocol):
    name: str
    capabilities: frozenset[str]  # the optional CAP_* methods this engine implements

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

    # -- optional (declared in `capabilities`) -------------------------------------------------
    def probe_memory(self, spec: RunSpec) -> float | None:
        """Raise the framework's out-of-memory error if `spec` does not fit (CAP_PROBE_MEMORY);
        else return the peak device bytes the probe reached, None when the engine cannot read it
        (runs.max_batch refits its memory model on that at-scale point)."""

    def generate_requests(self, lengths: Sequence[tuple[int, int]], seed: int = 0) -> GenerationResult:
        """Requests of their own (input, output) lengths in one call (CAP_GENERATE_REQUESTS)."""

    def kv_cache_tokens(self) -> int | None:
        """Preallocated KV cache size in tokens, None when unknown (CAP_KV_CACHE_TOKENS)."""

    def max_num_seqs(self) -> int | None:
        """Sequences the engine's scheduler runs at once, None when it has no such bound
        (with the KV-cache capacity it bounds vLLM's largest batch, runs.max_batch)."""


class EngineBase:
    """Defaults for the optional part of the protocol; engines subclass it and set
    `capabilities` to what they implement."""

    name = "base"
    capabilities: frozenset[str] = frozenset()

    def probe_memory(self, spec: RunSpec) -> float | None:
        raise CapabilityMissing(f"engine {self.name} cannot probe memory")

    def generate_requests(self, lengths: Sequence[tuple[int, int]], seed: int = 0) -> GenerationResult:
        raise CapabilityMissing(f"engine {self.name} cannot run requests of different lengths in one call")

    def kv_cache_tokens(self) -> int | None:
        return None

    def max_num_seqs(self) -> int | None:
        return None


def supports(engine: Engine, capability: str) -> bool:
    """Whether `engine` declares `capability` (one of CAPABILITIES)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown engine capability {capability!r}; valid: {', '.join(CAPABILITIES)}")
    return capability in engine.capabilities


def check_parallel(spec: RunSpec) -> None:
    """Raise TokenjouleError (one line) when the spec's engine cannot run its parallelism."""
    caps = ENGINE_CAPABILITIES.get(spec.engine, frozenset())
    others = [e for e, c in ENGINE_CAPABILITIES.items() if CAP_PIPELINE_PARALLEL in c]
    if spec.pipeline_parallel > 1 and CAP_PIPELINE_PARALLEL not in caps:
        raise TokenjouleError(f"engine {spec.engine} has no pipeline parallelism (pipeline_parallel "
                              f"{spec.pipeline_parallel}); use --engine {' or '.join(others)} for --pp above 1, "
                              "or --pp 1")
    if spec.tensor_parallel > 1 and CAP_TENSOR_PARALLEL not in caps:
        raise TokenjouleError(f"engine {spec.engine} has no tensor parallelism; use --tp 1")


def get_engine(name: str) -> Engine:
    """Instantiate an engine by name, importing its module only now."""
    if name not in ENGINE_CLASSES:
        raise UnknownNameError("engine", name, list(ENGINE_MODES))
    module_name, cls_name = ENGINE_CLASSES[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)()
