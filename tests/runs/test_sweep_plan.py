"""The sweep plan's decisions on their own: a fake context (no meter, engine or SQLite), a
dict store and a step clock. Resume, `batch: max` step-down, budget, store claims, dry run."""

from __future__ import annotations

from typing import Any

from tokenjoule.records import CellRecord
from tokenjoule.runs.batch_search import BatchSearch, max_batch_key
from tokenjoule.runs.runner import DryContext, Runner
from tokenjoule.runs.sweep import SweepPlan
from tokenjoule.runs.sweep_config import parse_config
from tokenjoule.runs.sweep_estimate import CellEstimate
from tokenjoule.spec import RunSpec

BASE = "device: cpu\nwarmup: 1\nrepeats: 1\nmin_window_s: 0\nsplit_prefill: false\nidle_s: 0\nmodel: tiny\n"
GPU = "Fake GPU"


class DictStore:
    """The runner's store protocol over dicts; optional claims."""

    path = "memory"

    def __init__(self, refuse: set[str] = frozenset()):
        self.rows: list[CellRecord] = []
        self.max_batch: dict[str, int] = {}
        self.refuse, self.claimed, self.released = set(refuse), [], []

    def add(self, record: CellRecord) -> int:
        self.rows.append(record)
        record.id = len(self.rows)
        return record.id

    def has_success(self, key: str) -> bool:
        return any(r.spec_hash == key and r.status == "ok" for r in self.rows)

    def has_failure(self, key: str) -> bool:
        return any(r.spec_hash == key and r.status == "failed" for r in self.rows)

    def latest(self, key: str, status: str | None = "ok") -> CellRecord | None:
        rows = [r for r in self.rows if r.spec_hash == key and (status is None or r.status == status)]
        return rows[-1] if rows else None

    def find(self, **_: Any) -> list[CellRecord]:
        return []

    def get_max_batch(self, key: str) -> int | None:
        return self.max_batch.get(key)

    def set_max_batch(self, key: str, max_batch: int, gpu_name: str | None, probes: list) -> None:
        self.max_batch[key] = max_batch

    def claim(self, key: str) -> bool:
        self.claimed.append(key)
        return key not in self.refuse

    def release(self, key: str) -> None:
        self.released.append(key)


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeSession:
    """Measures by script: a batch above `fits_batch` runs out of memory; each measurement
    advances the clock by `cell_s`."""

    measures = True

    def __init__(self, ctx: "FakeContext"):
        self.ctx, self.store, self.gpu_name = ctx, ctx.store, GPU
        self.engine_devices = [0]

    def measure_idle(self) -> None:
        self.ctx.idles += 1

    def load(self, spec: RunSpec) -> BaseException | None:
        self.ctx.loads.append(spec.model)
        return None

    def search_max_batch(self, spec: RunSpec, cap: int) -> BatchSearch:
        self.ctx.searches += 1
        key = max_batch_key(spec, GPU, cap)
        self.store.set_max_batch(key, self.ctx.probe_batch, GPU, [])
        return BatchSearch(self.ctx.probe_batch, [{"batch_size": self.ctx.probe_batch, "fits": True, "how": "probe"}])

    def measure(self, spec: RunSpec) -> CellRecord:
        self.ctx.measured.append(spec.batch_size)
        self.ctx.clock.t += self.ctx.cell_s
        if spec.batch_size > self.ctx.fits_batch:
            return CellRecord.failed(spec, MemoryError(f"CUDA out of memory at batch {spec.batch_size}"))
        return CellRecord.ok(spec, {"energy_j": 1.0}, {"method": "simulated"})

    def save(self, record: CellRecord) -> CellRecord:
        self.store.add(record)
        return record

    def close(self) -> None:
        pass


class FakeContext:
    def __init__(self, store: DictStore, clock: StepClock, *, probe_batch: int = 64, fits_batch: int = 10**6,
                 cell_s: float = 10.0):
        self.store, self.clock = store, clock
        self.probe_batch, self.fits_batch, self.cell_s = probe_batch, fits_batch, cell_s
        self.loads: list[str] = []
        self.measured: list[int] = []
        self.idles = self.searches = 0

    def open(self, first: RunSpec) -> FakeSession:
        return FakeSession(self)


def run(text: str, store: DictStore, ctx: FakeContext | None = None, **kw: Any) -> tuple[SweepPlan, FakeContext]:
    clock = ctx.clock if ctx else StepClock()
    ctx = ctx or FakeContext(store, clock)
    plan = SweepPlan(parse_config(BASE + text), store, clock=clock, sleep=lambda s: None, **kw)
    Runner(ctx).run(plan)  # type: ignore[arg-type]
    plan.close()
    return plan, ctx


def test_resume_skips_done_and_failed_cells_unless_retrying():
    store = DictStore()
    cfg = parse_config(BASE + "input_tokens: [8, 16, 32]\n")
    done, failed, _ = cfg.expand()
    store.add(CellRecord.ok(done.spec, {}, {}))
    store.add(CellRecord.failed(failed.spec, RuntimeError("boom")))
    plan, ctx = run("input_tokens: [8, 16, 32]\n", store)
    reasons = {c.key: (c.status, c.reason) for c in plan.summary.cells}
    assert reasons[done.key] == ("skipped", "already measured")
    assert reasons[failed.key] == ("skipped", "failed before (use --retry-failed)")
    assert len(ctx.measured) == 1 and ctx.loads == ["tiny"] and ctx.idles == 1
    plan, ctx = run("input_tokens: [8, 16, 32]\n", store, retry_failed=True)
    assert len(ctx.measured) == 1 and plan.summary.done == 1  # only the failed one, the rest is done


def test_nothing_to_run_means_no_load_and_no_idle_baseline():
    store = DictStore()
    run("input_tokens: 8\n", store)
    plan, ctx = run("input_tokens: 8\n", store)
    assert ctx.loads == [] and ctx.idles == 0 and plan.summary.skipped == 1


def test_max_batch_steps_down_after_out_of_memory_and_lowers_the_cache_first():
    store = DictStore()
    ctx = FakeContext(store, StepClock(), probe_batch=40, fits_batch=25)
    plan, _ = run("input_tokens: 8\nbatch: max\n", store, ctx)
    assert ctx.measured == [40, 32, 25]  # x0.8 steps
    (outcome,) = plan.summary.cells
    assert (outcome.status, outcome.batch_size) == ("ok", 25)
    assert [r.status for r in store.rows] == ["failed", "failed", "ok"]
    key = max_batch_key(plan.items[0].spec, GPU, 1024)
    assert store.max_batch[key] == 25
    # Resumed: the cache resolves "max" to 25, which is measured: nothing runs, no search.
    plan, again = run("input_tokens: 8\nbatch: max\n", store)
    assert again.measured == [] and again.searches == 0 and plan.summary.skipped == 1


def test_step_down_stops_after_max_batch_retries():
    store = DictStore()
    ctx = FakeContext(store, StepClock(), probe_batch=40, fits_batch=1)
    plan, _ = run("input_tokens: 8\nbatch: max\nmax_batch_retries: 2\n", store, ctx)
    assert ctx.measured == [40, 32, 25] and plan.summary.cells[0].status == "failed"


def test_budget_stops_before_the_cell_that_would_pass_it():
    store = DictStore()
    clock = StepClock()
    ctx = FakeContext(store, clock, cell_s=10.0)
    plan = SweepPlan(parse_config(BASE + "input_tokens: [8, 16, 32, 64]\n"), store, clock=clock,
                     sleep=lambda s: None, budget_minutes=25 / 60)

    class Ten:  # every cell predicted at 10 s from "history"; no calibration
        def predict(self, spec: RunSpec, unresolved_max: bool = False) -> CellEstimate:
            return CellEstimate(10.0, "history")

        def calibrated(self, s: float) -> float:
            return s

        def observe(self, predicted_s: float, measured_s: float) -> None:
            pass

    plan.estimator = Ten()  # type: ignore[assignment]
    assert Runner(ctx).run(plan) is False  # type: ignore[arg-type]
    summary = plan.close()
    assert len(ctx.measured) == 2  # 0+10 <= 25, 10+10 <= 25, then 20+10 > 25
    assert summary.stopped_by_budget and summary.done == 2 and summary.not_run == 2


def test_a_cell_claimed_elsewhere_is_skipped_and_claims_are_released():
    cfg = parse_config(BASE + "input_tokens: [8, 16]\n")
    taken = cfg.expand()[1].key
    store = DictStore(refuse={taken})
    plan, ctx = run("input_tokens: [8, 16]\n", store)
    assert len(ctx.measured) == 1
    outcome = {c.key: c for c in plan.summary.cells}[taken]
    assert (outcome.status, outcome.reason) == ("skipped", "claimed by another process")
    assert store.released == [cfg.expand()[0].key] and not store.has_success(taken)


def test_dry_run_is_the_same_plan_against_a_context_that_never_measures():
    store = DictStore()
    plan = SweepPlan(parse_config(BASE + "input_tokens: [8, 16]\nbatch: [1, max]\n"), store, dry_run=True)
    assert Runner(DryContext(store)).run(plan)
    summary = plan.close()
    assert store.rows == [] and store.claimed == [] and store.max_batch == {}
    assert summary.count("planned") == 4 and summary.estimated_s > 0
    unresolved = [c for c in summary.cells if c.batch_size is None]
    assert len(unresolved) == 2 and {c.reason for c in unresolved} == {"batch searched at run time"}
