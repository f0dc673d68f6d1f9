"""The three roundings of partly filled batches, on hand-computed bins and a real store."""

from __future__ import annotations

import pytest

from tokenjoule.analysis.estimate import binned_estimate
from tokenjoule.analysis.rounding import charge_bin, remainder_energy
from tokenjoule.errors import TokenjouleError
from tokenjoule.workloads import Bins, Request, Workload

from test_analysis_estimate import add_cell  # noqa: E402  (tests/analysis is on sys.path via rootdir)

BINS = Bins((32, 64), (8, 16))


def test_charge_bin_three_roundings_hand_computed():
    # 5 requests at batch 2, 10 J per full batch: 2 full batches + 1 request left over
    paper = charge_bin(5, 2, 10.0, "paper")
    ceil = charge_bin(5, 2, 10.0, "ceil")
    measured = charge_bin(5, 2, 10.0, "measured", {1: (7.0, 42)})
    assert (paper.full_batches, paper.remainder_requests) == (2, 1)
    assert paper.energy_j == pytest.approx(25.0) and paper.partial_energy_j == pytest.approx(5.0)
    assert ceil.energy_j == pytest.approx(30.0) and ceil.partial_energy_j == pytest.approx(10.0)
    assert measured.energy_j == pytest.approx(27.0) and measured.partial_energy_j == pytest.approx(7.0)
    assert measured.remainder_cell_id == 42 and not measured.remainder_predicted


def test_bin_smaller_than_its_batch():
    # one request in a bin whose batch is 576: ceil charges 576 requests, paper 1/576 of a batch
    assert charge_bin(1, 576, 576.0, "ceil").energy_j == pytest.approx(576.0)
    assert charge_bin(1, 576, 576.0, "paper").energy_j == pytest.approx(1.0)
    m = charge_bin(1, 576, 576.0, "measured", {1: (30.0, 9), 576: (576.0, 8)})
    assert (m.full_batches, m.remainder_requests, m.energy_j) == (0, 1, 30.0)


def test_whole_batches_agree_under_every_rounding():
    for rounding in ("paper", "ceil", "measured"):
        c = charge_bin(6, 3, 9.0, rounding)
        assert c.energy_j == pytest.approx(18.0) and c.partial_energy_j == 0.0 and c.remainder_requests == 0


def test_missing_remainder_is_predicted_and_labelled():
    only_full = remainder_energy(3, 8, 80.0, {8: (80.0, 1)})
    assert only_full.predicted and only_full.energy_j == pytest.approx(30.0) and "predicted" in only_full.basis
    # two stored batches 2 (E=40) and 8 (E=80): linear between them at 4 -> 40 + 40 * 2/6
    between = remainder_energy(4, 8, 80.0, {2: (40.0, 1), 8: (80.0, 2)})
    assert between.predicted and between.energy_j == pytest.approx(40.0 + 40.0 * 2 / 6)
    # below the smallest stored batch the line is extrapolated but kept within [r/B x E, E]
    low = remainder_energy(1, 8, 80.0, {4: (79.0, 1), 8: (80.0, 2)})
    assert 10.0 <= low.energy_j <= 80.0 and low.energy_j == pytest.approx(79.0 - 0.25 * 3)
    # two close batches (a cell and its re-measurement): their slope is noise, so far below them
    # E(r) is the nearest one's linear share, whichever way the noise tilts the pair
    for e_440 in (15065.0, 15250.0):
        far = remainder_energy(100, 442, 15152.0, {440: (e_440, 1), 442: (15152.0, 2)})
        assert far.predicted and far.energy_j == pytest.approx(100 / 440 * e_440) and "too close" in far.basis


def test_unknown_rounding_is_a_one_line_error():
    with pytest.raises(TokenjouleError, match="valid: paper, ceil, measured"):
        charge_bin(5, 2, 10.0, "floor")


def test_estimate_roundings_on_a_store(store):
    # bins: (32, 8) x 5 requests at batch 2 (10 J), (64, 16) x 2 requests at batch 4 (100 J, fewer than its batch)
    add_cell(store, 32, 8, 2, 10.0)
    add_cell(store, 32, 8, 1, 7.0)          # remainder cell of the first bin (5 x 7 J never beats batch 2)
    add_cell(store, 64, 16, 4, 100.0)       # no batch-2 cell: its remainder is predicted
    wl = Workload("hand", [Request(10, 3)] * 5 + [Request(50, 12), Request(64, 16)], {})
    kw = dict(model="llama-3.1-8b", engine="hf", mode="eager", bins=BINS)
    paper = binned_estimate(wl, store, **kw)
    ceil = binned_estimate(wl, store, rounding="ceil", **kw)
    measured = binned_estimate(wl, store, rounding="measured", **kw)
    assert paper.rounding == "paper" and paper.total_energy_j == pytest.approx(25.0 + 50.0)
    assert ceil.total_energy_j == pytest.approx(30.0 + 100.0)
    assert measured.total_energy_j == pytest.approx(20.0 + 7.0 + 50.0)
    for res in (paper, ceil, measured):  # the other forms are always reported alongside
        assert res.total_energy_unrounded_j == pytest.approx(75.0)
        assert res.total_energy_ceil_j == pytest.approx(130.0)
    assert ceil.partial_batches_energy_j == pytest.approx(10.0 + 100.0)
    assert ceil.partial_share == pytest.approx(110.0 / 130.0)
    rows = {(r.input_tokens, r.output_tokens): r for r in measured.rows}
    assert not rows[(32, 8)].remainder_predicted and rows[(64, 16)].remainder_predicted
    assert measured.n_remainders_predicted == 1 and any("PREDICTED" in n for n in measured.notes)
    d = measured.to_dict()
    assert d["rounding"] == "measured" and d["partial_share"] == pytest.approx(57.0 / 77.0)
    assert d["remainders_predicted"] == 1
