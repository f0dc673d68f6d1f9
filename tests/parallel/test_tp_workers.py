"""`sweep --gpus` with tensor-parallel cells: the GPU list is cut into groups, one worker per
group, each worker's CUDA_VISIBLE_DEVICES is its group (workers started as fakes here)."""

from __future__ import annotations

import pytest
from rich.console import Console

from fakes.sweep_fakes import TINY_GRID_YAML
from tokenjoule.cli.sweep_workers import run_workers
from tokenjoule.errors import TokenjouleError
from tokenjoule.runs import workers as w
from tokenjoule.runs.sweep_config import parse_config

GPU_GRID = TINY_GRID_YAML.replace("device: cpu", "device: cuda")


class _Proc:
    started: list[tuple[list[str], dict]] = []

    def __init__(self, argv, stdout, stderr, env):
        _Proc.started.append((list(argv), dict(env)))
        self.pid, self.returncode = 4000 + len(_Proc.started), 0

    def poll(self):
        return self.returncode


@pytest.fixture
def fake_popen(monkeypatch):
    _Proc.started = []
    monkeypatch.setattr(w.subprocess, "Popen", _Proc)
    return _Proc.started


def _run(cfg_text, tmp_path, gpus, per_worker=None):
    return run_workers(Console(width=200), cfg=parse_config(cfg_text), db=str(tmp_path / "r.db"),
                       command="tokenjoule sweep g.yaml", gpus=gpus, workers=None, device=None, per_worker=per_worker)


def test_tp2_cells_on_four_gpus_make_two_workers_of_two_gpus(tmp_path, fake_popen):
    assert _run(GPU_GRID + "tensor_parallel: 2\n", tmp_path, "0,1,2,3") == 0
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in fake_popen] == ["0,1", "2,3"]
    for argv, _ in fake_popen:
        assert argv[argv.index("--device") + 1] == "cuda:0"  # each worker's group starts at cuda:0


def test_tp_times_pp_sets_the_group_size(tmp_path, fake_popen):
    vllm = GPU_GRID + "engine: vllm\n"  # pipeline parallelism is vLLM's
    assert _run(vllm + "tensor_parallel: 2\npipeline_parallel: 2\n", tmp_path, "3,2,1,0") == 0
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in fake_popen] == ["3,2,1,0"]  # one group of 4, in the order given


def test_mixed_gpu_counts_need_gpus_per_worker(tmp_path, fake_popen):
    mixed = GPU_GRID + "tensor_parallel: [1, 2]\n"
    with pytest.raises(TokenjouleError, match="--gpus-per-worker 2"):
        _run(mixed, tmp_path, "0,1,2,3")
    with pytest.raises(TokenjouleError, match="up to 2 GPUs"):
        _run(mixed, tmp_path, "0,1,2,3", per_worker=1)
    assert fake_popen == []  # refused before any worker started
    assert _run(mixed, tmp_path, "0,1,2,3", per_worker=2) == 0
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in fake_popen] == ["0,1", "2,3"]


def test_group_and_size_rules():
    assert w.group_gpus(["0", "1", "2", "3", "4", "5"], 3) == ["0,1,2", "3,4,5"]
    with pytest.raises(TokenjouleError, match="groups of 4"):
        w.group_gpus(["0", "1"], 4)
    assert w.gpus_per_worker({2}, None) == 2 and w.gpus_per_worker({1, 2}, 4) == 4
    worker = w.Worker(1, "2,3", [], None, None)  # type: ignore[arg-type]
    assert worker.gpus == ["2", "3"] and "cuda:0..1" in worker.device


def test_gpus_per_worker_without_gpus_is_refused(tmp_path, capsys):
    from fakes.sweep_fakes import TINY_GRID_YAML as grid
    from tokenjoule.cli.main import main

    cfg_path = tmp_path / "g.yaml"
    cfg_path.write_text(grid)
    assert main(["sweep", str(cfg_path), "--db", str(tmp_path / "r.db"), "--workers", "2",
                 "--gpus-per-worker", "2"]) == 2
    err = capsys.readouterr().err
    assert "--gpus-per-worker" in err and "Traceback" not in err
