"""`tokenjoule demo`: a short tour that runs on any machine (CPU is enough) in about a minute.

The demo is a list of steps (`DEMO_STEPS`); each step gets a `DemoContext` (console, store,
output folder) and prints its own table. New features add a step at the end of the list.

Re-running the demo resumes: a cell that already has an `ok` row in the demo store is not
measured again (its stored row is shown), so a second run takes seconds and the store does
not grow. Delete the demo folder (`demo-out/`) to measure everything again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

DEFAULT_DEMO_DB = "demo-out/tokenjoule.db"


@dataclass
class DemoContext:
    console: Console
    db_path: Path
    out_dir: Path
    store: Any  # tokenjoule.store.db.ResultStore (imported lazily)
    records: list = field(default_factory=list)  # CellRecords produced so far, any step
    results: dict = field(default_factory=dict)  # what later steps (and tests) read: estimate, report...


@dataclass(frozen=True)
class DemoStep:
    name: str
    description: str
    run: Callable[[DemoContext], None]


# -- step: offline measurements of the tiny preset on the CPU ---------------------------------
OFFLINE_GRID = {"batch_size": (1, 4), "input_tokens": (32, 128), "output_tokens": (16,)}


def offline_specs() -> list:
    from tokenjoule.spec import RunSpec

    return [
        RunSpec(model="tiny", engine="hf", mode="eager", batch_size=b, input_tokens=i, output_tokens=o,
                warmup=1, repeats=2, device="cpu", dtype="float32", min_window_s=0.3, seed=0)
        for b in OFFLINE_GRID["batch_size"] for i in OFFLINE_GRID["input_tokens"]
        for o in OFFLINE_GRID["output_tokens"]
    ]


def _fmt(value: Any, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def offline_step(ctx: DemoContext) -> None:
    from tokenjoule.cli.measure import RichProgress
    from tokenjoule.runs.offline import run_cells
    from tokenjoule.runs.plans import CellsPlan

    all_specs = offline_specs()
    # Resume: the plan reads back cells an earlier demo run measured instead of measuring them.
    n_todo = sum(1 for s in all_specs if not ctx.store.has_success(s.spec_hash()))
    done: list = []
    with RichProgress(Console(stderr=True)) as progress:
        def on_cell(spec, record) -> None:
            done.append(record)
            progress.prefix = f"cell {len(done) + 1}/{n_todo}: " if len(done) < n_todo else ""

        progress.prefix = f"cell 1/{n_todo}: " if n_todo else ""
        plan = CellsPlan(all_specs, reuse_stored=True, on_cell=on_cell)
        run_cells(plan, ctx.store, meter_kind="auto", idle_s=1.0, on_progress=progress)
    if plan.reused:
        ctx.console.print(f"{len(plan.reused)} cell(s) already in {ctx.db_path}: shown, not measured again")
    records = plan.records
    ctx.records.extend(records)

    ctx.console.print(offline_table(records))
    methods = sorted({str(r.method) for r in records if r.is_ok})
    flags = sorted({f for r in records if r.is_ok for f in r.flags})
    ctx.console.print(f"method: {', '.join(methods) or '-'}; flags: {', '.join(flags) or 'none'}")
    if "estimate" in flags:
        ctx.console.print("[yellow]No energy sensor here: energies are estimates from CPU time "
                          "(see docs/METHOD.md).[/]")


def offline_table(records: list) -> Table:
    """One row per cell; few, short columns so it fits an 80-column terminal."""
    table = Table(title="tiny preset, hf eager, greedy, CPU", header_style="bold")
    for name in ("id", "batch", "in/out", "J/batch", "J/out-tok", "s/batch", "TTFT s", "tok/s", "CV"):
        table.add_column(name, justify="right", no_wrap=True)
    for rec in records:
        m, s = rec.metrics, rec.spec
        lengths = f"{s['input_tokens']}/{s['output_tokens']}"
        if rec.status != "ok":
            table.add_row(str(rec.id), str(s["batch_size"]), lengths, "[red]failed[/]", "", "", "", "", "")
            continue
        table.add_row(str(rec.id), str(s["batch_size"]), lengths, _fmt(m["energy_j"], "{:.3g}"),
                      _fmt(m["energy_per_output_token_j"], "{:.3g}"), _fmt(m["duration_s"], "{:.3g}"),
                      _fmt(m["ttft_s"], "{:.3g}"), _fmt(m["throughput_tokens_per_s"], "{:.0f}"),
                      _fmt(m["energy_cv"], "{:.0%}"))
    return table


# -- step: statistics and length bins of a shipped trace ---------------------------------------
DEMO_TRACE = "azure-conv-2023"


def trace_step(ctx: DemoContext) -> None:
    from tokenjoule.cli.workload import bins_table
    from tokenjoule.workloads.binning import bin_workload
    from tokenjoule.workloads.stats import workload_stats
    from tokenjoule.workloads.traces import resolve_workload

    workload = resolve_workload(DEMO_TRACE)
    stats = workload_stats(workload)
    table = Table(title=f"{stats.name}: {stats.requests:,} requests", header_style="bold")
    for name in ("tokens", "mean", "std", "median", "p99", "max"):
        table.add_column(name, justify="right")
    for label, ls in (("input", stats.input_tokens), ("output", stats.output_tokens)):
        table.add_row(label, f"{ls.mean:,.0f}", f"{ls.std:,.0f}", _fmt(ls.median, "{:,.0f}"),
                      _fmt(ls.p99, "{:,.0f}"), f"{ls.max:,}")
    ctx.console.print(table)
    ctx.console.print(f"duration {_fmt(stats.duration_s, '{:,.0f}')} s, mean rate "
                      f"{_fmt(stats.mean_rate_rps, '{:.2f}')} req/s, burstiness (CV of gaps) "
                      f"{_fmt(stats.burstiness, '{:.2f}')}")
    binned = bin_workload(workload)  # the paper's default power-of-two bins
    ctx.console.print(bins_table(binned))
    ctx.console.print(f"kept {binned.n_kept:,} of {binned.n_total:,} requests in {len(binned.counts)} bins; "
                      f"dropped {binned.n_dropped:,} (longer than the largest bin)")
    ctx.results["trace_stats"] = stats
    ctx.results["trace_binned"] = binned


# -- step: binned energy estimate of a small workload, measured through the sweep runner -------
ESTIMATE_WORKLOAD = "task:translation"  # 1,024 requests, input mean 50 tokens, output 64
ESTIMATE_INPUT_EDGES = (64, 256, 1024)  # coarse bins: 3 cells instead of the paper's ladder
ESTIMATE_OUTPUT_EDGES = (64,)
ESTIMATE_BATCH = 8
ESTIMATE_SETUP = {"model": "tiny", "engine": "hf", "mode": "eager", "decoding": "greedy"}


def estimate_sweep_config(binned):
    """The sweep config of the binned workload's cells at the demo's fixed batch on the CPU."""
    from tokenjoule.runs.sweep_config import config_from_dict

    cells = binned.cells(ESTIMATE_SETUP["model"], ESTIMATE_SETUP["engine"], ESTIMATE_SETUP["mode"],
                         batch=ESTIMATE_BATCH, decoding=ESTIMATE_SETUP["decoding"])
    return config_from_dict({
        **ESTIMATE_SETUP, "device": "cpu", "dtype": "float32", "warmup": 1, "repeats": 2, "seed": 0,
        "min_window_s": 0.3, "idle_s": 1.0,
        "cells": [{"input_tokens": c["input_tokens"], "output_tokens": c["output_tokens"],
                   "batch_size": c["batch_size"]} for c in cells],
    }, source="demo: binned estimate")


def estimate_label(records: list) -> tuple[str, bool]:
    """How the estimate's energies were obtained, and whether any of them is itself an estimate."""
    methods = sorted({str(r.method) for r in records})
    any_estimate = any(r.is_estimate for r in records)
    return ", ".join(methods) or "-", any_estimate


def estimate_step(ctx: DemoContext) -> None:
    from tokenjoule.analysis.estimate import binned_estimate
    from tokenjoule.runs.sweep import run_sweep
    from tokenjoule.workloads.binning import Bins, bin_workload
    from tokenjoule.workloads.traces import resolve_workload

    workload = resolve_workload(ESTIMATE_WORKLOAD)
    binned = bin_workload(workload, Bins(ESTIMATE_INPUT_EDGES, ESTIMATE_OUTPUT_EDGES), overflow="drop")
    config = estimate_sweep_config(binned)
    # The sweep skips cells this store already holds (resume), so a second demo run measures nothing.
    from tokenjoule.cli.sweep_progress import SweepBar

    summary = run_sweep(config, ctx.store, meter_kind="auto", observer=SweepBar(Console(stderr=True)))
    ctx.console.print(f"sweep: {summary.total} cells, {summary.done} measured, {summary.skipped} already stored, "
                      f"{summary.failed} failed")
    result = binned_estimate(binned, ctx.store, **ESTIMATE_SETUP)
    cells = [ctx.store.get(r.cell_id) for r in result.rows if r.cell_id is not None]
    method, is_estimate = estimate_label(cells)

    table = Table(title=f"{binned.name}: binned estimate, tiny preset, batch {ESTIMATE_BATCH}", header_style="bold")
    for name in ("in≤", "out≤", "requests", "batches", "J/batch", "J"):
        table.add_column(name, justify="right")
    for r in result.rows:
        table.add_row(str(r.input_tokens), str(r.output_tokens), f"{r.n_requests:,}", str(r.batches_rounded),
                      f"{r.energy_per_batch_j:.3g}", f"{r.energy_j:.3g}")
    for m in result.missing:
        table.add_row(str(m.input_tokens), str(m.output_tokens), f"{m.n_requests:,}", "-", "[red]missing[/]", "-")
    ctx.console.print(table)
    total = result.total_energy_j
    if total is None:
        ctx.console.print(f"[red]no total: {len(result.missing)} bin(s) not measured[/]")
    else:
        what = ("CPU-time ESTIMATE for a tiny random-weight model, not a measurement of a real model"
                if is_estimate else "measured energy of the tiny random-weight model (not a real model)")
        ctx.console.print(f"total: {total:.4g} J for {result.n_kept:,} requests "
                          f"({total / result.n_kept:.3g} J/request), sum of N/B x E_batch over bins (rounding paper)")
        ctx.console.print(f"[yellow]{what}; method: {method}[/]")
    ctx.results.update(estimate=result, estimate_method=method, estimate_is_estimate=is_estimate,
                       estimate_sweep=summary, estimate_cells=cells)


# -- step: the paper's case study from the shipped reference tables --------------------------
def case_study_table(study, title: str) -> Table:
    """One row per workload and setup: coverage, energy (total or measured part), theory, savings."""
    table = Table(title=title, header_style="bold")
    for name in ("workload", "setup", "cov", "kWh", "J/req", "vs theory", "saved"):
        table.add_column(name, justify="left" if name in ("workload", "setup") else "right", no_wrap=True)
    for r in study.rows:
        complete = r.total_energy_j is not None
        kwh = f"{r.total_kwh:.3g}" if complete else f"≥{r.partial_energy_j / 3.6e6:.3g}"
        saved = study.savings.get(r.workload) if r.setup == study.optimized else None
        saved_text = _fmt(None if saved is None else 100 * saved, "{:.0f}%")
        common = study.common_savings.get(r.workload) if r.setup == study.optimized else None
        if saved is None and common:  # partial tables: the comparable part only, marked
            saved_text = f"{100 * common['savings']:.0f}%† ({100 * common['requests_share']:.0f}%)"
        table.add_row(r.workload.replace(" (synthetic)", "*").removeprefix("paper:"), r.setup.split(":")[0],
                      f"{100 * r.coverage_share:.0f}%", kwh, _fmt(r.energy_per_request_j, "{:.3g}"),
                      _fmt(r.above_theory_percent.get("paper"), "{:+.0f}%"), saved_text)
    return table


def reference_step(ctx: DemoContext) -> None:
    from tokenjoule.analysis.case_study import case_study
    from tokenjoule.reference import list_references, load_reference, reference_store
    from tokenjoule.reference.replays import replay_lines

    studies = {}
    for name in list_references():
        ref = load_reference(name)
        study = case_study(reference_store(ref), model=ref.model, gpu=ref.gpu, basis=ref.label)
        studies[name] = study
        ctx.console.print(case_study_table(study, f"case study: {ref.model}, hf eager vs vllm graphs, on {ref.card}, "
                                                  f"measured {ref.date}"))
        ctx.console.print(f"[yellow]{ref.label}[/]")
        for line in replay_lines(ref):
            ctx.console.print(line, soft_wrap=True)
        ctx.console.print("≥: some bins unmeasured, so only the measured part (not a total), no theory; "
                          "†: savings on the bins both setups measured only (in brackets: their share of the "
                          "workload's requests), not the workload's savings; "
                          "cov: requests in measured bins; vs theory: % above the theoretical estimate with the "
                          "paper's constants (estimate --compare-theory shows both conventions); * SYNTHETIC, "
                          "matched to the paper's Tables 1-2 (paper:NAME). The paper's Table 4 savings "
                          "(A6000): 73% BurstGPT, 72% Azure conversation, 38% Azure code")
    ctx.results["case_studies"] = studies


# -- step: the HTML report of the demo store ------------------------------------------------
def report_step(ctx: DemoContext) -> None:
    from tokenjoule.cli.report import report_progress
    from tokenjoule.report.build import build_report

    out = ctx.out_dir / "report"
    with report_progress(Console(stderr=True)) as on_progress:
        result = build_report(ctx.store, out, traces=[DEMO_TRACE], model="tiny", on_progress=on_progress)
    drawn = sum(1 for s in result.sections if s.drawn)
    ctx.console.print(f"{drawn} of {len(result.sections)} sections drawn (the others need cells the demo does not "
                      "measure, e.g. several engines or decoding strategies)")
    ctx.console.print(f"report: {result.index_html}")
    ctx.results["report"] = result


DEMO_STEPS: list[DemoStep] = [
    DemoStep("offline", "measure the tiny preset on the CPU (batch 1/4 x input 32/128 x output 16)", offline_step),
    DemoStep("trace", f"statistics and length bins of the {DEMO_TRACE} trace", trace_step),
    DemoStep("estimate", f"binned energy estimate of {ESTIMATE_WORKLOAD} from tiny-preset cells", estimate_step),
    DemoStep("case study", "the paper's case study from the shipped reference tables (measured elsewhere)",
             reference_step),
    DemoStep("report", "figures, tables and one HTML page of the demo store", report_step),
]


def run_demo(db: str | Path = DEFAULT_DEMO_DB, console: Console | None = None) -> DemoContext:
    from tokenjoule.store.db import ResultStore

    console = console or Console()
    db_path = Path(db)
    with ResultStore(db_path) as store:
        ctx = DemoContext(console=console, db_path=db_path, out_dir=db_path.parent, store=store)
        for i, step in enumerate(DEMO_STEPS, 1):
            console.rule(f"[bold]step {i}/{len(DEMO_STEPS)}: {step.name}[/] - {step.description}")
            step.run(ctx)
    console.print(f"stored in {db_path}; list them with: tokenjoule results --db {db_path}")
    return ctx


def measure_case_study(db: str | Path, budget_minutes: float, console: Console | None = None) -> dict:
    """`demo --measure`: the case study re-measured on this machine's GPU (resumable)."""
    from tokenjoule.errors import TokenjouleError
    from tokenjoule.runs.case_study import CaseStudyOptions, run_session

    import torch  # only here: whether a GPU exists decides

    if not torch.cuda.is_available():
        raise TokenjouleError("demo --measure needs a CUDA GPU (it measures llama-3.1-8b bin tables on hf eager "
                              "and vllm graphs); without one, `tokenjoule demo` shows the case study from the "
                              "shipped tables")
    console = console or Console()
    out = Path(db).parent / "case-study"
    command = f"tokenjoule demo --measure --db {db} --budget-minutes {budget_minutes:g}"
    return run_session(CaseStudyOptions(out=str(out), budget_minutes=budget_minutes, command=command,
                                        resume_hint=command), log=console.print)


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        typer_ctx: typer.Context,
        db: Optional[str] = typer.Option(None, "--db", help="Results database the demo writes to.",
                                         show_default=DEFAULT_DEMO_DB),
        measure: bool = typer.Option(False, "--measure", help="Re-measure the paper's case study on this GPU "
                                                              "(bin tables, replays, Table 4) instead of the tour."),
        budget_minutes: float = typer.Option(25.0, "--budget-minutes", min=0.5,
                                             help="With --measure: stop before work predicted past this; "
                                                  "run again to resume."),
    ) -> None:
        """A one-minute tour on the CPU: measure the tiny preset, bin a trace, estimate, report.

        A second run resumes: cells already in the store are not measured again."""
        from tokenjoule.cli.options import resolve_db

        choice = resolve_db(typer_ctx, db)
        db = choice.path if choice.explicit else DEFAULT_DEMO_DB
        if measure:
            measure_case_study(db, budget_minutes)
            return
        ctx = run_demo(db)
        sweep = ctx.results.get("estimate_sweep")
        failed = sum(1 for r in ctx.records if r.status != "ok") + (sweep.failed if sweep else 0)
        if failed:
            from tokenjoule.errors import CellFailure

            raise CellFailure(f"{failed} demo cell(s) failed; see tokenjoule results --db {db} --status failed")
