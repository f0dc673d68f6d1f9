"""The paper's case study on one GPU, checked against a direct replay (run on the device).

    python benchmarks/case_study.py --budget-minutes 25                 # writes into $OUT (or ./out)
    python benchmarks/case_study.py --seed-db benchmarks/results/case_study_h200.db --budget-minutes 25
    python benchmarks/case_study.py --dry-run                           # the plan only, any machine

Phases, each resumable (a finished cell or replay is never repeated; the store is the state):
1. bin tables of --model for hf eager and vllm graphs (--setup; `--protocol fast`, the default,
   runs benchmarks/bin_table.py per table on its share of the budget), covering every occupied
   default bin of the five case-study workloads (the shipped Azure 2023 traces and the three
   paper-matched synthetic sets), at the largest fitting batch, most requested bins first
   (so a budget-limited session measures the bins that weigh most);
   The bins of the replay sample go first, so the replay can run before the table is complete.
2. the direct replay of a seeded sample of --replay-n requests of --replay-trace for each
   setup whose table covers the sample (tokenjoule.runs.replay), when its predicted time fits
   the budget left: hf as padded static batches by bin, vllm as one generate;
3. the Table-4 view (tokenjoule.analysis.case_study): binned totals, theory under both
   conventions, above-theory percentages, multiples and savings, beside the paper's numbers;
4. the reference table of the measured cells (benchmarks/build_reference.py format), to copy
   into src/tokenjoule/reference/data/ when the study is complete.

Outputs in --out: case_study.db (the store), case_study.json, case_study.md, replay_*.json,
reference/NAME.json. The last line printed says how to resume.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.runs.case_study import CaseStudyOptions, run_session  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT)")
    p.add_argument("--db", default=None, help="results database (default OUT/case_study.db)")
    p.add_argument("--seed-db", default=None, help="copy this database to --db first (resume a session)")
    p.add_argument("--budget-minutes", type=float, default=25.0, help="stop before work predicted past this")
    p.add_argument("--setup", action="append", help="engine:mode (repeatable; default hf:eager, vllm:graphs)")
    p.add_argument("--workload", action="append", help="workloads (default: the five of the case study)")
    p.add_argument("--replay-trace", default="azure-conv-2023")
    p.add_argument("--replay-n", type=int, default=1000)
    p.add_argument("--n-synthetic", type=int, default=10_000, help="requests per paper:NAME workload")
    p.add_argument("--meter", default="auto", help="auto | nvml | estimate | simulated")
    p.add_argument("--device", default=None, help="override the device (e.g. cpu for a dry check)")
    p.add_argument("--input-bins", default=None, help="input bin edges (default: the paper's)")
    p.add_argument("--output-bins", default=None, help="output bin edges (default: the paper's)")
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--max-batch-cap", type=int, default=1024, help="ceiling of the largest-batch search")
    p.add_argument("--reference-name", default=None, help="default: <gpu>-<model>, e.g. h200-llama-3.1-8b")
    p.add_argument("--protocol", choices=("fast", "sweep"), default="fast",
                   help="bin tables: fast = benchmarks/bin_table.py (one load per table, predicted largest batch, "
                        "adaptive windows); sweep = the sweep runner (batch search, fixed repeats)")
    p.add_argument("--bins-share", type=float, default=0.7,
                   help="with --protocol fast: share of the budget for the tables (the rest: replays)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; measure nothing")
    return p.parse_args(argv)


def options(args: argparse.Namespace, argv: list[str] | None) -> CaseStudyOptions:
    command = " ".join(["python benchmarks/case_study.py", *(argv if argv is not None else sys.argv[1:])])
    return CaseStudyOptions(
        model=args.model, out=args.out, db=args.db, seed_db=args.seed_db, budget_minutes=args.budget_minutes,
        setups=args.setup or ["hf:eager", "vllm:graphs"], workloads=args.workload, replay_trace=args.replay_trace,
        replay_n=args.replay_n, n_synthetic=args.n_synthetic, meter=args.meter, device=args.device,
        input_bins=args.input_bins, output_bins=args.output_bins, idle_s=args.idle_s,
        max_batch_cap=args.max_batch_cap, reference_name=args.reference_name, dry_run=args.dry_run, command=command)


def fast_tables(args: argparse.Namespace, opts: CaseStudyOptions, *, engine_factory, meter, clock) -> float:
    """Phase 1 with benchmarks/bin_table.py, one call per table on its share of the budget, into
    the session's store; returns the minutes it took."""
    import shutil

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bin_table

    from tokenjoule.analysis.case_study import CASE_STUDY_WORKLOADS
    from tokenjoule.runs import case_study as session
    from tokenjoule.workloads.binning import Bins

    bins = Bins.parse(opts.input_bins, opts.output_bins)
    rows = session.bin_rows(session.load_workloads(opts.workloads or list(CASE_STUDY_WORKLOADS), opts.n_synthetic),
                            bins)
    rows = session.replay_first(rows, session.replay_sample_bins(opts.replay_trace, opts.replay_n, bins))
    todo = [bin_table.Bin(r["input_tokens"], r["output_tokens"], r["n_requests"]) for r in rows]
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    db = opts.db or str(out / "case_study.db")
    if opts.seed_db and Path(opts.seed_db).is_file() and not Path(db).exists():
        shutil.copyfile(opts.seed_db, db)
    start = clock()
    for k, setup in enumerate(opts.setups):
        left_min = max(0.0, args.bins_share * opts.budget_minutes - (clock() - start) / 60)
        share = left_min / (len(opts.setups) - k)
        argv = ["--tables", setup.replace(":", "-"), "--db", db, "--out", str(out / "bin_table"), "--model",
                opts.model, "--budget-minutes", f"{share:.3f}", "--meter", opts.meter, "--device",
                opts.device or "auto", "--idle-s", str(opts.idle_s), "--max-batch-cap", str(opts.max_batch_cap)]
        bin_table.main(argv, bins=todo, engine_factory=engine_factory, meter=meter, clock=clock)
    return (clock() - start) / 60


def main(argv: list[str] | None = None, *, engine_factory=None, meter=None, clock=time.monotonic) -> int:
    """`engine_factory`, `meter`, `clock`: injected by the CPU test (a scripted engine and meter)."""
    args = parse_args(argv)
    opts = options(args, argv)
    if args.protocol == "fast" and not args.dry_run:
        spent = fast_tables(args, opts, engine_factory=engine_factory, meter=meter, clock=clock)
        opts.budget_minutes = max(0.5, opts.budget_minutes - spent)
        opts.measure_bins = False
        opts.seed_db = None  # already copied
    run_session(opts, engine_factory=engine_factory, meter=meter, clock=clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
