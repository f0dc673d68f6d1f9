"""`tokenjoule results merge`: shard stores merge into the store one sweep would have made;
merging again adds nothing; a file that is not a store is refused with one line."""

from __future__ import annotations

import sqlite3
from collections import Counter

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.sweep_fakes import LimitEngine
from tokenjoule.cli.main import main
from tokenjoule.runs.shard import parse_shard
from tokenjoule.runs.sweep import run_sweep
from tokenjoule.runs.sweep_config import parse_config
from tokenjoule.store.db import ResultStore
from tokenjoule.store.merge import merge_stores

CONFIG = ("device: cpu\nwarmup: 1\nrepeats: 1\nmin_window_s: 0\nsplit_prefill: false\nidle_s: 0\n"
          "model: tiny\ninput_tokens: [8, 16, 32]\noutput_tokens: [4, 8]\ncells:\n  - {batch: [1, 2]}\n"
          "  - {batch: max}\n")


def sweep_into(path, shard=None):
    cfg = parse_config(CONFIG)
    clock = FakeClock()
    with ResultStore(path) as store:
        store.add_bins([0, 64], [0, 16], model="tiny", source="test")
        summary = run_sweep(cfg, store, meter=ScriptedMeter(clock), shard=shard, clock=clock, sleep=clock.advance,
                            engine_factory=lambda name: LimitEngine(clock=clock, limit_batch=4), progress=False)
    assert summary.failed == 0 and summary.done == summary.total
    return cfg


def table(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def cells(path):
    return Counter(table(path, "SELECT spec_hash, status, created_at, energy_j, spec_json, metrics_json FROM cells"))


def test_two_shard_stores_merge_into_one_store_and_twice_adds_nothing(tmp_path):
    a, b, out, whole = (tmp_path / n for n in ("a.db", "b.db", "out.db", "whole.db"))
    cfg = sweep_into(a, parse_shard("1/2"))
    sweep_into(b, parse_shard("2/2"))
    sweep_into(whole)

    result = merge_stores([a, b], out)
    assert result.cells_added == len(cells(a) + cells(b)) and result.cells_present == 0
    assert cells(out) == cells(a) + cells(b)  # every row of both, exactly once
    merged = Counter(h for h, s in table(out, "SELECT spec_hash, status FROM cells") if s == "ok")
    one_store = Counter(h for h, s in table(whole, "SELECT spec_hash, status FROM cells") if s == "ok")
    assert merged == one_store and len(merged) == len(cfg.expand())  # the cells one sweep stores
    # the largest-batch cache of the shards (the b=max cells) and the bins travel too
    assert {k for k, in table(out, "SELECT key FROM max_batch")} == {k for k, in table(whole, "SELECT key FROM max_batch")}
    assert table(out, "SELECT max_batch FROM max_batch") and all(n == 4 for n, in table(out, "SELECT max_batch FROM max_batch"))
    assert len(table(out, "SELECT * FROM sweep_bins")) == 2  # one per shard store (different times)

    before = (cells(out), table(out, "SELECT * FROM max_batch"), table(out, "SELECT * FROM sweep_bins"))
    again = merge_stores([a, b, a], out)
    assert again.cells_added == 0 and again.max_batch == 0 and again.bins == 0
    assert (cells(out), table(out, "SELECT * FROM max_batch"), table(out, "SELECT * FROM sweep_bins")) == before
    with ResultStore(out, create=False, read_only=True) as store:  # the merged store reads as a store
        assert store.count("ok") == len(cfg.expand())


def test_merge_cli_refuses_a_file_that_is_not_a_store(tmp_path, capsys):
    a = tmp_path / "a.db"
    sweep_into(a, parse_shard("1/3"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    text = tmp_path / "notes.db"
    text.write_text("not sqlite at all\n" * 100)
    out = tmp_path / "out.db"
    for bad in (other, text, tmp_path / "missing.db"):
        assert main(["results", "merge", str(a), str(bad), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and str(bad.name) in err and "\n" not in err
        assert not out.exists()  # refused before the output was created
    assert main(["results", "merge", str(a), "-o", str(out)]) == 0
    assert "cells added" in capsys.readouterr().err
    assert cells(out) == cells(a)
