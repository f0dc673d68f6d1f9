"""Adaptive windows: the pure stop rule and warm-up plan, then the runner with a scripted meter."""

from __future__ import annotations

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.fake_engine import FakeEngine
from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.runs.offline import measure_cell
from tokenjoule.runs.windows import (
    STOP_AGREE,
    STOP_MAX_WINDOWS,
    STOP_NO_ENERGY,
    relative_spread,
    stop_rule,
    warmup_plan,
)
from tokenjoule.spec import RunSpec


@pytest.mark.parametrize("energies,expected", [
    ([], None),
    ([100.0], None),                           # one window never stops the default rule
    ([100.0, 100.9], STOP_AGREE),              # within 1%
    ([100.0, 101.0], STOP_AGREE),              # spread 1/100.5 = 0.995% of the mean
    ([100.0, 102.0], None),                    # 2% apart: a third window
    ([100.0, 102.0, 102.5], STOP_AGREE),       # the last two agree
    ([100.0, 102.0, 110.0], STOP_MAX_WINDOWS),  # three and still apart: stop, say so
    ([100.0, None], STOP_NO_ENERGY),           # no sensor: more windows cannot help
])
def test_stop_rule(energies, expected):
    assert stop_rule(energies) == expected


def test_stop_rule_is_configurable():
    assert stop_rule([100.0, 104.0], agree_rel=0.05) == STOP_AGREE
    assert stop_rule([100.0, 104.0, 109.0, 111.0], max_windows=5) is None
    assert stop_rule([100.0, 104.0, 109.0, 111.0, 120.0], max_windows=5) == STOP_MAX_WINDOWS
    with pytest.raises(TokenjouleError):
        stop_rule([1.0], max_windows=1)
    assert relative_spread([100.0, 102.0]) == pytest.approx(2 / 101)


def test_warmup_plan_by_mode():
    eager = warmup_plan("hf", "eager", "adaptive", 3)
    assert (eager.full_length, eager.short) == (0, 1)
    assert (warmup_plan("hf", "compile", "adaptive", 3).full_length, warmup_plan("hf", "cudagraphs", "adaptive", 0).full_length) == (1, 1)
    assert (warmup_plan("vllm", "graphs", "adaptive", 3).full_length, warmup_plan("vllm", "graphs", "adaptive", 3).short) == (0, 1)
    full = warmup_plan("hf", "eager", "full", 3)
    assert (full.full_length, full.short) == (3, 0)
    with pytest.raises(TokenjouleError):
        warmup_plan("hf", "eager", "fast", 3)


def _cell(energies, min_window_s=0.0, **kw):
    clock = FakeClock()
    spec = RunSpec(model="tiny", batch_size=2, input_tokens=16, output_tokens=8, protocol="adaptive",
                   min_window_s=min_window_s, split_prefill=False, **kw)
    engine = FakeEngine(clock)
    engine.load(spec)
    meter = ScriptedMeter(clock, energies_j=list(energies))
    return spec, engine, meter, measure_cell(spec, engine, meter)


def test_two_agreeing_windows_stop_a_long_batch_without_calibration():
    spec, engine, meter, rec = _cell([100.0, 100.5, 999.0])
    # eager: one short warm-up (2 output tokens), then the first batch IS window 1 (it fills min_window_s = 0)
    assert engine.calls[0] == (2, 2)
    assert rec.measurement["calls"] == {"warmup-short": 1, "measure": 2}
    m = rec.metrics
    assert (m["windows"], m["stop_reason"], m["protocol"]) == (2, "agree", "adaptive")
    assert m["energy_j"] == pytest.approx(100.25) and m["window_spread_rel"] == pytest.approx(0.5 / 100.25)
    assert (m["warmup_full_length"], m["warmup_short"]) == (0, 1)


def test_disagreeing_windows_get_a_third_then_stop_and_say_so():
    *_, rec = _cell([100.0, 103.0, 107.0, 1.0])
    assert rec.metrics["windows"] == 3 and rec.metrics["stop_reason"] == "max-windows"
    *_, rec = _cell([100.0, 103.0, 103.2])
    assert rec.metrics["windows"] == 3 and rec.metrics["stop_reason"] == "agree"


def test_windows_before_the_agreeing_pair_are_settling_kept_but_not_averaged():
    # the first full-length window of a new shape ran 20% high (seen with hf eager on an H200)
    *_, rec = _cell([120.0, 100.0, 100.4])
    m = rec.metrics
    assert (m["windows"], m["windows_used"], m["settling_windows"], m["stop_reason"]) == (3, 2, 1, "agree")
    assert m["energy_j"] == pytest.approx(100.2)  # the agreeing pair only
    assert m["settling_excess_rel"] == pytest.approx(120.0 / 100.2 - 1)
    assert [w["kind"] for w in rec.measurement["windows"]] == ["full-settling", "full", "full"]
    assert rec.measurement["windows"][0]["energy_j"] == pytest.approx(120.0)  # still in the record
    # without agreement nothing is left out: all three windows are the figure
    *_, rec = _cell([120.0, 100.0, 108.0])
    assert (rec.metrics["windows_used"], rec.metrics["settling_windows"]) == (3, 0)
    assert rec.metrics["energy_j"] == pytest.approx(328.0 / 3)


def test_short_batch_calibrates_then_fills_windows():
    spec, engine, meter, rec = _cell([5.0, 50.0, 50.2], min_window_s=0.5)
    batch_s = engine.batch_duration_s(spec, 8)  # 0.0832 s: 7 batches per 0.5 s window
    assert rec.metrics["iterations_per_window"] == 7
    assert rec.measurement["calls"] == {"warmup-short": 1, "calibrate": 1, "measure": 14}
    assert rec.metrics["energy_j"] == pytest.approx(50.1 / 7)
    assert all(w.duration_s == pytest.approx(7 * batch_s) for w in meter.windows[1:])


def test_full_protocol_is_today_and_keeps_old_hashes():
    old = RunSpec(model="tiny", batch_size=2, input_tokens=16, output_tokens=8)
    assert "protocol" not in old.canonical() and old.protocol == "full"
    adaptive = old.model_copy(update={"protocol": "adaptive"})
    assert adaptive.spec_hash() != old.spec_hash() and adaptive.canonical()["protocol"] == "adaptive"
    with pytest.raises(UnknownNameError):
        RunSpec(model="tiny", protocol="quick")


def test_settled_figures_apply_the_rule_to_stored_windows_old_and_new():
    from tokenjoule.records import settled_figures

    def w(kind, e, d, n=1):
        return {"kind": kind, "energy_j": e, "duration_s": d, "iterations": n}

    # a cell stored before the rule: three "full" windows, the first averaged in
    old = settled_figures("agree", [w("full", 240.0, 4.0, 2), w("full", 200.0, 2.0, 2), w("full", 200.8, 2.0, 2),
                                    w("prefill", 9.0, 0.1)])
    assert old["energy_j"] == pytest.approx(100.2) and old["duration_s"] == pytest.approx(1.0)
    assert (old["settling_windows"], old["windows_used"]) == (1, 2)
    assert old["energy_j_all_windows"] == pytest.approx(640.8 / 6)
    # a cell stored with the rule: its settling window already has its kind; same answer
    new = settled_figures("agree", [w("full-settling", 240.0, 4.0, 2), w("full", 200.0, 2.0, 2),
                                    w("full", 200.8, 2.0, 2)])
    assert new["energy_j"] == old["energy_j"] and new["settling_energies_j"] == [120.0]
    assert settled_figures("max-windows", [w("full", 1.0, 1.0), w("full", 3.0, 1.0)])["energy_j"] == 2.0
    assert settled_figures("agree", [w("full", None, 1.0)]) is None
