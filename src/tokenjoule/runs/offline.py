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
import platform
import socket
import sys
from collections import Counter
from typing import Any, Callable, Sequence

from tokenjoule import __version__
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
from tokenjoule.spec import RunSpec
from tokenjoule.store.db import CellRecord, ResultStore, utc_now

# on_progress(phase, done, total): phase is one of PHASES; called after every batch.
ProgressFn = Callable[[str, int, int], None]
PHASES = ("warmup", "calibrate", "measure", "prefill-warmup", "prefill-calibrate", "prefill-measure")
MAX_ITERATIONS_PER_WINDOW = 10_000  # a guard against a batch that reports ~0 s
CALIBRATION_BATCHES = 3


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, Python's MemoryError, or any error whose text says
    "out of memory"."""
    torch = sys.modules.get("torch")  # never import torch just to classify an error
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def error_text(exc: BaseException) -> str:
    """One line naming the error kind; stored in the failed record."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    prefix = "out of memory" if is_out_of_memory(exc) else type(exc).__name__
    return f"{prefix}: {text}"


# -- one phase --------------------------------------------------------------------------------
def _measure_phase(
    name: str, spec: RunSpec, engine: Engine, meter: Meter, output_tokens: int, warmup: int,
    calls: Counter, on_progress: ProgressFn | None,
) -> PhaseResult:
    prefix = "" if name == "full" else "prefill-"

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
    return phase


def measure_cell(spec: RunSpec, engine: Engine, meter: Meter, *, on_progress: ProgressFn | None = None) -> CellRecord:
    """Measure one cell on an already loaded engine; returns an unsaved ok record.

    The caller owns `engine.load/close` and the meter (so a sweep reuses one engine), and
    adds provenance. Exceptions from the engine propagate (see `run_group` for recording)."""
    calls: Counter = Counter()
    full = _measure_phase("full", spec, engine, meter, spec.output_tokens, spec.warmup, calls, on_progress)
    prefill = None
    if spec.split_prefill and spec.output_tokens > 1:
        # One warm-up of the new shape (the first call of a shape can compile or allocate).
        prefill = _measure_phase("prefill", spec, engine, meter, 1, min(spec.warmup, 1), calls, on_progress)
    metrics = build_metrics(spec, full, prefill)
    measurement = measurement_dict(full, prefill)
    measurement["calls"] = {p: calls[p] for p in PHASES if calls[p]}
    return CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), kind="offline", status="ok",
                      metrics=metrics, measurement=measurement)


# -- records, provenance ----------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def base_provenance() -> dict[str, Any]:
    from tokenjoule.codeversion import code_version

    return {"tokenjoule_version": __version__, **code_version(), "hostname": socket.gethostname(),
            "cpu_name": _cpu_name(), "python_version": platform.python_version(), "time_utc": utc_now()}


def safe_provenance(fn: Callable[[], dict]) -> dict:
    """Call a provenance getter; an error becomes a recorded note, never a lost cell."""
    try:
        return dict(fn() or {})
    except Exception as exc:  # provenance must never lose a measured cell
        return {"provenance_error": " ".join(str(exc).split())}


def _idle_facts(meter: Meter) -> dict[str, Any]:
    """The settle wait and GPU state of the idle baseline, where the meter recorded them."""
    details = getattr(meter, "idle_details", None) or {}
    keys = ("idle_settle", "idle_gpu_state_before_settle", "idle_gpu_state_start", "idle_power_counter_w",
            "idle_power_timeline_w", "idle_power_source", "idle_power_measured_w", "idle_settled",
            "idle_resting_sm_clock_mhz")
    return {k.removeprefix("idle_"): details[k] for k in keys if k in details}


def failed_record(spec: RunSpec, exc: BaseException, provenance: dict[str, Any]) -> CellRecord:
    return CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), kind="offline", status="failed",
                      metrics={}, measurement={}, provenance=provenance, error=error_text(exc))


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


def _group_key(spec: RunSpec) -> tuple:
    return (spec.model, spec.engine, spec.mode, spec.device, spec.dtype, spec.seed, spec.tensor_parallel,
            spec.pipeline_parallel, spec.decoding.draft_model, sorted(spec.engine_options.items()))


def run_group(
    specs: Sequence[RunSpec], store: ResultStore, *, meter_kind: str = "auto", idle_s: float = 5.0,
    engine: Engine | None = None, meter: Meter | None = None, on_progress: ProgressFn | None = None,
    on_cell: Callable[[RunSpec, CellRecord], None] | None = None,
) -> list[CellRecord]:
    """Measure cells that share one loaded model: idle baseline first, one load, then each cell.

    Every cell is stored (ok or failed) as soon as it finishes; a failed cell does not stop
    the others. Returns the records in order. Errors in creating the meter propagate."""
    if not specs:
        return []
    keys = {repr(_group_key(s)) for s in specs}
    if len(keys) > 1:
        raise TokenjouleError("run_group needs cells of one model/engine/mode/device/dtype/seed; split them first")
    first = specs[0]
    own_meter = meter is None
    if meter is None:
        from tokenjoule.energy import make_meter

        meter = make_meter(meter_kind, devices=meter_devices(first))
    records: list[CellRecord] = []
    try:
        idle_w = meter.measure_idle(idle_s) if idle_s > 0 else None  # before the model is loaded
        if engine is None:
            from tokenjoule.engines.base import get_engine

            engine = get_engine(first.engine)
        try:
            engine.load(first)
        except Exception as exc:  # every cell of the group fails the same way
            provenance = {**base_provenance(), **safe_provenance(meter.provenance)}
            for spec in specs:
                rec = failed_record(spec, exc, provenance)
                store.add(rec)
                records.append(rec)
                if on_cell:
                    on_cell(spec, rec)
            return records
        try:
            # After loading: versions are then those of the imported (running) packages.
            provenance = {**base_provenance(), **safe_provenance(meter.provenance), **safe_provenance(engine.provenance)}
            provenance["engine_devices"] = safe_provenance(lambda: {"d": engine.device_indices()}).get("d")
            for spec in specs:
                try:
                    rec = measure_cell(spec, engine, meter, on_progress=on_progress)
                except Exception as exc:
                    rec = failed_record(spec, exc, provenance)
                else:
                    rec.provenance = dict(provenance, time_utc=utc_now())
                    rec.measurement["idle"] = {"duration_s": idle_s, "power_w": idle_w,
                                               **safe_provenance(lambda: _idle_facts(meter))}
                    if rec.metrics.get("idle_power_w") is None and idle_w is not None:
                        rec.metrics["idle_power_w"] = idle_w
                store.add(rec)
                records.append(rec)
                if on_cell:
                    on_cell(spec, rec)
        finally:
            engine.close()
    finally:
        if own_meter:
            meter.close()
    return records


def run_measure(
    spec: RunSpec, store: ResultStore, *, meter_kind: str = "auto", idle_s: float = 5.0,
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
