"""benchmarks/padding_check.py on CPU: its variants differ by exactly one pad token, the SDPA path
counter sees transformers' real choice (a uniform batch drops its mask, one pad token keeps it),
and the per-shape ratios come from the windows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("padding_check", ROOT / "benchmarks" / "padding_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_variants_differ_by_one_input_token_of_one_row(script):
    uniform, one_pad = script.lengths_for("uniform", 64, 8, 5), script.lengths_for("one-pad", 64, 8, 5)
    assert len(uniform) == len(one_pad) == 5
    assert sum(a for a, _ in uniform) - sum(a for a, _ in one_pad) == 1
    assert max(a for a, _ in one_pad) == 64 and {b for _, b in one_pad} == {8}


def test_bad_shapes_are_one_line_errors(script):
    with pytest.raises(SystemExit, match="INPUTxOUTPUTxBATCH"):
        script.parse_shapes("512x128")
    with pytest.raises(SystemExit, match="batch >= 2"):
        script.parse_shapes("512x128x1")
    assert script.parse_shapes("512x128x256, 16x4x2") == [(512, 128, 256), (16, 4, 2)]


def test_summary_ratios_are_medians_of_each_variant(script):
    w = [{"shape": [8, 2, 2], "variant": v, "energy_j": e, "duration_s": t, "sdpa_path": None}
         for v, e, t in [("uniform", 10.0, 1.0), ("one-pad", 30.0, 2.0), ("uniform", 12.0, 1.2), ("one-pad", 26.0, 2.2)]]
    (row,) = script.summarize(w)
    assert row["uniform"]["energy_j"] == pytest.approx(11.0) and row["one-pad"]["energy_j"] == pytest.approx(28.0)
    assert row["energy_ratio"] == pytest.approx(28.0 / 11.0) and row["time_ratio"] == pytest.approx(2.1 / 1.1)


def test_tiny_run_counts_the_attention_path_of_each_variant(script, tmp_path):
    assert script.main(["--model", "tiny", "--device", "cpu", "--meter", "simulated", "--shapes", "16x3x3",
                        "--repeats", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "padding_check.json").read_text())
    assert report["sdpa_path_known"] is True
    (row,) = report["shapes_summary"]
    # the tiny preset has grouped-query attention (4 query, 2 key-value heads)
    assert row["uniform"]["sdpa_path"]["masked_fallback"] == 0 and row["uniform"]["sdpa_path"]["gqa_kernel"] > 0
    assert row["one-pad"]["sdpa_path"]["gqa_kernel"] == 0 and row["one-pad"]["sdpa_path"]["masked_fallback"] > 0
    assert len(report["windows"]) == 2 and row["energy_ratio"] is not None
