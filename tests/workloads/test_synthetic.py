"""Paper-matched synthetic workloads: seeded, fitted within tolerance, labelled synthetic."""

from __future__ import annotations

import pytest

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads.stats import workload_stats
from tokenjoule.workloads.synthetic import (
    FIT_TOLERANCE,
    PAPER_WORKLOADS,
    fit_mixture,
    fit_report,
    fitted_params,
    list_paper_workloads,
    mixture_pmf,
    paper_comparison,
    paper_workload,
    pmf_stats,
)
from tokenjoule.workloads.traces import resolve_workload

# A drawn sample of 20,000 requests: stratified sampling keeps mean/median within 2% and the
# tail statistics (std, p99) within 5% of the paper's values.
SAMPLE_N = 20_000
SAMPLE_TOLERANCE = {"mean": 0.02, "median": 0.02, "std": 0.05, "p99": 0.05}


def test_same_seed_same_requests_other_seed_differs():
    a, b = paper_workload("burstgpt", n=500, seed=3), paper_workload("burstgpt", n=500, seed=3)
    c = paper_workload("burstgpt", n=500, seed=4)
    assert a.requests == b.requests
    assert a.requests != c.requests


@pytest.mark.parametrize("name", list(PAPER_WORKLOADS))
def test_shipped_fit_matches_the_papers_statistics(name):
    for side in ("input", "output"):
        fit = fitted_params()[name][side]
        target = getattr(PAPER_WORKLOADS[name], f"{side}_target")
        got = pmf_stats(*mixture_pmf(fit["params"], fit["max_tokens"]))
        for g, t in zip(got, target):
            assert abs(g - t) / t <= FIT_TOLERANCE, (name, side, got, target)


@pytest.mark.parametrize("name", list(PAPER_WORKLOADS))
def test_drawn_sample_matches_within_tolerance(name):
    rows = fit_report(name, n=SAMPLE_N, seed=0)
    assert len(rows) == 8  # 2 lengths x 4 statistics
    for r in rows:
        assert abs(r["drawn_error"]) <= SAMPLE_TOLERANCE[r["stat"]], r


def test_lengths_are_positive_integers_bounded_by_the_fit():
    wl = paper_workload("azure-code", n=2000, seed=1)
    fits = fitted_params()["azure-code"]
    assert all(1 <= r.input_tokens <= fits["input"]["max_tokens"] for r in wl.requests)
    assert all(1 <= r.output_tokens <= fits["output"]["max_tokens"] for r in wl.requests)
    assert all(r.arrival_s is None for r in wl.requests)


def test_labelled_synthetic_in_name_and_provenance():
    wl = resolve_workload("paper:azure-conv", n=100, seed=0)
    assert "synthetic" in wl.name and wl.name.startswith("paper:azure-conv")
    assert wl.provenance["synthetic"] is True and wl.provenance["label"] == "synthetic"
    assert workload_stats(wl).provenance["synthetic"] is True
    assert len(wl) == 100


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as exc:
        resolve_workload("paper:sharegpt")
    assert "paper:burstgpt" in str(exc.value)
    with pytest.raises(TokenjouleError):
        paper_workload("burstgpt", n=0)


def test_fit_recovers_a_reachable_target():
    """Statistics of a known mixture are found again by the least-squares fit."""
    target = pmf_stats(*mixture_pmf([0.5, 2.0, -0.5, 4.0, -0.3], 8 * 300))
    fit = fit_mixture(target, starts=4)
    for g, t in zip(fit["stats"], target):
        assert abs(g - t) / t < 0.01


def test_comparison_with_shipped_trace_shows_the_known_gap():
    rows = {(r["length"], r["stat"]): r for r in paper_comparison("azure-conv", n=2000)}
    assert rows[("input", "mean")]["shipped_trace"] == "azure-conv-2023"
    # The example: the 2023 conversation trace has input mean ~1,155 vs the paper's 1,632
    # and output mean ~211 vs 106.
    assert rows[("input", "mean")]["shipped"] < 0.8 * rows[("input", "mean")]["target"]
    assert rows[("output", "mean")]["shipped"] > 1.5 * rows[("output", "mean")]["target"]
    assert all(r["shipped"] is None for r in paper_comparison("burstgpt", n=100))


def test_list_names():
    assert list_paper_workloads() == ["paper:burstgpt", "paper:azure-conv", "paper:azure-code"]


def test_workload_paper_cli_json_and_markdown():
    import json

    from typer.testing import CliRunner

    from tokenjoule.cli.main import app

    out = CliRunner().invoke(app, ["workload", "paper", "paper:azure-code", "--n", "2000", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["label"] == "synthetic" and len(doc["rows"]) == 8
    assert {r["shipped_trace"] for r in doc["rows"]} == {"azure-code-2023"}
    md = CliRunner().invoke(app, ["workload", "paper", "--n", "1000", "--markdown"])
    assert md.exit_code == 0 and md.stdout.count("\n") == 2 + 3 * 8


def test_paper_workload_stats_cli_shows_the_synthetic_name():
    from typer.testing import CliRunner

    from tokenjoule.cli.main import app

    out = CliRunner().invoke(app, ["workload", "stats", "paper:burstgpt", "--json"])
    assert out.exit_code == 0, out.output
    assert '"synthetic": true' in out.stdout and "paper:burstgpt (synthetic)" in out.stdout
