"""The sweep runner with a fake engine and a scripted meter: resume, failures, largest-batch
search, budget, dry run, grouping. (The kill -9 test is in test_sweep_kill.py.)"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.sweep_fakes import LimitEngine
from tokenjoule.runs.batch_search import max_batch_key
from tokenjoule.runs.sweep import run_sweep
from tokenjoule.runs.sweep_config import parse_config

BASE = "device: cpu\nwarmup: 1\nrepeats: 1\nmin_window_s: 0\nsplit_prefill: false\nidle_s: 1\n"


class Harness:
    """One fake clock shared by engines, meter and sweep; engines counted per load."""

    def __init__(self, **engine_kw):
        self.clock = FakeClock()
        self.meter = ScriptedMeter(self.clock)
        self.engine_kw = engine_kw
        self.engines: list[LimitEngine] = []
        self.slept: list[float] = []

    def factory(self, name: str) -> LimitEngine:
        engine = LimitEngine(clock=self.clock, **self.engine_kw)
        self.engines.append(engine)
        return engine

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)

    def run(self, cfg, store, **kw):
        return run_sweep(cfg, store, meter=self.meter, engine_factory=self.factory, clock=self.clock,
                         sleep=self.sleep, progress=False, **kw)


def rows_by_hash(store, status="ok"):
    return Counter(r.spec_hash for r in store.all() if r.status == status)


def test_groups_load_once_and_every_cell_is_stored(store):
    cfg = parse_config(BASE + "model: [tiny, smollm2-135m]\ninput_tokens: [8, 16]\noutput_tokens: 4\nbatch: [1, 2]\n")
    h = Harness()
    summary = h.run(cfg, store)
    assert summary.total == summary.done == 8 and summary.failed == 0
    assert len(h.engines) == 2 and all(e.load_count == 1 and e.closed for e in h.engines)
    assert {e.loaded.model for e in h.engines} == {"tiny", "smollm2-135m"}
    assert rows_by_hash(store) == Counter({p.key: 1 for p in cfg.expand()})
    rec = store.all()[0]
    assert rec.metrics["sweep_wall_s"] > 0 and rec.provenance["gpu_names"] == ["Fake GPU"]
    assert h.meter.idle_calls == [1.0, 1.0]  # one idle baseline per model load


def test_ascending_order_inside_a_group(store):
    cfg = parse_config(BASE + "model: tiny\ncells:\n  - {batch: 8, input_tokens: 64}\n  - {batch: max, input_tokens: 8}\n"
                       "  - {batch: 1, input_tokens: 8}\n  - {batch: 2, input_tokens: 64}\n")
    h = Harness(limit_batch=4)
    summary = h.run(cfg, store)
    assert [c.batch_size for c in summary.cells] == [1, 2, 8, 4]  # by work, "max" last
    assert summary.done == 3 and summary.failed == 1  # batch 8 is above the planted limit


def test_resume_skips_done_cells(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16, 32]\noutput_tokens: 4\n")
    h = Harness()
    h.run(cfg, store)
    again = Harness()
    summary = again.run(cfg, store)
    assert summary.skipped == 3 and summary.done == 0
    assert again.engines == []  # nothing to run: no model load at all
    assert store.count() == 3


def test_failed_cell_is_recorded_and_sweep_goes_on(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16, 32]\noutput_tokens: 4\n")
    h = Harness(fail_input_tokens=16)
    summary = h.run(cfg, store)
    assert (summary.done, summary.failed) == (2, 1)
    failed = store.find(status="failed")
    assert len(failed) == 1 and "engine exploded at input 16" in failed[0].error
    assert failed[0].spec["input_tokens"] == 16
    # Resume: the failed cell is skipped...
    resumed = Harness().run(cfg, store)
    assert resumed.done == 0 and resumed.skipped == 3 and store.count() == 3
    # ...unless retry_failed, which runs it again (now fixed) and only it.
    retried = Harness().run(cfg, store, retry_failed=True)
    assert retried.done == 1 and retried.skipped == 2
    assert rows_by_hash(store)[failed[0].spec_hash] == 1


def test_engine_load_failure_fails_only_that_group(store):
    cfg = parse_config(BASE + "input_tokens: 8\noutput_tokens: 4\ncells:\n  - {model: tiny, batch: [1, 2]}\n"
                       "  - {model: smollm2-135m, batch: [1, max]}\n")
    h = Harness()
    original = h.factory

    def factory(name):
        engine = original(name)
        if len(h.engines) == 1:
            engine.oom_on_load = True
        return engine

    h.factory = factory
    summary = h.run(cfg, store)
    assert summary.failed == 2 and summary.done == 2
    assert all("engine load failed" in r.error for r in store.find(status="failed"))
    assert {r.spec["model"] for r in store.find(status="failed")} == {"tiny"}


def test_batch_max_measures_at_the_planted_limit_and_caches_it(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: 8\noutput_tokens: 4\nbatch: max\n")
    h = Harness(limit_batch=37)
    summary = h.run(cfg, store)
    assert summary.done == 1 and summary.cells[0].batch_size == 37
    rec = store.find()[0]
    assert rec.spec["batch_size"] == 37 and rec.metrics["max_batch_probes"] <= 2 * math.log2(37) + 2
    spec = cfg.expand()[0].spec
    assert store.get_max_batch(max_batch_key(spec, "Fake GPU", 1024)) == 37
    # Resumed: the cache resolves "max" without probing, and the measured cell is skipped.
    again = Harness(limit_batch=37)
    assert again.run(cfg, store).skipped == 1 and again.engines == []


def test_batch_max_steps_down_when_the_measurement_runs_out_of_memory(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: 8\noutput_tokens: 4\nbatch: max\n")
    h = Harness(limit_batch=40, measure_limit_batch=25)  # the probe fits 40, the real run only 25
    summary = h.run(cfg, store)
    # 40 -> 32 -> 25 (x0.8 steps): lands on the real limit where halving would have given 20
    assert summary.cells[0].status == "ok" and summary.cells[0].batch_size == 25
    failed = store.find(status="failed")
    assert [r.spec["batch_size"] for r in failed] == [40, 32] and "out of memory" in failed[0].error
    assert store.get_max_batch(max_batch_key(cfg.expand()[0].spec, "Fake GPU", 1024)) == 25
    assert Harness(limit_batch=40).run(cfg, store).skipped == 1


def test_upto_max_skips_batches_above_the_limit(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: 8\noutput_tokens: 4\nmax_batch_cap: 64\nbatch: 1..max\n")
    h = Harness(limit_batch=10)
    summary = h.run(cfg, store)
    by_status = Counter(c.status for c in summary.cells)
    assert by_status == Counter({"ok": 5, "beyond-max": 3})  # 1, 2, 4, 8, max=10 | 16, 32, 64
    assert sorted(r.spec["batch_size"] for r in store.find()) == [1, 2, 4, 8, 10]


def test_nothing_fits_records_a_failure(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: 8\noutput_tokens: 4\nbatch: max\n")
    summary = Harness(limit_batch=0).run(cfg, store)
    assert summary.failed == 1
    rec = store.find(status="failed")[0]
    assert rec.spec["batch"] == "max" and rec.spec_hash == cfg.expand()[0].key
    assert Harness(limit_batch=0).run(cfg, store).skipped == 1  # recorded, so skipped on resume


def test_dry_run_writes_nothing(store, tmp_path):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16]\noutput_tokens: 4\nbatch: [1, max]\n")
    before = store.count()
    summary = run_sweep(cfg, store, dry_run=True, engine_factory=lambda n: pytest.fail("no engine in a dry run"))
    assert store.count() == before == 0
    assert store.get_max_batch(max_batch_key(cfg.expand()[1].spec, "Fake GPU", 1024)) is None
    assert summary.dry_run and summary.count("planned") == 4
    assert summary.estimated_s > 0 and {c.estimate_source for c in summary.cells} == {"guess"}
    # Without a store at all (the CLI passes None when the database does not exist yet).
    assert run_sweep(cfg, None, dry_run=True).count("planned") == 4


def test_dry_run_estimates_from_stored_cells(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16]\noutput_tokens: 4\n")
    Harness().run(cfg.override(input_tokens=8), store)
    plan = run_sweep(cfg, store, dry_run=True)
    done = [c for c in plan.cells if c.status == "skipped"]
    todo = [c for c in plan.cells if c.status == "planned"]
    assert len(done) == 1 and len(todo) == 1 and todo[0].estimate_source == "guess"
    # Now ask about the same cell with more repeats: similar stored cells give the estimate.
    more = parse_config(BASE.replace("repeats: 1", "repeats: 4") + "model: tiny\ninput_tokens: 8\noutput_tokens: 4\n")
    estimate = run_sweep(more, store, dry_run=True).cells[0]
    assert estimate.estimate_source == "history" and estimate.estimate_s > 0


def _cell_wall_s(tmp_path, text: str, **engine_kw) -> float:
    """Fake-clock wall time of one such cell (how many batches a cell takes is the runner's business)."""
    from tokenjoule.store.db import ResultStore

    with ResultStore(tmp_path / "probe.db") as probe_store:
        summary = Harness(**engine_kw).run(parse_config(text), probe_store)
    return summary.cells[0].wall_s


def test_budget_stops_before_a_cell_that_would_exceed_it(store, tmp_path):
    text = BASE + "model: tiny\ninput_tokens: [8, 16, 32, 64, 128]\noutput_tokens: 20\nidle_s: 0\n"
    cell_s = _cell_wall_s(tmp_path, text.replace("[8, 16, 32, 64, 128]", "8"), prefill_s_per_token=0.0)
    cfg = parse_config(text, "grid.yaml")
    budget_min = 3.3 * cell_s / 60  # room for 3 cells of equal cost, not 4
    summary = Harness(prefill_s_per_token=0.0).run(cfg, store, budget_minutes=budget_min)
    assert summary.stopped_by_budget and summary.done == 3 and summary.not_run == 2
    assert summary.resume_command == f"tokenjoule sweep grid.yaml --db {store.path} --budget-minutes {budget_min:g}"
    assert store.count() == 3
    rest = Harness(prefill_s_per_token=0.0).run(cfg, store)
    assert rest.done == 2 and rest.skipped == 3 and not rest.stopped_by_budget and rest.resume_command is None
    assert rows_by_hash(store) == Counter({p.key: 1 for p in cfg.expand()})


def test_budget_never_runs_a_cell_predicted_to_overrun_and_resume_differs(store, tmp_path):
    # The guess for these cells is far above the budget: nothing runs (a prediction of an overrun,
    # guessed or not, is never run), and the resume command is not the one that measured nothing.
    text = BASE + "model: tiny\ninput_tokens: [8, 16, 32, 64, 128]\noutput_tokens: 400\nidle_s: 0\n"
    kw = {"prefill_s_per_token": 0.0, "decode_s_per_step": 0.001}
    cell_s = _cell_wall_s(tmp_path, text.replace("[8, 16, 32, 64, 128]", "8"), **kw)
    cfg = parse_config(text, "grid.yaml")
    guess = run_sweep(cfg, None, dry_run=True).cells[0]
    assert guess.estimate_source == "guess" and guess.estimate_s > 2.5 * cell_s
    budget = 2.5 * cell_s / 60
    summary = Harness(**kw).run(cfg, store, budget_minutes=budget)
    assert summary.done == 0 and summary.stopped_by_budget and summary.not_run == 5 and store.count() == 0
    same = f"tokenjoule sweep grid.yaml --db {store.path} --budget-minutes {budget:g}"
    assert summary.resume_command != same and summary.blocked_source == "guess"
    minutes = float(summary.resume_command.rsplit("--budget-minutes ", 1)[1])
    assert minutes * 60 >= summary.blocked_s
    assert Harness(**kw).run(cfg, store, budget_minutes=minutes).done >= 1


def test_cooldown_between_measured_cells(store):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16, 32]\noutput_tokens: 4\ncooldown_s: 7\n")
    h = Harness()
    h.run(cfg, store)
    assert h.slept == [7.0, 7.0]


def test_summary_counts_gpu_minutes(store):
    class TwoGpus(LimitEngine):
        def device_indices(self):
            return [0, 1]

    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16]\noutput_tokens: 4\nidle_s: 0\n")
    clock = FakeClock()
    summary = run_sweep(cfg, store, meter=ScriptedMeter(clock), engine_factory=lambda n: TwoGpus(clock=clock),
                        clock=clock, progress=False)
    assert summary.measured_wall_s > 0
    assert summary.gpu_minutes == pytest.approx(summary.measured_wall_s / 60 * 2)

