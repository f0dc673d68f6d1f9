"""`--tp/--pp` on measure, sweep and serve-bench reach the spec; bad values, pipeline
parallelism on hf and more GPUs than visible are one-line errors before anything loads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokenjoule.cli.main import main
from tokenjoule.models import preflight as pf


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def captured_measure(monkeypatch):
    seen = []

    def fake_run_measure(spec, store, **kw):
        seen.append(spec)
        raise SystemExit(0)  # stop before any engine: the spec is what is tested

    monkeypatch.setattr("tokenjoule.runs.offline.run_measure", fake_run_measure)
    return seen


def test_measure_tp_pp_reach_the_spec(tmp_path, captured_measure):
    with pytest.raises(SystemExit):
        main(["measure", "--model", "tiny", "--engine", "vllm", "--device", "cpu", "--tp", "2", "--pp", "2",
              "--db", str(tmp_path / "r.db")])
    assert (captured_measure[0].tensor_parallel, captured_measure[0].pipeline_parallel) == (2, 2)
    with pytest.raises(SystemExit):
        main(["measure", "--model", "tiny", "--device", "cpu", "--tensor-parallel", "2", "--db", str(tmp_path / "r.db")])
    assert captured_measure[1].engine == "hf" and captured_measure[1].tensor_parallel == 2


@pytest.mark.parametrize("args, words", [
    (["--tp", "0"], "tensor_parallel"),
    (["--pp", "-1"], "pipeline_parallel"),
    (["--pp", "2"], "vllm"),  # hf has no pipeline parallelism: the line names the engine that has
])
def test_measure_bad_parallel_values_are_one_line(tmp_path, capsys, captured_measure, args, words):
    assert main(["measure", "--model", "tiny", "--device", "cpu", *args, "--db", str(tmp_path / "r.db")]) == 2
    assert words in _err_line(capsys)
    assert captured_measure == [] and not (tmp_path / "r.db").exists()


def test_more_gpus_than_visible_fails_before_any_load(tmp_path, capsys, monkeypatch, captured_measure):
    monkeypatch.setattr(pf, "cuda_devices", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert main(["measure", "--model", "tiny", "--engine", "vllm", "--device", "cuda", "--tp", "2", "--pp", "2",
                 "--db", str(tmp_path / "r.db")]) == 2
    err = _err_line(capsys)
    assert "needs 4 GPUs" in err and "2 are visible" in err and "CUDA_VISIBLE_DEVICES=0,1" in err
    assert captured_measure == []


def test_gpu_count_rule():
    spec = SimpleNamespace(tensor_parallel=2, pipeline_parallel=1, device="cuda:3")
    with pytest.raises(pf.PreflightError, match="cuda:3..cuda:4"):
        pf.check_gpu_count(spec, n_cuda=4)
    pf.check_gpu_count(spec, n_cuda=5)
    pf.check_gpu_count(SimpleNamespace(tensor_parallel=4, pipeline_parallel=1, device="cpu"), n_cuda=0)  # CPU ranks


def test_sweep_tp_pp_override_every_cell_and_the_resume_command(tmp_path, monkeypatch, capsys):
    from fakes.sweep_fakes import TINY_GRID_YAML
    from tokenjoule.runs import sweep as sweep_mod

    real = sweep_mod.run_sweep
    seen = []

    def spy(cfg, store, **kw):
        seen.append(cfg)
        return real(cfg, store, **kw)

    monkeypatch.setattr(sweep_mod, "run_sweep", spy)
    path = tmp_path / "g.yaml"
    path.write_text(TINY_GRID_YAML.replace("model: tiny", "model: tiny\nengine: vllm"))
    assert main(["sweep", str(path), "--db", str(tmp_path / "r.db"), "--dry-run", "--tp", "2", "--pp", "2"]) == 0
    assert {(p.spec.tensor_parallel, p.spec.pipeline_parallel) for p in seen[0].expand()} == {(2, 2)}
    from tokenjoule.cli.sweep import _resume_command

    line = _resume_command("g.yaml", "r.db", None, False, "auto", None, {"tensor_parallel": 2, "pipeline_parallel": 4})
    assert "--tp 2" in line and "--pp 4" in line


def test_sweep_hf_pp_is_refused_in_one_line(tmp_path, capsys):
    from fakes.sweep_fakes import TINY_GRID_YAML

    path = tmp_path / "g.yaml"
    path.write_text(TINY_GRID_YAML)
    assert main(["sweep", str(path), "--db", str(tmp_path / "r.db"), "--pp", "2", "--meter", "simulated"]) == 2
    assert "--engine vllm" in _err_line(capsys)
    assert not (tmp_path / "r.db").exists()


def test_serve_bench_tp_pp_reach_the_run_and_the_vllm_command(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_run(cfg, store, **kw):
        seen.append(cfg)
        return SimpleNamespace(id=1, spec={}, metrics={})

    monkeypatch.setattr("tokenjoule.serving.bench.run_serve_bench", fake_run)
    assert main(["serve-bench", "--model", "tiny", "--url", "http://127.0.0.1:9", "--tp", "2", "--pp", "2",
                 "--input-tokens", "4", "--output-tokens", "4", "--rate", "1", "--json", "--db", str(tmp_path / "r.db")]) == 0
    assert (seen[0].tensor_parallel, seen[0].pipeline_parallel, seen[0].gpus) == (2, 2, 4)

    from tokenjoule.serving import bench, launch

    spec = bench.online_spec(seen[0], bench.build_requests(seen[0]))
    assert spec["tensor_parallel"] == 2 and spec["pipeline_parallel"] == 2
    monkeypatch.setattr("tokenjoule.engines.vllm_offline.vllm_available", lambda: True)
    cmd = launch.server_command("vllm", "/m", 8000, "tiny", tensor_parallel=2, pipeline_parallel=2)
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2" and cmd[cmd.index("--pipeline-parallel-size") + 1] == "2"


@pytest.mark.parametrize("args, words", [
    (["--launch", "transformers", "--tp", "2"], "--launch vllm"),
    (["--url", "http://127.0.0.1:9", "--tp", "0"], "--tp"),
])
def test_serve_bench_bad_parallel_values_are_one_line(tmp_path, capsys, args, words):
    assert main(["serve-bench", "--model", "tiny", *args, "--input-tokens", "4", "--output-tokens", "4", "--rate", "1",
                 "--db", str(tmp_path / "r.db")]) == 2
    assert words in _err_line(capsys)


def test_labels_name_the_parallelism_of_multi_gpu_cells_only():
    from tokenjoule.spec import RunSpec

    assert RunSpec(model="tiny").label.endswith("out64")
    assert RunSpec(model="tiny", engine="vllm", tensor_parallel=2, pipeline_parallel=2).label.endswith("out64 tp2 pp2")
