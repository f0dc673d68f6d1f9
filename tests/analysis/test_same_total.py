"""One store, one workload, one setup: `estimate`, `savings`, `recommend` and the report's
Table 4 give the same total from the same cells (one cell-selection rule,
analysis.selection). The store holds several batch sizes per bin, re-measured rows and other
configurations, so a command with its own rule would pick differently."""

from __future__ import annotations

import json

import pytest

from fakes.planted_store import MODEL, plant_store, write_planted_trace
from tokenjoule.analysis.selection import SELECTION_RULE
from tokenjoule.cli.main import main
from tokenjoule.records import CellRecord
from tokenjoule.store.db import ResultStore


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("same")
    info = plant_store(root / "planted.db")
    trace = write_planted_trace(root / "planted.csv")
    with ResultStore(info.path) as store:
        # A re-measurement of one hf/eager cell: its newer row must replace the older one
        # everywhere (the older, cheaper row would win a "least energy over all rows" rule).
        old = next(r for r in store.find(engine="hf", mode="eager", decoding="greedy", input_tokens=512,
                                          output_tokens=64, batch_size=64))
        newer = CellRecord(spec=old.spec, spec_hash=old.spec_hash, metrics={**old.metrics,
                           "energy_j": old.metrics["energy_j"] * 1.5}, measurement=old.measurement,
                           provenance=old.provenance)
        store.add(newer)
    return info.path, trace, root


def _json(capsys, *args) -> dict:
    rc = main(list(args))
    out = capsys.readouterr().out
    assert rc in (0, None), out
    return json.loads(out)


def test_estimate_savings_recommend_and_table4_agree(planted, capsys):
    db, trace, root = planted
    est = _json(capsys, "estimate", "--trace", str(trace), "--model", MODEL, "--engine", "hf:eager",
                "--db", str(db), "--json")
    (est,) = est["estimates"]
    total = est["total_energy_j"]
    ids = sorted(r["cell_id"] for r in est["rows"])
    assert total is not None and total > 0 and est["batch_policy"] == SELECTION_RULE
    # The rule is visible in the answer: a bin of 10 requests runs cheaper at batch 32 than at 64.
    assert any(r["batch_size"] < max(r["batch_sizes_available"]) for r in est["rows"])

    sav = _json(capsys, "savings", "--trace", str(trace), "--model", MODEL, "--baseline", "hf:eager",
                "--optimized", "vllm:graphs", "--db", str(db), "--json")
    assert sav["baseline"]["total_energy_j"] == pytest.approx(total, rel=1e-12)
    assert sorted(r["cell_id"] for r in sav["baseline"]["rows"]) == ids

    rec = _json(capsys, "recommend", "--trace", str(trace), "--model", MODEL, "--db", str(db), "--json")
    assert rec["baseline"]["total_energy_j"] == pytest.approx(total, rel=1e-12)
    assert sorted(b["cell_id"] for b in rec["baseline"]["bins"]) == ids
    assert rec["selection"] == SELECTION_RULE

    from tokenjoule.report.data import cells_frame
    from tokenjoule.report.tables import estimate_vs_theory_table

    with ResultStore(db) as store:
        sec = estimate_vs_theory_table([str(trace)], store, cells_frame(store), MODEL, root / "report")
    row = next(r for r in sec.table.rows if r[1].text == "hf/eager")
    assert float(row[2].text.replace(",", "")) == pytest.approx(total, abs=0.5)  # shown in whole joules
    assert list(row[2].cell_ids) == sorted(set(ids))
    assert SELECTION_RULE in sec.caption
