"""Analytic FLOPs and bytes of inference, the paper's theoretical energy, and roofline floors.

FLOPs (one multiply-add = 2 FLOPs) for a request of P input and G output tokens, with
  M   = matmul parameters per token = params_active - V*h  (untied: the input embedding is a
        lookup, not a matmul)  or  params_active  (tied: the shared matrix is also the LM head),
        norm and bias parameters included (they are < 0.1% and keep M equal to the published
        counts minus the lookup table),
  Vh  = vocab_size * hidden_size (the LM head),
  A   = 4 * layers * heads * head_dim  (QK^T and AV: 2 FLOPs x 2 matmuls per attended token),
- prefill: every one of the P positions runs the body; the LM head runs on the last position
  only (generation needs only its logits): 2 * (M - Vh) * P + 2 * Vh;
  causal attention: position i (1-based) attends to i positions, sum = P(P+1)/2:
  A * P(P+1)/2.  The prefill also yields output token 1.
- decode: output tokens 2..G take one step each (G - 1 steps); step j (1-based) processes
  position P + j, which attends to P + j positions: 2 * M * (G-1) + A * ((G-1) P + (G-1) G / 2).
Softmax, norms, activations and rotary embeddings are O(h) per token and omitted.
For one token at context c this reduces to 2 M + A c: Kaplan et al.'s C_forward = 2N + 2 n_layer
n_ctx d_attn with the AV product (which Kaplan leaves out) added, as Chinchilla's Appendix F counts it.

Bytes (the floor of memory traffic): each forward pass reads the active weights once
(params_active * dtype_bytes; for a batch the weights are shared); a decode step also reads
the KV cache of every attended position and writes its own (kv_bytes_per_token * (P + j) per
request); a prefill writes the KV of its P positions. Activations are ignored (floor).

E_theory = TDP / peak FLOP/s * FLOPs (the paper's estimate). Roofline: each pass takes at
least max(FLOPs / peak, bytes / bandwidth); energy >= that time x power (the measured active
power, and TDP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tokenjoule.analysis.gpus import GPUSpec

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "fp8": 1}


def matmul_params(arch) -> int:
    """M: parameters multiplied per token (body + LM head, not the embedding lookup)."""
    vh = arch.vocab_size * arch.hidden_size
    return arch.params_active if arch.tie_word_embeddings else arch.params_active - vh


def attention_flops_per_context(arch) -> int:
    """A: FLOPs per (query, attended position) pair across all layers (QK^T + AV)."""
    return 4 * arch.num_layers * arch.num_attention_heads * arch.head_dim


def token_flops(arch, context_tokens: int) -> int:
    """FLOPs of one token (body + head) attending to `context_tokens` positions."""
    return 2 * matmul_params(arch) + attention_flops_per_context(arch) * context_tokens


@dataclass(frozen=True)
class RequestFlops:
    prefill_flops: float
    decode_flops: float

    @property
    def total_flops(self) -> float:
        return self.prefill_flops + self.decode_flops

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total_flops": self.total_flops}


def prefill_flops(arch, input_tokens):
    """Works on ints or numpy arrays (exact in float64 up to ~1e15 per element)."""
    m, vh, a = matmul_params(arch), arch.vocab_size * arch.hidden_size, attention_flops_per_context(arch)
    p = input_tokens
    return 2 * (m - vh) * p + 2 * vh + a * p * (p + 1) / 2


def decode_flops(arch, input_tokens, output_tokens):
    m, a = matmul_params(arch), attention_flops_per_context(arch)
    steps = output_tokens - 1
    return 2 * m * steps + a * (steps * input_tokens + steps * (steps + 1) / 2)


def request_flops(arch, input_tokens: int, output_tokens: int) -> RequestFlops:
    if input_tokens < 1 or output_tokens < 1:
        from tokenjoule.errors import TokenjouleError

        raise TokenjouleError(f"a request needs >= 1 input and output token, got {input_tokens}, {output_tokens}")
    return RequestFlops(float(prefill_flops(arch, input_tokens)), float(decode_flops(arch, input_tokens, output_tokens)))


def workload_flops(arch, input_tokens, output_tokens) -> RequestFlops:
    """Total FLOPs of many requests (arrays of lengths); lengths below 1 count as 1."""
    import numpy as np

    p = np.maximum(np.asarray(input_tokens, dtype=float), 1)
    g = np.maximum(np.asarray(output_tokens, dtype=float), 1)
    return RequestFlops(float(prefill_flops(arch, p).sum()), float(decode_flops(arch, p, g).sum()))


def theoretical_energy_j(flops: float, gpu: GPUSpec, precision: str = "bf16") -> float:
    """The paper's estimate: E = TDP / peak FLOP/s x FLOPs (all at 100% utilisation, at TDP)."""
    return gpu.tdp_w / gpu.peak_flops(precision) * flops


@dataclass(frozen=True)
class Roofline:
    """Lower bound on the time of one batch of `batch_size` identical requests."""

    batch_size: int
    prefill_s: float
    decode_s: float
    prefill_flops: float
    decode_flops: float
    prefill_bytes: float
    decode_bytes: float
    decode_steps_memory_bound: int
    decode_steps: int

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_s": self.total_s}


def roofline_batch(arch, gpu: GPUSpec, input_tokens: int, output_tokens: int, batch_size: int = 1,
                   precision: str = "bf16", dtype_bytes: int = 2) -> Roofline:
    """time >= max(FLOPs / peak, bytes / bandwidth) for the prefill and for each decode step."""
    import numpy as np

    peak, bw = gpu.peak_flops(precision), gpu.memory_bandwidth_bytes_s
    b, p, g = int(batch_size), int(input_tokens), int(output_tokens)
    weights = arch.params_active * dtype_bytes
    kv = arch.kv_bytes_per_token(dtype_bytes)
    pf = b * float(prefill_flops(arch, p))
    pb = weights + b * p * kv
    j = np.arange(1, g, dtype=float)  # decode steps 1..G-1
    step_flops = b * (2 * matmul_params(arch) + attention_flops_per_context(arch) * (p + j))
    step_bytes = weights + b * kv * (p + j)
    mem_bound = step_bytes / bw >= step_flops / peak
    return Roofline(
        batch_size=b, prefill_s=max(pf / peak, pb / bw),
        decode_s=float(np.maximum(step_flops / peak, step_bytes / bw).sum()),
        prefill_flops=pf, decode_flops=float(step_flops.sum()), prefill_bytes=float(pb),
        decode_bytes=float(step_bytes.sum()), decode_steps_memory_bound=int(mem_bound.sum()),
        decode_steps=g - 1,
    )


def architecture_for(model: str):
    """The Architecture of a preset, or of an HF id whose config is in the local HF cache."""
    from tokenjoule.errors import TokenjouleError
    from tokenjoule.models.architecture import architecture_from_config
    from tokenjoule.models.registry import resolve_model

    source = resolve_model(model)
    if source.config is not None:
        return architecture_from_config(source.config)
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model, local_files_only=True).to_dict()
    except Exception as exc:  # noqa: BLE001 - any failure means: no config available offline
        raise TokenjouleError(f"no config for {model!r} in the local Hugging Face cache "
                              f"({type(exc).__name__}); use a preset name for theory") from None
    return architecture_from_config(cfg)
