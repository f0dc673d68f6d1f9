"""benchmarks/bin_table.py's arithmetic with a simulated engine and a scripted meter (no GPU)."""

from __future__ import annotations

import csv
import json
import importlib.util
import sys
from pathlib import Path

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.sweep_fakes import MemoryEngine, planted_calibration
from tokenjoule.runs import max_batch
from tokenjoule.store.db import ResultStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bin_table", ROOT / "benchmarks" / "bin_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bin_table"] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("bin_table", None)


def _run(bench, tmp_path, monkeypatch, *extra, engine_class=MemoryEngine):
    clock = FakeClock()
    engines = []

    def factory(name):
        engines.append(engine_class(clock=clock))  # 80 GB, 16 GB weights: batches of 74 to 2,378 here
        return engines[-1]

    monkeypatch.setattr(max_batch, "calibrate_engine", lambda e, s: planted_calibration(e, s))
    bins = [bench.Bin(256, 64, 900, {"a": 600, "b": 300}), bench.Bin(1024, 256, 50, {"a": 50}),
            bench.Bin(64, 16, 7, {"b": 7}), bench.Bin(2048, 512, 3, {"a": 3})]
    argv = ["--out", str(tmp_path), "--tables", "hf-eager", "--model", "tiny", "--device", "cpu",
            "--idle-s", "0", "--max-batch-cap", "4096", *extra]
    summary = bench.main(argv, engine_factory=factory, meter=ScriptedMeter(clock, power_w=300.0),
                         bins=bins, clock=clock)
    return summary, engines, clock


def test_table_summary_and_faithfulness(bench, tmp_path, monkeypatch):
    summary, engines, clock = _run(bench, tmp_path, monkeypatch, "--faithfulness", "2", "--remainders")
    assert len(engines) == 1  # one engine load for the whole table, faithfulness included
    t = summary["tables"]["hf-eager"]
    assert t["bins_measured"] == 4
    assert t["probes_per_bin"] == 1.0  # every prediction confirmed by its one probe
    assert t["windows_per_bin"] == 2.0  # constant power: two windows agree at once
    assert t["stop_reasons"] == {"agree": 4}
    assert t["gpu_minutes"] == pytest.approx(clock() / 60)  # idle 0; the whole fake time is the table
    pairs = t["faithfulness"]
    assert [(p["input_tokens"], p["output_tokens"]) for p in pairs] == [(256, 64), (2048, 512)]  # first and last
    for p in pairs:
        # constant power: energy per request = 300 W x (1e-4 x B x I + 0.01 x O) / B, so the two
        # protocols differ only through their batch sizes; the arithmetic must say exactly that
        def per_request(b, i=p["input_tokens"], o=p["output_tokens"]):
            return 300.0 * (1e-4 * b * i + 0.01 * o) / b

        expected = per_request(p["batch_predicted"]) / per_request(p["batch_searched"]) - 1
        assert p["energy_per_request_rel_diff"] == pytest.approx(expected, abs=1e-9)
        assert p["energy_per_request_fast_j"] == pytest.approx(per_request(p["batch_predicted"]))
        assert abs(p["batch_rel_diff"]) <= 0.05  # predicted within 5% of the searched batch
        assert p["searched_probes"] > 1
    assert t["faithfulness_batch_max_abs_rel_diff"] <= 0.05
    with (tmp_path / "bin_table_rows.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    protocols = [r["protocol"] for r in rows]
    assert protocols.count("adaptive") == 4 and protocols.count("full") == 2
    rem = [r for r in rows if r["protocol"] == "remainder"]
    full_b = {(r["input_tokens"], r["output_tokens"]): int(r["batch_size"]) for r in rows if r["protocol"] == "adaptive"}
    for r in rem:  # batch = N mod B of each trace
        assert int(r["batch_size"]) == int(r["n_requests"]) % full_b[(r["input_tokens"], r["output_tokens"])]
    assert (tmp_path / "bin_table_summary.json").is_file()


def test_resume_measures_nothing_twice(bench, tmp_path, monkeypatch):
    _run(bench, tmp_path, monkeypatch, "--faithfulness", "1")
    with ResultStore(tmp_path / "bin_table.db") as s:
        before = s.count()
    summary, engines, _ = _run(bench, tmp_path, monkeypatch, "--faithfulness", "1")
    with ResultStore(tmp_path / "bin_table.db") as s:
        assert s.count() == before
    assert engines[0].calls == [] and engines[0].probes == []  # cached answers: no calibration, no probe
    assert summary["tables"]["hf-eager"]["bins_measured"] == 4
    assert summary["tables"]["hf-eager"]["bins_measured_this_call"] == 0  # every bin came from the store


def test_budget_stops_before_a_bin_predicted_to_overrun(bench, tmp_path, monkeypatch):
    summary, _, clock = _run(bench, tmp_path, monkeypatch, "--budget-minutes", "0.001")
    assert summary["stopped_by_budget"] and summary["tables"]["hf-eager"]["bins_measured"] == 0


def test_budget_stops_before_spending_the_probe_of_a_bin_it_cannot_finish(bench, tmp_path, monkeypatch):
    summary, engines, _ = _run(bench, tmp_path, monkeypatch, "--budget-minutes", "0.001")
    assert summary["stopped_by_budget"]
    assert engines[0].probes == [1, 4]  # the calibration's two small prefills; no full-length probe


class _KilledAtThirdBin(MemoryEngine):
    """Dies (as a device call does at its time limit) when the third bin starts generating."""

    def generate(self, spec, output_tokens=None):
        if spec.input_tokens == 64:
            raise KeyboardInterrupt
        return super().generate(spec, output_tokens)


def test_a_killed_call_leaves_the_rows_and_summary_of_the_bins_it_measured(bench, tmp_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        _run(bench, tmp_path, monkeypatch, engine_class=_KilledAtThirdBin)
    with (tmp_path / "bin_table_rows.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["input_tokens"], r["protocol"]) for r in rows] == [("256", "adaptive"), ("1024", "adaptive")]
    summary = json.loads((tmp_path / "bin_table_summary.json").read_text())
    assert summary["partial"] is True and summary["tables"]["hf-eager"]["bins_measured"] == 2


def test_named_faithfulness_bins_are_the_ones_remeasured(bench, tmp_path, monkeypatch):
    summary, *_ = _run(bench, tmp_path, monkeypatch, "--faithfulness-bins", "1024x256,64x16")
    pairs = summary["tables"]["hf-eager"]["faithfulness"]
    assert sorted((p["input_tokens"], p["output_tokens"]) for p in pairs) == [(64, 16), (1024, 256)]
    with pytest.raises(SystemExit, match="not an occupied bin"):
        _run(bench, tmp_path, monkeypatch, "--faithfulness-bins", "999x1")


def test_dry_run_predicts_the_bins_left_from_the_store_and_measures_nothing(bench, tmp_path, monkeypatch, capsys):
    _run(bench, tmp_path, monkeypatch)
    with ResultStore(tmp_path / "bin_table.db") as s:
        before = s.count()
    more = [bench.Bin(256, 64, 900), bench.Bin(512, 128, 40)]  # one stored bin, one new one
    plan = bench.main(["--out", str(tmp_path), "--tables", "hf-eager", "--model", "tiny", "--device", "cpu",
                       "--max-batch-cap", "4096", "--dry-run", "--budget-minutes", "60"], bins=more)
    with ResultStore(tmp_path / "bin_table.db") as s:
        assert s.count() == before  # nothing measured
    t = plan["tables"]["hf-eager"]
    assert (t["bins_done"], t["bins_left"]) == (1, 1)
    left = t["bins"][0]
    assert (left["input_tokens"], left["output_tokens"]) == (512, 128)
    # the planted device: the memory model refitted on the stored probes' peaks finds the limit
    limit = MemoryEngine().limit(512, 128)
    assert 0.9 * limit <= left["batch_size"] <= limit and left["batch_from"] == "memory model from stored probes"
    assert left["predicted_s"] > 0 and t["bins_within_budget"] == 1
    assert "a prediction, nothing measured" in capsys.readouterr().out


def test_coverage_keeps_the_most_requested_bins_up_to_the_share(bench):
    bins = [bench.Bin(1, 1, 60), bench.Bin(2, 2, 30), bench.Bin(3, 3, 9), bench.Bin(4, 4, 1)]
    assert [b.n_requests for b in bench.bins_covering(bins, 0.9)] == [60, 30]
    assert [b.n_requests for b in bench.bins_covering(bins, 0.91)] == [60, 30, 9]
    assert len(bench.bins_covering(bins, 1.0)) == 4
    with pytest.raises(SystemExit, match="coverage"):
        bench.bins_covering(bins, 0)


def test_dry_run_counts_the_faithfulness_re_measurements_it_would_make(bench, tmp_path, monkeypatch, capsys):
    _run(bench, tmp_path, monkeypatch)  # measures the fast bins only
    more = [bench.Bin(256, 64, 900), bench.Bin(512, 128, 40)]
    args = ["--out", str(tmp_path), "--tables", "hf-eager", "--model", "tiny", "--device", "cpu",
            "--max-batch-cap", "4096", "--dry-run"]
    plain = bench.main(args, bins=more)["tables"]["hf-eager"]
    checked = bench.main(args + ["--faithfulness-bins", "256x64"], bins=more)["tables"]["hf-eager"]
    assert plain["faithfulness"] == []
    (f,) = checked["faithfulness"]
    assert (f["input_tokens"], f["output_tokens"]) == (256, 64) and f["predicted_s"] > 0
    assert f["search_probes_guessed"] == bench.SEARCH_PROBES_GUESS
    assert checked["predicted_minutes"] == pytest.approx(plain["predicted_minutes"] + f["predicted_s"] / 60)
    # the printed total says how much of it is the check, and the plain plan says nothing of it
    out = capsys.readouterr().out.split("dry run")
    assert "faithfulness re-measurements" not in out[-2] and "of which" in out[-1] and "faithfulness re-measurements" in out[-1]
