"""How a bin's partly filled last batch is charged: the per-bin arithmetic of the binned estimate.

A bin holds N requests measured at batch B with E(B) joules per full batch; N = q x B + r with
q = N // B full batches and a remainder batch of r = N mod B requests. Three roundings:

- ``paper``    (default) N/B x E(B): the paper's formula; energy scales linearly with requests.
- ``ceil``     ceil(N/B) x E(B): the remainder batch costs a full batch (the old default; it
               overcharges sparse bins: one request in a bin of batch 576 costs 576 requests).
- ``measured`` q x E(B) + E(r): the remainder batch costs its own measured energy, from a stored
               cell of that bin at batch r; when none exists E(r) is PREDICTED (labelled): linear
               between the two nearest stored batch sizes of the bin when there are two or more
               (outside them only when they are far enough apart, MIN_EXTRAPOLATION_SPAN), else
               the paper's r/B x E(B) of the nearest stored batch.

Pure functions; no store access (the caller passes the energies it has per batch size), so the
same arithmetic serves estimate, savings, recommend and the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tokenjoule.errors import TokenjouleError, UnknownNameError

ROUNDINGS = ("paper", "ceil", "measured")
DEFAULT_ROUNDING = "paper"
# Above this share of a total charged to partly filled batches the CLI warns: the rounding
# choice then moves the answer by more than measurement noise.
PARTIAL_WARN_SHARE = 0.10
# Outside the stored batch sizes E(r) is extrapolated from the two nearest only when they span at
# least this fraction of the distance carried; closer, their slope is measurement noise.
MIN_EXTRAPOLATION_SPAN = 0.5

FORMULAS = {
    "paper": "sum of N/B x E_batch (the paper's formula)",
    "ceil": "sum of ceil(N/B) x E_batch (partly filled batches charged as full)",
    "measured": "sum of floor(N/B) x E_batch + E(N mod B) (remainder batches at their own energy)",
}


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise UnknownNameError("rounding", rounding, ROUNDINGS)
    return rounding


@dataclass(frozen=True)
class RemainderEnergy:
    """E(r) of a remainder batch and where it came from."""

    energy_j: float
    basis: str
    predicted: bool
    cell_id: int | None = None


@dataclass(frozen=True)
class BinCharge:
    """A bin's energy under one rounding; `partial_energy_j` is the part charged for the remainder."""

    rounding: str
    energy_j: float
    full_batches: int
    remainder_requests: int
    partial_energy_j: float
    remainder_basis: str
    remainder_predicted: bool = False
    remainder_cell_id: int | None = None


def remainder_energy(r: int, batch_size: int, energy_per_batch_j: float,
                     by_batch: dict[int, tuple[float, int | None]] | None = None) -> RemainderEnergy:
    """E(r) for a remainder of r requests: a stored cell at batch r, else a labelled prediction.

    `by_batch` maps the bin's stored batch sizes to (energy_j, cell_id)."""
    by_batch = dict(by_batch or {})
    by_batch.setdefault(batch_size, (energy_per_batch_j, None))
    if r in by_batch:
        e, cid = by_batch[r]
        return RemainderEnergy(float(e), f"measured: cell {cid} at batch {r}" if cid is not None
                               else f"measured at batch {r}", False, cid)
    sizes = sorted(by_batch)
    if len(sizes) < 2:
        return RemainderEnergy(r / batch_size * energy_per_batch_j,
                               f"predicted: {r}/{batch_size} of the batch-{batch_size} energy (no cell at batch {r})",
                               True)
    lo, hi = _bracket(sizes, r)
    if not lo < r < hi:
        nearest = lo if abs(r - lo) <= abs(r - hi) else hi
        if hi - lo < MIN_EXTRAPOLATION_SPAN * abs(r - nearest):
            # Two close batch sizes (e.g. a table cell and its re-measurement at 440 and 442) give a
            # slope that is mostly noise; carried far it would swing E(r) between r/B x E and E.
            e = min(r / nearest * by_batch[nearest][0], energy_per_batch_j)
            return RemainderEnergy(e, f"predicted: {r}/{nearest} of the batch-{nearest} energy (stored batches "
                                      f"{lo} and {hi} too close to extrapolate from; no cell at batch {r})", True)
    e_lo, e_hi = by_batch[lo][0], by_batch[hi][0]
    e = e_lo + (e_hi - e_lo) * (r - lo) / (hi - lo)
    # Extrapolating below the smallest stored batch can fall under zero; a batch never costs
    # less than its share of the linear form nor more than the full batch.
    e = min(max(e, r / batch_size * energy_per_batch_j), energy_per_batch_j)
    return RemainderEnergy(e, f"predicted: linear between stored batches {lo} and {hi} (no cell at batch {r})", True)


def _bracket(sizes: list[int], r: int) -> tuple[int, int]:
    below = [s for s in sizes if s < r]
    above = [s for s in sizes if s > r]
    if below and above:
        return below[-1], above[0]
    if above:
        return above[0], above[1]
    return below[-2], below[-1]


def charge_bin(n_requests: int, batch_size: int, energy_per_batch_j: float, rounding: str = DEFAULT_ROUNDING,
               by_batch: dict[int, tuple[float, int | None]] | None = None) -> BinCharge:
    """The energy of one bin of `n_requests` measured at `batch_size` under `rounding`."""
    check_rounding(rounding)
    if batch_size < 1 or n_requests < 0:
        raise TokenjouleError(f"bin needs batch_size >= 1 and n_requests >= 0, got {batch_size} and {n_requests}")
    q, r = divmod(n_requests, batch_size)
    full_j = q * energy_per_batch_j
    if r == 0:
        return BinCharge(rounding, full_j, q, 0, 0.0, "none (no partly filled batch)")
    if rounding == "paper":
        part = r / batch_size * energy_per_batch_j
        return BinCharge(rounding, full_j + part, q, r, part, f"{r}/{batch_size} of a batch (N/B)")
    if rounding == "ceil":
        return BinCharge(rounding, full_j + energy_per_batch_j, q, r, energy_per_batch_j,
                         f"a full batch of {batch_size} for {r} request(s)")
    rem = remainder_energy(r, batch_size, energy_per_batch_j, by_batch)
    return BinCharge(rounding, full_j + rem.energy_j, q, r, rem.energy_j, rem.basis, rem.predicted, rem.cell_id)


def ceil_batches(n_requests: int, batch_size: int) -> int:
    return math.ceil(n_requests / batch_size)


def remainder_cells(bin_batches: dict[tuple[int, int], tuple[int, int]]) -> list[dict[str, int]]:
    """Sweep cells for the remainder batches: (input, output) -> (N, B) gives batch N mod B cells.

    Bins whose N is a multiple of B have no remainder; bins with N < B get batch N (their only batch)."""
    out = []
    for (i, o), (n, b) in sorted(bin_batches.items()):
        r = n % b if b else 0
        if r:
            out.append({"input_tokens": i, "output_tokens": o, "batch_size": r})
    return out
