"""The report's tables: workload statistics (paper Tables 1-3), binned estimate vs theory
(Table 4), savings of the best configuration over the baseline, provenance (Table 5).

Every number derived from stored cells is a `Value` carrying the ids of those cells, so the
HTML page can link it to the cells appendix; estimates and flagged cells are carried too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenjoule.analysis.selection import SELECTION_RULE
from tokenjoule.report.data import Section, fmt_number

TASKS = ("translation", "generation", "classification", "summarization")


@dataclass
class Value:
    """One table cell: its text plus the stored cells it came from and how to mark it."""

    text: str
    cell_ids: tuple[int, ...] = ()
    flags: tuple[str, ...] = ()
    estimate: bool = False  # from an estimate (e.g. CPU time), never a measurement
    predicted: bool = False  # a model's prediction (e.g. FLOPs x TDP), not a measurement
    number: float | None = None  # the unformatted value, what the CSV holds ("2,036" is for the page)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Value]] = field(default_factory=list)

    def to_frame(self):
        import pandas as pd

        records = []
        for row in self.rows:
            # The CSV is for machines: the raw number, or the text; a missing value is empty.
            rec = {c: (v.number if v.number is not None else (None if v.text == "—" else v.text))
                   for c, v in zip(self.columns, row)}
            rec["cell_ids"] = " ".join(str(i) for i in sorted({i for v in row for i in v.cell_ids}))
            records.append(rec)
        return pd.DataFrame(records, columns=[*self.columns, "cell_ids"])


def V(value: Any, ids: Any = (), digits: int = 3, number: float | None = None, **kw: Any) -> Value:
    """A table cell; `number` is what the CSV holds when the page shows formatted text
    ("2.04×", "73.0%"): the CSV keeps numbers, never their formatted strings."""
    text = value if isinstance(value, str) else fmt_number(value, digits)
    if number is None and isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        number = value
    return Value(text, tuple(sorted({int(i) for i in ids})), number=number, **kw)


def _finish(sec: Section, table: Table, out_dir: Path) -> Section:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / f"{sec.name}.csv"
    table.to_frame().to_csv(csv, index=False)
    sec.table, sec.csv_path = table, str(csv)
    sec.cell_ids = sorted({i for row in table.rows for v in row for i in v.cell_ids})
    return sec


def _bins_note(bins: Any, source: str) -> str:
    from tokenjoule.workloads.binning import Bins, describe_bins

    return describe_bins(bins or Bins(), source)


def _mean_std(s) -> str:
    return f"{s.mean:.1f} ± {s.std:.1f}"


def workload_table(traces: list[str], out_dir: Path) -> Section:
    """Per trace and per task profile: request count, length statistics, arrival rate."""
    sec = Section("table_workloads", "Workload statistics (Tables 1-3)",
                  "Traces given with --trace, and the classical NLP task profiles (synthetic, seeded, "
                  "from the paper's Table 3). These describe workloads, not measurements.")
    try:
        from tokenjoule.workloads import resolve_workload, workload_stats
    except ImportError as exc:
        sec.unavailable = f"not available: workload statistics ({exc})"
        return sec
    cols = ["workload", "requests", "input mean ± std", "input median", "input p99", "input max",
            "output mean ± std", "output max", "duration (s)", "rate (req/s)", "burstiness (CV)",
            "in/out correlation"]
    table = Table(cols)
    for name in [*traces, *(f"task:{t}" for t in TASKS)]:
        st = workload_stats(resolve_workload(name))
        table.rows.append([V(name), V(str(st.requests)), V(_mean_std(st.input_tokens)),
                           V(st.input_tokens.median), V(st.input_tokens.p99), V(str(st.input_tokens.max)),
                           V(_mean_std(st.output_tokens)), V(str(st.output_tokens.max)), V(st.duration_s),
                           V(st.mean_rate_rps), V(st.burstiness), V(st.input_output_correlation)])
    return _finish(sec, table, out_dir)


def estimate_vs_theory_table(traces: list[str], store, df, model: str, out_dir: Path, bins: Any = None,
                             bins_source: str | None = None) -> Section:
    """Measured binned estimate vs the paper's FLOPs x TDP estimate, per trace and engine/mode."""
    sec = Section("table_estimate_vs_theory", "Binned estimate vs theoretical energy (Table 4)",
                  f"{model}, greedy. Binned = sum over bins of N/B x measured batch energy (the paper's rounding, "
                  "`tokenjoule estimate`'s default), the cell of each bin chosen as `tokenjoule estimate`, "
                  "`savings` and `recommend` choose it (" + SELECTION_RULE + "); "
                  "theory = TDP / peak bf16 FLOP/s x FLOPs of the kept requests (a prediction, not a measurement).")
    if not traces:
        sec.unavailable = "not available: give --trace NAME to compare a trace's binned estimate with theory"
        return sec
    try:
        from tokenjoule.analysis.estimate import binned_estimate
    except ImportError:
        sec.unavailable = "not available: tokenjoule.analysis.estimate.binned_estimate is not installed"
        return sec
    from tokenjoule.analysis.gpus import find_gpu
    from tokenjoule.analysis.theory import architecture_for, theoretical_energy_j, workload_flops
    from tokenjoule.workloads import bin_workload, resolve_workload

    off = df[(df["kind"] == "offline") & (df["model"] == model)] if len(df) else df
    pairs = sorted(set(zip(off["engine"], off["mode"]))) if len(off) else []
    gpu_names = [g for g in off.get("gpu_name", []) if isinstance(g, str)] if len(off) else []
    gpu = find_gpu(max(set(gpu_names), key=gpu_names.count)) if gpu_names else None
    table = Table(["trace", "engine/mode", "binned estimate (J)", "theoretical (J)", "binned / theory",
                   "theory as % of binned", "theory, paper constants (J)", "binned / paper theory", "missing cells"])
    if bins_source:
        sec.notes.append(_bins_note(bins, bins_source))
    sec.notes.append("theoretical: dense peak FLOP/s, FLOPs at real lengths (tokenjoule's convention); paper "
                     "constants: sparsity-enabled peak FLOP/s and FLOPs at the bin edges (the paper's Table 4)")
    for trace in traces:
        workload = resolve_workload(trace)
        binned = bin_workload(workload, bins)
        theory_j = paper_j = None
        try:
            arch = architecture_for(model)
            flops = workload_flops(arch, binned.real_input_tokens, binned.real_output_tokens).total_flops
            theory_j = theoretical_energy_j(flops, gpu) if gpu else None
            if gpu:
                from tokenjoule.analysis.floors import theory_energy_j

                edge_flops = workload_flops(arch, binned.binned_input_tokens, binned.binned_output_tokens).total_flops
                paper_j = theory_energy_j(flops, edge_flops, gpu, "bf16", "paper")[0]
        except Exception as exc:  # noqa: BLE001 - any failure: theory shown as unavailable
            sec.notes.append(f"theory for {model}: {exc}")
        if gpu is None:
            sec.notes.append("theory needs a GPU in the datasheet table; the cells' GPU is not in it")
        for engine, mode in pairs:
            res = binned_estimate(workload, store, model=model, engine=engine, mode=mode, decoding="greedy",
                                  bins=bins)
            measured, ids_, missing, est = _estimate_fields(res)
            ratio = measured / theory_j if measured and theory_j else None
            paper_ratio = measured / paper_j if measured and paper_j else None
            table.rows.append([V(trace), V(f"{engine}/{mode}"), V(measured, ids_, estimate=est),
                               V(theory_j, predicted=True), V(None if ratio is None else f"{ratio:.2f}×", ids_, number=ratio),
                               V(None if ratio is None else f"{100 / ratio:.1f}%", ids_,
                                 number=None if ratio is None else 100 / ratio),
                               V(paper_j, predicted=True),
                               V(None if paper_ratio is None else f"{paper_ratio:.2f}×", ids_, number=paper_ratio),
                               V(", ".join(missing[:6]) + (f" (+{len(missing) - 6})" if len(missing) > 6 else ""))])
    return _finish(sec, table, out_dir)


def _estimate_fields(res) -> tuple[float | None, list[int], list[str], bool]:
    """Total, cell ids, missing-cell labels and estimate flag from an EstimateResult (duck-typed:
    the analysis module owns its shape)."""
    data = res.to_dict() if hasattr(res, "to_dict") else dict(vars(res))
    total = data.get("total_energy_j")
    ids_, est = [], False
    for row in data.get("rows", data.get("bins", [])) or []:
        if isinstance(row, dict):
            for key in ("cell_id", "id"):
                if row.get(key) is not None:
                    ids_.append(int(row[key]))
            est = est or str(row.get("method") or "").startswith("estimate")
    missing = []
    for m in data.get("missing", data.get("missing_cells", [])) or []:
        if isinstance(m, dict):
            missing.append(f"in{m.get('input_tokens')}/out{m.get('output_tokens')}")
        else:
            missing.append(str(m))
    if missing:
        total = None  # an incomplete estimate is not shown as a total
    return total, ids_, missing, est


def savings_table(traces: list[str], store, model: str, out_dir: Path, footprint: Any = None, bins: Any = None,
                  bins_source: str | None = None) -> Section:
    """Best measured configuration vs the baseline (hf/eager greedy, 1 GPU) per trace, no SLOs."""
    sec = Section("table_savings", "Savings of the best configuration over the baseline",
                  "Per trace, without latency targets (use `tokenjoule recommend` for SLOs). Baseline: "
                  "hf/eager greedy on one GPU; " + SELECTION_RULE + ".")
    if not traces:
        sec.unavailable = "not available: give --trace NAME to compute savings for a workload"
        return sec
    from tokenjoule.analysis.recommend import RecommendationError, recommend_trace

    from tokenjoule.analysis.carbon import Footprint

    footprint = footprint or Footprint()
    extra = ["best (kWh)", "best (kWh x PUE)", "best (g CO2e)", "best (cost)"] if footprint.active else ["best (kWh)"]
    table = Table(["trace", "best configuration", "best (J)", *extra, "baseline (J)", "savings", "runner-up",
                   "runner-up (J)"])
    if footprint.note():
        sec.notes.append(footprint.note())
    if bins_source:
        sec.notes.append(_bins_note(bins, bins_source))
    for trace in traces:
        try:
            rec, _ = recommend_trace(trace, store, model=model, bins=bins)
        except RecommendationError as exc:
            table.rows.append([V(trace), V(f"cannot answer: {exc}"), *(V(None) for _ in range(5 + len(extra)))])
            continue
        b, base, ru = rec.best, rec.baseline, rec.runner_up
        fp = footprint.of_energy_j(b.total_energy_j)
        fp_values = [fp["kwh"], fp["facility_kwh"], fp["co2e_g"], fp["cost"]] if footprint.active else [fp["kwh"]]
        table.rows.append([
            V(trace), V(b.config.label + (" [estimate]" if b.estimate else ""), b.cell_ids),
            V(b.total_energy_j, b.cell_ids, estimate=b.estimate),
            *(V(v, b.cell_ids, estimate=b.estimate) for v in fp_values),
            V(base.total_energy_j if base else rec.baseline_note, base.cell_ids if base else ()),
            V(None if rec.savings_fraction is None else f"{100 * rec.savings_fraction:.1f}%",
              (*b.cell_ids, *(base.cell_ids if base else ())),
              number=None if rec.savings_fraction is None else 100 * rec.savings_fraction),
            V(ru.config.label if ru else None, ru.cell_ids if ru else ()),
            V(ru.total_energy_j if ru else None, ru.cell_ids if ru else ()),
        ])
    return _finish(sec, table, out_dir)


PROVENANCE_KEYS = ("gpu_names", "driver_version", "cuda_version", "power_limit_w", "torch_version",
                   "transformers_version", "vllm_version", "tokenjoule_version", "hostname", "cpu_name")


def provenance_table(store, out_dir: Path) -> Section:
    """Hardware and software of every measurement, one row per distinct environment (Table 5)."""
    sec = Section("table_provenance", "Hardware and software of every measurement (Table 5)",
                  "One row per distinct environment; the cells column lists every cell measured in it.")
    groups: dict[str, dict[str, Any]] = {}
    for rec in store.find(status=None):
        prov = {k: rec.provenance.get(k) for k in PROVENANCE_KEYS}
        key = json.dumps(prov, sort_keys=True, default=str)
        g = groups.setdefault(key, {"prov": prov, "ids": [], "times": [], "methods": set()})
        g["ids"].append(int(rec.id))
        g["times"].append(rec.provenance.get("time_utc") or rec.created_at or "")
        g["methods"].add(str(rec.method or "—"))
    if not groups:
        sec.unavailable = "not available: the store has no cells"
        return sec
    table = Table(["GPU(s)", "power limit (W)", "driver", "CUDA", "torch", "transformers", "vLLM",
                   "tokenjoule", "host", "CPU", "methods", "measured (UTC)", "cells"])
    for g in groups.values():
        p, ids_ = g["prov"], g["ids"]
        gpus = p["gpu_names"] or []
        gpu_text = f"{len(gpus)} × {gpus[0]}" if gpus else "none (CPU)"
        limits = sorted({str(x) for x in (p["power_limit_w"] or [])})
        times = sorted(t for t in g["times"] if t)
        methods = sorted(g["methods"] - {"—"}) or ["—"]  # failed cells have no measurement
        # Only the cells column links (every value of the row comes from the same cells).
        table.rows.append([V(gpu_text), V(", ".join(limits) or "—"),
                           *(V(str(p[k]) if p[k] else "—") for k in
                             ("driver_version", "cuda_version", "torch_version", "transformers_version",
                              "vllm_version", "tokenjoule_version", "hostname", "cpu_name")),
                           V(", ".join(methods), estimate=any(m.startswith("estimate") for m in methods)),
                           V((times[0] if times[0] == times[-1] else f"{times[0]} … {times[-1]}") if times else "—"),
                           V(f"{len(ids_)} cells", ids_)])
    return _finish(sec, table, out_dir)
