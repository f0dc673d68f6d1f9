"""A table of NVIDIA GPUs: TDP, dense peak throughput per precision, memory bandwidth.

Values come from NVIDIA's datasheets (URL per row). Datasheets print tensor-core figures
*with structured sparsity* (marked with an asterisk); this table holds the *dense* figures,
i.e. half of those. FP32 is the non-tensor (CUDA core) rate. `fp8_tflops` is None on cards
without FP8 tensor cores (Ampere). For cards with a configurable power limit the TDP is the
datasheet's maximum (H100 PCIe: 300-350 W -> 350 W).

Look a card up by its table name, a short alias, or the name NVML reports
(`nvidia-smi --query-gpu=name`), e.g. "NVIDIA H100 80GB HBM3" -> "H100 SXM".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from tokenjoule.errors import TokenjouleError, UnknownNameError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8")
DTYPE_PRECISION = {"float32": "fp32", "fp32": "fp32", "tf32": "tf32", "bfloat16": "bf16", "bf16": "bf16",
                   "float16": "fp16", "fp16": "fp16", "half": "fp16", "fp8": "fp8", "float8": "fp8"}


@dataclass(frozen=True)
class GPUSpec:
    name: str
    tdp_w: float
    fp32_tflops: float
    tf32_tflops: float
    bf16_tflops: float
    fp16_tflops: float
    fp8_tflops: float | None
    memory_bandwidth_tbs: float
    memory_gb: float
    source_url: str
    nvml_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def sparse_peak_flops(self, precision: str = "bf16") -> float:
        """The datasheet's tensor peak *with structured sparsity* (what the paper divided by).

        The datasheet value where the paper quoted one (A6000 bf16: 309.7 TFLOP/s), else twice
        the dense tensor peak; fp32 runs on CUDA cores, which have no sparsity mode (dense)."""
        key = DTYPE_PRECISION.get(precision.lower().removeprefix("torch."))
        dense = self.peak_flops(precision)
        if key == "fp32":
            return dense
        quoted = PAPER_SPARSE_TFLOPS.get((self.name, key))
        return quoted * 1e12 if quoted is not None else 2 * dense

    def peak_flops(self, precision: str = "bf16") -> float:
        """Dense peak FLOP/s at a precision (fp32/tf32/bf16/fp16/fp8, or a torch dtype name)."""
        key = DTYPE_PRECISION.get(precision.lower().removeprefix("torch."))
        if key is None:
            raise UnknownNameError("precision", precision, PRECISIONS)
        tflops = getattr(self, f"{key}_tflops")
        if tflops is None:
            raise TokenjouleError(f"{self.name} has no {key} tensor cores; valid precisions: "
                                  + ", ".join(p for p in PRECISIONS if getattr(self, f'{p}_tflops') is not None))
        return tflops * 1e12

    @property
    def memory_bandwidth_bytes_s(self) -> float:
        return self.memory_bandwidth_tbs * 1e12

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Sparsity-enabled tensor peaks the paper quoted (TFLOP/s); other cards use 2 x dense.
PAPER_SPARSE_TFLOPS: dict[tuple[str, str], float] = {("RTX A6000", "bf16"): 309.7, ("RTX A6000", "fp16"): 309.7}

_DC = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center"
GPUS: tuple[GPUSpec, ...] = (
    GPUSpec("RTX A6000", 300, 38.7, 77.4, 154.8, 154.8, None, 0.768, 48,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/quadro-product-literature/"
            "proviz-print-nvidia-rtx-a6000-datasheet-us-nvidia-1454980-r9-web%20(1).pdf",
            ("NVIDIA RTX A6000",), ("a6000",)),
    GPUSpec("RTX 6000 Ada", 300, 91.1, 182.1, 364.2, 364.2, 728.5, 0.960, 48,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/design-visualization/rtx-6000/"
            "proviz-print-rtx6000-datasheet-web-2504660.pdf",
            ("NVIDIA RTX 6000 Ada Generation",), ("6000 ada", "rtx6000ada")),
    GPUSpec("A100 40GB PCIe", 250, 19.5, 156, 312, 312, None, 1.555, 40,
            f"{_DC}/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            ("NVIDIA A100-PCIE-40GB",), ("a100 pcie 40gb",)),
    GPUSpec("A100 80GB PCIe", 300, 19.5, 156, 312, 312, None, 1.935, 80,
            f"{_DC}/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            ("NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"), ("a100 pcie 80gb",)),
    GPUSpec("A100 40GB SXM", 400, 19.5, 156, 312, 312, None, 1.555, 40,
            f"{_DC}/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            ("NVIDIA A100-SXM4-40GB",), ("a100 sxm 40gb", "a100")),
    GPUSpec("A100 80GB SXM", 400, 19.5, 156, 312, 312, None, 2.039, 80,
            f"{_DC}/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            ("NVIDIA A100-SXM4-80GB",), ("a100 sxm 80gb",)),
    GPUSpec("H100 PCIe", 350, 51, 378, 756.5, 756.5, 1513, 2.0, 80,
            "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            ("NVIDIA H100 PCIe",), ("h100 pcie",)),
    GPUSpec("H100 SXM", 700, 67, 494.5, 989.5, 989.5, 1979, 3.35, 80,
            "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"), ("h100", "h100 sxm5")),
    GPUSpec("H100 NVL", 400, 60, 417.5, 835.5, 835.5, 1670.5, 3.9, 94,
            "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            ("NVIDIA H100 NVL",), ()),
    GPUSpec("H200", 700, 67, 494.5, 989.5, 989.5, 1979, 4.8, 141,
            "https://resources.nvidia.com/en-us-data-center-overview-mc/en-us-data-center-overview/hpc-datasheet-sc23-h200",
            ("NVIDIA H200",), ("h200 sxm",)),
    GPUSpec("H200 NVL", 600, 60, 417.5, 835.5, 835.5, 1670.5, 4.8, 141,
            "https://resources.nvidia.com/en-us-data-center-overview-mc/en-us-data-center-overview/hpc-datasheet-sc23-h200",
            ("NVIDIA H200 NVL",), ()),
    GPUSpec("L40S", 350, 91.6, 183, 362.05, 362.05, 733, 0.864, 48,
            "https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413",
            ("NVIDIA L40S",), ()),
    GPUSpec("L4", 72, 30.3, 60, 121, 121, 242.5, 0.300, 24,
            "https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet",
            ("NVIDIA L4",), ()),
)


def _norm(name: str) -> str:
    text = name.lower().replace("nvidia", "").replace("generation", "")
    return re.sub(r"[^a-z0-9]", "", text)


_INDEX: dict[str, GPUSpec] = {}
for _g in GPUS:
    for _n in (_g.name, *_g.nvml_names, *_g.aliases):
        _INDEX.setdefault(_norm(_n), _g)


def list_gpus() -> list[str]:
    return [g.name for g in GPUS]


def get_gpu(name: str) -> GPUSpec:
    """The table row for a table name, alias or NVML name (case and punctuation ignored)."""
    spec = _INDEX.get(_norm(name or ""))
    if spec is None:
        raise UnknownNameError("GPU", name, list_gpus())
    return spec


def find_gpu(name: str | None) -> GPUSpec | None:
    """Like `get_gpu` but None when the card is not in the table."""
    try:
        return get_gpu(name) if name else None
    except UnknownNameError:
        return None
