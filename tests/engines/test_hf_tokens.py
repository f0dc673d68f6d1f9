"""Seeded synthetic prompts (engines/tokens.py)."""

from __future__ import annotations

import pytest

from tokenjoule.engines.tokens import special_ids_from_config, synthetic_prompts, token_id_range
from tokenjoule.errors import TokenjouleError
from tokenjoule.models.registry import list_presets, load_preset_config


def test_exact_shape_and_reproducible():
    a = synthetic_prompts(4, 33, 512, seed=7)
    assert len(a) == 4 and all(len(p) == 33 for p in a)
    assert a == synthetic_prompts(4, 33, 512, seed=7)
    assert a != synthetic_prompts(4, 33, 512, seed=8)
    assert a[0] != a[1]  # requests differ from each other


def test_request_i_does_not_depend_on_batch_size():
    assert synthetic_prompts(1, 20, 1000, seed=3)[0] == synthetic_prompts(8, 20, 1000, seed=3)[0]


@pytest.mark.parametrize("name", list_presets())
def test_prompts_avoid_special_ids_and_vocab_ends(name):
    cfg = load_preset_config(name)
    special = special_ids_from_config(cfg)
    low, high = token_id_range(cfg["vocab_size"])
    prompts = synthetic_prompts(4, 256, cfg["vocab_size"], seed=0, avoid=special)
    ids = {t for p in prompts for t in p}
    assert not ids & special
    assert min(ids) >= low and max(ids) < high


def test_known_special_ranges_are_skipped():
    # Llama 3 keeps its 256 special tokens at 128000..128255; SmolLM2 at 0..16.
    low, high = token_id_range(128_256)
    assert high <= 128_000
    low, _ = token_id_range(49_152)
    assert low > 16


def test_explicit_avoid_list_is_honoured():
    avoid = set(range(5, 400))  # leaves only a handful of ids in a 512 vocabulary
    prompts = synthetic_prompts(2, 500, 512, seed=1, avoid=avoid)
    assert not {t for p in prompts for t in p} & avoid


def test_special_ids_from_config_handles_lists_and_none():
    assert special_ids_from_config({"eos_token_id": [1, 2], "bos_token_id": None, "pad_token_id": 9}) == {1, 2, 9}


@pytest.mark.parametrize("args", [(0, 5, 512, 0), (2, 0, 512, 0), (1, 1, 4, 0)])
def test_bad_arguments_are_clear_errors(args):
    with pytest.raises(TokenjouleError):
        synthetic_prompts(*args)


def test_nothing_left_to_draw_is_an_error():
    with pytest.raises(TokenjouleError, match="no token ids"):
        synthetic_prompts(1, 4, 512, seed=0, avoid=range(512))


def test_single_prompt_equals_batch_member():
    from tokenjoule.engines.tokens import synthetic_prompt

    batch = synthetic_prompts(5, 12, 2048, seed=4, avoid={100, 200})
    assert synthetic_prompt(3, 12, 2048, seed=4, avoid={100, 200}) == batch[3]
    with pytest.raises(TokenjouleError):
        synthetic_prompt(-1, 12, 2048, seed=4)
