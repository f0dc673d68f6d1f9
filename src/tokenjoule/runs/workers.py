"""Several sweep processes side by side on one store: one worker per GPU (`--gpus 0,1,2,3`)
or N workers on the CPU (`--workers N`).

Each worker is the ordinary `tokenjoule sweep` command on the same store, started as a
child process; the store's claims (store.claims) split the cells, so every cell is measured
by one worker only, and a rerun of the same command resumes as a single sweep does. A GPU
worker sees only its GPU (`CUDA_VISIBLE_DEVICES=<i>`), so its cells run on `cuda:0` and its
meter reads that one GPU. A worker killed mid-cell (even with SIGKILL) stores nothing for
that cell; its claim goes stale with the process, so a rerun measures the cell.

Each worker's output goes to `<db>.workers/worker-<k>.log` and its counts to
`worker-<k>.json` beside it (so the parent can print one summary); nothing here draws.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tokenjoule.errors import TokenjouleError

INTERRUPT_GRACE_S = 5.0
_MAIN = "import sys; from tokenjoule.cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Worker:
    index: int  # 1-based
    gpu: str | None  # the GPU index it sees as cuda:0, or None on the CPU
    argv: list[str]  # the sweep arguments (after `tokenjoule`)
    log_path: Path
    summary_path: Path
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return f"GPU {self.gpu} (cuda:0 inside)" if self.gpu is not None else "cpu"

    @property
    def exit_text(self) -> str:
        rc = self.returncode
        if rc is None:
            return "not started"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return {0: "exit 0 (done)", 1: "exit 1 (a cell failed)", 130: "exit 130 (interrupted)"}.get(rc, f"exit {rc}")


def parse_gpus(text: str) -> list[str]:
    """'0,1,2,3' -> ['0', '1', '2', '3']: distinct whole numbers; a one-line error otherwise."""
    gpus = [g.strip() for g in str(text).split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise TokenjouleError(f"--gpus {text!r}: expected GPU indices separated by commas (e.g. 0,1,2,3)")
    if len(set(gpus)) != len(gpus):
        raise TokenjouleError(f"--gpus {text!r}: a GPU is named twice; each worker needs its own GPU")
    return gpus


def plan_workers(sweep_argv: Sequence[str], db: str, *, gpus: Sequence[str] | None = None,
                 workers: int | None = None) -> list[Worker]:
    """The workers to start: one per GPU of `gpus` (each with `--device cuda:0`), else `workers`
    CPU workers. `sweep_argv` is the single-process sweep command after `tokenjoule`."""
    folder = Path(f"{db}.workers")
    folder.mkdir(parents=True, exist_ok=True)
    slots: list[str | None] = list(gpus) if gpus else [None] * int(workers or 1)
    out = []
    for k, gpu in enumerate(slots, start=1):
        argv = [*sweep_argv, "--no-progress"]  # several bars on one terminal would garble each other
        if gpu is not None:
            argv += ["--device", "cuda:0"]
        summary = folder / f"worker-{k}.json"
        summary.unlink(missing_ok=True)  # never read a summary of an earlier run
        out.append(Worker(k, gpu, [*argv, "--summary-json", str(summary)], folder / f"worker-{k}.log", summary))
    return out


def start(worker: Worker) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if worker.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = worker.gpu
    with open(worker.log_path, "ab") as log:
        worker.proc = subprocess.Popen([sys.executable, "-c", _MAIN, *worker.argv], stdout=log,
                                       stderr=subprocess.STDOUT, env=env)


def run_all(workers: list[Worker], on_exit: Callable[[Worker], None] = lambda w: None,
            poll_s: float = 0.2) -> list[Worker]:
    """Start every worker, wait for all of them (calling `on_exit` as each ends) and read their
    counts. Ctrl-C is passed on to the workers (each stores nothing of its cell in flight)."""
    for w in workers:
        start(w)
    running = list(workers)
    try:
        while running:
            for w in list(running):
                assert w.proc is not None
                if w.proc.poll() is not None:
                    w.returncode = w.proc.returncode
                    running.remove(w)
                    _read_counts(w)
                    on_exit(w)
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the workers too (one process group): give them a moment
        # to stop on their own, so a second SIGINT does not cut their clean-up short; a SIGINT
        # sent to this process alone is passed on after that.
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        while any(w.proc is not None and w.proc.poll() is None for w in running) and time.monotonic() < deadline:
            time.sleep(poll_s)
        for w in running:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGINT)
        for w in running:
            if w.proc is not None:
                w.returncode = w.proc.wait()
                _read_counts(w)
                on_exit(w)
        raise
    return workers


def _read_counts(w: Worker) -> None:
    try:
        w.counts = json.loads(w.summary_path.read_text())
    except (OSError, ValueError):
        w.counts = {}  # killed before it could write one


def exit_code(workers: Sequence[Worker]) -> int:
    """0 when every worker ended cleanly, 130 when one was interrupted, else 1."""
    codes = [w.returncode for w in workers]
    if all(c == 0 for c in codes):
        return 0
    if any(c == 130 for c in codes):
        return 130
    return 1


def summary_counts(summary: Any) -> dict[str, Any]:
    """The counts a worker writes for the parent (`--summary-json`)."""
    return {"total": summary.total, "ok": summary.done, "failed": summary.failed, "skipped": summary.skipped,
            "claimed_elsewhere": sum(1 for c in summary.cells if c.reason == "claimed by another process"),
            "not_run": summary.not_run, "wall_s": summary.wall_s, "gpu_minutes": summary.gpu_minutes,
            "interrupted": summary.interrupted}
