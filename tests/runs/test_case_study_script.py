"""The case-study session (tokenjoule.runs.case_study, run by benchmarks/case_study.py): its
planning and arithmetic, and one whole session on the CPU with a scripted engine and meter
(bins -> replays -> Table-4 view -> resume)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tokenjoule.analysis.estimate import binned_estimate
from tokenjoule.runs import case_study as session
from tokenjoule.energy import SimulatedMeter
from tokenjoule.engines.base import GenerationResult
from tokenjoule.store.db import CellRecord, ResultStore
from tokenjoule.workloads import Bins, bin_workload
from tokenjoule.workloads.traces import resolve_workload

from fakes.clock_meter import FakeClock
from fakes.fake_engine import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("case_study_script", ROOT / "benchmarks/case_study.py")
cs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cs)

BINS = Bins((64, 128), (64,))


class ReplayFakeEngine(FakeEngine):
    """FakeEngine plus `generate_requests`, costed as a padded static batch."""

    capabilities = FakeEngine.capabilities | {"generate_requests"}

    def generate_requests(self, lengths, seed: int = 0) -> GenerationResult:
        rows, longest_in, longest_out = len(lengths), max(a for a, _ in lengths), max(b for _, b in lengths)
        duration = self.prefill_s_per_token * rows * longest_in + self.decode_s_per_step * longest_out
        self.clock.advance(duration)
        return GenerationResult([a for a, _ in lengths], [b for _, b in lengths], duration)


def test_bin_rows_are_the_union_most_requested_first():
    wls = session.load_workloads(["task:translation", "task:generation"], 1000)
    rows = session.bin_rows(wls, BINS)
    union = {}
    for wl in wls:
        for key, n in bin_workload(wl, BINS).counts.items():
            union[key] = union.get(key, 0) + n
    assert {(r["input_tokens"], r["output_tokens"]): r["n_requests"] for r in rows} == union
    assert [r["n_requests"] for r in rows] == sorted((r["n_requests"] for r in rows), reverse=True)
    first = {(rows[-1]["input_tokens"], rows[-1]["output_tokens"])}
    reordered = session.replay_first(rows, first)
    assert (reordered[0]["input_tokens"], reordered[0]["output_tokens"]) in first
    assert sorted(map(str, reordered)) == sorted(map(str, rows))
    d = session.sweep_dict("m", "vllm:graphs", rows, None, 0.0, 64)
    assert d["engine"] == "vllm" and d["mode"] == "graphs" and len(d["cells"]) == len(rows)


def test_replay_seconds_counts_whole_batches_for_hf_and_fractions_for_vllm(store):
    wl = resolve_workload("task:translation", n=100)
    binned = bin_workload(wl, BINS)
    for (i, o) in binned.counts:
        s = {"model": "m", "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
             "batch_size": 8, "input_tokens": i, "output_tokens": o}
        store.add(CellRecord(spec=s, spec_hash=f"{i}{o}", metrics={"energy_j": 5.0, "duration_s": 2.0}))
    est = binned_estimate(binned, store, model="m", engine="hf", mode="eager")
    assert session.replay_seconds(est, "hf") == pytest.approx(sum(math.ceil(n / 8) * 2.0 for n in binned.counts.values()))
    assert session.replay_seconds(est, "vllm") == pytest.approx(sum(n / 8 * 2.0 for n in binned.counts.values()))


def test_budget_on_a_scripted_clock():
    clock = FakeClock()
    b = session.Budget(1.0, clock)
    assert b.fits(60) and not b.fits(61)
    clock.advance(45)
    assert b.left_s == pytest.approx(15) and not b.fits(16)
    clock.advance(100)
    assert b.left_s == 0


def test_whole_session_on_cpu_with_a_scripted_engine(tmp_path, capsys):
    clock = FakeClock()
    meter = SimulatedMeter(power_w=200.0, idle_power_w=None, clock=clock)
    argv = ["--out", str(tmp_path), "--model", "tiny", "--workload", "task:translation", "--replay-trace",
            "task:translation", "--replay-n", "60", "--input-bins", "64,128", "--output-bins", "64",
            "--idle-s", "0", "--max-batch-cap", "16", "--budget-minutes", "30", "--protocol", "sweep"]
    factory = lambda name: ReplayFakeEngine(clock=clock, prefill_s_per_token=1e-3, decode_s_per_step=0.02)  # noqa: E731
    assert cs.main(argv, engine_factory=factory, meter=meter) == 0
    summary = json.loads((tmp_path / "case_study.json").read_text())
    assert summary["phases"]["replay hf:eager"]["status"] == "ok"
    assert summary["phases"]["replay vllm:graphs"]["status"] == "ok"
    rows = summary["study"]["rows"]
    assert all(r["total_energy_j"] for r in rows) and len(rows) == 2
    assert summary["study"]["savings"]["task:translation"] is not None
    with ResultStore(tmp_path / "case_study.db") as store:
        replays = store.find(kind="replay")
        n_cells = len(store.find(kind="offline"))
    assert len(replays) == 2 and n_cells == 2 * len(bin_workload(resolve_workload("task:translation"), BINS).counts)
    assert "study complete" in capsys.readouterr().out
    # A second session resumes: nothing is measured again.
    assert cs.main(argv, engine_factory=factory, meter=meter) == 0
    with ResultStore(tmp_path / "case_study.db") as store:
        assert len(store.find(kind="replay")) == 2 and len(store.find(kind="offline")) == n_cells
    again = json.loads((tmp_path / "case_study.json").read_text())
    assert again["phases"]["replay hf:eager"]["status"] == "already stored"


def test_fast_protocol_measures_the_tables_with_bin_table(tmp_path, capsys):
    clock = FakeClock()
    meter = SimulatedMeter(power_w=200.0, idle_power_w=None, clock=clock)
    argv = ["--out", str(tmp_path), "--model", "tiny", "--workload", "task:translation", "--replay-trace",
            "task:translation", "--replay-n", "60", "--input-bins", "64,128", "--output-bins", "64",
            "--idle-s", "0", "--max-batch-cap", "16", "--budget-minutes", "600", "--device", "cpu"]
    factory = lambda name: ReplayFakeEngine(clock=clock, prefill_s_per_token=1e-3, decode_s_per_step=0.02)  # noqa: E731
    assert cs.main(argv, engine_factory=factory, meter=meter) == 0
    summary = json.loads((tmp_path / "case_study.json").read_text())
    assert summary["phases"]["replay hf:eager"]["status"] == "ok", summary["phases"]
    assert all(r["total_energy_j"] for r in summary["study"]["rows"])
    assert (tmp_path / "bin_table" / "bin_table_summary.json").is_file()
