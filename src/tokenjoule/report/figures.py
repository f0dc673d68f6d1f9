"""The paper's offline figures (2-5; 6 is in figures_parallel) drawn from stored cells, each with its data as CSV.

Each `figN_*` function takes the report's cell frame and an output folder and returns a
`Section`: a PNG + CSV (every CSV row carries the `cell_id` it came from) when the store has
the cells, otherwise the list of cells to measure. Estimates are drawn hollow and named in
the legend; they are never mixed silently with measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tokenjoule.report.data import (REF_INPUT_TOKENS, REF_OUTPUT_TOKENS, MissingCell, Section, ids,
                                    latest_per_spec, missing_grid, offline, one_per_point)

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
    data = one_per_point(data, x).sort_values(x)
    measured = data[~data["is_estimate"].astype(bool)]
    est = data[data["is_estimate"].astype(bool)]
    if len(measured):
        ax.plot(measured[x], measured[y], marker="o", label=label, **kw)
    if len(est):
        ax.plot(est[x], est[y], marker="o", markerfacecolor="none", label=f"{label} (estimate)",
                **(kw | {"linestyle": ":"}))  # estimates dotted whatever style the series has
    flagged = data[data["warnings"] != ""]
    if len(flagged):  # a red ring marks measurements the meter flagged
        ax.scatter(flagged[x], flagged[y], s=120, facecolors="none", edgecolors="red", zorder=5)


def _longest_curve_at(base, fixed: str, vary: str, ref: int):
    """The value of `fixed` whose cells vary `vary` over the most lengths at one batch size
    (the paper's reference length on a tie); None when no batch has two lengths."""
    best, best_n = None, 1
    for value, group in base.groupby(fixed):
        n = max(group[group["batch_size"] == b][vary].nunique() for b in group["batch_size"].unique())
        if n > best_n or (n == best_n and n >= 2 and value == ref):
            best, best_n = value, n
    return best


def fig2_lengths(df, out_dir: Path, model: str) -> Section:
    """Energy vs input length and vs output length per batch size; total, prefill, decode.

    Drawn from whatever cells exist: the curves at the paper's reference lengths when stored,
    else at the fixed length with the most points; the cells still missing from the paper's
    grid are noted under the figure (and listed at the end of the page)."""
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
    present_in = set(zip(by_in["batch_size"], by_in["input_tokens"]))
    present_out = set(zip(by_out["batch_size"], by_out["output_tokens"]))
    missing = missing_grid(model, present_in, ("batch_size", "input_tokens"),
                           [(b, i) for b in PAPER_BATCHES for i in PAPER_INPUTS],
                           output_tokens=REF_OUTPUT_TOKENS) if not ok_in else []
    missing += missing_grid(model, present_out, ("batch_size", "output_tokens"),
                            [(b, o) for b in PAPER_BATCHES for o in PAPER_OUTPUTS],
                            input_tokens=REF_INPUT_TOKENS) if not ok_out else []
    sec.missing = missing
    # Without a sweep at the reference lengths, draw the curve at the fixed length with most points.
    out_fixed = REF_OUTPUT_TOKENS if ok_in else (_longest_curve_at(base, "output_tokens", "input_tokens",
                                                                   REF_OUTPUT_TOKENS) if len(base) else None)
    in_fixed = REF_INPUT_TOKENS if ok_out else (_longest_curve_at(base, "input_tokens", "output_tokens",
                                                                  REF_INPUT_TOKENS) if len(base) else None)
    if out_fixed is None and in_fixed is None:
        return sec
    sec.caption = (f"{model}, hf/eager greedy; top: output {out_fixed or REF_OUTPUT_TOKENS} tokens, bottom: input "
                   f"{in_fixed or REF_INPUT_TOKENS} tokens. Energy of one batch; red rings are flagged measurements.")
    if missing and ok_in != ok_out:  # one sweep drawn, the other not measured yet: say which cells would complete it
        sec.notes.append(f"partly measured: the {'output' if ok_in else 'input'}-length sweep is missing "
                         f"({len(missing)} cells, e.g. {missing[0].command()}; all under Cells still to measure)")
    elif missing:
        sec.notes.append(f"drawn from the cells that exist; {len(missing)} point(s) of the paper's grid are not "
                         "measured yet (listed under Cells still to measure)")
    by_in = base[base["output_tokens"] == out_fixed] if out_fixed is not None else base.iloc[0:0]
    by_out = base[base["input_tokens"] == in_fixed] if in_fixed is not None else base.iloc[0:0]
    # A batch size with a single length is not a curve (e.g. a trace-bin cell): left out.
    by_in = by_in.groupby("batch_size").filter(lambda g: g["input_tokens"].nunique() >= 2)
    by_out = by_out.groupby("batch_size").filter(lambda g: g["output_tokens"].nunique() >= 2)
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    metrics = (("energy_j", "total"), ("prefill_energy_j", "prefill"), ("decode_energy_j", "decode"))
    for row, (data, x) in enumerate(((by_in, "input_tokens"), (by_out, "output_tokens"))):
        for col, (metric, title) in enumerate(metrics):
            ax = axes[row][col]
            drawn = False
            for b in sorted(data["batch_size"].unique()):
                part = data[data["batch_size"] == b]
                if metric in part.columns and part[metric].notna().any():
                    _plot_series(ax, part[part[metric].notna()], x, metric, f"batch {b}")
                    drawn = True
            ax.set_xlabel(x.replace("_", " "))
            ax.set_ylabel(f"{title} energy (J)")
            ax.set_title(f"{title} vs {x.split('_')[0]} length")
            if drawn:
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.legend(fontsize=7)
            else:  # the other sweep of a partly measured store
                ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes, color="#777")
                ax.set_xticks([])
                ax.set_yticks([])
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
    hf = _at_reference(df, model, engine="hf", mode="eager", tensor_parallel=1)
    spec_sel = _speculative_brackets(_at_reference(df, model, decoding="speculative", tensor_parallel=1))
    # the greedy baseline of every other engine/mode that has speculative cells
    others = set(zip(spec_sel["engine"], spec_sel["mode"])) - {("hf", "eager")}
    greedy = _at_reference(df, model, decoding="greedy", tensor_parallel=1)
    base = greedy[[(e, m) in others for e, m in zip(greedy["engine"], greedy["mode"])]] if len(greedy) else greedy
    hf = hf[hf["decoding"] != "speculative"]
    suffix = " hf/eager" if others else ""  # name the engine once several are drawn
    series = [(d + suffix, hf[hf["decoding"] == d])
              for d in DECODINGS + tuple(sorted(set(hf["decoding"]) - set(DECODINGS)))]
    series += [(f"greedy {e}/{m}", base[(base["engine"] == e) & (base["mode"] == m)]) for e, m in sorted(others)]
    series += [(label, part) for label, part in spec_sel.groupby("bracket", sort=True)] if len(spec_sel) else []
    series = [(label, part) for label, part in series if len(part)]
    if len(series) < 2:
        present = set(zip(hf["decoding"], hf["batch_size"]))
        sec.missing = missing_grid(model, present, ("decoding", "batch_size"),
                                   [(d, b) for d in DECODINGS for b in DECODING_BATCHES])
        return sec
    if len(spec_sel):
        sec.notes.append("speculative series are bracketed by their measured acceptance rate (random weights: a "
                         "separate draft ~0, the target drafting for itself or n-gram on repeating prompts ~1); "
                         "a real draft lies between. tokenjoule speculative gives the interpolation.")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, part in series:
        style = {"linestyle": "--"} if label.endswith("acceptance ~1") else {}  # the brackets may overlap
        _plot_series(ax, part, "batch_size", "energy_per_output_token_j", label, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("energy per output token (J)")
    ax.legend(fontsize=8)
    import pandas as pd

    sel = pd.concat([part.assign(series=label) for label, part in series])
    if "acceptance_rate" not in sel.columns:
        sel = sel.assign(acceptance_rate=None)
    return save(sec, fig, _rows(sel, ["model", "engine", "mode", "decoding", "series", "acceptance_rate",
                                      "batch_size", "energy_j", "energy_per_output_token_j", "duration_s"]),
                out_dir)


def _speculative_brackets(sel):
    """Speculative cells with a `bracket` label: engine/mode and the acceptance class of the
    cell's measured rate (~0 below 0.25, ~1 above 0.75, else "mid"; none recorded: "unknown")."""
    if sel.empty:
        return sel.assign(bracket=[])
    rates = sel["acceptance_rate"] if "acceptance_rate" in sel.columns else [None] * len(sel)

    def cls(r: Any) -> str:
        if r is None or r != r:
            return "acceptance unknown"
        return "acceptance ~0" if r < 0.25 else "acceptance ~1" if r > 0.75 else "acceptance mid"
    return sel.assign(bracket=[f"speculative {e}/{m}, {cls(r)}" for e, m, r in zip(sel["engine"], sel["mode"], rates)])


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
        labelled = False  # one legend entry per batch, on its first bar (not the first model's)
        for j, m in enumerate(models):
            part = sel[(sel["model"] == m) & (sel["batch_size"] == b)]
            if len(part):
                r = part.iloc[-1]
                ax.bar(j + k * width, r["energy_per_output_token_j"], width, color=f"C{k}",
                       hatch="//" if r["moe"] else None, label=None if labelled else f"batch {b}",
                       alpha=0.5 if r["is_estimate"] else 1.0)
                labelled = True
    ax.set_xticks([j + width * (len(batches) - 1) / 2 for j in range(len(models))],
                  [_param_label(m, sel[sel["model"] == m]) for m in models], fontsize=8)
    ax.set_ylabel("energy per output token (J)")
    ax.legend(fontsize=8)
    return save(sec, fig, _rows(sel, ["model", "moe", "model_params", "model_active_params", "batch_size",
                                      "energy_j", "energy_per_output_token_j"]), out_dir)


def _param_label(model: str, rows) -> str:
    """`model` and its active / total parameter counts (billions) for the axis."""
    total, active = rows["model_params"].dropna(), rows["model_active_params"].dropna()
    if total.empty or active.empty:
        return model
    return f"{model}\n{float(active.iloc[-1]) / 1e9:.2f}B active / {float(total.iloc[-1]) / 1e9:.2f}B"


def _preset_params(model: str) -> tuple[Any, Any]:
    """(total, active) parameters of a preset's architecture; (None, None) for other models."""
    try:
        from tokenjoule.models.architecture import architecture_from_config
        from tokenjoule.models.registry import list_presets, load_preset_config

        if model not in list_presets():
            return None, None
        arch = architecture_from_config(load_preset_config(model))
        return arch.params_total, arch.params_active
    except Exception:  # noqa: BLE001 - a label only; the bar is drawn either way
        return None, None


def _active_params(store, sel) -> dict[int, tuple[Any, Any]]:
    """Total and active parameter counts from each cell's provenance (MoE detection)."""
    out: dict[int, tuple[Any, Any]] = {}
    for cid, model in zip(sel["id"], sel["model"]):
        rec = store.get(int(cid)) if store is not None else None
        counts = (rec.provenance.get("model_params"), rec.provenance.get("model_active_params")) if rec else (None, None)
        out[int(cid)] = counts if None not in counts else _preset_params(str(model))
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


# Figure 6 (tensor parallelism) is report.figures_parallel.fig6_parallel.
OFFLINE_FIGURES: tuple[Callable[..., Section], ...] = (fig2_lengths, fig3_decoding, fig5_engines)
