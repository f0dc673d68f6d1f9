"""Run a sweep: every cell of a grid, one model load per group, resumable after any crash.

Order. Cells are grouped by what needs a model load (model, engine, mode, dtype, device,
parallelism, draft model, engine options); groups run in the order they first appear. Inside
a group, with `order: ascending` (the default), cells run from the least to the most work
(batch x (input + output) tokens) and `batch: max` cells last: the GPU warms up gradually
over comparable cells instead of jumping between cold and hot, and the cells most likely to
run out of memory come after the ones that fit. `cooldown_s` pauses between measured cells.

Resume. A cell whose spec hash has an `ok` row is skipped; a `failed` one too, unless
`retry_failed`. Each cell's row is written in one transaction after the cell ends, so a
`kill -9` loses only the cell in flight. With two sweeps on one store, each cell is claimed
in the store before it is measured (when the store offers claims), so no cell runs twice.

Shape. `SweepPlan` is the sweep's plan for the one runner (runs.runner): it owns grid
expansion, ordering, the resume decision, `batch: max` resolution and the out-of-memory
step-down, the budget and the cool-down. `--dry-run` is the same plan run against a
`DryContext`, which never measures. Progress goes to a `SweepProgress` observer (the
progress bar lives in cli/).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from tokenjoule.energy.meter import Meter
from tokenjoule.engines.base import Engine, get_engine
from tokenjoule.records import CellRecord
from tokenjoule.runs.batch_search import BatchSearch, lower_max_batch, max_batch_key
from tokenjoule.runs.max_batch import MaxBatchResolver, MaxBatchResult
from tokenjoule.runs.plans import LOAD_FAILED
from tokenjoule.runs.shard import Shard
from tokenjoule.runs.runner import (  # noqa: F401  (gpu_name_of re-exported)
    PLANNED,
    DryContext,
    MeasureFn,
    RunContext,
    Runner,
    Session,
    Store,
    gpu_name_of,
)
from tokenjoule.runs.sweep_config import CellPlan, SweepConfig
from tokenjoule.runs.sweep_estimate import GUESS_LOAD_S, CellTimeEstimator
from tokenjoule.spec import RunSpec, load_key

# Factor applied to the batch after an out-of-memory measurement at the searched "max" batch.
MAX_BATCH_BACKOFF = 0.8


@dataclass
class CellOutcome:
    label: str
    key: str  # spec hash (resolved) or the unresolved "max" hash
    status: str  # planned | ok | failed | skipped | beyond-max | not-run
    batch_size: int | None = None
    reason: str | None = None  # why skipped / failed
    wall_s: float | None = None
    estimate_s: float | None = None
    estimate_source: str | None = None
    group: int = 0


@dataclass
class SweepSummary:
    total: int
    cells: list[CellOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    measured_wall_s: float = 0.0  # wall time inside measured cells (searches included)
    gpu_minutes: float = 0.0  # measured wall minutes x GPUs used
    stopped_by_budget: bool = False
    interrupted: bool = False
    resume_command: str | None = None
    estimated_s: float | None = None  # dry run: predicted wall time of the cells to run
    # Budget stop before anything ran: the blocking cell's predicted end (s) and its source.
    blocked_s: float | None = None
    blocked_source: str | None = None
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(1 for c in self.cells if c.status == status)

    @property
    def done(self) -> int:
        return self.count("ok")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped") + self.count("beyond-max")

    @property
    def not_run(self) -> int:
        return self.count("not-run")


class SweepProgress(Protocol):
    """Where a sweep reports progress (cli.sweep_progress.SweepBar draws it)."""

    def start(self, total: int) -> None: ...

    def update(self, *, advance: int = 0, eta_s: float | None = None, cell: str | None = None) -> None: ...

    def stop(self) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def update(self, *, advance: int = 0, eta_s: float | None = None, cell: str | None = None) -> None:
        pass

    def stop(self) -> None:
        pass


def plan_groups(plans: list[CellPlan], order: str = "ascending") -> list[list[CellPlan]]:
    """Cells grouped by engine load (`spec.load_key`), in first-appearance order; see the
    module docstring for the order inside a group."""
    groups: dict[str, list[CellPlan]] = {}
    for plan in plans:
        groups.setdefault(load_key(plan.spec), []).append(plan)
    out = list(groups.values())
    if order == "ascending":
        def work(p: CellPlan) -> tuple:
            s = p.spec
            return (p.batch == "max", s.batch_size * (s.input_tokens + s.output_tokens), s.input_tokens)
        out = [sorted(g, key=work) for g in out]
    return out


def decide_cell(plan: CellPlan, store: Any, gpu_name: str | None, cap: int,
                retry_failed: bool) -> tuple[str, CellPlan, str | None]:
    """("run" | "skipped" | "beyond-max", the plan with its batch resolved from the cache when
    known, the reason). Without the GPU name a "max" cell stays unresolved; without a store
    (a dry run before the database exists) every cell runs."""
    if store is None:
        return "run", plan, None
    spec, cached = plan.spec, None
    if plan.batch != "fixed" and gpu_name is not None:
        cached = store.get_max_batch(max_batch_key(spec, gpu_name, cap))
    if plan.batch == "upto-max" and cached is not None and spec.batch_size > cached:
        return "beyond-max", plan, f"above the largest fitting batch ({cached})"
    if plan.batch == "max" and cached is not None:
        plan = CellPlan(spec.model_copy(update={"batch_size": cached}), "fixed")
    if store.has_success(plan.key):
        return "skipped", plan, "already measured"
    if store.has_failure(plan.key) and not retry_failed:
        return "skipped", plan, "failed before (use --retry-failed)"
    return "run", plan, None


@dataclass(eq=False)
class _Todo:
    """An admitted cell: as planned (`orig`) and with its batch resolved from the cache."""

    orig: CellPlan
    plan: CellPlan
    group: int
    predicted_s: float = 0.0
    source: str = "guess"
    t0: float | None = None
    steps: Iterator[RunSpec | CellRecord] | None = None
    last: CellRecord | None = None
    step_down: int | None = None  # the batch to try after an out-of-memory measurement
    current: RunSpec | None = None  # the spec being measured
    attempt: int = 0  # measurements so far at "max" (step-downs)
    gpu_name: str | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)  # max_batch_* metrics of a predicted batch
    result: tuple[str, int | None, str | None] | None = None  # (status, batch size, reason)

    @property
    def spec(self) -> RunSpec:
        return self.plan.spec

    @property
    def key(self) -> str:
        return self.plan.key


class SweepPlan:
    """The sweep as a plan for runs.runner.Runner (see the module docstring)."""

    claims = True

    def __init__(self, config: SweepConfig, store: Any, *, retry_failed: bool = False,
                 budget_minutes: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, progress: SweepProgress | None = None,
                 dry_run: bool = False, resume_command: str | None = None, shard: Shard | None = None):
        self.config, self.store, self.retry_failed = config, store, retry_failed
        self.budget_s = None if budget_minutes is None else budget_minutes * 60.0
        self.clock, self.sleep, self.dry_run = clock, sleep, dry_run
        self.progress: SweepProgress = progress or _NoProgress()
        self.items = config.expand() if shard is None else shard.select(config.expand())
        self._groups = plan_groups(self.items, config.order)
        self.summary = SweepSummary(total=len(self.items), dry_run=dry_run, resume_command=resume_command)
        self.estimator = CellTimeEstimator(store, max_batch_method=config.max_batch_method,
                                           max_batch_cap=config.max_batch_cap)
        self.max_batch = MaxBatchResolver(store, config.max_batch_cap)  # max_batch_method: predict
        self.blocked: tuple[float, str] | None = None  # (predicted end s, source) of the cell the budget stopped
        self.start_s = clock()
        self.measured_any = False
        self.pending_s: dict[int, float] = {}  # id(planned cell) -> predicted seconds (still to run)
        self._finished: set[int] = set()
        self._planned_s, self._groups_with_work = 0.0, 0
        if not dry_run:  # a first look without the GPU name (unknown before a meter exists) for the ETA
            for item in self.items:
                status, resolved, _ = self.decide(item, None)
                if status == "run":
                    self.pending_s[id(item)] = self.predict(resolved)[0]

    # -- decisions -----------------------------------------------------------------------------
    def decide(self, plan: CellPlan, gpu_name: str | None) -> tuple[str, CellPlan, str | None]:
        return decide_cell(plan, self.store, gpu_name, self.config.max_batch_cap, self.retry_failed)

    def predict(self, plan: CellPlan) -> tuple[float, str]:
        est = self.estimator.predict(plan.spec, unresolved_max=plan.batch == "max")
        return est.seconds, est.source

    def eta_s(self) -> float:
        return self.estimator.calibrated(sum(self.pending_s.values()))

    def over_budget(self, predicted_s: float, source: str) -> bool:
        """Would this cell end past the budget? Never run a cell predicted to overrun, whatever
        the prediction's source (a guess included: `--dry-run` says which it is, and the stored
        cells' time model replaces the guess as soon as a few cells of the setup exist)."""
        if self.budget_s is None:
            return False
        end_s = self.clock() - self.start_s + self.estimator.calibrated(predicted_s)
        if end_s > self.budget_s:
            self.blocked = (end_s, source)
            return True
        return False

    def _finish(self, plan: CellPlan, outcome: CellOutcome) -> None:
        self.summary.cells.append(outcome)
        self._finished.add(id(plan))
        self.pending_s.pop(id(plan), None)
        self.progress.update(advance=1, eta_s=self.eta_s())

    # -- the plan protocol -----------------------------------------------------------------------
    def groups(self) -> Iterator[list[_Todo]]:
        for gi, group in enumerate(self._groups):
            self._group_index = gi
            yield [_Todo(orig=p, plan=p, group=gi) for p in group]

    def admit(self, group: Sequence[_Todo], session: Session) -> list[_Todo]:
        todo: list[_Todo] = []
        for t in group:
            status, resolved, reason = self.decide(t.orig, session.gpu_name)
            if status == "run":
                t.plan = resolved
                t.predicted_s, t.source = self.predict(resolved)
                if not self.dry_run and resolved.key != t.orig.key:
                    self.pending_s[id(t.orig)] = t.predicted_s
                todo.append(t)
            else:
                size = resolved.spec.batch_size if resolved.batch == "fixed" else None
                self._finish(t.orig, CellOutcome(t.orig.label, resolved.key, status, size, reason, group=t.group))
        if todo and self.dry_run:
            self._groups_with_work += 1
        return todo

    def should_stop(self, item: _Todo, session: Session, first: bool) -> bool:
        if not first:
            item.predicted_s, item.source = self.predict(item.plan)
        if self.over_budget(item.predicted_s, item.source):
            self.summary.stopped_by_budget = True
            return True
        return False

    def next_step(self, item: _Todo, session: Session) -> RunSpec | CellRecord | None:
        if item.steps is None:
            if self.measured_any and self.config.cooldown_s > 0:
                self.progress.update(cell=f"cooling down {self.config.cooldown_s:g} s")
                self.sleep(self.config.cooldown_s)
            self.progress.update(cell=item.plan.label)
            item.t0 = self.clock()
            item.steps = self._cell_steps(item, session)
        step = next(item.steps, None)
        if step is None:
            self._cell_done(item, session)
        return step

    def told(self, item: _Todo, record: CellRecord) -> CellRecord:
        item.last, item.step_down = record, None
        if item.steps is None:  # a load failure: nothing measured
            return record
        spec = item.current
        if record.is_ok:
            if item.plan.batch == "max":
                record.metrics["max_batch_probes"] = len(item.probes)
                record.metrics.update(item.found)
                record.metrics.setdefault("max_batch_method", self.config.max_batch_method)
            record.metrics["sweep_wall_s"] = self.clock() - (self.clock() if item.t0 is None else item.t0)
        elif (record.status == "failed" and spec is not None and item.plan.batch == "max"
              and record.out_of_memory and item.attempt < self.config.max_batch_retries and spec.batch_size > 1):
            # The search's probe fitted but the full measurement did not: step down by
            # MAX_BATCH_BACKOFF (an out-of-memory attempt fails within its first prefill,
            # so small steps are cheap and land nearer the real limit than halving).
            # The cache is lowered before the failure is stored, so a resumed sweep
            # measures the smaller batch.
            smaller = max(1, min(spec.batch_size - 1, int(spec.batch_size * MAX_BATCH_BACKOFF)))
            lower_max_batch(self.store, item.plan.spec, item.gpu_name, self.config.max_batch_cap, smaller,
                            spec.batch_size, item.probes)
            item.step_down = smaller
        return record

    def recorded(self, item: _Todo, record: CellRecord) -> None:
        pass

    def load_failed(self, item: _Todo, exc: BaseException) -> CellRecord:
        rec = self._failure(item.plan, exc, resolved=item.plan.batch != "max", prefix=LOAD_FAILED)
        self._finish(item.orig, CellOutcome(item.plan.label, item.plan.key, "failed", None, rec.error,
                                            group=item.group))
        return rec

    def not_claimed(self, item: _Todo) -> None:
        self._finish(item.orig, CellOutcome(item.plan.label, item.plan.key, "skipped", None,
                                            "claimed by another process", group=item.group))

    # -- one cell ------------------------------------------------------------------------------
    @staticmethod
    def _failure(plan: CellPlan, exc: BaseException, resolved: bool, prefix: str = "") -> CellRecord:
        if resolved:
            return CellRecord.failed(plan.spec, exc, prefix=prefix)
        return CellRecord.failed(plan.failure_spec(), exc, key=plan.key, prefix=prefix)

    def _cell_steps(self, item: _Todo, session: Session) -> Iterator[RunSpec | CellRecord]:
        """The steps of one cell: search (if needed), then measure, stepping down after an
        out-of-memory measurement at "max". Sets item.result (status, batch size, reason)."""
        plan = item.plan
        spec = plan.spec
        item.gpu_name = session.gpu_name
        if plan.batch != "fixed":
            resolved = plan.batch == "upto-max"
            search: MaxBatchResult | BatchSearch | None  # both carry .max_batch and .probes
            try:
                if self.config.max_batch_method == "predict" and session.measures:
                    assert session.engine is not None
                    search = self.max_batch.resolve(session.engine, spec, session.gpu_name)
                    item.found = search.metrics()
                else:
                    search = session.search_max_batch(spec, self.config.max_batch_cap)
            except Exception as exc:  # noqa: BLE001 - a failing search fails this cell only
                rec = self._failure(plan, exc, resolved)
                item.result = ("failed", None, rec.error)
                yield rec
                return
            if search is None:  # a dry run: the batch is searched at run time
                item.result = (PLANNED, None if plan.batch == "max" else spec.batch_size,
                               "batch searched at run time" if plan.batch == "max" else "measured only if it fits")
                yield spec
                return
            if search.max_batch is None:
                rec = self._failure(plan, MemoryError("out of memory even at batch size 1"), resolved)
                item.result = ("failed", None, rec.error)
                yield rec
                return
            if plan.batch == "upto-max" and spec.batch_size > search.max_batch:
                item.result = ("beyond-max", spec.batch_size, f"above the largest fitting batch ({search.max_batch})")
                return
            if plan.batch == "max":
                spec = spec.model_copy(update={"batch_size": search.max_batch})
                if self.store.has_success(spec.spec_hash()):
                    item.result = ("skipped", spec.batch_size, "already measured")
                    return
            item.probes = search.probes
        while True:
            item.current = spec
            yield spec
            last = item.last
            assert last is not None
            if last.status == PLANNED:
                item.result = (PLANNED, spec.batch_size, None)
                return
            if item.step_down is not None:
                spec = spec.model_copy(update={"batch_size": item.step_down})
                item.attempt += 1
                continue
            item.result = ("ok", spec.batch_size, None) if last.is_ok else ("failed", spec.batch_size, last.error)
            return

    def _cell_done(self, item: _Todo, session: Session) -> None:
        status, size, reason = item.result or ("failed", None, "no result")
        wall = self.clock() - (self.clock() if item.t0 is None else item.t0)
        if status == PLANNED:
            self._planned_s += item.predicted_s
            self._finish(item.orig, CellOutcome(item.plan.label, item.plan.key, PLANNED, size, reason,
                                                estimate_s=item.predicted_s, estimate_source=item.source,
                                                group=item.group))
            return
        if status in ("ok", "failed"):
            self.measured_any = True
            self.summary.measured_wall_s += wall
            self.summary.gpu_minutes += wall / 60.0 * len(session.engine_devices)
        if status == "ok":
            self.estimator.observe(item.predicted_s, wall)
        self._finish(item.orig, CellOutcome(item.plan.label, item.plan.key, status, size, reason, wall_s=wall,
                                            estimate_s=item.predicted_s, group=item.group))

    # -- the end -------------------------------------------------------------------------------
    def close(self, interrupted: bool = False) -> SweepSummary:
        summary = self.summary
        summary.interrupted = interrupted
        for plan in self.items:
            if id(plan) not in self._finished:
                summary.cells.append(CellOutcome(plan.label, plan.key, "not-run", group=0))
        if self.dry_run:
            summary.estimated_s = (self._planned_s + GUESS_LOAD_S * self._groups_with_work
                                   + self.config.cooldown_s * summary.count(PLANNED))
            return summary
        summary.wall_s = self.clock() - self.start_s
        if not (summary.stopped_by_budget or summary.interrupted):
            summary.resume_command = None
        elif summary.stopped_by_budget and not self.measured_any and self.blocked is not None:
            # The same command would measure nothing again: resume with a budget the cell fits in.
            summary.blocked_s, summary.blocked_source = self.blocked
            summary.resume_command = with_budget(summary.resume_command, summary.blocked_s)
        return summary


def with_budget(command: str | None, needed_s: float) -> str | None:
    """`command` with --budget-minutes raised to fit `needed_s` (rounded up, 10% margin)."""
    import math
    import re

    if command is None:
        return None
    minutes = max(1, math.ceil(needed_s * 1.1 / 60))
    if re.search(r"--budget-minutes \S+", command):
        return re.sub(r"--budget-minutes \S+", f"--budget-minutes {minutes}", command)
    return f"{command} --budget-minutes {minutes}"


def run_sweep(config: SweepConfig, store: Store | None, *, meter: Meter | None = None, meter_kind: str = "auto",
              dry_run: bool = False, retry_failed: bool = False, budget_minutes: float | None = None,
              engine_factory: Callable[[str], Engine] = get_engine, progress: bool = True,
              measure: MeasureFn | None = None, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep, resume_command: str | None = None,
              console: Any = None, observer: SweepProgress | None = None,
              shard: Shard | None = None) -> SweepSummary:
    """Run (or with dry_run only plan) every cell of `config`, storing each cell as it ends.

    `store` may be None for a dry run of a database that does not exist yet. `measure`
    defaults to runs.offline.measure_cell; `clock`/`sleep` are injectable for tests.
    Progress goes to `observer` when `progress` is on (the CLI passes its progress bar;
    `console` is accepted for compatibility and unused: drawing lives in cli/). With `shard`,
    only that shard's cells are planned (runs.shard)."""
    if resume_command is None:
        db = getattr(store, "path", "tokenjoule.db")
        resume_command = f"tokenjoule sweep {config.source} --db {db}"
        if budget_minutes is not None:
            resume_command += f" --budget-minutes {budget_minutes:g}"
        if retry_failed:
            resume_command += " --retry-failed"
    if dry_run:
        plan = SweepPlan(config, store, retry_failed=retry_failed, dry_run=True, shard=shard)
        Runner(DryContext(store, meter=meter)).run(plan)
        return plan.close()
    bar: SweepProgress = observer if (progress and observer is not None) else _NoProgress()
    plan = SweepPlan(config, store, retry_failed=retry_failed, budget_minutes=budget_minutes, clock=clock,
                     sleep=sleep, progress=bar, resume_command=resume_command, shard=shard)
    context = RunContext(store, meter=meter, meter_kind=meter_kind, idle_s=config.idle_s,
                         engine_factory=engine_factory, measure=measure,
                         on_stage=lambda text: bar.update(cell=text))
    bar.start(plan.summary.total)
    bar.update(eta_s=plan.eta_s())
    interrupted = False
    try:
        Runner(context).run(plan)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.stop()
    return plan.close(interrupted)
