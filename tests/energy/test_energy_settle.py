"""The idle settle rule: idle is measured only once power stops falling (scripted power, fake clock)."""

from __future__ import annotations

import math

import pytest

from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy.clock import FakeClock
from tokenjoule.energy.nvml_meter import NvmlMeter
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.energy.settle import SettleRule, judge_window, wait_until_settled


def _meter(backend, clock, tmp_path, **kw) -> NvmlMeter:
    return NvmlMeter(backend, clock=clock, sleep=clock.sleep, rapl=RaplReader(str(tmp_path / "none")), **kw)


def test_idle_after_a_run_waits_for_the_decay(tmp_path):
    clock = FakeClock(sleep_advances=True)
    # 132 W right after a run, decaying to 75 W with a 5 s time constant (the H100 case)
    backend = FakeGpuBackend(clock=clock, power_w=lambda t: 75.0 + 57.0 * math.exp(-t / 5.0))
    meter = _meter(backend, clock, tmp_path)
    idle_w = meter.measure_idle(2.0)
    settle = meter.idle_details["idle_settle"]
    assert settle["settled"] is True
    rule = SettleRule()
    # the drift rule, not the timeout, ended the wait: the decay must be nearly over
    assert rule.window_s <= settle["waited_s"] < rule.timeout_s
    assert 75.0 <= idle_w < 75.0 + 5.0
    assert settle["first_power_w"] == pytest.approx(132.0, abs=0.5)
    assert abs(settle["window_drift_w"]) <= max(rule.drift_w, rule.drift_frac * settle["window_mean_w"])
    # temperature and clocks are recorded before the wait and at the idle window's start
    assert meter.idle_details["idle_gpu_state_start"]["0"]["sm_clock_mhz"] == 1980.0
    assert (meter.idle_details["idle_gpu_state_before_settle"]["0"]["temperature_c"]
            > meter.idle_details["idle_gpu_state_start"]["0"]["temperature_c"])


def test_steady_power_settles_after_one_window(tmp_path):
    clock = FakeClock(sleep_advances=True)
    meter = _meter(FakeGpuBackend(clock=clock, power_w=79.0), clock, tmp_path)
    assert meter.measure_idle(1.0) == pytest.approx(79.0, rel=1e-3)
    settle = meter.idle_details["idle_settle"]
    assert settle["settled"] and settle["waited_s"] == pytest.approx(SettleRule().window_s, abs=0.11)


def test_timeout_is_recorded_not_hidden(tmp_path):
    clock = FakeClock(sleep_advances=True)
    # falls 2 W/s for ever: never settles
    meter = _meter(FakeGpuBackend(clock=clock, power_w=lambda t: 300.0 - 2.0 * t), clock, tmp_path,
                   settle_rule=SettleRule(timeout_s=10.0))
    idle_w = meter.measure_idle(1.0)
    settle = meter.idle_details["idle_settle"]
    assert settle["settled"] is False and "did not settle within 10 s" in settle["reason"]
    assert settle["waited_s"] == pytest.approx(10.0, abs=0.2)
    assert idle_w is not None  # still measured, and marked by settled=false


def test_noise_within_the_range_settles_but_a_spike_does_not():
    rule = SettleRule()
    assert judge_window([79.0, 80.5, 78.9, 80.1, 79.4, 80.2, 79.1, 80.0], rule)[0]
    assert not judge_window([79.0, 80.0, 79.0, 120.0, 79.0, 80.0, 79.0, 80.0], rule)[0]


def test_unreadable_power_gives_a_reason():
    clock = FakeClock()
    result = wait_until_settled(lambda: None, clock, clock.sleep)
    assert result.settled is False and "not readable" in result.reason


def test_flat_power_at_load_clocks_is_not_idle_and_keeps_the_settled_baseline(tmp_path):
    # the H200 case: after a run, power sits flat at 123 W with the SM clock still at
    # 1980 MHz; cold it is 79 W at 345 MHz
    clock = FakeClock(sleep_advances=True)
    hot = {"on": False}
    backend = FakeGpuBackend(clock=clock, power_w=lambda t: 123.0 if hot["on"] else 79.0,
                             sm_clock_mhz=lambda t: 1980.0 if hot["on"] else 345.0)
    meter = _meter(backend, clock, tmp_path, settle_rule=SettleRule(timeout_s=12.0))
    assert meter.measure_idle(1.0) == pytest.approx(79.0, rel=1e-3)  # cold: settles at once
    assert meter.idle_details["idle_settled"] is True
    hot["on"] = True
    idle_w = meter.measure_idle(1.0)
    d = meter.idle_details
    assert d["idle_settle"]["settled"] is False and "SM clock" in d["idle_settle"]["clock_note"]
    assert d["idle_power_measured_w"] == pytest.approx(123.0, rel=1e-3)  # recorded ...
    assert idle_w == pytest.approx(79.0, rel=1e-3) and d["idle_power_source"] == "previous settled baseline"


def test_an_unsettled_first_baseline_flags_the_windows(tmp_path):
    from tokenjoule.energy.measurement import FLAG_IDLE_NOT_SETTLED

    clock = FakeClock(sleep_advances=True)
    meter = _meter(FakeGpuBackend(clock=clock, power_w=lambda t: 300.0 - 2.0 * t), clock, tmp_path,
                   settle_rule=SettleRule(timeout_s=6.0))
    meter.measure_idle(1.0)
    with meter.window() as w:
        clock.advance(2.0)
    assert FLAG_IDLE_NOT_SETTLED in w.result.flags
