"""The paper's findings (Figures 2-5) checked against planted cells with known answers."""

from __future__ import annotations

import json

import pytest

from fakes.clock_meter import FakeClock
from fakes.planted_store import plant_store
from fakes.speculative_engine import SpeculativeSimEngine, measure_brackets
from tokenjoule.analysis import paper_findings as PF
from tokenjoule.records import CellRecord
from tokenjoule.store.db import ResultStore

_next_id = iter(range(1, 10_000))


def cell(model="llama-3.1-8b", engine="hf", mode="eager", decoding="greedy", b=1, i=512, o=64, **metrics):
    spec = {"model": model, "engine": engine, "mode": mode, "decoding": {"strategy": decoding}, "batch_size": b,
            "input_tokens": i, "output_tokens": o, "tensor_parallel": 1}
    cid = next(_next_id)
    m = {"energy_j": 1.0, "energy_per_output_token_j": 1.0 / (b * o), "method": "nvml-counter"} | metrics
    return CellRecord(spec=spec, spec_hash=f"h{cid}", metrics=m, id=cid)


INPUTS = (2, 8, 32, 128, 512, 2048, 8192, 32768)  # paper-lengths --quick
OUTPUTS = (1, 4, 16, 64, 256, 1024, 4096)


@pytest.mark.parametrize("fixed_j, shows", [(4.0, True), (300.0, False)])
def test_prefill_knee_is_found_where_the_fixed_cost_stops_dominating(fixed_j, shows):
    # prefill = fixed + 0.008 x batch x input: flat while the fixed part dominates; with 4 J the
    # knees are 128 (batch 8) and 32 (batch 64), with 300 J 8192 and 2048
    cells = [cell(b=b, i=i, o=64, prefill_energy_j=fixed_j + 0.008 * b * i) for b in (8, 64) for i in INPUTS]
    f = PF.prefill_convergence(cells, "llama-3.1-8b")
    assert f.shows is shows
    knees = f.observed["knee_input_tokens_by_batch"]
    assert knees[8] > knees[64]  # a larger batch converges at shorter inputs
    assert (knees[8], knees[64]) == ((128, 32) if shows else (8192, 2048))
    assert set(f.cell_ids) == {c.id for c in cells}


def test_prefill_still_flat_at_the_longest_input_is_undecided_not_missing():
    # the first calls of paper-lengths reach 512 tokens only: prefill there is still flat, so the
    # claim (growth above ~128) is neither shown nor refuted, and the reason says what is missing
    cells = [cell(b=1, i=i, o=64, prefill_energy_j=6.0 + 0.001 * i) for i in INPUTS[:5]]
    f = PF.prefill_convergence(cells, "llama-3.1-8b")
    assert f.shows is None
    assert "up to 512 tokens" in f.reason and "longer inputs" in f.reason
    assert f.observed["longest_input_tokens"] == 512
    assert len(f.observed["log_log_slopes_by_batch"][1]) == 4


@pytest.mark.parametrize("power, shows", [(1, True), (2, False)])
def test_decode_linearity(power, shows):
    cells = [cell(b=b, i=512, o=o, decode_energy_j=0.5 * b * o ** power, energy_j=0.5 * b * o ** power + 3)
             for b in (1, 8) for o in OUTPUTS]
    f = PF.decode_linear(cells, "llama-3.1-8b")
    assert f.shows is shows
    assert f.summary.startswith("batch 1: R^2 ") and "batch 8: R^2 " in f.summary  # the numbers behind the verdict
    assert all(v["slope_j_per_token"] > 0 for v in f.observed["fit_by_batch"].values())


def test_too_few_cells_is_none_with_a_reason():
    for f in PF.check_findings([cell()]):
        assert f.shows is None and f.reason, f.figure


@pytest.mark.parametrize("moe_j, shows", [(0.3, True), (0.1, False)])
def test_moe_against_equal_active_and_equal_total(moe_j, shows):
    per = {"olmo-1b": 0.16, "olmo-7b": 0.9, "olmoe-1b-7b": moe_j}
    cells = [cell(model=m, b=b, energy_per_output_token_j=e * (1 + 0.1 * b)) for m, e in per.items() for b in (1, 8)]
    f = PF.moe_vs_dense(cells)
    assert f.shows is shows
    assert f.observed["ratio_by_batch"][8]["vs_same_total"] == pytest.approx(moe_j / 0.9)


def test_frameworks_compiled_modes_against_eager():
    cells = []
    for b in (1, 16):
        cells.append(cell(b=b, energy_per_output_token_j=1.0, throughput_tokens_per_s=100.0 * b))
        cells.append(cell(mode="compile", b=b, energy_per_output_token_j=0.9, throughput_tokens_per_s=130.0 * b))
        cells.append(cell(mode="cudagraphs", b=b, energy_per_output_token_j=1.2, throughput_tokens_per_s=140.0 * b))
    f = PF.frameworks(cells, "llama-3.1-8b")
    assert f.shows is False  # cudagraphs costs 20 % more energy here
    assert f.observed["vs_hf_eager_by_batch"]["compile"][1]["throughput_ratio"] == pytest.approx(1.3)
    f = PF.frameworks([c for c in cells if c.mode != "cudagraphs"], "llama-3.1-8b")
    assert f.shows is True


def test_speculative_break_even_from_simulated_brackets(tmp_path):
    store = measure_brackets(tmp_path, SpeculativeSimEngine(FakeClock()), batches=(1, 8, 32, 64, 128))
    f = PF.speculative_break_even(store.find(), "tiny", reference_acceptance=0.6)
    store.close()
    entries = {e["at"]: e for e in f.observed["break_even"]}
    high = entries["measured high bracket"]
    assert high["status"] == "stops paying" and 32 <= high["break_even_batch"] <= 64  # the simulator's crossing
    assert high["best_saving_up_to_batch_16"] > 0
    assert entries["reference acceptance"]["kind"] == "interpolated, not measured"
    assert f.shows is True


def test_the_planted_store_shows_the_findings_it_was_built_with(tmp_path):
    plant_store(tmp_path / "p.db")
    with ResultStore(tmp_path / "p.db") as store:
        found = {(f.figure, f.paper[:20]): f for f in PF.check_findings(store.find())}
    shows = [f.shows for f in found.values()]
    assert shows.count(True) == 4
    spec = next(f for f in found.values() if f.figure == "Figure 3")
    assert spec.shows is None and "brackets" in spec.reason  # one acceptance per cell: no bracket
    json.dumps([f.to_dict() for f in found.values()])
