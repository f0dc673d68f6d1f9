"""The Table-4 case study: totals, theory under both conventions, savings; and the demo step
that shows it from the shipped reference tables."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tokenjoule.analysis.case_study import case_study
from tokenjoule.store.db import CellRecord
from tokenjoule.workloads import Bins, bin_workload
from tokenjoule.workloads.traces import resolve_workload

BINS = Bins((256, 8192), (64, 512))
WORKLOADS = ("paper:burstgpt",)


def plant(store, engine, mode, energy_j):
    binned = bin_workload(resolve_workload("paper:burstgpt", n=500), BINS)
    for (i, o) in binned.counts:
        spec = {"model": "llama-3.1-8b", "engine": engine, "mode": mode, "decoding": {"strategy": "greedy"},
                "batch_size": 8, "input_tokens": i, "output_tokens": o, "dtype": "bfloat16"}
        store.add(CellRecord(spec=spec, spec_hash=f"{engine}{mode}{i}{o}", kind="offline",
                             metrics={"energy_j": energy_j}, provenance={"gpu_names": ["NVIDIA H200"]}))
    return binned


def test_complete_tables_give_totals_theory_and_savings(store):
    binned = plant(store, "hf", "eager", 400.0)
    plant(store, "vllm", "graphs", 100.0)
    study = case_study(store, model="llama-3.1-8b", workloads=WORKLOADS, bins=BINS, n=500)
    hf, vllm = study.rows
    assert hf.setup == "hf:eager" and vllm.setup == "vllm:graphs"
    assert hf.total_energy_j == pytest.approx(sum(n / 8 * 400.0 for n in binned.counts.values()))  # paper rounding
    assert study.savings["paper:burstgpt (synthetic)"] == pytest.approx(0.75)
    for row in study.rows:
        assert set(row.theory_j) == {"tokenjoule", "paper"}
        # H200: sparse peak = 2 x dense, and bin-edge FLOPs >= real-length FLOPs
        assert row.theory_j["paper"] >= 0.5 * row.theory_j["tokenjoule"] * 0.999
        assert row.multiple_of_theory["paper"] == pytest.approx(row.total_energy_j / row.theory_j["paper"])
        assert row.above_theory_percent["paper"] == pytest.approx(100 * (row.multiple_of_theory["paper"] - 1))
    assert study.to_dict()["paper_table4"]["paper:burstgpt"]["savings_percent"] == 73.00


def test_incomplete_table_gives_no_total_no_theory_no_savings(store):
    plant(store, "hf", "eager", 400.0)
    study = case_study(store, model="llama-3.1-8b", workloads=WORKLOADS, bins=BINS, n=500)
    vllm = study.rows[1]
    assert vllm.total_energy_j is None and vllm.theory_j == {} and vllm.bins_missing > 0
    assert study.savings["paper:burstgpt (synthetic)"] is None


def _demo_reference_step(width: int):
    """(printed text, context) of the demo's case-study step over the shipped tables."""
    from tokenjoule.cli.demo import DemoContext, reference_step

    buf = io.StringIO()
    ctx = DemoContext(console=Console(file=buf, width=width), db_path=None, out_dir=None, store=None)
    reference_step(ctx)
    return buf.getvalue(), ctx


def test_demo_step_shows_the_shipped_tables_labelled():
    text, ctx = _demo_reference_step(80)
    assert "measured elsewhere on NVIDIA H100 80GB HBM3, 2026-11-26" in text and "SYNTHETIC" in text
    study = ctx.results["case_studies"]["h100-llama-3.1-8b"]
    assert {r.workload for r in study.rows} >= {"azure-conv-2023", "paper:burstgpt (synthetic)"}
    # The H100 table is partial: every row says so instead of showing a total.
    assert all(r.total_energy_j is None and r.partial_energy_j > 0 for r in study.rows)


def test_partial_tables_give_savings_on_the_bins_both_measured_only(store):
    binned = plant(store, "hf", "eager", 400.0)
    # vLLM measured only the most requested bin, at a quarter of hf's energy
    (i, o), n_top = max(binned.counts.items(), key=lambda kv: kv[1])
    spec = {"model": "llama-3.1-8b", "engine": "vllm", "mode": "graphs", "decoding": {"strategy": "greedy"},
            "batch_size": 8, "input_tokens": i, "output_tokens": o, "dtype": "bfloat16"}
    store.add(CellRecord(spec=spec, spec_hash="vllm-top", kind="offline", metrics={"energy_j": 100.0},
                         provenance={"gpu_names": ["NVIDIA H200"]}))
    study = case_study(store, model="llama-3.1-8b", workloads=WORKLOADS, bins=BINS, n=500)
    name = "paper:burstgpt (synthetic)"
    assert study.savings[name] is None  # no total for vLLM: no workload savings
    common = study.common_savings[name]
    assert common["bins"] == 1 and common["savings"] == pytest.approx(0.75)
    assert common["requests_share"] == pytest.approx(n_top / study.rows[0].n_kept)


def test_demo_step_marks_common_bin_savings_of_the_partial_h200_table():
    from tokenjoule.reference import load_reference

    text, ctx = _demo_reference_step(120)
    date = load_reference("h200-llama-3.1-8b").date  # the shipped table's own date, re-read as it grows
    assert f"measured elsewhere on NVIDIA H200, {date}" in text and "%†" in text
    study = ctx.results["case_studies"]["h200-llama-3.1-8b"]
    conv = study.common_savings["azure-conv-2023"]
    assert conv is not None and 0 < conv["savings"] < 1 and conv["bins"] >= 7  # 7 of the 8 shared bins occur in conv
