"""Checks before any model load: is the device there, do the weights and KV cache fit in its
memory, are the cell's lengths within the model's context?

A measurement that cannot fit should stop in a second with one line naming what is needed and
what is available, not be killed by the kernel after minutes of loading (an 8B preset in
float32 on a 23 GB CPU box). The memory need is an estimate (weights + KV cache + a margin for
activations and allocator slack); the check refuses only what clearly cannot fit.

Only presets have a known size before loading; a Hugging Face id is checked for device
presence only (its config would need the Hub).

    >>> from tokenjoule.spec import RunSpec
    >>> need = memory_needed(RunSpec(model="tiny", batch_size=2, input_tokens=16, output_tokens=4,
    ...                              device="cpu", dtype="float32"))
    >>> need.weights_bytes > 0 and need.total_bytes > need.weights_bytes
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tokenjoule.errors import TokenjouleError

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
OVERHEAD_FRACTION = 0.10  # activations, logits, allocator slack on top of weights + KV cache
GIB = 1024**3


class PreflightError(TokenjouleError):
    """The cell cannot run here (device, memory or context); exit 2, nothing stored."""


@dataclass(frozen=True)
class MemoryNeed:
    weights_bytes: int
    kv_cache_bytes: int
    device: str  # "cpu" or "cuda:N"
    dtype: str

    @property
    def total_bytes(self) -> int:
        return int((self.weights_bytes + self.kv_cache_bytes) * (1 + OVERHEAD_FRACTION))


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def cuda_devices() -> int:
    """Number of visible CUDA devices (0 without torch or without a GPU)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device_name(device: str, n_cuda: Optional[int] = None) -> str:
    """'auto' -> cuda:0 or cpu; 'cuda' -> cuda:0; a CUDA device that is not there is an error."""
    name = (device or "auto").strip().lower()
    n_cuda = cuda_devices() if n_cuda is None and name != "cpu" else (n_cuda or 0)
    if name == "auto":
        return "cuda:0" if n_cuda else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index = "0" if name == "cuda" else name.split(":", 1)[1]
        if not n_cuda:
            raise PreflightError(f"device {device!r} needs a CUDA GPU, but none is visible on this machine; "
                                 "valid here: cpu, auto")
        if not index.isdigit() or int(index) >= n_cuda:
            raise PreflightError(f"device {device!r} does not exist; valid: cuda:0..cuda:{n_cuda - 1}")
        return f"cuda:{int(index)}"
    raise PreflightError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")


def available_bytes(device: str) -> Optional[int]:
    """Memory free for a model on `device` (RAM for cpu, free GPU memory for cuda:N); None if unknown."""
    if device == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        import torch

        free, _total = torch.cuda.mem_get_info(int(device.split(":", 1)[1]))
        return int(free)
    except Exception:  # no driver access: unknown, never a guess
        return None


def _dtype_name(dtype: str, device: str) -> str:
    name = (dtype or "auto").lower()
    if name == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return name


def _architecture(model: str) -> Any:
    """The preset's Architecture, or None for a Hugging Face id (size unknown before download)."""
    from tokenjoule.models.architecture import architecture_from_config
    from tokenjoule.models.registry import resolve_model

    source = resolve_model(model)
    if not source.is_preset or not source.config:
        return None
    return architecture_from_config(source.config), source.config


def memory_needed(spec: Any, device: Optional[str] = None, batch_size: Optional[int] = None) -> Optional[MemoryNeed]:
    """Estimated bytes to hold the model (and draft) and the KV cache of one batch; None when
    the model's size is unknown (an HF id). `batch_size` overrides the spec's (1 for a b=max cell)."""
    device = device or resolve_device_name(spec.device)
    found = _architecture(spec.model)
    if found is None:
        return None
    arch, _cfg = found
    dtype = _dtype_name(spec.dtype, device)
    nbytes = DTYPE_BYTES.get(dtype, 4)
    tp = max(1, int(getattr(spec, "tensor_parallel", 1) or 1) * int(getattr(spec, "pipeline_parallel", 1) or 1))
    weights = arch.params_total * nbytes // tp
    batch = batch_size or spec.batch_size
    beams = spec.decoding.num_beams if spec.decoding.strategy == "beam" else 1
    kv = arch.kv_bytes_per_token(nbytes) * batch * beams * (spec.input_tokens + spec.output_tokens) // tp
    if spec.decoding.strategy == "speculative" and spec.decoding.draft_model:
        draft = _architecture(spec.decoding.draft_model)
        if draft is not None:
            weights += draft[0].params_total * nbytes
            kv += draft[0].kv_bytes_per_token(nbytes) * batch * (spec.input_tokens + spec.output_tokens)
    return MemoryNeed(weights_bytes=int(weights), kv_cache_bytes=int(kv), device=device, dtype=dtype)


def check_context(spec: Any) -> None:
    """input + output tokens within the preset's context window."""
    found = _architecture(spec.model)
    if found is None:
        return
    limit = found[1].get("max_position_embeddings")
    total = spec.input_tokens + spec.output_tokens
    if limit and total > int(limit):
        raise PreflightError(f"{spec.model}: input_tokens + output_tokens = {total:,} exceeds its context of "
                             f"{int(limit):,} tokens (max_position_embeddings); shorten --input-tokens/--output-tokens")


def check_gpu_count(spec: Any, n_cuda: Optional[int] = None) -> None:
    """A cell on tensor_parallel x pipeline_parallel GPUs needs that many visible GPUs from its
    first device on (cuda:N runs on cuda:N..N+k-1). On the CPU (device cpu, or auto without a
    GPU) the ranks are CPU processes and no GPU is needed."""
    need = max(1, int(getattr(spec, "tensor_parallel", 1) or 1)) * max(1, int(getattr(spec, "pipeline_parallel", 1) or 1))
    name = (spec.device or "auto").strip().lower()
    if need <= 1 or name == "cpu":
        return
    n = cuda_devices() if n_cuda is None else n_cuda
    if name == "auto" and n == 0:
        return
    index = name.split(":", 1)[1] if name.startswith("cuda:") else "0"
    first = int(index) if index.isdigit() else 0
    if first + need > n:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise PreflightError(
            f"tensor_parallel {spec.tensor_parallel} x pipeline_parallel {spec.pipeline_parallel} needs {need} GPUs "
            f"(cuda:{first}..cuda:{first + need - 1}) but {n} {'is' if n == 1 else 'are'} visible{seen}; "
            f"use --tp/--pp whose product is at most {max(n - first, 1)}, or make more GPUs visible")


def preflight(spec: Any, batch_size: Optional[int] = None,
              available: Optional[Callable[[str], Optional[int]]] = None) -> Optional[MemoryNeed]:
    """Raise PreflightError (one line) if the cell cannot run on this machine; return the
    memory estimate when there is one. Run it before the store is opened and the model loaded."""
    check_gpu_count(spec)  # before the device check: "needs 4 GPUs, 2 visible" says more than "no cuda:3"
    device = resolve_device_name(spec.device)
    check_context(spec)
    need = memory_needed(spec, device, batch_size)
    if need is None:
        return None
    free = (available or available_bytes)(device)  # looked up per call, so tests can plant a machine
    if free is not None and need.total_bytes > free:
        where = "RAM" if device == "cpu" else f"free memory on {device}"
        hint = ("; use a GPU (--device cuda), a smaller model or --dtype bfloat16" if device == "cpu"
                else "; use a smaller batch, shorter lengths, more GPUs (--tensor-parallel) or a smaller model")
        raise PreflightError(
            f"{spec.model} ({need.dtype}) needs about {_gib(need.total_bytes)} on {device} (weights "
            f"{_gib(need.weights_bytes)} + KV cache {_gib(need.kv_cache_bytes)} + {OVERHEAD_FRACTION:.0%}) but only "
            f"{_gib(free)} {where} is available{hint}")
    return need
