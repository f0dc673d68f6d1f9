"""The report leads with the answer, draws figures from whatever cells exist, lists the cells
still to measure once (a sweep file at the end), counts flags by one rule and writes numeric CSVs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fakes.planted_store import offline_record
from tokenjoule.report.build import MISSING_SWEEP, build_report
from tokenjoule.store.db import ResultStore

EVIDENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "h100_evidence.db"


@pytest.fixture(scope="module")
def four_cell_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("four")
    with ResultStore(root / "four.db") as store:
        for b in (1, 4):
            for i in (32, 128):
                store.add(offline_record("olmo-1b", "hf", "eager", "greedy", b, i, 16,
                                         flags=("short-window",) if (b, i) == (1, 32) else ()))
        result = build_report(store, root / "out", traces=["task:translation"])
    return root, result


def _first_h2_after(page: str, marker: str) -> int:
    return page.index(marker)


def test_four_cells_draw_a_figure_with_the_missing_points_noted(four_cell_report):
    _, result = four_cell_report
    secs = {s.name: s for s in result.sections}
    assert secs["fig2_lengths"].drawn and secs["fig2_lengths"].missing
    assert any("not measured yet" in n for n in secs["fig2_lengths"].notes)
    assert Path(secs["fig2_lengths"].png_path).stat().st_size > 5_000


def test_the_answer_comes_before_any_figure_and_missing_lists_only_at_the_end(four_cell_report):
    _, result = four_cell_report
    page = result.index_html.read_text()
    body = page[page.index("</nav>"):]
    assert body.index('id="table_savings"') < body.index("<img")
    assert body.index('id="table_estimate_vs_theory"') < body.index("<img")
    # per-cell measure commands appear only in the end section, never between figures
    assert body.index("tokenjoule measure --model") > body.index('id="to-measure"')
    assert body.index('id="to-measure"') < body.index('id="cells"')


def test_cells_to_measure_are_one_sweep_file_with_db_and_device(four_cell_report):
    from tokenjoule.report.build import _within_context, sweepable
    from tokenjoule.runs.sweep_config import load_config

    root, result = four_cell_report
    sweep = result.out_dir / MISSING_SWEEP
    text = sweep.read_text()
    assert f"--db {root / 'four.db'}" in text and "--device" in text
    cfg = load_config(sweep)
    labels = {m.label() for s in result.sections for m in s.missing if sweepable(m) and _within_context(m)}
    assert len(cfg.expand()) == len(labels) > 0
    assert f'href="{MISSING_SWEEP}"' in result.index_html.read_text()


def test_flags_counted_the_same_in_header_and_appendix(four_cell_report):
    _, result = four_cell_report
    page = result.index_html.read_text()
    header = int(re.search(r"(\d+) flagged", page).group(1))
    appendix = page[page.index('id="cells"'):]
    rows = re.findall(r'<tr id="cell-\d+" class="([^"]*)"', appendix)
    assert header == sum("flagged" in r for r in rows) == 1


def test_csvs_are_numeric(four_cell_report):
    _, result = four_cell_report
    for sec in result.sections:
        if sec.csv_path and sec.table is not None:
            import csv

            with open(sec.csv_path, newline="") as fh:
                fields = [f for row in csv.reader(fh) for f in row]
            bad = [f for f in fields if f == "—" or re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", f)
                   or re.fullmatch(r"-?[\d.,]+\s*[%×]", f)]  # "73.0%", "2.04×" are the page's, not the CSV's
            assert not bad, (sec.name, bad[:5])
    frame = pd.read_csv(result.out_dir / "table_provenance.csv")
    assert len(frame) >= 1


@pytest.mark.skipif(not EVIDENCE.is_file(), reason="no committed evidence store")
def test_evidence_report_leads_with_the_answer(tmp_path):
    db = tmp_path / "evidence.db"
    shutil.copy(EVIDENCE, db)  # never migrate the committed file
    with ResultStore(db) as store:
        result = build_report(store, tmp_path / "out", traces=["azure-code-2023"])
    page = result.index_html.read_text()
    body = page[page.index("</nav>"):]
    first_h2 = re.search(r'<h2 id="([^"]+)"', body).group(1)
    assert first_h2 == "table_savings"
    assert "Not drawn: the store is missing" not in page
    assert body.index("tokenjoule measure --model") > body.index('id="to-measure"') if "tokenjoule measure" in body \
        else True
    assert any(s.drawn and s.png_path for s in result.sections)


def test_formatted_ratios_and_percentages_reach_the_csv_as_numbers():
    from tokenjoule.report.tables import V, Table

    table = Table(["savings", "binned / theory"], rows=[[V("73.0%", (1,), number=73.0), V("2.04×", (2,), number=2.04)]])
    frame = table.to_frame()
    assert frame.loc[0, "savings"] == 73.0 and frame.loc[0, "binned / theory"] == 2.04
    assert frame.loc[0, "cell_ids"] == "1 2"
