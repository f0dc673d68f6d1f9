"""`generate()` arguments for each engine mode and decoding strategy, and the speculative
decoding acceptance counter, for the Hugging Face engine.

Modes (what changes between them is only how the decode step runs):

- eager: the plain PyTorch forward with a dynamic KV cache; auto-compilation disabled.
- compile: a static KV cache and the forward compiled by `torch.compile` (inductor, mode
  "default": fused kernels, no CUDA graphs). transformers compiles only the decode step; the
  prefill runs eagerly (its shape changes with every prompt length).
- cudagraphs: the same static cache, compiled in mode "reduce-overhead", so each decode step
  replays a captured CUDA graph instead of launching kernels one by one.

Both compiled modes use transformers' `compile_config` path (transformers >= 4.50, all 5.x).
The static KV cache is a `transformers.StaticCache` that the engine keeps per shape and passes
to every `generate` call (see `StaticCachePool`): when transformers builds the cache itself
(`cache_implementation="static"`), every call allocates new cache tensors, and CUDA graph trees
re-record their graphs whenever a static input moves to a new address, so mode cudagraphs would
measure graph recording instead of replay. Beam search keeps the per-call cache (see
`reuses_static_cache`).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from typing import Any, Callable

from tokenjoule.errors import TokenjouleError
from tokenjoule.spec import RunSpec

STATIC_CACHE_MODES = {"compile": "default", "cudagraphs": "reduce-overhead"}


def compile_config(mode: str) -> Any:
    """The `CompileConfig` of a compiled mode. transformers compares configs by value, so a new
    but equal object per call reuses the model's compiled forward."""
    if mode not in STATIC_CACHE_MODES:
        raise TokenjouleError(f"mode {mode!r} is not compiled; compiled modes: {', '.join(STATIC_CACHE_MODES)}")
    from transformers import CompileConfig

    return CompileConfig(fullgraph=False, dynamic=False, mode=STATIC_CACHE_MODES[mode])


def mode_kwargs(mode: str) -> dict[str, Any]:
    """generate() keyword arguments that select the execution mode, with a static cache that
    transformers builds per call (the engine uses this for beam search only)."""
    if mode == "eager":
        return {"disable_compile": True}
    if mode in STATIC_CACHE_MODES:
        return {"cache_implementation": "static", "compile_config": compile_config(mode)}
    raise TokenjouleError(f"unknown hf mode {mode!r}; valid: eager, compile, cudagraphs")


def reuses_static_cache(spec: RunSpec) -> bool:
    """Whether a compiled-mode cell runs on the engine's kept StaticCache.

    Beam search does not: it reorders the cache after every step with `index_select`, which
    replaces the cache tensors with new ones, so their addresses move anyway and a kept cache
    would come back holding tensors that are no longer marked static. It keeps transformers'
    per-call cache. Speculative decoding runs in mode eager only (see check_supported).
    """
    return spec.mode in STATIC_CACHE_MODES and spec.decoding.strategy in ("greedy", "sample")


def cache_kwarg_name() -> str:
    """The generate() keyword for a user cache: `cache` in recent transformers 5.x (where
    `past_key_values` still works but warns), `past_key_values` before the rename."""
    from transformers.generation import utils as generation_utils

    names = getattr(generation_utils, "ALL_CACHE_NAMES", None) or ()
    return "cache" if "cache" in names else "past_key_values"


def decoding_kwargs(spec: RunSpec) -> dict[str, Any]:
    """generate() keyword arguments for the spec's decoding strategy (the assistant model aside)."""
    d = spec.decoding
    if d.strategy == "greedy":
        return {"do_sample": False, "num_beams": 1}
    if d.strategy == "sample":
        # top_k=0 turns off transformers' default top-k of 50, so only temperature and top_p apply.
        return {"do_sample": True, "num_beams": 1, "temperature": d.temperature, "top_p": d.top_p, "top_k": 0}
    if d.strategy == "beam":
        return {"do_sample": False, "num_beams": d.num_beams, "num_return_sequences": 1, "early_stopping": False}
    if d.strategy == "speculative":
        if d.ngram:
            raise TokenjouleError("n-gram speculation is a vLLM option; on the hf engine use a draft model (ngram=false)")
        return {"do_sample": False, "num_beams": 1}
    raise TokenjouleError(f"unknown decoding {d.strategy!r}; valid: greedy, sample, beam, speculative")


def check_supported(spec: RunSpec) -> None:
    """Combinations transformers cannot run, as one-line errors before any work starts."""
    if spec.decoding.strategy == "speculative":
        if spec.batch_size > 1:
            raise TokenjouleError(
                f"speculative decoding on the hf engine supports batch_size 1 only (transformers' assisted "
                f"generation), got {spec.batch_size}; use batch_size 1 or the vllm engine"
            )
        if spec.mode != "eager":
            raise TokenjouleError(
                f"speculative decoding on the hf engine runs in mode eager only (assisted generation needs a "
                f"croppable dynamic cache), got mode {spec.mode!r}"
            )


def configure_assistant(assistant: Any, lookahead_tokens: int) -> None:
    """Make the draft propose exactly `lookahead_tokens` tokens per step (constant schedule).

    The confidence threshold is switched off: with it, the draft stops early whenever it is
    unsure, and the number of proposed tokens would no longer be the spec's lookahead.
    """
    gc = assistant.generation_config
    gc.num_assistant_tokens = int(lookahead_tokens)
    gc.num_assistant_tokens_schedule = "constant"
    gc.assistant_confidence_threshold = 0.0


class AcceptanceCounter:
    """Counts proposed and accepted draft tokens by wrapping the candidate generator.

    transformers calls `candidate_generator.update_candidate_strategy(input_ids, scores,
    num_matches)` once per verification step; `scores` holds candidate_length + 1 positions
    (the proposals plus the bonus token), and `num_matches` is how many proposals the target
    accepted. The model's `_get_candidate_generator` is patched on the instance only for the
    duration of one `generate` call.
    """

    def __init__(self) -> None:
        self.proposed_tokens = 0
        self.accepted_tokens = 0
        self.steps = 0

    @property
    def acceptance_rate(self) -> float | None:
        if self.proposed_tokens == 0:
            return None
        return self.accepted_tokens / self.proposed_tokens

    def _wrap_generator(self, generator: Any) -> Any:
        original = generator.update_candidate_strategy

        def update_candidate_strategy(input_ids: Any, scores: Any, num_matches: Any) -> Any:
            proposed = int(scores.shape[1]) - 1
            self.proposed_tokens += max(proposed, 0)
            self.accepted_tokens += min(int(num_matches), max(proposed, 0))
            self.steps += 1
            return original(input_ids, scores, num_matches)

        generator.update_candidate_strategy = update_candidate_strategy
        return generator

    def install(self, model: Any) -> None:
        original = model._get_candidate_generator  # bound method of the class

        def _get_candidate_generator(*args: Any, **kwargs: Any) -> Any:
            return self._wrap_generator(original(*args, **kwargs))

        model._get_candidate_generator = _get_candidate_generator

    @staticmethod
    def uninstall(model: Any) -> None:
        # Removing the instance attribute restores the class method.
        model.__dict__.pop("_get_candidate_generator", None)


# ----- static KV caches kept across generate calls ----------------------------------------------
GIB = 1024**3


def static_cache_len(spec: RunSpec, new_tokens: int) -> int:
    """Token slots of a cell's static cache: input + output, exactly (no rounding up).

    Static-cache attention runs over all `max_cache_len` slots at every step, so padding the
    length would add work that belongs to no spec; rounding would only save compilations for
    lengths a sweep visits anyway. A call with fewer new tokens than the spec (the prefill-only
    call of split_prefill) uses the cell's full length, so its prefill does exactly the work of
    the full run's prefill, on the same cache.
    """
    return spec.input_tokens + max(int(new_tokens), spec.output_tokens)


def estimate_cache_bytes(config: Any, rows: int, max_cache_len: int, itemsize: int) -> int | None:
    """Keys + values of a full-attention static cache (an upper bound for sliding-window
    layers); None when the config does not name its head shapes."""
    try:
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return 2 * int(text.num_hidden_layers) * rows * int(heads) * int(head_dim) * max_cache_len * itemsize
    except (AttributeError, TypeError, ZeroDivisionError):
        return None


def cuda_memory_bytes(device: Any) -> tuple[int, int] | None:
    """(available, total) bytes on a CUDA device, counting blocks PyTorch holds but does not use
    as available; None off CUDA."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    unused_reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + max(unused_reserved, 0), total


class StaticCachePool:
    """One `transformers.StaticCache` per (rows, max_cache_len, dtype, device), reset and reused
    by every generate call of that shape, so the cache tensors keep their addresses and CUDA
    graphs recorded for the decode step are replayed rather than re-recorded.

    At most `max_entries` shapes are kept (least recently used dropped first): a sweep moves
    from cell to cell and seldom returns, but alternating shapes keep their graphs. On CUDA the
    other shapes' caches are dropped before a new one is made when memory is tight: when the
    available memory would not hold the new cache plus headroom for activations
    (max(2 GiB, 20 % of the device)). A cache allocates its tensors lazily on the first
    forward, from the key/value states (so with the model's dtype, device and KV heads).
    """

    def __init__(
        self,
        max_entries: int = 4,
        memory_bytes: Callable[[Any], tuple[int, int] | None] = cuda_memory_bytes,
    ) -> None:
        if max_entries < 1:
            raise TokenjouleError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._memory_bytes = memory_bytes
        self._caches: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._caches)

    @staticmethod
    def key(rows: int, max_cache_len: int, dtype: Any, device: Any) -> tuple[Any, ...]:
        return (int(rows), int(max_cache_len), str(dtype), str(device))

    def get(self, model: Any, rows: int, max_cache_len: int, dtype: Any, device: Any) -> tuple[Any, bool]:
        """The cache for this shape, emptied, and whether it was reused (False: newly made)."""
        key = self.key(rows, max_cache_len, dtype, device)
        cache = self._caches.get(key)
        if cache is not None:
            self._caches.move_to_end(key)
            cache.reset()  # in place: keys/values zeroed, positions back to 0, addresses kept
            return cache, True
        self._make_room(model, rows, max_cache_len, dtype, device)
        from transformers import StaticCache

        # config= and max_cache_len= are the keywords of every transformers 5.x StaticCache;
        # batch size, dtype and device come from the first forward (lazy initialisation).
        cache = StaticCache(config=model.config.get_text_config(decoder=True), max_cache_len=int(max_cache_len))
        self._caches[key] = cache
        return cache, False

    def _make_room(self, model: Any, rows: int, max_cache_len: int, dtype: Any, device: Any) -> None:
        while len(self._caches) >= self.max_entries:
            self._caches.popitem(last=False)
        if not self._caches:
            return
        memory = self._memory_bytes(device)
        if memory is None:
            return
        available, total = memory
        itemsize = getattr(dtype, "itemsize", 2)
        need = estimate_cache_bytes(model.config, rows, max_cache_len, itemsize)
        headroom = max(2 * GIB, total // 5)
        if need is None or available < need + headroom:
            self.clear()

    def clear(self) -> None:
        """Drop every cache and give the memory back to the device."""
        if not self._caches:
            return
        self._caches.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
