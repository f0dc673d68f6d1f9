"""The offline batch runner: warm-up, measurement windows, prefill/decode split, records.

    record = run_measure(spec, ResultStore("tokenjoule.db"), meter_kind="auto", idle_s=5)

One cell = one batch of `spec.batch_size` requests of exactly `spec.input_tokens` in and
`spec.output_tokens` out. Per phase the runner does:

1. warm-up batches (`spec.warmup`), counted under their own name and never measured;
2. calibration: 2-3 timed batches (2 when they add up to min_window_s); the fastest
   gives n = ceil(min_window_s / batch time), so that each window is long enough for the
   energy counter (it steps about every 100 ms);
3. `spec.repeats` windows of n batches each; energy and time are divided by n.

The prefill phase repeats this with 1 output token (see docs/METHOD.md, "Offline runs").
Failures (out of memory, engine errors) become stored `failed` records, then `CellFailure`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

from tokenjoule.energy.meter import Meter
from tokenjoule.engines.base import Engine
from tokenjoule.errors import CellFailure, TokenjouleError
from tokenjoule.runs.metrics import (
    FLAG_ITERATIONS_CAPPED,
    FLAG_WINDOW_BELOW_MIN,
    PhaseResult,
    build_metrics,
    measurement_dict,
)
from tokenjoule.runs.windows import (
    SHORT_WARMUP_OUTPUT_TOKENS,
    STOP_FIXED,
    WarmupPlan,
    stop_rule,
    stop_summary,
    warmup_plan,
)
from tokenjoule.records import (  # noqa: F401  (moved to records; re-exported for existing imports)
    CellRecord,
    base_provenance,
    error_text,
    is_out_of_memory,
    safe_provenance,
    utc_now,
)
from tokenjoule.spec import RunSpec, load_key

if TYPE_CHECKING:
    from tokenjoule.runs.plans import CellsPlan
    from tokenjoule.store.db import ResultStore

# run_group / run_cells / run_measure below are thin entry points kept for existing callers:
# the loop itself is runs.runner.Runner (imported inside them, since the runner imports this
# module for measure_cell).

# on_progress(phase, done, total): phase is one of PHASES; called after every batch.
ProgressFn = Callable[[str, int, int], None]
PHASES = ("warmup", "warmup-short", "calibrate", "measure", "prefill-warmup", "prefill-warmup-short",
          "prefill-calibrate", "prefill-measure")
MAX_ITERATIONS_PER_WINDOW = 10_000  # a guard against a batch that reports ~0 s
CALIBRATION_BATCHES = 3


# -- one phase --------------------------------------------------------------------------------
def _measure_phase(
    name: str, spec: RunSpec, engine: Engine, meter: Meter, output_tokens: int, warmup: int,
    calls: Counter, on_progress: ProgressFn | None,
) -> PhaseResult:
    prefix = "" if name == "full" else "prefill-"
    if spec.protocol == "adaptive":
        return _measure_phase_adaptive(name, prefix, spec, engine, meter, output_tokens, calls, on_progress)

    def run_batch(phase: str):
        result = engine.generate(spec, output_tokens)
        calls[phase] += 1
        return result

    for i in range(warmup):
        run_batch(prefix + "warmup")
        if on_progress:
            on_progress(prefix + "warmup", i + 1, warmup)

    engine.synchronize()
    # Calibration: 2 to CALIBRATION_BATCHES timed batches (2 once they add up to a window);
    # the fastest sets n, so one disturbed batch (a late first-call cost, another
    # process) cannot leave the windows shorter than min_window_s. A first calibration batch
    # that alone fills a window ends calibration (n = 1): long batches (tens of seconds at
    # large batch sizes) would otherwise cost two more batches per cell. Warm-up batches are
    # not used for this, since they include compilation and first-call costs.
    durations: list[float] = []
    while not durations or (durations[-1] < spec.min_window_s and len(durations) < CALIBRATION_BATCHES
                            and (len(durations) < 2 or sum(durations) < spec.min_window_s)):
        durations.append(max(run_batch(prefix + "calibrate").duration_s, 0.0))
    if on_progress:
        on_progress(prefix + "calibrate", 1, 1)
    flags: set[str] = set()
    batch_s = min(durations)
    if spec.min_window_s <= 0:
        n = 1
    elif batch_s <= 0:
        n, _ = MAX_ITERATIONS_PER_WINDOW, flags.add(FLAG_ITERATIONS_CAPPED)
    else:
        n = max(1, math.ceil(spec.min_window_s / batch_s))
        if n > MAX_ITERATIONS_PER_WINDOW:
            n, _ = MAX_ITERATIONS_PER_WINDOW, flags.add(FLAG_ITERATIONS_CAPPED)

    phase = PhaseResult(name=name, output_tokens=output_tokens, iterations_per_window=n, flags=flags)
    total = spec.repeats * n
    for r in range(spec.repeats):
        with meter.window(sync=engine.synchronize) as window:
            for i in range(n):
                phase.results.append(run_batch(prefix + "measure"))
                if on_progress:
                    on_progress(prefix + "measure", r * n + i + 1, total)
        phase.windows.append(window.result)
        if window.result.duration_s < spec.min_window_s:
            phase.flags.add(FLAG_WINDOW_BELOW_MIN)  # calibration was too optimistic; kept, flagged
    phase.stop = {"stop_reason": STOP_FIXED, "windows": len(phase.windows)}
    phase.warmup = {"full_length": warmup, "short": 0, "reason": "protocol full"}
    return phase


def _measure_phase_adaptive(
    name: str, prefix: str, spec: RunSpec, engine: Engine, meter: Meter, output_tokens: int,
    calls: Counter, on_progress: ProgressFn | None,
) -> PhaseResult:
    """runs.windows' protocol: warm-up by mode, the first batch measured (one window when it is
    long enough, else calibration), windows until the last two agree or max_windows."""
    plan = warmup_plan(spec.engine, spec.mode, "adaptive", spec.warmup)
    if name != "full":  # the prefill shape follows a warmed engine: only its first-call cost is left
        plan = WarmupPlan(0, 1, "prefill phase after the full phase: one batch of the new shape")
    for i in range(plan.full_length):
        engine.generate(spec, output_tokens)
        calls[prefix + "warmup"] += 1
    for i in range(plan.short):
        engine.generate(spec, min(SHORT_WARMUP_OUTPUT_TOKENS, output_tokens))
        calls[prefix + "warmup-short"] += 1
    if on_progress and (plan.full_length or plan.short):
        on_progress(prefix + "warmup", 1, 1)
    engine.synchronize()

    phase = PhaseResult(name=name, output_tokens=output_tokens, iterations_per_window=1,
                        warmup=plan.to_dict())
    with meter.window(sync=engine.synchronize) as window:
        first = engine.generate(spec, output_tokens)
    first_s = max(window.result.duration_s, 0.0)
    if spec.min_window_s <= 0 or first_s >= spec.min_window_s:
        # A batch at least as long as the minimum window is one window: no calibration batch.
        calls[prefix + "measure"] += 1
        phase.windows.append(window.result)
        phase.results.append(first)
    else:
        calls[prefix + "calibrate"] += 1
        n = math.ceil(spec.min_window_s / first_s) if first_s > 0 else MAX_ITERATIONS_PER_WINDOW
        if n > MAX_ITERATIONS_PER_WINDOW:
            n = MAX_ITERATIONS_PER_WINDOW
            phase.flags.add(FLAG_ITERATIONS_CAPPED)
        phase.iterations_per_window = n
    if on_progress:
        on_progress(prefix + "calibrate", 1, 1)
    while (reason := stop_rule(phase.energies_j, agree_rel=spec.window_agree_rel,
                               max_windows=spec.max_windows)) is None:
        with meter.window(sync=engine.synchronize) as window:
            for _ in range(phase.iterations_per_window):
                phase.results.append(engine.generate(spec, output_tokens))
                calls[prefix + "measure"] += 1
        phase.windows.append(window.result)
        if window.result.duration_s < spec.min_window_s:
            phase.flags.add(FLAG_WINDOW_BELOW_MIN)
        if on_progress:
            on_progress(prefix + "measure", len(phase.windows), spec.max_windows)
    phase.stop = stop_summary(reason, phase.energies_j, spec.window_agree_rel)
    k = phase.stop["settling_windows"]
    if k:  # the windows before the agreeing pair were still settling: recorded, not averaged
        phase.settling, phase.windows = phase.windows[:k], phase.windows[k:]
    return phase


def measure_cell(spec: RunSpec, engine: Engine, meter: Meter, *, on_progress: ProgressFn | None = None) -> CellRecord:
    """Measure one cell on an already loaded engine; returns an unsaved ok record.

    The caller (runs.runner.Session) owns `engine.load/close` and the meter, and adds
    provenance and the idle baseline. Exceptions from the engine propagate."""
    calls: Counter = Counter()
    full = _measure_phase("full", spec, engine, meter, spec.output_tokens, spec.warmup, calls, on_progress)
    prefill = None
    if spec.split_prefill and spec.output_tokens > 1:
        # One warm-up of the new shape (the first call of a shape can compile or allocate).
        prefill = _measure_phase("prefill", spec, engine, meter, 1, min(spec.warmup, 1), calls, on_progress)
    metrics = build_metrics(spec, full, prefill)
    measurement = measurement_dict(full, prefill)
    measurement["calls"] = {p: calls[p] for p in PHASES if calls[p]}
    return CellRecord.ok(spec, metrics, measurement)


# -- the cell as the runner sees it --------------------------------------------------------------
def meter_devices(spec: RunSpec) -> list[int]:
    """GPU indices the cell will run on, known before the model is loaded (for the idle
    baseline). [] on CPU: the "auto" meter then estimates instead of measuring idle GPUs."""
    if spec.device == "cpu":
        return []
    if spec.device.startswith("cuda:"):
        try:
            first = int(spec.device.split(":", 1)[1])
        except ValueError:
            raise TokenjouleError(f"device {spec.device!r} is not valid; use auto, cpu, cuda or cuda:N") from None
        return list(range(first, first + spec.tensor_parallel * spec.pipeline_parallel))
    import torch  # only here: whether a GPU exists decides the meter

    if not torch.cuda.is_available():
        return []
    return list(range(spec.tensor_parallel * spec.pipeline_parallel))


def run_group(
    specs: Sequence[RunSpec], store: "ResultStore", *, meter_kind: str = "auto", idle_s: float = 5.0,
    engine: Engine | None = None, meter: Meter | None = None, on_progress: ProgressFn | None = None,
    on_cell: Callable[[RunSpec, CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Measure cells that share one engine load (`spec.load_key`): the runner with a plan of
    these cells. Every cell is stored (ok or failed) as soon as it finishes; a failed cell
    does not stop the others. Returns the records in order."""
    from tokenjoule.runs.plans import CellsPlan

    if not specs:
        return []
    if len({load_key(s) for s in specs}) > 1:
        raise TokenjouleError("run_group needs cells of one engine load (model/engine/mode/device/dtype/seed/"
                              "parallelism/engine options); split them first")
    plan = CellsPlan(specs, on_cell=on_cell)
    run_cells(plan, store, meter_kind=meter_kind, idle_s=idle_s, engine=engine, meter=meter,
              on_progress=on_progress)
    return plan.records


def run_cells(plan: "CellsPlan", store: Any, *, meter_kind: str = "auto", idle_s: float = 5.0,
              engine: Engine | None = None, meter: Meter | None = None,
              on_progress: ProgressFn | None = None) -> "CellsPlan":
    """Run a list plan (any number of engine loads); `engine` reuses one given engine."""
    from tokenjoule.runs.runner import Runner, RunContext

    factory = None if engine is None else (lambda name: engine)
    Runner(RunContext(store, meter=meter, meter_kind=meter_kind, idle_s=idle_s, engine_factory=factory,
                      on_progress=on_progress)).run(plan)
    return plan


def run_measure(
    spec: RunSpec, store: "ResultStore", *, meter_kind: str = "auto", idle_s: float = 5.0,
    engine: Engine | None = None, meter: Meter | None = None, on_progress: ProgressFn | None = None,
) -> CellRecord:
    """Measure and store one cell; a failed cell is stored, then raised as CellFailure."""
    record = run_group([spec], store, meter_kind=meter_kind, idle_s=idle_s, engine=engine, meter=meter,
                       on_progress=on_progress)[0]
    if record.status != "ok":
        error = record.error or "unknown error"
        if len(error) > 300:  # the whole text is in the stored record
            error = error[:297] + "..."
        raise CellFailure(f"cell {spec.label} failed ({error}); stored as failed cell #{record.id}"
                          f" in {store.path}")
    return record
