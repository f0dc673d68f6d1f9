"""`tokenjoule sweep --gpus 0,1 [--gpus-per-worker K] | --workers N`: start the workers
(runs.workers; one per GPU, or per group of GPUs for tensor/pipeline-parallel cells), report
each worker's exit as it ends, then print one summary."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console
from rich.table import Table

from tokenjoule.errors import TokenjouleError


def run_workers(console: Console, *, cfg: Any, db: str, command: str, gpus: str | None, workers: int | None,
                device: str | None, per_worker: int | None = None) -> int:
    """Run the sweep `command` (a `tokenjoule sweep ...` line) in several processes; the exit code."""
    from tokenjoule.runs import workers as w

    gpu_list = w.parse_gpus(gpus) if gpus is not None else None
    devices = {str(p.spec.device) for p in cfg.expand()}
    if gpu_list is not None and device and device != "cuda:0":
        raise TokenjouleError(f"--gpus gives each worker its GPUs from cuda:0 on; leave out --device {device}")
    if per_worker is not None and gpu_list is None:
        raise TokenjouleError("--gpus-per-worker applies to --gpus (groups of GPUs); --workers runs on the CPU")
    needs = {p.spec.tensor_parallel * p.spec.pipeline_parallel for p in cfg.expand()}
    group = w.gpus_per_worker(needs, per_worker) if gpu_list is not None else 1
    if gpu_list is None and any(d.startswith("cuda") for d in devices):
        raise TokenjouleError("--workers runs on the CPU; for GPU cells use --gpus 0,1,... (one worker per GPU: "
                              "two workers on one GPU would share its energy counter)")
    argv = shlex.split(command)[1:]  # drop "tokenjoule"
    plan = w.plan_workers(argv, db, gpus=gpu_list, workers=workers, per_worker=group)
    console.print(f"starting {len(plan)} workers on {db} (logs in {db}.workers/)")

    def ended(worker: Any) -> None:
        pid = worker.proc.pid if worker.proc is not None else "-"
        console.print(f"worker {worker.index} ({worker.device}, pid {pid}): {worker.exit_text}; "
                      f"log {worker.log_path}")

    interrupted = False
    try:
        w.run_all(plan, on_exit=ended)
    except KeyboardInterrupt:
        interrupted = True
    _print_summary(console, plan, command)
    return 130 if interrupted else w.exit_code(plan)


def _print_summary(console: Console, plan: list, command: str) -> None:
    table = Table(title="sweep summary (all workers)")
    for col in ("worker", "device", "exit", "measured (ok)", "failed", "skipped", "not run"):
        table.add_column(col, justify="left" if col in ("worker", "device", "exit") else "right")
    totals = {"ok": 0, "failed": 0}
    for worker in plan:
        c = worker.counts
        for key in totals:
            totals[key] += int(c.get(key, 0))
        row = [str(c[k]) if k in c else "-" for k in ("ok", "failed", "skipped", "not_run")]
        table.add_row(str(worker.index), worker.device, worker.exit_text, *row)
    console.print(table)
    grid = max((int(wk.counts.get("total", 0)) for wk in plan), default=0)
    console.print(f"{grid} cells in the grid; {totals['ok']} measured and {totals['failed']} failed in this run "
                  "(skipped: measured before, or measured by another worker)")
    if any(not wk.counts for wk in plan) or any(wk.returncode not in (0, 1) for wk in plan):
        console.print("a worker did not finish: its cell in flight was not stored and its claim is free; "
                      f"resume with: {command} (with the same --gpus/--workers)", soft_wrap=True)
