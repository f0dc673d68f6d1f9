"""Requests and workloads: token counts (+ arrival times for online runs) with provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(frozen=True)
class Request:
    """One request: exact input and output token counts; arrival time in seconds from the
    start of the workload (None for offline batches)."""

    input_tokens: int
    output_tokens: int
    arrival_s: float | None = None


@dataclass
class Workload:
    """A list of requests plus where they came from and what was done to them.

    `provenance` holds e.g. {"source": path or trace name, "format": ..., "filters": [...],
    "removed": {"reason": count}, "seed": ...}.
    """

    name: str
    requests: list[Request]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    @property
    def has_arrivals(self) -> bool:
        return bool(self.requests) and all(r.arrival_s is not None for r in self.requests)
