"""Figure 6: tensor parallelism. Latency and total energy of one batch against the number of
GPUs, per engine/mode and batch size, with the per-GPU split of the energy and the change
relative to one GPU beside the paper's.

Drawn from whatever tensor-parallel cells the store has (a partial store draws what it has
and lists the rest of the paper's grid to measure); a change relative to 1 GPU needs the
1-GPU cell of the same engine, mode and batch, otherwise it is left empty, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenjoule.report.data import REF_INPUT_TOKENS, REF_OUTPUT_TOKENS, Section, missing_grid
from tokenjoule.report.figures import _at_reference, _plot_series, _plt, save

TP_SIZES = (1, 2, 4)
TP_BATCHES = (1, 64)
TP_ENGINES = (("hf", "eager"), ("vllm", "graphs"))
# The paper's Figure 6 (Llama-3.1-8B at batch 1, relative to one GPU; /work/shared/paper/NUMBERS.md):
# printed reference values for the side-by-side columns, not measurements of ours.
PAPER_TP_CHANGE = {2: {"energy": 0.293, "latency": -0.4016}, 4: {"energy": 0.5523, "latency": -0.6134}}
PAPER_TP_BATCH = 1


def _split(value: Any) -> dict[str, float | None]:
    """The stored per-GPU split (JSON text in the frame), {} when the cell has none."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _with_changes(sel):
    """Rows with the change of latency and energy relative to the 1-GPU cell of the same engine,
    mode and batch (None without one), the per-GPU split as columns and the paper's change."""
    sel = sel.copy()
    base = {(r["engine"], r["mode"], int(r["batch_size"])): r for _, r in sel[sel["tensor_parallel"] == 1].iterrows()}
    lat, eng, paper_lat, paper_eng, per_gpu_mean, per_gpu_max = [], [], [], [], [], []
    splits = [_split(v) for v in (sel["gpu_energy_by_device_j"] if "gpu_energy_by_device_j" in sel.columns
                                  else [None] * len(sel))]
    for (_, r), split in zip(sel.iterrows(), splits):
        b = base.get((r["engine"], r["mode"], int(r["batch_size"])))
        tp = int(r["tensor_parallel"])
        lat.append(None if b is None or tp == 1 else float(r["duration_s"]) / float(b["duration_s"]) - 1)
        eng.append(None if b is None or tp == 1 or b["energy_j"] in (None, 0)
                   else float(r["energy_j"]) / float(b["energy_j"]) - 1)
        paper = PAPER_TP_CHANGE.get(tp) if int(r["batch_size"]) == PAPER_TP_BATCH else None
        paper_lat.append(paper["latency"] if paper else None)
        paper_eng.append(paper["energy"] if paper else None)
        values = [v for v in split.values() if v is not None]
        complete = bool(split) and len(values) == len(split)
        per_gpu_mean.append(sum(values) / len(values) if complete else None)
        per_gpu_max.append(max(values) if complete else None)
    sel["latency_change_vs_1gpu"], sel["energy_change_vs_1gpu"] = lat, eng
    sel["paper_latency_change"], sel["paper_energy_change"] = paper_lat, paper_eng
    sel["energy_per_gpu_mean_j"], sel["energy_per_gpu_max_j"] = per_gpu_mean, per_gpu_max
    devices = sorted({d for s in splits for d in s}, key=lambda d: int(d) if str(d).isdigit() else 0)
    for d in devices:
        sel[f"gpu{d}_energy_j"] = [s.get(d) for s in splits]
    sel["gpu_energy_split_j"] = [json.dumps(s, sort_keys=True) if s else "" for s in splits]
    return sel, [f"gpu{d}_energy_j" for d in devices]


def _pct(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:+.1f}%"


def _notes(sel) -> list[str]:
    notes = []
    for _, r in sel[sel["tensor_parallel"] > 1].sort_values(["engine", "mode", "batch_size", "tensor_parallel"]).iterrows():
        line = (f"{r['engine']}/{r['mode']} b{int(r['batch_size'])} on {int(r['tensor_parallel'])} GPUs vs 1: "
                f"latency {_pct(r['latency_change_vs_1gpu'])}, energy {_pct(r['energy_change_vs_1gpu'])}")
        if r["paper_latency_change"] is not None and r["paper_latency_change"] == r["paper_latency_change"]:
            line += (f" (paper, Llama-3.1-8B b{PAPER_TP_BATCH}: latency {_pct(r['paper_latency_change'])}, "
                     f"energy {_pct(r['paper_energy_change'])})")
        if r["latency_change_vs_1gpu"] is None or r["latency_change_vs_1gpu"] != r["latency_change_vs_1gpu"]:
            line += "; no 1-GPU cell of this engine and batch to compare with"
        notes.append(line)
    return notes


def fig6_parallel(df, out_dir: Path, model: str) -> Section:
    """Latency and total energy vs tensor-parallel size, per engine/mode and batch (greedy)."""
    sec = Section("fig6_parallel", "Tensor parallelism: latency and energy vs GPUs (Figure 6)",
                  f"{model}, greedy, {REF_INPUT_TOKENS} in / {REF_OUTPUT_TOKENS} out; one line per engine/mode and "
                  "batch size. Energy is the sum over the GPUs of the set; dashed: the mean per GPU of the "
                  "per-GPU split. Changes vs 1 GPU and the paper's are in the notes and the CSV.")
    sel = _at_reference(df, model, decoding="greedy")
    if len(sel) and "pipeline_parallel" in sel.columns:
        sel = sel[sel["pipeline_parallel"].fillna(1).astype(int) == 1]
    multi = sel[sel["tensor_parallel"] > 1] if len(sel) else sel
    pairs = set(zip(multi["engine"], multi["mode"])) if len(multi) else set()
    present = set(zip(sel["engine"], sel["mode"], sel["tensor_parallel"], sel["batch_size"])) if len(sel) else set()
    grid = [(e, m, t, b) for e, m in TP_ENGINES for t in TP_SIZES for b in TP_BATCHES]
    missing = []
    for e, m, t, b in grid:
        if (e, m, t, b) not in present:
            missing += missing_grid(model, set(), ("tensor_parallel", "batch_size"), [(t, b)], engine=e, mode=m)
    sec.missing = missing
    if not pairs:
        return sec
    # A boolean Series, not a list: an empty list would select columns and drop them all.
    sel = sel[sel.apply(lambda r: (r["engine"], r["mode"]) in pairs, axis=1).astype(bool)]
    sel, gpu_columns = _with_changes(sel)
    plt = _plt()
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, ((engine, mode, batch), part) in enumerate(sel.groupby(["engine", "mode", "batch_size"])):
        label, color = f"{engine}/{mode} b{batch}", colors[k % len(colors)]  # one colour per series, both panels
        _plot_series(axes[0], part, "tensor_parallel", "duration_s", label, color=color)
        _plot_series(axes[1], part, "tensor_parallel", "energy_j", label, color=color)
        per_gpu = part.dropna(subset=["energy_per_gpu_mean_j"]).sort_values("tensor_parallel")
        if len(per_gpu):
            axes[1].plot(per_gpu["tensor_parallel"], per_gpu["energy_per_gpu_mean_j"], linestyle="--",
                         marker=".", alpha=0.6, color=color, label=f"{label} per GPU")
    for ax, ylabel in zip(axes, ("latency of one batch (s)", "energy of one batch, all GPUs (J)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(set(int(t) for t in sel["tensor_parallel"])))
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.set_xlabel("tensor-parallel GPUs")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    sec.notes = _notes(sel)
    if missing:
        sec.notes.append(f"{len(missing)} cell(s) of the paper's grid (tp {', '.join(map(str, TP_SIZES))} x batch "
                         f"{', '.join(map(str, TP_BATCHES))}, hf/eager and vllm/graphs) are not measured yet; "
                         "they are listed under cells to measure")
    columns = ["model", "engine", "mode", "tensor_parallel", "batch_size", "duration_s", "energy_j",
               "energy_per_output_token_j", "latency_change_vs_1gpu", "energy_change_vs_1gpu",
               "paper_latency_change", "paper_energy_change", "energy_per_gpu_mean_j", "energy_per_gpu_max_j",
               *gpu_columns, "gpu_energy_split_j"]
    return save(sec, fig, sel[["id", *columns, "is_estimate", "warnings"]].rename(columns={"id": "cell_id"})
                .sort_values(["engine", "mode", "batch_size", "tensor_parallel"]).reset_index(drop=True), out_dir)
