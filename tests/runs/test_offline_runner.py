"""The offline runner with a scripted engine and meter: phases, windows, metrics, failures."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.fake_engine import FakeEngine
from tokenjoule.energy.measurement import PowerSample
from tokenjoule.errors import CellFailure, TokenjouleError
from tokenjoule.runs.metrics import downsample, mean_std_cv
from tokenjoule.runs.offline import is_out_of_memory, measure_cell, run_group, run_measure
from tokenjoule.spec import RunSpec


def make(clock=None, **kw):
    clock = clock or FakeClock()
    engine_kw = {k: kw.pop(k) for k in list(kw) if k in ("durations_s", "oom_at_batch", "oom_on_load",
                                                          "acceptance_rate", "decode_s_per_step")}
    meter_kw = {k: kw.pop(k) for k in list(kw) if k in ("energies_j", "power_w", "gpu_energy_available",
                                                         "cpu_power_w", "idle_power_w")}
    spec = RunSpec(**{"model": "tiny", "batch_size": 2, "input_tokens": 16, "output_tokens": 4,
                      "warmup": 3, "repeats": 3, "min_window_s": 0.0, **kw})
    engine = FakeEngine(clock, **engine_kw)
    engine.load(spec)
    return spec, engine, ScriptedMeter(clock, **meter_kw)


def test_warmup_batches_are_never_measured():
    # The three warm-up batches "take" 100 s each; if any leaked into a window the mean would show it.
    spec, engine, meter = make(durations_s=[100.0, 100.0, 100.0], split_prefill=False)
    rec = measure_cell(spec, engine, meter)
    batch_s = engine.batch_duration_s(spec, 4)
    # min_window_s = 0: the first calibration batch already "fills" a window, so it is the only one
    assert rec.measurement["calls"] == {"warmup": 3, "calibrate": 1, "measure": 3}
    assert len(engine.calls) == 3 + 1 + 3
    assert len(meter.windows) == spec.repeats
    assert rec.metrics["duration_s"] == pytest.approx(batch_s)
    assert rec.metrics["energy_j"] == pytest.approx(100.0 * batch_s)
    assert rec.metrics["repeats"] == 3


def test_iterations_per_window_fill_the_minimum_window():
    spec, engine, meter = make(min_window_s=0.5, warmup=1, repeats=2, split_prefill=False)
    batch_s = engine.batch_duration_s(spec, 4)  # 0.0432 s
    n = math.ceil(0.5 / batch_s)
    rec = measure_cell(spec, engine, meter)
    assert rec.metrics["iterations_per_window"] == n == 12
    assert rec.measurement["calls"] == {"warmup": 1, "calibrate": 3, "measure": 2 * n}
    for window in meter.windows:
        assert window.duration_s >= 0.5
        assert window.duration_s == pytest.approx(n * batch_s)
    # energy and time are per ONE batch: divided by the iterations in the window
    assert rec.metrics["duration_s"] == pytest.approx(batch_s)
    assert rec.metrics["energy_j"] == pytest.approx(100.0 * batch_s)


def test_one_long_calibration_batch_ends_calibration():
    # A batch that alone lasts a window needs no more calibration batches (n = 1).
    spec, engine, meter = make(durations_s=[0.1, 3.0], warmup=1, min_window_s=2.0, repeats=2, split_prefill=False)
    rec = measure_cell(spec, engine, meter)
    assert rec.measurement["calls"]["calibrate"] == 1
    assert rec.metrics["iterations_per_window"] == 1


def test_calibration_uses_the_fastest_batch():
    # A disturbed first calibration batch (0.9 s) must not shrink the windows below 1 s.
    spec, engine, meter = make(durations_s=[0.01, 0.9], warmup=1, min_window_s=1.0, split_prefill=False)
    rec = measure_cell(spec, engine, meter)
    batch_s = engine.batch_duration_s(spec, 4)
    assert rec.measurement["calls"]["calibrate"] == 3
    assert rec.metrics["iterations_per_window"] == math.ceil(1.0 / batch_s)
    assert all(w.duration_s >= 1.0 for w in meter.windows)
    assert "window-below-min" not in rec.metrics["flags"]


def test_long_batches_calibrate_twice_and_short_windows_are_flagged():
    # Two slow calibration batches fill a window (stop after 2); the real batch is then much
    # faster, so the 1-batch windows end below min_window_s: measured, and flagged.
    spec, engine, meter = make(durations_s=[0.01, 0.6, 0.6], warmup=1, min_window_s=1.0, split_prefill=False)
    rec = measure_cell(spec, engine, meter)
    assert rec.measurement["calls"]["calibrate"] == 2
    assert rec.metrics["iterations_per_window"] == 2
    assert "window-below-min" in rec.metrics["flags"]


def test_cv_from_scripted_window_energies():
    spec, engine, meter = make(energies_j=[10.0, 12.0, 14.0], split_prefill=False)
    rec = measure_cell(spec, engine, meter)
    m = rec.metrics
    assert m["energy_j"] == pytest.approx(12.0)
    assert m["energy_std_j"] == pytest.approx(2.0)  # sample std of 10, 12, 14
    assert m["energy_cv"] == pytest.approx(2.0 / 12.0)
    assert rec.measurement["per_repeat"]["energy_j"] == pytest.approx([10.0, 12.0, 14.0])
    # identical scripted durations: no spread in time
    assert m["duration_std_s"] == pytest.approx(0.0)
    assert m["duration_cv"] == pytest.approx(0.0)


def test_single_repeat_has_no_spread():
    spec, engine, meter = make(repeats=1, split_prefill=False)
    m = measure_cell(spec, engine, meter).metrics
    assert m["energy_j"] is not None
    assert m["energy_std_j"] is None and m["energy_cv"] is None


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 64), inp=st.integers(1, 2048), out=st.integers(1, 300),
       power=st.floats(10, 1000), min_window=st.floats(0, 0.5))
def test_energy_invariants(batch, inp, out, power, min_window):
    spec, engine, meter = make(batch_size=batch, input_tokens=inp, output_tokens=out, power_w=power,
                               min_window_s=min_window, warmup=1, repeats=2)
    m = measure_cell(spec, engine, meter).metrics
    assert m["energy_per_output_token_j"] * batch * out == pytest.approx(m["energy_j"])
    assert m["energy_per_request_j"] * batch == pytest.approx(m["energy_j"])
    assert m["energy_per_token_j"] * batch * (inp + out) == pytest.approx(m["energy_j"])
    assert m["prefill_energy_j"] + m["decode_energy_j"] == pytest.approx(m["energy_j"])
    assert m["prefill_duration_s"] + m["decode_duration_s"] == pytest.approx(m["duration_s"])
    assert m["avg_power_w"] == pytest.approx(power)
    assert m["throughput_tokens_per_s"] * m["duration_s"] == pytest.approx(batch * out)
    assert m["output_tokens_total"] == batch * out and m["input_tokens_total"] == batch * inp
    if out > 1:
        assert m["ttft_s"] == pytest.approx(engine.batch_duration_s(spec, 1))


def test_prefill_phase_runs_one_token_batches_in_its_own_windows():
    spec, engine, meter = make(warmup=2, repeats=2)
    rec = measure_cell(spec, engine, meter)
    calls = rec.measurement["calls"]
    assert calls == {"warmup": 2, "calibrate": 1, "measure": 2, "prefill-warmup": 1,
                     "prefill-calibrate": 1, "prefill-measure": 2}
    assert [c[1] for c in engine.calls].count(1) == 4  # 1 warm-up + 1 calibration + 2 measured
    assert len(meter.windows) == 4
    assert rec.metrics["ttft_s"] == pytest.approx(engine.batch_duration_s(spec, 1))
    assert rec.metrics["decode_energy_j"] == pytest.approx(100.0 * 0.01 * 3)


def test_no_split_leaves_prefill_unmeasured_not_zero():
    spec, engine, meter = make(split_prefill=False)
    m = measure_cell(spec, engine, meter).metrics
    assert m["prefill_energy_j"] is None and m["decode_energy_j"] is None and m["ttft_s"] is None


def test_missing_sensor_values_are_none_with_reason():
    spec, engine, meter = make(gpu_energy_available=False, idle_power_w=None, split_prefill=False)
    m = measure_cell(spec, engine, meter).metrics
    assert m["energy_j"] is None and m["energy_per_output_token_j"] is None and m["avg_power_w"] is None
    assert m["energy_reason"]
    assert m["cpu_energy_j"] is None and m["cpu_energy_reason"]
    assert m["dram_energy_j"] is None and m["dram_energy_reason"]
    assert m["active_energy_j"] is None and m["idle_power_w"] is None
    assert m["duration_s"] is not None


def test_active_energy_cpu_energy_flags_and_acceptance():
    clock = FakeClock()
    spec, engine, _ = make(clock, acceptance_rate=0.6, split_prefill=False)
    meter = ScriptedMeter(clock, power_w=100.0, idle_power_w=20.0, cpu_power_w=30.0, flags=("short-window",))
    meter.measure_idle(1.0)
    m = measure_cell(spec, engine, meter).metrics
    batch_s = engine.batch_duration_s(spec, 4)
    assert m["active_energy_j"] == pytest.approx((100.0 - 20.0) * batch_s)
    assert m["idle_power_w"] == pytest.approx(20.0)
    assert m["cpu_energy_j"] == pytest.approx(30.0 * batch_s)
    assert m["timeline_energy_j"] == pytest.approx(0.98 * m["energy_j"])
    assert m["timeline_disagreement"] == pytest.approx(-0.02)
    assert m["flags"] == ["short-window"]
    assert m["acceptance_rate"] == pytest.approx(0.6)
    assert m["method"] == "scripted"


def test_run_measure_stores_ok_record_with_provenance(store):
    clock = FakeClock()
    spec = RunSpec(model="tiny", batch_size=2, input_tokens=16, output_tokens=4, warmup=1, repeats=2,
                   min_window_s=0.1, device="cpu")
    meter = ScriptedMeter(clock)
    loaded_after_idle = []

    class OrderedEngine(FakeEngine):
        def load(self, s):
            loaded_after_idle.append(bool(meter.idle_calls))
            super().load(s)

    engine = OrderedEngine(clock)
    rec = run_measure(spec, store, idle_s=2.0, engine=engine, meter=meter)
    assert loaded_after_idle == [True] and meter.idle_calls == [2.0]
    assert engine.closed
    back = store.get(rec.id)
    assert back.status == "ok" and back.spec_hash == spec.spec_hash() and back.spec == spec.canonical()
    assert back.metrics["energy_j"] == pytest.approx(rec.metrics["energy_j"])
    for key in ("gpu_names", "torch_version", "tokenjoule_version", "hostname", "time_utc", "model_params"):
        assert key in back.provenance
    assert back.measurement["idle"] == {"duration_s": 2.0, "power_w": 20.0}
    assert store.has_success(spec.spec_hash())


def test_out_of_memory_is_stored_as_failed_cell_then_raised(store):
    clock = FakeClock()
    spec = RunSpec(model="tiny", batch_size=8, input_tokens=16, output_tokens=4, warmup=1, repeats=1,
                   min_window_s=0.0, device="cpu")
    engine = FakeEngine(clock, oom_at_batch=4)
    with pytest.raises(CellFailure) as err:
        run_measure(spec, store, idle_s=0.5, engine=engine, meter=ScriptedMeter(clock))
    message = str(err.value)
    assert "\n" not in message and "out of memory" in message and "#1" in message
    assert err.value.exit_code != 0
    assert engine.closed
    assert store.has_failure(spec.spec_hash()) and not store.has_success(spec.spec_hash())
    failed = store.find(status="failed")[0]
    assert failed.error.startswith("out of memory:") and "\n" not in failed.error
    assert failed.metrics == {}


def test_load_failure_fails_every_cell_of_the_group(store):
    clock = FakeClock()
    specs = [RunSpec(model="tiny", batch_size=b, device="cpu") for b in (1, 2)]
    records = run_group(specs, store, idle_s=0.0, engine=FakeEngine(clock, oom_on_load=True),
                        meter=ScriptedMeter(clock))
    assert [r.status for r in records] == ["failed", "failed"]
    assert store.count(status="failed") == 2


def test_group_continues_after_a_failed_cell(store):
    clock = FakeClock()
    specs = [RunSpec(model="tiny", batch_size=b, input_tokens=8, output_tokens=2, warmup=0, repeats=1,
                     min_window_s=0.0, device="cpu") for b in (1, 8, 2)]
    seen = []
    records = run_group(specs, store, idle_s=0.0, engine=FakeEngine(clock, oom_at_batch=8),
                        meter=ScriptedMeter(clock), on_cell=lambda s, r: seen.append(r.status))
    assert [r.status for r in records] == seen == ["ok", "failed", "ok"]


def test_group_rejects_mixed_models(store):
    specs = [RunSpec(model="tiny", device="cpu"), RunSpec(model="smollm2-135m", device="cpu")]
    with pytest.raises(TokenjouleError):
        run_group(specs, store, idle_s=0.0, engine=FakeEngine(), meter=ScriptedMeter(FakeClock()))


def test_progress_reports_every_phase():
    spec, engine, meter = make(warmup=1, repeats=2)
    seen = {}
    measure_cell(spec, engine, meter, on_progress=lambda phase, done, total: seen.__setitem__(phase, (done, total)))
    assert seen == {"warmup": (1, 1), "calibrate": (1, 1), "measure": (2, 2), "prefill-warmup": (1, 1),
                    "prefill-calibrate": (1, 1), "prefill-measure": (2, 2)}


def test_is_out_of_memory():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not is_out_of_memory(ValueError("shape mismatch"))
    torch = pytest.importorskip("torch")
    assert is_out_of_memory(torch.OutOfMemoryError("allocator said no"))


def test_mean_std_cv_and_downsample():
    assert mean_std_cv([1.0, None]) == (None, None, None)
    mean, std, cv = mean_std_cv([2.0, 4.0])
    assert (mean, std, cv) == pytest.approx((3.0, math.sqrt(2.0), math.sqrt(2.0) / 3.0))
    samples = [PowerSample(t_s=i * 0.01, power_w=(1.0,)) for i in range(4999)]
    kept = downsample(samples, 2000)
    assert len(kept) <= 2000 and kept[0] is samples[0] and kept[-1] is samples[-1]
    assert downsample(samples[:10], 2000) == samples[:10]


def test_flags_are_told_apart_by_window_kind():
    from tokenjoule.energy.measurement import FLAG_COUNTER_BACKWARDS, FLAG_TIMELINE_DISAGREES, Measurement
    from tokenjoule.engines.base import GenerationResult
    from tokenjoule.runs.metrics import PhaseResult, build_metrics, measurement_dict

    spec = RunSpec(model="tiny", batch_size=2, input_tokens=4, output_tokens=8)

    def phase(name, out, flags):
        p = PhaseResult(name=name, output_tokens=out, iterations_per_window=1)
        for _ in range(3):
            p.windows.append(Measurement(method="nvml-counter", duration_s=2.5, gpu_energy_j=100.0, flags=flags,
                                         timeline_disagreement=0.2 if flags else 0.01))
            p.results.append(GenerationResult(input_tokens=[4, 4], output_tokens=[out, out], duration_s=2.5))
        return p

    full = phase("full", 8, ())
    metrics = build_metrics(spec, full, phase("prefill", 1, (FLAG_TIMELINE_DISAGREES,)))
    # a prefill-only cross-check flag stays with the prefill windows
    assert FLAG_TIMELINE_DISAGREES not in metrics["flags"]
    assert metrics["prefill_flags"] == [FLAG_TIMELINE_DISAGREES]
    assert metrics["timeline_disagreement"] == pytest.approx(0.01)
    # a prefill counter fault changes decode = full - prefill, so the cell carries it
    metrics = build_metrics(spec, full, phase("prefill", 1, (FLAG_COUNTER_BACKWARDS,)))
    assert FLAG_COUNTER_BACKWARDS in metrics["flags"]
    windows = measurement_dict(full, phase("prefill", 1, ()))["windows"]
    assert [w["kind"] for w in windows] == ["full"] * 3 + ["prefill"] * 3
