"""Reference bin tables shipped as package data, and the store view the estimate reads.

A reference table is one JSON file under `reference/data/` written by a committed script
(`benchmarks/build_reference.py`) from a committed results database, never typed by hand:

    {"name", "title", "card" (NVML name), "gpu" (datasheet row), "date" (measured, UTC),
     "model", "coverage" (what is and is not measured), "source" (the database it came from),
     "built_by" (the command), "commands" (that measured the cells), "versions" {...},
     "cells": [{"engine", "mode", "decoding", "input_tokens", "output_tokens", "batch_size",
                "energy_j", "duration_s", "method", "source_cell_id", ...}]}

`reference_store(table)` loads the cells into an in-memory results store, so the binned
estimate reads a reference through the same cell-selection rule as a measured database.
Every number estimated from it is labelled "measured elsewhere on <card>, <date>".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tokenjoule.errors import TokenjouleError, UnknownNameError

FORMAT_VERSION = 1
_REQUIRED = ("name", "card", "date", "model", "cells", "coverage", "built_by", "versions")


@dataclass(frozen=True)
class ReferenceTable:
    name: str
    title: str
    card: str
    gpu: str | None
    date: str
    model: str
    coverage: str
    source: str
    built_by: str
    commands: tuple[str, ...]
    versions: dict[str, Any]
    cells: tuple[dict[str, Any], ...]
    format_version: int = FORMAT_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)
    replays: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # direct replays checking the table

    @property
    def label(self) -> str:
        return f"measured elsewhere on {self.card}, {self.date} (reference {self.name}; {self.coverage})"

    def setups(self) -> list[str]:
        return sorted({f"{c['engine']}:{c['mode']}:{c.get('decoding', 'greedy')}" for c in self.cells})

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "card": self.card, "gpu": self.gpu, "date": self.date,
                "model": self.model, "cells": len(self.cells), "setups": self.setups(),
                "coverage": self.coverage, "built_by": self.built_by, "versions": self.versions}


def _data_dir():
    return resources.files("tokenjoule.reference").joinpath("data")


def list_references() -> list[str]:
    return sorted(p.name[: -len(".json")] for p in _data_dir().iterdir() if p.name.endswith(".json"))


def parse_reference(data: dict[str, Any], source: str = "reference") -> ReferenceTable:
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise TokenjouleError(f"{source}: reference table lacks {', '.join(missing)}")
    if int(data.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise TokenjouleError(f"{source}: reference format {data['format_version']} is newer than this tokenjoule "
                              f"reads ({FORMAT_VERSION}); upgrade tokenjoule")
    for k, c in enumerate(data["cells"]):
        for key in ("engine", "mode", "input_tokens", "output_tokens", "batch_size", "energy_j"):
            if key not in c:
                raise TokenjouleError(f"{source}: cell {k} lacks {key}")
    return ReferenceTable(
        name=data["name"], title=data.get("title", data["name"]), card=data["card"], gpu=data.get("gpu"),
        date=data["date"], model=data["model"], coverage=data["coverage"], source=data.get("source", ""),
        built_by=data["built_by"], commands=tuple(data.get("commands", ())), versions=dict(data["versions"]),
        cells=tuple(data["cells"]), format_version=int(data.get("format_version", FORMAT_VERSION)),
        notes=tuple(data.get("notes", ())), replays=tuple(data.get("replays", ())),
    )


def load_reference(name: str) -> ReferenceTable:
    names = list_references()
    if name not in names:
        raise UnknownNameError("reference table", name, names + ["list"])
    text = _data_dir().joinpath(f"{name}.json").read_text()
    return parse_reference(json.loads(text), f"reference {name}")


def reference_store(table: ReferenceTable):
    """An in-memory ResultStore holding the table's cells as offline records."""
    from tokenjoule.records import CellRecord
    from tokenjoule.store.db import ResultStore

    store = ResultStore(":memory:")
    for k, c in enumerate(table.cells):
        spec = {"model": table.model, "engine": c["engine"], "mode": c["mode"],
                "decoding": {"strategy": c.get("decoding", "greedy")}, "batch_size": int(c["batch_size"]),
                "input_tokens": int(c["input_tokens"]), "output_tokens": int(c["output_tokens"]),
                "dtype": c.get("dtype", "bfloat16")}
        metrics = {key: c.get(key) for key in ("energy_j", "duration_s", "avg_power_w", "idle_power_w", "method")}
        metrics["flags"] = list(c.get("flags") or [])
        store.add(CellRecord(spec=spec, spec_hash=f"{table.name}:{k}", kind="offline", status="ok", metrics=metrics,
                             measurement={"method": c.get("method")},
                             provenance={"gpu_names": [table.card], "reference": table.name, "date": table.date,
                                         "source_cell_id": c.get("source_cell_id")},
                             created_at=c.get("created_at")))
    return store
