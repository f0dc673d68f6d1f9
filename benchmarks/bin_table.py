"""Measure the paper's bin table fast, and check that fast is faithful.

For each table (default: `hf eager` and `vllm graphs`), every occupied bin of the Azure 2023
conversation + code traces (their union, default bins) for one model on one GPU, with the fast
protocol: ONE engine load for the whole table, the largest batch of each bin predicted by the
memory model and confirmed by one probe (runs.max_batch), adaptive windows (runs.windows).
`--faithfulness N` (or `--faithfulness-bins IxO,...`) re-measures N of those bins (or the named ones),
in the same load, with the old protocol (full doubling + bisection search, 3 warm-ups, 3 repeats)
and reports their agreement: energy per request and predicted vs searched largest batch. `--remainders` also measures each trace's
partly filled batch (batch = N mod B) for `estimate --rounding measured`.

Shape. Each table is a `BinTablePlan` run by the one cell loop (runs.runner.Runner): the
runner owns the idle baseline, the load, measuring and storing; the plan owns the bin order,
the predicted batch, the faithfulness re-measurements, the remainders and the budget.

Order. Bins run most requested first (a budget-limited session has the bins that weigh most),
and a faithfulness re-measurement follows its bin directly: the engine never returns to a shape
it left, so a mode that captures per shape captures each once (vLLM captures at load).

    python benchmarks/bin_table.py --out $OUT --faithfulness 5 --budget-minutes 55
    python benchmarks/bin_table.py --tables hf-eager --device cpu --model tiny --meter estimate --limit-bins 3
    python benchmarks/bin_table.py --dry-run --db benchmarks/results/bin_table_h200/bin_table.db --budget-minutes 8

`--dry-run` measures nothing: from the store of earlier calls it lists, per table, the bins left,
the batch each would run at (vLLM: the KV-cache capacity its stored cells recorded; hf: a memory
model fitted to the stored probes' peaks) and their predicted minutes (runs.sweep_estimate), and
how many fit in the budget: what the next call will cover.

Outputs in --out: bin_table.db (the store; pass it back with --db to resume), bin_table_rows.csv
(one row per measured bin and protocol), bin_table_summary.json (per table: GPU-minutes, probes
per bin, windows per bin, per-bin CV; faithfulness; GPU, date, command).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TRACES = ("azure-conv-2023", "azure-code-2023")
TABLES = {"hf-eager": ("hf", "eager"), "vllm-graphs": ("vllm", "graphs")}
FULL_WARMUP, FULL_REPEATS = 3, 3  # the old protocol the faithfulness check compares against
# A dry run's guess of the full search's probes on hf (doubling to the limit, then bisection);
# the real count is stored with each searched bin.
SEARCH_PROBES_GUESS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated: {', '.join(TABLES)}")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT)")
    p.add_argument("--db", default=None, help="results database (default OUT/bin_table.db); resumes from it")
    p.add_argument("--faithfulness", type=int, default=0, metavar="N",
                   help="re-measure N bins per table with the old protocol")
    p.add_argument("--faithfulness-bins", default=None, metavar="IxO,...",
                   help="re-measure these bins (e.g. 512x128,2048x16) with the old protocol instead of N spread ones")
    p.add_argument("--remainders", action="store_true", help="also measure batch = N mod B per trace")
    p.add_argument("--budget-minutes", type=float, default=None, help="stop before a bin predicted past this")
    p.add_argument("--limit-bins", type=int, default=None, help="only the N most requested bins (a quick check)")
    p.add_argument("--coverage", type=float, default=None, metavar="SHARE",
                   help="only the most requested bins that together hold SHARE (0-1] of the requests; "
                        "`estimate --predict-missing` then predicts the rest, labelled")
    p.add_argument("--meter", default="auto", help="auto | nvml | estimate | simulated")
    p.add_argument("--device", default="auto", help="device of every cell (cpu for a dry check)")
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--max-batch-cap", type=int, default=1024)
    p.add_argument("--min-window-s", type=float, default=2.0)
    p.add_argument("--dry-run", action="store_true",
                   help="measure nothing: per table, the bins left in --db, their predicted batch and minutes, "
                        "and how many fit in --budget-minutes")
    p.add_argument("--gpu-name", default=None, help="with --dry-run: the GPU to predict for (default: the store's)")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Bin:
    input_tokens: int
    output_tokens: int
    n_requests: int
    per_trace: dict = field(default_factory=dict)  # trace -> requests (for remainder batches)


@dataclass
class Row:
    table: str
    protocol: str  # adaptive (fast) | full (faithfulness) | remainder
    input_tokens: int
    output_tokens: int
    n_requests: int
    batch_size: int | None
    max_batch_predicted: int | None = None
    max_batch_probes: int | None = None
    max_batch_method: str | None = None
    windows: int | None = None
    stop_reason: str | None = None
    energy_j: float | None = None
    energy_cv: float | None = None
    energy_per_request_j: float | None = None
    wall_s: float | None = None
    cell_id: int | None = None
    status: str = "ok"
    error: str | None = None
    resumed: bool = False  # the store already held this cell: measured by an earlier call


def table_bins(traces: tuple[str, ...] = TRACES) -> list[Bin]:
    """Occupied bins of the traces' union, most requested first, with per-trace counts."""
    from tokenjoule.workloads import bin_workload, load_trace

    per: dict[tuple[int, int], dict[str, int]] = {}
    for name in traces:
        for key, n in bin_workload(load_trace(name)).counts.items():
            per.setdefault(key, {})[name] = n
    bins = [Bin(i, o, sum(c.values()), c) for (i, o), c in per.items()]
    return sorted(bins, key=lambda b: (-b.n_requests, b.input_tokens, b.output_tokens))


def bins_covering(bins: list[Bin], share: float) -> list[Bin]:
    """The first bins (most requested first) that together hold at least `share` of the requests."""
    if not 0 < share <= 1:
        raise SystemExit(f"error: --coverage must lie in (0, 1], got {share}")
    total, kept, cum = sum(b.n_requests for b in bins), [], 0
    for b in bins:
        if total and cum >= share * total:
            break
        kept.append(b)
        cum += b.n_requests
    return kept


def faithfulness_picks(n_bins: int, n: int) -> list[int]:
    """Indices of n bins spread evenly over the (most-requested-first) order, first included."""
    if n <= 0 or n_bins == 0:
        return []
    n = min(n, n_bins)
    return sorted({round(k * (n_bins - 1) / max(n - 1, 1)) for k in range(n)})


def named_picks(bins: list[Bin], text: str) -> list[int]:
    """Indices of the bins named as `IxO,IxO,...`; a name that is no bin of the table is an error."""
    index = {(b.input_tokens, b.output_tokens): k for k, b in enumerate(bins)}
    picks = []
    for part in (t.strip() for t in text.split(",") if t.strip()):
        try:
            i, o = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise SystemExit(f"error: --faithfulness-bins: {part!r} is not INPUTxOUTPUT (e.g. 512x128)") from None
        if (i, o) not in index:
            raise SystemExit(f"error: --faithfulness-bins: {i}x{o} is not an occupied bin of the table")
        picks.append(index[(i, o)])
    return picks


# -- the arithmetic of the report (tested on CPU with a simulated engine) -------------------------
def rel_diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else (a - b) / b


def summarize(rows: list[Row], gpu_seconds: dict[str, float], gpus: dict[str, int]) -> dict[str, Any]:
    """Per table: GPU-minutes, bins, probes/bin, windows/bin, per-bin CV; faithfulness pairs."""
    out: dict[str, Any] = {}
    for table in sorted({r.table for r in rows} | set(gpu_seconds)):
        fast = [r for r in rows if r.table == table and r.protocol == "adaptive" and r.status == "ok"]
        full = {(r.input_tokens, r.output_tokens): r for r in rows
                if r.table == table and r.protocol == "full" and r.status == "ok"}
        cvs = [r.energy_cv for r in fast if r.energy_cv is not None]
        pairs = []
        for r in fast:
            ref = full.get((r.input_tokens, r.output_tokens))
            if ref is None:
                continue
            pairs.append({"input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                          "energy_per_request_fast_j": r.energy_per_request_j,
                          "energy_per_request_full_j": ref.energy_per_request_j,
                          "energy_per_request_rel_diff": rel_diff(r.energy_per_request_j, ref.energy_per_request_j),
                          "batch_predicted": r.batch_size, "batch_searched": ref.batch_size,
                          "batch_rel_diff": rel_diff(r.batch_size, ref.batch_size),
                          "searched_probes": ref.max_batch_probes})
        worst_e = max((abs(p["energy_per_request_rel_diff"]) for p in pairs
                       if p["energy_per_request_rel_diff"] is not None), default=None)
        worst_b = max((abs(p["batch_rel_diff"]) for p in pairs if p["batch_rel_diff"] is not None), default=None)
        out[table] = {
            "gpu_minutes": gpu_seconds.get(table, 0.0) * max(gpus.get(table, 1), 1) / 60.0,
            "bins_measured": len(fast),  # this call's and resumed ones: the table so far
            "bins_measured_this_call": sum(1 for r in fast if not r.resumed),
            "probes_per_bin": statistics.fmean([r.max_batch_probes or 0 for r in fast]) if fast else None,
            "windows_per_bin": statistics.fmean([r.windows or 0 for r in fast]) if fast else None,
            "cv_median": statistics.median(cvs) if cvs else None,
            "cv_max": max(cvs) if cvs else None,
            "stop_reasons": {k: sum(1 for r in fast if r.stop_reason == k) for k in sorted({r.stop_reason for r in fast if r.stop_reason})},
            "faithfulness": pairs,
            "faithfulness_energy_max_abs_rel_diff": worst_e,
            "faithfulness_batch_max_abs_rel_diff": worst_b,
        }
    return out


def row_from_record(table: str, protocol: str, b: Bin, rec: Any) -> Row:
    """The output row of one stored cell of bin `b` (also used to rebuild a call's rows file)."""
    m = rec.metrics
    return Row(table, protocol, b.input_tokens, b.output_tokens, b.n_requests, rec.batch_size,
               m.get("max_batch_predicted"), m.get("max_batch_probes"), m.get("max_batch_method"),
               m.get("windows"), m.get("stop_reason"), m.get("energy_j"), m.get("energy_cv"),
               m.get("energy_per_request_j"), m.get("sweep_wall_s"), rec.id, rec.status, rec.error)


def write_rows(rows: list[Row], path: Path) -> None:
    cols = list(asdict(rows[0]).keys()) if rows else [f for f in Row.__dataclass_fields__]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


# -- measuring: a plan for the one runner (runs.runner.Runner) -----------------------------------
@dataclass(eq=False)
class _BinItem:
    bin: Bin
    spec: Any  # the adaptive spec at batch 1: loads the engine; its batch is resolved per bin
    index: int
    steps: Any = None
    pending: dict = field(default_factory=dict)  # what the next record is: protocol, metrics to add

    @property
    def key(self) -> str:
        from tokenjoule.spec import unresolved_hash

        return unresolved_hash(self.spec)


class BinTablePlan:
    """One table: one engine load, every bin fast, the picked bins again with the old protocol
    (same load, same shape), optionally each trace's remainder batch."""

    claims = False

    def __init__(self, table: str, bins: list[Bin], args: argparse.Namespace, store: Any,
                 clock: Callable[[], float], deadline_s: float | None,
                 on_row: Callable[[], None] | None = None):
        from tokenjoule.runs.max_batch import MaxBatchResolver

        self.table, self.bins, self.args, self.store = table, bins, args, store
        self.engine_name, self.mode = TABLES[table]
        self.clock, self.deadline_s = clock, deadline_s
        self.resolver = MaxBatchResolver(store, args.max_batch_cap)
        self.picks = (set(named_picks(bins, args.faithfulness_bins)) if args.faithfulness_bins
                      else set(faithfulness_picks(len(bins), args.faithfulness)))
        self.rows: list[Row] = []
        self.gpus = 1
        self.stopped_by_budget = False
        self.on_row = on_row or (lambda: None)  # called after every new row: outputs survive a kill
        self.estimator: Any = None  # runs.sweep_estimate.CellTimeEstimator, made at the first bin

    def spec(self, b: Bin, protocol: str, batch_size: int = 1):
        from tokenjoule.spec import RunSpec

        extra = ({"warmup": FULL_WARMUP, "repeats": FULL_REPEATS} if protocol == "full"
                 else {"protocol": "adaptive"})
        return RunSpec(model=self.args.model, engine=self.engine_name, mode=self.mode, device=self.args.device,
                       batch_size=batch_size, input_tokens=b.input_tokens, output_tokens=b.output_tokens,
                       split_prefill=False, min_window_s=self.args.min_window_s, **extra)

    # -- the plan protocol ------------------------------------------------------------------------
    def groups(self) -> list[list[_BinItem]]:
        return [[_BinItem(b, self.spec(b, "adaptive"), k) for k, b in enumerate(self.bins)]]

    def admit(self, group, session) -> list[_BinItem]:
        return list(group)

    def should_stop(self, item: _BinItem, session, first: bool) -> bool:
        return self.stopped_by_budget

    def next_step(self, item: _BinItem, session):
        if item.steps is None:
            self.gpus = max(1, len(session.engine_devices))
            if self.estimator is None:
                from tokenjoule.runs.sweep_estimate import CellTimeEstimator

                self.estimator = CellTimeEstimator(self.store, session.gpu_name, max_batch_method="predict",
                                                   max_batch_cap=self.args.max_batch_cap)
            item.steps = self._steps(item, session)
        return next(item.steps, None)

    def told(self, item: _BinItem, record: Any) -> Any:
        if record.is_ok:
            record.metrics.update({k: v for k, v in item.pending.get("metrics", {}).items() if v is not None})
            record.metrics["sweep_wall_s"] = self.clock() - item.pending["t0"]
            if item.pending.get("predicted_s") and self.estimator is not None:
                # later predictions learn this machine's speed (probes included)
                self.estimator.observe(item.pending["predicted_s"], record.metrics["sweep_wall_s"])
        return record

    def recorded(self, item: _BinItem, record: Any) -> None:
        b = item.bin if item.pending.get("protocol") != "remainder" else item.pending["bin"]
        self.rows.append(self._row(item.pending.get("protocol", "adaptive"), b, record))
        self.on_row()

    def load_failed(self, item: _BinItem, exc: BaseException) -> Any:
        from tokenjoule.records import CellRecord

        return CellRecord.failed(item.spec, exc, key=item.key, prefix="engine load failed: ")

    def not_claimed(self, item: _BinItem) -> None:  # pragma: no cover - claims is False
        pass

    # -- one bin ----------------------------------------------------------------------------------
    def predicted_s(self, spec, probes: int = 0) -> float:
        """Wall seconds of measuring `spec` after `probes` full-length probes, scaled by what the
        bins measured so far took against their predictions."""
        from tokenjoule.runs.sweep_estimate import guess_batch_s

        est = self.estimator
        seconds = est.predict(spec).seconds
        if probes:  # a probe is one forward pass over batch x (input + output) tokens
            model, length = est.time_model(spec), spec.input_tokens + spec.output_tokens
            probe_s = (model.batch_s(spec.batch_size, length, 1) if model is not None else
                       guess_batch_s(spec.model_copy(update={"input_tokens": length, "output_tokens": 1})))
            seconds += probes * probe_s
        return est.calibrated(seconds)

    def over_budget(self, spec, probes: int = 0, pending: dict | None = None) -> bool:
        """Never start a measurement (or its probes) predicted to end past the budget; a stored
        cell costs nothing."""
        if self.deadline_s is None or self.store.has_success(spec.spec_hash()):
            return False
        predicted = self.predicted_s(spec, probes)
        if pending is not None:
            pending["predicted_s"] = predicted
        self.stopped_by_budget = self.clock() + predicted > self.deadline_s
        return self.stopped_by_budget

    def _measure(self, item: _BinItem, spec, protocol: str, metrics: dict, t0: float, b: Bin | None = None):
        """A step: the stored record when this spec was measured before (resume), else the spec."""
        item.pending = {"protocol": protocol, "metrics": metrics, "t0": t0, "bin": b or item.bin}
        done = self.store.latest(spec.spec_hash())
        if done is not None:
            self.rows.append(replace(self._row(protocol, b or item.bin, done), resumed=True))
            self.on_row()
            return None
        return spec

    def _steps(self, item: _BinItem, session):
        from tokenjoule.records import CellRecord
        from tokenjoule.runs.batch_search import engine_fits, max_batch_key, search_max_batch

        b, t0 = item.bin, self.clock()
        budget_check: dict = {}
        if self.deadline_s is not None:  # decide before the probe, which costs a full-length pass
            predicted, known = self.resolver.predict(session.engine, item.spec, session.gpu_name)
            if predicted is not None:
                probes = 0 if known or self.engine_name == "vllm" else 1  # vLLM's probe is arithmetic
                if self.over_budget(item.spec.model_copy(update={"batch_size": predicted}), probes, budget_check):
                    return
        res = self.resolver.resolve(session.engine, item.spec, session.gpu_name)
        if res.max_batch is None:
            item.pending = {"protocol": "adaptive", "metrics": {}, "t0": t0}
            yield CellRecord.failed(item.spec, MemoryError("out of memory even at batch size 1"), key=item.key,
                                    metrics=res.metrics())
            return
        fast = item.spec.model_copy(update={"batch_size": res.max_batch})
        if self.over_budget(fast, pending=None if budget_check else budget_check):
            return
        step = self._measure(item, fast, "adaptive", res.metrics(), t0)
        if budget_check.get("predicted_s"):
            item.pending["predicted_s"] = budget_check["predicted_s"]
        if step is not None:
            yield step
        if item.index in self.picks:  # the old protocol, same load, same shape: no re-capture
            key = max_batch_key(fast, session.gpu_name, self.args.max_batch_cap) + "|search"
            t1, probes = self.clock(), []
            searched = self.store.get_max_batch(key)
            if searched is None:
                fits, how = engine_fits(session.engine, fast)
                search = search_max_batch(fits, self.args.max_batch_cap, how)
                searched, probes = search.max_batch, search.probes
                if searched is not None:
                    self.store.set_max_batch(key, searched, session.gpu_name, probes)
            if searched is not None:
                full = self.spec(b, "full", searched)
                if self.over_budget(full):
                    return
                step = self._measure(item, full, "full", {"max_batch_probes": len(probes),
                                                          "max_batch_method": "search"}, t1)
                if step is not None:
                    yield step
        if self.args.remainders:
            for trace, n in sorted(b.per_trace.items()):
                r = n % res.max_batch
                if not r:
                    continue
                rem = fast.model_copy(update={"batch_size": r})
                if self.over_budget(rem):
                    return
                step = self._measure(item, rem, "remainder", {"remainder_of": trace}, self.clock(),
                                     Bin(b.input_tokens, b.output_tokens, n))
                if step is not None:
                    yield step

    def _row(self, protocol: str, b: Bin, rec: Any) -> Row:
        return row_from_record(self.table, protocol, b, rec)


# -- saying before running ------------------------------------------------------------------------
class StoredBatchPredictor:
    """The batch a bin would run at, without an engine, from the store of earlier calls: the
    cached answer, else vLLM's KV-cache capacity recorded on its stored cells, else hf's memory
    model fitted to the stored probes. Reads the store once per table."""

    def __init__(self, store: Any, probe_spec: Any, gpu_name: str | None, cap: int):
        from tokenjoule.runs.max_batch import MaxBatchResolver

        self.store, self.gpu_name, self.cap, self.engine = store, gpu_name, cap, probe_spec.engine
        self.kv_tokens: int | None = None
        self.max_num_seqs: int | None = None
        self.hf_model: Any = None
        if self.engine == "vllm":
            for rec in store.find(status="ok", engine="vllm", model=probe_spec.model):
                if rec.provenance.get("kv_cache_tokens"):
                    self.kv_tokens = int(rec.provenance["kv_cache_tokens"])
                    self.max_num_seqs = (rec.provenance.get("engine_options_as_run") or {}).get("max_num_seqs")
                    break
        else:
            self.hf_model = MaxBatchResolver(store, cap).model_from_stored_probes(probe_spec, gpu_name)

    def from_model(self, input_tokens: int, output_tokens: int) -> tuple[int | None, str]:
        """The prediction alone (no cached answer)."""
        from tokenjoule.models.memory import vllm_max_batch

        if self.engine == "vllm":
            if self.kv_tokens is None:
                return None, "no stored vLLM cell records its KV-cache capacity"
            return (max(1, vllm_max_batch(self.kv_tokens, input_tokens, output_tokens, 1, self.max_num_seqs,
                                          self.cap)), "vllm-kv-cache (stored cells)")
        if self.hf_model is None:
            return None, "no stored probes to predict from"
        return max(1, self.hf_model.predict_max_batch(input_tokens, output_tokens, 1, self.cap)), \
            "memory model from stored probes"

    def predict(self, spec: Any) -> tuple[int | None, str]:
        from tokenjoule.runs.batch_search import max_batch_key

        cached = self.store.get_max_batch(max_batch_key(spec, self.gpu_name, self.cap))
        if cached is not None:
            return cached, "cached"
        return self.from_model(spec.input_tokens, spec.output_tokens)


def store_gpu_name(store: Any) -> str | None:
    """The one GPU the store's ok cells were measured on (None when none or several)."""
    names = sorted({n for r in store.find(status="ok") for n in (r.provenance.get("gpu_names") or [])})
    return names[0] if len(names) == 1 else None


def dry_run(args: argparse.Namespace, tables: list[str], bins: list[Bin], store: Any) -> dict:
    """Per table: the bins the store lacks, each with its predicted batch and wall seconds
    (runs.sweep_estimate: the store's cells of this setup and GPU), cumulated in the table's
    order, and how many fit in the budget. A prediction, printed as one."""
    from tokenjoule.runs.sweep_estimate import GUESS_LOAD_S, CellTimeEstimator

    gpu_name = args.gpu_name or store_gpu_name(store)
    plan: dict[str, Any] = {"gpu_name": gpu_name, "budget_minutes": args.budget_minutes, "tables": {}}
    for table in tables:
        holder = BinTablePlan(table, bins, args, store, time.monotonic, None)
        predictor = StoredBatchPredictor(store, holder.spec(Bin(1, 1, 0), "adaptive"), gpu_name, args.max_batch_cap)
        estimator = CellTimeEstimator(store, gpu_name, max_batch_method="predict", max_batch_cap=args.max_batch_cap)
        holder.estimator = estimator
        left, faithful, total_s, fits = [], [], GUESS_LOAD_S, 0
        done = 0
        for index, b in enumerate(bins):
            spec = holder.spec(b, "adaptive")
            batch, how = predictor.predict(spec)
            sized = spec.model_copy(update={"batch_size": batch or 1})
            if index in holder.picks and batch is not None:  # the old protocol follows its bin
                full = holder.spec(b, "full", batch)
                if not store.has_success(full.spec_hash()):
                    probes = 0 if holder.engine_name == "vllm" else SEARCH_PROBES_GUESS  # vLLM's search is arithmetic
                    full_s = holder.predicted_s(full, probes)
                    total_s += full_s
                    faithful.append({"input_tokens": b.input_tokens, "output_tokens": b.output_tokens,
                                     "batch_size": batch, "predicted_s": full_s, "search_probes_guessed": probes})
            if batch is not None and store.has_success(sized.spec_hash()):
                done += 1
                continue
            probes = 0 if how == "cached" or holder.engine_name == "vllm" else 1
            seconds = holder.predicted_s(sized, probes) if batch is not None else None
            if seconds is not None:
                total_s += seconds
                if args.budget_minutes is None or total_s <= 60 * args.budget_minutes:
                    fits += 1
            left.append({"input_tokens": b.input_tokens, "output_tokens": b.output_tokens,
                         "n_requests": b.n_requests, "batch_size": batch, "batch_from": how,
                         "predicted_s": seconds})
        plan["tables"][table] = {"bins_done": done, "bins_left": len(left), "predicted_minutes": total_s / 60,
                                 "load_guess_s": GUESS_LOAD_S, "bins_within_budget": fits, "bins": left,
                                 "faithfulness": faithful}
    return plan


def print_plan(plan: dict) -> dict:
    print(f"dry run (a prediction, nothing measured), GPU {plan['gpu_name'] or '?'}:")
    for table, t in plan["tables"].items():
        within = "" if plan["budget_minutes"] is None else \
            f"; {t['bins_within_budget']} fit in {plan['budget_minutes']:g} min"
        check_s = sum(f["predicted_s"] for f in t.get("faithfulness", []))
        check = f", of which {check_s / 60:.1f} min the faithfulness re-measurements" if check_s else ""
        print(f"  {table}: {t['bins_done']} bins stored, {t['bins_left']} left, about "
              f"{t['predicted_minutes']:.0f} min with one engine load (guessed {t['load_guess_s']:.0f} s)"
              f"{check}{within}")
        for b in t["bins"][:8]:
            secs = "?" if b["predicted_s"] is None else f"{b['predicted_s']:.0f} s"
            print(f"    {b['input_tokens']}/{b['output_tokens']} ({b['n_requests']} requests): batch "
                  f"{b['batch_size'] or '?'} ({b['batch_from']}), {secs}")
        if len(t["bins"]) > 8:
            print(f"    ... {len(t['bins']) - 8} more")
        for f in t.get("faithfulness", []):
            print(f"    faithfulness {f['input_tokens']}/{f['output_tokens']}: old protocol at about batch "
                  f"{f['batch_size']}, {f['predicted_s']:.0f} s (search probes guessed: {f['search_probes_guessed']})")
    return plan


def main(argv: list[str] | None = None, *, engine_factory: Callable[[str], Any] | None = None,
         meter: Any = None, bins: list[Bin] | None = None, clock: Callable[[], float] = time.monotonic) -> dict:
    args = parse_args(argv)
    from tokenjoule.store.db import ResultStore

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise SystemExit(f"error: unknown table(s) {', '.join(unknown)}; valid: {', '.join(TABLES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else out / "bin_table.db"
    bins = bins if bins is not None else table_bins()
    if args.limit_bins:
        bins = bins[:args.limit_bins]
    if args.coverage is not None:
        bins = bins_covering(bins, args.coverage)
    if args.dry_run:
        if not db.is_file():
            raise SystemExit(f"error: --dry-run predicts from a store of earlier calls; {db} does not exist")
        with ResultStore(db, create=False, read_only=True) as store:
            return print_plan(dry_run(args, tables, bins, store))
    if engine_factory is None:
        from tokenjoule.engines.base import get_engine as engine_factory
    start = clock()
    deadline = None if args.budget_minutes is None else start + 60 * args.budget_minutes
    rows, seconds, gpus, stopped = [], {}, {}, False
    command = " ".join(["python", "benchmarks/bin_table.py", *(argv if argv is not None else sys.argv[1:])])

    def write_outputs(table_rows: list[Row], running: tuple[str, float] | None, store: Any) -> dict:
        """Rows CSV + summary JSON of everything measured so far. Rewritten after every bin, so a
        call killed at its time limit leaves them behind (marked `"partial": true`)."""
        secs = dict(seconds)
        if running is not None:
            secs[running[0]] = clock() - running[1]
        gpu_names = sorted({n for r in store.find(status="ok") for n in (r.provenance.get("gpu_names") or [])})
        summary = {
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command, "model": args.model, "traces": list(TRACES), "bins_in_table": len(bins),
            "gpu_names": gpu_names, "partial": running is not None, "stopped_by_budget": stopped,
            "tables": summarize(table_rows, secs, gpus),
            "note": "GPU-minutes are this session's wall minutes per table x GPUs (a resumed session counts "
                    "only what it measured); the faithfulness check is the same bins re-measured with the "
                    "full search, 3 warm-ups and 3 repeats",
        }
        write_rows(table_rows, out / "bin_table_rows.csv")
        tmp = out / "bin_table_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(out / "bin_table_summary.json")
        return summary

    with ResultStore(db) as store:
        for table in tables:
            from tokenjoule.runs.runner import RunContext, Runner

            t0 = clock()
            gpus[table] = 1

            def on_row(table=table, t0=t0) -> None:
                gpus[table] = plan.gpus
                write_outputs(rows + plan.rows, (table, t0), store)

            plan = BinTablePlan(table, bins, args, store, clock, deadline, on_row=on_row)
            context = RunContext(store, meter=meter, meter_kind=args.meter, idle_s=args.idle_s,
                                 engine_factory=engine_factory)
            Runner(context).run(plan)
            seconds[table], gpus[table] = clock() - t0, plan.gpus
            rows += plan.rows
            print(f"{table}: {sum(r.protocol == 'adaptive' for r in plan.rows)} bins in "
                  f"{seconds[table] / 60:.1f} min" + (" (stopped by the budget)" if plan.stopped_by_budget else ""))
            if plan.stopped_by_budget:
                stopped = True
                break
        summary = write_outputs(rows, None, store)
    for table, s in summary["tables"].items():
        print(f"{table}: {s['gpu_minutes']:.2f} GPU-min, {s['bins_measured']} bins, "
              f"{s['probes_per_bin'] or 0:.2f} probes/bin, {s['windows_per_bin'] or 0:.2f} windows/bin, "
              f"CV median {s['cv_median']}, faithfulness energy max |diff| {s['faithfulness_energy_max_abs_rel_diff']}, "
              f"batch max |diff| {s['faithfulness_batch_max_abs_rel_diff']}")
    print(f"wrote {db}, {out / 'bin_table_rows.csv'}, {out / 'bin_table_summary.json'}")
    return summary


if __name__ == "__main__":
    main()
