"""The Hugging Face transformers engine: `model.generate` on batches of synthetic prompts.

Every request in a batch has exactly `spec.input_tokens` seeded random token ids (no padding,
attention mask all ones) and generates exactly the requested number of tokens: EOS is masked
until then (min_new_tokens = max_new_tokens) and the count is verified after the call.
Modes and decoding strategies are translated into `generate()` arguments in hf_decoding.py;
the compiled modes run on a StaticCache kept per shape and reset before each call
(hf_decoding.StaticCachePool), so CUDA graphs are recorded once per shape and then replayed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

import torch

from tokenjoule.engines.base import ENGINE_CAPABILITIES, EngineBase, GenerationResult, check_parallel
from tokenjoule.engines.hf_decoding import (
    STATIC_CACHE_MODES,
    AcceptanceCounter,
    StaticCachePool,
    cache_kwarg_name,
    check_supported,
    compile_config,
    configure_assistant,
    decoding_kwargs,
    mode_kwargs,
    reuses_static_cache,
    static_cache_len,
)
from tokenjoule.engines.tokens import prompts_for, special_ids_from_config
from tokenjoule.errors import TokenjouleError
from tokenjoule.models.loading import LoadedModel, count_params, load_model, resolve_device
from tokenjoule.models.registry import default_draft_for
from tokenjoule.spec import SELF_DRAFT, RunSpec, weights_key

SPECULATIVE_NOTE = (
    "random-weight target and draft: the acceptance rate says nothing about a trained pair; "
    "only the work per proposed token is representative"
)
# Recompilation happens once per new (batch, length) shape; a sweep can visit dozens.
_DYNAMO_RECOMPILE_LIMIT = 256


class HFEngine(EngineBase):
    """Engine protocol implementation on transformers (see engines/base.py)."""

    name = "hf"
    capabilities = ENGINE_CAPABILITIES["hf"]

    def __init__(self, rank_device: str | None = None) -> None:
        # rank_device: this engine is one rank of a tensor-parallel group (engines.tp_rank) on
        # that device. Without it, a cell with tensor_parallel > 1 runs on a group of ranks
        # that this engine starts and drives (engines.tp_group.TensorParallelHF).
        self._rank_device = rank_device
        self._group: Any = None
        self._loaded: LoadedModel | None = None
        self._draft: LoadedModel | None = None
        self._key: str | None = None
        self._draft_name: str | None = None
        self._mode: str | None = None
        self._prompt_cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._static_caches = StaticCachePool()

    # ----- loading ---------------------------------------------------------------------------
    @staticmethod
    def _check_mode(spec: RunSpec, device: torch.device) -> None:
        if spec.mode in STATIC_CACHE_MODES and device.type != "cuda":
            raise TokenjouleError(f"mode {spec.mode} needs a CUDA GPU; valid on CPU: eager")

    def load(self, spec: RunSpec) -> None:
        check_parallel(spec)  # no pipeline parallelism in transformers: one line naming vllm
        if spec.tensor_parallel > 1 and self._rank_device is None:
            self._load_group(spec)
            return
        if self._group is not None:  # back to one device: the ranks stop
            self._group.close()
            self._group = None
        device = torch.device(self._rank_device) if self._rank_device else resolve_device(spec.device)
        self._check_mode(spec, device)
        check_supported(spec)
        if spec.decoding.strategy == "speculative":
            self._draft_name_for(spec)  # fail before loading a large target model
        key = weights_key(spec)
        if self._key != key:
            self.close()
            self._loaded = load_model(
                spec.model, device, spec.dtype, seed=spec.seed,
                attn_implementation=spec.engine_options.get("attn_implementation"),
                tensor_parallel=spec.tensor_parallel > 1,
            )
            self._key = key
        self._mode = spec.mode
        if spec.mode in STATIC_CACHE_MODES:
            _raise_dynamo_limits()
        if spec.decoding.strategy == "speculative":
            self._load_draft(spec)

    def _load_group(self, spec: RunSpec) -> None:
        if spec.mode != "eager" or spec.decoding.strategy == "speculative":
            raise TokenjouleError(f"hf tensor parallelism runs mode eager without speculative decoding (got "
                                  f"{spec.mode}, {spec.decoding.strategy}); use --tp 1 or --engine vllm")
        from tokenjoule.engines.tp_group import TensorParallelHF

        if self._loaded is not None:
            self.close()
        if self._group is None:
            self._group = TensorParallelHF()
        self._group.load(spec)

    @staticmethod
    def _draft_name_for(spec: RunSpec) -> str:
        draft_name = spec.decoding.draft_model or default_draft_for(spec.model)
        if draft_name is None:
            raise TokenjouleError(
                f"speculative decoding of {spec.model!r} needs decoding.draft_model (a preset or HF id with the "
                f"same tokenizer); a default draft exists only for llama, r1-distill-qwen-32b and smollm2-360m"
            )
        return draft_name

    def _load_draft(self, spec: RunSpec) -> None:
        draft_name = self._draft_name_for(spec)
        if self._draft is not None and self._draft_name == draft_name:
            return
        self._free_draft()
        assert self._loaded is not None
        if draft_name == SELF_DRAFT:
            # The target drafts for itself: the same module (no second copy of the weights),
            # so every greedy proposal is what the target would emit: acceptance 1 by construction.
            # Assisted generation keeps the assistant's KV cache apart from the target's.
            self._draft, self._draft_name = self._loaded, draft_name
            return
        # seed + 1: a draft built from the same preset and seed as the target would be an
        # exact copy and accept every token, which no real draft does.
        self._draft = load_model(draft_name, self._loaded.device, spec.dtype, seed=spec.seed + 1)
        self._draft_name = draft_name

    def _ensure_loaded(self, spec: RunSpec) -> LoadedModel:
        if self._loaded is None or self._key != weights_key(spec) or self._mode != spec.mode:
            self.load(spec)
        elif spec.decoding.strategy == "speculative":
            check_supported(spec)
            self._load_draft(spec)
        assert self._loaded is not None
        return self._loaded

    # ----- generation ------------------------------------------------------------------------
    def _prompts(
        self, lm: LoadedModel, batch: int, input_tokens: int, seed: int, with_draft: bool, repeat: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vocab = lm.architecture.vocab_size
        avoid = special_ids_from_config(lm.model.config)
        if with_draft and self._draft is not None:  # ids must be valid for the draft too
            vocab = min(vocab, self._draft.architecture.vocab_size)
            avoid |= special_ids_from_config(self._draft.model.config)
        key = (batch, input_tokens, seed, vocab, tuple(sorted(avoid)), repeat)
        if key not in self._prompt_cache:
            ids = torch.tensor(prompts_for(repeat, batch, input_tokens, vocab, seed, avoid), dtype=torch.long)
            ids = ids.to(lm.device)
            self._prompt_cache.clear()  # keep only the current shape on the device
            self._prompt_cache[key] = (ids, torch.ones_like(ids))
        return self._prompt_cache[key]

    def _pad_token_id(self, lm: LoadedModel) -> int:
        cfg = lm.model.config
        for value in (getattr(cfg, "pad_token_id", None), getattr(cfg, "eos_token_id", None)):
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        return 0

    def _reset_static_cache_size(self, model: Any) -> None:
        # transformers sizes a static cache as max(this call, any earlier call); reset that so a
        # cell's KV length (and so its attention work) never depends on which cells ran before.
        model.__dict__.pop("_previous_max_cache_length", None)

    def _mode_kwargs(self, lm: LoadedModel, spec: RunSpec, new_tokens: int, kwargs: dict[str, Any]) -> str:
        """Add the mode's generate() arguments to `kwargs`; returns how the KV cache is provided:
        "dynamic" (eager), "reused" / "new" (the engine's kept StaticCache), "per-call" (beam
        search in a compiled mode: transformers builds a static cache for each call)."""
        if spec.mode not in STATIC_CACHE_MODES:
            kwargs |= mode_kwargs(spec.mode)
            return "dynamic"
        if not reuses_static_cache(spec):
            kwargs |= mode_kwargs(spec.mode)
            self._reset_static_cache_size(lm.model)
            return "per-call"
        rows = spec.batch_size * (spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1)
        cache, reused = self._static_caches.get(
            lm.model, rows, static_cache_len(spec, new_tokens), lm.dtype, lm.device
        )
        # compile_config alone (no cache_implementation: transformers refuses both with a cache)
        # still compiles the decode step, since the cache passed is compileable.
        kwargs |= {"compile_config": compile_config(spec.mode), cache_kwarg_name(): cache}
        return "reused" if reused else "new"

    def generate(self, spec: RunSpec, output_tokens: int | None = None) -> GenerationResult:
        if self._group is not None:
            return self._group.generate(spec, output_tokens)
        check_supported(spec)
        lm = self._ensure_loaded(spec)
        new_tokens = int(output_tokens if output_tokens is not None else spec.output_tokens)
        if new_tokens < 1:
            raise TokenjouleError(f"output_tokens must be >= 1, got {new_tokens}")
        speculative = spec.decoding.strategy == "speculative"
        ids, mask = self._prompts(lm, spec.batch_size, spec.input_tokens, spec.seed, with_draft=speculative,
                                  repeat=speculative and spec.decoding.repeat_prompt)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "max_new_tokens": new_tokens,
            "min_new_tokens": new_tokens,
            "pad_token_id": self._pad_token_id(lm),
            "use_cache": True,
        }
        kv_cache = self._mode_kwargs(lm, spec, new_tokens, kwargs)
        kwargs |= decoding_kwargs(spec)
        counter: AcceptanceCounter | None = None
        if spec.decoding.strategy == "speculative":
            assert self._draft is not None
            configure_assistant(self._draft.model, spec.decoding.lookahead_tokens)
            kwargs["assistant_model"] = self._draft.model
            counter = AcceptanceCounter()
            counter.install(lm.model)
        torch.manual_seed(spec.seed)  # sampling is reproducible per cell
        try:
            self.synchronize()
            start = time.perf_counter()
            out = lm.model.generate(**kwargs)
            self.synchronize()
            duration_s = time.perf_counter() - start
        except torch.OutOfMemoryError:
            # a kept cache must not hold memory that the next (smaller) cell needs
            kwargs.clear()
            self._static_caches.clear()
            raise
        finally:
            if counter is not None:
                AcceptanceCounter.uninstall(lm.model)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        produced = int(sequences.shape[1]) - spec.input_tokens
        rows = int(sequences.shape[0])
        if rows != spec.batch_size or produced != new_tokens:
            raise TokenjouleError(
                f"{spec.label}: expected {spec.batch_size} sequences of {new_tokens} new tokens, "
                f"got {rows} of {produced}"
            )
        extra: dict[str, Any] = {
            "mode": spec.mode,
            "decoding": spec.decoding.strategy,
            "cache_implementation": "static" if spec.mode in STATIC_CACHE_MODES else "dynamic",
            "kv_cache": kv_cache,
        }
        acceptance = None
        if counter is not None:
            acceptance = counter.acceptance_rate
            extra |= {
                "draft_model": self._draft_name,
                "draft_is_target": self._draft_name == SELF_DRAFT,
                "proposed_tokens": counter.proposed_tokens,
                "accepted_tokens": counter.accepted_tokens,
                "verification_steps": counter.steps,
                "note": SPECULATIVE_NOTE if self._is_random_weights() else "",
            }
        del out, sequences
        return GenerationResult(
            input_tokens=[spec.input_tokens] * spec.batch_size,
            output_tokens=[new_tokens] * spec.batch_size,
            duration_s=duration_s,
            acceptance_rate=acceptance,
            extra=extra,
        )

    def generate_requests(self, lengths: Sequence[tuple[int, int]], seed: int = 0) -> GenerationResult:
        """ONE static batch of requests of different lengths, padded as static batching pads.

        Inputs are left-padded to the longest input of the batch (attention mask 0 on the pads)
        and every row generates until the longest output of the batch: that is the work a
        static-batching deployment does, so the energy measured around this call is what such a
        deployment spends on these requests. `input_tokens` / `output_tokens` of the result are
        the requests' own (useful) lengths; `extra` counts the computed (padded) tokens.
        Prompt i is `engines.tokens.synthetic_prompt(i, ...)`, as in the vLLM engine. Eager mode
        only: the compiled modes keep one static cache per shape, and every batch here differs.
        """
        from tokenjoule.engines.tokens import synthetic_prompt

        if self._group is not None:
            return self._group.generate_requests(lengths, seed)
        if self._loaded is None:
            raise TokenjouleError("hf engine: load(spec) must be called before generate_requests")
        if self._mode in STATIC_CACHE_MODES:
            raise TokenjouleError(f"generate_requests runs hf in eager mode only (loaded: {self._mode}); "
                                  "valid: eager")
        if not lengths:
            raise TokenjouleError("generate_requests needs at least one (input_tokens, output_tokens) pair")
        if any(int(a) < 1 or int(b) < 1 for a, b in lengths):
            raise TokenjouleError("every request needs >= 1 input and >= 1 output token")
        lm = self._loaded
        pad = self._pad_token_id(lm)
        avoid = tuple(sorted(special_ids_from_config(lm.model.config)))
        vocab = lm.architecture.vocab_size
        longest_in = max(int(a) for a, _ in lengths)
        new_tokens = max(int(b) for _, b in lengths)
        ids = torch.full((len(lengths), longest_in), pad, dtype=torch.long)
        mask = torch.zeros((len(lengths), longest_in), dtype=torch.long)
        for row, (a, _) in enumerate(lengths):
            ids[row, longest_in - int(a):] = torch.tensor(synthetic_prompt(row, int(a), vocab, seed, avoid))
            mask[row, longest_in - int(a):] = 1
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(lm.device), "attention_mask": mask.to(lm.device), "max_new_tokens": new_tokens,
            "min_new_tokens": new_tokens, "pad_token_id": pad, "use_cache": True, "do_sample": False,
        }
        kwargs |= mode_kwargs("eager")
        self.synchronize()
        start = time.perf_counter()
        out = lm.model.generate(**kwargs)
        self.synchronize()
        duration_s = time.perf_counter() - start
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        produced = int(sequences.shape[1]) - longest_in
        if int(sequences.shape[0]) != len(lengths) or produced != new_tokens:
            raise TokenjouleError(f"expected {len(lengths)} sequences of {new_tokens} new tokens, "
                                  f"got {int(sequences.shape[0])} of {produced}")
        del out, sequences
        ins, outs = [int(a) for a, _ in lengths], [int(b) for _, b in lengths]
        return GenerationResult(
            input_tokens=ins, output_tokens=outs, duration_s=duration_s,
            extra={"padding": "inputs left-padded to the longest; all rows generate the longest output",
                   "computed_input_tokens": len(lengths) * longest_in,
                   "computed_output_tokens": len(lengths) * new_tokens,
                   "useful_input_tokens": sum(ins), "useful_output_tokens": sum(outs)},
        )

    def _is_random_weights(self) -> bool:
        return bool(self._loaded and self._loaded.source.is_preset) or bool(
            self._draft and self._draft.source.is_preset
        )

    def probe_memory(self, spec: RunSpec) -> float | None:
        """Raise torch.OutOfMemoryError when batch_size x (input + output) tokens do not fit.

        One forward pass with use_cache over the full final length stands in (conservatively:
        all tokens at once) for the KV cache and activations of the real run. Only the last
        position's logits are kept, as `generate` does during prefill. Kept static caches are
        dropped first, so the probe sees the memory a fresh run of this cell would see.
        Returns the peak allocated device bytes of the pass (CUDA), None on CPU.
        """
        if self._group is not None:
            return self._group.probe_memory(spec)
        lm = self._ensure_loaded(spec)
        self._static_caches.clear()
        rows = spec.batch_size * (spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1)
        length = spec.input_tokens + spec.output_tokens
        extra_kw: dict[str, Any] = {}
        if getattr(lm.model, "_supports_logits_to_keep", lambda: False)():
            extra_kw["logits_to_keep"] = 1
        ids = out = None
        fitted = False
        cuda = lm.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(lm.device)
        try:
            ids = torch.randint(
                10, max(11, lm.architecture.vocab_size - 10), (rows, length), device=lm.device, dtype=torch.long
            )
            with torch.inference_mode():
                out = lm.model(input_ids=ids, use_cache=True, **extra_kw)
            self.synchronize()
            peak = float(torch.cuda.max_memory_allocated(lm.device)) if cuda else None
            fitted = True
            return peak
        finally:
            del ids, out
            if fitted:
                # Keep the allocator's segments cached, so that the cell's first full-length batch
                # can split them instead of calling cudaMalloc for the KV tensors every decode step
                # regrows (the suspected cause of that batch running up to 2.1x as long as the next
                # ones on an H200; runs.windows, "settling windows"). On out-of-memory the allocator
                # frees its cache and retries by itself, so this costs no capacity.
                gc.collect()
            else:
                self._free_memory()

    # ----- protocol housekeeping ----------------------------------------------------------------
    def synchronize(self) -> None:
        if self._group is not None:
            self._group.synchronize()  # every rank's device, and every rank at the edge
            return
        if self._loaded is not None and self._loaded.device.type == "cuda":
            torch.cuda.synchronize(self._loaded.device)

    def device_indices(self) -> list[int]:
        if self._group is not None:
            return self._group.device_indices()
        if self._loaded is None or self._loaded.device.type != "cuda":
            return []
        return [self._loaded.device.index or 0]

    def provenance(self) -> dict[str, Any]:
        if self._group is not None:
            return self._group.provenance()
        import transformers

        out: dict[str, Any] = {
            "engine": self.name,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        }
        if self._loaded is not None:
            lm = self._loaded
            out |= {
                "model": lm.source.name,
                "model_source": lm.source.kind,
                "weights": "random (seeded normal init)" if lm.source.is_preset else "pretrained",
                "model_params": count_params(lm.model),
                "model_active_params": lm.architecture.params_active,
                "dtype": str(lm.dtype).removeprefix("torch."),
                "device": str(lm.device),
                "attn_implementation": lm.attn_implementation,
                "mode": self._mode,
                "engine_options_as_run": {
                    "attn_implementation": lm.attn_implementation,
                    "kv_cache": "static (kept per shape)" if self._mode in STATIC_CACHE_MODES else "dynamic",
                    "compile_mode": STATIC_CACHE_MODES.get(self._mode or "", None),
                    "generate_kwargs": "input_ids, attention_mask, max_new_tokens = min_new_tokens, pad_token_id, "
                                       "use_cache=True" + (", disable_compile=True" if self._mode == "eager" else ""),
                },
            }
        if self._draft is not None:
            out |= {"draft_model": self._draft_name, "draft_model_params": count_params(self._draft.model)}
        return out

    def _free_draft(self) -> None:
        if self._draft is not None:
            self._draft = None
            self._draft_name = None
            self._free_memory()

    @staticmethod
    def _free_memory() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
            self._group = None
        self._prompt_cache.clear()
        self._static_caches.clear()
        self._loaded = None
        self._draft = None
        self._draft_name = None
        self._key = None
        self._free_memory()


def _raise_dynamo_limits() -> None:
    """Let torch.compile keep one graph per shape instead of silently falling back to eager."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < _DYNAMO_RECOMPILE_LIMIT:
            setattr(cfg, name, _DYNAMO_RECOMPILE_LIMIT)
