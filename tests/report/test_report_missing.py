"""Sections without their cells show exactly the cells to measure; nothing crashes."""

from __future__ import annotations

import pytest

from fakes.planted_store import MODEL, offline_record


@pytest.fixture
def one_cell_report(tmp_path):
    from tokenjoule.report.build import build_report
    from tokenjoule.store.db import ResultStore

    with ResultStore(tmp_path / "one.db") as store:
        cid = store.add(offline_record(MODEL, "hf", "eager", "greedy", 1, 512, 64))
        result = build_report(store, tmp_path / "out")
    return cid, {s.name: s for s in result.sections}, result


def _labels(sec):
    return {m.label() for m in sec.missing}


def test_decoding_figure_lists_the_missing_grid(one_cell_report):
    _, secs, _ = one_cell_report
    sec = secs["fig3_decoding"]
    assert not sec.drawn and sec.png_path is None
    labels = _labels(sec)
    assert f"{MODEL} hf/eager greedy b1 in512 out64" not in labels  # measured
    assert f"{MODEL} hf/eager greedy b8 in512 out64" in labels
    assert f"{MODEL} hf/eager speculative b64 in512 out64" in labels
    assert len(labels) == 4 * 4 - 1


def test_moe_parallel_engine_and_online_boxes(one_cell_report):
    _, secs, _ = one_cell_report
    assert _labels(secs["fig4_moe"]) == {f"{m} hf/eager greedy b{b} in512 out64"
                                        for m in ("olmo-1b", "olmo-7b", "olmoe-1b-7b") for b in (1, 8)}
    tp = _labels(secs["fig6_parallel"])
    # the paper's grid: tp 1, 2, 4 x batch 1, 64 x hf/eager, vllm/graphs, less the measured hf/eager b1 tp 1
    assert f"{MODEL} vllm/graphs greedy b64 in512 out64 tp2" in tp and len(tp) == 11
    assert f"{MODEL} hf/eager greedy b1 in512 out64" not in tp
    engines = _labels(secs["fig5_engines"])
    assert f"{MODEL} vllm/graphs greedy b1 in512 out64" in engines
    assert f"{MODEL} hf/eager greedy b1 in512 out64" not in engines
    assert secs["fig9_online"].missing and not secs["fig9_online"].drawn
    # length grid: 3 batches x (5 inputs + 5 outputs), minus the one measured point (b1 in512 out64
    # is in both sweeps)
    assert len(secs["fig2_lengths"].missing) == 3 * 10 - 2


def test_missing_cells_and_unavailable_sections_appear_in_page(one_cell_report):
    cid, secs, result = one_cell_report
    page = result.index_html.read_text()
    assert "tokenjoule measure --model olmoe-1b-7b --engine hf --mode eager --decoding greedy --batch-size 8" in page
    assert "--tensor-parallel 4" in page
    for name in ("fig7_cdfs", "table_workloads", "table_savings", "table_estimate_vs_theory"):
        sec = secs[name]
        if name == "table_workloads":
            assert sec.drawn  # task profiles need no trace
        else:
            assert sec.unavailable and "--trace" in sec.unavailable
    assert secs["power_timelines"].unavailable.startswith("not available")
    assert f'id="cell-{cid}"' in page
    assert not list(result.out_dir.glob("fig3_decoding.*"))


def test_empty_store_renders(tmp_path):
    from tokenjoule.report.build import build_report
    from tokenjoule.store.db import ResultStore

    with ResultStore(tmp_path / "empty.db") as store:
        result = build_report(store, tmp_path / "out")
    assert result.index_html.exists()
    assert not any(s.png_path for s in result.sections)
    assert result.cell_ids == []


def test_a_section_that_raises_becomes_a_not_available_box(tmp_path, monkeypatch):
    from tokenjoule.report import figures
    from tokenjoule.report.build import build_report
    from tokenjoule.store.db import ResultStore

    def boom(*a, **k):
        raise ValueError("unexpected shape")

    monkeypatch.setattr(figures, "fig3_decoding", boom)
    with ResultStore(tmp_path / "one.db") as store:
        store.add(offline_record(MODEL, "hf", "eager", "greedy", 1, 512, 64))
        result = build_report(store, tmp_path / "out")
    sec = {s.name: s for s in result.sections}["fig3_decoding"]
    assert sec.unavailable == "not available: ValueError: unexpected shape"
    assert "unexpected shape" in result.index_html.read_text()
