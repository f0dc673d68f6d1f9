"""Two `tokenjoule sweep` processes on one store at the same time (the real CLI, the `tiny`
preset on CPU, the simulated meter): they split the cells, and every cell is measured once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

from fakes.sweep_fakes import TINY_GRID_YAML
from tokenjoule.runs.sweep_config import load_config

CONFIG = TINY_GRID_YAML

# Both processes import the heavy modules first, then meet at a file barrier, so their cells overlap.
STARTER = ("import sys, time, pathlib; barrier = pathlib.Path(sys.argv.pop(1)); "
           "from tokenjoule.cli.main import main; import tokenjoule.runs.sweep, tokenjoule.engines.hf, torch; "
           "(barrier / str(__import__('os').getpid())).touch(); "
           "deadline = time.time() + 120\n"
           "while len(list(barrier.iterdir())) < 2 and time.time() < deadline: time.sleep(0.01)\n"
           "sys.exit(main(sys.argv[1:]))")


@pytest.mark.slow
def test_two_concurrent_sweeps_measure_every_cell_exactly_once(tmp_path):
    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(CONFIG)
    db = tmp_path / "results.db"
    expected = {p.key for p in load_config(cfg_path).expand()}
    args = ["sweep", str(cfg_path), "--db", str(db), "--meter", "simulated", "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(barrier), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT spec_hash, status FROM cells").fetchall()
        claims_left = conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    assert all(status == "ok" for _, status in rows), rows
    assert Counter(h for h, _ in rows) == Counter({k: 1 for k in expected})  # nothing doubled, nothing lost
    assert claims_left == 0  # every claim released
