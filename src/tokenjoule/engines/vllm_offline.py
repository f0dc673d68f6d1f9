"""The vLLM offline engine (`--engine vllm`): `LLM.generate` over token-id prompts.

- Presets run with random weights: the preset's config.json is written to a temporary
  directory and loaded with `load_format="dummy"`, `skip_tokenizer_init=True` (no tokenizer).
- Modes: `eager` (`enforce_eager=True`) and `graphs` (CUDA graphs, vLLM's default).
- Exact output lengths: `min_tokens = max_tokens = N`, `ignore_eos=True`, no detokenisation.
- Decoding: greedy, sampling, beam search (`LLM.beam_search`), speculative decoding with a
  draft model or n-gram lookup; the acceptance rate comes from vLLM's own counters.
- One engine stays alive across cells: `load` with a spec of the same model/mode/options is a
  no-op (engine start with CUDA-graph capture takes tens of seconds).

vLLM is imported only in `load`; where it is missing, a one-line error names the install.
vLLM runs the model in an engine process of its own, so `generate` returning means the GPU
work is done; `synchronize` has nothing to wait for.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from tokenjoule.engines.base import ENGINE_CAPABILITIES, EngineBase, GenerationResult
from tokenjoule.errors import MissingDependencyError, TokenjouleError
from tokenjoule.spec import RunSpec, load_key

INSTALL = "pip install 'tokenjoule[vllm]' (vLLM needs a CUDA GPU)"
_DRAFT_METRIC = "vllm:spec_decode_num_draft_tokens"
_ACCEPTED_METRIC = "vllm:spec_decode_num_accepted_tokens"
# engine_options keys passed straight to vllm.LLM (others are rejected, so none is ignored).
LLM_OPTIONS = ("max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
               "enable_prefix_caching", "enable_chunked_prefill", "kv_cache_dtype", "block_size")


def import_vllm():
    try:
        import vllm
    except ImportError:
        raise MissingDependencyError("vLLM", INSTALL) from None
    return vllm


def vllm_available() -> bool:
    """Whether vLLM can be imported, without importing it (that takes seconds)."""
    import importlib.util
    import sys

    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


class VLLMEngine(EngineBase):
    name = "vllm"
    capabilities = ENGINE_CAPABILITIES["vllm"]

    def __init__(self) -> None:
        # Fail at construction, before a runner measures idle power or records cells.
        if not vllm_available():
            raise MissingDependencyError("vLLM", INSTALL)
        self.llm: Any = None
        self._key: str | None = None
        self._tmp: list[tempfile.TemporaryDirectory] = []
        self._config: dict[str, Any] = {}
        self._spec: RunSpec | None = None
        self._avoid: tuple[int, ...] = ()

    # -- lifecycle --------------------------------------------------------------------------
    def load(self, spec: RunSpec) -> None:
        # The meter and the idle baseline initialise CUDA in this process before the engine
        # starts; vLLM's default fork start method then fails ("Cannot re-initialize CUDA in
        # forked subprocess"), so its workers must be spawned.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        key = load_key(spec)
        if self.llm is not None and key == self._key:
            self._spec = spec
            return
        vllm = import_vllm()
        if self.llm is not None:
            self.close()
        unknown = sorted(set(spec.engine_options) - set(LLM_OPTIONS))
        if unknown:
            raise TokenjouleError(f"unknown vllm engine option(s) {', '.join(unknown)}; valid: {', '.join(LLM_OPTIONS)}")
        if spec.device not in ("auto", "cuda") and not spec.device.startswith("cuda"):
            raise TokenjouleError(f"the vllm engine runs on CUDA GPUs; device {spec.device!r} is not supported")
        self._config, self._avoid = {}, ()
        path, dummy = self._model_dir(spec.model)
        kwargs: dict[str, Any] = dict(
            model=path, skip_tokenizer_init=True, enforce_eager=spec.mode == "eager",
            dtype="auto" if spec.dtype == "auto" else spec.dtype, seed=spec.seed,
            tensor_parallel_size=spec.tensor_parallel, pipeline_parallel_size=spec.pipeline_parallel,
            disable_log_stats=False,  # keeps the counters that give the acceptance rate
        )
        if dummy:
            kwargs["load_format"] = "dummy"
        # A cell runs the same batch of prompts many times (warm-up, calibration, windows);
        # with prefix caching on, every run after the first would skip most of its prefill
        # (seen on an H100: 80-88% prefix-cache hits), so the measured energy would not be
        # that of the batch. Off by default; `engine_options` can turn it back on.
        kwargs["enable_prefix_caching"] = False
        kwargs.update(spec.engine_options)
        speculative = self._speculative_config(spec)
        if speculative:
            kwargs["speculative_config"] = speculative
        self.llm = vllm.LLM(**kwargs)
        self._key, self._spec = key, spec

    def _model_dir(self, model: str) -> tuple[str, bool]:
        """(path or HF id, whether weights are dummy)."""
        from tokenjoule.engines.tokens import special_ids_from_config
        from tokenjoule.models.registry import resolve_model

        source = resolve_model(model)
        if not source.is_preset:
            self._config = {}
            return model, False
        tmp = tempfile.TemporaryDirectory(prefix=f"tokenjoule-vllm-{model}-")
        self._tmp.append(tmp)
        (Path(tmp.name) / "config.json").write_text(json.dumps(source.config))
        if not self._config:
            self._config = dict(source.config or {})
            self._avoid = tuple(sorted(special_ids_from_config(self._config)))
        return tmp.name, True

    def _speculative_config(self, spec: RunSpec) -> dict[str, Any] | None:
        d = spec.decoding
        if d.strategy != "speculative":
            return None
        if d.ngram:
            return {"method": "ngram", "num_speculative_tokens": d.lookahead_tokens,
                    "prompt_lookup_max": 4, "prompt_lookup_min": 1}
        from tokenjoule.models.registry import default_draft_for

        draft = d.draft_model or default_draft_for(spec.model)
        if draft == "self":  # spec.SELF_DRAFT: the target's own config (dummy weights are
            draft = spec.model  # initialised the same way for both, so they agree by construction)
        if draft is None:
            raise TokenjouleError(f"no draft model for {spec.model}; give decoding.draft_model or use ngram")
        saved = dict(self._config), self._avoid
        path, _ = self._model_dir(draft)
        self._config, self._avoid = saved
        return {"model": path, "num_speculative_tokens": d.lookahead_tokens}

    def close(self) -> None:
        self.llm = None
        self._key = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        for tmp in self._tmp:
            tmp.cleanup()
        self._tmp.clear()
        self._config = {}

    # -- running ----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        if "vocab_size" in self._config:
            return int(self._config["vocab_size"])
        return int(self.llm.llm_engine.model_config.get_vocab_size())

    def _sampling(self, spec: RunSpec, n_tokens: int):
        from vllm import SamplingParams

        d = spec.decoding
        common = dict(min_tokens=n_tokens, max_tokens=n_tokens, ignore_eos=True, detokenize=False)
        if d.strategy == "sample":
            return SamplingParams(temperature=d.temperature, top_p=d.top_p, seed=spec.seed, **common)
        return SamplingParams(temperature=0.0, **common)

    def generate(self, spec: RunSpec, output_tokens: int | None = None) -> GenerationResult:
        from tokenjoule.engines.tokens import prompts_for

        if self.llm is None:
            raise TokenjouleError("vllm engine: load(spec) must be called before generate")
        n = output_tokens or spec.output_tokens
        repeat = spec.decoding.strategy == "speculative" and spec.decoding.repeat_prompt
        prompts = prompts_for(repeat, spec.batch_size, spec.input_tokens, self.vocab_size, spec.seed, self._avoid)
        if spec.decoding.strategy == "beam":
            return self._beam(spec, prompts, n)
        before = self._spec_counters()
        t0 = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], self._sampling(spec, n), use_tqdm=False)
        duration = time.perf_counter() - t0
        return GenerationResult(
            input_tokens=[len(o.prompt_token_ids) for o in outputs],
            output_tokens=[len(o.outputs[0].token_ids) for o in outputs], duration_s=duration,
            acceptance_rate=self._acceptance(before) if spec.decoding.strategy == "speculative" else None,
            extra={"acceptance_note": "random weights: acceptance is not representative of real models"}
            if spec.decoding.strategy == "speculative" and self._config else {})

    def _beam(self, spec: RunSpec, prompts: list[list[int]], n: int) -> GenerationResult:
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=spec.decoding.num_beams, max_tokens=n, ignore_eos=True)
        t0 = time.perf_counter()
        outputs = self.llm.beam_search([{"prompt_token_ids": p} for p in prompts], params)
        duration = time.perf_counter() - t0
        # Each sequence's tokens include the prompt; the best beam's extra tokens are the output.
        outs = [len(o.sequences[0].tokens) - len(p) for o, p in zip(outputs, prompts)]
        return GenerationResult(input_tokens=[len(p) for p in prompts], output_tokens=outs, duration_s=duration,
                                extra={"num_beams": spec.decoding.num_beams})

    def generate_requests(self, lengths: Sequence[tuple[int, int]], seed: int = 0,
                          avoid: Sequence[int] | None = None) -> GenerationResult:
        """Requests of different lengths in ONE `LLM.generate` call (vLLM schedules them with
        continuous batching from a full queue). Prompt i is `engines.tokens.synthetic_prompt(i, ...)`,
        the same ids an online run with the same seed sends."""
        from tokenjoule.engines.tokens import synthetic_prompt
        from vllm import SamplingParams

        if self.llm is None:
            raise TokenjouleError("vllm engine: load(spec) must be called before generate_requests")
        avoid_ids = tuple(self._avoid if avoid is None else avoid)
        prompts = [{"prompt_token_ids": synthetic_prompt(i, a, self.vocab_size, seed, avoid_ids)}
                   for i, (a, _) in enumerate(lengths)]
        params = [SamplingParams(temperature=0.0, min_tokens=b, max_tokens=b, ignore_eos=True, detokenize=False)
                  for _, b in lengths]
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        duration = time.perf_counter() - t0
        return GenerationResult(input_tokens=[len(o.prompt_token_ids) for o in outputs],
                                output_tokens=[len(o.outputs[0].token_ids) for o in outputs], duration_s=duration)

    def _spec_counters(self) -> dict[str, float] | None:
        try:
            metrics = self.llm.get_metrics()
        except Exception:  # older vLLM or stats disabled: no acceptance rate (None, not 0)
            return None
        out: dict[str, float] = {}
        for m in metrics:
            if getattr(m, "name", None) in (_DRAFT_METRIC, _ACCEPTED_METRIC):
                out[m.name] = out.get(m.name, 0.0) + float(getattr(m, "value", 0.0))
        return out

    def _acceptance(self, before: dict[str, float] | None) -> float | None:
        after = self._spec_counters()
        if before is None or after is None:
            return None
        drafted = after.get(_DRAFT_METRIC, 0.0) - before.get(_DRAFT_METRIC, 0.0)
        accepted = after.get(_ACCEPTED_METRIC, 0.0) - before.get(_ACCEPTED_METRIC, 0.0)
        return accepted / drafted if drafted > 0 else None

    def probe_memory(self, spec: RunSpec) -> float | None:
        """vLLM preallocates its KV cache; a batch whose tokens exceed it cannot run at once.
        Raises torch.OutOfMemoryError in that case (what the sweep's batch search expects).
        Arithmetic only: no device peak to report (None)."""
        self.load(spec)
        capacity = self.kv_cache_tokens()
        if capacity is None:
            return None
        beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
        need = spec.batch_size * beams * (spec.input_tokens + spec.output_tokens)
        if need > capacity:
            import torch

            raise torch.OutOfMemoryError(f"vLLM KV cache out of memory: batch {spec.batch_size} needs {need} "
                                         f"token slots, the cache holds {capacity}")
        return None

    def kv_cache_tokens(self) -> int | None:
        try:
            cache = self.llm.llm_engine.vllm_config.cache_config
            blocks, size = cache.num_gpu_blocks, cache.block_size
        except AttributeError:
            return None
        return int(blocks) * int(size) if blocks and size else None

    def options_as_run(self) -> dict[str, Any]:
        """What the running engine's config says (not what was asked): prefix caching, max
        sequences, CUDA graphs, attention backend. A value vLLM's config does not hold is None
        with the reason in `not_recorded`."""
        cfg = getattr(getattr(self.llm, "llm_engine", None), "vllm_config", None)
        facts: dict[str, Any] = {}
        missing: list[str] = []
        paths = {
            "enable_prefix_caching": ("cache_config", "enable_prefix_caching"),
            "block_size": ("cache_config", "block_size"),
            "gpu_memory_utilization": ("cache_config", "gpu_memory_utilization"),
            "kv_cache_dtype": ("cache_config", "cache_dtype"),
            "max_num_seqs": ("scheduler_config", "max_num_seqs"),
            "max_num_batched_tokens": ("scheduler_config", "max_num_batched_tokens"),
            "enable_chunked_prefill": ("scheduler_config", "enable_chunked_prefill"),
            "max_model_len": ("model_config", "max_model_len"),
            "enforce_eager": ("model_config", "enforce_eager"),
            "dtype": ("model_config", "dtype"),
            "cudagraph_mode": ("compilation_config", "cudagraph_mode"),
            "compilation_level": ("compilation_config", "level"),
            "attention_backend": ("attention_config", "backend"),
        }
        for key, (section, attr) in paths.items():
            value = getattr(getattr(cfg, section, None), attr, None)
            if value is None:
                missing.append(key)
            facts[key] = value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
        if facts.get("attention_backend") is None and os.environ.get("VLLM_ATTENTION_BACKEND"):
            facts["attention_backend"] = os.environ["VLLM_ATTENTION_BACKEND"]
            missing.remove("attention_backend")
        if missing:
            facts["not_recorded"] = f"not in vLLM's config here: {', '.join(missing)}"
        return facts

    def max_num_seqs(self) -> int | None:
        """Sequences the scheduler runs at once: with the KV-cache capacity, what bounds the
        largest batch one generate call runs concurrently (runs.max_batch)."""
        try:
            return int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        except (AttributeError, TypeError, ValueError):
            return None

    def synchronize(self) -> None:
        """Nothing to wait for: LLM.generate returns after the engine process finished."""

    def device_indices(self) -> list[int]:
        if self._spec is None:
            return []
        return list(range(self._spec.tensor_parallel * self._spec.pipeline_parallel))

    def provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.name}
        try:
            import vllm

            out["vllm_version"] = vllm.__version__
        except ImportError:
            pass
        try:
            import torch
            import transformers

            out.update(torch_version=torch.__version__, transformers_version=transformers.__version__)
        except ImportError:
            pass
        if self.llm is not None:
            out["engine_options_as_run"] = self.options_as_run()
        if self._spec is not None:
            out.update(model=self._spec.model, mode=self._spec.mode,
                       weights="random (vLLM dummy load)" if self._config else "pretrained",
                       kv_cache_tokens=self.kv_cache_tokens() if self.llm is not None else None)
        if self._config:
            try:
                from tokenjoule.models.architecture import architecture_from_config

                arch = architecture_from_config(self._config)
                out.update(model_params=arch.params_total, model_active_params=arch.params_active)
            except Exception as exc:  # provenance must never fail a cell
                out["model_params_error"] = " ".join(str(exc).split())
        return out
