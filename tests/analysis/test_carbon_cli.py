"""Grams CO2e and cost beside every kWh: estimate, savings, recommend and the report, from a given
intensity or a region of the shipped (CodeCarbon) table, a price and a PUE."""

from __future__ import annotations

import json

import pytest

from fakes.planted_store import MODEL, plant_store, write_planted_trace
from tokenjoule.analysis.carbon import Footprint, region_intensity
from tokenjoule.cli.main import main


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("carbon")
    plant_store(root / "p.db")
    return root / "p.db", write_planted_trace(root / "t.csv")


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_region_table_has_named_source_and_year():
    g, source = region_intensity("FRA")
    assert g == pytest.approx(56.039) and "2023" in source and "CodeCarbon" in source
    assert region_intensity("france") == (g, source)
    assert region_intensity("gcp:europe-west1")[0] > 0


def test_estimate_footprint_is_kwh_times_pue_times_intensity(capsys, planted):
    db, trace = planted
    rc, out, err = run_cli(capsys, "estimate", "--trace", str(trace), "--model", MODEL, "--db", str(db),
                           "--carbon-intensity", "400", "--pue", "1.2", "--price", "0.1", "--json")
    assert rc == 0, err
    data = json.loads(out)
    est = data["estimates"][0]
    kwh = est["total_energy_j"] / 3.6e6
    assert est["footprint"]["kwh"] == pytest.approx(kwh)
    assert est["footprint"]["co2e_g"] == pytest.approx(kwh * 1.2 * 400)
    assert est["footprint"]["cost"] == pytest.approx(kwh * 1.2 * 0.1)
    rc, out, _ = run_cli(capsys, "estimate", "--trace", str(trace), "--model", MODEL, "--db", str(db),
                         "--region", "FRA")
    assert rc == 0 and "g CO2e" in out and "France (FRA), 2023" in out


def test_without_intensity_there_is_no_carbon_number(capsys, planted):
    db, trace = planted
    rc, out, _ = run_cli(capsys, "estimate", "--trace", str(trace), "--model", MODEL, "--db", str(db), "--json")
    fp = json.loads(out)["estimates"][0]["footprint"]
    assert rc == 0 and fp["co2e_g"] is None and fp["cost"] is None and fp["kwh"] > 0


@pytest.mark.parametrize("argv, text", [
    (["--region", "ATLANTIS"], "unknown region"),
    (["--region", "FRA", "--carbon-intensity", "10"], "not both"),
    (["--pue", "0.5"], "--pue must be >= 1.0"),
])
def test_bad_carbon_options_are_one_line_errors(capsys, planted, argv, text):
    db, trace = planted
    rc, _, err = run_cli(capsys, "estimate", "--trace", str(trace), "--model", MODEL, "--db", str(db), *argv)
    assert rc == 2 and err.count("\n") == 1 and text in err


def test_savings_and_recommend_show_carbon_and_cost(capsys, planted):
    db, trace = planted
    rc, out, err = run_cli(capsys, "savings", "--trace", str(trace), "--model", MODEL, "--db", str(db),
                           "--baseline", "hf:eager", "--optimized", "vllm:graphs", "--region", "USA", "--price", "0.2")
    assert rc == 0, err
    assert out.count("g CO2e") >= 3 and "cost" in out  # baseline, optimized, saved
    rc, out, err = run_cli(capsys, "recommend", "--trace", str(trace), "--db", str(db), "--region", "DEU", "--json")
    data = json.loads(out)
    best_kwh = data["best"]["total_energy_j"] / 3.6e6
    assert rc == 0 and data["footprint"]["best"]["co2e_g"] == pytest.approx(best_kwh * 380.95)
    rc, out, _ = run_cli(capsys, "recommend", "--trace", str(trace), "--db", str(db), "--region", "DEU")
    assert rc == 0 and "g CO2e" in out and "Germany (DEU)" in out


def test_report_savings_table_carries_carbon(tmp_path, planted):
    import pandas as pd

    from tokenjoule.report.build import build_report
    from tokenjoule.store.db import ResultStore

    db, trace = planted
    with ResultStore(db) as store:
        result = build_report(store, tmp_path / "out", traces=[str(trace)],
                              footprint=Footprint.resolve(region="FRA", pue=1.1))
    frame = pd.read_csv(tmp_path / "out" / "table_savings.csv")
    kwh = frame["best (J)"].iloc[0] / 3.6e6
    assert frame["best (g CO2e)"].iloc[0] == pytest.approx(kwh * 1.1 * 56.039, rel=1e-6)
    assert "France (FRA), 2023" in result.index_html.read_text()
