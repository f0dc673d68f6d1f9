"""`tokenjoule workload paper`: the paper-matched synthetic workloads against the paper's
Tables 1-2 and against the Azure 2023 traces that ship with tokenjoule."""

from __future__ import annotations

import json
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.workload import workload_app


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


@workload_app.command("paper")
def paper_cmd(
    name: List[str] = typer.Argument(None, help="paper:NAME workloads (default: all three)."),
    n: int = typer.Option(10_000, "--n", min=1, help="Requests drawn per synthetic workload."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draw."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    markdown: bool = typer.Option(False, "--markdown", help="Print one Markdown table (for docs/METHOD.md)."),
) -> None:
    """Paper statistics vs the SYNTHETIC draw vs the shipped 2023 trace (mean, std, median, p99)."""
    from tokenjoule.workloads.synthetic import FAMILY, list_paper_workloads, paper_comparison

    names = name or list_paper_workloads()
    rows = [r for nm in names for r in paper_comparison(nm, n, seed)]
    if as_json:
        typer.echo(json.dumps({"family": FAMILY, "n": n, "seed": seed, "label": "synthetic", "rows": rows}, indent=2))
        return
    if markdown:
        typer.echo("| workload | length | stat | paper | synthetic (drawn) | diff | shipped 2023 trace | diff |")
        typer.echo("|---|---|---|---|---|---|---|---|")
        for r in rows:
            typer.echo(f"| {r['workload']} | {r['length']} | {r['stat']} | {_num(r['target'])} | {_num(r['drawn'])} | "
                       f"{_pct(r['drawn_error'])} | {_num(r['shipped'])} | {_pct(r['shipped_error'])} |")
        return
    console = Console()
    table = Table(title=f"paper Tables 1-2 vs synthetic draws (n={n:,}, seed {seed}) vs shipped traces")
    for col in ("workload", "length", "stat", "paper", "synthetic", "diff", "shipped trace", "value", "diff"):
        table.add_column(col, justify="left" if col in ("workload", "length", "stat", "shipped trace") else "right")
    for r in rows:
        table.add_row(r["workload"], r["length"], r["stat"], _num(r["target"]), _num(r["drawn"]), _pct(r["drawn_error"]),
                      r["shipped_trace"] or "(none ships)", _num(r["shipped"]), _pct(r["shipped_error"]))
    console.print(table)
    console.print(f"synthetic: {FAMILY}; inputs and outputs drawn independently")


def register(app: typer.Typer) -> None:
    """The command lives on `workload_app` (registered by cli.workload); importing adds it."""
