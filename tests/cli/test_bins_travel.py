"""Bins travel with the cells: the bins a sweep was planned for are stored with it, and a plain
`estimate` uses them (and says so) instead of reporting the default bins as unmeasured."""

from __future__ import annotations

import json

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.fake_engine import FakeEngine
from tokenjoule.cli.main import main
from tokenjoule.store.db import SCHEMA_VERSION, ResultStore


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


def test_sweep_bins_are_stored_and_used_by_estimate(capsys, tmp_path):
    sweep = tmp_path / "cells.yaml"
    db = str(tmp_path / "r.db")
    rc, _, err = run_cli(capsys, "workload", "bins", "task:translation", "--input-bins", "64,256",
                         "--output-bins", "64", "--emit-sweep", str(sweep), "--model", "tiny", "--engine", "hf",
                         "--batch-size", "8")
    assert rc == 0, err
    assert "bins: {input: [64, 256], output: [64]}" in sweep.read_text()
    text = sweep.read_text() + "device: cpu\nwarmup: 1\nrepeats: 2\nmin_window_s: 0.1\nidle_s: 0\n"
    sweep.write_text(text)
    rc, out, err = run_cli(capsys, "sweep", str(sweep), "--db", db, "--no-progress")
    assert rc == 0, out + err
    with ResultStore(db) as store:
        assert store.latest_bins("tiny")["input_edges"] == [64, 256]
        assert store.latest_bins("other-model") is None

    rc, out, err = run_cli(capsys, "estimate", "--trace", "task:translation", "--model", "tiny", "--db", db, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["bins_used"]["input_edges"] == [64, 256] and "stored with the sweep" in data["bins_used"]["source"]
    assert data["estimates"][0]["complete"] is True
    rc, out, err = run_cli(capsys, "estimate", "--trace", "task:translation", "--model", "tiny", "--db", db)
    assert rc == 0 and "bins: input 64,256; output 64 (stored with the sweep" in out

    # Flags still win, and say so; the default bins leave most of the trace unmeasured (exit 1).
    rc, out, err = run_cli(capsys, "estimate", "--trace", "task:translation", "--model", "tiny", "--db", db,
                           "--input-bins", "32,64,128,256", "--json")
    assert rc == 1 and json.loads(out)["bins_used"]["source"] == "from --input-bins/--output-bins"


def test_recommend_uses_the_stored_bins(capsys, tmp_path):
    from fakes.planted_store import PLANTED_BINS, plant_store, write_planted_trace

    plant_store(tmp_path / "p.db")
    with ResultStore(tmp_path / "p.db") as store:
        store.add_bins(sorted({i for i, _ in PLANTED_BINS}), sorted({o for _, o in PLANTED_BINS}), source="x.yaml")
    rc, out, err = run_cli(capsys, "recommend", "--trace", str(write_planted_trace(tmp_path / "t.csv")),
                           "--db", str(tmp_path / "p.db"), "--json")
    assert rc == 0, err
    assert "stored with the sweep x.yaml" in json.loads(out)["binning"]["source"]


def test_old_store_is_migrated_to_hold_bins(tmp_path):
    import sqlite3

    path = tmp_path / "v1.db"
    from tokenjoule.store import db as dbmod

    conn = sqlite3.connect(path)
    conn.executescript(dbmod.MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with ResultStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION and store.latest_bins() is None
        store.add_bins([8, 16], [4])
        assert store.latest_bins()["output_edges"] == [4]
