"""`tokenjoule sweep`: measure a whole grid of cells, resumably (config file or --preset).

Only light packages are imported at module level; the runner (and torch with it) is
imported inside the command.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.options import (TraceReading, columns_option, db_option, map_trace_files, parse_traces,
                                    resolve_db, time_unit_option, trace_format_option)
from tokenjoule.errors import TokenjouleError

PRESET_NAMES = ("paper-lengths", "paper-decoding", "paper-moe", "paper-frameworks", "paper-parallel", "paper-bins",
                "paper-bins-fast")
# Override options whose flag is not the config key (the resume command spells the flag).
OVERRIDE_FLAGS = {"tensor_parallel": "tp", "pipeline_parallel": "pp"}


def _resume_command(config_arg: str, db: str, budget: float | None, retry: bool, meter: str,
                    device: str | None, overrides: dict[str, Any] | None = None, shard: Any = None) -> str:
    parts = ["tokenjoule", "sweep", *shlex.split(config_arg), "--db", db]
    if shard is not None:
        parts += ["--shard", str(shard)]
    for key, value in (overrides or {}).items():
        parts += [f"--{OVERRIDE_FLAGS.get(key, key)}", str(value)]
    if budget is not None:
        parts += ["--budget-minutes", f"{budget:g}"]
    if retry:
        parts.append("--retry-failed")
    if meter != "auto":
        parts += ["--meter", meter]
    if device:
        parts += ["--device", device]
    return shlex.join(parts)


def _print_plan(console: Console, summary: Any) -> None:
    from tokenjoule.runs.sweep_estimate import format_duration

    table = Table(title=f"sweep plan: {summary.total} cells", show_lines=False)
    for col in ("#", "group", "cell", "batch", "status", "estimate", "note"):
        table.add_column(col, justify="right" if col in ("#", "group", "batch", "estimate") else "left")
    for i, c in enumerate(summary.cells, start=1):
        est = "" if c.estimate_s is None else f"{format_duration(c.estimate_s)} ({c.estimate_source})"
        batch = "max" if c.batch_size is None and "b=max" in c.label else (c.batch_size or "")
        table.add_row(str(i), str(c.group + 1), c.label, str(batch), c.status, est, c.reason or "")
    console.print(table)
    planned = [c for c in summary.cells if c.status == "planned"]
    guessed = sum(1 for c in planned if c.estimate_source == "guess")
    modelled = sum(1 for c in planned if c.estimate_source == "model")
    note = (f"{len(planned) - guessed - modelled} cells from stored durations of the same cells, {modelled} from "
            f"a time model fitted to the setup's stored cells, {guessed} guessed (a fixed per-token time "
            "model, not a measurement), plus a guessed model load per group")
    console.print(f"would run {len(planned)} cells, skip {summary.total - len(planned)}; "
                  f"estimated duration {format_duration(summary.estimated_s)} ({note})")


def _print_plan_summary(console: Console, plan: Any) -> None:
    from tokenjoule.runs.sweep_estimate import format_duration

    table = Table(title=f"sweep plan: {plan.cells:,} cells (a summary: too many for a row per cell)")
    table.add_column("axis")
    table.add_column("values", justify="right")
    table.add_column("first values")
    for axis, values in plan.axes.items():
        table.add_row(axis, f"{len(values):,}", ", ".join(values[:8]) + (" ..." if len(values) > 8 else ""))
    console.print(table)
    overlap = f" (an upper bound: {plan.templates} cell templates may overlap)" if plan.templates > 1 else ""
    console.print(f"{plan.cells:,} cells{overlap}; {plan.already_measured:,} already measured in the store; "
                  f"estimated duration {format_duration(plan.estimated_s)} (from a sample of {plan.sampled} "
                  f"cells, {plan.estimate_source}; an estimate, not a measurement)")


def _print_summary(console: Console, summary: Any) -> None:
    from tokenjoule.runs.sweep_estimate import format_duration

    table = Table(title="sweep summary")
    table.add_column("cells")
    table.add_column("count", justify="right")
    rows = [("total", summary.total), ("measured (ok)", summary.done), ("failed", summary.failed),
            ("skipped (done before / failed before / above max batch)", summary.skipped),
            ("not run", summary.not_run)]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    console.print(f"wall time {format_duration(summary.wall_s)}; GPU minutes {summary.gpu_minutes:.2f} "
                  "(wall minutes of measured cells x GPUs)")
    for c in summary.cells:
        if c.status == "failed":
            console.print(f"[red]failed[/red] {c.label}: {c.reason}")
    if summary.stopped_by_budget:
        console.print("stopped before a cell that would exceed the budget")
        if summary.blocked_s is not None:
            console.print(f"nothing was measured: the next cell is predicted to end at "
                          f"{format_duration(summary.blocked_s)} ({summary.blocked_source}); "
                          "the resume command below has a budget it fits in")
    if summary.interrupted:
        console.print("interrupted; the cell in flight was not stored")
    if summary.resume_command:
        console.print(f"resume with: {summary.resume_command}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        ctx: typer.Context,
        config: Optional[Path] = typer.Argument(None, help="Sweep config YAML (or use --preset)."),
        preset: Optional[str] = typer.Option(None, "--preset", help=f"Built-in grid: {', '.join(PRESET_NAMES)}."),
        model: Optional[str] = typer.Option(None, "--model", help="Preset model(s), comma-separated."),
        quick: bool = typer.Option(False, "--quick", help="Scaled-down preset for a short GPU session."),
        trace: Optional[list[str]] = typer.Option(None, "--trace", help="paper-bins: trace name(s), repeatable "
                                                  "or comma-separated."),
        trace_format: Optional[str] = trace_format_option(),
        columns: Optional[str] = columns_option(),
        time_unit: Optional[str] = time_unit_option(),
        with_vllm: Optional[bool] = typer.Option(
            None, "--with-vllm/--without-vllm",
            help="paper-frameworks: include vLLM cells (default: when vllm is importable)."),
        db: Optional[str] = db_option(),
        repeats: Optional[int] = typer.Option(None, "--repeats", min=1,
                                              help="Override every cell's measurement windows."),
        warmup: Optional[int] = typer.Option(None, "--warmup", min=0, help="Override every cell's warm-up batches."),
        tensor_parallel: Optional[int] = typer.Option(None, "--tensor-parallel", "--tp",
                                                      help="Override every cell's tensor-parallel GPUs."),
        pipeline_parallel: Optional[int] = typer.Option(None, "--pipeline-parallel", "--pp",
                                                        help="Override every cell's pipeline-parallel stages (vllm)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the cells and an estimated duration only."),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Run cells that failed before again."),
        budget_minutes: Optional[float] = typer.Option(
            None, "--budget-minutes", min=0, help="Stop before a cell that would end past this many minutes."),
        meter: str = typer.Option("auto", "--meter", help="Energy meter: auto, nvml, estimate, simulated."),
        device: Optional[str] = typer.Option(None, "--device", help="Override every cell's device (cpu, cuda:N)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        shard: Optional[str] = typer.Option(
            None, "--shard", help="Run only shard i of N (i/N, i in 1..N or 0..N-1) of the grid, chosen by spec "
            "hash: N jobs with --shard 1/N ... N/N cover the grid once (merge with `tokenjoule results merge`)."),
        gpus: Optional[str] = typer.Option(
            None, "--gpus", help="Run one worker process per GPU (comma-separated indices, e.g. 0,1,2,3) on "
            "the same store; each sees only its GPU (CUDA_VISIBLE_DEVICES) and the claims split the cells."),
        gpus_per_worker: Optional[int] = typer.Option(
            None, "--gpus-per-worker", help="With --gpus: GPUs per worker (needed when the grid's cells need "
            "different GPU counts, tensor_parallel x pipeline_parallel; default: the one count of the grid)."),
        workers: Optional[int] = typer.Option(
            None, "--workers", min=1, help="Run N worker processes on the same store (CPU or simulated "
            "meter; use --gpus for GPUs)."),
        summary_json: Optional[Path] = typer.Option(None, "--summary-json", hidden=True,
                                                    help="Also write the summary's counts here (for --gpus)."),
    ) -> None:
        """Run a grid of cells: one model load per group, resumable, failures recorded.

        Exits 0 when every cell is done or skipped, 1 when a cell failed (it is stored), 130 when interrupted."""
        from tokenjoule.runs.sweep import run_sweep
        from tokenjoule.runs.sweep_config import load_config
        from tokenjoule.runs.sweep_presets import build_preset

        from tokenjoule.runs.shard import parse_shard

        db = resolve_db(ctx, db).path
        shard_part = parse_shard(shard) if shard is not None else None
        if gpus is not None and workers is not None:
            raise TokenjouleError("give --gpus (one worker per GPU) or --workers N, not both")
        reading = TraceReading.from_cli(trace_format, columns, time_unit)
        if reading.any_file_option and not trace:
            raise TokenjouleError("--columns, --time-unit and --trace-format apply to --trace files")
        # A mapped trace is rewritten once in canonical columns beside the store, so the preset
        # and its printed resume command read it without the mapping flags.
        trace = ",".join(map_trace_files(parse_traces(trace), reading, Path(f"{db}.traces"))) or None
        if (config is None) == (preset is None):
            raise TokenjouleError("give a sweep config file or --preset NAME (one of them); presets: "
                                  + ", ".join(PRESET_NAMES))
        if config is not None:
            if model or quick or trace or with_vllm is not None:
                raise TokenjouleError("--model, --quick, --trace and --with-vllm apply to --preset only")
            cfg = load_config(config)
            config_arg = shlex.quote(str(config))
        else:
            cfg = build_preset(preset, model=model, quick=quick, trace=trace, with_vllm=with_vllm)
            config_arg = cfg.source
        if device:
            cfg = cfg.override(device=device)
        overrides = {k: v for k, v in (("repeats", repeats), ("warmup", warmup), ("tensor_parallel", tensor_parallel),
                                       ("pipeline_parallel", pipeline_parallel)) if v is not None}
        if overrides:
            cfg = cfg.override(**overrides)
        console = Console()
        if dry_run:
            from tokenjoule.store.db import ResultStore

            # Never create a database for a dry run: read one only if it is already there.
            from tokenjoule.runs.plan_summary import SUMMARY_ABOVE_CELLS, summarize_plan

            store = ResultStore(db, create=False, read_only=True) if Path(db).is_file() else None
            try:
                if cfg.grid_size() > SUMMARY_ABOVE_CELLS:  # a summary, not a million rows
                    _print_plan_summary(console, summarize_plan(cfg, store))
                    if shard_part is not None:
                        console.print(f"(the whole grid; shard {shard_part} holds about 1/{shard_part.count} of it)")
                    return
                summary = run_sweep(cfg, store, dry_run=True, retry_failed=retry_failed, shard=shard_part)
            finally:
                if store is not None:
                    store.close()
            _print_plan(console, summary)
            return
        if gpus_per_worker is not None and gpus is None:
            raise TokenjouleError("--gpus-per-worker applies to --gpus (groups of GPUs)")
        _preflight(cfg)
        if gpus is not None or workers is not None:
            from tokenjoule.cli.sweep_workers import run_workers

            # Each worker gets the single-process command; a GPU worker's device is set per worker.
            raise typer.Exit(run_workers(
                console, cfg=cfg, db=db, gpus=gpus, workers=workers, device=device, per_worker=gpus_per_worker,
                command=_resume_command(config_arg, db, budget_minutes, retry_failed, meter,
                                        None if gpus is not None else device, overrides, shard_part)))
        from tokenjoule.cli.sweep_progress import SweepBar
        from tokenjoule.store.db import ResultStore

        store = ResultStore(db)
        try:
            _store_bins(store, cfg, config_arg)
            summary = run_sweep(
                cfg, store, meter_kind=meter, retry_failed=retry_failed, budget_minutes=budget_minutes,
                progress=progress, observer=SweepBar(Console(stderr=True)) if progress else None,
                resume_command=_resume_command(config_arg, db, budget_minutes, retry_failed, meter, device,
                                               overrides, shard_part), shard=shard_part)
        finally:
            store.close()
        _print_summary(console, summary)
        if summary_json is not None:
            import json

            from tokenjoule.runs.workers import summary_counts

            summary_json.write_text(json.dumps(summary_counts(summary)))
        if summary.interrupted:
            raise typer.Exit(130)
        if summary.failed:
            raise typer.Exit(1)


def _preflight(cfg: Any) -> None:
    """Every cell's engine parallelism, GPU count, device, context and memory (at its batch, or
    1 for a b=max cell: the batch search finds the largest that fits), checked before the store
    opens or a model loads. (With --gpus, the worker groups are checked against the cells' GPU
    counts in cli.sweep_workers; this process sees every GPU of the groups.)"""
    from tokenjoule.engines.base import check_parallel
    from tokenjoule.models.preflight import preflight

    for plan in cfg.expand():
        check_parallel(plan.spec)
    seen: set = set()
    for plan in cfg.expand():
        batch = 1 if plan.batch != "fixed" else None
        key = (plan.spec.spec_hash(), batch)
        if key not in seen:
            seen.add(key)
            preflight(plan.spec, batch_size=batch)


def _store_bins(store: Any, cfg: Any, source: str) -> None:
    """A config's `bins:` go into the store with the sweep, so later estimates use them."""
    bins = getattr(cfg, "bins", None)
    if not bins:
        return
    models = sorted({str(p.spec.model) for p in cfg.expand()})
    store.add_bins(bins["input"], bins["output"], model=",".join(models) or None, source=source)
