"""The paper's offline figures (2-6) drawn from stored cells, each with its data as CSV.

Each `figN_*` function takes the report's cell frame and an output folder and returns a
`Section`: a PNG + CSV (every CSV row carries the `cell_id` it came from) when the store has
the cells, otherwise the list of cells to measure. Estimates are drawn hollow and named in
the legend; they are never mixed silently with measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tokenjoule.report.data import (REF_INPUT_TOKENS, REF_OUTPUT_TOKENS, MissingCell, Section, ids,
                                    latest_per_spec, missing_grid, offline)

PAPER_INPUTS = (128, 256, 512, 1024, 2048)
PAPER_OUTPUTS = (8, 16, 32, 64, 128)
PAPER_BATCHES = (1, 8, 64)
DECODING_BATCHES = (1, 8, 32, 64)
DECODINGS = ("greedy", "sample", "beam", "speculative")
MOE_GRID = ("olmo-1b", "olmo-7b", "olmoe-1b-7b")
ENGINE_MODES = (("hf", "eager"), ("hf", "compile"), ("hf", "cudagraphs"), ("vllm", "eager"),
                ("vllm", "graphs"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def save(section: Section, fig, data, out_dir: Path) -> Section:
    """Write NAME.png and NAME.csv; record their paths and the cell ids on the section."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, csv = out_dir / f"{section.name}.png", out_dir / f"{section.name}.csv"
    fig.tight_layout()
    import io

    buffer = io.BytesIO()  # rendered in memory, written by us: matplotlib's writes can miss a full disk
    fig.savefig(buffer, dpi=90, format="png")
    _plt().close(fig)
    png.write_bytes(buffer.getvalue())
    data.to_csv(csv, index=False)
    section.png_path, section.csv_path = str(png), str(csv)
    if "cell_id" in data.columns:
        section.cell_ids = sorted({int(i) for i in data["cell_id"]})
    return section


def _rows(sel, columns: list[str]):
    out = sel[["id", *columns, "is_estimate", "warnings"]].rename(columns={"id": "cell_id"})
    return out.reset_index(drop=True)


def _plot_series(ax, data, x: str, y: str, label: str, **kw: Any) -> None:
    data = data.sort_values(x)
    measured = data[~data["is_estimate"].astype(bool)]
    est = data[data["is_estimate"].astype(bool)]
    if len(measured):
        ax.plot(measured[x], measured[y], marker="o", label=label, **kw)
    if len(est):
        ax.plot(est[x], est[y], marker="o", linestyle=":", markerfacecolor="none",
                label=f"{label} (estimate)", **kw)
    flagged = data[data["warnings"] != ""]
    if len(flagged):  # a red ring marks measurements the meter flagged
        ax.scatter(flagged[x], flagged[y], s=120, facecolors="none", edgecolors="red", zorder=5)


def fig2_lengths(df, out_dir: Path, model: str) -> Section:
    """Energy vs input length and vs output length per batch size; total, prefill, decode."""
    sec = Section("fig2_lengths", "Energy vs input and output length (Figure 2)",
                  f"{model}, hf/eager greedy; top: output {REF_OUTPUT_TOKENS} tokens, bottom: input "
                  f"{REF_INPUT_TOKENS} tokens. Energy of one batch; red rings are flagged measurements.")
    base = latest_per_spec(offline(df, model=model, engine="hf", mode="eager", decoding="greedy",
                                   tensor_parallel=1))
    by_in = base[base["output_tokens"] == REF_OUTPUT_TOKENS]
    by_out = base[base["input_tokens"] == REF_INPUT_TOKENS]
    ok_in = any(by_in[by_in["batch_size"] == b]["input_tokens"].nunique() >= 2 for b in by_in["batch_size"].unique())
    ok_out = any(by_out[by_out["batch_size"] == b]["output_tokens"].nunique() >= 2
                 for b in by_out["batch_size"].unique())
    if not (ok_in and ok_out):
        present_in = set(zip(by_in["batch_size"], by_in["input_tokens"]))
        present_out = set(zip(by_out["batch_size"], by_out["output_tokens"]))
        sec.missing = missing_grid(model, present_in, ("batch_size", "input_tokens"),
                                   [(b, i) for b in PAPER_BATCHES for i in PAPER_INPUTS],
                                   output_tokens=REF_OUTPUT_TOKENS)
        sec.missing += missing_grid(model, present_out, ("batch_size", "output_tokens"),
                                    [(b, o) for b in PAPER_BATCHES for o in PAPER_OUTPUTS],
                                    input_tokens=REF_INPUT_TOKENS)
        return sec
    # A batch size with a single length is not a curve (e.g. a trace-bin cell): left out.
    by_in = by_in.groupby("batch_size").filter(lambda g: g["input_tokens"].nunique() >= 2)
    by_out = by_out.groupby("batch_size").filter(lambda g: g["output_tokens"].nunique() >= 2)
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    metrics = (("energy_j", "total"), ("prefill_energy_j", "prefill"), ("decode_energy_j", "decode"))
    for row, (data, x) in enumerate(((by_in, "input_tokens"), (by_out, "output_tokens"))):
        for col, (metric, title) in enumerate(metrics):
            ax = axes[row][col]
            for b in sorted(data["batch_size"].unique()):
                part = data[data["batch_size"] == b]
                if metric in part.columns and part[metric].notna().any():
                    _plot_series(ax, part[part[metric].notna()], x, metric, f"batch {b}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(x.replace("_", " "))
            ax.set_ylabel(f"{title} energy (J)")
            ax.set_title(f"{title} vs {x.split('_')[0]} length")
            ax.legend(fontsize=7)
    cols = ["model", "batch_size", "input_tokens", "output_tokens", "energy_j", "prefill_energy_j",
            "decode_energy_j", "duration_s"]
    import pandas as pd

    both = pd.concat([by_in.assign(sweep="input"), by_out.assign(sweep="output")])
    return save(sec, fig, _rows(both, ["sweep", *[c for c in cols if c in both.columns]]), out_dir)


def _at_reference(df, model: str, **eq: Any):
    return latest_per_spec(offline(df, model=model, input_tokens=REF_INPUT_TOKENS,
                                   output_tokens=REF_OUTPUT_TOKENS, **eq))


def fig3_decoding(df, out_dir: Path, model: str) -> Section:
    """Energy per output token of each decoding strategy vs batch size (hf eager)."""
    sec = Section("fig3_decoding", "Decoding strategies vs batch size (Figure 3)",
                  f"{model}, hf/eager, {REF_INPUT_TOKENS} in / {REF_OUTPUT_TOKENS} out.")
    sel = _at_reference(df, model, engine="hf", mode="eager", tensor_parallel=1)
    if sel["decoding"].nunique() < 2:
        present = set(zip(sel["decoding"], sel["batch_size"]))
        sec.missing = missing_grid(model, present, ("decoding", "batch_size"),
                                   [(d, b) for d in DECODINGS for b in DECODING_BATCHES])
        return sec
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dec in DECODINGS + tuple(sorted(set(sel["decoding"]) - set(DECODINGS))):
        part = sel[sel["decoding"] == dec]
        if len(part):
            _plot_series(ax, part, "batch_size", "energy_per_output_token_j", dec)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("energy per output token (J)")
    ax.legend(fontsize=8)
    return save(sec, fig, _rows(sel, ["model", "decoding", "batch_size", "energy_j",
                                      "energy_per_output_token_j", "duration_s"]), out_dir)


def _is_moe(row) -> bool:
    params, active = row.get("model_params"), row.get("model_active_params")
    try:
        if params is not None and active is not None and float(active) < 0.9 * float(params):
            return True
    except (TypeError, ValueError):
        pass
    return "moe" in str(row.get("model", "")).lower()


def fig4_moe(df, out_dir: Path, model: str, store=None) -> Section:
    """MoE vs dense models: energy per output token at batch 1 and 8 (hf eager greedy)."""
    sec = Section("fig4_moe", "Mixture-of-experts vs dense models (Figure 4)",
                  f"hf/eager greedy, {REF_INPUT_TOKENS} in / {REF_OUTPUT_TOKENS} out; hatched bars are MoE.")
    sel = latest_per_spec(offline(df, engine="hf", mode="eager", decoding="greedy", tensor_parallel=1,
                                  input_tokens=REF_INPUT_TOKENS, output_tokens=REF_OUTPUT_TOKENS))
    active = _active_params(store, sel)
    sel = sel.assign(model_params=[active.get(i, (None, None))[0] for i in sel["id"]],
                     model_active_params=[active.get(i, (None, None))[1] for i in sel["id"]])
    sel = sel.assign(moe=[_is_moe(r) for r in sel.to_dict("records")])
    if not (sel["moe"].any() and (~sel["moe"]).any()):
        present = set(zip(sel["model"], sel["batch_size"]))
        sec.missing = [MissingCell(model=m, batch_size=b) for m in MOE_GRID for b in (1, 8)
                       if (m, b) not in present]
        return sec
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = sorted(sel["model"].unique(), key=lambda m: (sel[sel["model"] == m]["moe"].any(), m))
    batches = sorted(sel["batch_size"].unique())
    width = 0.8 / max(len(batches), 1)
    for k, b in enumerate(batches):
        for j, m in enumerate(models):
            part = sel[(sel["model"] == m) & (sel["batch_size"] == b)]
            if len(part):
                r = part.iloc[-1]
                ax.bar(j + k * width, r["energy_per_output_token_j"], width, color=f"C{k}",
                       hatch="//" if r["moe"] else None, label=f"batch {b}" if j == 0 else None,
                       alpha=0.5 if r["is_estimate"] else 1.0)
    ax.set_xticks([j + width * (len(batches) - 1) / 2 for j in range(len(models))], models, fontsize=8)
    ax.set_ylabel("energy per output token (J)")
    ax.legend(fontsize=8)
    return save(sec, fig, _rows(sel, ["model", "moe", "model_params", "model_active_params", "batch_size",
                                      "energy_j", "energy_per_output_token_j"]), out_dir)


def _active_params(store, sel) -> dict[int, tuple[Any, Any]]:
    """Total and active parameter counts from each cell's provenance (MoE detection)."""
    out: dict[int, tuple[Any, Any]] = {}
    if store is None:
        return out
    for cid in sel["id"]:
        rec = store.get(int(cid))
        if rec is not None:
            out[int(cid)] = (rec.provenance.get("model_params"), rec.provenance.get("model_active_params"))
    return out


def fig5_engines(df, out_dir: Path, model: str) -> Section:
    """Engines and modes vs batch size: energy per output token and throughput (greedy, tp 1)."""
    sec = Section("fig5_engines", "Engines and execution modes vs batch size (Figure 5)",
                  f"{model}, greedy, {REF_INPUT_TOKENS} in / {REF_OUTPUT_TOKENS} out, one GPU.")
    sel = _at_reference(df, model, decoding="greedy", tensor_parallel=1)
    combos = sorted(set(zip(sel["engine"], sel["mode"])))
    if len(combos) < 2:
        sec.missing = missing_grid(model, set(zip(sel["engine"], sel["mode"], sel["batch_size"])),
                                   ("engine", "mode", "batch_size"),
                                   [(e, m, b) for e, m in ENGINE_MODES for b in DECODING_BATCHES])
        return sec
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for engine, mode in combos:
        part = sel[(sel["engine"] == engine) & (sel["mode"] == mode)]
        _plot_series(axes[0], part, "batch_size", "energy_per_output_token_j", f"{engine}/{mode}")
        _plot_series(axes[1], part, "batch_size", "throughput_tokens_per_s", f"{engine}/{mode}")
    for ax, ylabel in zip(axes, ("energy per output token (J)", "throughput (output tokens/s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    return save(sec, fig, _rows(sel, ["model", "engine", "mode", "batch_size", "energy_j",
                                      "energy_per_output_token_j", "throughput_tokens_per_s"]), out_dir)


def fig6_parallel(df, out_dir: Path, model: str) -> Section:
    """Tensor parallelism: latency of one batch vs its energy, per GPU count and batch size."""
    sec = Section("fig6_parallel", "Tensor parallelism: latency vs energy (Figure 6)",
                  f"{model}, {REF_INPUT_TOKENS} in / {REF_OUTPUT_TOKENS} out; one line per GPU count, "
                  "points labelled with the batch size.")
    sel = _at_reference(df, model, decoding="greedy")
    multi = sel[sel["tensor_parallel"] > 1]
    pairs = set(zip(multi["engine"], multi["mode"]))
    # A boolean Series, not a list: an empty list would select columns and drop them all.
    sel = sel[sel.apply(lambda r: (r["engine"], r["mode"]) in pairs, axis=1).astype(bool)] if len(sel) else sel
    if multi.empty or (sel["tensor_parallel"] == 1).sum() == 0:
        engine, mode = next(iter(pairs)) if pairs else ("vllm", "graphs")
        present = set(zip(sel["tensor_parallel"], sel["batch_size"]))
        sec.missing = missing_grid(model, present, ("tensor_parallel", "batch_size"),
                                   [(t, b) for t in (1, 2, 4) for b in (8, 64)], engine=engine, mode=mode)
        return sec
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (engine, mode, tp), part in sel.groupby(["engine", "mode", "tensor_parallel"]):
        part = part.sort_values("batch_size")
        _plot_series(ax, part, "duration_s", "energy_j", f"{engine}/{mode} {tp} GPU")
        for _, r in part.iterrows():
            ax.annotate(f"b{r['batch_size']}", (r["duration_s"], r["energy_j"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency of one batch (s)")
    ax.set_ylabel("energy of one batch (J)")
    ax.legend(fontsize=8)
    return save(sec, fig, _rows(sel, ["model", "engine", "mode", "tensor_parallel", "batch_size",
                                      "duration_s", "energy_j", "energy_per_output_token_j"]), out_dir)


OFFLINE_FIGURES: tuple[Callable[..., Section], ...] = (fig2_lengths, fig3_decoding, fig5_engines, fig6_parallel)
