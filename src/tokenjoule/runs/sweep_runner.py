"""The group loop of a sweep (load once, measure each cell, store it) and the dry-run plan.

Split from runs.sweep so each module keeps one job: sweep.py decides what a cell needs,
this module drives groups, the budget, the progress bar and the summary.
"""

from __future__ import annotations

from typing import Any

from tokenjoule.runs.offline import safe_provenance
from tokenjoule.runs.sweep import CellOutcome, SweepSummary, _Sweep, decide_cell, gpu_name_of, plan_groups
from tokenjoule.runs.sweep_config import CellPlan, SweepConfig
from tokenjoule.runs.sweep_estimate import GUESS_LOAD_S, CellTimeEstimator, format_duration


class _Progress:
    """A rich progress bar (cells done / total, calibrated ETA, current cell) or nothing."""

    def __init__(self, enabled: bool, total: int, console: Any):
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[cell]}"),
            console=console or Console(stderr=True), transient=False,
        )
        self.task = self.bar.add_task("sweep", total=total, eta="?", cell="")
        self.bar.start()

    def update(self, *, advance: int = 0, eta_s: float | None = None, cell: str | None = None) -> None:
        if self.bar is None:
            return
        fields: dict[str, Any] = {}
        if eta_s is not None:
            fields["eta"] = format_duration(eta_s)
        if cell is not None:
            fields["cell"] = cell
        self.bar.update(self.task, advance=advance, **fields)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _meter_for(state: _Sweep, spec: Any) -> tuple[Any, bool]:
    if state.meter is not None:
        return state.meter, False
    from tokenjoule.energy import make_meter
    from tokenjoule.runs.offline import meter_devices

    return make_meter(state.meter_kind, devices=meter_devices(spec)), True


def execute(state: _Sweep, groups: list[list[CellPlan]], *, progress: bool, console: Any) -> SweepSummary:
    """Run every group; returns the summary (also on budget stop or Ctrl-C)."""
    from tokenjoule.runs.offline import base_provenance

    summary = SweepSummary(total=sum(len(g) for g in groups), resume_command=state.resume_command)
    # A first look without the GPU name (unknown before a meter exists) for the ETA.
    for group in groups:
        for plan in group:
            status, resolved, _ = state.decide(plan, None)
            if status == "run":
                state.pending_s[id(plan)] = state.predict(resolved or plan)[0]
    bar = _Progress(progress, summary.total, console)
    bar.update(eta_s=state.eta_s())
    remaining = [p for g in groups for p in g]
    done_keys: set[int] = set()

    def finish(plan: CellPlan, outcome: CellOutcome) -> None:
        summary.cells.append(outcome)
        done_keys.add(id(plan))
        state.pending_s.pop(id(plan), None)
        bar.update(advance=1, eta_s=state.eta_s())

    try:
        for gi, group in enumerate(groups):
            if not _run_group(state, gi, group, summary, finish, bar, base_provenance):
                summary.stopped_by_budget = True
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.stop()
    for plan in remaining:
        if id(plan) not in done_keys:
            summary.cells.append(CellOutcome(plan.label, plan.key, "not-run", group=0))
    summary.wall_s = state.clock() - state.start_s
    if not (summary.stopped_by_budget or summary.interrupted):
        summary.resume_command = None
    elif summary.stopped_by_budget and not state.measured_any and state.blocked is not None:
        # The same command would measure nothing again: resume with a budget the cell fits in.
        summary.blocked_s, summary.blocked_source = state.blocked
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


def _run_group(state: _Sweep, gi: int, group: list[CellPlan], summary: SweepSummary, finish: Any,
               bar: _Progress, base_provenance: Any) -> bool:
    """Run one group; False when the budget stopped the sweep."""
    config = state.config
    meter, own_meter = _meter_for(state, group[0].spec)
    engine = None
    try:
        gpu_name = gpu_name_of(meter)
        todo: list[tuple[CellPlan, CellPlan]] = []  # (as planned, with the batch known from the cache)
        for plan in group:
            status, resolved, reason = state.decide(plan, gpu_name)
            if status == "run":
                todo.append((plan, resolved or plan))
                if resolved is not None and resolved.key != plan.key:
                    state.pending_s[id(plan)] = state.predict(resolved)[0]
            else:
                size = resolved.spec.batch_size if resolved and resolved.batch == "fixed" else None
                finish(plan, CellOutcome(plan.label, (resolved or plan).key, status, size, reason, group=gi))
        if not todo:
            return True
        if state.over_budget(*state.predict(todo[0][1])):
            return False
        idle_w = meter.measure_idle(config.idle_s) if config.idle_s > 0 else None
        idle = {"duration_s": config.idle_s, "power_w": idle_w} if config.idle_s > 0 else {}
        provenance = {**base_provenance(), **safe_provenance(meter.provenance)}
        try:
            first = todo[0][1].spec
            engine = state.engine_factory(first.engine)
            bar.update(cell=f"loading {first.model} ({first.engine}/{first.mode})")
            engine.load(first)
        except Exception as exc:  # noqa: BLE001 - the whole group fails, the sweep goes on
            for plan, resolved in todo:
                rec = state.record_failure(resolved, exc, provenance, resolved=resolved.batch != "max",
                                           prefix="engine load failed: ")
                finish(plan, CellOutcome(resolved.label, resolved.key, "failed", None, rec.error, group=gi))
            return True
        provenance.update(safe_provenance(engine.provenance))
        devices = safe_provenance(lambda: {"d": list(engine.device_indices())}).get("d") or []
        provenance["engine_devices"] = devices  # GPU minutes = wall minutes x len(engine_devices)
        gpus = len(devices)
        for orig, plan in todo:
            predicted, source = state.predict(plan)
            if state.over_budget(predicted, source):
                return False
            if state.measured_any and config.cooldown_s > 0:
                bar.update(cell=f"cooling down {config.cooldown_s:g} s")
                state.sleep(config.cooldown_s)
            bar.update(cell=plan.label)
            t0 = state.clock()
            status, size, reason = state.run_cell(plan, engine, meter, gpu_name, provenance, idle)
            wall = state.clock() - t0
            if status in ("ok", "failed"):
                state.measured_any = True
                summary.measured_wall_s += wall
                summary.gpu_minutes += wall / 60.0 * gpus
            if status == "ok":
                state.estimator.observe(predicted, wall)
            finish(orig, CellOutcome(plan.label, plan.key, status, size, reason, wall_s=wall,
                                     estimate_s=predicted, group=gi))
        return True
    finally:
        if engine is not None:
            engine.close()
        if own_meter:
            meter.close()


def plan_only(config: SweepConfig, plans: list[CellPlan], store: Any, meter: Any,
              retry_failed: bool = False) -> SweepSummary:
    """The dry run: what would run, what would be skipped, and how long it would take.
    Reads the store (if any) and never writes it."""
    summary = SweepSummary(total=len(plans), dry_run=True)
    gpu_name = gpu_name_of(meter) if meter is not None else None
    estimator = CellTimeEstimator(store, gpu_name, max_batch_method=config.max_batch_method,
                                  max_batch_cap=config.max_batch_cap)
    total_s, groups_with_work = 0.0, 0
    for gi, group in enumerate(plan_groups(plans, config.order)):
        any_work = False
        for plan in group:
            status, resolved, reason = ("run", plan, None) if store is None else decide_cell(
                plan, store, gpu_name, config.max_batch_cap, retry_failed)
            if status != "run":
                summary.cells.append(CellOutcome(plan.label, resolved.key, status, None, reason, group=gi))
                continue
            est = estimator.predict(resolved.spec, unresolved_max=resolved.batch == "max")
            any_work = True
            total_s += est.seconds
            size = resolved.spec.batch_size if resolved.batch != "max" else None
            reason = "batch searched at run time" if resolved.batch == "max" else (
                "measured only if it fits" if resolved.batch == "upto-max" else None)
            summary.cells.append(CellOutcome(resolved.label, resolved.key, "planned", size, reason,
                                             estimate_s=est.seconds, estimate_source=est.source, group=gi))
        groups_with_work += any_work
    summary.estimated_s = total_s + GUESS_LOAD_S * groups_with_work + config.cooldown_s * summary.count("planned")
    return summary
