"""`tokenjoule demo`: a short tour that runs on any machine (CPU is enough) in about a minute.

The demo is a list of steps (`DEMO_STEPS`); each step gets a `DemoContext` (console, store,
output folder) and prints its own table. New features add a step at the end of the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
    from tokenjoule.runs.offline import run_group

    specs = offline_specs()
    done: list = []
    with RichProgress(Console(stderr=True)) as progress:
        def on_cell(spec, record) -> None:
            done.append(record)
            progress.prefix = f"cell {len(done) + 1}/{len(specs)}: " if len(done) < len(specs) else ""

        progress.prefix = f"cell 1/{len(specs)}: "
        records = run_group(specs, ctx.store, meter_kind="auto", idle_s=1.0, on_progress=progress, on_cell=on_cell)
    ctx.records.extend(records)

    ctx.console.print(offline_table(records))
    methods = sorted({r.metrics.get("method") for r in records if r.status == "ok"})
    flags = sorted({f for r in records if r.status == "ok" for f in r.metrics.get("flags") or []})
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


DEMO_STEPS: list[DemoStep] = [
    DemoStep("offline", "measure the tiny preset on the CPU (batch 1/4 x input 32/128 x output 16)", offline_step),
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


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        db: str = typer.Option(DEFAULT_DEMO_DB, help="Results database the demo writes to."),
    ) -> None:
        """Measure the tiny preset on this machine (CPU is enough) and print the results."""
        ctx = run_demo(db)
        failed = [r for r in ctx.records if r.status != "ok"]
        if failed:
            from tokenjoule.errors import CellFailure

            raise CellFailure(f"{len(failed)} demo cell(s) failed; see tokenjoule results --db {db} --status failed")
