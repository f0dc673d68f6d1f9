"""benchmarks/parallel_evidence.py: --dry-run prints every step's command (on the CPU), the
4-cell grid it sweeps is valid, and without 4 GPUs a real run stops in one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "parallel_evidence.py"


def _module():
    spec = importlib.util.spec_from_file_location("parallel_evidence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_prints_every_step_and_writes_nothing(tmp_path):
    out = tmp_path / "ev"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines() if not line.startswith("#")}
    assert set(lines) == {"paper-parallel", "vllm-pp2", "sweep-1gpu", "sweep-2gpu"}
    assert "tokenjoule sweep --preset paper-parallel" in lines["paper-parallel"]
    assert "--engine vllm" in lines["vllm-pp2"] and "--pp 2" in lines["vllm-pp2"]
    assert lines["sweep-1gpu"].rstrip().endswith("--gpus 0") and lines["sweep-2gpu"].rstrip().endswith("--gpus 0,1")
    assert not out.exists()


def test_the_worker_grid_has_four_cells():
    from tokenjoule.runs.sweep_config import parse_config

    assert len(parse_config(_module().WORKER_GRID_YAML).expand()) == 4


def test_without_four_gpus_it_stops_in_one_line(tmp_path, monkeypatch, capsys):
    module = _module()
    monkeypatch.setattr(module, "visible_gpus", lambda: 1)
    monkeypatch.setattr(sys, "argv", ["parallel_evidence.py", "--out", str(tmp_path / "ev")])
    assert module.main() == 2
    err = capsys.readouterr().err.strip()
    assert "at least 4 GPUs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ev").exists()
