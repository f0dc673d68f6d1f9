"""The bracketing arithmetic of analysis/speculative.py on cells measured from a simulated
engine (runner + scripted meter + real SQLite store)."""

from __future__ import annotations

import json
import math

import pytest

from fakes.clock_meter import FakeClock, ScriptedMeter
from fakes.speculative_engine import SpeculativeSimEngine
from tokenjoule.analysis.speculative import (INTERPOLATED, MEASURED, analyse, break_even, brackets,
                                             tokens_per_step)
from tokenjoule.runs.offline import measure_cell
from tokenjoule.spec import DecodingSpec, RunSpec
from tokenjoule.store.db import ResultStore

POWER_W = 100.0
BATCHES = (1, 8, 32, 64, 128)


def _spec(decoding: DecodingSpec, batch: int) -> RunSpec:
    return RunSpec(model="tiny", batch_size=batch, input_tokens=64, output_tokens=60, warmup=0, repeats=1,
                   min_window_s=0.0, split_prefill=False, decoding=decoding)


GREEDY = DecodingSpec()
LOW = DecodingSpec(strategy="speculative", draft_model="tiny", lookahead_tokens=4)
HIGH = DecodingSpec(strategy="speculative", draft_model="self", lookahead_tokens=4)
HALF = DecodingSpec(strategy="speculative", draft_model="half", lookahead_tokens=4)


def _measure(store, engine, clock, decoding, batch):
    spec = _spec(decoding, batch)
    engine.load(spec)
    rec = measure_cell(spec, engine, ScriptedMeter(clock, power_w=POWER_W))
    rec.id = store.add(rec)
    return rec


@pytest.fixture()
def measured(tmp_path):
    clock = FakeClock()
    engine = SpeculativeSimEngine(clock)
    store = ResultStore(tmp_path / "spec.db")
    half = {}
    for b in BATCHES:
        for dec in (GREEDY, LOW, HIGH):
            _measure(store, engine, clock, dec, b)
    # a third acceptance, measured in a second store so it is not a bracket: the check value
    other = ResultStore(tmp_path / "half.db")
    for b in BATCHES:
        half[b] = _measure(other, engine, clock, HALF, b)
    other.close()
    yield store, engine, half
    store.close()


def test_acceptance_reaches_the_record_and_brackets_pair_up(measured):
    store, _, _ = measured
    found = brackets(store.find())
    assert [b.batch_size for b in found] == list(BATCHES)
    for b in found:
        assert b.low.acceptance_rate == 0.0 and b.high.acceptance_rate == 1.0 and b.complete
        assert b.low.draft == "tiny" and b.high.draft == "self"
        assert b.baseline_cell_id is not None


def test_brackets_reproduce_their_measurements_and_interpolation_matches_the_simulator(measured):
    store, engine, half = measured
    for b in brackets(store.find()):
        for cell in (b.low, b.high):
            value, kind = b.energy_per_output_token_j(cell.acceptance_rate)
            assert kind == MEASURED and value == cell.energy_per_output_token_j
        # The simulator's step cost does not depend on acceptance, so S(r) is linear in r and the
        # interpolation must give the energy measured at r = 0.5 (an unseen cell).
        value, kind = b.energy_per_output_token_j(0.5)
        assert kind == INTERPOLATED
        assert value == pytest.approx(half[b.batch_size].energy_per_output_token_j, rel=1e-9)


def test_energy_per_token_times_tokens_per_step_is_the_step_energy(measured):
    store, engine, _ = measured
    for b in brackets(store.find()):
        spec = _spec(HIGH, b.batch_size)
        step_j = POWER_W * engine.step_s(spec) / b.batch_size  # per row, prefill aside
        prefill_j = POWER_W * engine.prefill_s_per_token * b.batch_size * 64 / (b.batch_size * 60)
        assert b.high.step_energy_j == pytest.approx(step_j + prefill_j * tokens_per_step(1.0, 4), rel=1e-9)


def test_break_even_batch_lies_between_the_measured_batches_where_the_sign_changes(measured):
    store, engine, _ = measured
    group = brackets(store.find())
    for a in (0.0, 0.5, 1.0):
        be = break_even(group, a)
        truth = [(b, engine.batch_duration_s(_spec(LOW if a == 0 else HIGH if a == 1 else HALF, b), 60)
                  / engine.batch_duration_s(_spec(GREEDY, b), 60)) for b in BATCHES]
        ratios = {r["batch_size"]: r["ratio"] for r in be.ratios}
        for b, ratio in truth:
            assert ratios[b] == pytest.approx(ratio, rel=1e-9)
        paying = [b for b, r in truth if r < 1]
        if not paying:
            assert be.status == "never pays at measured batches" and be.batch_size is None
        elif len(paying) == len(BATCHES):
            assert be.status == "pays at every measured batch"
        else:
            first_loss = min(b for b, r in truth if r >= 1)
            last_win = max(b for b in paying if b < first_loss)
            assert be.status == "stops paying" and be.kind == INTERPOLATED
            assert last_win <= be.batch_size <= first_loss
    # more acceptance never makes speculation stop paying earlier
    at = {a: break_even(group, a) for a in (0.5, 1.0)}
    assert (at[1.0].batch_size or math.inf) >= (at[0.5].batch_size or 0)


def test_analyse_labels_every_value_and_is_json(measured):
    store, _, _ = measured
    data = json.loads(json.dumps(analyse(store.find(), reference_acceptance=0.6)))
    assert data["reference_acceptance"][0]["acceptance_rate"] == 0.6
    llama = next(r for r in data["reference_acceptance"] if r["pair"].startswith("Llama-3.2-1B"))
    assert llama["acceptance_rate"] is None and "placeholder" in llama["source"]
    (setup,) = data["setups"]
    for row in setup["batches"]:
        kinds = {p["acceptance_rate"]: p["kind"] for p in row["curve"]}
        assert kinds[0.0] == MEASURED and kinds[1.0] == MEASURED and kinds[0.6] == INTERPOLATED
        assert all(k == INTERPOLATED for a, k in kinds.items() if a not in (0.0, 1.0))


def test_a_single_acceptance_is_not_interpolated(tmp_path):
    clock = FakeClock()
    engine = SpeculativeSimEngine(clock)
    with ResultStore(tmp_path / "low.db") as store:
        _measure(store, engine, clock, GREEDY, 1)
        _measure(store, engine, clock, LOW, 1)
        (b,) = brackets(store.find())
    assert b.high is None and not b.complete
    assert b.energy_per_output_token_j(0.5) is None
    assert b.energy_per_output_token_j(0.0)[1] == MEASURED


def test_cli_prints_json_tables_and_one_line_errors(measured, tmp_path, capsys, monkeypatch):
    from tokenjoule.cli.main import main

    monkeypatch.setenv("COLUMNS", "250")
    store, _, _ = measured
    db = str(store.path) if hasattr(store, "path") else str(tmp_path / "spec.db")
    assert main(["speculative", "--db", db, "--json", "--acceptance", "0.6"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["setups"][0]["batches"][0]["low"]["draft"] == "tiny"
    assert main(["speculative", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "interpolated, not measured" in out and "placeholder" in out
    assert main(["speculative", "--db", db, "--acceptance", "1.5"]) == 2
    assert "--acceptance must be between 0 and 1" in capsys.readouterr().err


def test_ngram_and_draft_model_cells_bracket_only_within_their_family(tmp_path):
    clock = FakeClock()
    engine = SpeculativeSimEngine(clock)
    with ResultStore(tmp_path / "f.db") as store:
        for dec in (GREEDY, LOW, HIGH):
            _measure(store, engine, clock, dec, 8)
        ngram = {"strategy": "speculative", "ngram": True, "lookahead_tokens": 4}
        for rate, extra in ((0.1, {}), (0.9, {"repeat_prompt": True})):
            rec = _measure(store, engine, clock, LOW, 8)
            rec.spec["decoding"] = ngram | extra
            rec.spec_hash = f"ngram-{rate}"
            rec.metrics["acceptance_rate"] = rate
            store.add(rec)
        found = {b.family: b for b in brackets(store.find())}
    assert set(found) == {"ngram", "draft-model"}
    assert (found["ngram"].low.acceptance_rate, found["ngram"].high.acceptance_rate) == (0.1, 0.9)
    assert found["ngram"].high.repeat_prompt and not found["ngram"].low.repeat_prompt
    assert (found["draft-model"].low.draft, found["draft-model"].high.draft) == ("tiny", "self")


def test_the_baseline_is_the_greedy_cell_of_the_brackets_protocol_not_the_latest(tmp_path):
    # a later sweep (e.g. paper-lengths --quick) measures the same greedy shape with fewer
    # warm-ups and repeats; the brackets keep comparing with the greedy cell run like them
    clock = FakeClock()
    engine = SpeculativeSimEngine(clock)
    with ResultStore(tmp_path / "p.db") as store:
        same = _measure(store, engine, clock, GREEDY, 1)
        _measure(store, engine, clock, LOW, 1)
        _measure(store, engine, clock, HIGH, 1)
        quick = _spec(GREEDY, 1).model_copy(update={"warmup": 1, "repeats": 2})
        engine.load(quick)
        later = measure_cell(quick, engine, ScriptedMeter(clock, power_w=2 * POWER_W))
        later.id = store.add(later)
        (b,) = brackets(store.find())
        assert b.baseline_cell_id == same.id != later.id
