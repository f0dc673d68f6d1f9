"""Statistics, binning (hand-computed + properties), sweep configs, task profiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads import (
    TASK_PROFILES, Bins, Request, Workload, bin_workload, read_cells, sweep_yaml, task_profile, workload_stats,
)


def wl(pairs, arrivals=None):
    reqs = [Request(i, o, None if arrivals is None else arrivals[k]) for k, (i, o) in enumerate(pairs)]
    return Workload("t", reqs, {})


def test_stats_hand_computed():
    w = wl([(1, 10), (2, 20), (3, 30), (4, 40)], arrivals=[0.0, 1.0, 2.0, 6.0])
    s = workload_stats(w)
    assert s.requests == 4
    assert s.input_tokens.mean == 2.5
    assert s.input_tokens.std == pytest.approx(math.sqrt(1.25))  # population std
    assert s.input_tokens.median == 2.5
    assert s.input_tokens.p90 == pytest.approx(3.7)  # linear interpolation: 1 + 0.9 * 3
    assert s.output_tokens.max == 40 and s.output_tokens.total == 100
    assert s.duration_s == 6.0
    assert s.mean_rate_rps == pytest.approx(3 / 6)
    gaps = np.array([1.0, 1.0, 4.0])
    assert s.burstiness == pytest.approx(gaps.std() / gaps.mean())
    assert s.input_output_correlation == pytest.approx(1.0)


def test_stats_undefined_values_are_none_with_reason():
    s = workload_stats(wl([(5, 1), (5, 2)]))
    assert s.duration_s is None and s.burstiness is None and s.mean_rate_rps is None
    assert s.input_output_correlation is None
    assert any("arrival" in n for n in s.notes) and any("correlation" in n for n in s.notes)


def test_binning_hand_computed_drop():
    bins = Bins((32, 64), (8, 16))
    w = wl([(1, 1), (32, 8), (33, 8), (64, 16), (65, 1), (10, 17), (100, 100)])
    b = bin_workload(w, bins, "drop")
    assert b.counts == {(32, 8): 2, (64, 8): 1, (64, 16): 1}
    assert (b.n_total, b.n_kept, b.n_dropped) == (7, 4, 3)
    assert b.dropped_reasons == {"input_tokens > 64": 1, "output_tokens > 16": 1,
                                 "input_tokens > 64 and output_tokens > 16": 1}
    assert list(b.binned_input_tokens) == [32, 32, 64, 64]


def test_binning_clip():
    b = bin_workload(wl([(100, 100), (1, 1)]), Bins((32, 64), (8, 16)), "clip")
    assert b.counts == {(64, 16): 1, (32, 8): 1}
    assert b.n_dropped == 0 and b.n_clipped == 1


def test_bins_validation_and_parse():
    assert Bins().input_edges == (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    assert Bins().output_edges == (8, 16, 32, 64, 128, 256, 512)
    assert Bins.parse("10,20", None).input_edges == (10, 20)
    for bad in ("64,32", "0,5", "a,b", ""):
        with pytest.raises(TokenjouleError):
            Bins.parse(bad, None)
    with pytest.raises(UnknownNameError):
        bin_workload(wl([(1, 1)]), overflow="wrap")


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 700)), min_size=1, max_size=60),
    in_edges=st.lists(st.integers(1, 4000), min_size=1, max_size=6, unique=True).map(sorted),
    out_edges=st.lists(st.integers(1, 600), min_size=1, max_size=5, unique=True).map(sorted),
    overflow=st.sampled_from(["drop", "clip"]),
)
def test_binning_properties(pairs, in_edges, out_edges, overflow):
    bins = Bins(tuple(in_edges), tuple(out_edges))
    b = bin_workload(wl(pairs), bins, overflow)
    assert sum(b.counts.values()) == b.n_kept
    assert b.n_kept + b.n_dropped == b.n_total == len(pairs)
    assert sum(b.dropped_reasons.values()) == b.n_dropped
    kept = [(i, o) for i, o in pairs if overflow == "clip" or (i <= in_edges[-1] and o <= out_edges[-1])]
    expected: dict = {}
    for i, o in kept:
        # the smallest edge that fits (clip: the largest edge when nothing fits)
        ie = next((e for e in in_edges if e >= i), in_edges[-1])
        oe = next((e for e in out_edges if e >= o), out_edges[-1])
        expected[(ie, oe)] = expected.get((ie, oe), 0) + 1
    assert b.counts == expected
    for real, binned, edges in ((b.real_input_tokens, b.binned_input_tokens, in_edges),
                                (b.real_output_tokens, b.binned_output_tokens, out_edges)):
        for r, e in zip(real, binned):
            k = edges.index(e)
            assert r <= e or (overflow == "clip" and k == len(edges) - 1)
            assert k == 0 or r > edges[k - 1]


def test_cells_and_sweep_yaml_round_trip():
    b = bin_workload(wl([(100, 10), (100, 12), (3000, 500)]))
    cells = b.cells("llama-3.1-8b", "hf", "eager")
    assert [(c["input_tokens"], c["output_tokens"]) for c in cells] == [(128, 16), (4096, 512)]
    text = sweep_yaml(cells, ["from a test"])
    doc = yaml.safe_load(text)
    assert doc["model"] == "llama-3.1-8b" and doc["engine"] == "hf" and doc["mode"] == "eager"
    assert doc["cells"][0] == {"model": "llama-3.1-8b", "engine": "hf", "mode": "eager", "decoding": "greedy",
                               "input_tokens": 128, "output_tokens": 16, "batch_size": "max"}
    assert read_cells(text) == cells
    with pytest.raises(TokenjouleError):
        b.cells("m", "hf", "eager", batch=0)


def test_sweep_yaml_is_readable_by_the_sweep_config():
    sc = pytest.importorskip("tokenjoule.runs.sweep_config")
    b = bin_workload(wl([(100, 10), (600, 60)]))
    config = sc.parse_config(sweep_yaml(b.cells("tiny", "hf", "eager", batch=4)), "x.yaml")
    plans = config.expand()
    assert len(plans) == 2


@pytest.mark.parametrize("name", list(TASK_PROFILES))
def test_task_profiles_match_table_3(name):
    p = TASK_PROFILES[name]
    w = task_profile(name, n=1024, seed=0)
    x = np.array([r.input_tokens for r in w])
    assert len(w) == 1024
    assert x.min() >= 1 and x.max() <= p.input_max_tokens
    assert x.mean() == pytest.approx(p.input_mean_tokens, rel=0.02)
    assert x.std() == pytest.approx(p.input_std_tokens, rel=0.05)
    assert all(r.output_tokens == p.output_tokens for r in w)
    assert [r.input_tokens for r in task_profile(name, n=50, seed=3)] == \
        [r.input_tokens for r in task_profile(name, n=50, seed=3)]
    assert [r.input_tokens for r in task_profile(name, n=50, seed=3)] != \
        [r.input_tokens for r in task_profile(name, n=50, seed=4)]


def test_profile_errors():
    with pytest.raises(UnknownNameError):
        task_profile("poetry")
    with pytest.raises(TokenjouleError):
        task_profile("translation", n=0)
