"""`tokenjoule measure` / `results` through the CLI: errors, failure exit codes, JSON, listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.fake_engine import FakeEngine
from tokenjoule.cli.main import main
from tokenjoule.store.db import ResultStore

FAST = ["--batch", "2", "--input", "16", "--output", "4", "--warmup", "1", "--repeats", "2", "--idle-s", "0.2",
        "--min-window-s", "0.1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unsquashed, so cell text is searchable


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_does_not_import_torch():
    code = ("import sys\nfrom tokenjoule.cli.main import main\n"
            "for argv in (['--help'], ['measure', '--help'], ['results', '--help'], ['demo', '--help']):\n"
            "    assert main(argv) == 0, argv\n"
            "heavy = [m for m in ('torch', 'transformers', 'vllm', 'pandas') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("argv, kind, valid", [
    (["--model", "no-such-model"], "model preset", "llama-3.1-8b"),
    (["--model", "tiny", "--engine", "trt"], "engine", "hf, vllm"),
    (["--model", "tiny", "--mode", "turbo"], "mode", "eager, compile, cudagraphs"),
    (["--model", "tiny", "--decoding", "nucleus"], "decoding", "greedy, sample, beam, speculative"),
    (["--model", "tiny", "--decoding", "speculative", "--draft-model", "nope"], "model preset", "tiny"),
])
def test_unknown_names_give_one_line_listing_valid(capsys, tmp_path, argv, kind, valid):
    rc, out, err = run_cli(capsys, "measure", *argv, "--db", str(tmp_path / "x.db"))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown " + kind)
    assert valid in lines[0] and "Traceback" not in err
    assert not (tmp_path / "x.db").exists()  # nothing was run or stored


def test_bad_numbers_are_one_line_errors(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "measure", "--model", "tiny", "--batch", "0", "--db", str(tmp_path / "x.db"))
    assert rc == 2 and err.startswith("error: batch_size") and len(err.strip().splitlines()) == 1


@pytest.fixture
def fake_backend(monkeypatch):
    """Route the CLI's engine and meter to the fakes (shared clock, no sleeping)."""
    clock = FakeClock()
    state = {"engine": FakeEngine(clock)}
    monkeypatch.setattr("tokenjoule.engines.base.get_engine", lambda name: state["engine"])
    monkeypatch.setattr("tokenjoule.energy.make_meter", lambda kind="auto", devices=None: ScriptedMeter(clock),
                        raising=False)
    return state


def test_out_of_memory_exits_nonzero_and_records_failed_cell(capsys, tmp_path, fake_backend):
    fake_backend["engine"] = FakeEngine(FakeClock(), oom_at_batch=2)
    db = str(tmp_path / "r.db")
    rc, out, err = run_cli(capsys, "measure", "--model", "tiny", *FAST, "--db", db)
    assert rc == 1
    error_lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1 and "out of memory" in error_lines[0] and "Traceback" not in err
    with ResultStore(db) as store:
        (failed,) = store.find(status="failed")
        assert "out of memory" in failed.error
    rc, out, _ = run_cli(capsys, "results", "--db", db, "--status", "failed")
    assert rc == 0 and "failed" in out


def test_measure_json_is_the_stored_record(capsys, tmp_path, fake_backend):
    db = str(tmp_path / "r.db")
    rc, out, _ = run_cli(capsys, "measure", "--model", "tiny", *FAST, "--db", db, "--json")
    assert rc == 0
    printed = json.loads(out)
    assert printed["status"] == "ok" and printed["measurement"]["samples"] == []
    with ResultStore(db) as store:
        stored = store.get(printed["id"])
    assert printed["metrics"] == json.loads(json.dumps(stored.metrics))
    assert printed["spec"]["batch_size"] == 2 and printed["spec_hash"] == stored.spec_hash

    rc, out, _ = run_cli(capsys, "results", "show", str(printed["id"]), "--db", db, "--json")
    assert rc == 0 and json.loads(out)["metrics"] == printed["metrics"]
    rc, out, _ = run_cli(capsys, "results", "--db", db)
    assert rc == 0 and "tiny" in out
    rc, out, _ = run_cli(capsys, "results", "show", str(printed["id"]), "--db", db)
    assert rc == 0 and "provenance" in out
    csv = tmp_path / "cells.csv"
    rc, _, _ = run_cli(capsys, "results", "export", "-o", str(csv), "--db", db)
    assert rc == 0 and csv.read_text().count("\n") == 2  # header + one cell


def test_results_errors(capsys, tmp_path, fake_backend):
    rc, _, err = run_cli(capsys, "results", "--db", str(tmp_path / "missing.db"))
    assert rc == 2 and err.startswith("error: no results database")
    assert not (tmp_path / "missing.db").exists()
    db = str(tmp_path / "r.db")
    assert run_cli(capsys, "measure", "--model", "tiny", *FAST, "--db", db)[0] == 0
    rc, _, err = run_cli(capsys, "results", "show", "42", "--db", db)
    assert rc == 2 and "no cell with id 42" in err
    rc, _, err = run_cli(capsys, "results", "--db", db, "--status", "meh")
    assert rc == 2 and "ok, failed, all" in err
    rc, _, err = run_cli(capsys, "results", "export", "-o", str(tmp_path / "x.xlsx"), "--db", db)
    assert rc == 2 and "csv, parquet" in err
