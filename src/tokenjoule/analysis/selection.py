"""Which stored cell answers a bin of a setup: one rule for `estimate`, `savings`, `recommend`
and the report, printed with their answers (`SELECTION_RULE`).

A *setup* is model, engine, mode, decoding strategy (and, where given, the number of GPUs and
the GPU name). For one bin of N requests the candidates are the stored offline cells of the
setup with status ok, the bin's exact lengths, a batch size and a positive `energy_j`; a cell
measured again replaces its older row (newest row per spec). Then:

1. measured before estimated: an estimated energy (no sensor) is used only for a bin that has
   no measured cell;
2. the batch size whose energy for the bin's requests is least (`bin_cost`, under the caller's
   rounding of the partly filled batch, analysis.rounding: the paper's N / B x E_batch by
   default, ceil(N / B) x E_batch, or whole batches + the remainder's own energy);
3. on a tie, the newest cell.

`bin_cost` is the one per-bin arithmetic: the choice and the totals use it alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tokenjoule.analysis.rounding import DEFAULT_ROUNDING, charge_bin
from tokenjoule.records import CellRecord

SELECTION_RULE = ("cells chosen per bin: the setup's stored offline ok cells of the bin's lengths (newest row "
                  "per spec), measured before estimated, the batch size with the least energy for the bin's "
                  "requests (under the rounding of partly filled batches), newest on a tie")


@dataclass(frozen=True)
class BinCost:
    """The energy of running a bin's `n_requests` with one cell's batch."""

    batch_size: int
    batches: int  # whole batches: ceil(N / B)
    energy_j: float  # under `rounding` (analysis.rounding)
    energy_unrounded_j: float  # N / B x E_batch (energy linear in requests)
    energy_ceil_j: float = 0.0  # ceil(N / B) x E_batch (the partly filled batch costs a full one)
    rounding: str = DEFAULT_ROUNDING
    remainder_requests: int = 0
    partial_energy_j: float = 0.0  # the part of energy_j charged to the partly filled batch
    remainder_basis: str = ""
    remainder_predicted: bool = False
    remainder_cell_id: int | None = None


def cell_energy_j(rec: CellRecord) -> float | None:
    """The cell's batch energy when it is a usable positive number, else None."""
    value = rec.energy_j
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return value


def bin_cost(rec: CellRecord, n_requests: int, rounding: str = DEFAULT_ROUNDING,
             by_batch: dict[int, tuple[float, int | None]] | None = None) -> BinCost:
    """The bin's energy with this cell's batch B under `rounding` (and the N / B and ceil forms);
    `by_batch` (the bin's cells by batch size, `energy_by_batch`) gives E(r) for `measured`."""
    b = rec.batch_size
    e = cell_energy_j(rec)
    if b is None or e is None:
        raise ValueError(f"cell {rec.id} has no batch size or no positive energy_j")
    batches = math.ceil(n_requests / b)
    c = charge_bin(n_requests, b, e, rounding, by_batch)
    return BinCost(b, batches, c.energy_j, n_requests / b * e, batches * e, rounding, c.remainder_requests,
                   c.partial_energy_j, c.remainder_basis, c.remainder_predicted, c.remainder_cell_id)


def energy_by_batch(cells: Iterable[CellRecord]) -> dict[int, tuple[float, int | None]]:
    """A bin's cells as batch size -> (energy_j, cell id): measured before estimated, then the
    newest row per batch size (what `measured` rounding charges a remainder batch)."""
    out: dict[int, tuple[float, int | None]] = {}
    for rec in sorted(cells, key=lambda r: (not r.is_estimate, r.id or 0)):
        e = cell_energy_j(rec)
        if e is not None and rec.batch_size is not None:
            out[int(rec.batch_size)] = (e, rec.id)
    return out


def gpus_of(rec: CellRecord) -> int:
    s = rec.spec
    return int(s.get("tensor_parallel", 1) or 1) * int(s.get("pipeline_parallel", 1) or 1)


def usable_cells(records: Iterable[CellRecord]) -> tuple[list[CellRecord], int]:
    """Newest row per spec among batch cells with lengths and a positive energy; plus how many
    were left out for lacking them (e.g. the offline half of compare-serving)."""
    newest: dict[str, CellRecord] = {}
    for rec in records:
        if rec.status != "ok" or rec.kind != "offline":
            continue
        old = newest.get(rec.spec_hash)
        if old is None or (rec.id or 0) >= (old.id or 0):
            newest[rec.spec_hash] = rec
    usable, unusable = [], 0
    for rec in newest.values():
        if rec.input_tokens is None or rec.output_tokens is None or rec.batch_size is None \
                or cell_energy_j(rec) is None:
            unusable += 1
            continue
        usable.append(rec)
    return sorted(usable, key=lambda r: r.id or 0), unusable


def cells_by_bin(records: Iterable[CellRecord]) -> dict[tuple[int, int], list[CellRecord]]:
    out: dict[tuple[int, int], list[CellRecord]] = {}
    for rec in records:
        assert rec.input_tokens is not None and rec.output_tokens is not None
        out.setdefault((rec.input_tokens, rec.output_tokens), []).append(rec)
    return out


def setup_cells(store: Any, *, model: str, engine: str, mode: str, decoding: str = "greedy",
                gpus: int | None = None, gpu_name: str | None = None) -> tuple[dict[tuple[int, int], list[CellRecord]], int]:
    """The setup's usable cells by (input, output) bin, and the number left out as unusable."""
    found = store.find(status="ok", kind="offline", model=model, engine=engine, mode=mode, decoding=decoding,
                       gpu_name=gpu_name)
    usable, unusable = usable_cells(found)
    if gpus is not None:
        usable = [r for r in usable if gpus_of(r) == gpus]
    return cells_by_bin(usable), unusable


def choose_cell(cells: Iterable[CellRecord], n_requests: int,
                accept: Callable[[CellRecord], bool] | None = None,
                rounding: str = DEFAULT_ROUNDING) -> CellRecord | None:
    """The cell that answers a bin of `n_requests` (the rule in the module docstring);
    `accept` filters candidates first (e.g. latency targets). None when none is left."""
    cells = list(cells)
    by_batch = energy_by_batch(cells) if rounding == "measured" else None
    pool = [r for r in cells if accept is None or accept(r)]
    measured = [r for r in pool if not r.is_estimate]
    pool = measured or pool
    if not pool:
        return None
    return min(pool, key=lambda r: (bin_cost(r, n_requests, rounding, by_batch).energy_j, -(r.id or 0)))


def protocol_of(rec: CellRecord) -> tuple[Any, Any]:
    """A cell's measurement protocol: its warm-ups and repeats (sweeps differ in these)."""
    return rec.spec.get("warmup"), rec.spec.get("repeats")


def one_per_length(group: list[CellRecord], length: Callable[[CellRecord], int]) -> list[CellRecord]:
    """One cell per length of a series, in length order. Two sweeps can measure the same shape
    under different warm-ups and repeats (paper-decoding and paper-lengths --quick both hold
    batch 1 at 512/64); a fit or a curve through both mixes their few-percent differences into
    the shape. Keep the cell run like most of the series, then the newest."""
    from collections import Counter

    counts = Counter(protocol_of(r) for r in group)
    best: dict[int, CellRecord] = {}
    for r in sorted(group, key=lambda r: (counts[protocol_of(r)], int(r.id or 0))):
        best[length(r)] = r  # the last one sorted wins
    return [best[k] for k in sorted(best)]
