"""Shipped reference tables: generated from committed evidence, loaded, labelled, estimated from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenjoule.analysis.estimate import binned_estimate
from tokenjoule.cli.main import app
from tokenjoule.errors import TokenjouleError
from tokenjoule.reference import list_references, load_reference, reference_store
from tokenjoule.reference.tables import parse_reference
from tokenjoule.store.db import ResultStore
from tokenjoule.workloads.traces import load_trace

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE = ROOT / "benchmarks/results/h100_evidence.db"
NAME = "h100-llama-3.1-8b"


def test_h100_table_is_listed_and_labelled_with_card_and_date():
    assert NAME in list_references()
    t = load_reference(NAME)
    assert t.card == "NVIDIA H100 80GB HBM3" and t.date == "2026-11-26" and t.gpu == "H100 SXM"
    assert "measured elsewhere on NVIDIA H100 80GB HBM3, 2026-11-26" in t.label and "partial" in t.label
    assert t.versions["torch_version"] and t.built_by.startswith("python benchmarks/build_reference.py")
    assert {"hf:eager:greedy", "vllm:graphs:greedy"} == set(t.setups())


@pytest.fixture
def evidence_copy(tmp_path):
    """A copy of the committed evidence store: opening a store may migrate it, never the committed file."""
    import shutil

    path = tmp_path / "evidence.db"
    shutil.copyfile(EVIDENCE, path)
    return path


def test_table_is_generated_from_the_evidence_database(evidence_copy):
    """Rebuilding with the committed script gives exactly the shipped cells (nothing typed)."""
    spec = importlib.util.spec_from_file_location("build_reference", ROOT / "benchmarks/build_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rebuilt = mod.build(evidence_copy, NAME, "llama-3.1-8b", ["hf:eager", "vllm:graphs"], mod.DEFAULT_COVERAGE, "t")
    assert rebuilt["cells"] == list(load_reference(NAME).cells)


@pytest.mark.parametrize("trace", ["azure-conv-2023", "azure-code-2023"])
def test_estimate_from_reference_equals_estimate_from_the_source_db(trace, evidence_copy):
    wl = load_trace(trace)
    from_ref = binned_estimate(wl, reference_store(load_reference(NAME)), model="llama-3.1-8b", engine="hf",
                               mode="eager")
    with ResultStore(evidence_copy) as db:
        from_db = binned_estimate(wl, db, model="llama-3.1-8b", engine="hf", mode="eager")
    assert from_ref.partial_energy_j == pytest.approx(from_db.partial_energy_j)
    assert [(r.input_tokens, r.output_tokens, r.batch_size) for r in from_ref.rows] == \
        [(r.input_tokens, r.output_tokens, r.batch_size) for r in from_db.rows]
    assert from_ref.gpu_names == ["NVIDIA H100 80GB HBM3"]


def test_bad_tables_are_refused_with_what_is_missing():
    with pytest.raises(TokenjouleError, match="card"):
        parse_reference({"name": "x", "date": "d", "model": "m", "cells": [], "coverage": "c", "built_by": "b",
                         "versions": {}})
    good = json.loads(json.dumps({"name": "x", "card": "c", "date": "d", "model": "m", "coverage": "c",
                                  "built_by": "b", "versions": {}, "cells": [{"engine": "hf"}]}))
    with pytest.raises(TokenjouleError, match="cell 0 lacks mode"):
        parse_reference(good)


def test_cli_reference_list_and_estimate_labelled(capsys):
    runner = CliRunner()
    out = runner.invoke(app, ["estimate", "--reference", "list", "--json"])
    assert out.exit_code == 0 and NAME in [t["name"] for t in json.loads(out.stdout)]
    out = runner.invoke(app, ["estimate", "--reference", NAME, "--trace", "azure-conv-2023", "--json",
                              "--predict-missing"])
    doc = json.loads(out.stdout)
    assert doc["reference"]["card"] == "NVIDIA H100 80GB HBM3" and "measured elsewhere" in doc["reference"]["label"]
    assert doc["estimates"][0]["model"] == "llama-3.1-8b"  # the table's model by default
    from tokenjoule.cli.main import main

    assert main(["estimate", "--reference", "h200-nothing", "--trace", "azure-conv-2023"]) == 2
    err = capsys.readouterr().err
    assert "valid: h100-llama-3.1-8b" in err and "Traceback" not in err


def test_h200_table_ships_its_direct_replays_rebuilt_from_the_evidence(tmp_path):
    """The replays that check the H200 table travel with it, rebuilt from the committed store, and
    the demo says what they found (the estimate vs the same requests run for real)."""
    import shutil

    from tokenjoule.reference.replays import replay_lines

    db = tmp_path / "bt.db"
    shutil.copyfile(ROOT / "benchmarks/results/bin_table_h200/bin_table.db", db)
    spec = importlib.util.spec_from_file_location("build_reference", ROOT / "benchmarks/build_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rebuilt = mod.build(db, "h200-llama-3.1-8b", "llama-3.1-8b", ["hf:eager", "vllm:graphs"], "c", "t")
    shipped = load_reference("h200-llama-3.1-8b")
    assert rebuilt["replays"] == list(shipped.replays) and shipped.replays
    with ResultStore(db, create=False, read_only=True) as store:
        stored = {r.id: r for r in store.find(status="ok", kind="replay")}
    for r in shipped.replays:
        assert r["energy_j"] == stored[r["source_record_id"]].metrics["energy_j"]
    lines = replay_lines(shipped)
    assert len(lines) == len(shipped.replays) and "checked against a direct replay on NVIDIA H200" in lines[0]
    assert f"{100 * shipped.replays[0]['difference_paper']:+.1f}% (paper rounding)" in lines[0]
    for r, line in zip(shipped.replays, lines):  # a padded hf replay far above its estimate says why
        assert ("pads its static batches" in line) == (r["engine"] == "hf" and r["difference_paper"] < -0.10)
    only_hf = mod.build(db, "x", "llama-3.1-8b", ["hf:eager"], "c", "t")
    assert all(r["engine"] == "hf" for r in only_hf.get("replays", []))


def test_estimate_from_a_reference_shows_its_replay_check_for_that_setup():
    """estimate --reference prints (and puts in --json) the table's direct replays of the setup
    estimated, and only those: the user sees how far the estimate was from a measurement."""
    runner = CliRunner()
    shipped = load_reference("h200-llama-3.1-8b")
    engines = {r["engine"] for r in shipped.replays}
    assert {"hf", "vllm"} <= engines
    out = runner.invoke(app, ["estimate", "--reference", "h200-llama-3.1-8b", "--trace", "azure-conv-2023",
                              "--engine", "vllm:graphs", "--json"])
    doc = json.loads(out.stdout)
    assert [r["engine"] for r in doc["reference"]["replays"]] == ["vllm"]
    out = runner.invoke(app, ["estimate", "--reference", "h200-llama-3.1-8b", "--trace", "azure-conv-2023",
                              "--engine", "hf:eager"])
    text = " ".join(out.output.split())
    assert "checked against a direct replay on NVIDIA H200" in text and "hf eager" in text
    assert "vllm graphs, 1,000" not in text
