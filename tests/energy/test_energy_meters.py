"""The estimate meter, the simulated meter, make_meter and provenance."""

from __future__ import annotations

import json

import pytest

from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy import (
    METER_KINDS,
    CpuTimeEstimateMeter,
    FakeClock,
    Measurement,
    NvmlMeter,
    SimulatedMeter,
    collect_provenance,
    make_meter,
)
from tokenjoule.energy import gpu_backend
from tokenjoule.energy.measurement import (
    FLAG_COUNTER_BACKWARDS,
    FLAG_ESTIMATE,
    FLAG_SHORT_WINDOW,
    FLAG_TIMELINE_DISAGREES,
    FLAG_ZERO_DELTA,
)
from tokenjoule.energy.meter import Meter
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.errors import TokenjouleError, UnknownNameError


# --- estimate -------------------------------------------------------------------------
def test_estimate_meter_labelled_positive_gpu_none(tmp_path):
    meter = CpuTimeEstimateMeter(rapl=RaplReader(str(tmp_path)))
    assert meter.measure_idle(5.0) is None
    with meter.window() as w:
        sum(i * i for i in range(300_000))  # real CPU work
    m = w.result
    assert m.method == "estimate-cpu-time"
    assert FLAG_ESTIMATE in m.flags and m.is_estimate
    assert m.gpu_energy_j is None and "no GPU energy sensor" in m.gpu_energy_reason
    assert m.energy_j is not None and m.energy_j > 0
    assert m.energy_j == m.estimated_energy_j
    assert m.idle_power_w is None and m.active_energy_j is None
    assert "W per busy core" in m.notes["assumption"]


def test_estimate_is_cpu_time_times_watts():
    clock, cpu = FakeClock(), FakeClock()
    meter = CpuTimeEstimateMeter(watts_per_busy_core=12.0, clock=clock, cpu_time=cpu, rapl=RaplReader("/nonexistent"))
    with meter.window() as w:
        clock.advance(2.0)
        cpu.advance(3.0)  # 1.5 cores busy on average
    assert w.result.energy_j == pytest.approx(36.0)
    assert w.result.avg_power_w == pytest.approx(18.0)
    assert w.result.notes["busy_cores_mean"] == pytest.approx(1.5)


# --- simulated ------------------------------------------------------------------------
def test_simulated_constant_power_and_idle():
    clock = FakeClock()
    meter = SimulatedMeter(power_w=300.0, idle_power_w=60.0, devices=2, clock=clock)
    with meter.window() as w0:
        clock.advance(1.0)
    assert w0.result.idle_power_w is None  # not measured yet
    assert meter.measure_idle(5.0) == pytest.approx(120.0)
    assert clock() == pytest.approx(6.0)  # a fake clock is advanced, not slept on
    with meter.window() as w:
        clock.advance(2.0)
    m = w.result
    assert m.method == "simulated"
    assert m.gpu_energy_j == pytest.approx(1200.0)
    assert m.gpu_energy_by_device_j == {"0": pytest.approx(600.0), "1": pytest.approx(600.0)}
    assert m.active_energy_j == pytest.approx(1200.0 - 120.0 * 2.0)
    assert m.timeline_disagreement == pytest.approx(0.0)
    assert len(m.samples) == 41 and m.flags == ()
    assert isinstance(meter, Meter)


def test_simulated_scripts():
    clock = FakeClock()
    meter = SimulatedMeter(
        clock=clock,
        window_powers_w=[100.0, 200.0],
        counter_script=[50.0, 10.0],  # first window: the counter goes backwards
        timeline_scale=1.0,
    )
    with meter.window() as w1:
        clock.advance(1.0)
    with meter.window() as w2:
        clock.advance(1.0)
    with meter.window() as w3:
        clock.advance(0.05)
    assert FLAG_COUNTER_BACKWARDS in w1.result.flags
    assert w1.result.gpu_energy_by_device_j["0"] is None
    assert w1.result.gpu_energy_j == pytest.approx(100.0)  # timeline fallback at 100 W
    assert w2.result.gpu_energy_j == pytest.approx(200.0) and w2.result.flags == ()
    assert FLAG_SHORT_WINDOW in w3.result.flags


def test_simulated_zero_delta_and_disagreement():
    clock = FakeClock()
    m = SimulatedMeter(clock=clock, counter_script=[7.0, 7.0])
    with m.window() as w:
        clock.advance(1.0)
    assert FLAG_ZERO_DELTA in w.result.flags
    m = SimulatedMeter(clock=clock, timeline_scale=0.9)
    with m.window() as w:
        clock.advance(2.0)
    assert w.result.timeline_disagreement == pytest.approx(-0.1)
    assert FLAG_TIMELINE_DISAGREES in w.result.flags
    m = SimulatedMeter(clock=clock, power_fn=lambda t: 100.0 + 100.0 * t)
    with m.window() as w:
        clock.advance(2.0)
    assert w.result.gpu_energy_j == pytest.approx(400.0, rel=1e-6)
    json.dumps(w.result.to_dict())


# --- measurement ----------------------------------------------------------------------
def test_measurement_headline_prefers_gpu():
    m = Measurement(method="x", duration_s=2.0, gpu_energy_j=100.0, idle_power_w=10.0, estimated_energy_j=5.0)
    assert m.energy_j == 100.0 and m.active_energy_j == pytest.approx(80.0) and m.avg_power_w == 50.0
    m = Measurement(method="x", duration_s=2.0, gpu_energy_j=None, gpu_energy_reason="none")
    assert m.energy_j is None and m.avg_power_w is None and m.active_energy_j is None


# --- make_meter -----------------------------------------------------------------------
def test_make_meter_unknown_kind_lists_valid():
    with pytest.raises(UnknownNameError) as exc:
        make_meter("rapl-magic")
    for kind in METER_KINDS:
        assert kind in str(exc.value)


def test_make_meter_explicit_kinds():
    assert isinstance(make_meter("simulated", power_w=10.0), SimulatedMeter)
    assert isinstance(make_meter("estimate"), CpuTimeEstimateMeter)
    assert isinstance(make_meter("auto", devices=[]), CpuTimeEstimateMeter)


def test_make_meter_without_gpu(monkeypatch):
    monkeypatch.setattr(gpu_backend, "probe_gpu_backend", lambda: (None, "NVML is not readable (test)"))
    meter = make_meter("auto")
    assert isinstance(meter, CpuTimeEstimateMeter)
    assert "NVML is not readable (test)" in meter.gpu_reason
    with pytest.raises(TokenjouleError, match="NVML is not readable"):
        make_meter("nvml")


def test_make_meter_with_gpu(monkeypatch):
    backend = FakeGpuBackend(devices=2)
    monkeypatch.setattr(gpu_backend, "probe_gpu_backend", lambda: (backend, None))
    meter = make_meter("auto", devices=[1], sample_hz=25)
    assert isinstance(meter, NvmlMeter) and meter.devices == [1] and meter.sample_hz == 25
    assert make_meter("nvml").devices == [0, 1]


# --- provenance -----------------------------------------------------------------------
def test_provenance_without_gpu_does_not_crash():
    prov = collect_provenance([])
    for key in ("gpu_names", "gpu_count", "driver_version", "cuda_version", "power_limit_w", "torch_version",
                "transformers_version", "vllm_version", "tokenjoule_version", "hostname", "cpu_name", "time_utc"):
        assert key in prov
    assert prov["gpu_count"] == 0 and prov["gpu_names"] == []
    import tokenjoule

    assert prov["tokenjoule_version"] == tokenjoule.__version__


def test_provenance_from_backend():
    prov = collect_provenance([0, 1], backend=FakeGpuBackend(devices=2))
    assert prov["gpu_names"] == ["Fake H100", "Fake H100"] and prov["gpu_count"] == 2
    assert prov["power_limit_w"] == [700.0, 700.0]
    assert prov["driver_version"] == "999.99"
    assert prov["cuda_driver_version"] == "13.0"
