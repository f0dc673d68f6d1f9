"""`tokenjoule demo --measure` re-measures the case study on a GPU; without one it says so in one line."""

import pytest

from tokenjoule.cli.main import main


def test_demo_measure_without_gpu_is_one_line(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --measure would measure")
    assert main(["demo", "--measure", "--db", str(tmp_path / "d.db")]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "Traceback" not in err
    assert not (tmp_path / "case-study").exists()
