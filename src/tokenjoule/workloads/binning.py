"""Binning a workload's requests by (input length, output length).

The paper approximates a real workload by measuring one full batch per length bin and
weighting each bin by how many requests fall in it. A request goes to the *smallest* bin
edge at or above its length (a request of 100 input tokens is measured as 128). Requests
longer than the largest edge are dropped (`overflow="drop"`, the paper's choice; counted and
reported) or clipped to the largest edge (`overflow="clip"`).

Default edges: input 2^m for 5 <= m <= 13 (32, 64, ..., 8192) and output 2^m for
3 <= m <= 9 (8, ..., 512). The paper writes the input bins as 2^m for 4 <= m <= 13 but lists
32 ... 8192 without 64; we read that as a typo for the full power-of-two ladder from 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenjoule.errors import TokenjouleError
from tokenjoule.workloads.request import Workload

DEFAULT_INPUT_EDGES = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_OUTPUT_EDGES = (8, 16, 32, 64, 128, 256, 512)
OVERFLOW_POLICIES = ("drop", "clip")


def _check_edges(edges: Any, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(e) for e in edges)
    except (TypeError, ValueError):
        raise TokenjouleError(f"{what} bin edges must be integers, got {edges!r}") from None
    if not out:
        raise TokenjouleError(f"{what} bin edges are empty; give at least one, e.g. 32,64,128")
    if out[0] < 1 or any(b <= a for a, b in zip(out, out[1:])):
        raise TokenjouleError(f"{what} bin edges must be positive and strictly increasing, got {list(out)}")
    from tokenjoule.limits import MAX_TOKENS

    if out[-1] > MAX_TOKENS or len(out) > 1000:
        raise TokenjouleError(f"{what} bin edges must be at most {MAX_TOKENS:,} tokens (and at most 1000 "
                              f"edges), got {len(out)} edges up to {out[-1]:,}")
    return out


@dataclass(frozen=True)
class Bins:
    """Upper edges of the input and output length bins (tokens)."""

    input_edges: tuple[int, ...] = DEFAULT_INPUT_EDGES
    output_edges: tuple[int, ...] = DEFAULT_OUTPUT_EDGES

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_edges", _check_edges(self.input_edges, "input"))
        object.__setattr__(self, "output_edges", _check_edges(self.output_edges, "output"))

    @classmethod
    def parse(cls, input_bins: str | None = None, output_bins: str | None = None) -> "Bins":
        """From comma-separated strings (CLI form), e.g. "32,64,128"; None keeps the default."""
        def split(text: str | None, default: tuple[int, ...], what: str) -> tuple[int, ...]:
            if text is None:
                return default
            try:
                return tuple(int(x) for x in text.split(",") if x.strip())
            except ValueError:
                raise TokenjouleError(f"--{what}-bins must be comma-separated integers, got {text!r}") from None
        return cls(split(input_bins, DEFAULT_INPUT_EDGES, "input"), split(output_bins, DEFAULT_OUTPUT_EDGES, "output"))

    def to_dict(self) -> dict[str, list[int]]:
        return {"input_edges": list(self.input_edges), "output_edges": list(self.output_edges)}


@dataclass
class BinnedWorkload:
    """A workload mapped onto bins. `counts[(input_edge, output_edge)]` is the number of
    kept requests in that bin; `n_kept + n_dropped == n_total`."""

    name: str
    bins: Bins
    overflow: str
    counts: dict[tuple[int, int], int]
    n_total: int
    n_kept: int
    n_dropped: int
    dropped_reasons: dict[str, int]
    n_clipped: int = 0
    # Per kept request: the real lengths and the bin edges they were measured at (for CDFs).
    real_input_tokens: Any = None
    real_output_tokens: Any = None
    binned_input_tokens: Any = None
    binned_output_tokens: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)
    max_input_tokens: int = 0  # longest request of the whole workload, kept or not
    max_output_tokens: int = 0

    def keeping_bins(self) -> Bins:
        """The edges, extended by doubling the largest, that would keep every request."""
        def extend(edges: tuple[int, ...], longest: int) -> tuple[int, ...]:
            out = list(edges)
            while out[-1] < longest:
                out.append(out[-1] * 2)
            return tuple(out)
        return Bins(extend(self.bins.input_edges, self.max_input_tokens),
                    extend(self.bins.output_edges, self.max_output_tokens))

    def keeping_bins_hint(self) -> str:
        """The CLI flags of `keeping_bins` (only the axes that need more edges)."""
        keep = self.keeping_bins()
        parts = []
        if keep.input_edges != self.bins.input_edges:
            parts.append("--input-bins " + ",".join(str(e) for e in keep.input_edges))
        if keep.output_edges != self.bins.output_edges:
            parts.append("--output-bins " + ",".join(str(e) for e in keep.output_edges))
        return " ".join(parts) or "the current bins"

    def rows(self) -> list[dict[str, Any]]:
        """Occupied bins, sorted by (input, output): lengths, request count and share of kept."""
        return [
            {"input_tokens": i, "output_tokens": o, "n_requests": n,
             "share": n / self.n_kept if self.n_kept else 0.0}
            for (i, o), n in sorted(self.counts.items())
        ]

    def cells(self, model: str, engine: str, mode: str, batch: int | str = "max",
              decoding: str = "greedy") -> list[dict[str, Any]]:
        """The measurement cells the binned estimate needs: one per occupied bin."""
        if not (batch == "max" or (isinstance(batch, int) and batch >= 1)):
            raise TokenjouleError(f"batch must be a positive integer or 'max', got {batch!r}")
        return [
            {"model": model, "engine": engine, "mode": mode, "decoding": decoding,
             "input_tokens": i, "output_tokens": o, "batch_size": batch}
            for (i, o) in sorted(self.counts)
        ]

    def remainder_cells(self, model: str, engine: str, mode: str, batch_sizes: dict[tuple[int, int], int],
                        decoding: str = "greedy") -> list[dict[str, Any]]:
        """Cells at batch = N mod B for every bin whose N requests do not fill whole batches of B.

        `batch_sizes` maps (input, output) to the bin's full batch size B (a given integer, or the
        largest batch measured for it); these cells let `estimate --rounding measured` charge the
        partly filled batch its own measured energy. Bins absent from `batch_sizes` are skipped."""
        cells = []
        for (i, o), n in sorted(self.counts.items()):
            b = batch_sizes.get((i, o))
            if b and n % b:
                cells.append({"model": model, "engine": engine, "mode": mode, "decoding": decoding,
                              "input_tokens": i, "output_tokens": o, "batch_size": n % b})
        return cells

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "bins": self.bins.to_dict(), "overflow": self.overflow,
            "n_total": self.n_total, "n_kept": self.n_kept, "n_dropped": self.n_dropped,
            "n_clipped": self.n_clipped, "dropped_reasons": dict(self.dropped_reasons),
            "bins_occupied": len(self.counts), "rows": self.rows(),
        }


def bin_workload(workload: Workload, bins: Bins | None = None, overflow: str = "drop") -> BinnedWorkload:
    """Map every request to the smallest (input, output) bin at or above its lengths."""
    import numpy as np

    bins = bins or Bins()
    if overflow not in OVERFLOW_POLICIES:
        from tokenjoule.errors import UnknownNameError

        raise UnknownNameError("overflow policy", overflow, OVERFLOW_POLICIES)
    n = len(workload)
    ins = np.fromiter((r.input_tokens for r in workload.requests), dtype=np.int64, count=n)
    outs = np.fromiter((r.output_tokens for r in workload.requests), dtype=np.int64, count=n)
    in_edges = np.asarray(bins.input_edges, dtype=np.int64)
    out_edges = np.asarray(bins.output_edges, dtype=np.int64)
    # side="left": index of the first edge >= length, i.e. the smallest bin that fits.
    i_idx = np.searchsorted(in_edges, ins, side="left")
    o_idx = np.searchsorted(out_edges, outs, side="left")
    i_over, o_over = i_idx >= len(in_edges), o_idx >= len(out_edges)
    reasons: dict[str, int] = {}
    n_clipped = 0
    if overflow == "drop":
        keep = ~(i_over | o_over)
        for label, mask in (
            (f"input_tokens > {in_edges[-1]} and output_tokens > {out_edges[-1]}", i_over & o_over),
            (f"input_tokens > {in_edges[-1]}", i_over & ~o_over),
            (f"output_tokens > {out_edges[-1]}", o_over & ~i_over),
        ):
            if mask.any():
                reasons[label] = int(mask.sum())
    else:
        keep = np.ones(n, dtype=bool)
        n_clipped = int((i_over | o_over).sum())
        i_idx = np.minimum(i_idx, len(in_edges) - 1)
        o_idx = np.minimum(o_idx, len(out_edges) - 1)
    ki, ko = i_idx[keep], o_idx[keep]
    flat = np.bincount(ki * len(out_edges) + ko, minlength=len(in_edges) * len(out_edges))
    counts = {
        (int(in_edges[k // len(out_edges)]), int(out_edges[k % len(out_edges)])): int(c)
        for k, c in enumerate(flat) if c
    }
    n_kept = int(keep.sum())
    provenance = dict(workload.provenance)
    provenance["binning"] = {**bins.to_dict(), "overflow": overflow, "dropped": reasons, "clipped": n_clipped}
    return BinnedWorkload(
        name=workload.name, bins=bins, overflow=overflow, counts=counts, n_total=n, n_kept=n_kept,
        n_dropped=n - n_kept, dropped_reasons=reasons, n_clipped=n_clipped,
        real_input_tokens=ins[keep], real_output_tokens=outs[keep],
        binned_input_tokens=in_edges[ki], binned_output_tokens=out_edges[ko], provenance=provenance,
        max_input_tokens=int(ins.max()) if n else 0, max_output_tokens=int(outs.max()) if n else 0,
    )


def bins_from_store(store: Any, model: str | None) -> tuple[Bins, str]:
    """(Bins, where they came from): the bins the store's latest sweep for `model` was planned
    for (bins travel with the cells); else the default power-of-two ladder."""
    stored = store.latest_bins(model) if store is not None and hasattr(store, "latest_bins") else None
    if stored:
        bins = Bins(tuple(stored["input_edges"]), tuple(stored["output_edges"]))
        sweep = f"the sweep {stored['source']}" if stored.get("source") else "a sweep"
        return bins, f"stored with {sweep} of {str(stored['created_at'])[:19]} (override with --input-bins/--output-bins)"
    return Bins(), "the default power-of-two bins (no bins stored with a sweep)"


def describe_bins(bins: Bins, source: str) -> str:
    """One line naming the bins an answer used and where they came from."""
    return (f"bins: input {','.join(map(str, bins.input_edges))}; output {','.join(map(str, bins.output_edges))}"
            f" ({source})")
