"""Figures 2-5 from planted stores, full and partly measured: each drawn with the paper's axes
from whatever cells exist (its CSV rows linked to cell ids), or listing what is missing."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from fakes.planted_store import MODEL, offline_record
from tokenjoule.report import figures as F
from tokenjoule.report.data import cells_frame
from tokenjoule.store.db import ResultStore


def _speculative(engine: str, mode: str, b: int, draft: str, acceptance: float):
    rec = offline_record(MODEL, engine, mode, "speculative", b, 512, 64)
    rec.spec["decoding"]["draft_model"] = draft
    rec.spec_hash = hashlib.sha256(json.dumps(rec.spec, sort_keys=True).encode()).hexdigest()[:16]
    rec.metrics["acceptance_rate"] = acceptance
    return rec


def _store(tmp_path, records):
    store = ResultStore(tmp_path / "p.db")
    ids = [store.add(r) for r in records]
    return store, ids


def _csv(sec):
    assert sec.drawn, [m.label() for m in sec.missing] or sec.unavailable
    return pd.read_csv(sec.csv_path)


def test_fig2_draws_a_partly_measured_length_sweep_and_names_the_rest(tmp_path):
    recs = [offline_record(MODEL, "hf", "eager", "greedy", b, i, 64) for b in (1, 8) for i in (2, 8, 32, 128, 512)]
    store, ids = _store(tmp_path, recs)
    sec = F.fig2_lengths(cells_frame(store), tmp_path / "out", MODEL)
    data = _csv(sec)
    assert set(data["cell_id"]) == set(ids) == set(sec.cell_ids)
    assert set(data["sweep"]) == {"input"}
    assert {"prefill_energy_j", "decode_energy_j"} <= set(data.columns)  # prefill and decode apart
    assert any("output-length sweep is missing" in n for n in sec.notes)
    store.close()


def test_fig2_with_no_sweep_lists_the_paper_grid(tmp_path):
    store, _ = _store(tmp_path, [offline_record(MODEL, "hf", "eager", "greedy", 1, 512, 64)])
    sec = F.fig2_lengths(cells_frame(store), tmp_path / "out", MODEL)
    assert not sec.drawn and len(sec.missing) > 0
    store.close()


def test_fig3_draws_the_speculative_brackets_with_their_baselines(tmp_path):
    recs = [offline_record(MODEL, "hf", "eager", d, 1, 512, 64) for d in ("greedy", "beam")]
    for b in (1, 8, 64, 128):
        recs.append(offline_record(MODEL, "vllm", "graphs", "greedy", b, 512, 64))
        recs.append(_speculative("vllm", "graphs", b, "llama-3.2-1b", 0.0))
        recs.append(_speculative("vllm", "graphs", b, "self", 0.98))
    store, ids = _store(tmp_path, recs)
    sec = F.fig3_decoding(cells_frame(store), tmp_path / "out", MODEL)
    data = _csv(sec)
    assert set(data["cell_id"]) == set(ids)
    series = set(data["series"])
    assert {"speculative vllm/graphs, acceptance ~0", "speculative vllm/graphs, acceptance ~1",
            "greedy vllm/graphs", "greedy hf/eager", "beam hf/eager"} <= series
    spec_rows = data[data["decoding"] == "speculative"]
    assert set(spec_rows["acceptance_rate"]) == {0.0, 0.98}
    assert any("acceptance" in n for n in sec.notes)
    store.close()


def test_fig3_with_one_strategy_lists_missing(tmp_path):
    store, _ = _store(tmp_path, [offline_record(MODEL, "hf", "eager", "greedy", 1, 512, 64)])
    sec = F.fig3_decoding(cells_frame(store), tmp_path / "out", MODEL)
    assert not sec.drawn and any(m.decoding == "speculative" for m in sec.missing)
    store.close()


@pytest.mark.parametrize("with_provenance", [True, False])
def test_fig4_shows_active_and_total_parameters(tmp_path, with_provenance):
    recs = [offline_record(m, "hf", "eager", "greedy", b, 512, 64) for m in ("olmo-1b", "olmoe-1b-7b") for b in (1, 8)]
    if not with_provenance:  # counts then come from the preset architectures
        for r in recs:
            r.provenance.pop("model_params"), r.provenance.pop("model_active_params")
    store, ids = _store(tmp_path, recs)
    sec = F.fig4_moe(cells_frame(store), tmp_path / "out", MODEL, store)
    data = _csv(sec)
    assert set(data["cell_id"]) == set(ids)
    moe = data[data["model"] == "olmoe-1b-7b"].iloc[0]
    dense = data[data["model"] == "olmo-1b"].iloc[0]
    assert bool(moe["moe"]) and not bool(dense["moe"])
    assert moe["model_active_params"] < 0.5 * moe["model_params"]
    assert dense["model_active_params"] == dense["model_params"]
    store.close()


def test_fig4_with_dense_models_only_lists_the_moe_cells(tmp_path):
    store, _ = _store(tmp_path, [offline_record("olmo-1b", "hf", "eager", "greedy", 1, 512, 64)])
    sec = F.fig4_moe(cells_frame(store), tmp_path / "out", MODEL, store)
    assert not sec.drawn and {m.model for m in sec.missing} >= {"olmoe-1b-7b", "olmo-7b"}
    store.close()


def test_fig5_draws_energy_and_throughput_from_two_engine_modes(tmp_path):
    recs = [offline_record(MODEL, e, m, "greedy", b, 512, 64) for e, m in (("hf", "eager"), ("vllm", "graphs"))
            for b in (1, 16)]
    store, ids = _store(tmp_path, recs)
    sec = F.fig5_engines(cells_frame(store), tmp_path / "out", MODEL)
    data = _csv(sec)
    assert set(data["cell_id"]) == set(ids)
    assert {"energy_per_output_token_j", "throughput_tokens_per_s"} <= set(data.columns)
    store.close()


def test_fig5_with_one_engine_mode_lists_the_others(tmp_path):
    store, _ = _store(tmp_path, [offline_record(MODEL, "hf", "eager", "greedy", 1, 512, 64)])
    sec = F.fig5_engines(cells_frame(store), tmp_path / "out", MODEL)
    assert not sec.drawn and {(m.engine, m.mode) for m in sec.missing} >= {("vllm", "graphs"), ("hf", "compile")}
    store.close()


def test_fig4_names_every_batch_even_when_the_first_model_lacks_one(tmp_path, monkeypatch):
    # llama-3.1-8b (sorted first among the dense models) measured at batch 1 only: batch 8's bars
    # still get their legend entry
    recs = [offline_record("llama-3.1-8b", "hf", "eager", "greedy", 1, 512, 64)]
    recs += [offline_record(m, "hf", "eager", "greedy", b, 512, 64) for m in ("olmo-1b", "olmoe-1b-7b") for b in (1, 8)]
    store, _ = _store(tmp_path, recs)
    figs = []
    monkeypatch.setattr(F, "save", lambda sec, fig, data, out: figs.append(fig) or sec)
    F.fig4_moe(cells_frame(store), tmp_path / "out", MODEL, store)
    assert figs[0].axes[0].get_legend_handles_labels()[1] == ["batch 1", "batch 8"]
    store.close()


def test_a_shape_measured_by_two_sweeps_is_one_point_of_the_series(tmp_path):
    from tokenjoule.report.data import one_per_point

    frame = pd.DataFrame({"id": [1, 2, 3, 4, 5], "output_tokens": [1, 4, 64, 16, 64],
                          "warmup": [1, 1, 2, 1, 1], "repeats": [2, 2, 3, 2, 2],
                          "decode_energy_j": [0.0, 17.8, 321.9, 109.2, 292.6]})
    # cell 3 (another sweep's protocol) and cell 5 share output 64: the series' own protocol wins
    kept = one_per_point(frame, "output_tokens")
    assert list(kept["id"]) == [1, 2, 4, 5]
    # a tie in protocol counts keeps the newest
    tie = frame[frame["id"].isin([3, 5])]
    assert list(one_per_point(tie, "output_tokens")["id"]) == [5]
    # a frame without duplicates comes back as it is
    assert one_per_point(frame.iloc[:2], "output_tokens").equals(frame.iloc[:2])
