"""The dry run of a huge grid: a summary in seconds and bounded memory, never a row per cell;
invalid values are still errors naming their line; stored cells of the grid are counted."""

from __future__ import annotations

from fuzz.conftest import run_cli
from tokenjoule.runs.plan_summary import summarize_plan
from tokenjoule.runs.sweep_config import parse_config
from tokenjoule.spec import RunSpec
from tokenjoule.store.db import CellRecord, ResultStore


def _axis(n: int, start: int = 1) -> str:
    return "[" + ", ".join(str(i) for i in range(start, start + n)) + "]"


MILLION = (f"model: tiny\ndevice: cpu\ninput_tokens: {_axis(100, 8)}\noutput_tokens: {_axis(100)}\n"
           f"batch: {_axis(10)}\nseed: {_axis(10, 0)}\n")


def test_a_million_cell_dry_run_is_a_summary(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(MILLION)
    code, out, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "none.db")], limit_s=60)
    assert code == 0, err
    assert "1,000,000 cells" in out and len(out.splitlines()) < 60  # no row per cell
    assert not (tmp_path / "none.db").exists()


def test_summary_counts_stored_cells_and_validates_every_value(tmp_path):
    config = parse_config(MILLION, "grid.yaml")
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        for i, o in ((8, 1), (9, 2), (9, 2)):  # the second (9, 2) is the same cell again
            spec = RunSpec(model="tiny", device="cpu", input_tokens=i, output_tokens=o, batch_size=3, seed=4)
            store.add(CellRecord(spec=spec.canonical(), spec_hash=spec.spec_hash(), metrics={"energy_j": 1.0}))
        outside = RunSpec(model="tiny", device="cpu", input_tokens=5000, output_tokens=1, batch_size=3)
        store.add(CellRecord(spec=outside.canonical(), spec_hash=outside.spec_hash(), metrics={"energy_j": 1.0}))
        summary = summarize_plan(config, store)
    assert summary.cells == 1_000_000 and summary.already_measured == 2
    assert summary.estimated_s > 0 and summary.sampled > 0

    bad = MILLION.replace("input_tokens: [8,", "input_tokens: [9000,")  # beyond tiny's 4096-token context
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    code, _, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "none.db")], limit_s=60)
    assert code == 2 and "bad.yaml:3" in err and "context" in err
