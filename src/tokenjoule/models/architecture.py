"""The shape of a decoder-only transformer, read from a Hugging Face config dict.

`Architecture` holds only what decides parameter, FLOP and byte counts. The counting rules
follow the transformers modeling code of each family, including the parts that no config
field switches on:

- Qwen2 always has bias on the q/k/v projections (never on o_proj).
- Llama/OLMo/OLMoE `attention_bias` puts a bias on q, k, v *and* o.
- OLMo-1 uses a LayerNorm without weights (no norm parameters at all).
- OLMoE has q_norm (width heads*head_dim) and k_norm (width kv_heads*head_dim) RMSNorms, a
  bias-free router Linear(hidden -> experts) per layer, and `intermediate_size` is the width of
  one expert.

Counts are checked against published totals in tests (see presets/SOURCES.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tokenjoule.errors import TokenjouleError

# Families whose attention always carries q/k/v bias regardless of `attention_bias`.
_QKV_BIAS_ALWAYS = {"qwen2", "qwen2_moe"}
# Families whose norms carry no learnable weights.
_NORM_WITHOUT_WEIGHTS = {"olmo"}
# Families with per-head q/k normalisation over the full projection width.
_QK_NORM = {"olmoe"}


@dataclass(frozen=True)
class Architecture:
    """Shape of a decoder-only transformer (one model, no parallelism)."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (for MoE: the width of one expert)
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q/k/v projections
    num_experts: int = 0  # 0 for dense models
    experts_per_token: int = 0
    moe_intermediate_size: int = 0  # width of one expert's MLP (0 for dense)
    has_qk_norm: bool = False
    norm_has_weights: bool = True
    attention_out_bias: bool = False  # bias on o_proj (llama-style attention_bias=True)
    mlp_bias: bool = False

    # ----- derived sizes ---------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_width(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    def attention_params(self) -> int:
        """Parameters of one layer's attention block (projections, biases, q/k norms)."""
        h = self.hidden_size
        n = h * self.q_width + 2 * h * self.kv_width + self.q_width * h
        if self.attention_bias:
            n += self.q_width + 2 * self.kv_width
        if self.attention_out_bias:
            n += h
        if self.has_qk_norm:
            n += self.q_width + self.kv_width
        return n

    def mlp_params(self, width: int) -> int:
        """One gated (SwiGLU) MLP of the given inner width: gate, up and down projections."""
        n = 3 * self.hidden_size * width
        if self.mlp_bias:
            n += 2 * width + self.hidden_size
        return n

    def _norm_params_per_layer(self) -> int:
        return 2 * self.hidden_size if self.norm_has_weights else 0

    def _layer_params(self, experts_counted: int) -> int:
        n = self.attention_params() + self._norm_params_per_layer()
        if self.is_moe:
            n += self.hidden_size * self.num_experts  # router (bias-free)
            n += experts_counted * self.mlp_params(self.moe_intermediate_size)
        else:
            n += self.mlp_params(self.intermediate_size)
        return n

    def embedding_params(self) -> int:
        """Input embedding plus the LM head (counted once when tied)."""
        emb = self.vocab_size * self.hidden_size
        return emb if self.tie_word_embeddings else 2 * emb

    def _final_norm_params(self) -> int:
        return self.hidden_size if self.norm_has_weights else 0

    @property
    def params_total(self) -> int:
        """All parameters, tied embeddings counted once (matches `sum(p.numel())`)."""
        experts = self.num_experts if self.is_moe else 0
        return (
            self.embedding_params()
            + self.num_layers * self._layer_params(experts)
            + self._final_norm_params()
        )

    @property
    def params_active(self) -> int:
        """Parameters touched per token: for MoE only the top-k experts (router counted)."""
        if not self.is_moe:
            return self.params_total
        return (
            self.embedding_params()
            + self.num_layers * self._layer_params(self.experts_per_token)
            + self._final_norm_params()
        )

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes of KV cache one token occupies across all layers (K and V)."""
        return 2 * self.num_layers * self.kv_width * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params_total"] = self.params_total
        d["params_active"] = self.params_active
        return d


def _require(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    raise TokenjouleError(f"model config lacks {' / '.join(keys)}; cannot derive the architecture")


def architecture_from_config(cfg: dict[str, Any]) -> Architecture:
    """Build an `Architecture` from a Hugging Face `config.json` dict (or a preset)."""
    if not isinstance(cfg, dict):
        raise TokenjouleError(f"model config must be a dict, got {type(cfg).__name__}")
    model_type = str(cfg.get("model_type", "")).lower()
    hidden = int(_require(cfg, "hidden_size", "n_embd", "d_model"))
    heads = int(_require(cfg, "num_attention_heads", "n_head"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    num_experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0)
    intermediate = int(_require(cfg, "intermediate_size", "n_inner"))
    moe_inter = int(cfg.get("moe_intermediate_size") or intermediate) if num_experts else 0
    explicit_bias = bool(cfg.get("attention_bias", False))
    return Architecture(
        model_type=model_type,
        hidden_size=hidden,
        num_layers=int(_require(cfg, "num_hidden_layers", "n_layer")),
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=int(_require(cfg, "vocab_size")),
        # Llama, Qwen2, OLMo and OLMoE configs all default to untied when the key is absent.
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=explicit_bias or model_type in _QKV_BIAS_ALWAYS,
        num_experts=num_experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0) if num_experts else 0,
        moe_intermediate_size=moe_inter,
        has_qk_norm=model_type in _QK_NORM,
        norm_has_weights=model_type not in _NORM_WITHOUT_WEIGHTS,
        attention_out_bias=explicit_bias and model_type not in _QKV_BIAS_ALWAYS,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )
