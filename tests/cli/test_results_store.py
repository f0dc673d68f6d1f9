"""The results store round trip and the CSV/Parquet export."""

from __future__ import annotations

import sqlite3

import pytest

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.spec import RunSpec
from tokenjoule.store.db import SCHEMA_VERSION, CellRecord, ResultStore
from tokenjoule.store.export import export_results, infer_format


def record(batch=8, status="ok", energy=10.0, model="tiny"):
    spec = RunSpec(model=model, batch_size=batch, input_tokens=32, output_tokens=4)
    metrics = {"energy_j": energy, "energy_per_output_token_j": energy / (batch * 4), "duration_s": 0.5,
               "energy_cv": 0.01, "flags": ["prefill-exceeds-full", "short-window"], "cpu_energy_j": None, "method": "scripted"}
    return CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), status=status,
                      metrics=metrics if status == "ok" else {},
                      measurement={"method": "scripted", "flags": ["short-window"], "samples": [[0.0, [1.0]]]},
                      provenance={"gpu_names": ["Fake GPU"], "hostname": "h"},
                      error=None if status == "ok" else "out of memory: boom")


def test_round_trip_add_get_find(store):
    ok, failed = record(batch=8), record(batch=16, status="failed")
    store.add(ok), store.add(failed)
    back = store.get(ok.id)
    assert back.to_dict() == ok.to_dict()
    assert store.has_success(ok.spec_hash) and not store.has_failure(ok.spec_hash)
    assert store.has_failure(failed.spec_hash) and not store.has_success(failed.spec_hash)
    assert [r.id for r in store.find(status="ok", batch_size=8)] == [ok.id]
    assert [r.id for r in store.find(status=None, model="tiny")] == [ok.id, failed.id]
    assert store.find(status="ok", model="other") == []
    assert store.get(999) is None
    assert store.latest(failed.spec_hash, status="failed").error == "out of memory: boom"


def test_schema_version_and_reopen_migrates_nothing(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        s.add(record())
    with ResultStore(path) as s:  # a second open must not re-run migrations (it would fail or wipe)
        assert s.schema_version == SCHEMA_VERSION and s.count() == 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(TokenjouleError, match="newer"):
        ResultStore(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(store, tmp_path, fmt):
    pd = pytest.importorskip("pandas")
    store.add(record(batch=1, energy=3.0)), store.add(record(batch=4, energy=8.0)), store.add(record(batch=64, status="failed"))
    out = tmp_path / f"cells.{fmt}"
    assert export_results(store, out, fmt) == 3
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(frame["batch_size"]) == [1, 4, 64]
    assert list(frame["status"]) == ["ok", "ok", "failed"]
    assert frame["energy_j"].iloc[:2].tolist() == pytest.approx([3.0, 8.0])
    assert pd.isna(frame["energy_j"].iloc[2])  # failed: missing, not 0
    assert pd.isna(frame["cpu_energy_j"].iloc[0])
    assert frame["gpu_name"].iloc[0] == "Fake GPU" and frame["decoding"].iloc[0] == "greedy"
    assert frame["flags"].iloc[0] == "prefill-exceeds-full,short-window"  # the cell's, not one window's
    assert export_results(store, tmp_path / f"ok.{fmt}", fmt, status="ok") == 2


def test_export_format_errors(tmp_path):
    assert infer_format("a.csv", None) == "csv" and infer_format("a.parquet", None) == "parquet"
    with pytest.raises(TokenjouleError, match="csv, parquet"):
        infer_format("a.txt", None)
    with pytest.raises(UnknownNameError, match="csv, parquet"):
        infer_format("a.csv", "xlsx")
