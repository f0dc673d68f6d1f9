"""Parameter counts of every preset against the published totals in presets/SOURCES.md."""

from __future__ import annotations

import pytest

from tokenjoule.errors import TokenjouleError
from tokenjoule.models.architecture import architecture_from_config
from tokenjoule.models.registry import list_presets, load_preset_config

# (total, active) from the table in src/tokenjoule/models/presets/SOURCES.md.
SOURCES_TABLE = {
    "llama-3.1-8b": (8_030_261_248, 8_030_261_248),
    "llama-3.2-1b": (1_235_814_400, 1_235_814_400),
    "olmo-1b": (1_176_764_416, 1_176_764_416),
    "olmo-7b": (6_888_095_744, 6_888_095_744),
    "olmoe-1b-7b": (6_919_161_856, 1_282_017_280),
    "qwen1.5-32b": (32_512_218_112, 32_512_218_112),
    "r1-distill-qwen-32b": (32_763_876_352, 32_763_876_352),
    "r1-distill-qwen-1.5b": (1_777_088_000, 1_777_088_000),
    "smollm2-135m": (134_515_008, 134_515_008),
    "smollm2-360m": (361_821_120, 361_821_120),
}


@pytest.mark.parametrize("name", sorted(SOURCES_TABLE))
def test_param_counts_match_sources_table(name):
    arch = architecture_from_config(load_preset_config(name))
    total, active = SOURCES_TABLE[name]
    assert arch.params_total == total
    assert arch.params_active == active


def test_every_non_test_preset_is_in_the_table():
    assert set(list_presets()) - {"tiny"} == set(SOURCES_TABLE)


def test_tiny_by_hand():
    # vocab 512, hidden 64, 2 layers, 4 heads (head_dim 16), 2 kv heads, mlp 128, untied.
    arch = architecture_from_config(load_preset_config("tiny"))
    attn = 64 * 64 + 2 * 64 * 32 + 64 * 64
    mlp = 3 * 64 * 128
    per_layer = attn + mlp + 2 * 64
    assert arch.params_total == 2 * 512 * 64 + 2 * per_layer + 64
    # K and V, 2 layers, 2 kv heads x 16 dims, 2 bytes each
    assert arch.kv_bytes_per_token() == 2 * 2 * 32 * 2
    assert arch.kv_bytes_per_token(dtype_bytes=4) == 2 * arch.kv_bytes_per_token()


def test_family_specific_fields():
    qwen = architecture_from_config(load_preset_config("r1-distill-qwen-32b"))
    assert qwen.attention_bias and not qwen.attention_out_bias
    olmo = architecture_from_config(load_preset_config("olmo-1b"))
    assert not olmo.norm_has_weights
    olmoe = architecture_from_config(load_preset_config("olmoe-1b-7b"))
    assert olmoe.has_qk_norm and olmoe.num_experts == 64 and olmoe.experts_per_token == 8
    assert olmoe.moe_intermediate_size == 1024
    assert olmoe.params_active < olmoe.params_total
    llama = architecture_from_config(load_preset_config("llama-3.1-8b"))
    assert llama.num_experts == 0 and llama.head_dim == 128 and llama.num_kv_heads == 8
    # GQA: 8 kv heads x 128 dims x 32 layers x K,V x 2 bytes
    assert llama.kv_bytes_per_token() == 131_072


def test_llama_attention_bias_counts_q_k_v_and_o():
    cfg = load_preset_config("tiny") | {"attention_bias": True}
    plain = architecture_from_config(load_preset_config("tiny"))
    biased = architecture_from_config(cfg)
    assert biased.params_total - plain.params_total == 2 * (64 + 32 + 32 + 64)


def test_missing_field_is_a_clear_error():
    cfg = load_preset_config("tiny")
    del cfg["hidden_size"]
    with pytest.raises(TokenjouleError, match="hidden_size"):
        architecture_from_config(cfg)
