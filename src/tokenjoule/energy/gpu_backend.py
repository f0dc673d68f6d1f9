"""The one module that talks to the GPU vendor library.

Everything else in `tokenjoule.energy` uses the small `GpuBackend` interface below, so a fake
(tests/fakes/fake_nvml.py) can stand in for a real GPU. Device access goes through Zeus
(`zeus.device.get_gpus()`, which wraps NVML and already maps indices through
CUDA_VISIBLE_DEVICES, so index 0 here is `cuda:0` in torch). What Zeus does not expose
(driver and CUDA versions, running compute processes) is read with pynvml through the
NVML handle Zeus already opened.

Where Zeus is not installed (the offline GPU hosts lack it unless it is carried as a wheel),
a plain pynvml backend with the same index mapping is used instead; `backend_name` records
which one measured.

Units at this interface are SI: joules, watts. NVML reports mJ and mW.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from tokenjoule.errors import TokenjouleError


class GpuUnavailableError(TokenjouleError):
    """No GPU energy sensor can be read (no NVML, no GPU, no permission...)."""


@runtime_checkable
class GpuBackend(Protocol):
    backend_name: str

    def device_count(self) -> int: ...

    def name(self, index: int) -> str: ...

    def energy_j(self, index: int) -> float:
        """Cumulative energy counter since the driver loaded (J). May reset; never decreases
        otherwise."""

    def instant_power_w(self, index: int) -> float | None:
        """Instantaneous power (W); None where the device does not report it."""

    def average_power_w(self, index: int) -> float | None:
        """Power averaged by the driver (about 1 s on recent GPUs); None if unsupported."""

    def power_limit_w(self, index: int) -> float | None: ...

    def driver_version(self) -> str | None: ...

    def cuda_version(self) -> str | None:
        """Highest CUDA version the driver supports, e.g. '13.0'."""

    def compute_pids(self, index: int) -> list[int] | None:
        """PIDs with a compute context on the device; None when NVML cannot say."""

    def temperature_c(self, index: int) -> float | None:
        """GPU core temperature (C); None when unreadable."""

    def sm_clock_mhz(self, index: int) -> float | None:
        """Current SM clock (MHz); None when unreadable."""

    def mem_clock_mhz(self, index: int) -> float | None:
        """Current memory clock (MHz); None when unreadable."""

    def close(self) -> None: ...


def _visible_nvml_indices(pynvml) -> list[int]:
    """NVML indices of the devices CUDA numbers 0..n-1 (CUDA_VISIBLE_DEVICES order)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = pynvml.nvmlDeviceGetCount()
    if visible is None:
        return list(range(count))
    indices = []
    for item in (v.strip() for v in visible.split(",")):
        if not item:
            continue
        if item.isdigit():
            indices.append(int(item))
        else:  # a UUID: find its NVML index
            handle = pynvml.nvmlDeviceGetHandleByUUID(item)
            indices.append(pynvml.nvmlDeviceGetIndex(handle))
    return indices


class _NvmlExtras:
    """Reads shared by both backends, given per-device NVML handles."""

    def __init__(self, pynvml, handles: list):
        self._nvml = pynvml
        self._handles = handles

    def driver_version(self) -> str | None:
        try:
            v = self._nvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        except self._nvml.NVMLError:
            return None

    def cuda_version(self) -> str | None:
        try:
            v = int(self._nvml.nvmlSystemGetCudaDriverVersion())  # e.g. 12040
        except self._nvml.NVMLError:
            return None
        return f"{v // 1000}.{(v % 1000) // 10}"

    def temperature_c(self, index: int) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetTemperature(self._handles[index], self._nvml.NVML_TEMPERATURE_GPU))
        except self._nvml.NVMLError:
            return None

    def _clock(self, kind: int, index: int) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetClockInfo(self._handles[index], kind))
        except self._nvml.NVMLError:
            return None

    def sm_clock_mhz(self, index: int) -> float | None:
        return self._clock(self._nvml.NVML_CLOCK_SM, index)

    def mem_clock_mhz(self, index: int) -> float | None:
        return self._clock(self._nvml.NVML_CLOCK_MEM, index)

    def compute_pids(self, index: int) -> list[int] | None:
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handles[index])
        except self._nvml.NVMLError:
            return None
        return sorted({int(p.pid) for p in procs})


class ZeusGpuBackend(_NvmlExtras):
    """GPU access through Zeus (`zeus.device.get_gpus`)."""

    backend_name = "zeus"

    def __init__(self) -> None:
        try:
            from zeus.device import get_gpus
            from zeus.device.gpu.common import ZeusBaseGPUError
        except ImportError as exc:  # pragma: no cover - depends on install
            raise GpuUnavailableError(f"zeus is not importable: {exc}") from exc
        self._zeus_error = ZeusBaseGPUError
        try:
            self._gpus = get_gpus()
        except Exception as exc:  # ZeusGPUInitError and friends: no NVML/AMD library or GPU
            raise GpuUnavailableError(f"zeus found no GPU ({exc})") from exc
        if len(self._gpus) == 0:
            raise GpuUnavailableError("zeus found no GPU (no NVIDIA/AMD management library)")
        import pynvml

        handles = [getattr(g, "handle", None) for g in self._gpus.gpus]
        super().__init__(pynvml, handles)

    def device_count(self) -> int:
        return len(self._gpus)

    def name(self, index: int) -> str:
        return str(self._gpus.get_name(index))

    def energy_j(self, index: int) -> float:
        return self._gpus.get_total_energy_consumption(index) / 1000.0

    def _power(self, getter, index: int) -> float | None:
        try:
            return getter(index) / 1000.0
        except self._zeus_error:
            return None

    def instant_power_w(self, index: int) -> float | None:
        return self._power(self._gpus.get_instant_power_usage, index)

    def average_power_w(self, index: int) -> float | None:
        return self._power(self._gpus.get_average_power_usage, index)

    def power_limit_w(self, index: int) -> float | None:
        return self._power(self._gpus.get_power_management_limit, index)

    def supports_energy_counter(self, index: int) -> bool:
        return bool(self._gpus.supports_get_total_energy_consumption(index))

    def close(self) -> None:
        pass  # Zeus keeps a process-wide singleton; NVML stays initialised for it


class PynvmlGpuBackend(_NvmlExtras):
    """Fallback with the same semantics as Zeus's NVIDIA backend, for hosts without Zeus."""

    backend_name = "pynvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise GpuUnavailableError("nvidia-ml-py (pynvml) is not installed") from exc
        try:
            pynvml.nvmlInit()
            indices = _visible_nvml_indices(pynvml)
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        except pynvml.NVMLError as exc:
            raise GpuUnavailableError(f"NVML is not readable ({exc})") from exc
        if not handles:
            raise GpuUnavailableError("NVML reports no GPU")
        super().__init__(pynvml, handles)

    def device_count(self) -> int:
        return len(self._handles)

    def name(self, index: int) -> str:
        v = self._nvml.nvmlDeviceGetName(self._handles[index])
        return v.decode() if isinstance(v, bytes) else str(v)

    def energy_j(self, index: int) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[index]) / 1000.0

    def _field_w(self, field_id: int, index: int) -> float | None:
        nvml = self._nvml
        try:
            value = nvml.nvmlDeviceGetFieldValues(self._handles[index], [(field_id, nvml.NVML_POWER_SCOPE_GPU)])[0]
        except nvml.NVMLError:
            return None
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            return None
        return value.value.uiVal / 1000.0

    def instant_power_w(self, index: int) -> float | None:
        return self._field_w(self._nvml.NVML_FI_DEV_POWER_INSTANT, index)

    def average_power_w(self, index: int) -> float | None:
        return self._field_w(self._nvml.NVML_FI_DEV_POWER_AVERAGE, index)

    def power_limit_w(self, index: int) -> float | None:
        try:
            return self._nvml.nvmlDeviceGetPowerManagementLimit(self._handles[index]) / 1000.0
        except self._nvml.NVMLError:
            return None

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


def open_gpu_backend() -> GpuBackend:
    """Zeus when it works, else pynvml. Raises GpuUnavailableError with the reason(s)."""
    try:
        import zeus.device  # noqa: F401
    except Exception as exc:  # not installed, or broken (a missing optional dependency)
        zeus_reason = f"zeus is not usable ({type(exc).__name__}: {exc})"
    else:
        try:
            return ZeusGpuBackend()
        except GpuUnavailableError as exc:
            zeus_reason = str(exc)
    try:
        return PynvmlGpuBackend()
    except GpuUnavailableError as exc:
        raise GpuUnavailableError(f"{zeus_reason}; {exc}") from exc


def probe_gpu_backend() -> tuple[GpuBackend | None, str | None]:
    """(backend, None) when a GPU energy sensor is readable, else (None, reason)."""
    try:
        return open_gpu_backend(), None
    except GpuUnavailableError as exc:
        return None, str(exc)
    except Exception as exc:  # an unexpected vendor-library failure must not crash CPU runs
        return None, f"GPU management library failed: {type(exc).__name__}: {exc}"
