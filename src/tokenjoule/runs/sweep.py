"""Run a sweep: every cell of a grid, one model load per group, resumable after any crash.

Order. Cells are grouped by what needs a model load (model, engine, mode, dtype, device,
parallelism, draft model, engine options); groups run in the order they first appear. Inside
a group, with `order: ascending` (the default), cells run from the least to the most work
(batch x (input + output) tokens) and `batch: max` cells last: the GPU warms up gradually
over comparable cells instead of jumping between cold and hot, and the cells most likely to
run out of memory come after the ones that fit. `cooldown_s` pauses between measured cells.

Resume. A cell whose spec hash has an `ok` row is skipped; a `failed` one too, unless
`retry_failed`. Each cell's row is written in one transaction after the cell ends, so a
`kill -9` loses only the cell in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tokenjoule.engines.base import get_engine
from tokenjoule.runs.batch_search import (
    find_max_batch,
    is_out_of_memory,
    lower_max_batch,
    max_batch_key,
    release_memory,
)
from tokenjoule.runs.sweep_config import CellPlan, SweepConfig
from tokenjoule.runs.sweep_estimate import CellTimeEstimator
from tokenjoule.store.db import CellRecord, utc_now

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


def plan_groups(plans: list[CellPlan], order: str = "ascending") -> list[list[CellPlan]]:
    """Cells grouped by model load, in first-appearance order; see the module docstring."""
    groups: dict[tuple, list[CellPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.group_key(), []).append(plan)
    out = list(groups.values())
    if order == "ascending":
        def work(p: CellPlan) -> tuple:
            s = p.spec
            return (p.batch == "max", s.batch_size * (s.input_tokens + s.output_tokens), s.input_tokens)
        out = [sorted(g, key=work) for g in out]
    return out


def gpu_name_of(meter: Any) -> str:
    try:
        prov = meter.provenance() or {}
    except Exception:  # noqa: BLE001 - a name is only a cache key
        prov = {}
    names = prov.get("gpu_names") or []
    return str(names[0]) if names else str(prov.get("cpu_name") or "cpu")


def decide_cell(plan: CellPlan, store: Any, gpu_name: str | None, cap: int,
                retry_failed: bool) -> tuple[str, CellPlan, str | None]:
    """("run" | "skipped" | "beyond-max", the plan with its batch resolved from the cache when
    known, the reason). Without the GPU name a "max" cell stays unresolved."""
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


class _Sweep:
    """One run of a sweep; state shared by the group loop, the budget and the progress bar."""

    def __init__(self, config: SweepConfig, store: Any, *, meter: Any, meter_kind: str, retry_failed: bool,
                 budget_minutes: float | None, engine_factory: Callable[[str], Any], measure: Callable | None,
                 clock: Callable[[], float], sleep: Callable[[float], None], resume_command: str | None):
        self.config, self.store, self.meter, self.meter_kind = config, store, meter, meter_kind
        self.retry_failed, self.engine_factory = retry_failed, engine_factory
        self.budget_s = None if budget_minutes is None else budget_minutes * 60.0
        if measure is None:
            from tokenjoule.runs.offline import measure_cell as measure
        self.measure, self.clock, self.sleep = measure, clock, sleep
        self.estimator = CellTimeEstimator(store)
        self.resume_command = resume_command
        self.start_s = clock()
        self.measured_any = False
        self.pending_s: dict[int, float] = {}  # id(plan) -> predicted seconds (cells still to run)

    # -- resume decisions --------------------------------------------------------------------
    def decide(self, plan: CellPlan, gpu_name: str | None) -> tuple[str, CellPlan, str | None]:
        return decide_cell(plan, self.store, gpu_name, self.config.max_batch_cap, self.retry_failed)

    def predict(self, plan: CellPlan) -> tuple[float, str]:
        est = self.estimator.predict(plan.spec, unresolved_max=plan.batch == "max")
        return est.seconds, est.source

    # -- budget / ETA ------------------------------------------------------------------------
    def eta_s(self) -> float:
        return self.estimator.calibrated(sum(self.pending_s.values()))

    def over_budget(self, predicted_s: float, source: str) -> bool:
        """Would this cell end past the budget? A guessed time (nothing similar stored) does
        not stop the first cell of a session: it is no evidence, and the cell calibrates
        the ETA; from then on the calibrated estimate decides."""
        if self.budget_s is None:
            return False
        elapsed = self.clock() - self.start_s
        if source == "guess" and not self.measured_any:
            return elapsed >= self.budget_s
        return elapsed + self.estimator.calibrated(predicted_s) > self.budget_s

    # -- one cell --------------------------------------------------------------------------
    def record_failure(self, plan: CellPlan, exc: BaseException, provenance: dict, resolved: bool,
                       prefix: str = "") -> CellRecord:
        from tokenjoule.runs.offline import error_text

        spec_dict = plan.spec.canonical() if resolved else plan.failure_spec()
        key = plan.spec.spec_hash() if resolved else plan.key
        rec = CellRecord(spec=spec_dict, spec_hash=key, kind="offline", status="failed",
                         provenance=dict(provenance, time_utc=utc_now()), error=prefix + error_text(exc))
        self.store.add(rec)
        return rec

    def run_cell(self, plan: CellPlan, engine: Any, meter: Any, gpu_name: str, provenance: dict,
                 idle: dict) -> tuple[str, int | None, str | None]:
        """Claim, then search (if needed) and measure one cell; every outcome is stored before
        returning. A cell another process holds (a second sweep on this store) is skipped, so
        concurrent sweeps split the grid instead of measuring it twice."""
        if not self.store.claim(plan.key):
            return "skipped", plan.spec.batch_size if plan.batch == "fixed" else None, \
                "being measured by another process"
        try:
            if self.store.has_success(plan.key):  # another process finished it just before our claim
                return "skipped", plan.spec.batch_size, "already measured"
            return self._run_claimed(plan, engine, meter, gpu_name, provenance, idle)
        finally:
            self.store.release(plan.key)

    def _run_claimed(self, plan: CellPlan, engine: Any, meter: Any, gpu_name: str, provenance: dict,
                     idle: dict) -> tuple[str, int | None, str | None]:
        t0 = self.clock()
        spec, probes = plan.spec, []
        if plan.batch != "fixed":
            resolved = plan.batch == "upto-max"
            try:
                search = find_max_batch(self.store, engine, spec, gpu_name, self.config.max_batch_cap)
            except Exception as exc:  # noqa: BLE001 - a failing search fails this cell only
                return "failed", None, self.record_failure(plan, exc, provenance, resolved).error
            if search.max_batch is None:
                exc = MemoryError("out of memory even at batch size 1")
                return "failed", None, self.record_failure(plan, exc, provenance, resolved).error
            if plan.batch == "upto-max" and spec.batch_size > search.max_batch:
                return "beyond-max", spec.batch_size, f"above the largest fitting batch ({search.max_batch})"
            if plan.batch == "max":
                spec = spec.model_copy(update={"batch_size": search.max_batch})
                if self.store.has_success(spec.spec_hash()):
                    return "skipped", spec.batch_size, "already measured"
            probes = search.probes
        retries = self.config.max_batch_retries if plan.batch == "max" else 0
        for attempt in range(retries + 1):
            try:
                rec = self.measure(spec, engine, meter)
            except Exception as exc:  # noqa: BLE001 - recorded; the sweep goes on
                oom = is_out_of_memory(exc)
                if oom:
                    release_memory()
                if plan.batch == "max" and oom and attempt < retries and spec.batch_size > 1:
                    # The search's probe fitted but the full measurement did not: step down by
                    # MAX_BATCH_BACKOFF (an out-of-memory attempt fails within its first prefill,
                    # so small steps are cheap and land nearer the real limit than halving).
                    # The cache is lowered first, so a resumed sweep measures the smaller batch.
                    smaller = max(1, min(spec.batch_size - 1, int(spec.batch_size * MAX_BATCH_BACKOFF)))
                    lower_max_batch(self.store, plan.spec, gpu_name, self.config.max_batch_cap, smaller,
                                    spec.batch_size, probes)
                    self.record_failure(CellPlan(spec), exc, provenance, resolved=True)
                    spec = spec.model_copy(update={"batch_size": smaller})
                    continue
                return "failed", spec.batch_size, self.record_failure(CellPlan(spec), exc, provenance, True).error
            if rec.status != "ok":  # a runner that records instead of raising
                self.store.add(rec)
                return "failed", spec.batch_size, rec.error
            rec.provenance = {**provenance, "time_utc": utc_now(), **(rec.provenance or {})}
            if idle:
                rec.measurement.setdefault("idle", idle)
                if rec.metrics.get("idle_power_w") is None and idle.get("power_w") is not None:
                    rec.metrics["idle_power_w"] = idle["power_w"]
            if plan.batch == "max":
                rec.metrics["max_batch_probes"] = len(probes)
            rec.metrics["sweep_wall_s"] = self.clock() - t0
            self.store.add(rec)  # one transaction: the cell is either fully stored or absent
            return "ok", spec.batch_size, None
        raise AssertionError("unreachable")  # pragma: no cover


def run_sweep(config: SweepConfig, store: Any, *, meter: Any = None, meter_kind: str = "auto",
              dry_run: bool = False, retry_failed: bool = False, budget_minutes: float | None = None,
              engine_factory: Callable[[str], Any] = get_engine, progress: bool = True,
              measure: Callable | None = None, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep, resume_command: str | None = None,
              console: Any = None) -> "SweepSummary":
    """Run (or with dry_run only plan) every cell of `config`, storing each cell as it ends.

    `store` may be None for a dry run of a database that does not exist yet. `measure`
    defaults to runs.offline.measure_cell; `clock`/`sleep` are injectable for tests."""
    from tokenjoule.runs.sweep_runner import execute, plan_only

    plans = config.expand()
    if resume_command is None:
        db = getattr(store, "path", "tokenjoule.db")
        resume_command = f"tokenjoule sweep {config.source} --db {db}"
        if budget_minutes is not None:
            resume_command += f" --budget-minutes {budget_minutes:g}"
        if retry_failed:
            resume_command += " --retry-failed"
    if dry_run:
        return plan_only(config, plans, store, meter, retry_failed)
    state = _Sweep(config, store, meter=meter, meter_kind=meter_kind, retry_failed=retry_failed,
                   budget_minutes=budget_minutes, engine_factory=engine_factory, measure=measure,
                   clock=clock, sleep=sleep, resume_command=resume_command)
    return execute(state, plan_groups(plans, config.order), progress=progress, console=console)
