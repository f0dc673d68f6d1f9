"""The paper-parallel preset's cells, and Figure 6 drawn from tensor-parallel cells of a planted
store: changes vs 1 GPU, the paper's beside them, the per-GPU split; a partial store too."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fakes.planted_store import offline_record
from tokenjoule.report.data import cells_frame
from tokenjoule.report.figures_parallel import PAPER_TP_CHANGE, fig6_parallel
from tokenjoule.runs.sweep_presets import build_preset
from tokenjoule.store.db import ResultStore

MODEL = "llama-3.1-8b"


def _cells(cfg):
    return {(p.spec.model, p.spec.engine, p.spec.mode, p.spec.tensor_parallel, p.spec.batch_size)
            for p in cfg.expand()}


def test_paper_parallel_preset_cells():
    cells = _cells(build_preset("paper-parallel", with_vllm=True))
    expected = {(MODEL, e, m, tp, b) for e, m in (("hf", "eager"), ("vllm", "graphs")) for tp in (1, 2, 4)
                for b in (1, 64)}
    expected |= {("r1-distill-qwen-32b", e, m, tp, b) for e, m in (("hf", "eager"), ("vllm", "graphs"))
                 for tp in (2, 4) for b in (1, 64)}
    assert cells == expected
    specs = [p.spec for p in build_preset("paper-parallel", with_vllm=True).expand()]
    assert {(s.input_tokens, s.output_tokens, s.decoding.strategy, s.pipeline_parallel) for s in specs} == {(512, 64, "greedy", 1)}
    no_vllm = _cells(build_preset("paper-parallel", with_vllm=False, quick=True))
    assert {c[1] for c in no_vllm} == {"hf"} and {c[4] for c in no_vllm} == {1} and len(no_vllm) == 5


def _frame(tmp_path, cells):
    with ResultStore(tmp_path / "s.db") as store:
        for engine, mode, tp, b in cells:
            store.add(offline_record(MODEL, engine, mode, "greedy", b, 512, 64, tp=tp))
        return cells_frame(store)


def test_fig6_changes_vs_one_gpu_paper_columns_and_split(tmp_path):
    grid = [(e, m, tp, b) for e, m in (("hf", "eager"), ("vllm", "graphs")) for tp in (1, 2, 4) for b in (1, 64)]
    df = _frame(tmp_path, grid)
    sec = fig6_parallel(df, tmp_path / "out", MODEL)
    assert sec.drawn and sec.missing == []
    data = pd.read_csv(sec.csv_path)
    assert len(data) == len(grid)
    for (engine, mode, b), part in data.groupby(["engine", "mode", "batch_size"]):
        one = part[part["tensor_parallel"] == 1].iloc[0]
        for _, r in part[part["tensor_parallel"] > 1].iterrows():
            assert r["latency_change_vs_1gpu"] == pytest.approx(r["duration_s"] / one["duration_s"] - 1)
            assert r["energy_change_vs_1gpu"] == pytest.approx(r["energy_j"] / one["energy_j"] - 1)
            split = json.loads(r["gpu_energy_split_j"])
            assert len(split) == r["tensor_parallel"] and sum(split.values()) == pytest.approx(r["energy_j"])
            if b == 1:
                assert r["paper_energy_change"] == pytest.approx(PAPER_TP_CHANGE[r["tensor_parallel"]]["energy"])
            else:
                assert pd.isna(r["paper_energy_change"])  # the paper's numbers are for batch 1
    assert any("paper" in n and "+29.3%" in n for n in sec.notes)


def test_fig6_from_a_partial_store_draws_what_it_has_and_lists_the_rest(tmp_path):
    df = _frame(tmp_path, [("vllm", "graphs", 2, 1), ("vllm", "graphs", 4, 1)])
    sec = fig6_parallel(df, tmp_path / "out", MODEL)
    assert sec.drawn
    data = pd.read_csv(sec.csv_path)
    assert data["latency_change_vs_1gpu"].isna().all()  # no 1-GPU cell: no change, never a guess
    labels = {m.label() for m in sec.missing}
    assert f"{MODEL} vllm/graphs greedy b1 in512 out64" in labels and len(labels) == 12 - 2
    assert any("no 1-GPU cell" in n for n in sec.notes)


def test_fig6_without_tp_cells_is_a_list_of_cells_to_measure(tmp_path):
    df = _frame(tmp_path, [("hf", "eager", 1, 1)])
    sec = fig6_parallel(df, tmp_path / "out", MODEL)
    assert not sec.drawn and len(sec.missing) == 11
    assert any(m.tensor_parallel == 4 and "--tensor-parallel 4" in m.command() for m in sec.missing)
