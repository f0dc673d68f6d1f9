"""`max_batch_method: predict` in a sweep: one calibration per load, one probe per bin, recorded."""

from __future__ import annotations

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.sweep_fakes import MemoryEngine, planted_calibration
from tokenjoule.runs import max_batch
from tokenjoule.runs.sweep import run_sweep
from tokenjoule.runs.sweep_config import SweepConfigError, parse_config

BASE = ("device: cpu\nwarmup: 1\nrepeats: 1\nmin_window_s: 0\nsplit_prefill: false\nidle_s: 1\n"
        "max_batch_cap: 4096\nmodel: tiny\nbatch: max\n")
CELLS = "cells:\n" + "".join(f"  - {{input_tokens: {i}, output_tokens: {o}}}\n"
                             for i, o in ((256, 64), (1024, 256), (4096, 512), (64, 16)))


def _run(store, monkeypatch, cfg_text, **engine_kw):
    clock = FakeClock()
    engines, calibrations = [], []

    def factory(name):
        engines.append(MemoryEngine(clock=clock, **engine_kw))
        return engines[-1]

    def calibrate(engine, spec):
        calibrations.append(spec)
        return planted_calibration(engine, spec)

    monkeypatch.setattr(max_batch, "calibrate_engine", calibrate)
    summary = run_sweep(parse_config(cfg_text), store, meter=ScriptedMeter(clock), engine_factory=factory,
                        clock=clock, sleep=clock.advance, progress=False)
    return summary, engines, calibrations


def test_predicted_batches_within_5_percent_with_one_probe_each(store, monkeypatch):
    summary, engines, calibrations = _run(store, monkeypatch, BASE + "max_batch_method: predict\n" + CELLS)
    assert summary.done == 4 and len(engines) == 1 and len(calibrations) == 1  # one calibration per load
    eng = engines[0]
    for rec in store.find(status="ok"):
        i, o = rec.spec["input_tokens"], rec.spec["output_tokens"]
        limit = min(eng.limit(i, o), 4096)
        assert 0.95 * limit <= rec.spec["batch_size"] <= limit
        m = rec.metrics
        assert m["max_batch_probes"] == 1 and m["max_batch_predicted"] == rec.spec["batch_size"]
        assert m["max_batch_method"] == "memory-model (planted)"
    # the calibration's 2 profiles + one confirming probe per bin, against ~log2(L)+6 per bin searched
    assert len(eng.probes) == 2 + 4


def test_overestimate_steps_down_and_is_recorded(store, monkeypatch):
    # the planted device holds 10% less than the calibration was told: the first probe fails
    text = BASE + "max_batch_method: predict\ninput_tokens: 1024\noutput_tokens: 256\n"
    clock = FakeClock()
    engine = MemoryEngine(clock=clock)

    def calibrate(e, spec):
        model = planted_calibration(e, spec)
        e.capacity_bytes *= 0.9
        return model

    monkeypatch.setattr(max_batch, "calibrate_engine", calibrate)
    run_sweep(parse_config(text), store, meter=ScriptedMeter(clock), engine_factory=lambda n: engine,
              clock=clock, sleep=clock.advance, progress=False)
    rec = store.find(status="ok")[0]
    m = rec.metrics
    assert m["max_batch_probes"] >= 2 and m["max_batch_probe_sizes"][0] == m["max_batch_predicted"]
    assert rec.spec["batch_size"] <= engine.limit(1024, 256) and rec.spec["batch_size"] == m["max_batch_probe_sizes"][-1]


def test_default_stays_the_search_and_bad_method_is_rejected(store, monkeypatch):
    summary, engines, calibrations = _run(store, monkeypatch, BASE + "input_tokens: 64\noutput_tokens: 16\n")
    assert summary.done == 1 and calibrations == [] and len(engines[0].probes) > 2
    with pytest.raises(SweepConfigError, match="max_batch_method"):
        parse_config(BASE + "max_batch_method: guess\ninput_tokens: 8\noutput_tokens: 4\n")
