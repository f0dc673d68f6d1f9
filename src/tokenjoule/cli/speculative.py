"""`tokenjoule speculative`: speculative decoding's energy per output token against its
acceptance rate, bracketed by measured cells (analysis/speculative.py).

    tokenjoule speculative [--db PATH] [--model M] [--acceptance A] [--json]

Values marked "interpolated, not measured" place an acceptance rate between the two measured
brackets (acceptance ~0: an unrelated draft; ~1: the target drafting for itself or n-gram on
repeating prompts); they are never the measurement of a real draft.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from tokenjoule.errors import TokenjouleError
from tokenjoule.store.db import DEFAULT_DB


def _fmt(value: Any, fmt: str = "{:.4g}") -> str:
    return "—" if value is None else fmt.format(value)


def speculative(
    db: str = typer.Option(DEFAULT_DB, help="Results database (SQLite)."),
    model: Optional[str] = typer.Option(None, help="Only this model's cells."),
    acceptance: Optional[float] = typer.Option(
        None, help="Also place this acceptance rate (accepted / proposed draft tokens, 0..1), e.g. a published one."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Speculative decoding: energy per output token vs acceptance rate and batch size."""
    from tokenjoule.analysis.speculative import analyse
    from tokenjoule.cli.results import open_existing

    if acceptance is not None and not 0.0 <= acceptance <= 1.0:
        raise TokenjouleError(f"--acceptance must be between 0 and 1 (accepted / proposed draft tokens), got {acceptance}")
    with open_existing(db) as store:
        data = analyse(store.find(status="ok"), model=model, reference_acceptance=acceptance)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not data["setups"]:
        console.print(f"no speculative cells with a recorded acceptance rate in {db}; measure the brackets with "
                      "decoding.draft_model a separate draft (acceptance ~0) and self (~1)")
        return
    console.print(f"model: {data['model']}")
    for s in data["setups"]:
        title = (f"{s['model']} {s['engine']}/{s['mode']} in{s['input_tokens']} out{s['output_tokens']} "
                 f"look-ahead {s['lookahead_tokens']}, {s['family']}: J per output token")
        grid = sorted({p["acceptance_rate"] for row in s["batches"] for p in row["curve"]})
        table = Table(title=title, header_style="bold")
        for col in ("batch", "greedy", "low bracket", "high bracket", *[f"a={a:g}" for a in grid]):
            table.add_column(col, justify="right")
        for row in s["batches"]:
            by_a = {p["acceptance_rate"]: p for p in row["curve"]}
            cells = [_fmt(by_a[a]["energy_per_output_token_j"]) + ("" if by_a[a]["kind"] == "measured" else "*")
                     if a in by_a else "—" for a in grid]
            low, high = row["low"], row["high"]
            table.add_row(str(row["batch_size"]), _fmt(row["baseline_energy_per_output_token_j"]),
                          f"{low['draft']} a={low['acceptance_rate']:.2f}",
                          f"{high['draft']} a={high['acceptance_rate']:.2f}" if high else "—", *cells)
        console.print(table)
        for be in s["break_even"]:
            where = f" at batch ~{be['batch_size']:.0f}" if be["batch_size"] else ""
            console.print(f"  acceptance {be['acceptance_rate']:.2f}: {be['status']}{where} ({be['kind']})")
    console.print("* interpolated, not measured (between the two measured brackets)")
    for ref in data["reference_acceptance"]:
        rate = "—" if ref["acceptance_rate"] is None else f"{ref['acceptance_rate']:.3f}"
        console.print(f"published acceptance, {ref['pair']}: {rate} ({ref['source']})")


def register(app: typer.Typer) -> None:
    app.command("speculative")(speculative)
