"""Fault injection on the results store: bad paths, foreign files, a locked writer, damaged rows,
read-only files, four processes creating one store, kill -9 then backup. Real SQLite, real
processes; every failure must be one line (StoreError) and no measurement may be lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokenjoule.errors import TokenjouleError
from tokenjoule.spec import RunSpec
from tokenjoule.store.connect import StoreError
from tokenjoule.store.db import SCHEMA_VERSION, CellRecord, ResultStore

REPO = Path(__file__).resolve().parents[2]
EVIDENCE_DB = REPO / "benchmarks" / "results" / "h100_evidence.db"


def record(batch: int = 1, model: str = "tiny") -> CellRecord:
    spec = RunSpec(model=model, batch_size=batch, input_tokens=8, output_tokens=4)
    return CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), metrics={"energy_j": 1.5 * batch},
                      measurement={"method": "simulated"}, provenance={"hostname": "h"})


def _sha(path: Path) -> bytes:
    return path.read_bytes()


# -- opening ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "dir", "file/child.db", "x" * 5000 + ".db"])
def test_unusable_paths_are_one_line_errors(tmp_path, bad):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("not a folder")
    path = bad if bad == "" else tmp_path / bad
    with pytest.raises(StoreError) as info:
        ResultStore(path)
    assert "\n" not in str(info.value)


def test_opening_for_reading_never_creates_a_store(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(path, create=False)
    assert not path.exists()


def test_foreign_sqlite_file_is_refused_and_left_byte_identical(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('keep me')")
    conn.commit()
    conn.close()
    before = _sha(path)
    for create in (True, False):
        with pytest.raises(StoreError, match="not a tokenjoule results database"):
            ResultStore(path, create=create)
    assert _sha(path) == before  # no tables added, not switched to WAL
    assert not Path(str(path) + "-wal").exists()


def test_foreign_cells_table_with_a_version_is_refused(tmp_path):
    path = tmp_path / "cells.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cells (row INTEGER, col INTEGER, value TEXT)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    before = _sha(path)
    with pytest.raises(StoreError, match="no tokenjoule cells table"):
        ResultStore(path)
    assert _sha(path) == before


def test_not_sqlite_at_all(tmp_path):
    path = tmp_path / "text.db"
    path.write_text("hello, this is not a database\n" * 200)
    with pytest.raises(StoreError, match="not a tokenjoule results database"):
        ResultStore(path)
    assert path.read_text().startswith("hello")


def test_todays_evidence_store_opens_and_migrates(tmp_path):
    copy = tmp_path / "evidence.db"
    shutil.copy(EVIDENCE_DB, copy)
    with ResultStore(copy) as store:
        assert store.schema_version == SCHEMA_VERSION
        n = store.count()
        assert n > 0 and len(store.find(status=None)) == n and store.corrupt_ids == []
        assert store.claim("abc") and store.claims()[0]["spec_hash"] == "abc"


# -- four processes creating one store at once ----------------------------------------------
OPENER = textwrap.dedent("""
    import sys, time
    from tokenjoule.store.db import ResultStore
    while time.time() < float(sys.argv[2]):
        time.sleep(0.001)
    with ResultStore(sys.argv[1]) as s:
        print(s.schema_version)
""")


@pytest.mark.parametrize("trial", range(3))
def test_four_concurrent_first_openers_all_succeed(tmp_path, trial):
    import time

    path = tmp_path / "new.db"
    at = str(time.time() + 1.5)  # all four start their open at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), at], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]
    assert all(out.strip() == str(SCHEMA_VERSION) for out, _ in results)


# -- writes that fail keep the record ---------------------------------------------------------
def test_locked_writer_keeps_the_record_in_a_side_file_then_import(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENJOULE_BUSY_TIMEOUT_S", "0.3")
    path = tmp_path / "r.db"
    store = ResultStore(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    rec = record(batch=3)
    with pytest.raises(StoreError) as info:
        store.add(rec)
    message = str(info.value)
    side = path.with_name("r.db.unsaved.jsonl")
    assert "\n" not in message and str(side) in message and "locked" in message
    holder.execute("ROLLBACK")
    holder.close()
    saved = [json.loads(line) for line in side.read_text().splitlines()]
    assert [s["spec_hash"] for s in saved] == [rec.spec_hash] and saved[0]["metrics"] == {"energy_j": 4.5}
    added, damaged = store.import_unsaved(side)
    assert (added, damaged) == (1, [])
    assert store.import_unsaved(side) == (0, [])  # importing twice adds nothing twice
    assert store.latest(rec.spec_hash).metrics == {"energy_j": 4.5}
    store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_read_only_file_reads_and_keeps_writes_in_a_side_file(tmp_path):
    path = tmp_path / "ro.db"
    with ResultStore(path) as s:
        s.add(record())
    path.chmod(0o444)
    with ResultStore(path) as s:
        assert s.count() == 1
        with pytest.raises(StoreError, match="unsaved.jsonl"):
            s.add(record(batch=2))


def test_malformed_page_keeps_the_record(tmp_path):
    path = tmp_path / "bad.db"
    with ResultStore(path) as s:
        for b in range(1, 40):
            s.add(record(batch=b))
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page: 5 * page] = b"\xff" * (3 * page)  # damage table/index pages, keep the header
    path.write_bytes(bytes(data))
    rec = record(batch=77)
    try:
        store = ResultStore(path)
    except StoreError as exc:  # damaged where opening already notices: one line, nothing to lose
        assert "\n" not in str(exc)
        return
    with pytest.raises(StoreError, match="unsaved.jsonl"):
        store.add(rec)
    store.close()
    side = path.with_name("bad.db.unsaved.jsonl")
    assert json.loads(side.read_text().splitlines()[0])["spec_hash"] == rec.spec_hash


# -- damaged rows -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["{not json", "null", "[1, 2]", b"\xff\xfe bad utf-8"])
def test_corrupt_row_is_skipped_with_its_id(tmp_path, damage, caplog):
    path = tmp_path / "r.db"
    with ResultStore(path) as s:
        ids = [s.add(record(batch=b)) for b in (1, 2, 3)]
    conn = sqlite3.connect(path)
    conn.execute("UPDATE cells SET metrics_json = ? WHERE id = ?", (damage, ids[1]))
    conn.commit()
    conn.close()
    with ResultStore(path, create=False) as s, caplog.at_level("WARNING", logger="tokenjoule.store"):
        assert [r.id for r in s.find(status=None)] == [ids[0], ids[2]]
        assert s.corrupt_ids == [ids[1]]
        assert s.get(ids[1]) is None and s.get(ids[0]) is not None
        assert len(s.to_dataframe()) == 2
    assert f"ids {ids[1]}" in caplog.text


def test_integers_beyond_sqlite_range_are_not_errors(tmp_path):
    with ResultStore(tmp_path / "r.db") as s:
        assert s.get(10**30) is None and s.get(-1) is None
        assert s.find(status=None, batch_size=10**24) == []


# -- kill -9 then backup ----------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import os, signal, sys
    from tokenjoule.spec import RunSpec
    from tokenjoule.store.db import CellRecord, ResultStore
    s = ResultStore(sys.argv[1])
    s._conn.execute("PRAGMA wal_autocheckpoint=0")  # keep every row in the -wal file
    for b in range(1, 21):
        spec = RunSpec(model="tiny", batch_size=b, input_tokens=8, output_tokens=4)
        s.add(CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), metrics={"energy_j": b}))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_backup_after_kill9_carries_the_rows_in_the_wal(tmp_path):
    path = tmp_path / "live.db"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path)], timeout=60)
    assert proc.returncode == -9
    assert Path(str(path) + "-wal").stat().st_size > 0  # the rows are in the -wal file only
    copy = tmp_path / "copy.db"
    with ResultStore(path, create=False) as s:
        assert s.backup(copy) == 20
        with pytest.raises(StoreError, match="already exists"):
            s.backup(copy)
    assert not Path(str(copy) + "-wal").exists()
    conn = sqlite3.connect(copy)
    assert conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 20
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_cli_backup_and_bad_paths_are_one_line(tmp_path):
    from tokenjoule.cli.main import main

    db = tmp_path / "r.db"
    with ResultStore(db) as s:
        s.add(record())
    assert main(["results", "backup", str(tmp_path / "b.db"), "--db", str(db)]) == 0
    assert main(["results", "export", "-o", str(tmp_path / "c.db"), "--db", str(db)]) == 0
    with ResultStore(tmp_path / "c.db", create=False) as s:
        assert s.count() == 1
    for args in (["results", "--db", str(tmp_path)], ["results", "--db", ""],
                 ["results", "show", str(10**30), "--db", str(db)],
                 ["results", "export", "-o", str(tmp_path), "--db", str(db)],
                 ["results", "export", "-o", str(db / "x.csv"), "--db", str(db)]):
        assert main(args) == 2, args


def test_csv_export_escapes_formulas(tmp_path):
    pd = pytest.importorskip("pandas")
    from tokenjoule.store.export import export_results

    with ResultStore(tmp_path / "r.db") as s:
        for name in ("=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "plain"):
            s.add(record(model=name))
        export_results(s, tmp_path / "out.csv")
    models = pd.read_csv(tmp_path / "out.csv")["model"].tolist()
    assert models == ["'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)", "plain"]


def test_measure_into_a_locked_store_keeps_the_measurement(tmp_path, monkeypatch, capsys):
    """The real CLI, a real (tiny, CPU) measurement; the write lock is held by another
    connection the whole time: one line naming the side file, and `results import` restores it."""
    from tokenjoule.cli.main import main

    monkeypatch.setenv("TOKENJOULE_BUSY_TIMEOUT_S", "0.5")
    db = tmp_path / "r.db"
    ResultStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        rc = main(["measure", "--model", "tiny", "--device", "cpu", "--batch", "1", "--input", "8", "--output", "2",
                   "--repeats", "1", "--warmup", "0", "--min-window-s", "0", "--no-split-prefill", "--idle-s", "0",
                   "--meter", "simulated", "--db", str(db)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    side = db.with_name("r.db.unsaved.jsonl")
    assert rc == 2 and str(side) in err and "Traceback" not in err
    assert main(["results", "import", str(side), "--db", str(db)]) == 0
    with ResultStore(db, create=False) as s:
        [rec] = s.find(status="ok")
        assert rec.metrics["energy_j"] > 0 and rec.spec["input_tokens"] == 8


def test_in_memory_store_writes_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ResultStore(":memory:") as s:
        s.add(record())
        assert s.count() == 1 and s.claim("k")
    assert list(tmp_path.iterdir()) == []
