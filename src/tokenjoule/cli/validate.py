"""`tokenjoule validate`: check the binned estimate against a direct replay of a trace sample.

Draws a seeded sample of a trace, runs it for real (hf: by bin at the table's batch sizes,
padded as static batching pads; vllm: one offline generate of all requests at their exact
lengths), and prints the measured total next to the binned estimate of the same sample under
each rounding mode, with the differences (target: within 10%). See tokenjoule.runs.replay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def _j(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:,.4g} J"


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def validate_cmd(
    ctx: typer.Context,
    trace: str = typer.Option(..., "--trace", help="Trace name, path, task:NAME or paper:NAME."),
    model: str = typer.Option(..., "--model", help="Model preset or id (the bin table's cells and the replay)."),
    engine: str = typer.Option("hf:eager", "--engine", help="engine:mode, e.g. hf:eager or vllm:graphs."),
    n: int = typer.Option(1000, "--n", min=1, help="Requests in the seeded sample."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of the prompts."),
    db: Optional[str] = typer.Option(None, "--db", help="Results database holding the bin table; "
                                                         "the replay is stored there (kind replay).",
                                     show_default="tokenjoule.db"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | bfloat16 | float16 | float32."),
    meter: str = typer.Option("auto", "--meter", help="Energy meter: auto | nvml | estimate | simulated."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Unmeasured warm-up batches before the replay."),
    input_bins: Optional[str] = typer.Option(None, "--input-bins", help="Input bin edges, comma-separated."),
    output_bins: Optional[str] = typer.Option(None, "--output-bins", help="Output bin edges, comma-separated."),
    overflow: str = typer.Option("drop", "--overflow", help="Requests beyond the largest bin: drop or clip."),
    gpu_name: Optional[str] = typer.Option(None, "--gpu-name", help="Use only table cells measured on this GPU."),
    within_table: Optional[list[str]] = typer.Option(
        None, "--within-table", help="Draw the sample only from requests in bins that this table (engine:mode) "
                                     "has measured; repeat to require several (the same sample for both setups). "
                                     "For a partly measured table; the result is labelled a conditional sample. "
                                     "The pool is fixed by the first replay of the same trace, --n, --seed and "
                                     "tables (the tables grow; the setups must replay the same requests); another "
                                     "--seed draws anew. An interrupted replay resumes after its last batch."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    again: bool = typer.Option(False, "--again", help="Replay even when the store already holds this replay "
                                                      "(by default a finished replay is shown, not repeated)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the sample, its batches, the binned estimate and "
                                                          "the predicted replay time; run nothing."),
) -> None:
    """Replay a seeded trace sample for real and compare it with its binned estimate."""
    from tokenjoule.analysis.savings import parse_setup
    from tokenjoule.energy import METER_KINDS
    from tokenjoule.errors import TokenjouleError, UnknownNameError
    from tokenjoule.runs.replay import ReplayConfig, run_replay
    from tokenjoule.store.db import ResultStore
    from tokenjoule.workloads.binning import Bins

    if meter not in METER_KINDS:
        raise UnknownNameError("meter", meter, METER_KINDS)
    setup = parse_setup(engine if ":" in engine else f"{engine}:eager")
    if setup.decoding != "greedy":
        raise TokenjouleError(f"validate replays greedy decoding only, got {setup.decoding}; valid: greedy")
    from tokenjoule.cli.options import resolve_db

    within = tuple(f"{s.engine}:{s.mode}" for s in (parse_setup(t if ":" in t else f"{t}:eager")
                                                    for t in (within_table or [])))
    db = Path(resolve_db(ctx, db).path)  # --db here or before the command name
    if not db.is_file():
        raise TokenjouleError(f"no results database at {db}; measure the bin table first or pass --db PATH")
    config = ReplayConfig(trace=trace, model=model, engine=setup.engine, mode=setup.mode, n=n, seed=seed,
                          device=device, dtype=dtype, bins=Bins.parse(input_bins, output_bins), overflow=overflow,
                          warmup=warmup, gpu_name=gpu_name, within_tables=within)
    from tokenjoule.cli.measure import RichProgress
    from tokenjoule.cli.options import StdoutToStderr

    if dry_run:
        with ResultStore(db, create=False, read_only=True) as store:
            _print_plan(config, store, as_json)
        return
    with ResultStore(db) as store:
        done = store.latest(config.hash())
    if done is not None and not again:  # a finished replay is a result, like a finished cell: never repeated silently
        _print_done(done, as_json)
        return
    with StdoutToStderr(as_json), ResultStore(db) as store, RichProgress(Console(stderr=True)) as progress:
        result = run_replay(config, store, meter_kind=meter, on_progress=progress)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_result(Console(), result)


def _print_plan(config, store, as_json: bool) -> None:
    """The replay without running it: what `prepare` would hand the engine, and how long the
    table's own batch times predict it takes (a prediction, labelled)."""
    from tokenjoule.runs.case_study import replay_seconds
    from tokenjoule.runs.replay import pool_note, prepare, resumed_batches

    sample, binned, est, plan = prepare(config, store)
    predicted_s = replay_seconds(est, config.engine)
    resumed = resumed_batches(store, config, plan)
    doc = {"dry_run": True, "n_kept": binned.n_kept, "n_dropped": binned.n_dropped,
           "batches": [{"bin": list(b.bin) if b.bin else None, "requests": len(b.lengths),
                        "table_batch_size": b.table_batch_size} for b in plan],
           "batches_already_measured": len(resumed), "estimate_paper_j": est.total_energy_j,
           "predicted_replay_s": predicted_s, "note": pool_note(sample)}
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    console = Console()
    console.print(f"dry run (nothing measured): {binned.n_kept:,} requests of {config.trace} "
                  f"({binned.n_dropped:,} dropped beyond the largest bins), {len(plan)} batch(es) on "
                  f"{config.engine}/{config.mode}" + (f", {len(resumed)} already measured by an interrupted run"
                                                      if resumed else ""), soft_wrap=True)
    if doc["note"]:
        console.print(doc["note"], soft_wrap=True)
    for b in plan:
        where = f"bin {b.bin[0]}/{b.bin[1]}, table batch {b.table_batch_size}" if b.bin else "one generate call"
        console.print(f"  {len(b.lengths):,} requests ({where})")
    console.print(f"binned estimate (paper rounding): {_j(est.total_energy_j)}")
    console.print("predicted replay time: " + ("n/a (a cell has no duration)" if predicted_s is None else
                  f"{predicted_s:,.0f} s, a PREDICTION from the cells' batch times (padded hf batches can take "
                  "longer than the cells they are predicted from: docs/RESULTS.md section 11)"), soft_wrap=True)


def _count(n) -> str:
    return "?" if n is None else f"{int(n):,}"


def _print_done(record, as_json: bool) -> None:
    m = record.metrics
    if as_json:
        typer.echo(json.dumps({"kind": "replay", "already_done": True, "record_id": record.id, "metrics": m,
                               "notes": (record.measurement or {}).get("notes", [])}, indent=2))
        return
    diffs = ", ".join(f"{k.removeprefix('difference_')} {_pct(v)}" for k, v in m.items() if k.startswith("difference_"))
    Console().print(f"already replayed: record {record.id} ({record.provenance.get('time_utc', '?')}): measured "
                    f"{_j(m.get('energy_j'))} for {_count(m.get('n_kept'))} requests; estimate vs replay: {diffs}. "
                    "Pass --again to replay anew.", soft_wrap=True)


def print_result(console: Console, result) -> None:
    cfg = result.config
    table = Table(title=f"replay of {result.n_kept:,} requests of {cfg.trace} (sample {cfg.n:,}, seed {cfg.seed}): "
                        f"{cfg.model} {cfg.engine}/{cfg.mode}")
    for col in ("", "energy", "vs replay", "within 10%"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("replay (measured)", _j(result.measured_energy_j), "", "")
    for mode, value in result.estimates_j.items():
        ok = result.within_target[mode]
        table.add_row(f"binned estimate, rounding {mode}", _j(value), _pct(result.differences[mode]),
                      "n/a" if ok is None else ("yes" if ok else "no"))
    table.add_row("diagnostic: bins rescaled by the fit to the batches run", _j(result.fit_corrected_j),
                  _pct(result.fit_corrected_difference), "")
    console.print(table)
    console.print(f"fit: {result.fit_note}")
    if result.per_bin:
        bins = Table(title="per bin: replay vs estimate")
        modes = list(result.estimates_j)
        for col in ("input ≤", "output ≤", "requests", "batch", "batches", "replay", *modes):
            bins.add_column(col, justify="right")
        for r in result.per_bin:
            bins.add_row(str(r["bin"][0]), str(r["bin"][1]), f"{r['requests']:,}", str(r["batch_size"]),
                         str(r["batches"]), _j(r["measured_energy_j"]), *(_j(r.get(f"estimate_{m}_j")) for m in modes))
        console.print(bins)
    t = result.tokens
    console.print(f"tokens: input {t['useful_input_tokens']:,} useful / {t['computed_input_tokens']:,} computed; "
                  f"output {t['useful_output_tokens']:,} useful / {t['computed_output_tokens']:,} computed "
                  f"(padding as static batching pads)" if cfg.engine == "hf" else
                  f"tokens: input {t['useful_input_tokens']:,}, output {t['useful_output_tokens']:,} (exact lengths)")
    if cfg.engine == "hf":
        console.print(f"batches: {len(result.batches)}, {result.partial_batches} of them partial (fewer requests "
                      "than the table's batch size)")
    console.print(f"dropped {result.n_dropped:,} of {result.n_sampled:,} sampled requests beyond the largest bins; "
                  f"replay time {result.measured_duration_s:,.1f} s; method {result.method}; "
                  f"one meter window per batch")
    for note in result.notes:
        console.print(f"note: {note}")
    if result.record_id is not None:
        console.print(f"stored as record {result.record_id} (kind replay)")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
