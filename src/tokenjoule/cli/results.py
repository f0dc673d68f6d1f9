"""`tokenjoule results`: list stored cells, show one, export all as CSV or Parquet.

    tokenjoule results [--db PATH] [--model M --engine E --mode X --status ok|failed|all --limit N]
    tokenjoule results show ID [--json]
    tokenjoule results export -o FILE [--format csv|parquet]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.store.db import DEFAULT_DB

STATUSES = ("ok", "failed", "all")

results_app = typer.Typer(
    name="results",
    help="List, show and export measured cells.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def open_existing(db: str):
    """Open a store that must already exist (listing never creates an empty database)."""
    from tokenjoule.store.db import ResultStore

    if not Path(db).exists():
        raise TokenjouleError(f"no results database at {db}; measure something first "
                              f"(tokenjoule measure ...) or pass --db PATH")
    return ResultStore(db)


def _fmt(value: Any, fmt: str = "{:.4g}") -> str:
    from tokenjoule.cli.measure import format_value

    return format_value(value, fmt, missing="-")  # a dense listing: "-" reads better than n/a


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
    db: str = typer.Option(DEFAULT_DB, help="Results database (SQLite)."),
    model: Optional[str] = typer.Option(None, help="Only this model."),
    engine: Optional[str] = typer.Option(None, help="Only this engine."),
    mode: Optional[str] = typer.Option(None, help="Only this engine mode."),
    status: str = typer.Option("all", help="ok | failed | all."),
    limit: int = typer.Option(50, help="Show at most the N most recent cells (0: all)."),
) -> None:
    """List measured cells (most recent last). Subcommands: show, export."""
    if ctx.invoked_subcommand is not None:
        return
    if status not in STATUSES:
        raise UnknownNameError("status", status, STATUSES)
    if limit < 0:
        raise TokenjouleError(f"--limit must be >= 0, got {limit}")
    with open_existing(db) as store:
        records = store.find(status=None if status == "all" else status, model=model, engine=engine, mode=mode)
    shown = records[-limit:] if limit else records
    console = Console()
    if not records:
        console.print(f"no cells in {db} match")
        return
    table = Table(title=f"{len(shown)} of {len(records)} cells in {db}", header_style="bold")
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
    cell_id: int = typer.Argument(..., metavar="ID", help="Cell id (first column of `tokenjoule results`)."),
    db: str = typer.Option(DEFAULT_DB, help="Results database (SQLite)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored record as JSON."),
    samples: bool = typer.Option(False, "--samples", help="With --json: include the power timeline."),
) -> None:
    """Show one stored cell: spec, metrics, provenance."""
    from tokenjoule.cli.measure import metrics_table, record_json

    with open_existing(db) as store:
        record = store.get(cell_id)
        total = store.count()
    if record is None:
        raise TokenjouleError(f"no cell with id {cell_id} in {db} ({total} cells; list them with tokenjoule results)")
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
    output: str = typer.Option(..., "--output", "-o", help="File to write (.csv or .parquet)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv | parquet (default: from the suffix)."),
    db: str = typer.Option(DEFAULT_DB, help="Results database (SQLite)."),
    status: str = typer.Option("all", help="ok | failed | all."),
) -> None:
    """Export cells as one flat table (spec fields, metrics, method, flags, GPU)."""
    from tokenjoule.store.export import export_results, infer_format

    if status not in STATUSES:
        raise UnknownNameError("status", status, STATUSES)
    fmt = infer_format(output, fmt)  # before opening anything: a bad format is reported first
    with open_existing(db) as store:
        n = export_results(store, output, fmt, status=None if status == "all" else status)
    Console(stderr=True).print(f"wrote {n} cells to {output} ({fmt})")


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")
