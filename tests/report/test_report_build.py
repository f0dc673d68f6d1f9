"""The report of a planted store: every figure and table renders, with data and cell links."""

from __future__ import annotations

import re

import pandas as pd

EXPECTED_COLUMNS = {
    "fig2_lengths": {"cell_id", "sweep", "batch_size", "input_tokens", "output_tokens", "energy_j",
                     "prefill_energy_j", "decode_energy_j"},
    "fig3_decoding": {"cell_id", "decoding", "batch_size", "energy_per_output_token_j"},
    "fig4_moe": {"cell_id", "model", "moe", "batch_size", "energy_per_output_token_j"},
    "fig5_engines": {"cell_id", "engine", "mode", "batch_size", "energy_per_output_token_j",
                     "throughput_tokens_per_s"},
    "fig6_parallel": {"cell_id", "tensor_parallel", "batch_size", "duration_s", "energy_j"},
    "fig7_cdfs": {"trace", "length", "kind", "tokens", "cdf"},
    "fig9_online": {"cell_id", "kind", "engine", "mode", "rate_rps", "energy_per_request_j"},
    "power_timelines": {"cell_id", "t_s", "device", "power_w"},
    "table_workloads": {"workload", "requests", "input mean ± std", "output mean ± std", "burstiness (CV)"},
    "table_estimate_vs_theory": {"trace", "engine/mode", "binned estimate (J)", "theoretical (J)", "cell_ids"},
    "table_savings": {"trace", "best configuration", "best (J)", "baseline (J)", "savings", "cell_ids"},
    "table_provenance": {"GPU(s)", "driver", "CUDA", "torch", "methods", "cells", "cell_ids"},
}


def test_every_section_is_drawn_with_png_and_csv(built_report):
    _, _, result = built_report
    by_name = {s.name: s for s in result.sections}
    assert set(by_name) == set(EXPECTED_COLUMNS)
    for name, cols in EXPECTED_COLUMNS.items():
        sec = by_name[name]
        assert sec.drawn, f"{name}: {sec.unavailable or [m.label() for m in sec.missing]}"
        csv = result.out_dir / f"{name}.csv"
        data = pd.read_csv(csv)
        assert cols <= set(data.columns), f"{name}: {set(data.columns)}"
        assert len(data) > 0
        if name.startswith(("fig", "power")):
            png = (result.out_dir / f"{name}.png").read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_csv_cell_ids_are_stored_cells_matching_the_figure(built_report):
    info, _, result = built_report
    all_ids = {i for ids in info.ids.values() for i in ids}
    fig4 = pd.read_csv(result.out_dir / "fig4_moe.csv")
    assert set(fig4["cell_id"]) <= all_ids
    # MoE is detected from the provenance (active < total parameters): only olmoe-1b-7b.
    assert set(fig4[fig4["moe"]]["model"]) == {"olmoe-1b-7b"}
    fig6 = pd.read_csv(result.out_dir / "fig6_parallel.csv")
    assert set(fig6["tensor_parallel"]) == {1, 2, 4}
    fig9 = pd.read_csv(result.out_dir / "fig9_online.csv")
    assert set(fig9[fig9["kind"] == "online"]["cell_id"]) == set(info.ids["online"])


def test_fig2_energy_adds_up_and_single_point_batches_are_left_out(built_report):
    _, _, result = built_report
    data = pd.read_csv(result.out_dir / "fig2_lengths.csv")
    assert (abs(data["prefill_energy_j"] + data["decode_energy_j"] - data["energy_j"]) < 1e-6 * data["energy_j"]).all()
    # batch 32 exists only as trace-bin cells: two input lengths at output 64 make a curve, but
    # at input 512 it has one output length, which is not a curve and is left out
    assert set(data[data["sweep"] == "input"]["batch_size"]) == {1, 8, 32, 64}
    assert set(data[data["sweep"] == "output"]["batch_size"]) == {1, 8, 64}


def test_every_link_has_a_target_and_every_section_links_its_cells(built_report):
    _, _, result = built_report
    page = result.index_html.read_text()
    anchors = set(map(int, re.findall(r'id="cell-(\d+)"', page)))
    links = set(map(int, re.findall(r'href="#cell-(\d+)"', page)))
    assert links and links <= anchors
    for sec in result.sections:
        if sec.cell_ids:
            assert set(sec.cell_ids) <= links, sec.name


def test_flagged_and_estimated_cells_are_marked(built_report):
    info, _, result = built_report
    page = result.index_html.read_text()
    rows = dict(re.findall(r'<tr id="cell-(\d+)"( class="[^"]*")?', page))
    flagged = [i for i in info.ids["lengths"] if 'flagged' in rows.get(str(i), "")]
    assert len(flagged) == 2  # the two planted flagged cells, no more
    est = info.ids["estimate"][0]
    assert "estimate" in rows[str(est)]
    row = re.search(rf'<tr id="cell-{est}".*?</tr>', page).group(0)
    assert "estimate-cpu-time (estimate)" in row
    # the link to a flagged cell under Figure 2 carries the flag mark
    assert re.search(rf'<a href="#cell-{flagged[0]}">{flagged[0]}</a> <span class="flag">', page)
    # the failed (out of memory) cell is listed, marked failed
    assert "failed" in rows[str(info.ids["failed"][0])]


def test_page_is_self_contained(built_report):
    _, _, result = built_report
    page = result.index_html.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    imgs = re.findall(r'<img [^>]*src="([^"]{0,30})', page)
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    drawn_figs = [s for s in result.sections if s.png_path]
    assert len(imgs) == len(drawn_figs)
    assert "<script" not in page


def test_theory_is_labelled_as_a_prediction(built_report):
    _, _, result = built_report
    page = result.index_html.read_text()
    section = page.split('id="table_estimate_vs_theory"')[1].split("<h2")[0]
    assert section.count('class="pred"') >= 5  # one per engine/mode row


def test_cli_report_writes_index(planted, tmp_path, capsys):
    from tokenjoule.cli.main import main

    info, trace = planted
    rc = main(["report", "--db", str(info.path), "-o", str(tmp_path / "r"), "--model", "llama-3.1-8b"])
    assert rc == 0
    assert (tmp_path / "r" / "index.html").stat().st_size > 10_000
    # without --trace the trace sections say what they need
    page = (tmp_path / "r" / "index.html").read_text()
    assert "give --trace NAME" in page


def test_cli_report_missing_db_is_one_line_error(tmp_path, capsys):
    from tokenjoule.cli.main import main

    rc = main(["report", "--db", str(tmp_path / "nope.db"), "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: no results store at") and err.count("\n") == 1
    assert not (tmp_path / "nope.db").exists()
