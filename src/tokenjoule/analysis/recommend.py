"""Recommend the lowest-energy measured configuration for a binned workload under SLOs.

A configuration is (engine, mode, decoding, GPUs) plus a batch policy. For an offline
configuration the cell of each bin is chosen by analysis.selection (the rule `estimate`,
`savings` and the report use too) among the cells that meet the SLOs: measured before
estimated, the batch size with the least energy for the bin under the rounding of its partly
filled batch (analysis.rounding: the paper's N_bin / B x E_batch(B) by default, like `estimate`;
`ceil` charges it a full batch, `measured` its own cell's energy), newest on a tie. Its total is
the sum over bins.

SLO check (documented in docs/METHOD.md):
- offline cell: TTFT = the cell's `ttft_s` (prefill of the whole batch: every request waits for
  it; queueing before the batch starts is not counted), TPOT = decode_duration_s /
  (output_tokens - 1) (a 1-token output has no TPOT and always passes);
- online cell: the run's p90 TTFT and p90 TPOT (`ttft_ms_p90`, `tpot_ms_p90`); its total is
  energy_per_request_j x the trace's requests, and it counts only when the run replayed this
  trace (`arrival.trace` or `trace` in its spec equals the trace name).

Baseline = hf / eager / greedy on one GPU, batched by the same per-bin rule (under the SLOs
where it can meet them, else without them, and said so). Estimates (method estimate-*) are
left out unless `include_estimates`, and then the result is labelled as an estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tokenjoule.analysis.rounding import DEFAULT_ROUNDING
from tokenjoule.analysis.selection import (
    SELECTION_RULE,
    bin_cost,
    cells_by_bin,
    choose_cell,
    energy_by_batch,
    gpus_of,
    usable_cells,
)
from tokenjoule.errors import TokenjouleError

BASELINE = ("hf", "eager", "greedy", 1)
ONLINE_PERCENTILE = "p90"


class RecommendationError(TokenjouleError):
    """No configuration can be recommended (SLOs unmet or cells missing); exit code 1."""

    exit_code = 1

    def __init__(self, message: str, missing: list[dict] | None = None):
        super().__init__(message)
        self.missing = missing or []


@dataclass(frozen=True)
class Config:
    engine: str
    mode: str
    decoding: str
    gpus: int = 1
    kind: str = "offline"
    online_cell: int | None = None  # the online run that is this configuration

    @property
    def label(self) -> str:
        base = f"{self.engine}/{self.mode} {self.decoding} on {self.gpus} GPU{'s' if self.gpus > 1 else ''}"
        return base + (f" (online run, cell {self.online_cell})" if self.kind == "online" else "")


@dataclass
class BinChoice:
    input_tokens: int
    output_tokens: int
    n_requests: int
    batch_size: int | None
    batches: int
    energy_j: float
    cell_id: int
    ttft_ms: float | None
    tpot_ms: float | None
    flags: list[str] = field(default_factory=list)


@dataclass
class Candidate:
    config: Config
    total_energy_j: float | None = None
    bins: list[BinChoice] = field(default_factory=list)
    missing_bins: list[tuple[int, int]] = field(default_factory=list)
    slo_failed_bins: list[tuple[int, int]] = field(default_factory=list)
    estimate: bool = False
    slo_applied: bool = True

    @property
    def complete(self) -> bool:
        return not self.missing_bins

    @property
    def feasible(self) -> bool:
        return self.complete and not self.slo_failed_bins and self.total_energy_j is not None

    @property
    def cell_ids(self) -> list[int]:
        return sorted({b.cell_id for b in self.bins})

    @property
    def batch_policy(self) -> str:
        if self.config.kind == "online":
            return "continuous batching (online)"
        return ", ".join(f"in{b.input_tokens}/out{b.output_tokens}: b{b.batch_size}" for b in self.bins)


@dataclass
class Recommendation:
    trace: str
    model: str
    n_requests: int
    slo_ttft_ms: float | None
    slo_tpot_ms: float | None
    max_gpus: int | None
    best: Candidate
    runner_up: Candidate | None
    baseline: Candidate | None
    savings_fraction: float | None  # 1 - best / baseline
    baseline_note: str = ""
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def cand(c: Candidate | None) -> dict | None:
            if c is None:
                return None
            d = asdict(c)
            d.update(config_label=c.config.label, batch_policy=c.batch_policy, cell_ids=c.cell_ids,
                     feasible=c.feasible)
            return d

        return {
            "trace": self.trace, "model": self.model, "n_requests": self.n_requests,
            "slo": {"ttft_ms": self.slo_ttft_ms, "tpot_ms": self.slo_tpot_ms,
                    "online_percentile": ONLINE_PERCENTILE},
            "max_gpus": self.max_gpus, "best": cand(self.best), "runner_up": cand(self.runner_up),
            "baseline": cand(self.baseline), "savings_fraction": self.savings_fraction,
            "baseline_note": self.baseline_note, "selection": SELECTION_RULE,
            "candidates": [{"config": c.config.label, "total_energy_j": c.total_energy_j,
                            "feasible": c.feasible, "missing_bins": c.missing_bins,
                            "slo_failed_bins": c.slo_failed_bins} for c in self.candidates],
        }


def offline_slo_ms(metrics: dict, output_tokens: int) -> tuple[float | None, float | None]:
    """(TTFT ms, TPOT ms) of an offline cell as the SLO check takes them (module docstring)."""
    ttft_s = metrics.get("ttft_s", metrics.get("prefill_duration_s"))
    decode_s = metrics.get("decode_duration_s")
    ttft = None if ttft_s is None else 1000.0 * float(ttft_s)
    if output_tokens <= 1:
        tpot = 0.0
    else:
        tpot = None if decode_s is None else 1000.0 * float(decode_s) / (output_tokens - 1)
    return ttft, tpot


def _meets(ttft: float | None, tpot: float | None, slo_ttft: float | None, slo_tpot: float | None) -> bool:
    if slo_ttft is not None and (ttft is None or ttft > slo_ttft):
        return False
    if slo_tpot is not None and (tpot is None or tpot > slo_tpot):
        return False
    return True


def _offline_cells(store, model: str, include_estimates: bool, max_gpus: int | None) -> dict[Config, dict]:
    """The usable cells (analysis.selection: newest row per spec, batch cells with a positive
    energy), grouped by configuration, then by (input, output)."""
    usable, _ = usable_cells(store.find(status="ok", kind="offline", model=model))
    groups: dict[Config, list] = {}
    for rec in usable:
        if rec.is_estimate and not include_estimates:
            continue
        gpus = gpus_of(rec)
        if max_gpus is not None and gpus > max_gpus:
            continue
        cfg = Config(rec.engine, rec.mode, rec.decoding or "greedy", gpus)
        groups.setdefault(cfg, []).append(rec)
    return {cfg: cells_by_bin(recs) for cfg, recs in groups.items()}


def evaluate_offline(cfg: Config, cells: dict, bin_counts: dict[tuple[int, int], int],
                     slo_ttft_ms: float | None, slo_tpot_ms: float | None,
                     rounding: str = DEFAULT_ROUNDING) -> Candidate:
    """Per bin, the cell the selection rule picks among those meeting the SLOs
    (analysis.selection.choose_cell: measured first, least energy under `rounding`, newest)."""
    cand = Candidate(cfg, slo_applied=slo_ttft_ms is not None or slo_tpot_ms is not None)
    total = 0.0
    for (i, o), n in sorted(bin_counts.items()):
        recs = cells.get((i, o), [])
        if not recs:
            cand.missing_bins.append((i, o))
            continue

        def meets(rec, o=o) -> bool:
            return _meets(*offline_slo_ms(rec.metrics, o), slo_ttft_ms, slo_tpot_ms)

        rec = choose_cell(recs, n, accept=meets, rounding=rounding)
        if rec is None:
            cand.slo_failed_bins.append((i, o))
            continue
        ttft, tpot = offline_slo_ms(rec.metrics, o)
        cost = bin_cost(rec, n, rounding, energy_by_batch(recs) if rounding == "measured" else None)
        cand.bins.append(BinChoice(i, o, n, cost.batch_size, cost.batches, cost.energy_j, int(rec.id), ttft, tpot,
                                   rec.flags))
        cand.estimate = cand.estimate or rec.is_estimate
        total += cost.energy_j
    cand.total_energy_j = total if cand.complete and not cand.slo_failed_bins else None
    return cand


def _online_candidates(store, model: str, traces: set[str], n_requests: int, slo_ttft_ms, slo_tpot_ms,
                       include_estimates: bool, max_gpus: int | None) -> list[Candidate]:
    out = []
    for rec in store.find(status="ok", kind="online", model=model):
        s = rec.spec
        arrival = s.get("arrival") if isinstance(s.get("arrival"), dict) else {}
        # serve-bench records the trace as "workload" (its name, or the file it came from)
        if not traces & {str(arrival.get("trace")), str(s.get("trace")), str(s.get("workload"))}:
            continue
        if rec.is_estimate and not include_estimates:
            continue
        gpus = int(s.get("tensor_parallel", 1) or 1)
        if max_gpus is not None and gpus > max_gpus:
            continue
        per_req = rec.metrics.get("energy_per_request_j")
        if per_req is None:
            continue
        ttft = rec.metrics.get(f"ttft_ms_{ONLINE_PERCENTILE}")
        tpot = rec.metrics.get(f"tpot_ms_{ONLINE_PERCENTILE}")
        cfg = Config(s.get("engine", "?"), s.get("mode", "?"), rec.decoding or "greedy", gpus, "online", int(rec.id))
        cand = Candidate(cfg, slo_applied=slo_ttft_ms is not None or slo_tpot_ms is not None,
                         estimate=rec.is_estimate)
        choice = BinChoice(0, 0, n_requests, None, 1, float(per_req) * n_requests, int(rec.id), ttft, tpot,
                           rec.flags)
        cand.bins.append(choice)
        if _meets(ttft, tpot, slo_ttft_ms, slo_tpot_ms):
            cand.total_energy_j = choice.energy_j
        else:
            cand.slo_failed_bins.append((0, 0))
        out.append(cand)
    return out


def recommend(bin_counts: dict[tuple[int, int], int], store, *, model: str, trace: str = "trace",
              slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None,
              max_gpus: int | None = None, include_estimates: bool = False,
              trace_aliases: tuple[str, ...] = (), rounding: str = DEFAULT_ROUNDING) -> Recommendation:
    """The best and runner-up configurations for the binned workload; raises
    RecommendationError (exit 1) with the cells to measure or the SLOs that cannot be met."""
    if not bin_counts:
        raise RecommendationError(f"trace {trace!r} has no requests left after binning")
    n_requests = sum(bin_counts.values())
    groups = _offline_cells(store, model, include_estimates, max_gpus)
    cands = [evaluate_offline(cfg, cells, bin_counts, slo_ttft_ms, slo_tpot_ms, rounding)
             for cfg, cells in groups.items()]
    cands += _online_candidates(store, model, {trace, *trace_aliases}, n_requests, slo_ttft_ms, slo_tpot_ms,
                                include_estimates, max_gpus)
    feasible = sorted((c for c in cands if c.feasible), key=lambda c: c.total_energy_j)
    if not feasible:
        raise _why_not(cands, bin_counts, model, trace, slo_ttft_ms, slo_tpot_ms, max_gpus)
    base_cfg = Config(*BASELINE)
    baseline, note = None, ""
    if base_cfg in groups:
        baseline = evaluate_offline(base_cfg, groups[base_cfg], bin_counts, slo_ttft_ms, slo_tpot_ms, rounding)
        if baseline.complete and not baseline.feasible:
            baseline = evaluate_offline(base_cfg, groups[base_cfg], bin_counts, None, None, rounding)
            note = "the baseline cannot meet the SLOs; it is shown without them"
    if baseline is None or not baseline.feasible:
        missing = baseline.missing_bins if baseline else sorted(bin_counts)
        note = "baseline (hf/eager greedy, 1 GPU) not measured for bins " + ", ".join(
            f"in{i}/out{o}" for i, o in missing)
        baseline = None
    savings = None
    if baseline is not None and baseline.total_energy_j:
        savings = 1.0 - feasible[0].total_energy_j / baseline.total_energy_j
    return Recommendation(trace, model, n_requests, slo_ttft_ms, slo_tpot_ms, max_gpus, feasible[0],
                          feasible[1] if len(feasible) > 1 else None, baseline, savings, note, cands)


def _why_not(cands: list[Candidate], bin_counts, model: str, trace: str, slo_ttft_ms, slo_tpot_ms,
             max_gpus) -> RecommendationError:
    complete = [c for c in cands if c.complete]
    if complete:
        slo = " and ".join(s for s in (f"TTFT <= {slo_ttft_ms:g} ms" if slo_ttft_ms is not None else "",
                                       f"TPOT <= {slo_tpot_ms:g} ms" if slo_tpot_ms is not None else "") if s)
        return RecommendationError(
            f"no measured configuration of {model} meets {slo or 'the SLOs'} for every bin of {trace!r} "
            f"({len(complete)} configuration(s) checked); relax the SLOs or measure smaller batches / more GPUs")
    missing: list[dict] = []
    partial = [c for c in cands if c.bins and c.config.kind == "offline"] or []
    targets = partial or [Candidate(Config(*BASELINE), missing_bins=sorted(bin_counts))]
    for c in targets:
        for i, o in c.missing_bins:
            missing.append({"model": model, "engine": c.config.engine, "mode": c.config.mode,
                            "decoding": c.config.decoding, "tensor_parallel": c.config.gpus,
                            "input_tokens": i, "output_tokens": o, "batch_size": "max"})
    gpus = f" with at most {max_gpus} GPU(s)" if max_gpus else ""
    cells = "; ".join(f"{m['engine']}/{m['mode']} {m['decoding']} tp{m['tensor_parallel']} "
                      f"in{m['input_tokens']} out{m['output_tokens']}" for m in missing[:12])
    more = f" (+{len(missing) - 12} more)" if len(missing) > 12 else ""
    return RecommendationError(
        f"the store cannot answer for {model} on {trace!r}{gpus}: no configuration covers every bin; "
        f"measure: {cells}{more} (as a sweep: tokenjoule workload bins {trace} --model {model} "
        f"--engine {missing[0]['engine'] if missing else 'hf'} --emit-sweep FILE)",
        missing)


def default_model(store) -> str:
    """The model with the most successful offline cells (what `--model` defaults to)."""
    counts: dict[str, int] = {}
    for rec in store.find(status="ok", kind="offline"):
        counts[rec.spec.get("model")] = counts.get(rec.spec.get("model"), 0) + 1
    if not counts:
        raise RecommendationError("the store has no successful offline cells; measure some with "
                                  "`tokenjoule measure` or `tokenjoule sweep` first")
    return max(sorted(counts), key=counts.__getitem__)


def recommend_trace(trace: str, store, model: str | None = None, **kwargs: Any):
    """Load and bin a trace (name, path or task:NAME), then `recommend`; returns
    (Recommendation, BinnedWorkload)."""
    from pathlib import Path

    from tokenjoule.workloads import bin_workload, resolve_workload

    workload = resolve_workload(trace)
    binned = bin_workload(workload)
    aliases = (workload.name, Path(trace).stem, Path(trace).name)
    rec = recommend(binned.counts, store, model=model or default_model(store), trace=trace,
                    trace_aliases=aliases, **kwargs)
    return rec, binned
