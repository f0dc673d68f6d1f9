"""`generate()` arguments for each engine mode and decoding strategy, and the speculative
decoding acceptance counter, for the Hugging Face engine.

Modes (what changes between them is only how the decode step runs):

- eager: the plain PyTorch forward with a dynamic KV cache; auto-compilation disabled.
- compile: a static KV cache and the forward compiled by `torch.compile` (inductor, mode
  "default": fused kernels, no CUDA graphs). transformers compiles only the decode step; the
  prefill runs eagerly (its shape changes with every prompt length).
- cudagraphs: the same static cache, compiled in mode "reduce-overhead", so each decode step
  replays a captured CUDA graph instead of launching kernels one by one.

Both compiled modes go through transformers' own `cache_implementation="static"` +
`compile_config` path, which exists in transformers >= 4.50 and all 5.x releases.
"""

from __future__ import annotations

from typing import Any

from tokenjoule.errors import TokenjouleError
from tokenjoule.spec import RunSpec

STATIC_CACHE_MODES = {"compile": "default", "cudagraphs": "reduce-overhead"}


def mode_kwargs(mode: str) -> dict[str, Any]:
    """generate() keyword arguments that select the execution mode."""
    if mode == "eager":
        return {"disable_compile": True}
    if mode in STATIC_CACHE_MODES:
        from transformers import CompileConfig

        return {
            "cache_implementation": "static",
            "compile_config": CompileConfig(fullgraph=False, dynamic=False, mode=STATIC_CACHE_MODES[mode]),
        }
    raise TokenjouleError(f"unknown hf mode {mode!r}; valid: eager, compile, cudagraphs")


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
