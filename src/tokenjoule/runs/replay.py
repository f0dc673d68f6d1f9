"""Direct replay: run a seeded sample of a trace for real and compare it with its binned estimate.

The paper estimates a workload from one measured batch per length bin and never checks the
estimate against the requests themselves. A replay does that check:

1. draw `n` requests of the trace without replacement (seeded), bin them as the estimate does
   (requests beyond the largest bins are dropped from both sides);
   With `within_tables` the sample is drawn only from the trace's requests whose bins every
   named table (engine:mode) has measured: a partly measured table can then be checked on the
   bins it covers, and two setups on the very same requests. The result says so (a conditional
   sample: the comparison holds for those bins, not for the whole trace);
2. the binned estimate of exactly this sample from the store's cells, under each rounding of
   analysis.rounding (`paper` N/B x E_batch, `ceil` whole batches, `measured` remainder batches
   at their own energy); the table must be complete;
3. run the kept requests at their own lengths:
   - hf: grouped by bin, in batches of the bin's table batch size (the last one partial), each
     batch one `generate_requests` call padded as static batching pads (inputs left-padded to
     the longest of the batch, every row generating the longest output of the batch);
   - vllm: all requests in ONE `generate_requests` call with their exact lengths;
   after `warmup` unmeasured batches. Metering: one window per batch (so per-bin energies can
   be compared); a window's energy is the meter's total (no idle subtraction), as in the cells;
4. differences (estimate - measured) / measured per rounding mode; the replay is stored as a
   record of kind "replay" (never read as an offline cell by the estimate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tokenjoule.analysis.rounding import DEFAULT_ROUNDING
from tokenjoule.analysis.rounding import ROUNDINGS as ROUNDING_MODES
from tokenjoule.errors import TokenjouleError
from tokenjoule.workloads.binning import BinnedWorkload, Bins, bin_workload
from tokenjoule.workloads.request import Request, Workload
TARGET_FRACTION = 0.10  # the target: each estimate within 10% of the replay
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ReplayConfig:
    trace: str
    model: str
    engine: str = "hf"
    mode: str = "eager"
    n: int = 1000
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    bins: Bins = field(default_factory=Bins)
    overflow: str = "drop"
    warmup: int = 1
    gpu_name: str | None = None  # use only table cells measured on this GPU
    within_tables: tuple[str, ...] = ()  # engine:mode setups whose measured bins bound the sample pool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bins"] = self.bins.to_dict()
        if self.within_tables:
            d["within_tables"] = list(self.within_tables)
        else:  # a whole-trace replay keeps the spec (and resume key) it had before the option existed
            del d["within_tables"]
        return d

    def record_spec(self) -> dict[str, Any]:
        """The stored spec of this replay (its resume key is `spec_hash` of it)."""
        return {"model": self.model, "engine": self.engine, "mode": self.mode, "decoding": {"strategy": "greedy"},
                "replay": self.to_dict()}

    def hash(self) -> str:
        from tokenjoule.spec import spec_hash

        return spec_hash(self.record_spec())


@dataclass(frozen=True)
class PlannedBatch:
    bin: tuple[int, int] | None  # (input edge, output edge); None for one all-request vllm call
    lengths: tuple[tuple[int, int], ...]
    table_batch_size: int | None

    @property
    def padded_input_tokens(self) -> int:
        return len(self.lengths) * max(a for a, _ in self.lengths)

    @property
    def padded_output_tokens(self) -> int:
        return len(self.lengths) * max(b for _, b in self.lengths)


def draw_sample(workload: Workload, n: int, seed: int = 0) -> Workload:
    """n requests without replacement, in trace order (seeded; arrival times dropped: offline)."""
    import numpy as np

    if n < 1:
        raise TokenjouleError(f"a replay needs at least 1 request, got n={n}")
    if n > len(workload):
        where = " in the bins of the named tables" if workload.provenance.get("within_tables") else ""
        raise TokenjouleError(f"{workload.name} has {len(workload):,} requests{where}; asked for a sample of {n:,}")
    idx = np.sort(np.random.default_rng(seed).choice(len(workload), size=n, replace=False))
    reqs = [Request(workload.requests[i].input_tokens, workload.requests[i].output_tokens) for i in idx]
    prov = dict(workload.provenance, sample={"n": n, "seed": seed, "of": len(workload), "replace": False})
    return Workload(name=workload.name, requests=reqs, provenance=prov)


def covered_bins(store, config: ReplayConfig) -> set[tuple[int, int]]:
    """The (input, output) bins that every table of `config.within_tables` has a usable cell at."""
    from tokenjoule.analysis.estimate import select_cells
    from tokenjoule.analysis.savings import parse_setup

    covered: set[tuple[int, int]] | None = None
    for text in config.within_tables:
        setup = parse_setup(text)
        by_bin, _ = select_cells(store, model=config.model, engine=setup.engine, mode=setup.mode,
                                 gpu_name=config.gpu_name)
        bins = {key for key, cells in by_bin.items() if cells}
        covered = bins if covered is None else covered & bins
    return covered or set()


def requests_in_bins(workload: Workload, bins: Bins, overflow: str, keep: set[tuple[int, int]]) -> list[Request]:
    """The workload's requests (trace order) whose (input, output) bin is one of `keep`."""
    binned = bin_workload(workload, bins, overflow)
    return [Request(int(a), int(b)) for a, b, i, o in zip(binned.real_input_tokens, binned.real_output_tokens,
                                                          binned.binned_input_tokens, binned.binned_output_tokens)
            if (int(i), int(o)) in keep]


def redraw_sample(config: dict[str, Any], within: dict[str, Any] | None = None) -> BinnedWorkload:
    """The binned sample of a stored replay, drawn again from its stored config (and pool bins):
    the sample is seeded, so this is exactly the requests that were run."""
    from tokenjoule.workloads.traces import resolve_workload

    b = config.get("bins") or {}
    bins = Bins(b["input_edges"], b["output_edges"]) if b else Bins()
    overflow = config.get("overflow", "drop")
    workload = resolve_workload(config["trace"])
    if within:
        keep = {(int(i), int(o)) for i, o in within["bins"]}
        workload = Workload(workload.name, requests_in_bins(workload, bins, overflow, keep), workload.provenance)
    return bin_workload(draw_sample(workload, int(config["n"]), int(config["seed"])), bins, overflow)


SAMPLE_KEYS = ("trace", "model", "n", "seed", "bins", "overflow", "gpu_name", "within_tables")


def frozen_pool_bins(store, config: ReplayConfig) -> set[tuple[int, int]] | None:
    """The pool bins of the first stored replay (finished or partial, any setup) of the same
    sample: the tables grow between sessions, and without this a later replay of the other setup
    would draw from more bins, i.e. other requests. None when no such replay exists."""
    mine = config.to_dict()
    first = None
    for rec in store.find(status=None, kind="replay"):
        other = rec.spec.get("replay") or {}
        if all(other.get(k) == mine.get(k) for k in SAMPLE_KEYS):
            within = (rec.measurement or {}).get("within_tables")
            if within and (first is None or (rec.id or 0) < (first[0] or 0)):
                first = (rec.id, within)
    if first is None:
        return None
    return {(int(i), int(o)) for i, o in first[1]["bins"]}


def sample_pool(workload: Workload, config: ReplayConfig, store) -> Workload:
    """The requests a sample is drawn from: the whole trace, or with `within_tables` those whose
    bins every named table covers (in trace order; provenance says which bins and what share)."""
    if not config.within_tables:
        return workload
    frozen = frozen_pool_bins(store, config)
    keep = frozen if frozen is not None else covered_bins(store, config)
    pool = requests_in_bins(workload, config.bins, config.overflow, keep)
    tables = ", ".join(config.within_tables)
    if not pool:
        raise TokenjouleError(f"no request of {workload.name} falls in a bin measured by every table of "
                              f"{tables} ({config.model}); measure a bin of the trace first or drop --within-table")
    within = {"tables": list(config.within_tables), "bins": [list(b) for b in sorted(keep)], "n_pool": len(pool),
              "n_trace": len(workload), "share_of_trace": len(pool) / len(workload),
              "pool_from": "an earlier replay of this sample" if frozen is not None else "the tables' measured bins"}
    return Workload(name=workload.name, requests=pool, provenance=dict(workload.provenance, within_tables=within))


def pool_note(sample: Workload) -> str | None:
    """The label of a conditional sample (None for a sample of the whole trace)."""
    within = sample.provenance.get("within_tables")
    if not within:
        return None
    return (f"conditional sample: drawn from the {within['n_pool']:,} requests ({100 * within['share_of_trace']:.1f}% "
            f"of {within['n_trace']:,}) in the {len(within['bins'])} bins measured by {', '.join(within['tables'])}"
            + (" (the bins of an earlier replay of this sample, so every setup runs the same requests)"
               if within.get("pool_from") == "an earlier replay of this sample" else "")
            + "; the comparison holds for those bins, not for the whole trace")


def plan_batches(binned: BinnedWorkload, batch_sizes: dict[tuple[int, int], int], engine: str) -> list[PlannedBatch]:
    """The batches a replay runs: hf by bin at the table's batch sizes, vllm as one call."""
    pairs = list(zip((int(x) for x in binned.real_input_tokens), (int(x) for x in binned.real_output_tokens)))
    if engine != "hf":
        return [PlannedBatch(None, tuple(pairs), None)] if pairs else []
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for pair, i, o in zip(pairs, binned.binned_input_tokens, binned.binned_output_tokens):
        groups.setdefault((int(i), int(o)), []).append(pair)
    plan: list[PlannedBatch] = []
    for key in sorted(groups):
        b = batch_sizes[key]
        reqs = groups[key]
        plan.extend(PlannedBatch(key, tuple(reqs[k:k + b]), b) for k in range(0, len(reqs), b))
    return plan


def estimates_by_rounding(binned: BinnedWorkload, store, config: ReplayConfig) -> dict[str, Any]:
    """The binned estimate of the sample under each rounding (each picks its own cell per bin)."""
    from tokenjoule.analysis.estimate import binned_estimate

    return {r: binned_estimate(binned, store, model=config.model, engine=config.engine, mode=config.mode,
                               gpu_name=config.gpu_name, rounding=r) for r in ROUNDING_MODES}


def estimate_totals(estimates: dict[str, Any]) -> dict[str, float | None]:
    """The binned total under each rounding."""
    return {r: est.total_energy_j for r, est in estimates.items()}


def fit_corrected_j(estimate, plan: list[PlannedBatch], store, config: ReplayConfig) -> tuple[float | None, str]:
    """A diagnostic, not a rounding mode: each bin's measured E_batch rescaled by the energy
    model of analysis.fit from the bin's edges to what the replay actually runs:

        hf:   per planned batch  E_batch x Ê(longest I, longest O, rows) / Ê(I*, O*, B)
        vllm: per bin            N/B x E_batch x Ê(mean I, mean O, B) / Ê(I*, O*, B)
                                 (analysis.lengths, what `estimate --lengths mean` charges)

    If this agrees with the replay while `paper`/`ceil` do not, the gap comes from the lengths
    (real below the edges, padding) and partial batches, not from the per-bin measurements.
    Returns (None, reason) when the fit is refused (fewer than 6 distinct cells)."""
    from tokenjoule.analysis.fit import fit_cells_from_store, fit_energy_model

    try:
        cells, gpu = fit_cells_from_store(store, model=config.model, engine=config.engine, mode=config.mode,
                                          gpu_name=config.gpu_name)
        fit = fit_energy_model(cells, gpu_name=gpu, what=f"{config.model} {config.engine}/{config.mode}")
    except TokenjouleError as exc:
        return None, str(exc)
    rows = {(r.input_tokens, r.output_tokens): r for r in estimate.rows}

    def scaled(row, i: float, o: float, b: float) -> float | None:
        edge = fit.predict_energy_j(row.input_tokens, row.output_tokens, row.batch_size)
        return None if edge <= 0 else row.energy_per_batch_j * fit.predict_energy_j(i, o, b) / edge

    total = 0.0
    if config.engine == "hf":
        for batch in plan:
            assert batch.bin is not None  # hf batches are planned per bin
            value = scaled(rows[batch.bin], max(a for a, _ in batch.lengths), max(b for _, b in batch.lengths),
                           len(batch.lengths))
            if value is None:
                return None, f"the fit predicts no energy at bin {batch.bin}"
            total += value
    else:  # one continuous batch at the requests' own lengths: the bins at their mean lengths
        from tokenjoule.analysis.lengths import at_mean_lengths

        try:  # a diagnostic must never fail a finished replay
            total = at_mean_lengths(estimate, store, gpu_name=config.gpu_name).mean_energy_j
        except TokenjouleError as exc:
            return None, str(exc)
    return total, (f"fit {fit.n_cells} cells, LOO error median {100 * fit.loo_median_rel_error:.1f}%, "
                   f"max {100 * fit.loo_max_rel_error:.1f}%")


@dataclass
class ReplayResult:
    config: ReplayConfig
    n_sampled: int
    n_kept: int
    n_dropped: int
    batches: list[dict[str, Any]]
    measured_energy_j: float | None
    measured_duration_s: float
    estimates_j: dict[str, float | None]
    per_bin: list[dict[str, Any]]
    tokens: dict[str, int]
    method: str | None
    flags: list[str]
    notes: list[str] = field(default_factory=list)
    record_id: int | None = None
    fit_corrected_j: float | None = None  # diagnostic (see fit_corrected_j), not an estimate mode
    fit_note: str = ""
    within_tables: dict[str, Any] | None = None  # the pool of a conditional sample (sample_pool)

    @property
    def differences(self) -> dict[str, float | None]:
        """(estimate - measured) / measured per rounding mode."""
        m = self.measured_energy_j
        return {k: None if (v is None or not m) else (v - m) / m for k, v in self.estimates_j.items()}

    @property
    def fit_corrected_difference(self) -> float | None:
        m = self.measured_energy_j
        return None if self.fit_corrected_j is None or not m else (self.fit_corrected_j - m) / m

    @property
    def partial_batches(self) -> int:
        """hf batches with fewer requests than the table's batch size (the last of a bin)."""
        return sum(1 for b in self.batches if b["table_batch_size"] and b["requests"] < b["table_batch_size"])

    @property
    def within_target(self) -> dict[str, bool | None]:
        return {k: None if d is None else abs(d) <= TARGET_FRACTION for k, d in self.differences.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "replay", "config": self.config.to_dict(), "n_sampled": self.n_sampled, "n_kept": self.n_kept,
            "n_dropped": self.n_dropped, "measured_energy_j": self.measured_energy_j,
            "measured_duration_s": self.measured_duration_s, "estimates_j": self.estimates_j,
            "differences": self.differences, "target_fraction": TARGET_FRACTION, "within_target": self.within_target,
            "partial_batches": self.partial_batches, "within_tables": self.within_tables,
            "fit_corrected_j": self.fit_corrected_j, "fit_corrected_difference": self.fit_corrected_difference,
            "fit_note": self.fit_note,
            "per_bin": self.per_bin, "tokens": self.tokens, "method": self.method, "flags": self.flags,
            "windows": "one meter window per batch; energy = meter total (no idle subtraction), as in the cells",
            "batches": self.batches, "notes": self.notes, "record_id": self.record_id,
        }


def prepare(config: ReplayConfig, store) -> tuple[Workload, BinnedWorkload, Any, list[PlannedBatch]]:
    """Sample, bin, estimate and plan; raises (listing the missing cells) when the table is incomplete.
    The batch sizes of the plan are those the default rounding's estimate chose per bin."""
    from tokenjoule.analysis.estimate import binned_estimate
    from tokenjoule.workloads.traces import resolve_workload

    sample = draw_sample(sample_pool(resolve_workload(config.trace), config, store), config.n, config.seed)
    binned = bin_workload(sample, config.bins, config.overflow)
    if binned.n_kept == 0:
        raise TokenjouleError(f"no request of the sample fits the bins (dropped {binned.n_dropped})")
    est = binned_estimate(binned, store, model=config.model, engine=config.engine, mode=config.mode,
                          gpu_name=config.gpu_name, rounding=DEFAULT_ROUNDING)
    if not est.complete:
        cells = ", ".join(f"in{m.input_tokens}/out{m.output_tokens}" for m in est.missing[:12])
        cells += f" (+{len(est.missing) - 12} more)" if len(est.missing) > 12 else ""
        raise TokenjouleError(f"the bin table of {config.model} {config.engine}/{config.mode} lacks {len(est.missing)} "
                              f"bin(s) of this sample: {cells}; measure them first (tokenjoule estimate ... "
                              "--emit-sweep FILE, then tokenjoule sweep FILE)")
    sizes = {(r.input_tokens, r.output_tokens): r.batch_size for r in est.rows}
    return sample, binned, est, plan_batches(binned, sizes, config.engine)


def run_replay(config: ReplayConfig, store, *, meter=None, meter_kind: str = "auto", engine=None,
               on_progress: ProgressFn | None = None, save: bool = True) -> ReplayResult:
    """Prepare, run every planned batch under the meter, compare, and store a `replay` record."""
    from tokenjoule.engines.base import CAP_GENERATE_REQUESTS, get_engine, supports
    from tokenjoule.spec import RunSpec

    sample, binned, est, plan = prepare(config, store)
    spec = RunSpec(model=config.model, engine=config.engine, mode=config.mode, device=config.device,
                   dtype=config.dtype, seed=config.seed, batch_size=max(len(p.lengths) for p in plan),
                   input_tokens=max(int(x) for x in binned.real_input_tokens),
                   output_tokens=max(int(x) for x in binned.real_output_tokens))
    own_meter = meter is None
    engine = engine or get_engine(config.engine)
    if not supports(engine, CAP_GENERATE_REQUESTS):
        raise TokenjouleError(f"engine {config.engine} cannot run requests of their own lengths "
                              "(no generate_requests); valid for validate: hf, vllm")
    try:
        engine.load(spec)
        if meter is None:
            from tokenjoule.energy import make_meter

            meter = make_meter(meter_kind, devices=engine.device_indices())
        batches = resumed_batches(store, config, plan) if save else []
        n_resumed = len(batches)
        methods = {b["method"] for b in batches if b.get("method")}
        flags = {f for b in batches for f in b.get("flags", [])}
        warm = plan[0].lengths[: max(1, min(len(plan[0].lengths), 8))]
        for k in range(config.warmup if len(batches) < len(plan) else 0):  # warm-up by name: never in a window
            engine.generate_requests(warm, seed=config.seed + 1 + k)
            if on_progress:
                on_progress("warmup", k + 1, config.warmup)
        for k, batch in enumerate(plan):
            if k < len(batches):
                continue  # measured by an earlier, interrupted run of this replay
            with meter.window(sync=engine.synchronize) as window:
                gen = engine.generate_requests(batch.lengths, seed=config.seed)
            m = window.result
            methods.add(m.method)
            flags.update(m.flags)
            batches.append({"bin": list(batch.bin) if batch.bin else None, "requests": len(batch.lengths),
                            "table_batch_size": batch.table_batch_size, "energy_j": m.energy_j,
                            "duration_s": m.duration_s, "useful_input_tokens": sum(a for a, _ in batch.lengths),
                            "useful_output_tokens": sum(b for _, b in batch.lengths),
                            "computed_input_tokens": gen.extra.get("computed_input_tokens", sum(gen.input_tokens)),
                            "computed_output_tokens": gen.extra.get("computed_output_tokens", sum(gen.output_tokens)),
                            "method": m.method, "flags": sorted(m.flags)})
            if save and k + 1 < len(plan):  # a killed replay resumes after its last finished batch
                store.add(partial_record(config, batches, len(plan)))
            if on_progress:
                on_progress("replay", k + 1, len(plan))
        from tokenjoule.records import base_provenance

        provenance = {**base_provenance(), **_safe(meter.provenance), **_safe(engine.provenance)}
    finally:
        engine.close()
        if own_meter and meter is not None:
            meter.close()
    result = _result(config, sample, binned, est, estimates_by_rounding(binned, store, config), batches, methods,
                     flags)
    if n_resumed:
        result.notes.append(f"resumed: {n_resumed} of {len(plan)} batches were measured by an earlier, interrupted "
                            "run of this replay (same sample and plan)")
    result.fit_corrected_j, result.fit_note = fit_corrected_j(est, plan, store, config)
    if save:
        result.record_id = store.add(replay_record(result, provenance))
    return result


def partial_record(config: ReplayConfig, batches: list[dict[str, Any]], planned: int):
    """The progress of an unfinished replay: kind replay, status partial (never read as a result)."""
    from tokenjoule.records import CellRecord, base_provenance, utc_now

    spec = config.record_spec()
    return CellRecord(spec=spec, spec_hash=config.hash(), kind="replay", status="partial",
                      metrics={"batches_done": len(batches), "batches_planned": planned},
                      measurement={"batches": batches}, provenance={**base_provenance(), "time_utc": utc_now()})


def resumed_batches(store, config: ReplayConfig, plan: list[PlannedBatch]) -> list[dict[str, Any]]:
    """The batches an interrupted run of this replay finished, when they are the plan's first ones
    (same bins and request counts); [] otherwise (then the replay starts over)."""
    latest = store.latest(config.hash(), status="partial")
    finished = store.latest(config.hash())
    # progress left by a run that later finished is not resumable (validate --again replays anew)
    if latest is None or (finished is not None and (finished.id or 0) > (latest.id or 0)):
        return []
    done = list((latest.measurement or {}).get("batches") or [])
    for b, planned in zip(done, plan):
        if b.get("requests") != len(planned.lengths) or b.get("bin") != (list(planned.bin) if planned.bin else None):
            return []
    return done[: len(plan)]


def _safe(fn) -> dict[str, Any]:
    try:
        return dict(fn())
    except Exception:  # noqa: BLE001 - provenance must never fail a finished replay
        return {}


def _result(config, sample, binned, est, by_rounding, batches, methods, flags) -> ReplayResult:
    energies = [b["energy_j"] for b in batches]
    measured = None if any(e is None for e in energies) else float(sum(energies))
    notes = []
    if measured is None:
        notes.append("a window had no energy reading; no measured total (see the meter's reasons)")
    per_bin = []
    if config.engine == "hf":
        rows_by = {k: {(x.input_tokens, x.output_tokens): x for x in e.rows} for k, e in by_rounding.items()}
        for r in est.rows:
            mine = [b for b in batches if b["bin"] == [r.input_tokens, r.output_tokens]]
            e = None if any(b["energy_j"] is None for b in mine) else sum(b["energy_j"] for b in mine)
            per_bin.append({"bin": [r.input_tokens, r.output_tokens], "requests": r.n_requests,
                            "batch_size": r.batch_size, "batches": len(mine), "measured_energy_j": e,
                            **{f"estimate_{k}_j": rows_by[k][(r.input_tokens, r.output_tokens)].energy_j
                               for k in rows_by}})
    tokens = {k: int(sum(b[k] for b in batches)) for k in
              ("useful_input_tokens", "useful_output_tokens", "computed_input_tokens", "computed_output_tokens")}
    from tokenjoule.energy.measurement import is_estimate

    method = ", ".join(sorted(str(m) for m in methods)) or None
    if any(is_estimate(m, sorted(flags)) for m in methods):
        notes.append("the energies are ESTIMATES (no energy sensor), not measurements")
    return ReplayResult(
        config=config, n_sampled=len(sample), n_kept=binned.n_kept, n_dropped=binned.n_dropped, batches=batches,
        measured_energy_j=measured, measured_duration_s=float(sum(b["duration_s"] for b in batches)),
        estimates_j=estimate_totals(by_rounding), per_bin=per_bin, tokens=tokens, method=method, flags=sorted(flags),
        notes=[n for n in (pool_note(sample),) if n] + notes + list(est.notes),
        within_tables=sample.provenance.get("within_tables"),
    )


def replay_record(result: ReplayResult, provenance: dict[str, Any]):
    """The stored form: kind "replay"; spec = the replay config (no cell length columns)."""
    from tokenjoule.records import CellRecord, utc_now

    cfg = result.config
    metrics = {"energy_j": result.measured_energy_j, "duration_s": result.measured_duration_s,
               "method": result.method, "flags": result.flags,
               **{f"estimate_{k}_j": v for k, v in result.estimates_j.items()},
               **{f"difference_{k}": v for k, v in result.differences.items()},
               "fit_corrected_j": result.fit_corrected_j,
               "n_kept": result.n_kept, "n_dropped": result.n_dropped, **result.tokens}
    if result.n_kept and result.measured_energy_j is not None:
        metrics["energy_per_request_j"] = result.measured_energy_j / result.n_kept
    return CellRecord.replay(cfg.record_spec(), metrics,
                             {"method": result.method, "batches": result.batches, "per_bin": result.per_bin,
                              "within_tables": result.within_tables, "notes": result.notes,
                              "fit_note": result.fit_note},
                             {**provenance, "time_utc": utc_now()})


def expected_batches(binned: BinnedWorkload, batch_sizes: dict[tuple[int, int], int]) -> int:
    """sum over bins of ceil(N_b / B_b): the hf replay runs exactly this many batches."""
    return sum(math.ceil(n / batch_sizes[key]) for key, n in binned.counts.items())
