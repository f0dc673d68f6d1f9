"""Assemble the whole report: every figure and table as files, then the HTML page.

A section that fails to render (an unexpected shape in a store written by another version)
becomes a "not available" box with the error, so one bad section never loses the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tokenjoule.report.data import Section, cells_frame, reference_model


@dataclass
class ReportResult:
    out_dir: Path
    index_html: Path
    sections: list[Section] = field(default_factory=list)
    cell_ids: list[int] = field(default_factory=list)  # cells linked from the page


def _safe(name: str, title: str, fn: Callable[[], Section]) -> Section:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - shown in the page, never a lost report
        from tokenjoule.errors import TokenjouleError

        kind = "" if isinstance(exc, TokenjouleError) else f"{type(exc).__name__}: "
        return Section(name, title, unavailable=f"not available: {kind}{' '.join(str(exc).split())}")


def build_report(store, out_dir: str | Path, traces: list[str] | None = None, model: str | None = None,
                 console: Any = None, on_progress: Callable[[str, int, int], None] | None = None,
                 footprint: Any = None, bins: Any = None) -> ReportResult:
    """Write DIR/index.html plus DIR/NAME.png and DIR/NAME.csv for every drawn section.
    `on_progress(section, done, total)` is called before each section (cli draws it; `console`
    is accepted for compatibility and unused). `footprint` (analysis.carbon.Footprint) puts
    kWh, grams CO2e and cost beside the savings. `bins` (workloads.binning.Bins) for the
    workload sections; by default the bins stored with the store's latest sweep, else the
    default ladder (each section says which)."""
    from tokenjoule.report import figures as F
    from tokenjoule.report import figures_parallel as P
    from tokenjoule.report import figures_runs as R
    from tokenjoule.report import tables as T
    from tokenjoule.report.figures_trace import fig7_cdfs
    from tokenjoule.report.html import write_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traces = list(traces or [])
    df = cells_frame(store)
    ref = reference_model(df, model) or (model or "llama-3.1-8b")
    from tokenjoule.workloads.binning import bins_from_store

    bins_source = "given by the caller (--input-bins/--output-bins)"
    if bins is None:
        bins, bins_source = bins_from_store(store, ref)
    # The answer first: savings of the best setup and the workload estimate, then the figures.
    jobs: list[tuple[str, str, Callable[[], Section]]] = [
        ("table_savings", "Savings", lambda: T.savings_table(traces, store, ref, out, footprint, bins, bins_source)),
        ("table_estimate_vs_theory", "Table 4", lambda: T.estimate_vs_theory_table(traces, store, df, ref, out, bins,
                                                                                  bins_source)),
        ("fig2_lengths", "Figure 2", lambda: F.fig2_lengths(df, out, ref)),
        ("fig3_decoding", "Figure 3", lambda: F.fig3_decoding(df, out, ref)),
        ("fig4_moe", "Figure 4", lambda: F.fig4_moe(df, out, ref, store)),
        ("fig5_engines", "Figure 5", lambda: F.fig5_engines(df, out, ref)),
        ("fig6_parallel", "Figure 6", lambda: P.fig6_parallel(df, out, ref)),
        ("fig7_cdfs", "Figure 7", lambda: fig7_cdfs(traces, out)),
        ("fig9_online", "Figure 9", lambda: R.fig9_online(df, out, ref)),
        ("power_timelines", "Power timelines", lambda: R.timelines(df, out, store)),
        ("table_workloads", "Tables 1-3", lambda: T.workload_table(traces, out)),
        ("table_provenance", "Table 5", lambda: T.provenance_table(store, out)),
    ]
    sections = []
    for i, (name, title, fn) in enumerate(jobs):
        if on_progress:
            on_progress(name, i, len(jobs))
        sections.append(_safe(name, title, fn))
    if on_progress:
        on_progress("done", len(jobs), len(jobs))
    linked = sorted({i for s in sections for i in s.cell_ids})
    sweep_file, command = write_missing_sweep(sections, out, store)
    index = write_html(out / "index.html", sections, store, linked, model=ref, traces=traces,
                       sweep_file=sweep_file, sweep_command=command)
    return ReportResult(out, index, sections, linked)


MISSING_SWEEP = "cells-to-measure.yaml"


def sweepable(m) -> bool:
    """An offline cell a sweep can measure (a batch size or max), not an online run."""
    b = m.batch_size
    return (isinstance(b, int) and not isinstance(b, bool) and b >= 1) or b in ("max", "1..max")


def _within_context(m) -> bool:
    """The cell's lengths fit its model's context window (a preset's max_position_embeddings)."""
    from types import SimpleNamespace

    from tokenjoule.errors import TokenjouleError
    from tokenjoule.models.preflight import check_context

    try:
        check_context(SimpleNamespace(model=m.model, input_tokens=m.input_tokens, output_tokens=m.output_tokens))
    except TokenjouleError:
        return False
    return True


def _device_of(store) -> str:
    """The device the store's cells ran on: cuda when any cell names a GPU, else cpu."""
    for rec in store.find(status=None):
        if rec.gpu_name:
            return "cuda"
    return "cpu"


def write_missing_sweep(sections: list[Section], out: Path, store) -> tuple[str | None, str | None]:
    """One sweep config with every cell the sections still need; (file name, command) or (None, None)."""
    import yaml

    cells, seen = [], set()
    for sec in sections:
        for m in sec.missing:
            if m.label() in seen or not sweepable(m) or not _within_context(m):
                continue  # online runs are measured with serve-bench; cells beyond the context cannot run
            seen.add(m.label())
            cell = {"model": m.model, "engine": m.engine, "mode": m.mode, "decoding": m.decoding,
                    "input_tokens": m.input_tokens, "output_tokens": m.output_tokens, "batch_size": m.batch_size}
            if m.tensor_parallel > 1:
                cell["tensor_parallel"] = m.tensor_parallel
            cells.append(cell)
    path = out / MISSING_SWEEP
    if not cells:
        path.unlink(missing_ok=True)
        return None, None
    import shlex

    device = _device_of(store)
    command = shlex.join(["tokenjoule", "sweep", MISSING_SWEEP, "--db", str(store.path), "--device", device])
    header = (f"# the cells the report of {store.path} still needs ({len(cells)})\n"
              f"# measure them with: {command}\n")
    path.write_text(header + yaml.safe_dump({"device": device, "cells": cells}, sort_keys=False))
    return MISSING_SWEEP, command
