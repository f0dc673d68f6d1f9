"""Bins travel with the cells: the bins a sweep was planned for are stored with it, and a plain
`estimate` uses them (and says so) instead of reporting the default bins as unmeasured."""

from __future__ import annotations

import json

import pytest

from tokenjoule.cli.main import main
from tokenjoule.store.db import SCHEMA_VERSION, ResultStore

# Real path: the tiny preset through the HF engine on the CPU, energy from the CPU-time estimate.
FAST_CELLS = "device: cpu\ndtype: float32\nwarmup: 1\nrepeats: 2\nmin_window_s: 0.05\nidle_s: 0\nsplit_prefill: false\n"


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_sweep_bins_are_stored_and_used_by_estimate(capsys, tmp_path):
    trace = tmp_path / "short.csv"
    trace.write_text("input_tokens,output_tokens\n" + "10,3\n" * 12 + "30,6\n" * 8)
    sweep = tmp_path / "cells.yaml"
    db = str(tmp_path / "r.db")
    rc, _, err = run_cli(capsys, "workload", "bins", str(trace), "--input-bins", "48", "--output-bins", "8",
                         "--emit-sweep", str(sweep), "--model", "tiny", "--engine", "hf", "--batch-size", "4")
    assert rc == 0, err
    import yaml

    assert yaml.safe_load(sweep.read_text())["bins"] == {"input": [48], "output": [8]}  # one cell; defaults need two
    sweep.write_text(sweep.read_text() + FAST_CELLS)
    rc, out, err = run_cli(capsys, "sweep", str(sweep), "--db", db, "--no-progress", "--meter", "estimate")
    assert rc == 0, out + err
    with ResultStore(db) as store:
        assert store.latest_bins("tiny")["input_edges"] == [48]
        assert store.latest_bins("other-model") is None

    rc, out, err = run_cli(capsys, "estimate", "--trace", str(trace), "--model", "tiny", "--db", db, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["bins_used"]["input_edges"] == [48] and "stored with the sweep" in data["bins_used"]["source"]
    assert data["estimates"][0]["complete"] is True and data["estimates"][0]["n_covered"] == 20
    rc, out, err = run_cli(capsys, "estimate", "--trace", str(trace), "--model", "tiny", "--db", db)
    assert rc == 0 and "bins: input 48; output 8 (stored with the sweep" in out

    # Flags still win, and say so; the default bins are not measured here (exit 1, missing cells listed).
    rc, out, err = run_cli(capsys, "estimate", "--trace", str(trace), "--model", "tiny", "--db", db,
                           "--input-bins", "16,32", "--output-bins", "4,8", "--json")
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


def test_report_uses_the_stored_bins_and_says_so(tmp_path):
    from fakes.planted_store import PLANTED_BINS, plant_store, write_planted_trace
    from tokenjoule.report.build import build_report
    from tokenjoule.workloads.binning import Bins

    plant_store(tmp_path / "p.db")
    inputs, outputs = sorted({i for i, _ in PLANTED_BINS}), sorted({o for _, o in PLANTED_BINS})
    with ResultStore(tmp_path / "p.db") as store:
        store.add_bins(inputs, outputs, source="x.yaml")
        trace = str(write_planted_trace(tmp_path / "t.csv"))
        result = build_report(store, tmp_path / "out", traces=[trace])
        notes = {s.name: " ".join(s.notes) for s in result.sections}
        assert "stored with the sweep x.yaml" in notes["table_savings"]
        assert "stored with the sweep x.yaml" in notes["table_estimate_vs_theory"]
        # Bins given by the caller win and are named as such.
        given = Bins(tuple(inputs), tuple(outputs))
        result = build_report(store, tmp_path / "out2", traces=[trace], bins=given)
        assert "given by the caller" in " ".join(next(s for s in result.sections if s.name == "table_savings").notes)


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


def test_sweep_overrides_repeats_and_warmup(capsys, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("model: tiny\nengine: hf\nmode: eager\ninput_tokens: 16\noutput_tokens: 4\nbatch_size: 2\n"
                   + FAST_CELLS.replace("warmup: 1", "warmup: 3").replace("repeats: 2", "repeats: 5"))
    db = tmp_path / "r.db"
    rc, out, err = run_cli(capsys, "sweep", str(cfg), "--repeats", "2", "--warmup", "1", "--db", str(db),
                           "--no-progress", "--meter", "estimate")
    assert rc == 0, err + out
    with ResultStore(db) as s:
        (rec,) = s.find()
    assert rec.spec["repeats"] == 2 and rec.spec["warmup"] == 1
    assert len(rec.metrics.get("energy_by_repeat_j") or rec.measurement.get("repeats") or [0, 0]) == 2
