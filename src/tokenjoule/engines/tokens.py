"""Seeded synthetic prompts: lists of token ids of an exact length, shared by all engines.

Energy depends on how many tokens flow through the model, not on which ones, so prompts are
random ids. Two rules keep them honest:

- No special tokens. Tokenizers keep their special ids at the ends of the vocabulary (SmolLM2
  at 0-16, Llama 3 at 128000-128255, Qwen2 from 151643, OLMo near 50254-50279), so ids are
  drawn from the middle: the lowest 1% and the highest 3% of the vocabulary are skipped, and
  any id passed in `avoid` (bos/eos/pad from the model config) is removed as well.
- Request i is the same list whatever the batch size (its generator is seeded with
  (seed, i)), so a batch-1 and a batch-8 cell see the same first prompt.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tokenjoule.errors import TokenjouleError


def token_id_range(vocab_size: int) -> tuple[int, int]:
    """[low, high) of the ids prompts are drawn from (skips both ends of the vocabulary)."""
    if vocab_size < 8:
        raise TokenjouleError(f"vocab_size must be at least 8 for synthetic prompts, got {vocab_size}")
    low = max(1, vocab_size // 100)
    high = vocab_size - max(1, (vocab_size * 3) // 100)
    return low, high


def special_ids_from_config(cfg: Any) -> set[int]:
    """bos/eos/pad/decoder-start ids named by a config (dict or transformers config object)."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    out: set[int] = set()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        value = get(key, None)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out.update(int(v) for v in value if v is not None)
        else:
            out.add(int(value))
    return out


def _allowed_ids(vocab_size: int, avoid: Iterable[int]) -> np.ndarray:
    low, high = token_id_range(vocab_size)
    allowed = np.arange(low, high, dtype=np.int64)
    skip = np.fromiter((int(a) for a in avoid), dtype=np.int64)
    if skip.size:
        allowed = np.setdiff1d(allowed, skip)
    if allowed.size == 0:
        raise TokenjouleError(f"no token ids left to draw from in a vocabulary of {vocab_size}")
    return allowed


def _check_lengths(batch: int, input_tokens: int) -> None:
    if batch < 1 or input_tokens < 1:
        raise TokenjouleError(
            f"batch and input_tokens must be >= 1, got batch={batch}, input_tokens={input_tokens}"
        )


def _draw(allowed: np.ndarray, index: int, input_tokens: int, seed: int) -> list[int]:
    rng = np.random.default_rng([int(seed), int(index)])
    return allowed[rng.integers(0, allowed.size, size=input_tokens)].tolist()


def synthetic_prompt(
    index: int, input_tokens: int, vocab_size: int, seed: int, avoid: Iterable[int] = ()
) -> list[int]:
    """Request `index`'s prompt alone: equal to `synthetic_prompts(...)[index]` for any batch."""
    _check_lengths(1, input_tokens)
    if index < 0:
        raise TokenjouleError(f"request index must be >= 0, got {index}")
    return _draw(_allowed_ids(vocab_size, avoid), index, input_tokens, seed)


def synthetic_prompts(
    batch: int,
    input_tokens: int,
    vocab_size: int,
    seed: int,
    avoid: Iterable[int] = (),
) -> list[list[int]]:
    """`batch` lists of exactly `input_tokens` random ids, reproducible from `seed`."""
    _check_lengths(batch, input_tokens)
    allowed = _allowed_ids(vocab_size, avoid)
    return [_draw(allowed, i, input_tokens, seed) for i in range(batch)]


REPEAT_PERIOD_TOKENS = 16  # length of the pattern a repeating prompt is made of


def repeating_prompts(
    batch: int,
    input_tokens: int,
    vocab_size: int,
    seed: int,
    avoid: Iterable[int] = (),
    period_tokens: int = REPEAT_PERIOD_TOKENS,
) -> list[list[int]]:
    """`batch` prompts of exactly `input_tokens` ids, each one seeded random pattern of
    `period_tokens` ids repeated (and cut to length), for n-gram speculation: its proposals come
    from earlier occurrences of the context's last n-gram, and a repeating prompt has them.
    Request i's pattern is `synthetic_prompt(i, period_tokens, ...)`, so it does not depend on
    the batch size either."""
    _check_lengths(batch, input_tokens)
    if period_tokens < 1:
        raise TokenjouleError(f"period_tokens must be >= 1, got {period_tokens}")
    allowed = _allowed_ids(vocab_size, avoid)
    out = []
    for i in range(batch):
        pattern = _draw(allowed, i, min(period_tokens, input_tokens), seed)
        reps = -(-input_tokens // len(pattern))
        out.append((pattern * reps)[:input_tokens])
    return out


def prompts_for(
    repeat: bool, batch: int, input_tokens: int, vocab_size: int, seed: int, avoid: Iterable[int] = ()
) -> list[list[int]]:
    """The prompts of a cell: repeating ones when its decoding asks for them, else random ones."""
    if repeat:
        return repeating_prompts(batch, input_tokens, vocab_size, seed, avoid)
    return synthetic_prompts(batch, input_tokens, vocab_size, seed, avoid)
