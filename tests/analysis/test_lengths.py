"""estimate --lengths mean: bins rescaled from their edges to their requests' mean lengths."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tokenjoule.analysis.estimate import binned_estimate
from tokenjoule.analysis.lengths import at_mean_lengths, check_lengths
from tokenjoule.errors import TokenjouleError
from tokenjoule.store.db import CellRecord, ResultStore
from tokenjoule.workloads import Bins, Request, Workload

BINS = Bins((100, 200, 400), (10, 20, 40))


def energy_j(i: float, o: float, b: float) -> float:
    """Inside the fit's model family (a*B*I + c*O), so the fit recovers it exactly."""
    return 0.5 * b * i + 20.0 * o


def plant(store, cells) -> None:
    for i, o, b in cells:
        spec = {"model": "m", "engine": "vllm", "mode": "graphs", "decoding": {"strategy": "greedy"},
                "batch_size": b, "input_tokens": i, "output_tokens": o}
        store.add(CellRecord(spec=spec, spec_hash=f"{i}-{o}-{b}", kind="offline",
                             metrics={"energy_j": energy_j(i, o, b)}, provenance={"gpu_names": ["Simulated GPU"]}))


CELLS = [(100, 10, 8), (200, 10, 8), (400, 20, 4), (100, 40, 8), (200, 20, 4), (400, 40, 2), (100, 20, 2)]


def test_mean_lengths_rescale_each_bin_by_the_fit(tmp_path):
    with ResultStore(tmp_path / "s.db") as store:
        plant(store, CELLS)
        # Bin (200, 20) at batch 4: requests of mean 150 in / 15 out; bin (100, 10) at batch 8: 60 / 10.
        wl = Workload("w", [Request(140, 12), Request(160, 18), Request(50, 10), Request(70, 10)])
        est = binned_estimate(wl, store, model="m", engine="vllm", mode="graphs", bins=BINS)
        corr = at_mean_lengths(est, store)
    by_bin = {tuple(b["bin"]): b for b in corr.per_bin}
    assert by_bin[(200, 20)]["factor"] == pytest.approx(energy_j(150, 15, 4) / energy_j(200, 20, 4), rel=1e-6)
    assert by_bin[(100, 10)]["factor"] == pytest.approx(energy_j(60, 10, 8) / energy_j(100, 10, 8), rel=1e-6)
    edges = 2 / 4 * energy_j(200, 20, 4) + 2 / 8 * energy_j(100, 10, 8)
    assert corr.edges_energy_j == pytest.approx(edges)
    mean = 2 / 4 * energy_j(150, 15, 4) + 2 / 8 * energy_j(60, 10, 8)
    assert corr.mean_energy_j == pytest.approx(mean, rel=1e-6) and corr.change < 0
    assert "model-based" in corr.to_dict()["label"]


def test_refused_without_enough_cells_and_bad_mode(tmp_path):
    with ResultStore(tmp_path / "s.db") as store:
        plant(store, CELLS[:3])
        est = binned_estimate(Workload("w", [Request(90, 9)]), store, model="m", engine="vllm", mode="graphs",
                              bins=BINS)
        with pytest.raises(TokenjouleError, match="at least"):
            at_mean_lengths(est, store)
    with pytest.raises(TokenjouleError, match="valid: edges, mean"):
        check_lengths("median")


def test_estimate_cli_lengths_mean_json(tmp_path):
    from tokenjoule.cli.main import app

    db = tmp_path / "s.db"
    with ResultStore(db) as store:
        plant(store, CELLS)
    trace = tmp_path / "t.csv"
    trace.write_text("input_tokens,output_tokens\n140,12\n160,18\n50,10\n")
    out = CliRunner().invoke(app, ["estimate", "--trace", str(trace), "--model", "m", "--engine", "vllm:graphs",
                                   "--db", str(db), "--input-bins", "100,200,400", "--output-bins", "10,20,40",
                                   "--lengths", "mean", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)["estimates"][0]
    assert doc["at_mean_lengths"]["mean_energy_j"] < doc["at_mean_lengths"]["edges_energy_j"]
    assert doc["total_energy_j"] == pytest.approx(doc["at_mean_lengths"]["edges_energy_j"])  # the default stays
    bad = CliRunner().invoke(app, ["estimate", "--trace", str(trace), "--model", "m", "--db", str(db),
                                   "--lengths", "median"])
    # the console entry point turns this into one line and exit code 2 (tests/cli cover that path)
    assert isinstance(bad.exception, TokenjouleError) and "valid: edges, mean" in str(bad.exception)
