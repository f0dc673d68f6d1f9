"""`tokenjoule report` (figures, tables, one HTML page) and `tokenjoule recommend`.

Only light packages are imported here; pandas/matplotlib load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tokenjoule.cli.options import (TraceReading, carbon_intensity_option, columns_option, db_option,
                                    footprint_from_cli, load_workload, map_trace_files, one_trace, open_existing_store,
                                    parse_traces,
                                    price_option, pue_option, region_option, resolve_db, time_unit_option,
                                    trace_format_option)


def _open_store(ctx: typer.Context, db: Optional[str]):
    return open_existing_store(resolve_db(ctx, db), "results store")


def report(
    ctx: typer.Context,
    db: Optional[str] = db_option(),
    out: Path = typer.Option(Path("report"), "-o", "--out", "--output",
                             help="Output folder (index.html, PNGs, CSVs)."),
    trace: Optional[list[str]] = typer.Option(None, "--trace", help="Trace name or path (repeatable, or "
                                              "comma-separated)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model of the single-model figures "
                                        "(default: the most-measured one)."),
    carbon_intensity: Optional[float] = carbon_intensity_option(),
    region: Optional[str] = region_option(),
    price: Optional[float] = price_option(),
    pue: Optional[float] = pue_option(),
    trace_format: Optional[str] = trace_format_option(),
    columns: Optional[str] = columns_option(),
    time_unit: Optional[str] = time_unit_option(),
    input_bins: Optional[str] = typer.Option(None, "--input-bins", help="Input bin edges of the workload sections "
                                             "(default: the bins stored with the latest sweep, else powers of two)."),
    output_bins: Optional[str] = typer.Option(None, "--output-bins", help="Output bin edges."),
) -> None:
    """Write the paper's figures and tables for this store as PNG + CSV and one HTML page."""
    from rich.console import Console

    from tokenjoule.paths import ensure_output_dir
    from tokenjoule.report.build import build_report

    console = Console(stderr=True)
    footprint = footprint_from_cli(carbon_intensity, region, price, pue)

    ensure_output_dir(out, "report folder")  # before any work: a bad -o is one line
    from tokenjoule.cli.estimate import _binning

    bins = _binning(input_bins, output_bins) if input_bins is not None or output_bins is not None else None
    traces = map_trace_files(parse_traces(trace), TraceReading.from_cli(trace_format, columns, time_unit),
                             out / "traces")
    store = _open_store(ctx, db)
    try:
        with report_progress(console) as on_progress:
            result = build_report(store, out, traces=traces, model=model, on_progress=on_progress,
                                  footprint=footprint, bins=bins)
    except OSError as exc:  # e.g. the device filled up while writing figures
        raise TokenjouleError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    finally:
        store.close()
    drawn = sum(1 for s in result.sections if s.drawn)
    console.print(f"[green]wrote[/green] {result.index_html} ({drawn} of {len(result.sections)} "
                  f"figures/tables drawn; {len(result.cell_ids)} cells linked)")
    for s in result.sections:
        if not s.drawn:
            why = s.unavailable or f"missing {len(s.missing)} cell(s)"
            console.print(f"  [yellow]{s.name}[/yellow]: {why}")


class report_progress:
    """A transient rich bar over the report's sections (build_report's on_progress)."""

    def __init__(self, console: Any):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(),
                                 console=console, transient=True, disable=console is None)
        self.task: Any = None

    def __enter__(self) -> Any:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, section: str, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("report", total=total)
        self.progress.update(self.task, description=section, completed=done)


def recommend(
    ctx: typer.Context,
    trace: list[str] = typer.Option(..., "--trace", help="Trace name, path, or task:NAME (one)."),
    db: Optional[str] = db_option(),
    model: Optional[str] = typer.Option(None, "--model", help="Model (default: the most-measured one)."),
    slo_ttft_ms: Optional[float] = typer.Option(None, "--slo-ttft-ms", min=0, help="Time to first token limit."),
    slo_tpot_ms: Optional[float] = typer.Option(None, "--slo-tpot-ms", min=0, help="Time per output token limit."),
    max_gpus: Optional[int] = typer.Option(None, "--max-gpus", min=1, help="Most GPUs a configuration may use."),
    include_estimates: bool = typer.Option(False, "--include-estimates",
                                           help="Also rank CPU-time estimates (labelled as such)."),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendation as JSON."),
    rounding: str = typer.Option("paper", "--rounding",
                                 help="Partly filled batches: paper (N/B, default, as `estimate`), ceil (a "
                                      "partly filled batch costs a full one) or measured (its own cell's energy)."),
    input_bins: Optional[str] = typer.Option(None, "--input-bins", help="Input bin edges (default: the bins "
                                             "stored with the sweep, else powers of two)."),
    output_bins: Optional[str] = typer.Option(None, "--output-bins", help="Output bin edges."),
    trace_format: Optional[str] = trace_format_option(),
    columns: Optional[str] = columns_option(),
    time_unit: Optional[str] = time_unit_option(),
    carbon_intensity: Optional[float] = carbon_intensity_option(),
    region: Optional[str] = region_option(),
    price: Optional[float] = price_option(),
    pue: Optional[float] = pue_option(),
) -> None:
    """The lowest-energy measured configuration for a trace that meets the SLOs (exit 1 if none)."""
    from tokenjoule.analysis.recommend import RecommendationError, recommend_trace
    from tokenjoule.analysis.rounding import check_rounding

    footprint = footprint_from_cli(carbon_intensity, region, price, pue)
    rounding = check_rounding(rounding)
    name = one_trace(trace, "recommend")
    workload = load_workload(name, TraceReading.from_cli(trace_format, columns, time_unit))
    from tokenjoule.cli.estimate import _binning, bins_for, bins_line

    if input_bins is not None or output_bins is not None:
        _binning(input_bins, output_bins)
    store = _open_store(ctx, db)
    try:
        from tokenjoule.analysis.recommend import default_model

        bins, bins_source = bins_for(store, model or default_model(store), input_bins, output_bins)
        rec, binned = recommend_trace(name, store, model=model, workload=workload, bins=bins, slo_ttft_ms=slo_ttft_ms,
                                      slo_tpot_ms=slo_tpot_ms, max_gpus=max_gpus,
                                      include_estimates=include_estimates, rounding=rounding)
    except RecommendationError as exc:
        if not as_json:
            raise
        typer.echo(json.dumps({"error": str(exc), "missing_cells": exc.missing}, indent=2))
        raise typer.Exit(code=exc.exit_code)
    finally:
        store.close()
    from tokenjoule.cli.estimate import _warn_dropped

    _warn_dropped(binned)
    if as_json:
        data = rec.to_dict()
        data["binning"] = {"n_total": binned.n_total, "n_kept": binned.n_kept, "n_dropped": binned.n_dropped,
                           "dropped_reasons": binned.dropped_reasons, **bins.to_dict(), "source": bins_source}
        data["footprint"] = {**footprint.to_dict(), **{
            role: footprint.of_energy_j(c.total_energy_j) for role, c in
            (("best", rec.best), ("runner_up", rec.runner_up), ("baseline", rec.baseline)) if c is not None}}
        typer.echo(json.dumps(data, indent=2))
        return
    _print_recommendation(rec, binned, footprint)
    from rich.console import Console

    Console().print(bins_line(bins, bins_source), soft_wrap=True)


def _print_recommendation(rec, binned, footprint=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    slo = ", ".join(s for s in (f"TTFT <= {rec.slo_ttft_ms:g} ms" if rec.slo_ttft_ms is not None else "",
                                f"TPOT <= {rec.slo_tpot_ms:g} ms" if rec.slo_tpot_ms is not None else "") if s)
    console.print(f"[bold]{rec.trace}[/bold] with {rec.model}: {binned.n_kept} requests in "
                  f"{len(binned.counts)} bins ({binned.n_dropped} dropped beyond the largest bin); "
                  f"SLOs: {slo or 'none'}")
    best = rec.best
    console.print(f"recommended: [bold]{best.config.label}[/bold]" + (" (estimate)" if best.estimate else "")
                  + f"; {best.total_energy_j:,.1f} J for the trace", soft_wrap=True)
    columns = ["", "configuration", "total (J)", "kWh", "J / request"]
    show_fp = footprint is not None and footprint.active
    if show_fp:
        columns += ["g CO2e", "cost"]
    table = Table(*columns, title="configurations")
    for role, cand in (("best", rec.best), ("runner-up", rec.runner_up), ("baseline", rec.baseline)):
        if cand is None or cand.total_energy_j is None:
            continue
        label = cand.config.label + (" (estimate)" if cand.estimate else "")
        row = [role, label, f"{cand.total_energy_j:,.1f}", f"{cand.total_energy_j / 3.6e6:.3g}",
               f"{cand.total_energy_j / rec.n_requests:.3g}"]
        if show_fp:
            fp = footprint.of_energy_j(cand.total_energy_j)
            row += ["n/a" if fp["co2e_g"] is None else f"{fp['co2e_g']:.3g}",
                    "n/a" if fp["cost"] is None else f"{fp['cost']:.3g}"]
        table.add_row(*row)
    console.print(table)
    bins = Table("bin (in/out)", "requests", "batch", "batches", "energy (J)", "TTFT (ms)", "TPOT (ms)", "cell",
                 title="best configuration per bin" if best.config.kind == "offline" else "best configuration")
    for b in best.bins:
        name = f"{b.input_tokens}/{b.output_tokens}" if best.config.kind == "offline" else "whole trace (online)"
        bins.add_row(name, str(b.n_requests), str(b.batch_size or "—"), str(b.batches), f"{b.energy_j:,.1f}",
                     "—" if b.ttft_ms is None else f"{b.ttft_ms:.3g}",
                     "—" if b.tpot_ms is None else f"{b.tpot_ms:.3g}",
                     str(b.cell_id) + (" ⚑" if b.flags else ""))
    console.print(bins)
    if rec.savings_fraction is not None:
        console.print(f"savings vs baseline (hf/eager greedy, 1 GPU): [bold]{100 * rec.savings_fraction:.1f}%[/bold]")
    if rec.baseline_note:
        console.print(f"[yellow]note:[/yellow] {rec.baseline_note}")
    if show_fp:
        if footprint.pue != 1.0:
            console.print(f"CO2e and cost are of facility energy: kWh x PUE {footprint.pue:g}")
        if footprint.note():
            console.print(footprint.note(), soft_wrap=True)
    flagged = sorted({f for b in rec.best.bins for f in b.flags})
    if flagged:
        console.print(f"[yellow]the best configuration uses flagged measurements:[/yellow] {', '.join(flagged)}")
    from tokenjoule.analysis.selection import SELECTION_RULE

    console.print(SELECTION_RULE, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("recommend")(recommend)
