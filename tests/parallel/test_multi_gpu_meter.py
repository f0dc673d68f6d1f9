"""Per-GPU accounting on several devices: the sum, the split, a subset chosen by
CUDA_VISIBLE_DEVICES, and a foreign process named by the GPU it uses."""

from __future__ import annotations

import os
import sys
import types

import pytest

from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy import FakeClock, NvmlMeter
from tokenjoule.energy.gpu_backend import PynvmlGpuBackend
from tokenjoule.energy.measurement import FLAG_FOREIGN_PROCESS
from tokenjoule.energy.rapl import RaplReader


def _meter(backend, clock, tmp_path, **kw) -> NvmlMeter:
    return NvmlMeter(backend, clock=clock, sleep=clock.sleep, rapl=RaplReader(str(tmp_path / "none")),
                     settle_rule=None, **kw)


def test_four_gpus_subset_sum_and_split(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(devices=4, power_w=[100.0, 200.0, 300.0, 400.0], clock=clock)
    meter = _meter(backend, clock, tmp_path, devices=[1, 3])
    with meter.window() as w:
        clock.advance(2.0)
    m = w.result
    assert set(m.gpu_energy_by_device_j) == {"1", "3"}  # only the GPUs of the set
    assert m.gpu_energy_by_device_j["1"] == pytest.approx(200.0 * m.duration_s, rel=1e-3)
    assert m.gpu_energy_by_device_j["3"] == pytest.approx(400.0 * m.duration_s, rel=1e-3)
    assert m.gpu_energy_j == pytest.approx(sum(m.gpu_energy_by_device_j.values()))


def test_foreign_process_is_named_with_its_gpu(tmp_path):
    clock = FakeClock()
    foreign_pid = 1  # exists in /proc, not a descendant of the test process
    ours = os.getpid()
    backend = FakeGpuBackend(devices=4, clock=clock, pids={0: [ours], 1: [ours], 2: [ours, foreign_pid], 3: [ours]})
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(1.0)
    assert FLAG_FOREIGN_PROCESS in w.result.flags
    assert w.result.notes["foreign_processes_by_device"] == {"2": [foreign_pid]}
    assert w.result.notes["foreign_pids"] == [foreign_pid]


def test_no_foreign_process_no_per_device_note(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(devices=2, clock=clock, pids={0: [os.getpid()], 1: [os.getpid()]})
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(1.0)
    assert FLAG_FOREIGN_PROCESS not in w.result.flags
    assert "foreign_processes_by_device" not in w.result.notes


def _counting_pynvml(energies_mj: dict[int, float]):
    """A stand-in pynvml of 4 devices whose counters the test moves by hand."""
    m = types.ModuleType("pynvml")
    m.NVMLError = type("NVMLError", (Exception,), {})
    m.NVML_SUCCESS, m.NVML_FI_DEV_POWER_INSTANT, m.NVML_FI_DEV_POWER_AVERAGE, m.NVML_POWER_SCOPE_GPU = 0, 186, 185, 0
    m.NVML_TEMPERATURE_GPU, m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 0, 1, 2
    m.nvmlInit = m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 4
    m.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)
    m.nvmlDeviceGetName = lambda h: f"GPU{h[1]}"
    m.nvmlDeviceGetTotalEnergyConsumption = lambda h: energies_mj[h[1]]
    m.nvmlDeviceGetFieldValues = lambda h, reqs: [types.SimpleNamespace(nvmlReturn=0,
                                                                        value=types.SimpleNamespace(uiVal=100_000))]
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    m.nvmlDeviceGetTemperature = lambda h, kind: 40
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1000
    return m


def test_meter_reads_the_cuda_visible_devices_subset(monkeypatch, tmp_path):
    energies = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}
    monkeypatch.setitem(sys.modules, "pynvml", _counting_pynvml(energies))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    clock = FakeClock()
    meter = _meter(PynvmlGpuBackend(), clock, tmp_path, sampler="thread")
    assert meter.devices == [0, 1]  # cuda:0, cuda:1 = NVML devices 2, 3
    with meter.window() as w:
        clock.advance(2.0)
        for nvml_index, joules in ((0, 900.0), (1, 800.0), (2, 300.0), (3, 500.0)):
            energies[nvml_index] += joules * 1000
    m = w.result
    assert m.gpu_energy_by_device_j == pytest.approx({"0": 300.0, "1": 500.0})  # GPUs 0 and 1 never counted
    assert m.gpu_energy_j == pytest.approx(800.0)
