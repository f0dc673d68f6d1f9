"""The dry run of a large grid: a summary computed without expanding the grid.

A sweep config of a few lines can describe millions of cells; building every cell (a RunSpec,
a hash, a store lookup, a table row) takes minutes and gigabytes. Above SUMMARY_ABOVE_CELLS the
dry run instead:
- counts the cells per template (product of its axes; an upper bound: cells that two
  templates both produce are counted twice, and said so);
- validates every value of every axis (each one substituted into the first cell), every
  engine x mode pair and every model's longest input + output, so an invalid cell is still an
  error naming its line, as in the full expansion;
- counts the stored ok cells that belong to the grid (one pass over the store, not a lookup
  per cell);
- estimates the duration from an evenly spaced sample of SAMPLE_CELLS cells (labelled).
Memory and time are bounded by the sum of the axis lengths plus the sample, not the product.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from tokenjoule.runs.sweep_config import (AXES, BATCH_MAX, BATCH_UPTO_MAX, CELL_SCALARS, CellPlan, SweepConfig,
                                          _as_list, _powers_of_two)

SUMMARY_ABOVE_CELLS = 2_000  # larger grids get a summary instead of a row per cell
SAMPLE_CELLS = 400


@dataclass
class PlanSummary:
    source: str
    cells: int  # upper bound (templates may overlap)
    templates: int
    axes: dict[str, list[str]] = field(default_factory=dict)  # axis -> distinct values (as text)
    already_measured: int = 0
    sampled: int = 0
    estimated_s: float = 0.0
    estimate_source: str = "guess"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "cells_upper_bound": self.cells, "templates": self.templates,
                "axes": {k: {"count": len(v), "values": v[:8]} for k, v in self.axes.items()},
                "already_measured": self.already_measured, "sampled_cells": self.sampled,
                "estimated_duration_s": self.estimated_s, "estimate_source": self.estimate_source}


def _key(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, default=str)


def _distinct(values: list[Any]) -> list[Any]:
    seen, out = set(), []
    for v in values:
        k = _key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


class _Template:
    """One template's axes (distinct values) and mixed-radix access to its i-th cell."""

    def __init__(self, config: SweepConfig, path: tuple, own: dict[str, Any], defaults: dict[str, Any]):
        self.config, self.path, self.own = config, path, own
        merged = {**defaults, **own}
        self.axes = [k for k in AXES if k in merged]
        self.lists = [_distinct(_as_list(merged[k])) for k in self.axes]
        self.scalars = {k: merged[k] for k in CELL_SCALARS if k in merged}
        self.size = math.prod(self._plans_per(k, v) for k, v in zip(self.axes, self.lists))

    def _plans_per(self, axis: str, values: list[Any]) -> int:
        if axis != "batch_size":
            return len(values)
        ups = len(_powers_of_two(self.config.max_batch_cap)) + 1
        return sum(ups if v == BATCH_UPTO_MAX else 1 for v in values)

    def values_at(self, index: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for axis, options in zip(self.axes, self.lists):
            index, pick = divmod(index, len(options))
            values[axis] = options[pick]
        return {**values, **self.scalars}

    def plans(self, values: dict[str, Any]) -> list[CellPlan]:
        return self.config._plans(dict(values), self.path, self.own)

    def validate(self) -> None:
        base = self.values_at(0)
        for axis, options in zip(self.axes, self.lists):
            for value in options:
                self.plans({**base, axis: value})
        engines = self.lists[self.axes.index("engine")] if "engine" in self.axes else [base.get("engine")]
        modes = self.lists[self.axes.index("mode")] if "mode" in self.axes else [base.get("mode")]
        for engine in engines:
            for mode in modes:
                self.plans({**base, **({"engine": engine} if engine else {}), **({"mode": mode} if mode else {})})
        longest: dict[str, Any] = {k: max(self.lists[self.axes.index(k)]) for k in ("input_tokens", "output_tokens")
                                   if k in self.axes}
        for model in self.lists[self.axes.index("model")] if "model" in self.axes else [base.get("model")]:
            self.plans({**base, "model": model, **longest})

    def contains(self, spec: dict[str, Any]) -> bool:
        """Whether a stored cell's spec is one of this template's cells (batch "max" cells match
        any batch size)."""
        base = self.plans(self.values_at(0))[0].spec.canonical()
        for name, value in spec.items():
            if name in self.axes:
                options = self.lists[self.axes.index(name)]
                if name == "batch_size" and any(o in (BATCH_MAX, BATCH_UPTO_MAX) for o in options):
                    continue
                wanted = {_key(o.canonical() if hasattr(o, "canonical") else o) for o in options}
                if _key(value) not in wanted:
                    return False
            elif name in base and _key(base[name]) != _key(value):
                return False
        return True


def summarize_plan(config: SweepConfig, store: Any | None = None) -> PlanSummary:
    from tokenjoule.runs.sweep_estimate import GUESS_LOAD_S, CellTimeEstimator

    config.check_grid_size()
    defaults = config.set_fields()
    own_list: list[tuple[tuple[Any, ...], dict[str, Any]]] = (
        [(("cells", i), c.set_fields()) for i, c in enumerate(config.cells)] if config.cells else [((), {})])
    templates = [_Template(config, path, own, defaults) for path, own in own_list]
    for t in templates:
        t.validate()
    total = sum(t.size for t in templates)
    axes: dict[str, list[str]] = {}
    for t in templates:
        for axis, options in zip(t.axes, t.lists):
            seen = axes.setdefault(axis, [])
            for o in options:
                text = o.strategy if hasattr(o, "strategy") else str(o)
                if text not in seen:
                    seen.append(text)
    summary = PlanSummary(source=config.source, cells=total, templates=len(templates), axes=axes)
    if store is not None:
        measured = set()
        for rec in store.find(status="ok", kind="offline"):
            if rec.spec_hash not in measured and any(t.contains(rec.spec) for t in templates):
                measured.add(rec.spec_hash)
        summary.already_measured = len(measured)
    estimator = CellTimeEstimator(store)
    sampled_s, sources, n = 0.0, set(), 0
    for t in templates:
        k = max(1, min(t.size, round(SAMPLE_CELLS * t.size / total)))
        stride = t.size / k
        t_s = 0.0
        for j in range(k):
            combo = int(j * stride) % math.prod(len(x) for x in t.lists) if t.lists else 0
            plans = t.plans(t.values_at(combo))
            plan = plans[0]
            est = estimator.predict(plan.spec, unresolved_max=plan.batch == "max")
            t_s += est.seconds
            sources.add(est.source)
            n += 1
        sampled_s += t_s / k * t.size
    groups = sum(math.prod(len(t.lists[t.axes.index(a)]) for a in ("model", "engine", "mode", "dtype")
                           if a in t.axes) for t in templates)
    summary.sampled = n
    summary.estimated_s = sampled_s + GUESS_LOAD_S * groups + config.cooldown_s * total
    summary.estimate_source = "history" if sources == {"history"} else ("guess" if sources == {"guess"} else "mixed")
    return summary
