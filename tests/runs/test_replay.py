"""Direct replay (`tokenjoule validate`): planning arithmetic with a scripted engine and meter,
and the real path with transformers on the tiny preset on the CPU."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from tokenjoule.energy import SimulatedMeter
from tokenjoule.engines.base import GenerationResult
from tokenjoule.errors import TokenjouleError
from tokenjoule.runs.replay import ReplayConfig, draw_sample, expected_batches, plan_batches, prepare, run_replay
from tokenjoule.store.db import CellRecord
from tokenjoule.workloads import Bins, Request, Workload, bin_workload

from fakes.clock_meter import FakeClock

BINS = Bins((16, 32), (4, 8))
POWER_W = 300.0


def fake_duration_s(lengths) -> float:
    """Static batching cost: every row pays the longest input and the longest output."""
    rows, longest_in, longest_out = len(lengths), max(a for a, _ in lengths), max(b for _, b in lengths)
    return 1e-3 * rows * longest_in + 0.05 * longest_out


class ScriptedEngine:
    name = "hf"
    capabilities = frozenset({"generate_requests"})

    def __init__(self, clock: FakeClock):
        self.clock, self.calls = clock, []

    def load(self, spec) -> None:
        self.spec = spec

    def generate_requests(self, lengths, seed: int = 0) -> GenerationResult:
        self.calls.append(tuple(lengths))
        self.clock.advance(fake_duration_s(lengths))
        rows = len(lengths)
        return GenerationResult([a for a, _ in lengths], [b for _, b in lengths], fake_duration_s(lengths),
                                extra={"computed_input_tokens": rows * max(a for a, _ in lengths),
                                       "computed_output_tokens": rows * max(b for _, b in lengths)})

    def synchronize(self) -> None: ...

    def device_indices(self) -> list[int]:
        return [0]

    def provenance(self) -> dict:
        return {"engine": "scripted"}

    def close(self) -> None: ...


def plant_table(store, batch_sizes: dict[tuple[int, int], int], model: str = "m") -> None:
    """Cells whose E_batch is exactly what the scripted engine + meter give for a full batch at the edges."""
    for (i, o), b in batch_sizes.items():
        spec = {"model": model, "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
                "batch_size": b, "input_tokens": i, "output_tokens": o, "dtype": "auto"}
        energy = POWER_W * fake_duration_s([(i, o)] * b)
        store.add(CellRecord(spec=spec, spec_hash=f"{i}-{o}-{b}", kind="offline", metrics={"energy_j": energy},
                             provenance={"gpu_names": ["Simulated GPU"]}))


def write_trace(tmp_path, pairs) -> str:
    path = tmp_path / "trace.csv"
    path.write_text("input_tokens,output_tokens\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    return str(path)


SIZES = {(16, 4): 4, (16, 8): 2, (32, 4): 3, (32, 8): 2}


def run(store, trace, n, engine_name="hf"):
    clock = FakeClock()
    meter = SimulatedMeter(power_w=POWER_W, idle_power_w=None, clock=clock)
    engine = ScriptedEngine(clock)
    cfg = ReplayConfig(trace=trace, model="m", engine=engine_name, mode="eager" if engine_name == "hf" else "graphs",
                       n=n, bins=BINS, warmup=1)
    return run_replay(cfg, store, meter=meter, engine=engine), engine


def test_full_batches_at_bin_edges_match_the_estimate_exactly(store, tmp_path):
    pairs = [(16, 4)] * 8 + [(16, 8)] * 4 + [(32, 4)] * 6 + [(32, 8)] * 2
    plant_table(store, SIZES)
    result, engine = run(store, write_trace(tmp_path, pairs), n=len(pairs))
    assert result.measured_energy_j == pytest.approx(result.estimates_j["paper"])
    assert result.estimates_j["paper"] == pytest.approx(result.estimates_j["ceil"])
    assert all(abs(d) < 1e-9 for d in result.differences.values())
    assert len(engine.calls) == 1 + expected_batches(bin_workload(draw_sample(
        Workload("t", [Request(a, b) for a, b in pairs]), len(pairs)), BINS), SIZES)  # + 1 warm-up
    stored = store.get(result.record_id)
    assert stored.kind == "replay" and stored.metrics["energy_j"] == pytest.approx(result.measured_energy_j)
    assert store.find(kind="offline", model="m") and len(store.find(kind="offline", model="m")) == len(SIZES)


def test_partial_batches_and_padding_are_counted(store, tmp_path):
    # 5 requests in (16, 4) at batch 4: one full batch and one partial; lengths below the edges.
    pairs = [(10, 3), (16, 4), (12, 2), (9, 4), (16, 1)]
    plant_table(store, SIZES)
    result, engine = run(store, write_trace(tmp_path, pairs), n=5)
    measured = [c for c in engine.calls[1:]]
    assert [len(c) for c in measured] == [4, 1]
    assert result.tokens["useful_input_tokens"] == sum(a for a, _ in pairs)
    assert result.tokens["computed_input_tokens"] == 4 * 16 + 1 * 16
    assert result.tokens["computed_output_tokens"] == 4 * 4 + 1 * 1
    assert result.measured_energy_j == pytest.approx(sum(b["energy_j"] for b in result.batches))
    e_batch = POWER_W * fake_duration_s([(16, 4)] * 4)
    assert result.estimates_j["ceil"] == pytest.approx(2 * e_batch)
    assert result.estimates_j["paper"] == pytest.approx(5 / 4 * e_batch)
    # Real lengths below the edges and a partial batch: the replay costs less than 2 full batches.
    assert result.measured_energy_j < result.estimates_j["ceil"]
    assert result.per_bin[0]["batches"] == 2
    assert result.partial_batches == 1 and result.to_dict()["partial_batches"] == 1


def test_vllm_replay_is_one_call_with_exact_lengths(store, tmp_path):
    pairs = [(10, 3), (30, 8), (16, 4)]
    for (i, o), b in SIZES.items():
        spec = {"model": "m", "engine": "vllm", "mode": "graphs", "decoding": {"strategy": "greedy"},
                "batch_size": b, "input_tokens": i, "output_tokens": o}
        store.add(CellRecord(spec=spec, spec_hash=f"v{i}{o}", kind="offline", metrics={"energy_j": 10.0}))
    result, engine = run(store, write_trace(tmp_path, pairs), n=3, engine_name="vllm")
    assert len(engine.calls) == 2 and sorted(engine.calls[1]) == sorted(pairs)
    assert result.per_bin == []
    assert result.to_dict()["config"]["engine"] == "vllm"


def test_incomplete_table_is_refused_with_the_missing_bins(store, tmp_path):
    plant_table(store, {(16, 4): 4})
    cfg = ReplayConfig(trace=write_trace(tmp_path, [(16, 4), (30, 8)]), model="m", n=2, bins=BINS)
    with pytest.raises(TokenjouleError, match="in32/out8"):
        prepare(cfg, store)


def test_sample_is_seeded_and_without_replacement():
    wl = Workload("w", [Request(i + 1, 1) for i in range(100)])
    a, b = draw_sample(wl, 30, seed=5), draw_sample(wl, 30, seed=5)
    assert a.requests == b.requests and len({r.input_tokens for r in a.requests}) == 30
    assert draw_sample(wl, 30, seed=6).requests != a.requests
    with pytest.raises(TokenjouleError, match="100 requests"):
        draw_sample(wl, 101)
    plan = plan_batches(bin_workload(a, Bins((100,), (1,))), {(100, 1): 8}, "hf")
    assert [len(p.lengths) for p in plan] == [8, 8, 8, 6] and math.ceil(30 / 8) == len(plan)


def test_validate_cli_real_tiny_model_on_cpu(tmp_path):
    """Real transformers generation of the replay (the table's cells are planted: measuring them
    is the offline runner's job, tested elsewhere), through the CLI."""
    from tokenjoule.cli.main import app
    from tokenjoule.store.db import ResultStore

    db = tmp_path / "t.db"
    with ResultStore(db) as store:
        for i in (16, 32):
            spec = {"model": "tiny", "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
                    "batch_size": 4, "input_tokens": i, "output_tokens": 4, "dtype": "float32"}
            store.add(CellRecord(spec=spec, spec_hash=f"tiny{i}", kind="offline", metrics={"energy_j": 1.0}))
    trace = write_trace(tmp_path, [(12, 4), (16, 3), (20, 4), (31, 2), (8, 4), (40, 4)])
    out = CliRunner().invoke(app, ["validate", "--trace", trace, "--model", "tiny", "--n", "6", "--db", str(db),
                                   "--device", "cpu", "--dtype", "float32", "--meter", "estimate",
                                   "--input-bins", "16,32", "--output-bins", "4", "--warmup", "0", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["n_kept"] == 5 and data["n_dropped"] == 1  # 40 > 32: dropped, as the estimate drops it
    assert data["measured_energy_j"] > 0 and set(data["estimates_j"]) == {"paper", "ceil", "measured"}
    assert data["tokens"]["useful_input_tokens"] == 12 + 16 + 20 + 31 + 8
    assert data["tokens"]["computed_input_tokens"] >= data["tokens"]["useful_input_tokens"]
    assert sum(b["requests"] for b in data["batches"]) == 5
    # bin 16: (12,4), (16,3), (8,4) in one batch; bin 32: (20,4), (31,2): padded to the longest
    by_bin = {tuple(b["bin"]): b for b in data["batches"]}
    assert by_bin[(16, 4)]["computed_input_tokens"] == 3 * 16 and by_bin[(32, 4)]["computed_input_tokens"] == 2 * 31
    assert by_bin[(32, 4)]["computed_output_tokens"] == 2 * 4 and by_bin[(32, 4)]["useful_output_tokens"] == 6
    assert "estimate" in data["flags"]
    with ResultStore(db) as store:
        assert store.get(data["record_id"]).kind == "replay"


def test_fit_correction_explains_padding_and_partial_batches(store, tmp_path):
    """The scripted cost (0.3 B I + 15 O joules) is inside the fit's model family, so once the
    fit has enough cells, rescaling each bin to the batches actually run reproduces the replay
    exactly, while the plain rounding modes do not: the gap is lengths and partial batches."""
    plant_table(store, SIZES)
    plant_table(store, {(16, 4): 1, (32, 8): 1, (16, 8): 1})  # smaller batches: more distinct cells
    pairs = [(10, 3), (16, 4), (12, 2), (9, 4), (16, 1), (20, 8), (31, 5), (17, 7)]
    result, _ = run(store, write_trace(tmp_path, pairs), n=len(pairs))
    assert abs(result.differences["ceil"]) > 0.05
    assert result.fit_corrected_difference == pytest.approx(0.0, abs=1e-6)
    assert "LOO" in result.fit_note


def test_fit_correction_refused_with_too_few_cells(store, tmp_path):
    plant_table(store, SIZES)
    result, _ = run(store, write_trace(tmp_path, [(16, 4)] * 4), n=4)
    assert result.fit_corrected_j is None and "at least" in result.fit_note


def test_within_tables_samples_only_bins_every_named_table_measured(store, tmp_path):
    """A partly measured table is checked on the bins it covers, and two setups on the very same
    requests: the pool is the intersection of the tables' bins, and the result says so."""
    plant_table(store, {(16, 4): 4, (32, 4): 3})  # hf covers two bins
    for (i, o) in ((16, 4), (16, 8)):  # vllm covers (16, 4) and a bin hf lacks
        spec = {"model": "m", "engine": "vllm", "mode": "graphs", "decoding": {"strategy": "greedy"},
                "batch_size": 4, "input_tokens": i, "output_tokens": o}
        store.add(CellRecord(spec=spec, spec_hash=f"v{i}{o}", kind="offline", metrics={"energy_j": 10.0},
                             provenance={"gpu_names": ["Simulated GPU"]}))
    pairs = [(10, 3), (30, 2), (12, 7), (16, 4), (20, 8), (9, 1)]
    trace = write_trace(tmp_path, pairs)
    both = ReplayConfig(trace=trace, model="m", n=3, bins=BINS, within_tables=("hf:eager", "vllm:graphs"))
    sample, binned, est, _ = prepare(both, store)
    assert [(r.input_tokens, r.output_tokens) for r in sample.requests] == [(10, 3), (16, 4), (9, 1)]
    assert est.complete and binned.counts == {(16, 4): 3}
    within = sample.provenance["within_tables"]
    assert within["bins"] == [[16, 4]] and within["n_pool"] == 3 and within["share_of_trace"] == pytest.approx(0.5)
    with pytest.raises(TokenjouleError, match="3 requests in the bins of the named tables"):
        prepare(ReplayConfig(trace=trace, model="m", n=4, bins=BINS, within_tables=("hf:eager", "vllm:graphs")),
                store)
    hf_only = ReplayConfig(trace=trace, model="m", n=4, bins=BINS, within_tables=("hf:eager",))
    assert prepare(hf_only, store)[1].counts == {(16, 4): 3, (32, 4): 1}
    with pytest.raises(TokenjouleError, match="no request"):
        prepare(ReplayConfig(trace=trace, model="m", n=1, bins=BINS, within_tables=("hf:compile",)), store)


def test_within_tables_result_is_labelled_and_whole_trace_spec_unchanged(store, tmp_path):
    plant_table(store, {(16, 4): 4})
    pairs = [(10, 3), (30, 2), (16, 4)]
    clock = FakeClock()
    cfg = ReplayConfig(trace=write_trace(tmp_path, pairs), model="m", n=2, bins=BINS, within_tables=("hf:eager",))
    result = run_replay(cfg, store, meter=SimulatedMeter(power_w=POWER_W, idle_power_w=None, clock=clock),
                        engine=ScriptedEngine(clock))
    assert result.n_kept == 2 and result.to_dict()["within_tables"]["n_pool"] == 2
    assert any(n.startswith("conditional sample") and "2 of 3" not in n and "66.7%" in n for n in result.notes)
    assert store.get(result.record_id).spec["replay"]["within_tables"] == ["hf:eager"]
    # A whole-trace replay's spec has no within_tables key: its resume key is the one it always had.
    assert "within_tables" not in ReplayConfig(trace="t", model="m").to_dict()
    assert ReplayConfig(trace="t", model="m").hash() != cfg.hash()


class DyingEngine(ScriptedEngine):
    """Raises on its n-th generate call, as a replay killed mid-way would stop."""

    def __init__(self, clock, die_at: int):
        super().__init__(clock)
        self.die_at = die_at

    def generate_requests(self, lengths, seed: int = 0):
        if len(self.calls) + 1 == self.die_at:
            raise RuntimeError("killed")
        return super().generate_requests(lengths, seed)


def test_an_interrupted_replay_resumes_after_its_last_finished_batch(store, tmp_path):
    plant_table(store, SIZES)
    pairs = [(16, 4)] * 8 + [(32, 8)] * 4  # 2 + 2 batches
    cfg = ReplayConfig(trace=write_trace(tmp_path, pairs), model="m", n=len(pairs), bins=BINS, warmup=1)
    clock = FakeClock()
    meter = SimulatedMeter(power_w=POWER_W, idle_power_w=None, clock=clock)
    with pytest.raises(RuntimeError, match="killed"):
        run_replay(cfg, store, meter=meter, engine=DyingEngine(clock, die_at=4))  # warm-up + 2 batches, then dies
    partial = store.find(status="partial", kind="replay")
    assert partial and partial[-1].metrics == {"batches_done": 2, "batches_planned": 4}
    assert not store.find(status="ok", kind="replay")
    engine = ScriptedEngine(clock)
    result = run_replay(cfg, store, meter=meter, engine=engine)
    assert [len(c) for c in engine.calls] == [4, 2, 2]  # warm-up, then only the 2 batches not yet measured
    assert len(result.batches) == 4 and any(n.startswith("resumed: 2 of 4") for n in result.notes)
    whole, _ = run(store, write_trace(tmp_path, pairs), n=len(pairs))  # same requests, never interrupted
    assert result.measured_energy_j == pytest.approx(whole.measured_energy_j)


def test_a_later_replay_of_the_same_sample_keeps_the_first_ones_pool(store, tmp_path):
    """The tables grow between sessions; the other setup must still replay the same requests."""
    plant_table(store, {(16, 4): 4})
    pairs = [(10, 3), (30, 2), (16, 4), (12, 2)]
    trace = write_trace(tmp_path, pairs)
    first = ReplayConfig(trace=trace, model="m", n=2, bins=BINS, within_tables=("hf:eager",))
    clock = FakeClock()
    run_replay(first, store, meter=SimulatedMeter(power_w=POWER_W, idle_power_w=None, clock=clock),
               engine=ScriptedEngine(clock))
    plant_table(store, {(32, 4): 3})  # the table gains a bin that holds (30, 2)
    sample, binned, _, _ = prepare(first, store)
    assert set(binned.counts) == {(16, 4)}
    assert sample.provenance["within_tables"]["pool_from"] == "an earlier replay of this sample"
    fresh = ReplayConfig(trace=trace, model="m", n=2, seed=1, bins=BINS, within_tables=("hf:eager",))
    assert prepare(fresh, store)[0].provenance["within_tables"]["n_pool"] == 4  # another seed: a new pool


def test_validate_shows_a_finished_replay_instead_of_repeating_it(tmp_path):
    from tokenjoule.cli.main import app
    from tokenjoule.store.db import ResultStore

    db = tmp_path / "t.db"
    trace = write_trace(tmp_path, [(12, 4), (16, 3)])
    cfg = ReplayConfig(trace=trace, model="tiny", n=2, bins=Bins((16,), (4,)), device="cpu", dtype="float32")
    with ResultStore(db) as store:
        spec = cfg.record_spec()
        from tokenjoule.store.db import CellRecord

        rid = store.add(CellRecord.replay(spec, {"energy_j": 5.0, "n_kept": 2, "difference_paper": 0.04}, {},
                                          {"time_utc": "2026-12-03T12:00:00"}))
    args = ["validate", "--trace", trace, "--model", "tiny", "--n", "2", "--db", str(db), "--device", "cpu",
            "--dtype", "float32", "--input-bins", "16", "--output-bins", "4"]
    out = CliRunner().invoke(app, args + ["--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["already_done"] is True and doc["record_id"] == rid
    text = CliRunner().invoke(app, args)
    assert "already replayed: record" in text.stdout and "paper +4.0%" in text.stdout and "--again" in text.stdout


def test_progress_of_a_finished_replay_is_not_resumed_by_a_new_run(store, tmp_path):
    plant_table(store, SIZES)
    pairs = [(16, 4)] * 8
    trace = write_trace(tmp_path, pairs)
    first, _ = run(store, trace, n=len(pairs))
    assert store.find(status="partial", kind="replay")  # progress of its first batch
    again, engine = run(store, trace, n=len(pairs))  # validate --again: every batch measured anew
    assert [len(c) for c in engine.calls] == [4, 4, 4] and not any(n.startswith("resumed") for n in again.notes)


def test_validate_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    from tokenjoule.cli.main import app
    from tokenjoule.store.db import ResultStore

    db = tmp_path / "t.db"
    with ResultStore(db) as store:
        for (i, o), b in SIZES.items():
            spec = {"model": "m", "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
                    "batch_size": b, "input_tokens": i, "output_tokens": o}
            store.add(CellRecord(spec=spec, spec_hash=f"{i}-{o}", kind="offline",
                                 metrics={"energy_j": 10.0, "duration_s": 2.0}))
    trace = write_trace(tmp_path, [(16, 4)] * 5 + [(30, 8)])
    out = CliRunner().invoke(app, ["validate", "--trace", trace, "--model", "m", "--n", "6", "--db", str(db),
                                   "--input-bins", "16,32", "--output-bins", "4,8", "--dry-run", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [b["requests"] for b in doc["batches"]] == [4, 1, 1]  # (16,4) at batch 4: one full + one partial
    assert doc["predicted_replay_s"] == pytest.approx(3 * 2.0)  # hf: ceil(N/B) batches x the cell's time
    with ResultStore(db) as store:
        assert not store.find(status=None, kind="replay")
