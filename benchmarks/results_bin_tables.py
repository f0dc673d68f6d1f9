"""The `h200-bin-tables` section of docs/RESULTS.md, generated from benchmarks/results/bin_table_h200/.

Evidence layout (written by `benchmarks/bin_table.py`, one device call per file pair):
`<table>_<n>_rows.csv` and `<table>_<n>_summary.json` (n = 1, 2, ... in call order; a later
call resumes from the store of the earlier ones), and `bin_table.db`, the store of all calls.
A bin measured by several calls is counted once (the latest row). GPU-minutes add up over
the calls: each call's summary counts only what that call ran, engine load included.

The projection of a full table is labelled as one: it scales the measured seconds per token
of each table to the unmeasured bins at their predicted batch (never a measurement).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path
from typing import Any

TABLE_LABELS = {"vllm-graphs": "vllm graphs", "hf-eager": "hf eager"}
# The time targets for a full table (GPU-minutes): method constants, not measurements.
TARGET_MINUTES = {"vllm-graphs": 20, "hf-eager": 30}
FILE = re.compile(r"^(?P<table>[a-z]+_[a-z]+)_(?P<n>\d+)_(?P<kind>rows|summary)\.(csv|json)$")


def read_calls(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Per table, its calls in order: {"n", "summary", "rows"}."""
    calls: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = FILE.match(path.name)
        if not m:
            continue
        table = m["table"].replace("_", "-")
        entry = calls.setdefault(table, {}).setdefault(int(m["n"]), {"n": int(m["n"])})
        if m["kind"] == "summary":
            entry["summary"] = json.loads(path.read_text())
        else:
            with path.open(newline="") as fh:
                entry["rows"] = list(csv.DictReader(fh))
    return {t: [c for _, c in sorted(by_n.items())] for t, by_n in sorted(calls.items())}


def _num(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


def measured_bins(calls: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """The fast-protocol rows that succeeded, one per bin (the latest call's)."""
    bins: dict[tuple[int, int], dict[str, Any]] = {}
    for call in calls:
        for r in call.get("rows", []):
            if r["protocol"] == "adaptive" and r["status"] == "ok":
                bins[(int(r["input_tokens"]), int(r["output_tokens"]))] = r
    return bins


def window_figures(store: Any, cell_id: str | int | None) -> dict[str, Any] | None:
    """A cell's figures from its stored windows, with the settling rule of runs.windows applied
    (records.settled_figures: also to cells stored before the rule, whose first window of three
    was averaged in): energy per request and CV of the windows used, the settling windows and
    their excess. None without the cell."""
    from tokenjoule.records import settled_figures

    rec = None if cell_id in (None, "") else store.get(int(cell_id))
    if rec is None or not rec.batch_size:
        return None
    windows = [w for w in (rec.measurement or {}).get("windows", []) if w.get("kind") in ("full", "full-settling")]
    fig = settled_figures(rec.metrics.get("stop_reason"), windows)
    if fig is None:
        return None
    batch = int(rec.batch_size)
    used, mean, k = fig["used_energies_j"], fig["energy_j"], fig["settling_windows"]
    return {"energy_per_request_j": mean / batch, "windows_used": fig["windows_used"], "windows": len(windows),
            "energy_cv": statistics.stdev(used) / mean if len(used) > 1 and mean > 0 else None,
            "settling_windows": k,
            "settling_excess": statistics.fmean(fig["settling_energies_j"]) / mean - 1 if k and mean > 0 else None,
            "settling_duration_ratio": (max(fig["settling_durations_s"]) / fig["duration_s"]
                                        if k and fig["duration_s"] else None),
            "all_windows_energy_per_request_j": fig["energy_j_all_windows"] / batch}


def hf_probes(store: Any) -> list[list[dict[str, Any]]]:
    """The stored largest-batch probes of every hf bin (the store's max_batch cache)."""
    return [probes for key, probes in store.max_batch_entries() if key.get("engine") == "hf"]


def settled_bins(bins: dict[tuple[int, int], dict[str, Any]], store: Any) -> dict[tuple[int, int], dict[str, Any]]:
    """The rows with their figures from the stored windows where the store has them."""
    out = {}
    for key, r in bins.items():
        fig = None if store is None else window_figures(store, r.get("cell_id"))
        out[key] = {**r, **({k: v for k, v in fig.items() if v is not None} if fig else {}),
                    "from_windows": fig is not None}
    return out


def open_store(db: Path) -> Any:
    """The store of the calls, read-only, or None when there is none."""
    import sys

    if not db.is_file():
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tokenjoule.store.db import ResultStore

    return ResultStore(db, create=False, read_only=True)


def faithfulness_minutes(calls: list[dict[str, Any]]) -> float:
    """Wall minutes of the old-protocol re-measurements (the check's cost, not the table's)."""
    return sum(float(r["wall_s"]) for c in calls for r in c.get("rows", [])
               if r["protocol"] == "full" and r.get("wall_s") and str(r.get("resumed", "")).lower() != "true") / 60.0


def table_minutes(calls: list[dict[str, Any]], table: str) -> float:
    """GPU-minutes of the fast table: every call's minutes less its faithfulness re-measurements."""
    total = sum(c["summary"]["tables"].get(table, {}).get("gpu_minutes", 0.0) for c in calls if "summary" in c)
    return max(total - faithfulness_minutes(calls), 0.0)


def projection_minutes(bins: dict[tuple[int, int], dict[str, Any]], all_bins: list[Any],
                       predicted_batch: dict[tuple[int, int], int], load_minutes: float,
                       one_window: bool = False) -> float | None:
    """A labelled projection of the full table: measured wall seconds per token of work,
    applied to every bin at its predicted batch (the mean measured bin where no prediction
    is at hand), plus one engine load."""
    if not bins:
        return None

    def wall_s(r: dict[str, Any]) -> float:  # one_window: the time of one window, not the bin's
        return float(r["wall_s"]) / (max(float(r["windows"] or 1), 1.0) if one_window else 1.0)

    seconds = sum(wall_s(r) for r in bins.values() if r.get("wall_s"))
    tokens = sum(int(r["batch_size"]) * (i + o) for (i, o), r in bins.items())
    if tokens <= 0:
        return None
    per_token_s = seconds / tokens
    total = 0.0
    for b in all_bins:
        key = (b.input_tokens, b.output_tokens)
        if key in bins:
            total += wall_s(bins[key])
        elif key in predicted_batch:
            total += per_token_s * predicted_batch[key] * (b.input_tokens + b.output_tokens)
        else:  # no batch prediction for this engine here: the mean measured bin
            total += seconds / len(bins)
    return total / 60.0 + load_minutes


def section(q: Any, folder: Path, all_bins: list[Any], predicted_batch: dict[str, dict[tuple[int, int], int]]) -> str:
    """Markdown of the section; every number through `q` (make_results.Quotes)."""
    store = open_store(folder / "bin_table.db")
    try:
        return _section(q, folder, all_bins, predicted_batch, store)
    finally:
        if store is not None:
            store.close()


FAITHFUL_ENERGY, FAITHFUL_BATCH = 0.02, 0.05  # the fast-bin-tables issue's targets
FAITHFUL_BINS = 5  # bins the issue asks to re-measure with the old protocol


def faithfulness_lines(q: Any, calls: dict[str, list[dict[str, Any]]],
                       per_table_bins: dict[str, dict[tuple[int, int], dict[str, Any]]]) -> list[str]:
    """The bins re-measured with the old protocol (full search, 3 warm-ups, 3 repeats) next to the
    fast protocol's figure of the same bin, as the per-bin table above shows it."""
    out: list[str] = []
    for table, cs in calls.items():
        full = {(int(r["input_tokens"]), int(r["output_tokens"])): r for c in cs for r in c.get("rows", [])
                if r["protocol"] == "full" and r["status"] == "ok"}
        fast_bins = per_table_bins.get(table, {})
        pairs = [(k, fast_bins[k], r) for k, r in full.items() if k in fast_bins]
        label = TABLE_LABELS.get(table, table)
        if not pairs:
            out += ["", f"Faithfulness, {label}: no bin re-measured with the old protocol yet."]
            continue
        out += ["", f"Faithfulness, {label}: bins re-measured with the old protocol (full out-of-memory search, "
                    "3 warm-ups, 3 repeats; `--faithfulness-bins`), each measured after the fast cell it checks, "
                    "in the same or a later call on an H200:", "",
                "| bin | fast: batch (predicted), J/request | old protocol: batch (searched, probes), J/request | "
                "energy, fast vs old | batch, predicted vs searched |", "|---|---|---|---|---|"]
        worst_e = worst_b = 0.0
        for (i, o), fast, ref in sorted(pairs, key=lambda p: p[0]):
            e_fast, e_ref = float(fast["energy_per_request_j"]), float(ref["energy_per_request_j"])
            b_fast, b_ref = int(fast["batch_size"]), int(ref["batch_size"])
            de, db = e_fast / e_ref - 1, b_fast / b_ref - 1
            worst_e, worst_b = max(worst_e, abs(de)), max(worst_b, abs(db))
            out.append(f"| {q.q(i)}/{q.q(o)} | {q.q(b_fast)}, {q.q(e_fast, '{:.2f}')} | {q.q(b_ref)} "
                       f"({q.q(int(float(ref['max_batch_probes'] or 0)))} probes), {q.q(e_ref, '{:.2f}')} | "
                       f"{q.pct(1 + de)} | {q.pct(1 + db)} |")
        verdict = ("within" if worst_e <= FAITHFUL_ENERGY and worst_b <= FAITHFUL_BATCH else "outside")
        out += ["", f"Largest differences: energy {q.q(100 * worst_e, '{:.2f}')}%, batch {q.q(100 * worst_b, '{:.2f}')}%, "
                    f"{verdict} the targets ({q.q(100 * FAITHFUL_ENERGY, '{:.0f}')}% and "
                    f"{q.q(100 * FAITHFUL_BATCH, '{:.0f}')}%) on {q.q(len(pairs))} of the "
                    f"{q.q(FAITHFUL_BINS)} bins the check asks for. The re-measurements took "
                    f"{q.q(faithfulness_minutes(cs), '{:.1f}')} GPU-minutes, left out of the table's GPU-minutes above."]
    return out


def _section(q: Any, folder: Path, all_bins: list[Any], predicted_batch: dict[str, dict[tuple[int, int], int]],
             store: Any) -> str:
    calls = read_calls(folder)
    if not calls:
        return "## 8. Bin tables with the fast protocol (H200)\n\nNo bin table has been measured on an H200 yet.\n"
    n_requests = sum(b.n_requests for b in all_bins)
    dates = sorted({c["summary"]["date_utc"][:10] for cs in calls.values() for c in cs if "summary" in c})
    lines = [f"## 8. Bin tables with the fast protocol (H200, {', '.join(q.q(d) for d in dates)}; partial)", ""]
    lines += [
        "Generated by `benchmarks/make_results.py` from `benchmarks/results/bin_table_h200/` (rows, summaries",
        "and the store `bin_table.db` of each device call of `benchmarks/bin_table.py`). `llama-3.1-8b` preset,",
        "random weights, every occupied default bin of the traces `azure-conv-2023` + `azure-code-2023`",
        f"({q.q(len(all_bins))} bins, {q.q(n_requests)} requests), most requested bins first, one engine load per",
        "call, the largest batch predicted (vLLM: from its KV-cache capacity and max_num_seqs; hf: the",
        "calibrated memory model) and confirmed by a probe (x0.8 steps down on out-of-memory), adaptive",
        "windows (stop when two agree within 1%, else after a third; windows before an agreeing pair are",
        "settling windows, recorded and left out of the figures, runs.windows).",
        "",
        "| table | calls | GPU-minutes | bins measured | requests covered | probes/bin | windows/bin | energy CV median, max | full table, projected | one window per bin, projected | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_table_bins = {}
    for table, cs in calls.items():
        bins = settled_bins(measured_bins(cs), store)
        per_table_bins[table] = bins
        minutes = table_minutes(cs, table)
        covered = sum(int(r["n_requests"]) for r in bins.values())
        probes = [float(r["max_batch_probes"]) for r in bins.values() if r.get("max_batch_probes")]
        windows = [float(r["windows"]) for r in bins.values() if r.get("windows")]
        cvs = [float(r["energy_cv"]) for r in bins.values() if r.get("energy_cv") not in (None, "")]
        measured_s = sum(float(r["wall_s"]) for r in bins.values() if r.get("wall_s"))
        load_min = max(minutes - measured_s / 60.0, 0.0) / max(len(cs), 1)
        proj = projection_minutes(bins, all_bins, predicted_batch.get(table, {}), load_min)
        floor = projection_minutes(bins, all_bins, predicted_batch.get(table, {}), load_min, one_window=True)
        lines.append(
            f"| {TABLE_LABELS.get(table, table)} | {q.q(len(cs))} | {q.q(minutes, '{:.1f}')} | "
            f"{q.q(len(bins))} of {q.q(len(all_bins))} | {q.q(100 * covered / n_requests, '{:.1f}')}% | "
            f"{q.q(statistics.fmean(probes), '{:.2f}') if probes else '-'} | "
            f"{q.q(statistics.fmean(windows), '{:.2f}') if windows else '-'} | "
            + (f"{q.q(100 * statistics.median(cvs), '{:.2f}')}%, {q.q(100 * max(cvs), '{:.2f}')}% | " if cvs else "- | ")
            + (f"{q.q(proj, '{:.0f}')} min (projection) | " if proj is not None else "- | ")
            + (f"{q.q(floor, '{:.0f}')} min (projection) | " if floor is not None else "- | ")
            + f"<= {q.q(TARGET_MINUTES.get(table, 0))} min |")
    commands = [c["summary"]["command"].replace("/tmp/bt/", "").replace("/root/out/", "$OUT/") for cs in calls.values() for c in cs
                if "summary" in c and c["summary"].get("command")]
    if commands:
        lines += ["", "Commands, one per call (on the GPU host; the store of each call seeds the next): "
                  + "; ".join(f"`{cmd}`" for cmd in commands) + "."]
    lines += ["", "Per bin (fast protocol; energy per request = mean energy of the windows used / batch; windows",
              "used of measured; CV of the windows used):", "",
              "| input | output | requests | " + " | ".join(
                  f"{TABLE_LABELS.get(t, t)} batch, windows, J/request, CV" for t in calls) + " |",
              "|---|---|---|" + "---|" * len(calls)]
    requests_of = {(b.input_tokens, b.output_tokens): b.n_requests for b in all_bins}
    keys = sorted({k for bins in per_table_bins.values() for k in bins}, key=lambda k: -requests_of.get(k, 0))
    for key in keys:
        n = requests_of.get(key)
        cells = []
        for t in calls:
            r = per_table_bins[t].get(key)
            if r is None:
                cells.append("-")
                continue
            used = f"{q.q(int(r['windows_used']))} of {q.q(int(r['windows']))}" if r.get("from_windows") \
                else q.q(int(r["windows"]))
            cv = (f"{q.q(100 * float(r['energy_cv']), '{:.2f}')}%" if r.get("energy_cv") not in (None, "")
                  else "-")
            cells.append(f"{q.q(int(r['batch_size']))}, {used}, "
                         f"{q.q(float(r['energy_per_request_j']), '{:.2f}')}, {cv}")
        lines.append(f"| {q.q(key[0])} | {q.q(key[1])} | {q.q(n) if n is not None else '-'} | " + " | ".join(cells) + " |")
    both = [k for k in keys if all(k in per_table_bins.get(t, {}) for t in ("vllm-graphs", "hf-eager"))]
    if both:
        lines += ["", "Savings of vllm graphs over hf eager on the bins both measured (energy per request, each at its",
                  "own largest batch): " + ", ".join(
                      f"{q.q(k[0])}/{q.q(k[1])}: " + q.q(100 * (1 - _num(per_table_bins['vllm-graphs'][k]['energy_per_request_j'])
                                                               / _num(per_table_bins['hf-eager'][k]['energy_per_request_j'])), "{:.0f}") + "%"
                      for k in both) + "."]
    if both:
        totals = {t: sum(requests_of[k] * float(per_table_bins[t][k]["energy_per_request_j"]) for k in both)
                  for t in ("vllm-graphs", "hf-eager")}
        share = sum(requests_of[k] for k in both) / n_requests
        lines += ["", f"On those {q.q(len(both))} bins together ({q.q(100 * share, '{:.1f}')}% of the requests), "
                  "weighted by their requests (the paper's N/B rounding): hf eager "
                  f"{q.q(totals['hf-eager'] / 3.6e6, '{:.2f}')} kWh, vllm graphs {q.q(totals['vllm-graphs'] / 3.6e6, '{:.2f}')} kWh, "
                  f"savings {q.q(100 * (1 - totals['vllm-graphs'] / totals['hf-eager']), '{:.0f}')}% "
                  "(a partial table: not the trace's total)."]
    lines += faithfulness_lines(q, calls, per_table_bins)
    settled = {t: [r for r in bins.values() if r.get("settling_windows")] for t, bins in per_table_bins.items()}
    settled_rows = [r for rs in settled.values() for r in rs]
    if settled_rows:
        excess = [float(r["settling_excess"]) for r in settled_rows if r.get("settling_excess") is not None]
        slow = [float(r["settling_duration_ratio"]) for r in settled_rows if r.get("settling_duration_ratio")]
        shift = [float(r["all_windows_energy_per_request_j"]) / float(r["energy_per_request_j"]) - 1
                 for r in settled_rows]
        where = ", ".join(f"{q.q(len(rs))} {TABLE_LABELS.get(t, t)}" for t, rs in settled.items() if rs)
        lines += ["", f"Settling windows: bins that stopped on an agreeing pair after an earlier window ({where}): "
                  f"that first window drew {q.q(100 * min(excess), '{:.0f}')}-{q.q(100 * max(excess), '{:.0f}')}% "
                  "more energy than the pair"
                  + (f" and ran {q.q(min(slow), '{:.1f}')}-{q.q(max(slow), '{:.1f}')}x as long" if slow else "")
                  + ": the first full-length batch of a new shape (most likely its KV cache growing through fresh "
                  "allocations the short warm-up never made). "
                  "Averaging it in, as the cells stored before the rule did, would put those bins "
                  f"{q.q(100 * min(shift), '{:.1f}')}-{q.q(100 * max(shift), '{:.1f}')}% higher; "
                  "the figures above apply the rule to the stored windows."]
    probes = hf_probes(store) if store is not None else []
    if probes:
        first_failed = sum(1 for ps in probes if ps and not ps[0]["fits"])
        fit_peaks = [p["peak_bytes"] for ps in probes for p in ps if p["fits"] and p.get("peak_bytes")]
        lines += ["", f"hf eager's largest batch: in {q.q(first_failed)} of {q.q(len(probes))} bins the memory model's "
                  "first probe ran out of memory (the stored probes of each bin, `max_batch` in the store)"
                  + (f"; probes that fitted peaked at up to {q.q(max(fit_peaks) / 1e9, '{:.1f}')} GB of "
                     "allocated memory, while probes predicted to need more failed, so the allocator hands out "
                     "less than the calibrated capacity (free + reserved) the model assumed" if fit_peaks else "")
                  + ". Since then the resolver learns that usable memory from the failed and fitted probes of "
                  "the load and predicts later bins from it (runs.max_batch; not yet run on the GPU)."]
    lines += ["", "Projection: each table's measured wall seconds per token of work (batch x (input + output)),",
              "applied to the unmeasured bins at their predicted batch (vLLM: from the KV-cache capacity",
              "its cells recorded; hf: the memory model fitted to the stored probes), plus the mean engine load of its calls. It",
              "is an estimate for planning, not a measurement. \"One window per bin\" is the same projection for",
              "a single window of the largest batch per bin (no repeat, no warm-up): the floor of measuring one",
              "full batch per bin, whatever the protocol around it."]
    return "\n".join(lines) + "\n"
