"""The case-study session: bin tables, direct replays, the Table-4 view and a reference table.

`run_session(CaseStudyOptions(...))` is what `benchmarks/case_study.py` and `tokenjoule demo
--measure` run (see the script's docstring for the phases). Every phase resumes from the store:
a finished cell or replay is never repeated. `engine_factory`, `meter` and `clock` are
injectable so the whole session runs on the CPU in tests with a scripted engine and meter.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

SETUPS = ("hf:eager", "vllm:graphs")


@dataclass
class CaseStudyOptions:
    model: str = "llama-3.1-8b"
    out: str = "out"
    db: str | None = None
    seed_db: str | None = None
    budget_minutes: float = 25.0
    setups: list[str] = field(default_factory=lambda: list(SETUPS))
    workloads: list[str] | None = None
    replay_trace: str = "azure-conv-2023"
    replay_n: int = 1000
    n_synthetic: int = 10_000
    meter: str = "auto"
    device: str | None = None
    input_bins: str | None = None
    output_bins: str | None = None
    idle_s: float = 5.0
    max_batch_cap: int = 1024
    reference_name: str | None = None
    dry_run: bool = False
    measure_bins: bool = True  # False: the tables were measured by benchmarks/bin_table.py first
    command: str = ""
    resume_hint: str | None = None  # how to resume, printed at the end


class Budget:
    """Minutes left of the session, on an injectable clock."""

    def __init__(self, minutes: float, clock=time.monotonic):
        self.clock, self.start, self.limit_s = clock, clock(), 60.0 * minutes

    @property
    def left_s(self) -> float:
        return max(0.0, self.limit_s - (self.clock() - self.start))

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left_s


# -- planning (pure; tested on the CPU) -------------------------------------------------------
def load_workloads(names, n_synthetic: int):
    from tokenjoule.workloads.traces import resolve_workload

    return [resolve_workload(name, n=n_synthetic, seed=0) for name in names]


def bin_rows(workloads, bins) -> list[dict]:
    """Occupied bins of the union of the workloads, most requested first (ties by lengths)."""
    from tokenjoule.workloads import bin_workload

    counts: dict[tuple[int, int], int] = {}
    for wl in workloads:
        for key, n in bin_workload(wl, bins).counts.items():
            counts[key] = counts.get(key, 0) + n
    return [{"input_tokens": i, "output_tokens": o, "n_requests": n}
            for (i, o), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def replay_first(rows: list[dict], replay_bins) -> list[dict]:
    """The replay sample's bins first (a replay needs all of them), each group most requested first."""
    keys = set(replay_bins)
    return sorted(rows, key=lambda r: (r["input_tokens"], r["output_tokens"]) not in keys)


def replay_sample_bins(trace: str, n: int, bins) -> set[tuple[int, int]]:
    from tokenjoule.runs.replay import draw_sample
    from tokenjoule.workloads import bin_workload
    from tokenjoule.workloads.traces import resolve_workload

    return set(bin_workload(draw_sample(resolve_workload(trace), n, 0), bins).counts)


def sweep_dict(model: str, setup: str, rows: list[dict], device: str | None, idle_s: float,
               max_batch_cap: int) -> dict:
    """The sweep config of one setup's bin table (as paper_bins.py, for any engine)."""
    engine, mode = setup.split(":")[:2]
    data = {"name": f"case-study {setup}", "model": model, "engine": engine, "mode": mode, "batch_size": "max",
            "split_prefill": False, "order": "as-written", "warmup": 1, "repeats": 2, "idle_s": idle_s,
            "max_batch_cap": max_batch_cap,
            "cells": [{"input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"]} for r in rows]}
    if device:
        data["device"] = device
    return data


def replay_seconds(estimate, engine: str) -> float | None:
    """Predicted wall time of a replay from its table: hf runs ceil(N/B) batches per bin, each
    about one measured batch long; vllm schedules all requests together, about N/B batches.
    None when a bin has no duration (or the table is incomplete)."""
    if not estimate.complete:
        return None
    total = 0.0
    for r in estimate.rows:
        if r.duration_per_batch_s is None:
            return None
        batches = r.batches_rounded if engine == "hf" else r.n_requests / r.batch_size
        total += batches * r.duration_per_batch_s
    return total


def replay_config(args, setup: str, bins):
    from tokenjoule.runs.replay import ReplayConfig

    engine, mode = setup.split(":")[:2]
    return ReplayConfig(trace=args.replay_trace, model=args.model, engine=engine, mode=mode, n=args.replay_n,
                        seed=0, device=args.device or "auto", bins=bins)


def replay_done(store, config) -> bool:
    return store.latest(config.hash()) is not None


# -- outputs ------------------------------------------------------------------------------------
def _cell(x, fmt="{:,.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def study_markdown(study, gpu_label: str) -> str:
    """Table 4 beside the paper's: per workload and setup, totals, theory, % above, multiple, savings."""
    from tokenjoule.analysis.case_study import PAPER_TABLE4

    lines = [f"Case study, {study.model} on {gpu_label} ({study.basis}).", "",
             "| workload | setup | requests kept | kWh | J/request | theory (paper constants) kWh | above theory "
             "(paper) | multiple (paper) | above theory (tokenjoule) | savings | paper: above theory / savings |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in study.rows:
        key = r.workload.split(" ")[0]
        paper = PAPER_TABLE4.get(key)
        is_base = r.setup == study.baseline
        paper_txt = "-" if paper is None else f"{paper[0 if is_base else 1]:+.2f}% / {paper[2]:.2f}%"
        saved = None if is_base else study.savings.get(r.workload)
        theory_kwh = r.theory_j.get("paper")
        lines.append(
            f"| {r.workload} | {r.setup} | {r.n_kept:,} | "
            + (_cell(r.total_kwh, "{:.4f}") if r.total_energy_j is not None
               else f"≥ {r.partial_energy_j / 3.6e6:.4f} ({r.bins_missing} bins missing)")
            + f" | {_cell(r.energy_per_request_j)} | "
            f"{_cell(None if theory_kwh is None else theory_kwh / 3.6e6, '{:.4f}')}"
            f" | {_cell(r.above_theory_percent.get('paper'), '{:+.1f}%')} | "
            f"{_cell(r.multiple_of_theory.get('paper'), '{:.2f}x')} | "
            f"{_cell(r.above_theory_percent.get('tokenjoule'), '{:+.1f}%')} | "
            f"{_cell(None if saved is None else 100 * saved, '{:.1f}%')} | {paper_txt} |")
    return "\n".join(lines) + "\n"


# -- the session -------------------------------------------------------------------------------
def run_session(args: CaseStudyOptions, *, engine_factory=None, meter=None, clock=time.monotonic,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or with dry_run plan) the session; returns the summary also written to case_study.json."""
    from tokenjoule.analysis.case_study import CASE_STUDY_WORKLOADS, case_study
    from tokenjoule.analysis.estimate import binned_estimate
    from tokenjoule.runs.replay import prepare, run_replay
    from tokenjoule.runs.sweep import run_sweep
    from tokenjoule.runs.sweep_config import config_from_dict
    from tokenjoule.store.db import ResultStore
    from tokenjoule.workloads.binning import Bins

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else out / "case_study.db"
    if args.seed_db and Path(args.seed_db).is_file() and Path(args.seed_db).resolve() != db.resolve():
        shutil.copyfile(args.seed_db, db)
        log(f"resuming from {args.seed_db}")
    setups = list(args.setups or SETUPS)
    names = list(args.workloads or CASE_STUDY_WORKLOADS)
    bins = Bins.parse(args.input_bins, args.output_bins)
    budget = Budget(args.budget_minutes, clock)
    resume = args.resume_hint or (f"copy {db.name} into benchmarks/results/ (e.g. as case_study_<gpu>.db), then: "
                                  "python benchmarks/case_study.py --seed-db benchmarks/results/case_study_<gpu>.db "
                                  f"--budget-minutes {args.budget_minutes:g}")
    rows = bin_rows(load_workloads(names, args.n_synthetic), bins)
    # Bins of the replay sample first: a budget-limited session can then replay before the table is full.
    first = replay_sample_bins(args.replay_trace, args.replay_n, bins)
    rows = replay_first(rows, first)
    log(f"{len(rows)} occupied bins in the union of {', '.join(names)} ({len(first)} of them in the replay sample, "
          "measured first)")
    store = ResultStore(db)
    summary: dict = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "command": args.command,
                     "model": args.model, "setups": setups, "workloads": names, "bins_occupied": len(rows),
                     "phases": {}}
    try:
        # 1. bin tables; each setup gets an equal share of the budget left (a replay needs both)
        for k, setup in enumerate(setups):
            if not args.measure_bins:
                log(f"{setup}: bins measured before this session (benchmarks/bin_table.py)")
                continue
            config = config_from_dict(sweep_dict(args.model, setup, rows, args.device, args.idle_s,
                                                 args.max_batch_cap), source=f"case-study {setup}")
            kwargs = {"engine_factory": engine_factory} if engine_factory else {}
            if meter is not None:
                kwargs["meter"] = meter
            if args.dry_run:
                s = run_sweep(config, store, meter_kind=args.meter, dry_run=True, progress=False, **kwargs)
                todo = sum(1 for c in s.cells if c.status not in ("skipped", "beyond-max"))
                log(f"{setup}: {todo} of {s.total} cells to measure"
                      + (f", estimated {s.estimated_s / 60:.1f} min" if s.estimated_s else ""))
                summary["phases"][f"bins {setup}"] = {"cells": s.total, "to_measure": todo}
                continue
            if budget.left_s <= 0:
                log(f"{setup}: budget spent, bins not started")
                continue
            share_min = budget.left_s / 60 / (len(setups) - k)
            s = run_sweep(config, store, meter_kind=args.meter, budget_minutes=share_min, resume_command=resume,
                          **kwargs)
            log(f"{setup}: {s.done} measured, {s.failed} failed, {s.skipped} already stored, {s.not_run} left")
            summary["phases"][f"bins {setup}"] = {"cells": s.total, "measured": s.done, "failed": s.failed,
                                                  "not_run": s.not_run, "stopped_by_budget": s.stopped_by_budget}
        # 2. replays
        for setup in setups:
            cfg = replay_config(args, setup, bins)
            key = f"replay {setup}"
            if replay_done(store, cfg):
                summary["phases"][key] = {"status": "already stored"}
                continue
            try:
                _, _, est, _ = prepare(cfg, store)
            except Exception as exc:  # noqa: BLE001 - an incomplete table is reported, not fatal
                log(f"{key}: not run ({exc})")
                summary["phases"][key] = {"status": "not run", "reason": str(exc)}
                continue
            predicted = replay_seconds(est, cfg.engine)
            if args.dry_run or predicted is None or not budget.fits(1.5 * predicted + 60):
                why = "dry run" if args.dry_run else f"predicted {predicted or 0:.0f} s, {budget.left_s:.0f} s left"
                log(f"{key}: not run ({why})")
                summary["phases"][key] = {"status": "not run", "predicted_s": predicted, "reason": why}
                continue
            kwargs = {"engine": engine_factory(cfg.engine)} if engine_factory else {}
            result = run_replay(cfg, store, meter_kind=args.meter, meter=meter, **kwargs)
            (out / f"replay_{cfg.engine}_{cfg.mode}.json").write_text(json.dumps(result.to_dict(), indent=2))
            diffs = ", ".join(f"{k} {100 * v:+.1f}%" for k, v in result.differences.items() if v is not None)
            log(f"{key}: measured {result.measured_energy_j:,.0f} J; estimate vs replay: {diffs}")
            summary["phases"][key] = {"status": "ok", "record_id": result.record_id, "differences": result.differences}
        # 3. the Table-4 view
        ok = store.find(status="ok", kind="offline", model=args.model)
        gpu_label = (ok[0].provenance.get("gpu_names") or ["?"])[0] if ok else "no GPU yet"
        from tokenjoule.analysis.gpus import find_gpu

        card = find_gpu(gpu_label)
        study = case_study(store, model=args.model, workloads=names, baseline=setups[0],
                           optimized=setups[-1], gpu=card.name if card else None, bins=bins, basis=str(db),
                           n=args.n_synthetic)
        summary["study"] = study.to_dict()
        (out / "case_study.md").write_text(study_markdown(study, gpu_label))
        # 4. the reference table of what is measured
        if ok and card is not None and not args.dry_run:
            from tokenjoule.analysis.reference_table import build_table as build

            name = args.reference_name or f"{card.name.split()[0].lower()}-{args.model}"
            complete = all(r.total_energy_j is not None for r in study.rows)
            coverage = "complete for the case-study workloads" if complete else "partial (see case_study.md)"
            table = build(db.resolve(), name, args.model, setups, coverage, f"{args.model} case-study bin table")
            (out / "reference").mkdir(exist_ok=True)
            (out / "reference" / f"{name}.json").write_text(json.dumps(table, indent=1) + "\n")
            summary["reference"] = f"reference/{name}.json"
        (out / "case_study.json").write_text(json.dumps(summary, indent=2, default=str))
        log(study_markdown(study, gpu_label))
        log(f"wrote {out / 'case_study.json'}, {out / 'case_study.md'}")
    finally:
        store.close()
    done = all(r.total_energy_j is not None for r in study.rows)
    summary["complete"] = done
    log("study complete" if done else f"resume with: {resume}")
    return summary
