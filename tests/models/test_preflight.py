"""The preflight refuses, in one line and before anything loads or is stored, a cell that cannot
run here: a CUDA device on a machine without one, a model + KV cache larger than the device's
memory (RAM on a CPU), lengths beyond the model's context."""

from __future__ import annotations

import pytest

from tokenjoule.cli.main import main
from tokenjoule.models import preflight as pf
from tokenjoule.spec import RunSpec

GIB = 1024**3


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def small_box(monkeypatch):
    """A CPU-only machine with 16 GiB free RAM (the check reads RAM through `available_bytes`)."""
    monkeypatch.setattr(pf, "cuda_devices", lambda: 0)
    monkeypatch.setattr(pf, "available_bytes", lambda device: 16 * GIB)


def test_8b_on_auto_device_of_a_cpu_box_is_refused_with_the_sizes(capsys, tmp_path, small_box):
    db = tmp_path / "r.db"
    rc, out, err = run_cli(capsys, "measure", "--model", "llama-3.1-8b", "--device", "auto", "--db", str(db))
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: llama-3.1-8b (float32) needs about")
    assert "16.0 GiB RAM is available" in lines[0] and "on cpu" in lines[0]
    assert not db.exists()  # nothing stored, nothing loaded


def test_cuda_device_without_cuda_is_an_error(capsys, tmp_path, small_box):
    rc, _, err = run_cli(capsys, "measure", "--model", "tiny", "--device", "cuda", "--db", str(tmp_path / "r.db"))
    assert rc == 2 and err.count("\n") == 1 and "needs a CUDA GPU" in err
    assert not (tmp_path / "r.db").exists()


def test_lengths_beyond_the_context_are_refused(capsys, tmp_path, small_box):
    rc, _, err = run_cli(capsys, "measure", "--model", "smollm2-135m", "--device", "cpu", "--input-tokens", "9000",
                         "--output-tokens", "64", "--db", str(tmp_path / "r.db"))
    assert rc == 2 and err.count("\n") == 1 and "exceeds" in err and "context" in err


def test_sweep_preflights_every_cell_before_opening_the_store(capsys, tmp_path, small_box):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("model: [tiny, llama-3.1-8b]\nengine: hf\nmode: eager\ndevice: cpu\ninput_tokens: 16\n"
                   "output_tokens: 4\nbatch_size: max\n")
    rc, _, err = run_cli(capsys, "sweep", str(cfg), "--db", str(tmp_path / "r.db"), "--no-progress")
    assert rc == 2 and err.count("\n") == 1 and "llama-3.1-8b" in err and "needs about" in err
    assert not (tmp_path / "r.db").exists()


def test_memory_estimate_grows_with_batch_and_lengths_and_halves_with_bf16():
    base = RunSpec(model="llama-3.1-8b", batch_size=1, input_tokens=512, output_tokens=64, device="cpu",
                   dtype="float32")
    need = pf.memory_needed(base, "cpu")
    from tokenjoule.models.architecture import architecture_from_config
    from tokenjoule.models.registry import load_preset_config

    arch = architecture_from_config(load_preset_config("llama-3.1-8b"))
    assert need.weights_bytes == arch.params_total * 4
    assert need.kv_cache_bytes == arch.kv_bytes_per_token(4) * 1 * (512 + 64)
    bigger = pf.memory_needed(base.model_copy(update={"batch_size": 8}), "cpu")
    assert bigger.kv_cache_bytes == 8 * need.kv_cache_bytes and bigger.weights_bytes == need.weights_bytes
    half = pf.memory_needed(base.model_copy(update={"dtype": "bfloat16"}), "cpu")
    assert half.weights_bytes * 2 == need.weights_bytes
    assert pf.memory_needed(base.model_copy(update={"model": "org/some-hf-id"}), "cpu") is None


def test_tiny_fits_and_passes(small_box):
    spec = RunSpec(model="tiny", batch_size=2, input_tokens=16, output_tokens=4, device="auto")
    need = pf.preflight(spec)
    assert need is not None and need.device == "cpu" and need.total_bytes < 16 * GIB


def test_serve_bench_launch_transformers_is_preflighted(capsys, tmp_path, small_box):
    rc, _, err = run_cli(capsys, "serve-bench", "--model", "llama-3.1-8b", "--launch", "transformers",
                         "--device", "auto", "--input-tokens", "64", "--output-tokens", "16", "--rate", "2",
                         "--db", str(tmp_path / "r.db"))
    assert rc == 2 and err.count("\n") == 1 and "needs about" in err
    assert not (tmp_path / "r.db").exists()
