"""`tokenjoule estimate` (binned energy of a trace from measured cells) and `tokenjoule savings`.

Both exit 1, listing exactly which cells are missing and printing (or writing, with
--emit-sweep) the sweep config that measures them, when a bin of the workload has no
measurement: an estimate is never completed with a guess. The opt-in `--predict-missing` adds a
fitted prediction for those bins, reported apart from the measured energy and labelled as one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.options import (TraceReading, carbon_intensity_option, columns_option, db_option, drop_warning,
                                    footprint_from_cli, load_workload, merge_format, old_format_option, one_trace,
                                    open_existing_store, parse_traces, price_option, pue_option, region_option,
                                    resolve_db, time_unit_option, trace_format_option)

ROUNDING_HELP = ("Partly filled batches: paper = N/B x E_batch (default), ceil = ceil(N/B) x E_batch, "
                 "measured = the remainder batch of N mod B requests at its own measured energy "
                 "(predicted and labelled when no cell exists).")


def _open_store(ctx: typer.Context, db: Optional[str]):
    return open_existing_store(resolve_db(ctx, db))


def _warn_dropped(binned) -> None:
    """Shout (stderr, bold) when binning drops more than 5% of a trace's requests."""
    line = drop_warning(binned)
    if line:
        Console(stderr=True).print(f"[bold yellow]{line}[/]", soft_wrap=True)


def _setup(engine: str, mode: Optional[str], decoding: str):
    """--engine may be engine or engine:mode[:decoding]; --mode/--decoding fill what it omits."""
    from tokenjoule.analysis.savings import parse_setup

    parts = engine.split(":")
    if len(parts) == 1:
        return parse_setup(f"{engine}:{mode or 'eager'}:{decoding}")
    if len(parts) == 2:
        return parse_setup(f"{engine}:{decoding}")
    return parse_setup(engine)


def _console(stderr: bool = False) -> Console:
    """Rich console; 140 columns when not a terminal so wide tables don't wrap in logs/pipes."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


def _j(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    for unit, scale in (("MJ", 1e6), ("kJ", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:,.3f} {unit}"
    return f"{x:,.3f} J"


def _estimate_table(res) -> Table:
    if res.prediction is not None:
        return _predicted_table(res)
    table = Table(title=f"{res.workload}: {res.model} {res.engine}/{res.mode} {res.decoding}")
    for col in ("input", "output", "requests", "batch", "batches", "J/batch", f"energy ({res.rounding})",
                "energy N/B", "energy ceil", "partial batch", "cell"):
        table.add_column(col, justify="right")
    for r in res.rows:
        table.add_row(str(r.input_tokens), str(r.output_tokens), f"{r.n_requests:,}", str(r.batch_size),
                      f"{r.batches_rounded:,}", _j(r.energy_per_batch_j), _j(r.energy_j),
                      _j(r.energy_unrounded_j), _j(r.energy_ceil_j), _partial(r), str(r.cell_id))
    for m in res.missing:
        table.add_row(str(m.input_tokens), str(m.output_tokens), f"{m.n_requests:,}", "-", "-", "missing",
                      "-", "-", "-", "-", "-")
    return table


def _partial(r) -> str:
    """The remainder batch of a bin: its requests and energy; '*' marks a predicted E(r)."""
    if not r.remainder_requests:
        return "-"
    return f"{r.remainder_requests} req, {_j(r.partial_batch_energy_j)}" + ("*" if r.remainder_predicted else "")


def _print_rounding(console: Console, res) -> None:
    """Which rounding made the total, and a warning when partly filled batches weigh > 10% of it."""
    from tokenjoule.analysis.rounding import PARTIAL_WARN_SHARE

    share = res.partial_share
    if share is None:
        return
    console.print(f"rounding: {res.rounding} ({res.rounding_formula}); partly filled batches: "
                  f"{_j(res.partial_batches_energy_j)} = {100 * share:.1f}% of the total")
    if res.rounding == "measured" and res.n_remainders_predicted:
        console.print(f"  * {res.n_remainders_predicted} remainder batch(es) PREDICTED, not measured "
                      "(emit them with `tokenjoule workload bins --remainders`)")
    if share > PARTIAL_WARN_SHARE:
        console.print(f"warning: partly filled batches are {100 * share:.1f}% of this total (> "
                      f"{100 * PARTIAL_WARN_SHARE:.0f}%): the rounding matters here; ceil gives "
                      f"{_j(res.total_energy_ceil_j)}, N/B {_j(res.total_energy_unrounded_j)}; "
                      "--rounding measured charges them their own measured energy")


def _predicted_table(res) -> Table:
    """Measured and predicted bins in separate energy columns; predicted rows say so in 'cell'."""
    table = Table(title=f"{res.workload}: {res.model} {res.engine}/{res.mode} {res.decoding} (with predicted bins)")
    for col in ("input", "output", "requests", "batch", "batches", "J/batch", "measured energy",
                "predicted energy", "energy N/B", "cell"):
        table.add_column(col, justify="right")
    rows = [(r, False) for r in res.rows] + [(r, True) for r in res.predicted_rows]
    for r, predicted in sorted(rows, key=lambda x: (x[0].input_tokens, x[0].output_tokens)):
        energy = _j(r.energy_j)
        table.add_row(str(r.input_tokens), str(r.output_tokens), f"{r.n_requests:,}", str(r.batch_size),
                      f"{r.batches_rounded:,}", _j(r.energy_per_batch_j), "-" if predicted else energy,
                      energy if predicted else "-", _j(r.energy_unrounded_j),
                      "predicted" if predicted else str(r.cell_id), style="italic" if predicted else None)
    return table


def _print_prediction(console: Console, res) -> None:
    fit = res.prediction.fit
    console.print(f"measured: {_j(res.measured_energy_j)} ({len(res.rows)} measured bin(s))")
    console.print(f"predicted: {_j(res.predicted_energy_j)} ({len(res.predicted_rows)} bin(s) from the fit, "
                  "not measured)")
    console.print(f"total: {_j(res.total_energy_j)} = {res.total_kwh:.6f} kWh, {res.prediction.label()}, "
                  f"rounding {res.rounding}; unrounded N/B form: {_j(res.total_energy_unrounded_j)}; "
                  f"per request: {res.energy_per_request_j:,.3f} J")
    from tokenjoule.analysis.fit import MODEL_FORMULA, TERMS

    coefs = ", ".join(f"{t[0]}={c:.4g}" for t, c in zip(TERMS, fit.coefficients))
    console.print(f"fit: {MODEL_FORMULA}; {coefs} (J); {fit.n_cells} cells"
                  + (f" on {fit.gpu_name}" if fit.gpu_name else ""))
    console.print(f"predicted batch sizes: {res.prediction.batch_policy}")


def _print_summary(console: Console, res, footprint=None) -> None:
    if not res.complete and res.predicted_complete:
        _print_prediction(console, res)
    elif res.complete:
        console.print(f"total: {_j(res.total_energy_j)} = {res.total_kwh:.6f} kWh (rounding {res.rounding}: "
                      f"{res.rounding_formula}); unrounded N/B form: {_j(res.total_energy_unrounded_j)}; "
                      f"ceil form: {_j(res.total_energy_ceil_j)}; per request: {res.energy_per_request_j:,.3f} J")
        if footprint is not None and footprint.active:
            console.print(f"footprint: {footprint.describe(res.total_energy_j)}", soft_wrap=True)
    else:
        console.print(f"incomplete: {len(res.missing)} bin(s) unmeasured; measured bins sum to "
                      f"{_j(res.partial_energy_j)} (not a total)")
    _print_rounding(console, res)
    which = "measured coverage" if res.prediction is not None else "coverage"
    console.print(f"{which}: {res.n_covered:,} of {res.n_total:,} requests ({100 * res.coverage_share:.1f}%); "
                  f"dropped {res.n_dropped:,} beyond the largest bins" +
                  (f"; clipped {res.n_clipped:,}" if res.n_clipped else ""))
    console.print(f"batch policy: {res.batch_policy}")
    for note in res.notes:
        console.print(f"note: {note}")


def _report_missing(console: Console, results, emit_sweep: Optional[Path], batch) -> None:
    from tokenjoule.workloads.sweep_config import sweep_yaml, write_sweep

    cells, seen = [], set()
    for res in results:
        for cell in res.missing_cells(batch):
            key = tuple(sorted(cell.items(), key=lambda kv: kv[0]))
            if key not in seen:
                seen.add(key)
                cells.append(cell)
    console.print(f"missing {len(cells)} cell(s):")
    for c in cells:
        console.print(f"  {c['model']} {c['engine']}/{c['mode']} {c['decoding']} "
                      f"input_tokens={c['input_tokens']} output_tokens={c['output_tokens']}")
    comments = ["cells missing for: " + ", ".join(sorted({r.workload for r in results if r.missing})),
                "measure them with: tokenjoule sweep FILE"]
    bins = results[0].bins if results else None  # one estimate run bins every trace the same way
    if emit_sweep is not None:
        write_sweep(emit_sweep, cells, comments, bins=bins)
        console.print(f"wrote the sweep config for them to {emit_sweep}")
    else:
        console.print("sweep config to measure them:")
        # With --json stdout holds only the JSON document; the YAML goes where the console goes.
        typer.echo(sweep_yaml(cells, comments, bins=bins), nl=False, err=console.stderr)


def _binning(input_bins, output_bins):
    from tokenjoule.workloads.binning import Bins

    return Bins.parse(input_bins, output_bins)


def bins_for(store, model: Optional[str], input_bins: Optional[str], output_bins: Optional[str]):
    """(Bins, where they came from): the flags when given; else the bins the store's latest sweep
    for this model was planned for; else the default power-of-two ladder."""
    from tokenjoule.workloads.binning import Bins, bins_from_store

    if input_bins is not None or output_bins is not None:
        return Bins.parse(input_bins, output_bins), "from --input-bins/--output-bins"
    return bins_from_store(store, model)


def bins_line(bins, source: str) -> str:
    from tokenjoule.workloads.binning import describe_bins

    return describe_bins(bins, source)


def estimate_cmd(
    ctx: typer.Context,
    trace: Optional[List[str]] = typer.Option(None, "--trace",
                                              help="Trace name, path, task:NAME or paper:NAME (repeatable, or "
                                                   "comma-separated)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model preset or id the cells were measured with "
                                                              "(default with --reference: the table's)."),
    engine: List[str] = typer.Option(["hf"], "--engine", help="Engine, or engine:mode[:decoding] (repeatable)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="Engine mode for engines given without one (default eager)."),
    decoding: str = typer.Option("greedy", "--decoding", help="Decoding strategy of the cells."),
    db: Optional[str] = db_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    compare_theory: bool = typer.Option(False, "--compare-theory", help="Also show the Table-4 view vs theory."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU table row for theory (default: the cells' GPU)."),
    paper_constants: bool = typer.Option(False, "--paper-constants",
                                         help="Theory as the paper computed it: sparsity-enabled peak FLOP/s "
                                              "(309.7 TFLOP/s on the A6000) and FLOPs at the bin edges."),
    gpu_name: Optional[str] = typer.Option(None, "--gpu-name", help="Use only cells measured on this GPU (NVML name)."),
    input_bins: Optional[str] = typer.Option(None, "--input-bins", help="Input bin edges, comma-separated."),
    output_bins: Optional[str] = typer.Option(None, "--output-bins", help="Output bin edges, comma-separated."),
    overflow: str = typer.Option("drop", "--overflow", help="Requests beyond the largest bin: drop or clip."),
    emit_sweep: Optional[Path] = typer.Option(None, "--emit-sweep", help="Write the missing cells' sweep config here."),
    batch: str = typer.Option("max", "--batch-size", "--batch",
                              help="Batch size of emitted missing cells: integer or max."),
    trace_format: Optional[str] = trace_format_option(),
    columns: Optional[str] = columns_option(),
    time_unit: Optional[str] = time_unit_option(),
    fmt: Optional[str] = old_format_option(),
    predict: bool = typer.Option(False, "--predict-missing",
                                 help="Predict unmeasured bins with a fit of the measured cells (labelled, "
                                      "reported apart from measured energy)."),
    predict_batch: Optional[int] = typer.Option(None, "--predict-batch", min=1,
                                                help="Batch size of predicted bins (default: scaled from the "
                                                     "nearest measured cell)."),
    rounding: str = typer.Option("paper", "--rounding", help=ROUNDING_HELP),
    lengths: str = typer.Option("edges", "--lengths",
                                help="edges (the paper's: every request charged at its bin's upper edges) or mean "
                                     "(also show the bins rescaled to their requests' mean lengths by the fit of the "
                                     "table's cells: a model-based correction; edges overcharge, RESULTS section 11)."),
    reference: Optional[str] = typer.Option(None, "--reference",
                                            help="Estimate from a shipped reference table measured elsewhere "
                                                 "instead of --db ('list' shows them)."),
    carbon_intensity: Optional[float] = carbon_intensity_option(),
    region: Optional[str] = region_option(),
    price: Optional[float] = price_option(),
    pue: Optional[float] = pue_option(),
) -> None:
    """Energy of a trace from measured cells: sum over bins of N/B x E_batch (see --rounding)."""
    from tokenjoule.analysis.estimate import binned_estimate
    from tokenjoule.cli.workload import parse_batch
    from tokenjoule.errors import TokenjouleError
    from tokenjoule.workloads.binning import bin_workload

    if reference == "list":
        _list_references(as_json)
        return
    table = None
    if reference is not None:
        from tokenjoule.reference import load_reference

        table = load_reference(reference)
        model = model or table.model
    if not trace:
        raise TokenjouleError("--trace is required (a trace name, path, task:NAME or paper:NAME)")
    if model is None:
        raise TokenjouleError("--model is required (the model the cells were measured with), or give --reference")
    from tokenjoule.analysis.rounding import check_rounding

    check_rounding(rounding)
    from tokenjoule.analysis.lengths import check_lengths

    check_lengths(lengths)
    if input_bins is not None or output_bins is not None:
        _binning(input_bins, output_bins)  # a bad edge list is reported before the store is opened
    setups = [_setup(e, mode, decoding) for e in engine]
    batch_value = parse_batch(batch)
    footprint = footprint_from_cli(carbon_intensity, region, price, pue)
    reading = TraceReading.from_cli(merge_format(trace_format, fmt), columns, time_unit)
    traces = parse_traces(trace)
    if table is not None:
        from tokenjoule.reference import reference_store

        store = reference_store(table)
    else:
        store = _open_store(ctx, db)
    results = []
    with store:
        bins, bins_source = bins_for(store, model, input_bins, output_bins)
        for t in traces:
            binned = bin_workload(load_workload(t, reading), bins, overflow)
            if binned.n_total and not binned.n_kept:
                from tokenjoule.errors import TokenjouleError

                # Not an estimate of 0 J: nothing of the workload is covered by any bin.
                reasons = "; ".join(f"{n:,} {why}" for why, n in binned.dropped_reasons.items())
                raise TokenjouleError(f"{t}: all {binned.n_total:,} requests are beyond the largest bins "
                                      f"({reasons or 'dropped'}); nothing to estimate: widen --input-bins / "
                                      "--output-bins or pass --overflow clip")
            _warn_dropped(binned)
            for s in setups:
                results.append(binned_estimate(binned, store, model=model, engine=s.engine, mode=s.mode,
                                               decoding=s.decoding, gpu_name=gpu_name, rounding=rounding))
        refusals = _predict(results, store, predict_batch) if predict else []
        estimated = [_uses_estimates(r, store) for r in results]
        at_mean = [_at_mean_lengths(r, store, gpu_name) for r in results] if lengths == "mean" else []
    complete = [r for r in results if r.complete]
    comparisons = []
    if compare_theory and complete:
        from tokenjoule.analysis.floors import compare_theory as compare

        convention = "paper" if paper_constants else "tokenjoule"
        comparisons = [(compare(r, gpu=gpu, convention=convention), est)
                       for r, est in zip(results, estimated) if r.complete]
    console = _console(stderr=as_json)
    if as_json:
        doc = {"bins_used": {**bins.to_dict(), "source": bins_source}, "footprint": footprint.to_dict(),
               "estimates": [{**r.to_dict(), "footprint": footprint.of_energy_j(r.total_energy_j),
                              **({"at_mean_lengths": at_mean[k].to_dict()} if at_mean else {})}
                             for k, r in enumerate(results)],
               "theory": [{**c.to_dict(), "binned_is_estimate": est} for c, est in comparisons],
               "missing_cells": [c for r in results for c in r.missing_cells(batch_value)]}
        if table is not None:
            from tokenjoule.reference.replays import replays_of

            # the table's checks against direct replays, for the setups estimated here
            doc["reference"] = {**table.summary(), "label": table.label,
                                "replays": [r for e, m in dict.fromkeys((x.engine, x.mode) for x in results)
                                            for r in replays_of(table, e, m)]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        for k, res in enumerate(results):
            console.print(_estimate_table(res))
            _print_summary(console, res, footprint)
            if at_mean:
                _print_at_mean(console, at_mean[k], res)
            if table is not None:
                console.print(f"[yellow]{table.label}[/]")
                from tokenjoule.reference.replays import replay_lines

                for line in replay_lines(table, res.engine, res.mode):
                    console.print(line, soft_wrap=True)
        console.print(bins_line(bins, bins_source), soft_wrap=True)
        if footprint.note():
            console.print(footprint.note(), soft_wrap=True)
        if comparisons:
            console.print(_theory_table(comparisons))
    for message in refusals:
        console.print(f"prediction refused: {message}")
    remainder_cells = [c for r in results for c in r.remainder_cells()]
    if remainder_cells and emit_sweep is not None and len(complete) == len(results):
        from tokenjoule.workloads.sweep_config import write_sweep

        write_sweep(emit_sweep, remainder_cells, ["remainder batches (N mod B) predicted by estimate --rounding "
                                                  "measured", "measure them with: tokenjoule sweep FILE"])
        console.print(f"wrote {len(remainder_cells)} remainder cell(s) to {emit_sweep}")
    if len(complete) < len(results):
        if any(r.predicted_complete for r in results):
            console.print("the bins below are predicted above, not measured; measure them to replace the prediction")
        _report_missing(console, results, emit_sweep, batch_value)
        if any(not r.predicted_complete for r in results if not r.complete):
            raise typer.Exit(code=1)


def _at_mean_lengths(res, store, gpu_name: Optional[str]):
    from tokenjoule.analysis.lengths import at_mean_lengths
    from tokenjoule.errors import TokenjouleError

    try:
        return at_mean_lengths(res, store, gpu_name=gpu_name)
    except TokenjouleError as exc:
        raise TokenjouleError(f"--lengths mean for {res.engine}/{res.mode}: {exc}; valid without it: --lengths edges") \
            from None


def _print_at_mean(console: Console, corr, res) -> None:
    """The measured bins at their requests' mean lengths, next to the same bins at the edges."""
    part = "" if res.complete else " (the measured bins only)"
    console.print(f"at the requests' mean lengths{part}: {_j(corr.mean_energy_j)} vs {_j(corr.edges_energy_j)} at "
                  f"the bin edges ({100 * corr.change:+.1f}%), N/B batches; {corr.label}; {corr.fit_note}"
                  + ("; hf batches statically, and a deployment that pads each batch to its longest request lies "
                     "between the two" if res.engine == "hf" else ""), soft_wrap=True)


def _list_references(as_json: bool) -> None:
    from tokenjoule.reference import list_references, load_reference

    tables = [load_reference(n) for n in list_references()]
    if as_json:
        typer.echo(json.dumps([t.summary() for t in tables], indent=2))
        return
    table = Table(title="shipped reference bin tables (measured elsewhere)")
    for col in ("name", "card", "date", "model", "cells", "setups", "coverage"):
        table.add_column(col)
    for t in tables:
        table.add_row(t.name, t.card, t.date, t.model, str(len(t.cells)), ", ".join(t.setups()), t.coverage)
    _console().print(table)


def _predict(results: list, store, predict_batch: Optional[int]) -> list[str]:
    """Replace incomplete results by ones with predicted bins; returns why a prediction was refused."""
    from tokenjoule.analysis.fit import predict_missing
    from tokenjoule.errors import TokenjouleError

    refusals = []
    for k, res in enumerate(results):
        if res.complete:
            continue
        try:
            results[k] = predict_missing(res, store, predict_batch=predict_batch)
        except TokenjouleError as exc:
            refusals.append(f"{res.workload} {res.engine}/{res.mode}: {exc}")
    return refusals


def _uses_estimates(res, store) -> bool:
    """Whether any cell behind an estimate is itself an estimate (CPU time, no sensor)."""
    for row in res.rows:
        rec = store.get(row.cell_id) if row.cell_id is not None else None
        if rec is not None and rec.is_estimate:  # the one rule (records.CellRecord.is_estimate)
            return True
    return False


def _theory_table(comparisons) -> Table:
    """Binned energy vs theory; a binned total built on CPU-time estimates is never called measured."""
    c0 = comparisons[0][0]
    any_est = any(est for _, est in comparisons)
    kind = "binned, from ESTIMATED cells" if any_est else "measured (binned)"
    table = Table(title=f"{kind} vs theoretical: {c0.model} on {c0.gpu} ({c0.precision}); "
                        f"theory convention {c0.convention_label}")
    label = "binned (estimate)" if any_est else "measured"
    for col in ("trace", "engine", label, "theory (TDP/peak x FLOPs)", f"theory % of {label.split()[0]}",
                f"{label.split()[0]} / theory", "roofline floor x TDP", "roofline floor x active P"):
        table.add_column(col, justify="right" if col not in ("trace", "engine") else "left")
    for c, est in comparisons:
        table.add_row(c.workload, f"{c.engine}/{c.mode}", _j(c.measured_energy_j) + (" (estimate)" if est else ""),
                      _j(c.theoretical_energy_j),
                      f"{c.theory_percent_of_measured:.1f}%", f"{c.measured_multiple_of_theory:.1f}x",
                      _j(c.floor_energy_tdp_j), _j(c.floor_energy_active_j))
    return table


def savings_cmd(
    ctx: typer.Context,
    trace: List[str] = typer.Option(..., "--trace", help="Trace name, path or task:NAME (one)."),
    baseline: str = typer.Option(..., "--baseline", help="Baseline setup engine:mode[:decoding], e.g. hf:eager."),
    optimized: str = typer.Option(..., "--optimized", help="Optimized setup engine:mode[:decoding], e.g. vllm:graphs."),
    model: str = typer.Option(..., "--model", help="Model preset or id the cells were measured with."),
    db: Optional[str] = db_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    gpu_name: Optional[str] = typer.Option(None, "--gpu-name", help="Use only cells measured on this GPU (NVML name)."),
    input_bins: Optional[str] = typer.Option(None, "--input-bins", help="Input bin edges, comma-separated."),
    output_bins: Optional[str] = typer.Option(None, "--output-bins", help="Output bin edges, comma-separated."),
    overflow: str = typer.Option("drop", "--overflow", help="Requests beyond the largest bin: drop or clip."),
    emit_sweep: Optional[Path] = typer.Option(None, "--emit-sweep", help="Write the missing cells' sweep config here."),
    trace_format: Optional[str] = trace_format_option(),
    columns: Optional[str] = columns_option(),
    time_unit: Optional[str] = time_unit_option(),
    fmt: Optional[str] = old_format_option(),
    rounding: str = typer.Option("paper", "--rounding", help=ROUNDING_HELP),
    carbon_intensity: Optional[float] = carbon_intensity_option(),
    region: Optional[str] = region_option(),
    price: Optional[float] = price_option(),
    pue: Optional[float] = pue_option(),
) -> None:
    """Percentage of energy saved: 1 - E_optimized / E_baseline on the same binned trace."""
    from tokenjoule.analysis.savings import compare_setups, parse_setup

    base, opt = parse_setup(baseline), parse_setup(optimized)
    footprint = footprint_from_cli(carbon_intensity, region, price, pue)
    if input_bins is not None or output_bins is not None:
        _binning(input_bins, output_bins)  # a bad edge list is reported before anything is read
    reading = TraceReading.from_cli(merge_format(trace_format, fmt), columns, time_unit)
    workload = load_workload(one_trace(trace, "savings"), reading)
    from tokenjoule.workloads.binning import bin_workload

    with _open_store(ctx, db) as store:
        bins, bins_source = bins_for(store, model, input_bins, output_bins)
        _warn_dropped(bin_workload(workload, bins, overflow))
        result = compare_setups(workload, store, model=model, baseline=base, optimized=opt, bins=bins,
                                overflow=overflow, gpu_name=gpu_name, rounding=rounding)
    console = _console(stderr=as_json)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "bins_used": {**bins.to_dict(), "source": bins_source},
                               "footprint": {**footprint.to_dict(),
                                             "baseline": footprint.of_energy_j(result.baseline.total_energy_j),
                                             "optimized": footprint.of_energy_j(result.optimized.total_energy_j),
                                             "saved": footprint.of_energy_j(result.saved_j)}}, indent=2))
    else:
        table = Table(title=f"{workload.name}: {model}")
        for col in ("setup", "energy", "energy N/B", "per request", "coverage", "kWh, CO2e, cost"):
            table.add_column(col, justify="right" if col != "setup" else "left")
        for label, res in (("baseline", result.baseline), ("optimized", result.optimized)):
            table.add_row(f"{label} {res.engine}:{res.mode}:{res.decoding}", _j(res.total_energy_j),
                          _j(res.total_energy_unrounded_j),
                          "n/a" if res.energy_per_request_j is None else f"{res.energy_per_request_j:,.3f} J",
                          f"{100 * res.coverage_share:.1f}%", footprint.describe(res.total_energy_j))
        console.print(table)
        console.print(bins_line(bins, bins_source), soft_wrap=True)
        if result.complete:
            console.print(f"saved: {100 * result.saved_fraction:.1f}% ({_j(result.saved_j)}; "
                          f"{footprint.describe(result.saved_j)}) = 1 - "
                          f"{result.optimized.total_energy_j:,.1f} / {result.baseline.total_energy_j:,.1f} "
                          f"(rounding {rounding})")
            for label, res in (("baseline", result.baseline), ("optimized", result.optimized)):
                console.print(f"{label}: ", end="")
                _print_rounding(console, res)
        if footprint.note():
            console.print(footprint.note(), soft_wrap=True)
    if not result.complete:
        _report_missing(console, [result.baseline, result.optimized], emit_sweep, "max")
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_cmd)
    app.command("savings")(savings_cmd)
