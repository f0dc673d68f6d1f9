"""Measure the paper's controlled experiments (Figures 2-5) on one GPU, then check its findings.

Runs, through the sweep runner, into ONE store under --out (default $OUT):

1. paper-decoding-brackets: speculative decoding at acceptance ~0 (the separate draft) and ~1
   (the target drafting for itself; with vllm also n-gram on random and on repeating prompts),
   with greedy baselines (Figure 3's bracket; the most informative cells, so they run first);
2. paper-lengths --quick (Figure 2);
3. paper-moe (Figure 4);
4. paper-frameworks: hf eager/compile/cudagraphs (+ vllm eager/graphs when importable),
   batch 1 up to the largest that fits (Figure 5);
5. paper-decoding (Figure 3's other strategies).

Resumable: every cell is keyed by its spec hash, so running again with the same store (or
--seed-db a copy of it) skips what is done. --budget-minutes is shared by all presets; when it
runs out the script prints the command that resumes. Then (or with --summary-only) it states,
next to each figure, the paper's finding and whether the store shows it (analysis/
paper_findings.py: computed from the cells, never typed).

    python benchmarks/paper_figures.py --budget-minutes 25
    python benchmarks/paper_figures.py --seed-db benchmarks/results/paper_figures_h200/paper_figures.db --budget-minutes 25
    python benchmarks/paper_figures.py --db some.db --summary-only

Outputs: paper_figures.db, paper_figures_findings.json (GPU, date, command, findings),
paper_figures_findings.md (one line per finding, for docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


@dataclass(frozen=True)
class PresetRun:
    """One preset of the plan and its build options."""

    name: str
    quick: bool = False
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name + (" --quick" if self.quick else "") + (f" --model {self.model}" if self.model else "")


def plan(model: str | None = None, with_vllm: bool | None = None, quick: bool = False) -> list[PresetRun]:
    """The presets in the order they run (most informative first). `quick` also shortens the
    presets that are full by default (decoding, frameworks, brackets)."""
    opts = {"with_vllm": with_vllm}
    return [
        PresetRun("paper-decoding-brackets", quick, model, opts),
        PresetRun("paper-lengths", True, model),
        PresetRun("paper-moe", quick, None),  # its own three models
        PresetRun("paper-frameworks", quick, model, opts),
        PresetRun("paper-decoding", quick, model),
    ]


def build(run: PresetRun, **overrides: Any):
    from tokenjoule.runs.sweep_presets import build_preset

    return build_preset(run.name, model=run.model, quick=run.quick, **run.options, **overrides)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="target model (default: each preset's, llama-3.1-8b)")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT)")
    p.add_argument("--db", default=None, help="results database (default OUT/paper_figures.db)")
    p.add_argument("--seed-db", default=None, help="copy this database to --db first (resume a session)")
    p.add_argument("--budget-minutes", type=float, default=25.0, help="for all presets together")
    p.add_argument("--quick", action="store_true", help="the --quick form of every preset")
    vllm = p.add_mutually_exclusive_group()
    vllm.add_argument("--with-vllm", dest="with_vllm", action="store_true", default=None)
    vllm.add_argument("--without-vllm", dest="with_vllm", action="store_false")
    p.add_argument("--only", default=None, help="comma-separated preset names of the plan to run")
    p.add_argument("--meter", default="auto", help="auto | nvml | estimate | simulated")
    p.add_argument("--device", default=None, help="override the device (e.g. cpu for a dry check)")
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--min-window-s", type=float, default=None, help="override the window length (CPU checks)")
    p.add_argument("--input-tokens", type=int, default=None, help="override every cell's input length (CPU checks)")
    p.add_argument("--output-tokens", type=int, default=None, help="override every cell's output length (CPU checks)")
    p.add_argument("--acceptance", type=float, default=None,
                   help="a published acceptance rate to place on the speculative brackets (interpolated)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and the time guess only")
    p.add_argument("--summary-only", action="store_true", help="only check the findings of --db")
    return p.parse_args(argv)


def findings_report(store, model: str, acceptance: float | None) -> tuple[list[dict[str, Any]], str]:
    """The findings as dicts, and as markdown lines (figure: paper | store shows it? numbers)."""
    from tokenjoule.analysis.paper_findings import check_findings

    found = [f.to_dict() for f in check_findings(store.find(status="ok"), model, acceptance)]
    lines = []
    for f in found:
        lines.append(f"- **{f['figure']}**: paper: {f['paper']} — store shows it: **{f['verdict']}** "
                     f"({f['reason'] or f['criterion']}" + (f"; observed: {f['summary']}" if f["summary"] else "")
                     + f"; cells {', '.join(map(str, f['cell_ids'][:12]))}"
                     f"{' ...' if len(f['cell_ids']) > 12 else ''})")
    return found, "\n".join(lines) + "\n"


def run_plan(runs: list[PresetRun], store, args: argparse.Namespace, resume: str) -> tuple[bool, float]:
    """Run the presets in order within the shared budget; (stopped_by_budget, gpu_minutes)."""
    from tokenjoule.runs.sweep import run_sweep

    started, gpu_min = time.monotonic(), 0.0
    for run in runs:
        left = args.budget_minutes - (time.monotonic() - started) / 60
        if not args.dry_run and left <= 0:
            print(f"budget spent before {run.label}")
            return True, gpu_min
        config = build(run, idle_s=args.idle_s)
        overrides = {k: v for k, v in (("device", args.device), ("min_window_s", args.min_window_s),
                                       ("input_tokens", args.input_tokens), ("output_tokens", args.output_tokens))
                     if v is not None}
        if overrides:
            config = config.override(**overrides)
        print(f"== {run.label}: {len(config.expand())} cells" + ("" if args.dry_run else f", {left:.1f} min left"))
        summary = run_sweep(config, store, meter_kind=args.meter, dry_run=args.dry_run,
                            budget_minutes=None if args.dry_run else left, resume_command=resume, progress=False)
        for c in summary.cells:
            if args.dry_run or c.status in ("ok", "failed"):
                print(f"  {c.status:8s} {c.label}" + (f" ({c.reason})" if c.reason else ""))
        if args.dry_run:
            guess = summary.estimated_s
            print(f"  estimated {guess / 60:.1f} min" if guess is not None else "  no time estimate")
            continue
        gpu_min += summary.gpu_minutes
        print(f"  {summary.done} measured, {summary.failed} failed, {summary.skipped} skipped, {summary.not_run} left")
        if summary.stopped_by_budget or summary.interrupted:
            return True, gpu_min
    return False, gpu_min


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tokenjoule.store.db import ResultStore

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = Path(args.db) if args.db else out / "paper_figures.db"
    if args.seed_db and Path(args.seed_db).is_file() and Path(args.seed_db).resolve() != db.resolve():
        shutil.copyfile(args.seed_db, db)
        print(f"resuming from {args.seed_db}")
    runs = plan(args.model, args.with_vllm, args.quick)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {r.name for r in runs}
        if unknown:
            print(f"unknown preset(s) {', '.join(sorted(unknown))}; the plan has {', '.join(r.name for r in runs)}")
            return 2
        runs = [r for r in runs if r.name in wanted]
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    # The same store again skips what is done, so this command runs as printed on this machine; on
    # a fresh one, --seed-db a copy of the store (the committed one: benchmarks/results/...).
    flags = ({True: " --with-vllm", False: " --without-vllm"}.get(args.with_vllm, "")
             + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else ""))
    def resume_with(minutes: float) -> str:
        return (f"python benchmarks/paper_figures.py --db {db} --out {out} --budget-minutes {minutes:g}"
                f"{flags} (on a fresh machine: --seed-db a copy of {db.name})")
    resume = resume_with(args.budget_minutes)
    store = ResultStore(db)
    try:
        cells_before = len(store.find())
        stopped, gpu_min = (False, 0.0) if args.summary_only else run_plan(runs, store, args, resume)
        if args.dry_run:
            return 0
        if stopped and len(store.find()) == cells_before:
            # the same command would measure nothing again: ask for more time instead
            resume = resume_with(max(2 * args.budget_minutes, 5.0))
            print(f"stopped by the budget before any cell was measured: {args.budget_minutes:g} min is less "
                  f"than the next cell needs; resume with more, e.g.: {resume}")
        elif stopped:
            print(f"stopped by the budget; resume with: {resume}")
        model = args.model or "llama-3.1-8b"
        found, md = findings_report(store, model, args.acceptance)
        print(md)
        ok = store.find(status="ok")
        gpu = next((r.gpu_name for r in ok if r.gpu_name), None)
        (out / "paper_figures_findings.json").write_text(json.dumps({
            "gpu_name": gpu, "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": f"python benchmarks/paper_figures.py {argv_text}".strip(), "db": str(db),
            "cells_ok": len(ok), "gpu_minutes_this_session": gpu_min, "stopped_by_budget": stopped,
            "resume_command": resume if stopped else None, "findings": found,
        }, indent=2, default=str))
        (out / "paper_figures_findings.md").write_text(
            f"Findings of {db.name} ({gpu or 'no GPU'}; `python benchmarks/paper_figures.py {argv_text}`):\n\n" + md)
        print(f"wrote {db}, {out / 'paper_figures_findings.json'}, {out / 'paper_figures_findings.md'}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
