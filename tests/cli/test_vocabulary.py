"""One vocabulary: the new option names and every old spelling reach the same value."""

from __future__ import annotations

import json

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.fake_engine import FakeEngine
from tokenjoule.cli.main import main
from tokenjoule.store.db import ResultStore

COMMON = ["--warmup", "1", "--repeats", "2", "--idle-s", "0", "--min-window-s", "0.1", "--device", "cpu",
          "--no-split-prefill"]


@pytest.fixture(autouse=True)
def fakes(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    clock = FakeClock()
    monkeypatch.setattr("tokenjoule.engines.base.get_engine", lambda name: FakeEngine(clock))
    monkeypatch.setattr("tokenjoule.energy.make_meter", lambda kind="auto", devices=None: ScriptedMeter(clock),
                        raising=False)


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("lengths", [
    ["--batch-size", "2", "--input-tokens", "16", "--output-tokens", "4"],  # the names of YAML and serve-bench
    ["--batch", "2", "--input", "16", "--output", "4"],  # older spellings
    ["-b", "2", "-i", "16", "-o", "4"],  # older short forms (measure -o is output tokens, kept for scripts)
])
def test_measure_length_options_all_spellings(capsys, tmp_path, lengths):
    db = str(tmp_path / "r.db")
    rc, out, err = run_cli(capsys, "measure", "--model", "tiny", *lengths, *COMMON, "--db", db, "--json")
    assert rc == 0, err
    spec = json.loads(out)["spec"]
    assert (spec["batch_size"], spec["input_tokens"], spec["output_tokens"]) == (2, 16, 4)
    if "-o" in lengths or "--output" in lengths:
        assert "old spelling of --output-tokens" in err


def test_measure_conflicting_spellings_are_an_error(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "measure", "--model", "tiny", "--output-tokens", "4", "-o", "8", *COMMON,
                         "--db", str(tmp_path / "r.db"))
    assert rc == 2 and err.count("\n") == 1 and "disagree" in err
    assert not (tmp_path / "r.db").exists()


def test_measure_takes_db_before_the_command(capsys, tmp_path):
    db = tmp_path / "first.db"
    rc, _, err = run_cli(capsys, "--db", str(db), "measure", "--model", "tiny", "--batch-size", "2",
                         "--input-tokens", "16", "--output-tokens", "4", *COMMON)
    assert rc == 0, err
    with ResultStore(db) as s:
        assert s.count() == 1


@pytest.mark.parametrize("traces", [["--trace", "task:translation,task:generation"],
                                    ["--trace", "task:translation", "--trace", "task:generation"]])
def test_trace_is_repeatable_and_comma_separated(capsys, tmp_path, traces):
    ResultStore(tmp_path / "e.db").close()
    rc, out, _ = run_cli(capsys, "estimate", *traces, "--model", "tiny", "--db", str(tmp_path / "e.db"), "--json")
    assert rc == 1  # nothing measured: missing cells, listed
    assert [e["workload"] for e in json.loads(out)["estimates"]] == ["task:translation", "task:generation"]


def test_workload_takes_trace_positionally_or_as_option(capsys):
    rc1, out1, _ = run_cli(capsys, "workload", "stats", "task:translation", "--json")
    rc2, out2, _ = run_cli(capsys, "workload", "stats", "--trace", "task:translation", "--json")
    assert rc1 == rc2 == 0 and json.loads(out1) == json.loads(out2)


def test_one_trace_commands_refuse_two(capsys, tmp_path):
    ResultStore(tmp_path / "e.db").close()
    rc, _, err = run_cli(capsys, "savings", "--trace", "task:translation,task:generation", "--baseline", "hf:eager",
                         "--optimized", "hf:compile", "--model", "tiny", "--db", str(tmp_path / "e.db"))
    assert rc == 2 and "takes one trace" in err and err.count("\n") == 1


def test_serve_bench_task_is_an_alias_of_trace_task(capsys):
    from tokenjoule.cli.serve import _workload

    assert _workload(None, "translation") == _workload(["task:translation"], None) == "task:translation"
    rc, _, err = run_cli(capsys, "serve-bench", "--model", "tiny", "--url", "http://127.0.0.1:9",
                         "--trace", "task:translation", "--task", "translation")
    assert rc == 2 and "not both" in err


def test_models_list_view_has_json_and_csv(capsys):
    rc, out, _ = run_cli(capsys, "models", "--csv")
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("name,") and any(line.startswith("tiny,") for line in lines)
    rc, out, _ = run_cli(capsys, "models", "--json")
    assert rc == 0 and any(r["name"] == "tiny" for r in json.loads(out))


def test_workload_bins_csv_counts_add_up(capsys):
    import csv

    rc, out, _ = run_cli(capsys, "workload", "bins", "--trace", "task:translation", "--csv")
    rows = list(csv.DictReader(out.splitlines()))
    assert rc == 0 and rows and {"input_tokens", "output_tokens", "n_requests", "share"} <= set(rows[0])
    rc, js, _ = run_cli(capsys, "workload", "bins", "--trace", "task:translation", "--json")
    assert sum(int(r["n_requests"]) for r in rows) == json.loads(js)["n_kept"]
