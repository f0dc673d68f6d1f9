"""FLOPs, bytes, roofline and the GPU table, checked by hand and against published counts."""

from __future__ import annotations

import pytest

from tokenjoule.analysis.gpus import GPUS, get_gpu, list_gpus
from tokenjoule.analysis.theory import (
    architecture_for, attention_flops_per_context, matmul_params, request_flops, roofline_batch, token_flops,
    workload_flops,
)
from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.models.architecture import Architecture


def toy(tied=False):
    # hidden 8, 2 layers, 2 heads of dim 4, 1 kv head, MLP 16, vocab 10
    return Architecture(model_type="llama", hidden_size=8, num_layers=2, num_attention_heads=2, num_kv_heads=1,
                        head_dim=4, intermediate_size=16, vocab_size=10, tie_word_embeddings=tied,
                        attention_bias=False)


def test_toy_flops_by_hand():
    a = toy()
    # per layer: q 8*8 + k,v 2*8*4 + o 8*8 = 192; mlp 3*8*16 = 384; norms 16 -> 592; x2 = 1184
    # final norm 8; embedding 80 (lookup, not a matmul); head 80  => M = 1184 + 8 + 80 = 1272
    assert matmul_params(a) == 1272
    assert attention_flops_per_context(a) == 4 * 2 * 2 * 4 == 64
    P, G = 3, 4
    # prefill: body on 3 positions, head on the last; causal attention 1+2+3 = 6 pairs
    prefill = 2 * (1272 - 80) * 3 + 2 * 80 + 64 * 6
    # decode: 3 steps at positions 4, 5, 6
    decode = 3 * 2 * 1272 + 64 * (4 + 5 + 6)
    f = request_flops(a, P, G)
    assert f.prefill_flops == prefill and f.decode_flops == decode and f.total_flops == prefill + decode
    assert request_flops(a, 3, 1).decode_flops == 0
    assert token_flops(a, 5) == 2 * 1272 + 64 * 5
    w = workload_flops(a, [3, 3], [4, 4])
    assert w.total_flops == 2 * f.total_flops
    assert matmul_params(toy(tied=True)) == toy(tied=True).params_active  # the tied matrix is the head
    with pytest.raises(TokenjouleError):
        request_flops(a, 0, 1)


def test_llama_31_8b_against_published_counts():
    a = architecture_for("llama-3.1-8b")
    # Published: 8,030,261,248 parameters; the input embedding is 128,256 x 4,096 = 525,336,576.
    assert a.params_total == 8_030_261_248
    n_matmul = 8_030_261_248 - 525_336_576
    assert matmul_params(a) == n_matmul
    # Kaplan et al. (2020) C_forward = 2N + 2 n_layer n_ctx d_attn counts QK^T only; adding the
    # AV product (Chinchilla App. F) doubles the attention term: 2N + 4 n_layer n_ctx d_attn.
    ctx, d_attn = 1000, 32 * 128
    assert token_flops(a, ctx) == 2 * n_matmul + 4 * 32 * ctx * d_attn
    # ~15 GFLOPs per generated token at short context (the "2 x params" rule of thumb)
    assert token_flops(a, 0) / 1e9 == pytest.approx(15.0, rel=0.01)
    # Chinchilla App. F (non-causal, per sequence of S): logits + reduce = 4 S^2 d_attn per layer;
    # causal prefill is half of that plus the diagonal (S(S+1)/2 pairs).
    S = 512
    attn = request_flops(a, S, 1).prefill_flops - (2 * (n_matmul - 525_336_576) * S + 2 * 525_336_576)
    assert attn == pytest.approx(32 * (4 * S * S * d_attn) / 2 * (S + 1) / S)


def test_roofline_hand_computed():
    a, gpu = toy(), get_gpu("H100 SXM")
    r = roofline_batch(a, gpu, 3, 4, batch_size=2, precision="bf16", dtype_bytes=2)
    peak, bw = 989.5e12, 3.35e12
    weights = a.params_active * 2
    kv = 2 * 2 * 4 * 2  # 2 (K,V) x layers x kv width x bytes = 32
    assert r.prefill_s == pytest.approx(max(2 * request_flops(a, 3, 1).prefill_flops / peak, (weights + 2 * 3 * kv) / bw))
    steps = [max(2 * (2 * 1272 + 64 * (3 + j)) / peak, (weights + 2 * kv * (3 + j)) / bw) for j in (1, 2, 3)]
    assert r.decode_s == pytest.approx(sum(steps))
    assert r.decode_steps == 3 and r.decode_steps_memory_bound == 3  # a tiny model is memory bound
    assert r.total_s == pytest.approx(r.prefill_s + r.decode_s)


def test_large_batch_prefill_is_compute_bound():
    a, gpu = architecture_for("llama-3.1-8b"), get_gpu("A100 80GB SXM")
    r = roofline_batch(a, gpu, 2048, 2, batch_size=16)
    assert r.prefill_s == pytest.approx(r.prefill_flops / 312e12)


def test_gpu_table_lookup_and_dense_figures():
    required = {"RTX A6000", "RTX 6000 Ada", "A100 40GB PCIe", "A100 80GB PCIe", "A100 40GB SXM", "A100 80GB SXM",
                "H100 PCIe", "H100 SXM", "H200", "L40S", "L4"}
    assert required <= set(list_gpus())
    assert get_gpu("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert get_gpu("NVIDIA A100-SXM4-40GB").name == "A100 40GB SXM"
    assert get_gpu("nvidia rtx a6000").name == "RTX A6000"
    assert get_gpu("NVIDIA RTX 6000 Ada Generation").name == "RTX 6000 Ada"
    h100 = get_gpu("H100 SXM")
    assert h100.peak_flops("bfloat16") == 989.5e12  # datasheet 1,979 TFLOPS is with sparsity
    assert h100.fp8_tflops == 2 * h100.bf16_tflops
    a6000 = get_gpu("RTX A6000")
    assert a6000.fp8_tflops is None
    with pytest.raises(TokenjouleError, match="no fp8"):
        a6000.peak_flops("fp8")
    with pytest.raises(UnknownNameError):
        get_gpu("Voodoo 2")
    for g in GPUS:
        assert g.tdp_w > 0 and g.memory_bandwidth_tbs > 0 and g.source_url.startswith("https://")
        assert g.tf32_tflops < g.bf16_tflops == g.fp16_tflops  # dense tensor rates: TF32 is half of BF16
