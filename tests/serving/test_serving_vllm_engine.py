"""The vLLM offline engine: a one-line error without vLLM; a real run where vLLM and a GPU exist."""

import sys

import pytest

from tokenjoule.engines.base import get_engine
from tokenjoule.errors import MissingDependencyError
from tokenjoule.spec import RunSpec


def test_missing_vllm_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where installed
    with pytest.raises(MissingDependencyError) as info:
        get_engine("vllm")
    msg = str(info.value)
    assert "vLLM is not installed" in msg and "pip install" in msg and "\n" not in msg


def test_measure_cli_with_vllm_missing_exits_2(monkeypatch, tmp_path, capsys):
    from tokenjoule.cli.main import main

    monkeypatch.setitem(sys.modules, "vllm", None)
    rc = main(["measure", "--model", "tiny", "--engine", "vllm", "--mode", "eager", "--meter", "simulated",
               "--db", str(tmp_path / "r.db")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and errors[0].startswith("error: vLLM is not installed")
    assert "Traceback" not in err


@pytest.mark.vllm
@pytest.mark.gpu
def test_vllm_exact_lengths_and_reuse():
    engine = get_engine("vllm")
    spec = RunSpec(model="smollm2-135m", engine="vllm", mode="eager", batch_size=4, input_tokens=32,
                   output_tokens=8, engine_options={"max_model_len": 512, "gpu_memory_utilization": 0.3})
    try:
        engine.load(spec)
        llm = engine.llm
        out = engine.generate(spec)
        assert out.input_tokens == [32] * 4 and out.output_tokens == [8] * 4 and out.duration_s > 0
        engine.load(spec.model_copy(update={"batch_size": 2}))
        assert engine.llm is llm  # same model/mode: the engine is kept
        mixed = engine.generate_requests([(10, 3), (20, 5)], seed=1)
        assert mixed.input_tokens == [10, 20] and mixed.output_tokens == [3, 5]
    finally:
        engine.close()
