"""Opt-in prediction of unmeasured bins: the NNLS fit, its leave-one-out errors, batch sizes, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokenjoule.analysis.estimate import binned_estimate
from tokenjoule.analysis.fit import (
    MIN_CELLS, FitCell, features, fit_energy_model, nnls, predict_batch_size, predict_missing,
)
from tokenjoule.cli.main import main
from tokenjoule.errors import TokenjouleError
from tokenjoule.store.db import CellRecord, ResultStore
from tokenjoule.workloads import Bins, Request, Workload

PLANTED = (0.02, 0.03, 5.0, 7e-5)  # a (B*I), b (B*O), c (O), d (B*O*(I+O/2))
GPU = "NVIDIA H100 80GB HBM3"


def model_energy(i, o, b, coef=PLANTED):
    return sum(k * x for k, x in zip(coef, features(i, o, b)))


def grid_cells(coef=PLANTED):
    return [FitCell(i, o, b, model_energy(i, o, b, coef))
            for i in (64, 256, 1024, 4096) for o in (16, 128, 512) for b in (1, 8, 64)]


def add_cell(store, i, o, b, energy_j, *, mode="eager", gpu=GPU, at_max=False):
    spec = {"model": "llama-3.1-8b", "engine": "hf", "mode": mode, "decoding": {"strategy": "greedy"},
            "batch_size": b, "input_tokens": i, "output_tokens": o, "dtype": "auto"}
    metrics = {"energy_j": energy_j, "duration_s": 1.0}
    if at_max:
        metrics["max_batch_probes"] = 5
    return store.add(CellRecord(spec=spec, spec_hash=f"{mode}-{i}-{o}-{b}-{gpu}", kind="offline", status="ok",
                                metrics=metrics, provenance={"gpu_names": [gpu]}))


def test_fit_recovers_planted_coefficients_exactly():
    fit = fit_energy_model(grid_cells())
    assert fit.coefficients == pytest.approx(PLANTED, rel=1e-6)
    assert fit.rank == 4 and fit.n_cells == 36
    assert fit.loo_max_rel_error < 1e-6
    assert fit.predict_energy_j(2048, 64, 32) == pytest.approx(model_energy(2048, 64, 32), rel=1e-6)


def test_fit_keeps_a_zero_coefficient_at_zero_and_never_goes_negative():
    coef = (0.02, 0.0, 5.0, 7e-5)
    fit = fit_energy_model(grid_cells(coef))
    assert fit.coefficients == pytest.approx(coef, rel=1e-6, abs=1e-12)
    # Data that an unconstrained fit would explain with a negative prefill term.
    cells = [FitCell(c.input_tokens, c.output_tokens, c.batch_size,
                     c.energy_j - 0.015 * c.batch_size * c.input_tokens) for c in grid_cells()]
    assert all(c.energy_j > 0 for c in cells)
    assert min(fit_energy_model(cells).coefficients) >= 0.0


def test_nnls_matches_unconstrained_when_feasible_and_clamps_otherwise():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nnls(a, np.array([1.0, 2.0, 3.0])) == pytest.approx([1.0, 2.0])
    # Unconstrained: x2 < 0; NNLS drops it and fits x1 alone: x1 = (1*2 + 1*1) / 2 = 1.5.
    assert nnls(a, np.array([2.0, -1.0, 1.0])) == pytest.approx([1.5, 0.0])


def test_loo_errors_by_hand():
    # Six cells on the model and one at 1.1 times its energy. Leaving the outlier out, the other
    # six (rank 4) determine the planted coefficients, so its LOO error is |E - 1.1E| / 1.1E = 1/11.
    exact = [FitCell(i, o, b, model_energy(i, o, b)) for i, o, b in
             ((64, 16, 1), (256, 128, 8), (1024, 512, 64), (4096, 16, 8), (256, 512, 1), (1024, 128, 64))]
    outlier = FitCell(512, 64, 16, 1.1 * model_energy(512, 64, 16))
    cells = exact + [outlier]
    fit = fit_energy_model(cells)
    assert fit.loo_rel_errors[-1] == pytest.approx(1 / 11, rel=1e-6)
    # The others: refit by plain weighted least squares (all coefficients come out >= 0 here,
    # so NNLS must give the same), then predict the held-out cell.
    for j, held in enumerate(exact):
        rest = cells[:j] + cells[j + 1:]
        a = np.array([features(c.input_tokens, c.output_tokens, c.batch_size) for c in rest])
        e = np.array([c.energy_j for c in rest])
        theta = np.linalg.lstsq(a / e[:, None], np.ones(len(rest)), rcond=None)[0]
        assert np.all(theta >= 0)
        pred = float(np.dot(theta, features(held.input_tokens, held.output_tokens, held.batch_size)))
        assert fit.loo_rel_errors[j] == pytest.approx(abs(pred - held.energy_j) / held.energy_j, rel=1e-5)
        assert fit.loo_rel_errors[j] > 1e-4  # the outlier is in every one of these fits
    errors = sorted(fit.loo_rel_errors)
    assert fit.loo_median_rel_error == pytest.approx(errors[3])  # 7 cells: the 4th smallest
    assert fit.loo_max_rel_error == errors[-1]


def test_refuses_with_too_few_cells():
    cells = grid_cells()[:MIN_CELLS - 1]
    with pytest.raises(TokenjouleError, match=f"at least {MIN_CELLS}"):
        fit_energy_model(cells)
    assert fit_energy_model(grid_cells()[:MIN_CELLS]).n_cells == MIN_CELLS


def test_batch_size_scaled_from_nearest_cell_and_capped():
    cells = [FitCell(256, 256, 432, 1.0), FitCell(2048, 512, 87, 1.0), FitCell(512, 64, 64, 1.0)]
    # (512, 32): nearest total is 576 (512+64, batch 64): floor(64 * 576 / 544) = 67.
    assert predict_batch_size(cells, 512, 32)[0] == 67
    # Preferring cells measured at their largest fitting batch: (256, 256) -> floor(432 * 512 / 544).
    at_max = [FitCell(256, 256, 432, 1.0, at_max_batch=True), FitCell(2048, 512, 87, 1.0, at_max_batch=True),
              FitCell(512, 64, 64, 1.0)]
    assert predict_batch_size(at_max, 512, 32)[0] == 406
    assert predict_batch_size(at_max, 32, 8)[0] == 432  # 432 * 512 / 40 capped to the largest measured
    assert predict_batch_size(at_max, 8192, 512)[0] == 25  # floor(87 * 2560 / 8704)


def _planted_store(path):
    """Cells following the planted model: bins (32,8) and (64,16) measured, plus two others."""
    with ResultStore(path) as s:
        for i, o, batches in ((32, 8, (1, 2, 4)), (64, 16, (1, 2, 4)), (128, 64, (2, 4)), (128, 32, (2, 4))):
            for b in batches:
                add_cell(s, i, o, b, model_energy(i, o, b))
    return path


BINS = Bins((32, 64), (8, 16))
# bins: (32,8) x 3, (64,16) x 2 measured; (32,16) x 5 and (64,8) x 1 unmeasured
PAIRS = [(10, 3)] * 3 + [(50, 12), (64, 16)] + [(20, 12)] * 5 + [(60, 8)]


def test_predict_missing_keeps_measured_and_predicted_apart(tmp_path):
    path = _planted_store(tmp_path / "r.db")
    workload = Workload("w", [Request(i, o) for i, o in PAIRS], {})
    with ResultStore(path) as store:
        res = binned_estimate(workload, store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
        assert res.total_energy_j is None  # untouched without the opt-in
        pred = predict_missing(res, store)
    assert [(r.input_tokens, r.output_tokens) for r in pred.rows] == [(32, 8), (64, 16)]
    got = {(r.input_tokens, r.output_tokens): r for r in pred.predicted_rows}
    assert set(got) == {(32, 16), (64, 8)}
    # Batch: nearest (32,8)@4 -> floor(4*40/48) = 3; nearest (64,16)@4 -> floor(4*80/72) = 4.
    assert (got[(32, 16)].batch_size, got[(64, 8)].batch_size) == (3, 4)
    assert got[(32, 16)].batches_rounded == 2 and got[(32, 16)].cell_id is None
    assert got[(32, 16)].energy_per_batch_j == pytest.approx(model_energy(32, 16, 3), rel=1e-6)
    assert pred.total_energy_j == pytest.approx(pred.measured_energy_j + pred.predicted_energy_j)
    assert pred.measured_energy_j == res.partial_energy_j and not pred.complete
    assert predict_missing(res, ResultStore(path), predict_batch=2).predicted_rows[0].batch_size == 2


def test_prediction_refuses_with_few_cells_and_mixed_gpus(tmp_path):
    workload = Workload("w", [Request(i, o) for i, o in PAIRS], {})
    with ResultStore(tmp_path / "few.db") as store:
        for b in (1, 2, 4):
            add_cell(store, 32, 8, b, model_energy(32, 8, b))
        res = binned_estimate(workload, store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
        with pytest.raises(TokenjouleError, match="found 3"):
            predict_missing(res, store)
    with ResultStore(_planted_store(tmp_path / "mixed.db")) as store:
        # cheap enough that the selection rule answers its bin with it: the estimate mixes GPUs
        add_cell(store, 32, 8, 8, 0.01 * model_energy(32, 8, 8), gpu="NVIDIA A100-SXM4-80GB")
        res = binned_estimate(workload, store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
        with pytest.raises(TokenjouleError, match="several GPUs"):
            predict_missing(res, store)


@pytest.fixture
def trace(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("input_tokens,output_tokens\n" + "".join(f"{i},{o}\n" for i, o in PAIRS))
    return str(p)


CLI_BINS = ["--input-bins", "32,64", "--output-bins", "8,16"]


def test_cli_predict_missing_json(tmp_path, trace, capsys):
    db = str(_planted_store(tmp_path / "r.db"))
    rc = main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf:eager", "--db", db,
               *CLI_BINS, "--predict-missing", "--json"])
    assert rc == 0
    est = json.loads(capsys.readouterr().out)["estimates"][0]
    assert est["total_energy_j"] == pytest.approx(est["measured_energy_j"] + est["predicted_energy_j"])
    assert est["predicted_energy_j"] > 0 and est["measured_energy_j"] > 0
    flags = {(r["input_tokens"], r["output_tokens"]): r["predicted"] for r in est["rows"]}
    assert flags == {(32, 8): False, (64, 16): False, (32, 16): True, (64, 8): True}
    assert sum(r["energy_j"] for r in est["rows"] if r["predicted"]) == pytest.approx(est["predicted_energy_j"])
    p = est["prediction"]
    assert p["n_cells"] == 10 and set(p["coefficients"]) == {"a", "b", "c", "d"}
    assert [t["name"] for t in p["terms"]] == ["a", "b", "c", "d"]
    assert p["loo_max_rel_error"] < 1e-6 and p["loo_median_rel_error"] <= p["loo_max_rel_error"]
    assert est["total_basis"].startswith("measured + predicted (fit, LOO error median")


def test_cli_without_flag_unchanged_and_refusal_exits_1(tmp_path, trace, capsys):
    db = str(_planted_store(tmp_path / "r.db"))
    args = ["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf:eager", "--db", db, *CLI_BINS]
    assert main([*args, "--json"]) == 1
    est = json.loads(capsys.readouterr().out)["estimates"][0]
    assert est["total_energy_j"] is None and "prediction" not in est and "predicted" not in est["rows"][0]
    assert main([*args, "--predict-missing"]) == 0
    out = capsys.readouterr().out
    assert "predicted" in out and "measured + predicted" in out
    few = tmp_path / "few.db"
    with ResultStore(few) as s:
        add_cell(s, 32, 8, 2, 10.0)
    rc = main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf:eager", "--db", str(few),
               *CLI_BINS, "--predict-missing"])
    assert rc == 1 and "prediction refused" in capsys.readouterr().out
