"""NvmlMeter against the fake GPU backend: counter logic, flags, idle, processes."""

from __future__ import annotations

import os

import pytest

from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy.clock import FakeClock
from tokenjoule.energy.measurement import (
    FLAG_COUNTER_BACKWARDS,
    FLAG_FOREIGN_PROCESS,
    FLAG_SHORT_WINDOW,
    FLAG_TIMELINE_DISAGREES,
    FLAG_ZERO_DELTA,
)
from tokenjoule.energy.nvml_meter import NvmlMeter
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.errors import TokenjouleError


def _meter(backend, clock, tmp_path, **kw) -> NvmlMeter:
    # RAPL pointed at an empty temp dir: the host's sensors must not leak into the tests
    return NvmlMeter(backend, clock=clock, sleep=clock.sleep, rapl=RaplReader(str(tmp_path / "none")), **kw)


def test_two_devices_sum_and_per_device(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(devices=2, power_w=[100.0, 200.0], clock=clock)
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(2.0)
    m = w.result
    assert m.method == "nvml-counter"
    assert m.duration_s == pytest.approx(2.0)
    assert m.gpu_energy_by_device_j == {"0": pytest.approx(200.0), "1": pytest.approx(400.0)}
    assert m.gpu_energy_j == pytest.approx(600.0)
    assert m.energy_j == m.gpu_energy_j
    assert m.avg_power_w == pytest.approx(300.0)
    # constant power: the timeline (with its edge samples) integrates to the counter's energy
    assert m.timeline_energy_j == pytest.approx(600.0)
    assert abs(m.timeline_disagreement) < 1e-9
    assert m.flags == ()
    assert m.cpu_energy_j is None and "no " in m.cpu_energy_reason


def test_sync_runs_at_both_edges(tmp_path):
    clock = FakeClock()
    meter = _meter(FakeGpuBackend(clock=clock), clock, tmp_path)
    calls = []
    with meter.window(sync=lambda: calls.append(clock())) as w:
        clock.advance(1.0)
    assert calls == [0.0, 1.0]
    assert w.result.duration_s == pytest.approx(1.0)


def test_counter_reset_flags_device_and_falls_back_to_timeline(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(devices=2, power_w=[100.0, 200.0], clock=clock)
    meter = _meter(backend, clock, tmp_path)
    clock.advance(10.0)  # the counters hold 1000 J and 2000 J
    with meter.window() as w:
        clock.advance(1.0)
        backend.reset(1)
        clock.advance(1.0)
    m = w.result
    assert FLAG_COUNTER_BACKWARDS in m.flags
    assert m.gpu_energy_by_device_j["0"] == pytest.approx(200.0)
    assert m.gpu_energy_by_device_j["1"] is None
    assert "device 1" in m.gpu_energy_reason and "backwards" in m.gpu_energy_reason
    assert "timeline" in m.gpu_energy_reason
    assert m.notes["gpu_energy_source"] == {"0": "counter", "1": "timeline"}
    # headline = counter of device 0 + timeline integral of device 1 (200 W x 2 s)
    assert m.gpu_energy_j == pytest.approx(200.0 + 400.0)
    assert m.timeline_disagreement is None  # not comparable when a fallback is in the total


def test_zero_delta_on_short_window_is_flagged_short(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(clock=clock, counter_period_s=0.1)
    meter = _meter(backend, clock, tmp_path)
    clock.advance(1.01)
    with meter.window() as w:
        clock.advance(0.05)  # inside one counter step
    m = w.result
    assert FLAG_SHORT_WINDOW in m.flags
    assert FLAG_ZERO_DELTA not in m.flags
    assert m.gpu_energy_j == 0.0  # a real, quantised reading, flagged as such


def test_zero_delta_on_long_window_is_not_a_reading(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(clock=clock, counter_script={0: [500.0, 500.0]})
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(1.0)
    m = w.result
    assert FLAG_ZERO_DELTA in m.flags and FLAG_SHORT_WINDOW not in m.flags
    assert m.gpu_energy_by_device_j["0"] is None
    assert "did not move" in m.gpu_energy_reason
    assert m.gpu_energy_j == pytest.approx(300.0)  # labelled timeline fallback


def test_idle_power_attached_and_active_energy(tmp_path):
    clock = FakeClock(sleep_advances=True)
    backend = FakeGpuBackend(clock=clock, power_w=lambda t: 60.0 if t < 50.0 else 300.0)
    meter = _meter(backend, clock, tmp_path)
    idle_w = meter.measure_idle(1.0)
    assert idle_w == pytest.approx(60.0, rel=1e-3)
    assert meter.idle_details["idle_power_source"] == "counter"
    assert meter.idle_details["idle_power_timeline_w"] == pytest.approx(60.0, rel=1e-3)
    clock.advance(60.0 - clock())
    with meter.window() as w:
        clock.advance(2.0)
    m = w.result
    assert m.idle_power_w == pytest.approx(60.0, rel=1e-3)
    assert m.gpu_energy_j == pytest.approx(300.0 * m.duration_s, rel=1e-3)
    assert m.active_energy_j == pytest.approx(m.gpu_energy_j - m.idle_power_w * m.duration_s)
    assert m.active_energy_j == pytest.approx(240.0 * m.duration_s, rel=1e-2)


def test_foreign_process_flagged(tmp_path):
    clock = FakeClock()
    foreign_pid = 1  # exists in /proc and is not a descendant of the test process
    backend = FakeGpuBackend(clock=clock, pids={0: [os.getpid(), foreign_pid]})
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(1.0)
    assert FLAG_FOREIGN_PROCESS in w.result.flags
    assert w.result.notes["foreign_pids"] == [foreign_pid]


def test_own_process_only_is_not_flagged(tmp_path):
    clock = FakeClock()
    backend = FakeGpuBackend(clock=clock, pids={0: [os.getpid()]})
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(1.0)
    assert FLAG_FOREIGN_PROCESS not in w.result.flags


def test_timeline_disagreement_flag(tmp_path):
    clock = FakeClock()
    # the counter says 1000 J over 2 s, the power field says 300 W (600 J): -40%
    backend = FakeGpuBackend(clock=clock, counter_script={0: [0.0, 1000.0]})
    meter = _meter(backend, clock, tmp_path)
    with meter.window() as w:
        clock.advance(2.0)
    assert w.result.timeline_disagreement == pytest.approx(-0.4)
    assert FLAG_TIMELINE_DISAGREES in w.result.flags


def test_average_field_used_when_instant_unsupported(tmp_path):
    clock = FakeClock()
    meter = _meter(FakeGpuBackend(clock=clock, instant_supported=False), clock, tmp_path)
    with meter.window() as w:
        clock.advance(1.0)
    assert w.result.notes["power_field"] == {"0": "average"}
    assert w.result.timeline_energy_j == pytest.approx(300.0)


def test_unknown_device_lists_valid(tmp_path):
    clock = FakeClock()
    with pytest.raises(TokenjouleError, match=r"valid indices: \[0, 1\]"):
        _meter(FakeGpuBackend(devices=2, clock=clock), clock, tmp_path, devices=[3])


def test_exception_in_window_stops_sampler_and_propagates(tmp_path):
    clock = FakeClock()
    meter = _meter(FakeGpuBackend(clock=clock), clock, tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with meter.window() as w:
            raise RuntimeError("boom")
    assert w.result is None
    assert meter.sampler._thread is None


def test_measurement_is_json_serialisable(tmp_path):
    import json

    clock = FakeClock()
    meter = _meter(FakeGpuBackend(clock=clock), clock, tmp_path)
    with meter.window() as w:
        clock.advance(0.5)
    data = json.loads(json.dumps(w.result.to_dict()))
    assert data["energy_j"] == pytest.approx(150.0)
    assert data["samples"][0][0] == 0.0


def test_windows_cannot_nest(tmp_path):
    clock = FakeClock()
    meter = _meter(FakeGpuBackend(clock=clock), clock, tmp_path)
    with meter.window():
        with pytest.raises(TokenjouleError, match="cannot nest"):
            with meter.window():
                pass


def test_timeline_flag_only_on_windows_long_enough_to_judge(tmp_path):
    from tokenjoule.energy.counters import TIMELINE_JUDGE_MIN_WINDOW_S, assemble_gpu_energy

    short = assemble_gpu_energy([0], [0.0], [100.0], TIMELINE_JUDGE_MIN_WINDOW_S / 2, [130.0])
    assert short.timeline_disagreement == pytest.approx(0.3)  # recorded ...
    assert FLAG_TIMELINE_DISAGREES not in short.flags and short.notes["timeline_judged"] is False  # ... not flagged
    long = assemble_gpu_energy([0], [0.0], [100.0], TIMELINE_JUDGE_MIN_WINDOW_S, [130.0])
    assert FLAG_TIMELINE_DISAGREES in long.flags and long.notes["timeline_judged"] is True
    agree = assemble_gpu_energy([0], [0.0], [100.0], 10.0, [104.0])
    assert FLAG_TIMELINE_DISAGREES not in agree.flags


def test_window_records_gpu_state_and_sampler(tmp_path):
    clock = FakeClock()
    meter = _meter(FakeGpuBackend(clock=clock, power_w=200.0), clock, tmp_path)
    with meter.window() as w:
        clock.advance(2.0)
    assert w.result.notes["sampler"] == "thread"  # a fake backend never gets the NVML process
    assert w.result.notes["gpu_state_start"] == {"0": {"temperature_c": 50.0, "sm_clock_mhz": 1980.0,
                                                       "mem_clock_mhz": 3201.0}}
