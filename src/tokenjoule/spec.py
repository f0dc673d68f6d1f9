"""The specification of one measured cell (`RunSpec`) and every rule about which of its
fields matter for what.

- `spec_hash(spec)`: the key that sweeps resume on; two specs with the same hash describe the
  same experiment. Only fields that change what is measured go into it (not output paths).
- `load_key(spec)`: the fields that define one engine load; cells with equal keys share one
  loaded model (the runner groups by it, the engines compare it before reloading).
- `weights_key(spec)`: the narrower key of the target weights alone (HF keeps them across
  modes and decoding strategies).
- `memory_key(spec, gpu_name, cap)`: the largest-fitting-batch cache key (store table max_batch).
- `canonical_json(obj)` / `hash_of(obj)`: the one JSON canonicalisation and hasher.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tokenjoule.errors import UnknownNameError
from tokenjoule.limits import (MAX_BATCH_SIZE, MAX_PARALLEL, MAX_REPEATS, MAX_SEED, MAX_TOKENS, MAX_WARMUP,
                               MAX_WINDOW_S)

ENGINE_MODES: dict[str, tuple[str, ...]] = {
    "hf": ("eager", "compile", "cudagraphs"),
    "vllm": ("eager", "graphs"),
}
DECODING_STRATEGIES = ("greedy", "sample", "beam", "speculative")
# Measurement protocols of an offline cell (runs.windows says what each does).
PROTOCOLS = ("full", "adaptive")
BATCH_MAX = "max"  # an unresolved "largest fitting batch" cell (sweeps)
DEFAULT_MAX_BATCH_CAP = 1024  # ceiling of the largest-batch search
# `decoding.draft_model: "self"`: the target drafts for itself (HF: the same module as assistant;
# vLLM: the target's own path as the draft), so every proposal agrees with the target by
# construction. The high-acceptance bracket of speculative decoding with random weights.
SELF_DRAFT = "self"
GPU_ONLY_MODES = {("hf", "compile"), ("hf", "cudagraphs"), ("vllm", "eager"), ("vllm", "graphs")}


class DecodingSpec(BaseModel):
    """How tokens are chosen. Fields that do not apply to a strategy are ignored by it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    strategy: Literal["greedy", "sample", "beam", "speculative"] = "greedy"
    temperature: float = Field(0.7, gt=0, le=100)
    top_p: float = Field(0.9, gt=0, le=1)
    num_beams: int = Field(4, ge=2, le=256)
    draft_model: str | None = None  # preset or HF id of the draft model, or "self" (SELF_DRAFT; speculative)
    lookahead_tokens: int = Field(4, ge=1, le=256)  # draft tokens proposed per step (speculative)
    ngram: bool = False  # vLLM n-gram speculation instead of a draft model
    # Prompts built from one short random pattern repeated (engines/tokens.repeating_prompts):
    # gives n-gram speculation something to look up. Speculative only; hashed only when true.
    repeat_prompt: bool = False

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in DECODING_STRATEGIES:
            raise UnknownNameError("decoding", v, DECODING_STRATEGIES)
        return v

    def canonical(self) -> dict[str, Any]:
        """Only the fields that matter for this strategy (so hashes don't depend on unused ones)."""
        keep: dict[str, tuple[str, ...]] = {
            "greedy": (),
            "sample": ("temperature", "top_p"),
            "beam": ("num_beams",),
            "speculative": ("draft_model", "lookahead_tokens", "ngram"),
        }
        out: dict[str, Any] = {"strategy": self.strategy}
        for k in keep[self.strategy]:
            out[k] = getattr(self, k)
        if self.strategy == "speculative" and self.repeat_prompt:  # left out when false: old hashes hold
            out["repeat_prompt"] = True
        return out


class RunSpec(BaseModel):
    """One cell: a model on an engine, a batch of identical-length requests, a decoding strategy."""

    # Bounds: tokenjoule.limits (documented in docs/METHOD.md, "Limits").
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str  # preset name (random weights) or Hugging Face id
    engine: str = "hf"
    mode: str = "eager"
    decoding: DecodingSpec = DecodingSpec()
    batch_size: int = Field(8, ge=1, le=MAX_BATCH_SIZE)
    input_tokens: int = Field(512, ge=1, le=MAX_TOKENS)
    output_tokens: int = Field(64, ge=1, le=MAX_TOKENS)
    warmup: int = Field(3, ge=0, le=MAX_WARMUP)
    repeats: int = Field(3, ge=1, le=MAX_REPEATS)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on GPU, float32 on CPU) | bfloat16 | float16 | float32
    seed: int = Field(0, ge=0, le=MAX_SEED)
    tensor_parallel: int = Field(1, ge=1, le=MAX_PARALLEL)
    pipeline_parallel: int = Field(1, ge=1, le=MAX_PARALLEL)
    min_window_s: float = Field(2.0, ge=0, le=MAX_WINDOW_S)  # repeat a short batch inside one window up to this
    split_prefill: bool = True  # also measure a 1-output-token run for the prefill/decode split
    engine_options: dict[str, Any] = Field(default_factory=dict)
    # Measurement protocol (runs.windows): "full" = warmup + calibration + `repeats` windows;
    # "adaptive" = warm-up sized to the mode, windows until two agree within window_agree_rel.
    protocol: str = "full"
    window_agree_rel: float = Field(0.01, gt=0)
    max_windows: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _known_engine_and_mode(self) -> "RunSpec":
        if self.protocol not in PROTOCOLS:
            raise UnknownNameError("protocol", self.protocol, list(PROTOCOLS))
        if self.engine not in ENGINE_MODES:
            raise UnknownNameError("engine", self.engine, list(ENGINE_MODES))
        if self.mode not in ENGINE_MODES[self.engine]:
            raise UnknownNameError(f"mode for engine {self.engine}", self.mode, ENGINE_MODES[self.engine])
        return self

    def canonical(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["decoding"] = self.decoding.canonical()
        if self.protocol == "full":
            # The window options only apply to "adaptive"; leaving all three out keeps the hashes
            # of cells stored before protocols existed (they were measured with "full").
            for key in ("protocol", "window_agree_rel", "max_windows"):
                data.pop(key)
        return data

    def spec_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of the spec."""
        return hash_of(self.canonical())

    @property
    def label(self) -> str:
        parallel = (f" tp{self.tensor_parallel}" if self.tensor_parallel > 1 else "") + (
            f" pp{self.pipeline_parallel}" if self.pipeline_parallel > 1 else "")  # one-GPU labels as before
        return (
            f"{self.model} {self.engine}/{self.mode} {self.decoding.strategy} "
            f"b{self.batch_size} in{self.input_tokens} out{self.output_tokens}{parallel}"
        )


# -- the rules about which fields matter ---------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """The one canonical JSON form (sorted keys, no spaces) that every hash and key uses."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def hash_of(obj: Any) -> str:
    """sha256 (first 16 hex digits) of `canonical_json(obj)`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def spec_hash(spec: RunSpec | dict[str, Any]) -> str:
    """The resume key of a spec (a RunSpec, or an already canonical dict such as an online
    cell's spec)."""
    return spec.spec_hash() if isinstance(spec, RunSpec) else hash_of(spec)


def unresolved_hash(spec: RunSpec) -> str:
    """The resume key of a `batch: max` cell before its batch is known (batch_size "max")."""
    data = spec.canonical()
    data["batch_size"] = BATCH_MAX
    return hash_of(data)


def load_key(spec: RunSpec) -> str:
    """What defines one engine load: model, engine, mode, device, dtype, seed (random weights
    are seeded), parallelism, the speculative setup (vLLM builds it into the engine; HF loads
    the draft with the target) and the engine options. Batch size, lengths, warm-up, repeats
    and the other decoding strategies run on the same load."""
    d = spec.decoding
    speculative = ({"draft_model": d.draft_model, "lookahead_tokens": d.lookahead_tokens, "ngram": d.ngram}
                   if d.strategy == "speculative" else None)
    return canonical_json({
        "model": spec.model, "engine": spec.engine, "mode": spec.mode, "device": spec.device,
        "dtype": spec.dtype, "seed": spec.seed, "tensor_parallel": spec.tensor_parallel,
        "pipeline_parallel": spec.pipeline_parallel, "speculative": speculative,
        "engine_options": spec.engine_options,
    })


def weights_key(spec: RunSpec) -> str:
    """What defines the target model's weights in memory: model, device, dtype, seed and the
    engine options. An engine that switches mode or decoding strategy without reloading the
    weights (HF: a draft model loads beside them) compares this one; `load_key` is the
    engine-load rule of the runner and of engines that build mode and speculation in (vLLM)."""
    return canonical_json({"model": spec.model, "device": spec.device, "dtype": spec.dtype, "seed": spec.seed,
                           "engine_options": spec.engine_options})


def memory_key(spec: RunSpec, gpu_name: str | None, cap: int = DEFAULT_MAX_BATCH_CAP) -> str:
    """Largest-batch cache key: everything that changes memory use (model, engine, mode, dtype,
    parallelism, decoding, lengths, engine options), the GPU model and the search ceiling.
    Stored in existing databases: its form must not change."""
    return canonical_json({
        "model": spec.model, "engine": spec.engine, "mode": spec.mode, "dtype": spec.dtype,
        "tensor_parallel": spec.tensor_parallel, "pipeline_parallel": spec.pipeline_parallel,
        "decoding": spec.decoding.canonical(), "input_tokens": spec.input_tokens,
        "output_tokens": spec.output_tokens, "engine_options": spec.engine_options,
        "gpu_name": gpu_name or "unknown", "cap": cap,
    })
