"""benchmarks/reference_check.py's arithmetic on a simulated engine and a scripted sensor."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from fakes.fake_engine import FakeEngine
from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy.clock import FakeClock
from tokenjoule.energy.nvml_meter import NvmlMeter
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("reference_check", ROOT / "benchmarks" / "reference_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_ratio_ci_by_hand():
    rc = _script()
    ci = rc.paired_ratio_ci([100.0, 102.0, 98.0, 100.0], [100.0] * 4)
    sd = math.sqrt((0.02**2 + 0.02**2) / 3)
    assert ci["mean"] == pytest.approx(1.0)
    assert ci["half_width"] == pytest.approx(3.182 * sd / 2, rel=1e-4)
    assert rc.within(ci, 0.03) is True and rc.within(ci, 0.02) is False
    assert rc.paired_ratio_ci([1.0], [1.0])["ci_low"] is None  # one pair says nothing about spread
    assert rc.within(rc.paired_ratio_ci([1.0], [1.0]), 0.5) is None
    assert rc.t95(1) == 12.706 and rc.t95(200) == 1.96


def _setup(power_w=250.0):
    clock = FakeClock(sleep_advances=False)
    backend = FakeGpuBackend(clock=clock, power_w=power_w)
    meter = NvmlMeter(backend, clock=clock, sleep=clock.sleep, rapl=RaplReader("/nonexistent-rapl"))
    engine = FakeEngine(clock=clock, prefill_s_per_token=1e-4, decode_s_per_step=0.01)
    spec = RunSpec(model="tiny", batch_size=2, input_tokens=16, output_tokens=64, warmup=1, repeats=3,
                   split_prefill=False)
    engine.load(spec)
    return clock, backend, meter, engine, spec


def test_reference_check_on_a_simulated_engine_agrees_exactly():
    rc = _script()
    clock, backend, meter, engine, spec = _setup()
    seen = []
    res = rc.reference_check(engine, spec, [1, 4], pairs=3, arms_for=lambda b: ["bare", "tj"], meters={"tj": meter},
                             read_energy_j=lambda: backend.energy_j(0), progress_for={}, on_pair=seen.append,
                             clock=clock)
    assert len(seen) == 6  # saved after every pair
    for b in ("1", "4"):
        entry = res[b]
        batch_s = engine.batch_duration_s(spec.model_copy(update={"batch_size": int(b)}), 64)
        assert entry["bare_iterations"] == math.ceil(spec.min_window_s / batch_s)
        assert [p["order"] for p in entry["pairs"]] == [["bare", "tj"], ["tj", "bare"], ["bare", "tj"]]
        for p in entry["pairs"]:
            # per batch: energy = power x batch time, in both arms
            assert p["bare"]["duration_s"] == pytest.approx(batch_s)
            assert p["bare"]["energy_j"] == pytest.approx(250.0 * batch_s)
            assert p["tj"]["energy_j"] == pytest.approx(250.0 * batch_s)
        s = entry["summary"]["tj"]
        assert s["energy"]["mean"] == pytest.approx(1.0) and s["time"]["mean"] == pytest.approx(1.0)
        assert s["energy"]["n"] == 3 and s["energy"]["half_width"] == pytest.approx(0.0, abs=1e-9)


def test_overhead_check_sees_a_planted_slowdown():
    rc = _script()
    clock, backend, meter, engine, spec = _setup()

    class SlowMeter:
        """A meter whose window costs 5% more time (at the same power): the ratio must show it."""

        def __init__(self, inner):
            self.inner = inner

        def window(self, sync=None):
            from contextlib import contextmanager

            @contextmanager
            def cm():
                with self.inner.window(sync=sync) as w:
                    t0 = clock()
                    yield w
                    clock.advance((clock() - t0) * 0.05)
            return cm()

    res = rc.overhead_check(engine, spec, 3, {"slow": SlowMeter(meter)}, lambda: backend.energy_j(0), clock=clock)
    s = res["summary"]["slow"]
    assert s["time"]["mean"] == pytest.approx(1.05) and s["energy"]["mean"] == pytest.approx(1.05)
    assert rc.within(s["time"], 0.01) is False
