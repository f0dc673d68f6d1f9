"""`tokenjoule results`: list stored cells, show one, export all as CSV or Parquet.

    tokenjoule results [--db PATH] [--model M --engine E --mode X --status ok|failed|all --limit N]
                       [--json | --csv]
    tokenjoule results show ID [--json]
    tokenjoule results export -o FILE [--format csv|parquet|sqlite]
    tokenjoule results backup FILE      (a consistent single-file copy of a live store)
    tokenjoule results import FILE      (records kept in a side file when a write failed)
    tokenjoule results merge A.db B.db ... -o OUT.db   (e.g. the stores of `sweep --shard i/N` jobs)

`--db` may stand anywhere: `tokenjoule --db X results export ...`, `tokenjoule results --db X
export ...` and `tokenjoule results export --db X ...` read the same store (cli/options.py).
"""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.options import DbChoice, db_option, emit_rows, open_existing_store, resolve_db
from tokenjoule.errors import TokenjouleError, UnknownNameError

STATUSES = ("ok", "failed", "all")

results_app = typer.Typer(
    name="results",
    help="List, show and export measured cells.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def open_existing(db: "str | DbChoice"):
    """Open a store that must already exist (listing never creates an empty database)."""
    choice = db if isinstance(db, DbChoice) else DbChoice(str(db), True)
    return open_existing_store(choice)


def _fmt(value: Any, fmt: str = "{:.4g}") -> str:
    from tokenjoule.cli.measure import format_value

    return format_value(value, fmt, missing="-")  # a dense listing: "-" reads better than n/a


def _flat(rec: Any) -> dict[str, Any]:
    """One cell as a flat dict of plain values (the --json / --csv form of the listing)."""
    spec, m = rec.spec, rec.metrics
    return {
        "id": rec.id, "created_at": rec.created_at, "status": rec.status, "kind": rec.kind,
        "model": spec.get("model"), "engine": spec.get("engine"), "mode": spec.get("mode"), "decoding": rec.decoding,
        "batch_size": spec.get("batch_size"), "input_tokens": spec.get("input_tokens"),
        "output_tokens": spec.get("output_tokens"), "energy_j": m.get("energy_j"),
        "energy_per_output_token_j": m.get("energy_per_output_token_j"), "energy_cv": m.get("energy_cv"),
        "method": rec.method, "is_estimate": rec.is_estimate, "flags": list(rec.flags),
        "gpu_name": rec.gpu_name, "error": rec.error,  # gpu_name: None for a CPU run, never the CPU
    }


# Short names of the usual methods for the narrow listing (--json/--csv carry the full names).
COMPACT_METHODS = {"estimate-cpu-time": "est-cpu", "nvml-counter": "nvml", "simulated": "sim"}


def _compact_row(rec: Any) -> list[str]:
    """The listing for a narrow terminal (< 120 columns): the columns that tell cells apart."""
    f = _flat(rec)
    status = "[green]ok[/]" if rec.status == "ok" else f"[red]{rec.status}[/]"
    flags = f"[yellow]{len(f['flags'])}[/]" if f["flags"] else ""
    return [
        str(f["id"]), str(f["model"]), f"{f['engine']}/{f['mode']} {f['decoding']}", _fmt(f["batch_size"], "{}"),
        f"{_fmt(f['input_tokens'], '{}')}/{_fmt(f['output_tokens'], '{}')}", _fmt(f["energy_per_output_token_j"]),
        COMPACT_METHODS.get(str(f["method"]), str(f["method"] or "-")), flags, status,
    ]


def _row(rec: Any) -> list[str]:
    spec, m = rec.spec, rec.metrics
    decoding = rec.decoding
    flags = ", ".join(rec.flags)
    if rec.status != "ok" and rec.error:
        flags = (rec.error[:60] + "...") if len(rec.error) > 63 else rec.error
    status = "[green]ok[/]" if rec.status == "ok" else f"[red]{rec.status}[/]"
    return [
        str(rec.id), (rec.created_at or "")[:19].replace("T", " "), str(spec.get("model")),
        f"{spec.get('engine')}/{spec.get('mode')}", str(decoding), _fmt(spec.get("batch_size"), "{}"),
        f"{_fmt(spec.get('input_tokens'), '{}')}/{_fmt(spec.get('output_tokens'), '{}')}",
        _fmt(m.get("energy_j")), _fmt(m.get("energy_per_output_token_j")), _fmt(m.get("energy_cv"), "{:.1%}"),
        str(rec.method or "-"),
        f"[yellow]{flags}[/]" if flags else "", status,
    ]


@results_app.callback()
def results(
    ctx: typer.Context,
    db: Optional[str] = db_option(),
    model: Optional[str] = typer.Option(None, help="Only this model."),
    engine: Optional[str] = typer.Option(None, help="Only this engine."),
    mode: Optional[str] = typer.Option(None, help="Only this engine mode."),
    status: str = typer.Option("all", help="ok | failed | all."),
    limit: int = typer.Option(50, help="Show at most the N most recent cells (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the listed cells as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the listed cells as CSV."),
) -> None:
    """List measured cells (most recent last). Subcommands: show, export."""
    if ctx.invoked_subcommand is not None:
        return
    if status not in STATUSES:
        raise UnknownNameError("status", status, STATUSES)
    if limit < 0:
        raise TokenjouleError(f"--limit must be >= 0, got {limit}")
    choice = resolve_db(ctx, db)
    with open_existing(choice) as store:
        records = store.find(status=None if status == "all" else status, model=model, engine=engine, mode=mode)
    shown = records[-limit:] if limit else records
    if emit_rows([_flat(r) for r in shown], as_json, as_csv):
        return
    console = Console()
    if not records:
        console.print(f"no cells in {choice.path} match")
        return
    title = f"{len(shown)} of {len(records)} cells in {choice.path}"
    if console.width < 120:
        from rich import box

        table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for name, justify in (("id", "right"), ("model", "left"), ("setup", "left"), ("batch", "right"),
                              ("in/out", "right"), ("J/tok", "right"), ("method", "left"), ("flags", "right"),
                              ("status", "left")):
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for rec in shown:
            table.add_row(*_compact_row(rec))
        console.print(table)
        console.print("J/tok: joules per output token; est-cpu: CPU-time estimate, not a measurement; flags: "
                      "how many quality flags (tokenjoule results show ID); every column: --json, --csv or a "
                      "wider terminal")
        return
    table = Table(title=title, header_style="bold")
    for name, justify in (("id", "right"), ("time (UTC)", "left"), ("model", "left"), ("engine/mode", "left"),
                          ("decoding", "left"), ("batch", "right"), ("in/out", "right"), ("J/batch", "right"),
                          ("J/out-token", "right"), ("CV", "right"), ("method", "left"), ("flags", "left"),
                          ("status", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rec in shown:
        table.add_row(*_row(rec))
    console.print(table)


@results_app.command("show")
def show(
    ctx: typer.Context,
    cell_id: int = typer.Argument(..., metavar="ID", help="Cell id (first column of `tokenjoule results`)."),
    db: Optional[str] = db_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the stored record as JSON."),
    samples: bool = typer.Option(False, "--samples", help="With --json: include the power timeline."),
) -> None:
    """Show one stored cell: spec, metrics, provenance."""
    from tokenjoule.cli.measure import metrics_table, record_json

    choice = resolve_db(ctx, db)
    with open_existing(choice) as store:
        record = store.get(cell_id)
        damaged = cell_id in store.corrupt_ids
        total = store.count()
    if damaged:
        raise TokenjouleError(f"cell #{cell_id} in {db} is damaged (unreadable JSON or text) and cannot be shown")
    if record is None:
        raise TokenjouleError(f"no cell with id {cell_id} in {choice.path} ({total} cells; list them with tokenjoule results)")
    if as_json:
        typer.echo(record_json(record, samples))
        return
    console = Console()
    spec_table = Table(title=f"cell #{record.id} ({record.status}, {record.kind}, {record.created_at})",
                       header_style="bold")
    spec_table.add_column("spec")
    spec_table.add_column("value")
    for key, value in record.spec.items():
        spec_table.add_row(key, str(value))
    spec_table.add_row("spec_hash", record.spec_hash)
    console.print(spec_table)
    if record.status == "ok":
        console.print(metrics_table(record))
    else:
        console.print(f"[red]failed:[/] {record.error}")
    prov = Table(title="provenance", header_style="bold")
    prov.add_column("key")
    prov.add_column("value")
    for key, value in sorted(record.provenance.items()):
        prov.add_row(key, str(value))
    console.print(prov)


@results_app.command("export")
def export(
    ctx: typer.Context,
    output: str = typer.Option(..., "--output", "-o", help="File to write (.csv, .parquet or .db)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f",
                                      help="csv | parquet | sqlite (a store copy; default: from the suffix)."),
    db: Optional[str] = db_option(),
    status: str = typer.Option("all", help="ok | failed | all."),
) -> None:
    """Export cells as one flat table (spec fields, metrics, method, flags, GPU)."""
    from tokenjoule.store.export import export_results, infer_format

    if status not in STATUSES:
        raise UnknownNameError("status", status, STATUSES)
    fmt = infer_format(output, fmt)  # before opening anything: a bad format is reported first
    with open_existing(resolve_db(ctx, db)) as store:
        n = export_results(store, output, fmt, status=None if status == "all" or fmt == "sqlite" else status)
    Console(stderr=True).print(f"wrote {n} cells to {output} ({fmt})")


@results_app.command("backup")
def backup(
    ctx: typer.Context,
    dest: str = typer.Argument(..., metavar="FILE", help="New file for the copy (never overwritten)."),
    db: Optional[str] = db_option(),
) -> None:
    """Copy the store to one self-contained file, safely while other processes write to it.

    Copying the .db file alone can miss rows: after a crash they live in the -wal file beside it."""
    db = resolve_db(ctx, db).path
    with open_existing(db) as store:
        n = store.backup(dest)
    Console(stderr=True).print(f"copied {n} cells from {db} to {dest}")


@results_app.command("import")
def import_unsaved(
    ctx: typer.Context,
    source: str = typer.Argument(..., metavar="FILE", help="A side file (*.unsaved.jsonl) named in a store error."),
    db: Optional[str] = db_option(),
) -> None:
    """Add records that were kept in a side file because the store could not be written."""
    from pathlib import Path

    from tokenjoule.store.db import ResultStore

    db = resolve_db(ctx, db).path
    if not Path(source).is_file():
        raise TokenjouleError(f"no side file at {source}; give the *.unsaved.jsonl path from the error message")
    with ResultStore(db) as store:
        added, damaged = store.import_unsaved(source)
    note = f"; {len(damaged)} damaged line(s) skipped: {damaged[:10]}" if damaged else ""
    Console(stderr=True).print(f"added {added} cells from {source} to {db}{note}")


@results_app.command("merge")
def merge(
    sources: list[str] = typer.Argument(..., metavar="STORE...", help="Stores to merge (read only)."),
    output: str = typer.Option(..., "--output", "-o", help="Store to merge into (created when missing)."),
) -> None:
    """Merge stores into one: every cell once (merging twice adds nothing), the largest-batch
    cache and the sweeps' bins. Use it after a job array of `sweep --shard i/N` tasks."""
    from tokenjoule.store.merge import merge_stores

    result = merge_stores(sources, output)
    console = Console(stderr=True)
    for path, added in result.inputs:
        console.print(f"{path}: {added} cells added", soft_wrap=True)
    console.print(f"{output}: {result.cells_added} cells added, {result.cells_present} already there; "
                  f"{result.max_batch} largest-batch entries and {result.bins} bin sets added", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")
