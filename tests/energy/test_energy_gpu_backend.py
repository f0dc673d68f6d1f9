"""The pynvml backend against a stand-in pynvml module (no GPU here): index mapping through
CUDA_VISIBLE_DEVICES, unit conversion, unsupported fields, versions, processes."""

from __future__ import annotations

import sys
import types

import pytest

from tokenjoule.energy import gpu_backend
from tokenjoule.energy.gpu_backend import GpuUnavailableError, PynvmlGpuBackend


class _NVMLError(Exception):
    pass


def _fake_pynvml(count: int = 3, instant_ok: bool = True):
    m = types.ModuleType("pynvml")
    m.NVMLError = _NVMLError
    m.NVML_SUCCESS = 0
    m.NVML_FI_DEV_POWER_INSTANT, m.NVML_FI_DEV_POWER_AVERAGE, m.NVML_POWER_SCOPE_GPU = 186, 185, 0
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: count
    m.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)
    m.nvmlDeviceGetHandleByUUID = lambda u: ("h", int(u.rsplit("-", 1)[1]))
    m.nvmlDeviceGetIndex = lambda h: h[1]
    m.nvmlDeviceGetName = lambda h: f"GPU{h[1]}".encode()
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: 1_234_500 + h[1]  # mJ
    m.nvmlDeviceGetPowerManagementLimit = lambda h: 700_000  # mW
    m.nvmlSystemGetDriverVersion = lambda: "580.65"
    m.nvmlSystemGetCudaDriverVersion = lambda: 13000

    def fields(h, reqs):
        fid = reqs[0][0]
        ok = instant_ok or fid != m.NVML_FI_DEV_POWER_INSTANT
        value = types.SimpleNamespace(uiVal=250_500 if fid == m.NVML_FI_DEV_POWER_INSTANT else 240_000)
        return [types.SimpleNamespace(nvmlReturn=0 if ok else 3, value=value)]

    m.nvmlDeviceGetFieldValues = fields
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=7), types.SimpleNamespace(pid=5)]
    return m


def test_pynvml_backend_maps_visible_devices_and_units(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-abc-1")
    b = PynvmlGpuBackend()
    assert b.device_count() == 2
    assert [b.name(0), b.name(1)] == ["GPU2", "GPU1"]  # cuda:0 is NVML device 2
    assert b.energy_j(0) == pytest.approx(1234.502)
    assert b.instant_power_w(0) == pytest.approx(250.5)
    assert b.average_power_w(0) == pytest.approx(240.0)
    assert b.power_limit_w(1) == pytest.approx(700.0)
    assert b.driver_version() == "580.65" and b.cuda_version() == "13.0"
    assert b.compute_pids(0) == [5, 7]


def test_pynvml_backend_unsupported_instant_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(instant_ok=False))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    b = PynvmlGpuBackend()
    assert b.device_count() == 3
    assert b.instant_power_w(0) is None and b.average_power_w(0) == pytest.approx(240.0)


def test_no_gpu_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=0))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(GpuUnavailableError, match="no GPU"):
        PynvmlGpuBackend()
    monkeypatch.setattr(gpu_backend, "open_gpu_backend", lambda: (_ for _ in ()).throw(RuntimeError("driver gone")))
    backend, reason = gpu_backend.probe_gpu_backend()
    assert backend is None and "driver gone" in reason
