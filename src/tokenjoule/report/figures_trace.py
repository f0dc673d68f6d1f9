"""Figure 7: the real vs binned CDFs of input and output lengths, one row per trace."""

from __future__ import annotations

from pathlib import Path

from tokenjoule.report.data import Section
from tokenjoule.report.figures import _plt, save


def fig7_cdfs(traces: list[str], out_dir: Path) -> Section:
    import numpy as np
    import pandas as pd

    sec = Section("fig7_cdfs", "Real vs binned length distributions (Figure 7)",
                  "Empirical CDFs of each trace's input and output lengths, as sent (solid) and as "
                  "measured after binning to the smallest bin at or above (dashed). Trace data, not cells.")
    if not traces:
        sec.unavailable = "not available: give --trace NAME (e.g. azure-conv-2023) to draw length CDFs"
        return sec
    from tokenjoule.workloads import bin_workload, resolve_workload

    plt = _plt()
    fig, axes = plt.subplots(len(traces), 2, figsize=(10, 3.2 * len(traces)), squeeze=False)
    rows = []
    for r, trace in enumerate(traces):
        binned = bin_workload(resolve_workload(trace))
        for c, (what, real, binv) in enumerate((
                ("input", binned.real_input_tokens, binned.binned_input_tokens),
                ("output", binned.real_output_tokens, binned.binned_output_tokens))):
            ax = axes[r][c]
            for kind, values, style in (("real", real, "-"), ("binned", binv, "--")):
                xs = np.sort(np.asarray(values))
                ys = np.arange(1, len(xs) + 1) / max(len(xs), 1)
                ax.step(xs, ys, style, where="post", label=kind)
                # Keep the CSV small: the CDF at each distinct length.
                uniq, last = np.unique(xs, return_index=False, return_counts=True)
                cum = np.cumsum(last) / max(len(xs), 1)
                rows += [{"trace": trace, "length": what, "kind": kind, "tokens": int(u), "cdf": float(p)}
                         for u, p in zip(uniq, cum)]
            ax.set_xscale("log", base=2)
            ax.set_xlabel(f"{what} tokens")
            ax.set_ylabel("CDF")
            ax.set_title(f"{trace}: {what} ({binned.n_kept} kept, {binned.n_dropped} dropped)", fontsize=9)
            ax.legend(fontsize=8)
    return save(sec, fig, pd.DataFrame(rows), out_dir)
