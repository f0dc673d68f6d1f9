"""Build a model for inference: a preset with random weights, or a Hugging Face id.

Presets are built with `AutoModelForCausalLM.from_config` directly on the target device
(`with torch.device(device)`), so an 8B model never passes through host memory. The weights
are transformers' own seeded normal init, not zeros: all-zero weights can take different
kernel paths and would not be a faithful stand-in for trained weights.

This module imports torch and transformers; import it only where a model is built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.models.architecture import Architecture, architecture_from_config
from tokenjoule.models.registry import ModelSource, resolve_model

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
# Keys of a preset that are not constructor arguments of the config class or that we set.
_DROP_KEYS = ("torch_dtype", "dtype", "model_type", "transformers_version", "_name_or_path")


@dataclass
class LoadedModel:
    """A model ready for generation, with what is known about it."""

    model: Any  # transformers PreTrainedModel
    source: ModelSource
    architecture: Architecture
    device: torch.device
    dtype: torch.dtype

    @property
    def attn_implementation(self) -> str | None:
        return getattr(self.model.config, "_attn_implementation", None)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda:0 when a GPU is present, else cpu; 'cuda' -> cuda:0; checks the index."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TokenjouleError(f"device {device!r} needs a CUDA GPU, but none is visible; valid here: cpu, auto")
        index = 0 if name == "cuda" else name.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise TokenjouleError(
                f"device {device!r} does not exist; valid: cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(f"cuda:{int(index)}")
    raise UnknownNameError("device", device, ["auto", "cpu", "cuda", "cuda:N"])


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on GPU, float32 on CPU; otherwise the named dtype."""
    name = (dtype or "auto").strip().lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UnknownNameError("dtype", dtype, ["auto", "bfloat16", "float16", "float32"])
    return DTYPES[name]


def config_from_preset(cfg: dict[str, Any]) -> Any:
    """A transformers config object from a preset dict (`AutoConfig.for_model`)."""
    from transformers import AutoConfig

    kwargs = {k: v for k, v in cfg.items() if k not in _DROP_KEYS}
    try:
        return AutoConfig.for_model(cfg["model_type"], **kwargs)
    except (KeyError, ValueError) as exc:
        raise TokenjouleError(f"cannot build a config for model_type {cfg.get('model_type')!r}: {exc}") from exc


def _quiet_transformers() -> None:
    # Building from a config logs notes about generation defaults that mean nothing here.
    logging.getLogger("transformers").setLevel(logging.ERROR)


RANDOM_WEIGHTS_DIR_ENV = "TOKENJOULE_RANDOM_WEIGHTS_DIR"
_READY = "tokenjoule-complete"


def random_weights_dir(source: ModelSource, dtype: torch.dtype, seed: int) -> Path:
    """Where a preset's seeded random weights are saved for a tensor-parallel load
    (`$TOKENJOULE_RANDOM_WEIGHTS_DIR`, default ~/.cache/tokenjoule/random-weights)."""
    root = Path(os.environ.get(RANDOM_WEIGHTS_DIR_ENV) or Path.home() / ".cache" / "tokenjoule" / "random-weights")
    return root / f"{source.name}-seed{seed}-{str(dtype).removeprefix('torch.')}"


def _save_random_weights(source: ModelSource, dest: Path, dev: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Rank 0 builds the preset once (seeded, on its device) and saves it; a marker file says
    the folder is complete, so an interrupted save is redone, never half-read."""
    if (dest / _READY).exists():
        return
    from transformers import AutoModelForCausalLM

    config = config_from_preset(source.config or {})
    torch.manual_seed(seed)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    del model
    (dest / _READY).write_text("saved by tokenjoule: seeded random weights of a preset\n")


def _load_tensor_parallel(source: ModelSource, dev: torch.device, dtype: torch.dtype, seed: int,
                          attn_kw: dict[str, Any]) -> Any:
    """The model sharded over the torch.distributed group this process is a rank of
    (transformers `tp_plan="auto"`; the group is set up by engines.tp_rank). transformers shards
    at load time from a checkpoint, so a preset's random weights are saved once first (rank 0;
    the others wait at a barrier): the same seeded weights every rank then reads its shard of."""
    import warnings

    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    path = source.name
    if source.is_preset:
        dest = random_weights_dir(source, dtype, seed)
        if dist.get_rank() == 0:
            _save_random_weights(source, dest, dev, dtype, seed)
        dist.barrier()
        path = str(dest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # newer transformers prefer distributed_config=
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, tp_plan="auto", **attn_kw)


def load_model(
    name_or_id: str,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    seed: int = 0,
    attn_implementation: str | None = None,
    tensor_parallel: bool = False,
) -> LoadedModel:
    """Build a preset with seeded random weights, or load an HF id with `from_pretrained`.

    `attn_implementation` (sdpa, eager, flash_attention_2...) defaults to transformers' choice.
    `tensor_parallel`: this process is one rank of a torch.distributed group and loads its shard.
    """
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    source = resolve_model(name_or_id)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    attn_kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if tensor_parallel:
        model = _load_tensor_parallel(source, dev, torch_dtype, seed, attn_kw)
        arch = architecture_from_config(source.config or model.config.to_dict())
    elif source.is_preset:
        config = config_from_preset(source.config or {})
        torch.manual_seed(seed)  # seeded init: the same preset gives the same weights
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, **attn_kw)
        arch = architecture_from_config(source.config or {})
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(source.name, dtype=torch_dtype, **attn_kw)
        except Exception as exc:  # network, auth, missing repo: all one line for the user
            first = " ".join(str(exc).split())[:300]
            raise TokenjouleError(
                f"could not load Hugging Face model {source.name!r} (needs the Hub or a local cache): {first}"
            ) from exc
        model = model.to(dev)
        arch = architecture_from_config(model.config.to_dict())
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, source=source, architecture=arch, device=dev, dtype=torch_dtype)


def count_params(model: Any) -> int:
    """Parameters of a built model, shared (tied) tensors counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already de-duplicates tied tensors
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
