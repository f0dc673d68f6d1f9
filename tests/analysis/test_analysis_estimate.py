"""Binned estimate, savings and the Table-4 comparison against a store filled by hand."""

from __future__ import annotations

import math

import pytest

from tokenjoule.analysis.estimate import binned_estimate
from tokenjoule.analysis.floors import compare_theory
from tokenjoule.analysis.gpus import get_gpu
from tokenjoule.analysis.savings import compare_setups, parse_setup, savings_fraction
from tokenjoule.analysis.theory import architecture_for, roofline_batch, theoretical_energy_j, workload_flops
from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.store.db import CellRecord
from tokenjoule.workloads import Bins, Request, Workload, bin_workload

BINS = Bins((32, 64), (8, 16))


def add_cell(store, i, o, batch, energy_j, *, model="llama-3.1-8b", engine="hf", mode="eager",
             decoding="greedy", gpu="NVIDIA H100 80GB HBM3", status="ok", power=(400.0, 100.0)):
    spec = {"model": model, "engine": engine, "mode": mode, "decoding": {"strategy": decoding},
            "batch_size": batch, "input_tokens": i, "output_tokens": o, "dtype": "auto"}
    metrics = {"energy_j": energy_j, "duration_s": 2.0, "avg_power_w": power[0], "idle_power_w": power[1]}
    rec = CellRecord(spec=spec, spec_hash=f"{model}{engine}{mode}{decoding}{i}{o}{batch}", kind="offline",
                     status=status, metrics=metrics, provenance={"gpu_names": [gpu]})
    return store.add(rec)


def workload():
    # bins: (32,8) x 5, (64,16) x 2 ; one request dropped (input 100 > 64)
    pairs = [(10, 3)] * 5 + [(50, 12), (64, 16), (100, 4)]
    return Workload("hand", [Request(i, o) for i, o in pairs], {})


def test_rounded_and_unrounded_hand_computed(store):
    c1 = add_cell(store, 32, 8, 2, 10.0)
    c2 = add_cell(store, 64, 16, 4, 100.0)
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS,
                          rounding="ceil")
    assert res.complete and not res.missing
    rows = {(r.input_tokens, r.output_tokens): r for r in res.rows}
    r1, r2 = rows[(32, 8)], rows[(64, 16)]
    assert (r1.n_requests, r1.batch_size, r1.batches_rounded, r1.cell_id) == (5, 2, 3, c1)
    assert r1.energy_j == 30.0 and r1.energy_unrounded_j == pytest.approx(25.0)
    assert (r2.n_requests, r2.batches_rounded, r2.cell_id) == (2, 1, c2)
    assert r2.energy_j == 100.0 and r2.energy_unrounded_j == pytest.approx(50.0)
    assert res.total_energy_j == 130.0
    assert res.total_energy_unrounded_j == pytest.approx(75.0)
    assert res.total_kwh == pytest.approx(130.0 / 3.6e6)
    assert res.energy_per_request_j == pytest.approx(130.0 / 7)
    assert (res.n_total, res.n_kept, res.n_dropped, res.n_covered) == (8, 7, 1, 7)
    assert res.coverage_share == pytest.approx(7 / 8)
    d = res.to_dict()
    assert d["total_energy_j"] == 130.0 and d["rows"][0]["cell_id"] in (c1, c2)


def test_least_energy_batch_then_newest_row_wins(store):
    add_cell(store, 32, 8, 8, 999.0)
    add_cell(store, 32, 8, 16, 50.0)
    newest = add_cell(store, 32, 8, 16, 60.0)
    add_cell(store, 32, 8, 32, 1.0, status="failed")  # failed cells never count
    add_cell(store, 32, 8, 64, 1.0, mode="compile")  # other mode
    add_cell(store, 64, 16, 4, 100.0)
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
    row = next(r for r in res.rows if r.input_tokens == 32)
    assert row.batch_size == 16 and row.cell_id == newest and row.energy_per_batch_j == 60.0
    assert row.batch_sizes_available == (8, 16)
    assert any("least energy" in n for n in res.notes)


def test_missing_bins_are_listed_never_guessed(store):
    add_cell(store, 32, 8, 2, 10.0)
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
    assert not res.complete
    assert [(m.input_tokens, m.output_tokens, m.n_requests) for m in res.missing] == [(64, 16, 2)]
    assert res.total_energy_j is None and res.total_kwh is None and res.energy_per_request_j is None
    assert res.partial_energy_j == 25.0  # 5/2 batches x 10 J (the paper's N/B)
    assert res.coverage_share == pytest.approx(5 / 8)
    assert res.missing_cells() == [{"model": "llama-3.1-8b", "engine": "hf", "mode": "eager", "decoding": "greedy",
                                    "input_tokens": 64, "output_tokens": 16, "batch_size": "max"}]


def test_savings_paper_headline():
    assert savings_fraction(6.0652, 1.6375) == pytest.approx(0.730, abs=5e-4)
    assert savings_fraction(10, 12) == pytest.approx(-0.2)
    with pytest.raises(TokenjouleError):
        savings_fraction(0, 1)


def test_parse_setup():
    assert str(parse_setup("vllm:graphs")) == "vllm:graphs:greedy"
    assert parse_setup("hf:eager:beam").decoding == "beam"
    for bad, err in (("hf", TokenjouleError), ("hf:graphs", UnknownNameError), ("tgi:eager", UnknownNameError),
                     ("hf:eager:fast", UnknownNameError)):
        with pytest.raises(err):
            parse_setup(bad)


def test_compare_setups(store):
    for engine, mode, scale in (("hf", "eager", 1.0), ("vllm", "graphs", 0.25)):
        add_cell(store, 32, 8, 2, 10.0 * scale, engine=engine, mode=mode)
        add_cell(store, 64, 16, 4, 100.0 * scale, engine=engine, mode=mode)
    res = compare_setups(workload(), store, model="llama-3.1-8b", baseline="hf:eager", optimized="vllm:graphs",
                         bins=BINS)
    assert res.complete
    assert res.saved_fraction == pytest.approx(0.75)
    assert res.saved_j == pytest.approx(75 * 0.75)  # N/B totals: 75 J vs 18.75 J
    ceil = compare_setups(workload(), store, model="llama-3.1-8b", baseline="hf:eager", optimized="vllm:graphs",
                          bins=BINS, rounding="ceil")
    assert ceil.saved_j == pytest.approx(130 * 0.75)


def test_compare_theory_hand_checked(store):
    add_cell(store, 32, 8, 2, 10.0)
    add_cell(store, 64, 16, 4, 100.0)
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS,
                          rounding="ceil")
    cmp = compare_theory(res)  # GPU from provenance: H100 SXM
    arch, gpu = architecture_for("llama-3.1-8b"), get_gpu("H100 SXM")
    assert cmp.gpu == "H100 SXM" and cmp.precision == "bf16"
    real = workload_flops(arch, [10] * 5 + [50, 64], [3] * 5 + [12, 16])
    assert cmp.flops == pytest.approx(real.total_flops)
    assert cmp.theoretical_energy_j == pytest.approx(700 / 989.5e12 * real.total_flops)
    assert cmp.theory_percent_of_measured == pytest.approx(100 * cmp.theoretical_energy_j / 130.0)
    assert cmp.measured_multiple_of_theory == pytest.approx(130.0 / cmp.theoretical_energy_j)
    floor_s = 3 * roofline_batch(arch, gpu, 32, 8, 2).total_s + roofline_batch(arch, gpu, 64, 16, 4).total_s
    assert cmp.floor_time_s == pytest.approx(floor_s)
    assert cmp.floor_energy_tdp_j == pytest.approx(floor_s * 700)
    assert cmp.floor_energy_active_j == pytest.approx(floor_s * 300)  # 400 W average - 100 W idle
    assert cmp.flops_binned > cmp.flops  # bins round lengths up
    assert theoretical_energy_j(989.5e12, gpu) == pytest.approx(700.0)  # one second at peak, at TDP


def test_compare_theory_refuses_incomplete_and_missing_power(store):
    add_cell(store, 32, 8, 2, 10.0, power=(None, None))
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
    with pytest.raises(TokenjouleError, match="unmeasured"):
        compare_theory(res)
    add_cell(store, 64, 16, 4, 100.0)
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
    cmp = compare_theory(res, gpu="a6000")
    assert cmp.gpu == "RTX A6000"
    assert cmp.floor_energy_active_j is None and cmp.floor_notes


def test_binned_workload_input_is_used_as_is(store):
    add_cell(store, 32, 8, 2, 10.0)
    binned = bin_workload(workload(), Bins((32,), (8,)), "clip")
    res = binned_estimate(binned, store, model="llama-3.1-8b", engine="hf", mode="eager")
    assert res.complete and res.rows[0].n_requests == 8 and res.n_clipped == 3
    assert res.total_energy_j == math.ceil(8 / 2) * 10.0


def test_estimated_and_flagged_cells_are_named_in_the_notes(store):
    c1 = add_cell(store, 32, 8, 2, 10.0)
    c2 = add_cell(store, 64, 16, 4, 100.0)
    for cid, metrics in ((c1, {"method": "estimate-cpu-time", "flags": ["estimate"]}),
                         (c2, {"method": "nvml-counter", "flags": ["timeline-disagrees"]})):
        store._conn.execute("UPDATE cells SET metrics_json = json_patch(metrics_json, ?) WHERE id = ?",
                            (__import__("json").dumps(metrics), cid))
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
    estimate_note = [n for n in res.notes if "ESTIMATE" in n]
    flagged_note = [n for n in res.notes if "flagged" in n]
    assert estimate_note and f"cells {c1}" in estimate_note[0]
    assert flagged_note and f"cells {c2}" in flagged_note[0]


def test_roofline_floor_counts_the_batches_the_rounding_charges(store):
    from tokenjoule.analysis.floors import floor_batches

    assert floor_batches(7, 4, "paper") == [(1.75, 4)]
    assert floor_batches(7, 4, "ceil") == [(2.0, 4)]
    assert floor_batches(7, 4, "measured") == [(1.0, 4), (1.0, 3)]
    assert floor_batches(8, 4, "measured") == [(2.0, 4)]
    add_cell(store, 32, 8, 2, 10.0)
    add_cell(store, 64, 16, 4, 100.0)
    res = binned_estimate(workload(), store, model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)  # paper
    arch, gpu = architecture_for("llama-3.1-8b"), get_gpu("H100 SXM")
    floor_s = 5 / 2 * roofline_batch(arch, gpu, 32, 8, 2).total_s + 2 / 4 * roofline_batch(arch, gpu, 64, 16, 4).total_s
    assert compare_theory(res).floor_time_s == pytest.approx(floor_s)
