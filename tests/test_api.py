"""The Python API: its docstring examples run, `help(tokenjoule)` lists it, and it stays light."""

from __future__ import annotations

import doctest
import math
import pydoc
import subprocess
import sys

import pytest

import tokenjoule
from fakes.planted_store import MODEL, plant_store, write_planted_trace


def test_docstring_examples_run():
    import tokenjoule.analysis.carbon as carbon
    import tokenjoule.api as api
    import tokenjoule.models.preflight as preflight

    for module in (api, preflight, carbon):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_help_lists_the_entry_points():
    text = pydoc.render_doc(tokenjoule)
    for name in ("measure_energy", "read_results", "load_trace", "estimate"):
        assert name in text
    assert set(tokenjoule.__all__) >= {"measure_energy", "read_results", "load_trace", "estimate"}
    assert "measure_energy" in dir(tokenjoule)


def test_import_is_light():
    code = ("import sys, tokenjoule\n"
            "heavy = [m for m in ('torch', 'transformers', 'pandas', 'numpy') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "tokenjoule.measure_energy\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_measure_energy_window_is_labelled_and_decorator_keeps_the_value():
    seen = []
    with tokenjoule.measure_energy(meter="simulated") as m:
        pass
    assert m.method == "simulated" and m.energy_j is not None and m.result.duration_s == m.duration_s

    @tokenjoule.measure_energy(meter="estimate", on_result=seen.append)
    def square(x):
        return x * x

    assert square(7) == 49 and square(3) == 9
    assert len(seen) == 2 and square.last_measurement is seen[-1] and seen[-1].is_estimate


def test_reading_before_the_block_ends_is_an_error():
    from tokenjoule.errors import TokenjouleError

    m = tokenjoule.measure_energy(meter="estimate")
    with pytest.raises(TokenjouleError, match="after the `with` block"):
        m.energy_j


def test_read_results_is_a_dataframe_and_never_creates_a_store(tmp_path):
    from tokenjoule.errors import TokenjouleError

    from tokenjoule.store.db import ResultStore

    plant_store(tmp_path / "p.db")
    frame = tokenjoule.read_results(tmp_path / "p.db")
    with ResultStore(tmp_path / "p.db") as store:
        assert len(frame) == store.count() > 0
    assert {"model", "batch_size", "energy_j", "method"} <= set(frame.columns)
    assert len(tokenjoule.read_results(tmp_path / "p.db", status="ok")) < len(frame)  # one planted failure
    with pytest.raises(TokenjouleError):
        tokenjoule.read_results(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
    (tmp_path / "junk.db").write_text("not sqlite")
    with pytest.raises(TokenjouleError, match="not a results store"):
        tokenjoule.read_results(tmp_path / "junk.db")


def test_estimate_sums_n_over_b_times_batch_energy(tmp_path):
    plant_store(tmp_path / "p.db")
    trace = write_planted_trace(tmp_path / "t.csv")
    res = tokenjoule.estimate(trace, tmp_path / "p.db", model=MODEL)  # the paper's N/B rounding
    assert res.complete and res.rows
    assert res.total_energy_j == pytest.approx(sum(r.n_requests / r.batch_size * r.energy_per_batch_j
                                                   for r in res.rows))
    ceil = tokenjoule.estimate(trace, tmp_path / "p.db", model=MODEL, rounding="ceil")
    assert ceil.total_energy_j == pytest.approx(
        sum(math.ceil(r.n_requests / r.batch_size) * r.energy_per_batch_j for r in ceil.rows))
    frame = tokenjoule.read_results(tmp_path / "p.db")
    for r in res.rows:  # every bin's energy is a stored cell's
        assert frame.loc[frame["id"] == r.cell_id, "energy_j"].item() == pytest.approx(r.energy_per_batch_j)
