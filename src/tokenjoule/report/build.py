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
                 console: Any = None, on_progress: Callable[[str, int, int], None] | None = None) -> ReportResult:
    """Write DIR/index.html plus DIR/NAME.png and DIR/NAME.csv for every drawn section.
    `on_progress(section, done, total)` is called before each section (cli draws it; `console`
    is accepted for compatibility and unused)."""
    from tokenjoule.report import figures as F
    from tokenjoule.report import figures_runs as R
    from tokenjoule.report import tables as T
    from tokenjoule.report.figures_trace import fig7_cdfs
    from tokenjoule.report.html import write_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traces = list(traces or [])
    df = cells_frame(store)
    ref = reference_model(df, model) or (model or "llama-3.1-8b")
    jobs: list[tuple[str, str, Callable[[], Section]]] = [
        ("fig2_lengths", "Figure 2", lambda: F.fig2_lengths(df, out, ref)),
        ("fig3_decoding", "Figure 3", lambda: F.fig3_decoding(df, out, ref)),
        ("fig4_moe", "Figure 4", lambda: F.fig4_moe(df, out, ref, store)),
        ("fig5_engines", "Figure 5", lambda: F.fig5_engines(df, out, ref)),
        ("fig6_parallel", "Figure 6", lambda: F.fig6_parallel(df, out, ref)),
        ("fig7_cdfs", "Figure 7", lambda: fig7_cdfs(traces, out)),
        ("fig9_online", "Figure 9", lambda: R.fig9_online(df, out, ref)),
        ("power_timelines", "Power timelines", lambda: R.timelines(df, out, store)),
        ("table_workloads", "Tables 1-3", lambda: T.workload_table(traces, out)),
        ("table_estimate_vs_theory", "Table 4", lambda: T.estimate_vs_theory_table(traces, store, df, ref, out)),
        ("table_savings", "Savings", lambda: T.savings_table(traces, store, ref, out)),
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
    index = write_html(out / "index.html", sections, store, linked, model=ref, traces=traces)
    return ReportResult(out, index, sections, linked)
