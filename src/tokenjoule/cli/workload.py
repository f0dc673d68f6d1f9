"""`tokenjoule workload stats|bins`: statistics and length bins of a trace or task profile.

TRACE (positional, or --trace like every other command) is a built-in trace name
(azure-code-2023, azure-conv-2023, mooncake-conversation), a file path (format detected, or
--trace-format; columns mapped with --columns, arrival unit with --time-unit), task:NAME
(translation, generation, classification, summarization), or paper:NAME (burstgpt, azure-conv,
azure-code: synthetic workloads matched to the paper's Tables 1-2, labelled synthetic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.options import (TRACE_FORMAT_HELP, TraceReading, columns_option, drop_warning,
                                    merge_format, old_format_option, one_trace, resolve_db, time_unit_option,
                                    trace_format_option)
from tokenjoule.cli.options import load_workload as _load

workload_app = typer.Typer(help="Inspect request traces: statistics, length bins, sweep cells.",
                           no_args_is_help=True)

FORMAT_HELP = TRACE_FORMAT_HELP


def load_workload(trace: str, fmt: Optional[str] = None, trace_model: Optional[str] = None,
                  log_type: Optional[str] = None, columns: Optional[str] = None, time_unit: Optional[str] = None):
    """The workload a CLI TRACE argument names (see the module docstring)."""
    return _load(trace, TraceReading.from_cli(fmt, columns, time_unit, trace_model, log_type))



def _trace_arg(positional: Optional[str], option: Optional[list[str]]) -> str:
    """TRACE given positionally or with --trace (the spelling of every other command)."""
    return one_trace(([positional] if positional else []) + list(option or []), "workload")


def _removed_lines(workload) -> list[str]:
    prov = workload.provenance
    lines = [f"filter: {f}" for f in prov.get("filters", [])]
    lines += [f"removed {n} row(s): {reason}" for reason, n in prov.get("removed", {}).items()]
    return lines


def _fmt(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


@workload_app.command("stats")
def stats_cmd(
    trace: Optional[str] = typer.Argument(None, help="Trace name, file path, or task:NAME (or --trace)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trace_opt: Optional[list[str]] = typer.Option(None, "--trace", help="The trace, as in other commands."),
    trace_format: Optional[str] = trace_format_option(),
    columns: Optional[str] = columns_option(),
    time_unit: Optional[str] = time_unit_option(),
    fmt: Optional[str] = old_format_option(),
    trace_model: Optional[str] = typer.Option(None, "--trace-model", help="BurstGPT: keep this model's rows."),
    log_type: Optional[str] = typer.Option(None, "--log-type", help="BurstGPT: keep this log type's rows."),
) -> None:
    """Requests, input/output lengths, duration, arrival rate, burstiness, length correlation."""
    from tokenjoule.workloads.stats import workload_stats

    workload = load_workload(_trace_arg(trace, trace_opt), merge_format(trace_format, fmt), trace_model, log_type,
                             columns, time_unit)
    s = workload_stats(workload)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2))
        return
    console = Console()
    table = Table(title=f"{s.name}: {s.requests:,} requests")
    for col in ("tokens", "mean ± std", "median", "p90", "p99", "max"):
        table.add_column(col, justify="right" if col != "tokens" else "left")
    for label, ls in (("input", s.input_tokens), ("output", s.output_tokens)):
        table.add_row(label, f"{ls.mean:,.1f} ± {ls.std:,.1f}", _fmt(ls.median), _fmt(ls.p90), _fmt(ls.p99), f"{ls.max:,}")
    console.print(table)
    console.print(f"duration: {_fmt(s.duration_s)} s   mean rate: {_fmt(s.mean_rate_rps, 3)} req/s   "
                  f"burstiness (CV of gaps): {_fmt(s.burstiness, 3)}   "
                  f"input/output correlation: {_fmt(s.input_output_correlation, 3)}")
    for line in _removed_lines(workload) + s.notes:
        console.print(line)


def bins_table(binned) -> Table:
    """Counts (and share of kept requests) per (input bin, output bin)."""
    table = Table(title=f"{binned.name}: requests per bin (rows: input ≤ edge, columns: output ≤ edge)")
    table.add_column("in\\out", justify="right")
    for o in binned.bins.output_edges:
        table.add_column(str(o), justify="right")
    table.add_column("share", justify="right")
    for i in binned.bins.input_edges:
        counts = [binned.counts.get((i, o), 0) for o in binned.bins.output_edges]
        share = sum(counts) / binned.n_kept if binned.n_kept else 0.0
        table.add_row(str(i), *[f"{c:,}" if c else "·" for c in counts], f"{100 * share:.1f}%")
    return table


def plot_cdfs(binned, path: Path) -> Path:
    """Real vs binned CDFs of input and output lengths (the paper's Figure 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    pairs = (("input", binned.real_input_tokens, binned.binned_input_tokens),
             ("output", binned.real_output_tokens, binned.binned_output_tokens))
    for ax, (label, real, binned_vals) in zip(axes, pairs):
        for values, name, style in ((real, "real", "-"), (binned_vals, "binned", "--")):
            v = np.sort(np.asarray(values))
            if len(v):
                ax.step(np.maximum(v, 1), np.arange(1, len(v) + 1) / len(v), style, where="post", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{label} tokens")
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{binned.name}: {binned.n_kept:,} requests kept, {binned.n_dropped:,} dropped ({binned.overflow})")
    fig.tight_layout()
    from tokenjoule.errors import TokenjouleError

    try:
        import io

        path.parent.mkdir(parents=True, exist_ok=True)
        # Rendered in memory, then written by us: matplotlib's own file writes can miss a full disk.
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=120, format=path.suffix.lstrip(".").lower() or "png")
        path.write_bytes(buffer.getvalue())
    except (OSError, ValueError) as exc:  # full disk, unwritable, an unknown image suffix
        raise TokenjouleError(f"cannot write PNG {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        plt.close(fig)
    return path


@workload_app.command("bins")
def bins_cmd(
    ctx: typer.Context,
    trace: Optional[str] = typer.Argument(None, help="Trace name, file path, or task:NAME (or --trace)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write real vs binned length CDFs to this PNG."),
    emit_sweep: Optional[Path] = typer.Option(None, "--emit-sweep", help="Write the cells as a sweep config (YAML)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model of the emitted cells."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine of the emitted cells (hf, vllm)."),
    mode: str = typer.Option("eager", "--mode", help="Engine mode of the emitted cells."),
    decoding: str = typer.Option("greedy", "--decoding", help="Decoding strategy of the emitted cells."),
    batch: str = typer.Option("max", "--batch-size", "--batch", help="Batch size of the emitted cells: an integer or max."),
    input_bins: Optional[str] = typer.Option(None, "--input-bins", help="Input bin edges, e.g. 32,64,...,8192."),
    output_bins: Optional[str] = typer.Option(None, "--output-bins", help="Output bin edges, e.g. 8,16,...,512."),
    overflow: str = typer.Option("drop", "--overflow", help="Requests beyond the largest bin: drop or clip."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the occupied bins as CSV (one row per bin)."),
    trace_opt: Optional[list[str]] = typer.Option(None, "--trace", help="The trace, as in other commands."),
    trace_format: Optional[str] = trace_format_option(),
    columns: Optional[str] = columns_option(),
    time_unit: Optional[str] = time_unit_option(),
    fmt: Optional[str] = old_format_option(),
    trace_model: Optional[str] = typer.Option(None, "--trace-model", help="BurstGPT: keep this model's rows."),
    log_type: Optional[str] = typer.Option(None, "--log-type", help="BurstGPT: keep this log type's rows."),
    remainders: bool = typer.Option(False, "--remainders",
                                    help="Also emit batch = N mod B cells (the partly filled batches) for "
                                         "`estimate --rounding measured`; with --batch max, B is the batch "
                                         "`estimate` uses for the bin in --db."),
    db: Optional[str] = typer.Option(None, "--db", help="Results database giving B per bin for --remainders "
                                                         "with --batch max (also accepted before the command)."),
) -> None:
    """Histogram of requests over (input, output) length bins; optional CDF plot and sweep config."""
    from tokenjoule.errors import TokenjouleError
    from tokenjoule.workloads.binning import Bins, bin_workload

    bins = Bins.parse(input_bins, output_bins)
    if emit_sweep is not None:
        if not model or not engine:
            raise TokenjouleError("--emit-sweep needs --model and --engine (and optionally --mode)")
        check_setup(engine, mode, decoding)
    batch_value = parse_batch(batch)
    db_choice = resolve_db(ctx, db)  # --db here or before the command name
    db = Path(db_choice.path) if db_choice.explicit else None
    if remainders and emit_sweep is None:
        raise TokenjouleError("--remainders adds cells to --emit-sweep; pass --emit-sweep FILE too")
    if remainders and batch_value == "max" and db is None:
        raise TokenjouleError("--remainders with --batch max needs --db PATH (the store holding each bin's "
                              "largest batch), or pass an integer --batch")
    from tokenjoule.paths import ensure_output_file

    for out_path, what in ((png, "PNG"), (emit_sweep, "sweep config")):
        if out_path is not None:  # before any work: a bad path is one line, not a traceback at the end
            ensure_output_file(out_path, what)
    workload = load_workload(_trace_arg(trace, trace_opt), merge_format(trace_format, fmt), trace_model, log_type,
                             columns, time_unit)
    binned = bin_workload(workload, bins, overflow)
    warning = drop_warning(binned)
    if warning:
        Console(stderr=True).print(f"[bold yellow]{warning}[/]", soft_wrap=True)
    console = Console()
    if as_json and as_csv:
        raise TokenjouleError("give --json or --csv, not both")
    if as_json:
        typer.echo(json.dumps(binned.to_dict(), indent=2))
    elif as_csv:
        from tokenjoule.cli.options import emit_rows

        emit_rows(binned.rows(), False, True)
    else:
        console.print(bins_table(binned))
        console.print(f"kept {binned.n_kept:,} of {binned.n_total:,} requests in {len(binned.counts)} bins; "
                      f"dropped {binned.n_dropped:,}" + (f"; clipped {binned.n_clipped:,}" if binned.n_clipped else ""))
        for reason, n in binned.dropped_reasons.items():
            console.print(f"dropped {n:,}: {reason}")
        for line in _removed_lines(workload):
            console.print(line)
    out = Console(stderr=True) if as_json or as_csv else console
    if png is not None:
        out.print(f"wrote {plot_cdfs(binned, png)}")
    if emit_sweep is not None:
        from tokenjoule.workloads.sweep_config import write_sweep

        cells = binned.cells(model, engine, mode, batch=batch_value, decoding=decoding)
        if remainders:
            sizes = _bin_batch_sizes(binned, batch_value, db, model, engine, mode, decoding)
            extra = binned.remainder_cells(model, engine, mode, sizes, decoding=decoding)
            out.print(f"{len(extra)} remainder cell(s) (batch = N mod B); "
                      f"{len(binned.counts) - len(sizes)} bin(s) without a stored batch skipped")
            cells = cells + extra
        write_sweep(emit_sweep, cells, bins=binned.bins, comments=[
                    f"cells of {binned.name} ({binned.n_kept:,} requests, overflow={overflow})",
                                        "written by: tokenjoule workload bins"])
        out.print(f"wrote {len(cells)} cells to {emit_sweep}")


def _bin_batch_sizes(binned, batch_value, db: Optional[Path], model: str, engine: str, mode: str,
                     decoding: str) -> dict:
    """B per bin: the given integer batch, else the batch of the stored cell `estimate` uses for
    the bin (analysis.selection) in `db`."""
    if batch_value != "max":
        return {key: batch_value for key in binned.counts}
    from tokenjoule.analysis.estimate import select_cells
    from tokenjoule.analysis.selection import choose_cell
    from tokenjoule.errors import TokenjouleError
    from tokenjoule.store.db import ResultStore

    if not db.is_file():
        raise TokenjouleError(f"no results database at {db}; measure the bins first or pass an integer --batch")
    with ResultStore(db, create=False, read_only=True) as store:  # never creates or changes a store
        chosen, _ = select_cells(store, model=model, engine=engine, mode=mode, decoding=decoding)
    out = {}
    for key, n in binned.counts.items():
        rec = choose_cell(chosen.get(key, []), n)
        if rec is not None and rec.batch_size is not None:
            out[key] = int(rec.batch_size)
    return out


def check_setup(engine: str, mode: str, decoding: str = "greedy") -> None:
    """Validate the names the same way `estimate`/`savings` do (one rule: analysis.savings)."""
    from tokenjoule.analysis.savings import parse_setup

    parse_setup(f"{engine}:{mode}:{decoding}")


def parse_batch(text: str):
    from tokenjoule.errors import TokenjouleError

    if text == "max":
        return "max"
    from tokenjoule.limits import MAX_BATCH_SIZE

    # ASCII digits only: str.isdigit() also accepts "²" and other digits int() rejects.
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_BATCH_SIZE:
        return int(text)
    raise TokenjouleError(f"--batch must be an integer from 1 to {MAX_BATCH_SIZE:,} or max, got {text!r}")


def register(app: typer.Typer) -> None:
    app.add_typer(workload_app, name="workload")
