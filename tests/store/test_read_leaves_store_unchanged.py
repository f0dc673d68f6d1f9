"""Reading a store never rewrites it: the committed evidence store (schema version 1) stays
byte-identical through the read commands, and is read as it is (no upgrade, no WAL switch)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from tokenjoule.cli.main import main
from tokenjoule.store.db import SCHEMA_VERSION, ResultStore

EVIDENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "h100_evidence.db"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def evidence_copy(tmp_path):
    dest = tmp_path / "evidence.db"
    shutil.copyfile(EVIDENCE, dest)
    return dest


def test_committed_evidence_store_is_an_older_schema():
    # The committed file is what the H100 run wrote; it must stay that way in the repository.
    assert _user_version(EVIDENCE) < SCHEMA_VERSION


@pytest.mark.parametrize("argv", [
    ["results", "--db", "{db}"],
    ["results", "--db", "{db}", "export", "-o", "{tmp}/cells.csv"],
    ["estimate", "--db", "{db}", "--trace", "azure-code-2023", "--model", "llama-3.1-8b"],
    ["recommend", "--db", "{db}", "--trace", "azure-code-2023", "--model", "llama-3.1-8b"],
])
def test_read_commands_leave_the_store_byte_identical(evidence_copy, tmp_path, capsys, argv):
    before = _digest(evidence_copy)
    rc = main([a.format(db=evidence_copy, tmp=tmp_path) for a in argv])
    capsys.readouterr()
    assert rc in (0, 1)  # 1: an estimate over bins the store does not all cover (incomplete)
    assert _digest(evidence_copy) == before
    assert not Path(str(evidence_copy) + "-wal").exists()


def test_read_only_open_reads_an_older_store_without_upgrading(evidence_copy):
    with ResultStore(evidence_copy, create=False, read_only=True) as store:
        assert store.schema_version < SCHEMA_VERSION
        assert store.count() > 0
        assert store.latest_bins() is None  # the table is absent in the older schema
        assert store.claims() == []
    assert _user_version(evidence_copy) < SCHEMA_VERSION
    with ResultStore(evidence_copy) as store:  # opening to write upgrades it
        assert store.schema_version == SCHEMA_VERSION
