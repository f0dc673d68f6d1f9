"""End to end on the real stack: transformers with the `tiny` preset on the CPU, the CPU-time
estimate meter, the SQLite store and the CLI (measure -> results -> show -> demo)."""

from __future__ import annotations

import json

import pytest

from tokenjoule.cli.main import main
from tokenjoule.store.db import ResultStore

pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def test_measure_tiny_end_to_end(capsys, tmp_path):
    db = str(tmp_path / "tj.db")
    rc = main(["measure", "--model", "tiny", "--batch", "2", "--input", "16", "--output", "4", "--warmup", "1",
               "--repeats", "2", "--idle-s", "0.2", "--json", "--meter", "estimate", "--device", "cpu",
               "--min-window-s", "0.2", "--db", db])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rec = json.loads(out)
    m = rec["metrics"]
    assert rec["status"] == "ok" and rec["spec"]["model"] == "tiny"
    assert m["method"] == "estimate-cpu-time" and "estimate" in m["flags"]
    assert m["output_tokens_total"] == 2 * 4 and m["input_tokens_total"] == 2 * 16
    assert m["repeats"] == 2 and m["iterations_per_window"] >= 1
    assert m["duration_s"] > 0 and m["ttft_s"] > 0
    assert m["energy_per_output_token_j"] * 8 == pytest.approx(m["energy_j"])
    assert m["prefill_energy_j"] + m["decode_energy_j"] == pytest.approx(m["energy_j"])
    assert m["idle_power_w"] is None  # no sensor: not measured, not 0
    assert rec["measurement"]["calls"]["warmup"] == 1
    assert rec["provenance"]["model_params"] > 0 and rec["provenance"]["transformers_version"]

    rc = main(["results", "--db", db])
    out, _ = capsys.readouterr()
    assert rc == 0 and "estimate-cpu-time" in out
    rc = main(["results", "show", str(rec["id"]), "--db", db, "--json"])
    out, _ = capsys.readouterr()
    assert rc == 0 and json.loads(out)["spec_hash"] == rec["spec_hash"]


def test_demo_command_stores_its_cells(capsys, tmp_path, monkeypatch):
    from tokenjoule.cli import demo

    # One small cell instead of the full grid keeps this test to seconds; the grid itself is
    # what `make demo` runs.
    monkeypatch.setattr(demo, "OFFLINE_GRID", {"batch_size": (2,), "input_tokens": (16,), "output_tokens": (4,)})
    # Only the offline step: the later steps are covered by tests/cli/test_demo.py.
    monkeypatch.setattr(demo, "DEMO_STEPS", [s for s in demo.DEMO_STEPS if s.name == "offline"])
    db = tmp_path / "demo" / "tj.db"
    rc = main(["demo", "--db", str(db)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    with ResultStore(db) as store:
        (cell,) = store.find(status="ok")
    assert cell.spec["batch_size"] == 2 and cell.metrics["energy_j"] is not None
