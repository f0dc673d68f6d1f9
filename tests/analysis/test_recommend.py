"""`recommend` on a planted store: the known-best configuration, SLOs, GPU limits, refusals."""

from __future__ import annotations

import json
import math

import pytest

from fakes.planted_store import (BIN_BATCHES, MODEL, cost_model, offline_record, plant_store,
                                 write_planted_trace)
from tokenjoule.analysis.recommend import (RecommendationError, offline_slo_ms, recommend,
                                           recommend_trace)
from tokenjoule.store.db import ResultStore

# The planted trace's bins: 40 requests at (128, 64), 25 at (512, 64), 10 at (1024, 256).
COUNTS = {(128, 64): 40, (512, 64): 25, (1024, 256): 10}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    info = plant_store(root / "planted.db")
    trace = write_planted_trace(root / "planted.csv")
    store = ResultStore(info.path)
    yield info, trace, store
    store.close()


def _hand_total(engine, mode, decoding, tp, slo_tpot_ms=None, rounding="ceil") -> tuple[float, dict]:
    """Per bin, the least ceil(N/B) x E(B) (or N/B x E(B) under rounding "paper") over planted
    batch sizes, from the cost model."""
    total, policy = 0.0, {}
    for (i, o), n in COUNTS.items():
        options = []
        for b in BIN_BATCHES:
            c = cost_model(MODEL, engine, mode, decoding, b, i, o, tp)
            if slo_tpot_ms is not None and 1000 * c["decode_duration_s"] / (o - 1) > slo_tpot_ms:
                continue
            batches = math.ceil(n / b) if rounding == "ceil" else n / b
            options.append((batches * c["energy_j"], b))
        energy, b = min(options)
        total += energy
        policy[(i, o)] = b
    return total, policy


def test_trace_bins_as_planted(planted):
    _, trace, store = planted
    _, binned = recommend_trace(str(trace), store)
    assert binned.counts == COUNTS


@pytest.mark.parametrize("rounding", ["ceil", "paper"])
def test_picks_the_known_best_without_slos(planted, rounding):
    info, trace, store = planted
    rec, _ = recommend_trace(str(trace), store, rounding=rounding)
    best = rec.best
    cfg = best.config
    assert (cfg.engine, cfg.mode, cfg.decoding, cfg.gpus) == ("vllm", "graphs", "greedy", 1)
    assert best.config.kind == "offline"
    expected, policy = _hand_total("vllm", "graphs", "greedy", 1, rounding=rounding)
    assert best.total_energy_j == pytest.approx(expected, rel=1e-9)
    assert {(b.input_tokens, b.output_tokens): b.batch_size for b in best.bins} == policy
    base_total, _ = _hand_total("hf", "eager", "greedy", 1, rounding=rounding)
    assert rec.baseline.total_energy_j == pytest.approx(base_total, rel=1e-9)
    assert rec.savings_fraction == pytest.approx(1 - expected / base_total)
    assert rec.runner_up is not None and rec.runner_up.total_energy_j >= best.total_energy_j
    assert set(best.cell_ids) <= set(info.ids["bins"])


def test_tpot_slo_moves_to_smaller_batches_and_max_gpus_is_respected(planted):
    _, trace, store = planted
    # ceil: a partly filled batch costs a full one (under N/B the two-GPU batch 32 would win)
    rec, _ = recommend_trace(str(trace), store, slo_tpot_ms=10, rounding="ceil")
    # tp1 meets 10 ms only up to batch 8; two GPUs meet it at batch 32 but cost more per request
    assert (rec.best.config.engine, rec.best.config.mode, rec.best.config.gpus) == ("vllm", "graphs", 1)
    expected, policy = _hand_total("vllm", "graphs", "greedy", 1, slo_tpot_ms=10)
    assert rec.best.total_energy_j == pytest.approx(expected)
    assert {b.batch_size for b in rec.best.bins} == set(policy.values()) == {8}
    assert all(b.tpot_ms <= 10 for b in rec.best.bins)
    assert (rec.runner_up.config.engine, rec.runner_up.config.gpus) == ("vllm", 2)
    assert "cannot meet the SLOs" in rec.baseline_note
    limited, _ = recommend_trace(str(trace), store, slo_tpot_ms=10, max_gpus=1, rounding="ceil")
    assert all(c.config.gpus == 1 for c in limited.candidates)
    assert limited.runner_up.config.gpus == 1


def test_online_run_of_this_trace_competes_under_its_p90(planted):
    _, trace, store = planted
    rec, _ = recommend_trace(str(trace), store)
    online = [c for c in rec.candidates if c.config.kind == "online"]
    assert len(online) == 3  # planted with arrival.trace = "planted" = the file's stem
    fast = max(online, key=lambda c: c.total_energy_j or 0)
    assert fast.total_energy_j == pytest.approx(fast.bins[0].energy_j)
    strict, _ = recommend_trace(str(trace), store, slo_ttft_ms=70)
    # p90 TTFT of the planted runs: 1.6 x (30 + 8 x rate) ms -> only the 1 req/s run passes 70 ms
    feasible_online = [c for c in strict.candidates if c.config.kind == "online" and c.feasible]
    assert len(feasible_online) == 1


def test_refuses_when_slos_cannot_be_met(planted):
    _, trace, store = planted
    with pytest.raises(RecommendationError, match="no measured configuration .* meets TPOT <= 1 ms"):
        recommend_trace(str(trace), store, slo_tpot_ms=1)


def test_lists_cells_to_measure_when_bins_are_missing(tmp_path):
    with ResultStore(tmp_path / "partial.db") as store:
        store.add(offline_record(MODEL, "vllm", "graphs", "greedy", 8, 128, 64))
        with pytest.raises(RecommendationError) as err:
            recommend(COUNTS, store, model=MODEL, trace="t")
    missing = {(m["engine"], m["input_tokens"], m["output_tokens"]) for m in err.value.missing}
    assert missing == {("vllm", 512, 64), ("vllm", 1024, 256)}
    assert "in512 out64" in str(err.value)


def test_estimates_are_left_out_unless_asked(tmp_path):
    with ResultStore(tmp_path / "est.db") as store:
        for i, o in COUNTS:
            store.add(offline_record(MODEL, "hf", "eager", "greedy", 8, i, o, flags=("estimate",),
                                     method="estimate-cpu-time"))
        with pytest.raises(RecommendationError, match="measure"):
            recommend(COUNTS, store, model=MODEL)
        rec = recommend(COUNTS, store, model=MODEL, include_estimates=True)
    assert rec.best.estimate is True


def test_offline_slo_definition():
    ttft, tpot = offline_slo_ms({"ttft_s": 0.25, "decode_duration_s": 0.63}, 64)
    assert ttft == pytest.approx(250) and tpot == pytest.approx(10)
    assert offline_slo_ms({"ttft_s": 0.1}, 1) == (pytest.approx(100), 0.0)


def test_cli_json_and_exit_codes(planted, capsys):
    from tokenjoule.cli.main import main

    info, trace, _ = planted
    rc = main(["recommend", "--trace", str(trace), "--db", str(info.path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["best"]["config"]["engine"] == "vllm" and data["savings_fraction"] > 0
    assert data["slo"]["online_percentile"] == "p90"
    rc = main(["recommend", "--trace", str(trace), "--db", str(info.path), "--slo-tpot-ms", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: no measured configuration") and err.count("\n") == 1
    rc = main(["recommend", "--trace", str(trace), "--db", str(info.path), "--slo-tpot-ms", "1", "--json"])
    assert rc == 1 and "error" in json.loads(capsys.readouterr().out)
    rc = main(["recommend", "--trace", "no-such-trace", "--db", str(info.path)])
    assert rc == 2 and capsys.readouterr().err.startswith("error: ")


def test_cli_table_output(planted, capsys):
    from tokenjoule.cli.main import main

    info, trace, _ = planted
    rc = main(["recommend", "--trace", str(trace), "--db", str(info.path), "--slo-tpot-ms", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and "vllm/graphs greedy on 1 GPU" in out and "savings vs baseline" in out


def test_offline_records_without_batch_lengths_are_ignored(tmp_path):
    # compare-serving stores its offline half as an "offline" record with no batch lengths.
    from tokenjoule.store.db import CellRecord

    info = plant_store(tmp_path / "p.db")
    trace = write_planted_trace(tmp_path / "p.csv")
    with ResultStore(info.path) as store:
        before, _ = recommend_trace(str(trace), store)
        store.add(CellRecord(spec={"model": MODEL, "engine": "vllm", "mode": "graphs", "n_requests": 10},
                             spec_hash="compare-offline", kind="offline", metrics={"energy_j": 1.0}))
        after, _ = recommend_trace(str(trace), store)
    assert after.best.config == before.best.config
    assert after.best.total_energy_j == pytest.approx(before.best.total_energy_j)
