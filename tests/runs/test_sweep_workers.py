"""`tokenjoule sweep --workers N / --gpus ...`: several worker processes on one store (the real
CLI, the `tiny` preset on CPU, the simulated meter) measure every cell exactly once, also
after one worker is killed with SIGKILL mid-sweep and the command is run again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from tokenjoule.errors import TokenjouleError
from tokenjoule.runs import workers as w
from fakes.sweep_fakes import TINY_GRID_YAML
from tokenjoule.runs.sweep_config import load_config

CONFIG = TINY_GRID_YAML.replace("output_tokens: 4", "output_tokens: 16")
MAIN = "import sys; from tokenjoule.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _rows(db):
    with sqlite3.connect(db) as conn:
        return (conn.execute("SELECT spec_hash, status FROM cells").fetchall(),
                conn.execute("SELECT owner_pid FROM claims").fetchall())


def _setup(tmp_path):
    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(CONFIG)
    db = tmp_path / "results.db"
    args = [sys.executable, "-c", MAIN, "sweep", str(cfg_path), "--db", str(db), "--meter", "simulated",
            "--no-progress", "--workers", "2"]
    return cfg_path, db, args


def _claims(db):
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT owner_pid FROM claims")]
    except sqlite3.OperationalError:  # the schema is not created yet
        return []


@pytest.mark.slow
def test_two_workers_then_a_sigkill_and_a_rerun_measure_every_cell_once(tmp_path):
    cfg_path, db, args = _setup(tmp_path)
    expected = Counter({p.key: 1 for p in load_config(cfg_path).expand()})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    parent = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline, killed = time.monotonic() + 180, None
    try:
        while killed is None:
            assert parent.poll() is None, f"the sweep ended before a worker could be killed: {parent.stdout.read()}"
            assert time.monotonic() < deadline, "no worker claimed a cell"
            owners = _claims(db)
            if owners:
                killed = owners[0]
                os.kill(killed, signal.SIGKILL)  # a worker, mid-cell (it holds a claim)
            time.sleep(0.01)
        out, _ = parent.communicate(timeout=180)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 1, out
    assert f"pid {killed}): killed by SIGKILL" in out and "exit 0 (done)" in out  # each worker's exit
    assert "sweep summary (all workers)" in out and "resume with:" in out
    rows, owners = _rows(db)
    assert all(status == "ok" for _, status in rows)
    assert all(Counter(h for h, _ in rows)[k] <= 1 for k in expected)  # nothing measured twice
    assert {pid for pid, in owners} <= {killed}  # only the dead worker's claim can be left (stale)

    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    rows, owners = _rows(db)
    assert all(status == "ok" for _, status in rows)
    assert Counter(h for h, _ in rows) == expected  # every cell exactly once, over both runs
    assert owners == []  # every claim released or taken over


def test_gpu_workers_each_see_one_gpu_as_cuda0(tmp_path, monkeypatch):
    started = []

    class Proc:
        def __init__(self, argv, stdout, stderr, env):
            started.append((argv, env.get("CUDA_VISIBLE_DEVICES")))
            self.pid, self.returncode = 1000 + len(started), 0

        def poll(self):
            return 0

    monkeypatch.setattr(w.subprocess, "Popen", Proc)
    plan = w.plan_workers(["sweep", "grid.yaml", "--db", "r.db"], str(tmp_path / "r.db"), gpus=w.parse_gpus("2,5"))
    assert [wk.exit_text for wk in w.run_all(plan, poll_s=0)] == ["exit 0 (done)"] * 2
    assert [env for _, env in started] == ["2", "5"]
    for argv, _ in started:
        assert argv[argv.index("--device") + 1] == "cuda:0" and "--no-progress" in argv
    assert len({argv[argv.index("--summary-json") + 1] for argv, _ in started}) == 2  # one summary per worker
    assert w.exit_code(plan) == 0


@pytest.mark.parametrize("text", ["", "a", "0,0", "1,-2", "0;1"])
def test_bad_gpus_is_one_line(text):
    with pytest.raises(TokenjouleError) as err:
        w.parse_gpus(text)
    assert "--gpus" in str(err.value) and "\n" not in str(err.value)


def test_workers_refuse_gpu_cells_and_gpus_with_workers(tmp_path, capsys):
    from tokenjoule.cli.main import main

    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(CONFIG)
    db = str(tmp_path / "r.db")
    assert main(["sweep", str(cfg_path), "--db", db, "--gpus", "0", "--workers", "2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["sweep", str(cfg_path), "--db", db, "--gpus", "0", "--device", "cpu"]) == 2
    assert "--device" in capsys.readouterr().err


def test_gpu_workers_refuse_gpus_that_do_not_split_into_groups_and_cpu_workers_refuse_gpu_cells(tmp_path):
    from rich.console import Console

    from tokenjoule.cli.sweep_workers import run_workers
    from tokenjoule.runs.sweep_config import parse_config

    db = str(tmp_path / "r.db")
    tp2 = parse_config(CONFIG.replace("device: cpu", "device: cuda") + "tensor_parallel: 2\n")
    with pytest.raises(TokenjouleError, match="groups of 2"):  # tp 2 cells: 3 GPUs make no pairs
        run_workers(Console(), cfg=tp2, db=db, command="tokenjoule sweep g.yaml", gpus="0,1,2", workers=None,
                    device=None)
    with pytest.raises(TokenjouleError, match="--gpus"):
        run_workers(Console(), cfg=parse_config(CONFIG.replace("device: cpu", "device: cuda:0")), db=db,
                    command="tokenjoule sweep g.yaml", gpus=None, workers=2, device=None)
    assert not (tmp_path / "r.db.workers").exists()  # refused before any worker was planned


def test_ctrl_c_reaches_every_worker_and_the_exit_is_130(tmp_path, monkeypatch):
    signals = []

    class Proc:
        def __init__(self, argv, stdout, stderr, env):
            self.pid, self.returncode = 2000 + len(signals), None

        def poll(self):
            return self.returncode

        def send_signal(self, sig):
            signals.append(sig)

        def wait(self):
            self.returncode = 130  # the worker stores nothing of its cell in flight and exits 130
            return 130

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(w.subprocess, "Popen", Proc)
    monkeypatch.setattr(w.time, "sleep", interrupted)
    monkeypatch.setattr(w, "INTERRUPT_GRACE_S", 0.0)
    plan = w.plan_workers(["sweep", "g.yaml"], str(tmp_path / "r.db"), workers=2)
    ended = []
    with pytest.raises(KeyboardInterrupt):
        w.run_all(plan, on_exit=ended.append)
    assert signals == [signal.SIGINT, signal.SIGINT] and ended == plan
    assert [wk.exit_text for wk in plan] == ["exit 130 (interrupted)"] * 2 and w.exit_code(plan) == 130
