"""Dry-run estimates from a time model fitted to the cells stored for a GPU."""

from __future__ import annotations

import pytest

from tokenjoule.runs.sweep import run_sweep
from tokenjoule.runs.sweep_config import parse_config
from tokenjoule.runs.sweep_estimate import CellTimeEstimator, cell_seconds
from tokenjoule.runs.time_model import fit_time_model
from tokenjoule.spec import RunSpec
from tokenjoule.store.db import CellRecord

# planted latency: 20 us per prefill token, 15 ms per decode step, 50 us per decode token, 0.1 s fixed
A, B_STEP, C, D = 2e-5, 0.015, 5e-5, 0.1
WALL_RATIO = 1.6  # the sweep's wall time / the protocol's batches (probes, overheads)
TOKEN_BUDGET = 65536  # largest batch x (I + O) of cells measured at batch max


def latency(b, i, o):
    return A * b * i + B_STEP * o + C * b * o + D


def add(store, b, i, o, *, gpu="NVIDIA H200", at_max=False):
    spec = RunSpec(model="tiny", batch_size=b, input_tokens=i, output_tokens=o, device="cpu")
    dur = latency(b, i, o)
    metrics = {"energy_j": 100.0 * dur, "duration_s": dur, "prefill_duration_s": latency(b, i, 1),
               "sweep_wall_s": WALL_RATIO * cell_seconds(spec, dur, latency(b, i, 1))}
    if at_max:
        metrics["max_batch_probes"] = 1
    store.add(CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), kind="offline", status="ok",
                         metrics=metrics, provenance={"gpu_names": [gpu]}))


def fill(store):
    for b, i, o in ((1, 64, 16), (8, 256, 64), (32, 128, 128), (4, 1024, 32), (16, 512, 256)):
        add(store, b, i, o)
    for i, o in ((256, 256), (1024, 1024)):
        add(store, TOKEN_BUDGET // (i + o), i, o, at_max=True)
    add(store, 1, 64, 16, gpu="Other GPU")  # another GPU's cell is not part of the fit


def test_fit_recovers_the_planted_latency(store):
    fill(store)
    model = fit_time_model(store.find(status="ok"), "NVIDIA H200", cell_seconds)
    assert model.n_cells == 7 and model.gpu_name == "NVIDIA H200"
    for b, i, o in ((64, 2048, 512), (2, 32, 8)):
        assert model.batch_s(b, i, o) == pytest.approx(latency(b, i, o), rel=1e-6)
    assert model.wall_ratio == pytest.approx(WALL_RATIO)
    assert model.token_budget == pytest.approx(TOKEN_BUDGET)
    assert model.max_batch(4096, 512, cap=1024) == TOKEN_BUDGET // 4608
    assert fit_time_model(store.find(status="ok")[:2], None, cell_seconds) is None  # too few cells


def test_dry_run_estimates_unmeasured_cells_from_the_stored_ones(store):
    fill(store)
    cfg = parse_config("model: tiny\ndevice: cpu\nbatch: 48\ninput_tokens: 2048\noutput_tokens: 128\nidle_s: 0\n")
    cell = run_sweep(cfg, store, dry_run=True).cells[0]
    spec = cfg.expand()[0].spec
    expected = WALL_RATIO * cell_seconds(spec, latency(48, 2048, 128), latency(48, 2048, 1))
    assert cell.estimate_source == "model" and cell.estimate_s == pytest.approx(expected, rel=1e-6)


def test_unresolved_max_uses_the_token_budget_and_probe_count(store):
    fill(store)
    spec = RunSpec(model="tiny", input_tokens=2048, output_tokens=2048, device="cpu")
    b = TOKEN_BUDGET // 4096
    at_b = spec.model_copy(update={"batch_size": b})
    base = WALL_RATIO * cell_seconds(at_b, latency(b, 2048, 2048), latency(b, 2048, 1))
    predict = CellTimeEstimator(store, max_batch_method="predict").predict(spec, unresolved_max=True)
    search = CellTimeEstimator(store).predict(spec, unresolved_max=True)
    probe = latency(b, 4096, 1)
    assert predict.source == "model" and predict.seconds == pytest.approx(base + probe, rel=1e-6)
    assert search.seconds > predict.seconds + 5 * probe  # the search's probes cost log2(B) + 6


def test_adaptive_protocol_predicts_fewer_batches():
    full = RunSpec(model="tiny", warmup=1, repeats=2, min_window_s=2.0, input_tokens=512, output_tokens=64)
    adaptive = full.model_copy(update={"protocol": "adaptive"})
    # a 30 s batch: full = 1 warm-up + 1 calibration + 2 windows; adaptive = short warm-up + 2 windows
    assert cell_seconds(full, 30.0, 1.0) > cell_seconds(adaptive, 30.0, 1.0)
    assert cell_seconds(adaptive.model_copy(update={"split_prefill": False}), 30.0, 1.0) == pytest.approx(
        2 * 1.0 + 2 * 30.0)
