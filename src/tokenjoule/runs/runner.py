"""The one cell loop: `Runner(context).run(plan)`.

    for each group of the plan (cells sharing one engine load, `spec.load_key`):
        open a session (the meter: shared or owned), let the plan admit cells (resume decisions)
        measure the idle baseline once, create and load the engine once
        for each admitted cell: claim it, measure / record each step the plan asks for, release
        close the engine (and the meter if the session owns it)

A `Plan` decides everything else: grouping and order, which cells to skip, what spec to
measure next for a cell (a `batch: max` search, an out-of-memory step-down), when to stop
(budget), and it is told every record before the record is stored. The context decides how:
`RunContext` measures; `DryContext` never measures, loads or writes (a dry run is the same
plan run against it). Every record goes to the store as soon as it exists, one transaction
each, so a crash loses only the cell in flight.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, Sequence

from tokenjoule.energy.meter import Meter
from tokenjoule.engines import base as engines_base
from tokenjoule.engines.base import Engine
from tokenjoule.records import CellRecord, base_provenance, is_out_of_memory, safe_provenance, utc_now
from tokenjoule.runs.batch_search import BatchSearch, find_max_batch, release_memory
from tokenjoule.runs.offline import measure_cell, meter_devices
from tokenjoule.spec import RunSpec

# on_progress(phase, done, total): phase as in runs.offline.PHASES; called after every batch.
ProgressFn = Callable[[str, int, int], None]
MeasureFn = Callable[[RunSpec, Engine, Meter], CellRecord]
PLANNED = "planned"  # status of the records a dry context returns instead of measuring


def idle_facts(meter: Meter) -> dict[str, Any]:
    """The settle wait and GPU state of the idle baseline, where the meter recorded them
    (the NVML meter's `idle_details`; other meters record none)."""
    details = getattr(meter, "idle_details", None) or {}
    keys = ("idle_settle", "idle_gpu_state_before_settle", "idle_gpu_state_start", "idle_power_counter_w",
            "idle_power_timeline_w", "idle_power_source", "idle_power_measured_w", "idle_settled",
            "idle_resting_sm_clock_mhz")
    return {k.removeprefix("idle_"): details[k] for k in keys if k in details}


class Store(Protocol):
    """What the runner and the plans need from a results store (store.db.ResultStore)."""

    path: Any

    def add(self, record: CellRecord) -> int: ...

    def has_success(self, spec_hash: str) -> bool: ...

    def has_failure(self, spec_hash: str) -> bool: ...

    def latest(self, spec_hash: str, status: str | None = "ok") -> CellRecord | None: ...

    def get_max_batch(self, key: str) -> int | None: ...

    def set_max_batch(self, key: str, max_batch: int, gpu_name: str | None, probes: list) -> None: ...


def claim(store: Any, key: str) -> bool:
    """Claim a cell so that two processes sweeping one store never measure it twice. The claim
    hook is optional on a store (`ResultStore.claim`); a store without one grants every claim."""
    hook = getattr(store, "claim", None)  # optional store hook, not an engine capability
    return True if hook is None else bool(hook(key))


def release(store: Any, key: str) -> None:
    hook = getattr(store, "release", None)
    if hook is not None:
        hook(key)


def gpu_name_of(meter: Meter | None) -> str | None:
    """The first GPU's name from the meter's provenance, else the CPU's (a cache key only);
    None without a meter (a dry run without one)."""
    if meter is None:
        return None
    try:
        prov = meter.provenance() or {}
    except Exception:  # noqa: BLE001 - a name is only a cache key
        prov = {}
    names = prov.get("gpu_names") or []
    return str(names[0]) if names else str(prov.get("cpu_name") or "cpu")


class Item(Protocol):
    """One planned cell: the spec that loads the engine (and is measured unless the plan says
    otherwise) and its resume key."""

    @property
    def spec(self) -> RunSpec: ...

    @property
    def key(self) -> str: ...


class Plan(Protocol):
    claims: bool  # claim each cell in the store before measuring it (sweeps)

    def groups(self) -> Iterable[Sequence[Any]]:
        """Items in run order, grouped by engine load."""

    def admit(self, group: Sequence[Any], session: "Session") -> list[Any]:
        """The items of this group to run now (the plan keeps its own outcome for the rest)."""

    def should_stop(self, item: Any, session: "Session", first: bool) -> bool:
        """True to stop the whole run before this item (`first`: before the group's load)."""

    def next_step(self, item: Any, session: "Session") -> RunSpec | CellRecord | None:
        """What to do next for this item: a spec to measure, a ready record to store, or None
        when the item is finished."""

    def told(self, item: Any, record: CellRecord) -> CellRecord:
        """Every record of the item, before it is stored; returns the record to store."""

    def recorded(self, item: Any, record: CellRecord) -> None:
        """The record as stored (its id set)."""

    def load_failed(self, item: Any, exc: BaseException) -> CellRecord:
        """The failed record of an item whose group's engine could not be loaded."""

    def not_claimed(self, item: Any) -> None:
        """Another process holds this item's claim: it is skipped."""


class Session:
    """One engine load: the meter (shared or owned), idle baseline, engine, provenance."""

    measures = True

    def __init__(self, context: "RunContext", first: RunSpec):
        self.context = context
        self.own_meter = context.meter is None
        self.meter: Meter | None = context.meter
        if self.meter is None:
            from tokenjoule.energy import make_meter

            self.meter = make_meter(context.meter_kind, devices=meter_devices(first))
        self.gpu_name = gpu_name_of(self.meter)
        self.engine: Engine | None = None
        self.engine_devices: list[int] = []
        self.idle: dict[str, Any] = {}
        self.provenance: dict[str, Any] = {}

    @property
    def store(self) -> Any:
        return self.context.store

    def measure_idle(self) -> None:
        """The idle baseline, once per load and before it (a loaded model draws more)."""
        assert self.meter is not None
        idle_s = self.context.idle_s
        if idle_s > 0:
            self.idle = {"duration_s": idle_s, "power_w": self.meter.measure_idle(idle_s)}
            meter = self.meter
            self.idle.update(safe_provenance(lambda: idle_facts(meter)))
        self.provenance = {**base_provenance(), **safe_provenance(self.meter.provenance)}

    def load(self, spec: RunSpec) -> BaseException | None:
        """Create and load the engine; the error when that fails (then every item fails)."""
        self.context.stage(f"loading {spec.model} ({spec.engine}/{spec.mode})")
        try:
            self.engine = self.context.engine_factory(spec.engine)
            self.engine.load(spec)
        except Exception as exc:  # noqa: BLE001 - the whole group fails, the run goes on
            return exc
        engine = self.engine
        # After loading: versions are then those of the imported (running) packages.
        self.provenance.update(safe_provenance(engine.provenance))
        self.engine_devices = list(safe_provenance(lambda: {"d": list(engine.device_indices())}).get("d") or [])
        self.provenance["engine_devices"] = self.engine_devices  # GPU minutes = wall x len(devices)
        return None

    def measure(self, spec: RunSpec) -> CellRecord:
        """Measure one cell on the loaded engine; an exception becomes a failed record."""
        assert self.engine is not None and self.meter is not None
        try:
            record = self.context.measure(spec, self.engine, self.meter)
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
            if is_out_of_memory(exc):
                release_memory()
            return CellRecord.failed(spec, exc)
        if record.is_ok and self.idle:
            record.measurement.setdefault("idle", self.idle)
            if record.metrics.get("idle_power_w") is None and self.idle.get("power_w") is not None:
                record.metrics["idle_power_w"] = self.idle["power_w"]
        return record

    def search_max_batch(self, spec: RunSpec, cap: int) -> BatchSearch | None:
        """The largest fitting batch for this cell (cached in the store)."""
        assert self.engine is not None
        return find_max_batch(self.store, self.engine, spec, self.gpu_name, cap)

    def save(self, record: CellRecord) -> CellRecord:
        record.provenance = {**self.provenance, "time_utc": utc_now(), **(record.provenance or {})}
        self.store.add(record)  # one transaction: the cell is either fully stored or absent
        return record

    def close(self) -> None:
        try:
            if self.engine is not None:
                self.engine.close()
        finally:
            if self.own_meter and self.meter is not None:
                self.meter.close()


class DrySession(Session):
    """A session that never measures, loads or writes: the meter (if one was given) only names
    the GPU; a search answers "unknown until run time"; a measurement returns a planned record."""

    measures = False

    def __init__(self, context: "DryContext", first: RunSpec):
        self.context = context  # type: ignore[assignment]
        self.own_meter, self.meter = False, context.meter
        self.gpu_name = gpu_name_of(self.meter)
        self.engine, self.engine_devices, self.idle, self.provenance = None, [], {}, {}

    def measure_idle(self) -> None:
        pass

    def load(self, spec: RunSpec) -> BaseException | None:
        return None

    def measure(self, spec: RunSpec) -> CellRecord:
        return CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), status=PLANNED)

    def search_max_batch(self, spec: RunSpec, cap: int) -> BatchSearch | None:
        return None  # unknown until run time

    def save(self, record: CellRecord) -> CellRecord:
        return record

    def close(self) -> None:
        pass


class RunContext:
    """How cells are measured: the store, the meter (shared, or one made per group from
    `meter_kind`), the idle baseline length, the engine factory and the measurement function."""

    def __init__(self, store: Store | None, *, meter: Meter | None = None, meter_kind: str = "auto", idle_s: float = 5.0,
                 engine_factory: Callable[[str], Engine] | None = None, measure: MeasureFn | None = None,
                 on_progress: ProgressFn | None = None, on_stage: Callable[[str], None] | None = None):
        self.store, self.meter, self.meter_kind, self.idle_s = store, meter, meter_kind, idle_s
        # Looked up at call time (not bound at import), so the registry can be swapped in tests.
        self.engine_factory: Callable[[str], Engine] = engine_factory or (lambda name: engines_base.get_engine(name))
        if measure is None:
            def measure(spec: RunSpec, engine: Engine, meter: Meter) -> CellRecord:
                return measure_cell(spec, engine, meter, on_progress=on_progress)
        self.measure: MeasureFn = measure
        self.stage: Callable[[str], None] = on_stage or (lambda text: None)

    def open(self, first: RunSpec) -> Session:
        return Session(self, first)


class DryContext(RunContext):
    """The context of a dry run: reads the store (which may be None) and never writes it."""

    def __init__(self, store: Store | None, *, meter: Meter | None = None, idle_s: float = 0.0):
        self.store, self.meter, self.idle_s = store, meter, idle_s
        self.stage = lambda text: None

    def open(self, first: RunSpec) -> Session:
        return DrySession(self, first)


class Runner:
    """Runs a plan against a context (see the module docstring)."""

    def __init__(self, context: RunContext):
        self.context = context

    def run(self, plan: Plan) -> bool:
        """Run every group; False when the plan stopped the run (budget)."""
        for group in plan.groups():
            if not group:
                continue
            session = self.context.open(group[0].spec)
            try:
                if not self._run_group(plan, group, session):
                    return False
            finally:
                session.close()
        return True

    def _run_group(self, plan: Plan, group: Sequence[Any], session: Session) -> bool:
        todo = plan.admit(group, session)
        if not todo:
            return True
        if plan.should_stop(todo[0], session, True):
            return False
        session.measure_idle()
        error = session.load(todo[0].spec)
        if error is not None:
            for item in todo:
                self._record(plan, item, session, plan.load_failed(item, error))
            return True
        for item in todo:
            if plan.should_stop(item, session, False):
                return False
            if plan.claims and session.measures:
                if not claim(session.store, item.key):
                    plan.not_claimed(item)
                    continue
                if session.store.has_success(item.key):
                    # Another process measured it after this group was admitted, then released it.
                    release(session.store, item.key)
                    plan.not_claimed(item)
                    continue
            try:
                while (step := plan.next_step(item, session)) is not None:
                    record = step if isinstance(step, CellRecord) else session.measure(step)
                    self._record(plan, item, session, record)
            finally:
                if plan.claims and session.measures:
                    release(session.store, item.key)
        return True

    @staticmethod
    def _record(plan: Plan, item: Any, session: Session, record: CellRecord) -> None:
        plan.recorded(item, session.save(plan.told(item, record)))
