"""`tokenjoule demo`: the whole tour runs once on the CPU (about 25 s) into a temporary store;
the tests check what it leaves behind (cells, estimate, report) and that a second run resumes."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from tokenjoule.cli import demo
from tokenjoule.store.db import ResultStore


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=100)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("demo") / "demo-out" / "tokenjoule.db"
    ctx = demo.run_demo(db, console=_quiet())
    return db, ctx


def _expected_keys() -> set[str]:
    offline = {s.spec_hash() for s in demo.offline_specs()}
    estimate = {p.key for p in demo.estimate_sweep_config(_estimate_binned()).expand()}
    return offline | estimate


def _estimate_binned():
    from tokenjoule.workloads.binning import Bins, bin_workload
    from tokenjoule.workloads.traces import resolve_workload

    return bin_workload(resolve_workload(demo.ESTIMATE_WORKLOAD),
                        Bins(demo.ESTIMATE_INPUT_EDGES, demo.ESTIMATE_OUTPUT_EDGES))


def test_store_holds_every_demo_cell(demo_run):
    db, _ = demo_run
    keys = _expected_keys()
    with ResultStore(db) as store:
        assert all(store.has_success(k) for k in keys)
        # One row per cell: the offline grid plus one cell per occupied bin of the estimate.
        assert store.count() == len(keys) == len(demo.offline_specs()) + len(_estimate_binned().counts)


def test_estimate_total_is_the_binned_sum_and_labelled(demo_run):
    db, ctx = demo_run
    result = ctx.results["estimate"]
    assert result.complete and result.total_energy_j > 0
    assert result.n_kept == 1024  # task profiles draw 1,024 requests; the coarse bins drop none
    with ResultStore(db) as store:
        expected = 0.0
        for row in result.rows:
            cell = store.get(row.cell_id)
            assert cell.spec["batch_size"] == demo.ESTIMATE_BATCH
            assert (cell.spec["input_tokens"], cell.spec["output_tokens"]) == (row.input_tokens, row.output_tokens)
            expected += row.n_requests / demo.ESTIMATE_BATCH * cell.metrics["energy_j"]  # the paper's N/B
    assert result.total_energy_j == pytest.approx(expected)
    methods = {c.metrics["method"] for c in ctx.results["estimate_cells"]}
    assert ctx.results["estimate_method"] == ", ".join(sorted(methods))
    if methods == {"estimate-cpu-time"}:  # every CPU-only machine
        assert ctx.results["estimate_is_estimate"] is True


def test_trace_step_bins_the_whole_trace(demo_run):
    _, ctx = demo_run
    binned, stats = ctx.results["trace_binned"], ctx.results["trace_stats"]
    assert stats.requests == binned.n_total == 19366
    assert binned.n_kept + binned.n_dropped == binned.n_total
    assert sum(binned.counts.values()) == binned.n_kept


def test_report_is_written_next_to_the_store(demo_run):
    db, ctx = demo_run
    index = db.parent / "report" / "index.html"
    assert ctx.results["report"].index_html == index
    assert index.is_file() and index.stat().st_size > 0
    assert any(s.drawn for s in ctx.results["report"].sections)


def test_second_run_resumes_without_new_cells(demo_run):
    from tokenjoule.cli.main import main

    db, ctx = demo_run
    with ResultStore(db) as store:
        before = store.count()
    assert main(["demo", "--db", str(db)]) == 0
    with ResultStore(db) as store:
        assert store.count() == before
    sweep = ctx.results["estimate_sweep"]
    assert sweep.failed == 0


def test_estimate_label_flags_any_estimated_cell():
    from tokenjoule.records import CellRecord
    from tokenjoule.spec import RunSpec

    measured = CellRecord.ok(RunSpec(model="tiny"), {"method": "nvml-counter", "flags": []}, {})
    estimated = CellRecord.ok(RunSpec(model="tiny"), {"method": "estimate-cpu-time", "flags": ["estimate"]}, {})
    assert demo.estimate_label([measured]) == ("nvml-counter", False)
    assert demo.estimate_label([measured, estimated]) == ("estimate-cpu-time, nvml-counter", True)
    assert demo.estimate_label([]) == ("-", False)
