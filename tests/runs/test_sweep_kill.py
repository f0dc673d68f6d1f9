"""kill -9 in the middle of a sweep (the real CLI, the `tiny` preset on CPU, the simulated
meter), then resume: every cell ends up stored exactly once and the store is intact."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from fakes.sweep_fakes import TINY_GRID_YAML
from tokenjoule.runs.sweep_config import load_config

CONFIG = TINY_GRID_YAML


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from tokenjoule.cli.main import main; sys.exit(main(sys.argv[1:]))", *args]


def _ok_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM cells WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


def test_sigkill_mid_sweep_then_resume_runs_every_cell_exactly_once(tmp_path):
    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(CONFIG)
    db = tmp_path / "results.db"
    total = len(load_config(cfg_path).expand())
    args = ["sweep", str(cfg_path), "--db", str(db), "--meter", "simulated", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    try:
        while _ok_rows(db) < 2:
            assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "sweep made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    at_kill = _ok_rows(db)
    assert 2 <= at_kill < total

    resumed = subprocess.run(_cli(*args), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT spec_hash, status FROM cells").fetchall()
    assert all(status == "ok" for _, status in rows)
    assert Counter(h for h, _ in rows) == Counter({p.key: 1 for p in load_config(cfg_path).expand()})
