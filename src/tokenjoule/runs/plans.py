"""The plan of a list of cells (`measure`, the demo, the evidence benchmarks): run each cell
once, in the order given, grouped by engine load; optionally read back cells the store
already holds instead of measuring them again (the demo's resume). The sweep's plan, with
grid expansion, `batch: max` and the budget, is runs.sweep.SweepPlan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tokenjoule.errors import MissingDependencyError
from tokenjoule.records import CellRecord
from tokenjoule.runs.runner import Session
from tokenjoule.spec import RunSpec, load_key

LOAD_FAILED = "engine load failed: "


@dataclass(frozen=True)
class Cell:
    """One fixed-batch cell of a list plan."""

    spec: RunSpec

    @property
    def key(self) -> str:
        return self.spec.spec_hash()


def group_by_load(items: Sequence[Any]) -> list[list[Any]]:
    """Items grouped by `load_key(item.spec)`, groups in first-appearance order."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(load_key(item.spec), []).append(item)
    return list(groups.values())


class CellsPlan:
    """Measure each spec once. `records` holds one record per spec, in the given order (the
    stored one for a spec read back with `reuse_stored`)."""

    claims = False  # an explicit `measure` runs even if a sweep elsewhere holds the cell

    def __init__(self, specs: Sequence[RunSpec], *, store: Any = None, reuse_stored: bool = False,
                 on_cell: Callable[[RunSpec, CellRecord], None] | None = None):
        self.cells = [Cell(s) for s in specs]
        self.store, self.reuse_stored, self.on_cell = store, reuse_stored, on_cell
        self.by_key: dict[str, CellRecord] = {}
        self.reused: list[CellRecord] = []
        self._started: set[str] = set()

    @property
    def records(self) -> list[CellRecord]:
        return [self.by_key[c.key] for c in self.cells if c.key in self.by_key]

    def groups(self) -> list[list[Cell]]:
        return group_by_load(self.cells)

    def admit(self, group: Sequence[Cell], session: Session) -> list[Cell]:
        todo = []
        for cell in group:
            stored = session.store.latest(cell.key) if self.reuse_stored else None
            if stored is not None:
                self.by_key[cell.key] = stored
                self.reused.append(stored)
            else:
                todo.append(cell)
        return todo

    def should_stop(self, item: Cell, session: Session, first: bool) -> bool:
        return False

    def next_step(self, item: Cell, session: Session) -> RunSpec | None:
        if item.key in self._started:
            return None
        self._started.add(item.key)
        return item.spec

    def told(self, item: Cell, record: CellRecord) -> CellRecord:
        self._started.add(item.key)
        return record

    def recorded(self, item: Cell, record: CellRecord) -> None:
        self.by_key[item.key] = record
        if self.on_cell:
            self.on_cell(item.spec, record)

    def load_failed(self, item: Cell, exc: BaseException) -> CellRecord:
        if isinstance(exc, MissingDependencyError):
            raise exc  # nothing was tried: say what to install instead of storing failed cells
        return CellRecord.failed(item.spec, exc, prefix=LOAD_FAILED)

    def not_claimed(self, item: Cell) -> None:  # pragma: no cover - claims is False
        pass
