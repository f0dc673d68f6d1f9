"""Hardware and software facts recorded with every measurement.

Never imports torch, transformers or vLLM just to read a version: when a package is already
imported its live version is used (it is what ran), else the installed metadata. Without a
GPU the GPU keys are empty/None, never an error.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import platform
import socket
import sys
from typing import Sequence

import tokenjoule


def _version(package: str, module: str | None = None) -> str | None:
    mod = sys.modules.get(module or package)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    try:
        return _md.version(package)
    except _md.PackageNotFoundError:
        return None


def cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _torch_cuda_version() -> str | None:
    torch = sys.modules.get("torch")  # only if already imported: importing torch costs seconds
    return getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None


def collect_provenance(gpu_indices: Sequence[int] | None = None, backend=None) -> dict:
    """Provenance dict (keys of the results store). `backend` is a GpuBackend; when None one
    is opened if a GPU is readable. `gpu_indices` None means every visible device; [] means
    no GPU was used (nothing is probed)."""
    from tokenjoule.energy.gpu_backend import probe_gpu_backend

    gpu_reason = None
    if backend is None and (gpu_indices is None or len(gpu_indices) > 0):
        backend, gpu_reason = probe_gpu_backend()
    names: list[str] = []
    limits: list[float | None] = []
    driver = cuda_driver = None
    if backend is not None:
        indices = list(range(backend.device_count())) if gpu_indices is None else list(gpu_indices)
        for i in indices:
            try:
                names.append(backend.name(i))
            except Exception as exc:
                names.append(f"unreadable ({exc})")
            limits.append(backend.power_limit_w(i))
        driver, cuda_driver = backend.driver_version(), backend.cuda_version()
    prov = {
        "gpu_names": names,
        "gpu_count": len(names),
        "driver_version": driver,
        # the CUDA the framework was built with when known (what ran), else the driver's
        "cuda_version": _torch_cuda_version() or cuda_driver,
        "cuda_driver_version": cuda_driver,
        "power_limit_w": limits,
        "torch_version": _version("torch"),
        "transformers_version": _version("transformers"),
        "vllm_version": _version("vllm"),
        "zeus_version": _version("zeus"),
        "tokenjoule_version": tokenjoule.__version__,
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
        "cpu_name": cpu_name(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if gpu_reason:
        prov["gpu_reason"] = gpu_reason
    return prov
