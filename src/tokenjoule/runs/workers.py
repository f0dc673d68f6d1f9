"""Several sweep processes side by side on one store: one worker per GPU (`--gpus 0,1,2,3`),
one per group of GPUs when cells are tensor/pipeline parallel, or N workers on the CPU
(`--workers N`).

Each worker is the ordinary `tokenjoule sweep` command on the same store, started as a
child process; the store's claims (store.claims) split the cells, so every cell is measured
by one worker only, and a rerun of the same command resumes as a single sweep does. A GPU
worker sees only its GPU (`CUDA_VISIBLE_DEVICES=<i>`), so its cells run on `cuda:0` and its
meter reads that one GPU. A worker killed mid-cell (even with SIGKILL) stores nothing for
that cell; its claim goes stale with the process, so a rerun measures the cell.

Cells with tensor_parallel x pipeline_parallel = k need k GPUs each: the GPU list is cut into
groups of k in the order given (`--gpus 0,1,2,3` at tp 2: workers on 0,1 and 2,3), and each
worker sees its group as cuda:0..k-1. A grid whose cells need different counts is refused
unless `--gpus-per-worker K` says the group size; cells needing fewer than K GPUs then run on
the first GPUs of their group (the meter reads the GPUs the cell uses, not the idle rest).

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
    gpu: str | None  # its GPUs as CUDA_VISIBLE_DEVICES ("2" or "2,3": cuda:0, cuda:1 inside), or None on the CPU
    argv: list[str]  # the sweep arguments (after `tokenjoule`)
    log_path: Path
    summary_path: Path
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def gpus(self) -> list[str]:
        return self.gpu.split(",") if self.gpu else []

    @property
    def device(self) -> str:
        if self.gpu is None:
            return "cpu"
        if len(self.gpus) == 1:
            return f"GPU {self.gpu} (cuda:0 inside)"
        return f"GPUs {self.gpu} (cuda:0..{len(self.gpus) - 1} inside)"

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


def gpus_per_worker(needs: set[int], given: int | None) -> int:
    """GPUs per worker for cells needing `needs` GPUs each (tensor_parallel x pipeline_parallel):
    the one count of the grid, or `given` (--gpus-per-worker), which must hold the largest."""
    needs = needs or {1}
    if given is not None:
        if given < 1:
            raise TokenjouleError(f"--gpus-per-worker must be at least 1, got {given}")
        if max(needs) > given:
            raise TokenjouleError(f"cells need up to {max(needs)} GPUs each (tensor_parallel x pipeline_parallel) but "
                                  f"--gpus-per-worker is {given}; give --gpus-per-worker {max(needs)} or more")
        return given
    if len(needs) > 1:
        counts = ", ".join(map(str, sorted(needs)))
        raise TokenjouleError(f"cells need different GPU counts ({counts}: tensor_parallel x pipeline_parallel); "
                              f"give --gpus-per-worker {max(needs)} (cells needing fewer run on the first GPUs "
                              "of their group) or sweep each count separately")
    return next(iter(needs))


def group_gpus(gpus: Sequence[str], per_worker: int) -> list[str]:
    """['0','1','2','3'] in groups of 2 -> ['0,1', '2,3'] (CUDA_VISIBLE_DEVICES of each worker)."""
    if per_worker < 1 or len(gpus) % per_worker:
        raise TokenjouleError(f"--gpus names {len(gpus)} GPUs, which do not split into groups of {per_worker} "
                              f"(GPUs per worker); name a multiple of {per_worker} GPUs")
    return [",".join(gpus[i:i + per_worker]) for i in range(0, len(gpus), per_worker)]


def plan_workers(sweep_argv: Sequence[str], db: str, *, gpus: Sequence[str] | None = None,
                 workers: int | None = None, per_worker: int = 1) -> list[Worker]:
    """The workers to start: one per group of `per_worker` GPUs of `gpus` (each with `--device
    cuda:0`), else `workers` CPU workers. `sweep_argv` is the single-process sweep command after
    `tokenjoule`."""
    slots: list[str | None] = list(group_gpus(gpus, per_worker)) if gpus else [None] * int(workers or 1)
    folder = Path(f"{db}.workers")  # made only once the plan stands
    folder.mkdir(parents=True, exist_ok=True)
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
