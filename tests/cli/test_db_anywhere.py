"""`--db` reads the store it names wherever it stands on the command line.

Before, `tokenjoule results --db X export -o f.csv` exported ./tokenjoule.db: the group's --db
was dropped and the subcommand's default used.
"""

from __future__ import annotations

import csv
import json

import pytest

from fakes.planted_store import plant_store, write_planted_trace
from tokenjoule.cli.main import main
from tokenjoule.spec import RunSpec
from tokenjoule.store.db import CellRecord, ResultStore


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _cell(batch: int) -> CellRecord:
    spec = RunSpec(model="tiny", batch_size=batch, input_tokens=32, output_tokens=4)
    return CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), status="ok",
                      metrics={"energy_j": 1.0 * batch, "energy_per_output_token_j": 0.25, "method": "scripted",
                               "flags": ["short-window"]},
                      measurement={"method": "scripted"}, provenance={"gpu_names": ["Fake GPU"]})


@pytest.fixture
def two_stores(tmp_path, monkeypatch):
    """./tokenjoule.db (the default) with 1 cell and other.db with 3: a wrong read shows."""
    monkeypatch.chdir(tmp_path)
    with ResultStore("tokenjoule.db") as s:
        s.add(_cell(64))
    with ResultStore("other.db") as s:
        for b in (1, 2, 3):
            s.add(_cell(b))
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["results", "--db", "other.db", "export", "-o", "out.csv"],
    ["--db", "other.db", "results", "export", "-o", "out.csv"],
    ["results", "export", "--db", "other.db", "-o", "out.csv"],
])
def test_export_reads_the_store_named_by_db_wherever_it_stands(capsys, two_stores, argv):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 0, err
    with open(two_stores / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["batch_size"]) for r in rows) == [1, 2, 3]


@pytest.mark.parametrize("prefix, suffix", [
    (["results", "--db", "other.db"], []), (["--db", "other.db", "results"], []), (["results"], ["--db", "other.db"]),
])
def test_show_reads_the_store_named_by_db(capsys, two_stores, prefix, suffix):
    rc, out, err = run_cli(capsys, *prefix, "show", "3", "--json", *suffix)
    assert rc == 0, err
    assert json.loads(out)["spec"]["batch_size"] == 3


def test_listing_json_and_csv_read_the_db_given_before(capsys, two_stores):
    rc, out, _ = run_cli(capsys, "--db", "other.db", "results", "--json")
    assert rc == 0 and [r["batch_size"] for r in json.loads(out)] == [1, 2, 3]
    rc, out, _ = run_cli(capsys, "results", "--db", "other.db", "--csv")
    rows = list(csv.DictReader(out.splitlines()))
    assert rc == 0 and [int(r["batch_size"]) for r in rows] == [1, 2, 3]
    assert rows[0]["flags"] == "short-window"


def test_two_different_db_paths_are_an_error(capsys, two_stores):
    rc, _, err = run_cli(capsys, "--db", "tokenjoule.db", "results", "--db", "other.db", "show", "1")
    assert rc == 2 and err.count("\n") == 1 and "--db given twice" in err


def test_missing_store_message_names_the_path_given(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capsys, "results", "--db", "typo.db", "show", "1")
    assert rc == 2 and err.count("\n") == 1
    assert "typo.db" in err and "given with --db" in err and "pass --db" not in err
    rc, _, err = run_cli(capsys, "results", "export", "-o", "x.csv")
    assert rc == 2 and "the default" in err and "pass --db PATH" in err
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "tokenjoule.db").exists()


def test_analysis_commands_take_db_before_the_command(capsys, tmp_path):
    plant_store(tmp_path / "planted.db")
    trace = str(write_planted_trace(tmp_path / "trace.csv"))
    rc, out, err = run_cli(capsys, "--db", str(tmp_path / "planted.db"), "estimate", "--trace", trace,
                           "--model", "llama-3.1-8b", "--json")
    assert rc == 0, err
    assert json.loads(out)["estimates"][0]["complete"] is True
    rc, out, err = run_cli(capsys, "--db", str(tmp_path / "planted.db"), "recommend", "--trace", trace, "--json")
    assert rc == 0, err
    assert json.loads(out)["best"]


def test_rich_listing_is_readable_at_80_columns(capsys, two_stores, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = run_cli(capsys, "results", "--db", "other.db")
    assert rc == 0
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "…" not in out  # no header or value cut to an ellipsis
    header = next(line for line in out.splitlines() if "model" in line)
    for name in ("id", "model", "setup", "batch", "in/out", "J/tok", "method", "status"):
        assert name in header
