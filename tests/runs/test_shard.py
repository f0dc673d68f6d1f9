"""`--shard i/N`: the shards of a grid partition it exactly, by spec hash; bad input is one line."""

from __future__ import annotations

from collections import Counter

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.sweep_fakes import LimitEngine
from tokenjoule.errors import TokenjouleError
from tokenjoule.runs.shard import Shard, parse_shard, shard_of
from tokenjoule.runs.sweep import run_sweep
from tokenjoule.runs.sweep_config import parse_config
from tokenjoule.store.db import ResultStore

BASE = "device: cpu\nwarmup: 1\nrepeats: 1\nmin_window_s: 0\nsplit_prefill: false\nidle_s: 0\n"
GRID = BASE + ("model: [tiny, smollm2-135m]\ninput_tokens: [8, 16, 32, 64]\noutput_tokens: [4, 8]\n"
               "cells:\n  - {batch: [1, 2, 4]}\n  - {batch: max}\n")


def sweep(cfg, store, **kw):
    clock = FakeClock()
    return run_sweep(cfg, store, meter=ScriptedMeter(clock), engine_factory=lambda name: LimitEngine(clock=clock),
                     clock=clock, sleep=clock.advance, progress=False, **kw)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_grid_exactly(count):
    plans = parse_config(GRID).expand()
    keys = [p.key for p in plans]
    assert len(set(keys)) == len(keys) == 64  # the "max" cells are in it, by their unresolved hash
    parts = [{p.key for p in Shard(i, count).select(plans)} for i in range(1, count + 1)]
    assert set().union(*parts) == set(keys)  # union: the whole grid
    assert sum(len(part) for part in parts) == len(keys)  # pairwise disjoint
    if count > 1:
        assert all(parts)  # 64 cells over <= 7 shards: none is empty (a spread, not all in one)


def test_zero_based_and_one_based_indices_name_the_same_shards():
    plans = parse_config(GRID).expand()
    assert [p.key for p in Shard(0, 4).select(plans)] == [p.key for p in Shard(4, 4).select(plans)]
    assert {p.key for i in range(4) for p in Shard(i, 4).select(plans)} == {p.key for p in plans}


def test_the_shard_depends_on_the_cell_only():
    plans = parse_config(GRID).expand()
    smaller = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16]\noutput_tokens: [4, 8]\nbatch: [1, 2]\n").expand()
    by_key = {p.key: shard_of(p.key, 5) for p in plans}
    assert all(by_key[p.key] == shard_of(p.key, 5) for p in smaller if p.key in by_key)
    assert any(p.key in by_key for p in smaller)


@pytest.mark.parametrize("text", ["", "1", "3/2", "-1/2", "a/b", "1/0", "1/2/3", "1.5/2"])
def test_bad_shard_is_one_line(text):
    with pytest.raises(TokenjouleError) as err:
        parse_shard(text)
    assert "--shard" in str(err.value) and "\n" not in str(err.value)


def test_sweeps_of_every_shard_measure_each_cell_once(tmp_path):
    cfg = parse_config(BASE + "model: tiny\ninput_tokens: [8, 16, 32]\noutput_tokens: [4, 8]\nbatch: [1, 2]\n")
    done: Counter = Counter()
    for i in (1, 2, 3):
        with ResultStore(tmp_path / f"shard{i}.db") as store:
            summary = sweep(cfg, store, shard=parse_shard(f"{i}/3"))
            assert summary.total == summary.done == len(Shard(i, 3).select(cfg.expand()))
            done.update(r.spec_hash for r in store.all())
    assert done == Counter({p.key: 1 for p in cfg.expand()})


def test_sweep_cli_dry_run_plans_only_the_shard(tmp_path, capsys):
    from tokenjoule.cli.main import main

    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(GRID)
    counts = []
    for i in (1, 2):
        assert main(["sweep", str(cfg_path), "--dry-run", "--shard", f"{i}/2", "--db", str(tmp_path / "x.db")]) == 0
        out = capsys.readouterr().out
        counts.append(int(out.split("sweep plan: ")[1].split(" cells")[0]))
    assert counts == [len(Shard(i, 2).select(parse_config(GRID).expand())) for i in (1, 2)]
    assert sum(counts) == 64
    assert main(["sweep", str(cfg_path), "--dry-run", "--shard", "3/2"]) == 2
    assert "--shard" in capsys.readouterr().err
