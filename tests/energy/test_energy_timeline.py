"""The power timeline: sampler schedule and trapezoid integration."""

from __future__ import annotations

import math

import pytest

from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy.clock import FakeClock
from tokenjoule.energy.measurement import PowerSample
from tokenjoule.energy.nvml_meter import NvmlMeter
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.energy.timeline import PowerSampler, integrate_device, integrate_timeline, mean_total_power_w


def _curve(t: float) -> float:
    return 200.0 + 100.0 * math.sin(2 * math.pi * t / 2.0) + 30.0 * t


def test_integral_of_known_curve_matches_analytic():
    hz, duration = 20, 2.0
    samples = [PowerSample(k / hz, (_curve(k / hz),)) for k in range(int(duration * hz) + 1)]
    analytic = 200.0 * duration + 30.0 * duration**2 / 2  # the sine integrates to 0 over a period
    assert integrate_device(samples, 0) == pytest.approx(analytic, rel=1e-3)


def test_integral_of_a_ramp_is_exact():
    samples = [PowerSample(t, (100.0 + 50.0 * t, 10.0)) for t in (0.0, 0.3, 1.0, 2.0)]
    assert integrate_timeline(samples, 2) == [pytest.approx(300.0), pytest.approx(20.0)]
    assert mean_total_power_w(samples, 2) == pytest.approx(160.0)


def test_gaps_are_bridged_and_too_few_points_give_none():
    samples = [PowerSample(0.0, (100.0,)), PowerSample(0.5, (None,)), PowerSample(1.0, (100.0,))]
    assert integrate_device(samples, 0) == pytest.approx(100.0)
    assert integrate_device(samples[:1], 0) is None
    assert integrate_device([PowerSample(0.0, ()), PowerSample(1.0, ())], 0) is None


def test_sampler_rate_from_fake_clock_timestamps():
    clock = FakeClock(sleep_advances=True)  # the sampler's sleeps drive time: exact stamps
    sampler = PowerSampler(lambda: (1.0,), hz=20, clock=clock, sleep=clock.sleep)
    sampler.start()
    clock.wait_until(2.0)
    samples = sampler.stop(final_sample=False)
    in_window = [s for s in samples if s.t_s < 2.0 - 1e-9]
    assert len(in_window) == 40  # 20 Hz x 2 s
    gaps = [b.t_s - a.t_s for a, b in zip(in_window, in_window[1:])]
    assert max(gaps) == pytest.approx(0.05) and min(gaps) == pytest.approx(0.05)
    assert len(in_window) / 2.0 >= 10


def test_sampler_rejects_rates_below_10_hz():
    with pytest.raises(ValueError, match="at least 10"):
        PowerSampler(lambda: (1.0,), hz=5)


def test_sampler_survives_read_errors():
    clock = FakeClock()

    def broken():
        raise RuntimeError("NVML went away")

    sampler = PowerSampler(broken, hz=20, clock=clock)
    sampler.start()
    samples = sampler.stop()
    assert sampler.read_errors == len(samples) >= 2
    assert integrate_device(samples, 0) is None


def test_meter_timeline_tracks_a_varying_curve(tmp_path):
    clock = FakeClock(sleep_advances=True)
    backend = FakeGpuBackend(clock=clock, power_w=_curve)
    meter = NvmlMeter(backend, clock=clock, sleep=clock.sleep, sample_hz=50, rapl=RaplReader(str(tmp_path)))
    with meter.window() as w:
        clock.wait_until(2.0)
    m = w.result
    assert m.notes["sample_hz_achieved"] >= 10
    assert abs(m.timeline_disagreement) < 0.01
    assert m.flags == ()
