"""benchmarks/make_results.py: generated RESULTS sections quote only numbers read from evidence."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gen():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "benchmarks" / "make_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_results_md_matches_the_committed_evidence():
    assert _gen().main(["--check"]) == 0


def test_a_number_typed_into_the_template_fails_the_generation():
    gen = _gen()
    bad = gen.TEMPLATE.replace("Idle baseline:", "Idle baseline (about 73 W cold on an H100):")
    with pytest.raises(gen.UnbackedNumberError, match="73"):
        gen.section_h200_reference(template=bad)


def test_quotes_track_evidence_values_and_verify_spots_strays():
    gen = _gen()
    q = gen.Quotes()
    text = f"measured {q.q(1.2345, '{:.2f}')} W and {q.pct(1.031)}"
    assert text == "measured 1.23 W and +3.1%"
    gen.verify(text, q)
    with pytest.raises(gen.UnbackedNumberError, match="42"):
        gen.verify(text + " and 42 J", q)
    gen.verify(text + " in `file_42.json`", q)  # names in code spans are not quotes


def test_evidence_changes_change_the_text(tmp_path):
    import json
    import shutil

    gen = _gen()
    for f in (ROOT / "benchmarks" / "results").glob("*_h200.json"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "reference_hf_eager_h200.json"
    data = json.loads(path.read_text())
    data["idle_before_load"]["idle_power_counter_w"] = 71.04
    path.write_text(json.dumps(data))
    assert "71.0 W" in gen.section_h200_reference(results=tmp_path)
