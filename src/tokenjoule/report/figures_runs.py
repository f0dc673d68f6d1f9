"""Figures that need more than the flat cell frame: offline vs online (Figure 9) and power
timelines of selected cells (from each measurement's stored samples)."""

from __future__ import annotations

from pathlib import Path

from tokenjoule.report.data import (REF_INPUT_TOKENS, REF_OUTPUT_TOKENS, MissingCell, Section,
                                    latest_per_spec, offline)
from tokenjoule.report.figures import _plt, save

MAX_TIMELINES = 4


def fig9_online(df, out_dir: Path, model: str) -> Section:
    """Energy per request of online runs (vs arrival rate) next to offline batches of the same
    engine and mode (horizontal lines, at the reference lengths)."""
    import pandas as pd

    sec = Section("fig9_online", "Offline batches vs online serving (Figure 9)",
                  f"{model}: J per request of online runs at each arrival rate; dashed lines are offline "
                  f"batches of the same engine/mode at {REF_INPUT_TOKENS} in / {REF_OUTPUT_TOKENS} out "
                  "(greedy, one GPU). Lengths differ between the two; compare trends, not single points.")
    online = df[(df["kind"] == "online") & (df["model"] == model)] if len(df) else df
    if online.empty:
        sec.missing = [MissingCell(model=model, engine="vllm", mode="graphs", batch_size="online")]
        sec.notes.append("measure online runs with: tokenjoule serve-bench --launch vllm --model "
                         f"{model} (several arrival rates)")
        return sec
    rows = []
    for _, r in online.iterrows():
        arrival = _arrival(r.get("arrival"))
        rate = arrival.get("rate_rps") or arrival.get("rate")
        rows.append({"cell_id": int(r["id"]), "kind": "online", "engine": r["engine"], "mode": _mode(r["mode"]),
                     "rate_rps": rate, "concurrency": arrival.get("concurrency"), "batch_size": None,
                     "energy_per_request_j": r.get("energy_per_request_j"),
                     "is_estimate": bool(r["is_estimate"]), "warnings": r["warnings"]})
    pairs = {(r["engine"], r["mode"]) for r in rows}
    for engine, mode in sorted(pairs, key=lambda p: (str(p[0]), str(p[1]))):
        off = latest_per_spec(offline(df, model=model, engine=engine, mode=mode, decoding="greedy",
                                      tensor_parallel=1, input_tokens=REF_INPUT_TOKENS,
                                      output_tokens=REF_OUTPUT_TOKENS))
        for _, r in off.iterrows():
            rows.append({"cell_id": int(r["id"]), "kind": "offline", "engine": engine, "mode": mode,
                         "rate_rps": None, "batch_size": int(r["batch_size"]),
                         "energy_per_request_j": r["energy_per_request_j"],
                         "is_estimate": bool(r["is_estimate"]), "warnings": r["warnings"]})
    data = pd.DataFrame(rows)
    online_rows = data[data["kind"] == "online"]
    # x: the arrival rate; closed-loop runs have none, then their concurrency; else the run's order.
    if online_rows["rate_rps"].notna().any():
        x_col, x_label = "rate_rps", "arrival rate (requests/s)"
    elif "concurrency" in data.columns and online_rows["concurrency"].notna().any():
        x_col, x_label = "concurrency", "clients in flight (closed loop)"
    else:
        data["run"] = None
        data.loc[data["kind"] == "online", "run"] = range(1, len(online_rows) + 1)
        x_col, x_label = "run", "online run"
    skipped = int(online_rows[x_col].isna().sum()) if x_col != "run" else 0
    if skipped:
        sec.notes.append(f"{skipped} online run(s) without a {x_label.split(' (')[0]} are not drawn")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (engine, mode) in enumerate(sorted(pairs, key=lambda p: (str(p[0]), str(p[1])))):
        same_mode = data["mode"].isna() if mode is None else (data["mode"] == mode)  # None == None is False in pandas
        on = data[(data["kind"] == "online") & (data["engine"] == engine) & same_mode]
        on = on[on[x_col].notna()].sort_values(x_col)
        setup = f"{engine}/{mode}" if mode else f"{engine}"
        ax.plot(on[x_col].astype(float), on["energy_per_request_j"], marker="o", color=f"C{k}",
                label=f"online {setup}")
        off = data[(data["kind"] == "offline") & (data["engine"] == engine) & same_mode]
        for _, r in off.iterrows():
            ax.axhline(r["energy_per_request_j"], color=f"C{k}", linestyle="--", linewidth=0.8)
            ax.annotate(f"offline b{int(r['batch_size'])}", (ax.get_xlim()[0], r["energy_per_request_j"]),
                        fontsize=7, color=f"C{k}")
    ax.set_xlabel(x_label)
    ax.set_ylabel("energy per request (J)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save(sec, fig, data, out_dir)


def _mode(value):
    """An online run's mode; None (not NaN) when the engine has none (transformers serve)."""
    return None if value is None or (isinstance(value, float) and value != value) else value


def _arrival(value) -> dict:
    import json

    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, dict) else {}
        except ValueError:
            return {}
    return {}


def timelines(df, out_dir: Path, store) -> Section:
    """Power vs time of up to MAX_TIMELINES cells with stored samples; flagged cells first."""
    import pandas as pd

    sec = Section("power_timelines", "Power timelines of selected cells",
                  "Sampled GPU power during one measurement window, per device. Flagged windows are "
                  "chosen first; the counter's energy is the authority, the timeline shows its shape.")
    chosen, rows = [], []
    candidates = sorted(df.to_dict("records"),
                        key=lambda r: (r["warnings"] == "", r["kind"] != "offline", -int(r["id"])))
    for rec_row in candidates:
        if len(chosen) >= MAX_TIMELINES:
            break
        rec = store.get(int(rec_row["id"]))
        samples = (rec.measurement or {}).get("samples") if rec else None
        if not samples:
            continue
        chosen.append((rec_row, samples))
        for t_s, powers in samples:
            for dev, p in enumerate(powers):
                rows.append({"cell_id": int(rec_row["id"]), "t_s": t_s, "device": dev, "power_w": p})
    if not chosen:
        sec.unavailable = ("not available: no stored cell has a power timeline (the meter's sampler "
                           "was off or the measurements are estimates)")
        return sec
    plt = _plt()
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 2.2 * len(chosen)), squeeze=False)
    for ax, (r, samples) in zip(axes[:, 0], chosen):
        n_dev = len(samples[0][1])
        for dev in range(n_dev):
            ax.plot([s[0] for s in samples], [s[1][dev] for s in samples], label=f"GPU {dev}")
        label = f"cell {r['id']}: {r['model']} {r['engine']}/{r['mode']}"
        if r["kind"] == "offline":
            label += f" b{int(r['batch_size'])} in{int(r['input_tokens'])} out{int(r['output_tokens'])}"
        else:
            label += " online"
        if r["warnings"]:
            label += f"  [flagged: {r['warnings']}]"
        ax.set_title(label, fontsize=8, color="red" if r["warnings"] else "black")
        ax.set_ylabel("power (W)")
        if n_dev > 1:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("time since window opened (s)")
    return save(sec, fig, pd.DataFrame(rows), out_dir)
