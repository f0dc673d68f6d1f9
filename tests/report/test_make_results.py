"""benchmarks/make_results.py: generated RESULTS sections quote only numbers read from evidence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gen():
    spec = importlib.util.spec_from_file_location("make_results", ROOT / "benchmarks" / "make_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_results_md_matches_the_committed_evidence():
    assert _gen().main(["--check"]) == 0


def test_a_number_typed_into_the_template_fails_the_generation():
    gen = _gen()
    bad = gen.TEMPLATE.replace("Idle baseline:", "Idle baseline (about 73 W cold on an H100):")
    with pytest.raises(gen.UnbackedNumberError, match="73"):
        gen.section_h200_reference(template=bad)


def test_quotes_track_evidence_values_and_verify_spots_strays():
    gen = _gen()
    q = gen.Quotes()
    text = f"measured {q.q(1.2345, '{:.2f}')} W and {q.pct(1.031)}"
    assert text == "measured 1.23 W and +3.1%"
    gen.verify(text, q)
    with pytest.raises(gen.UnbackedNumberError, match="42"):
        gen.verify(text + " and 42 J", q)
    gen.verify(text + " in `file_42.json`", q)  # names in code spans are not quotes


def test_evidence_changes_change_the_text(tmp_path):
    import json
    import shutil

    gen = _gen()
    for f in (ROOT / "benchmarks" / "results").glob("*_h200.json"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "reference_hf_eager_h200.json"
    data = json.loads(path.read_text())
    data["idle_before_load"]["idle_power_counter_w"] = 71.04
    path.write_text(json.dumps(data))
    assert "71.0 W" in gen.section_h200_reference(results=tmp_path)


def _bin_tables():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import results_bin_tables

    return results_bin_tables


def _plant_call(folder, table, n, rows, gpu_minutes):
    import csv
    import json

    folder.mkdir(parents=True, exist_ok=True)
    stem = table.replace("-", "_")
    cols = ["table", "protocol", "input_tokens", "output_tokens", "n_requests", "batch_size", "max_batch_probes",
            "windows", "energy_cv", "energy_per_request_j", "wall_s", "status"]
    with (folder / f"{stem}_{n}_rows.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({"table": table, "protocol": "adaptive", "status": "ok", "max_batch_probes": 1, **r})
    (folder / f"{stem}_{n}_summary.json").write_text(json.dumps(
        {"date_utc": "2026-12-02T10:00:00+00:00", "tables": {table: {"gpu_minutes": gpu_minutes}}}))


def test_bin_table_section_counts_each_bin_once_and_adds_the_calls_minutes(tmp_path):
    from types import SimpleNamespace as B

    bt, gen = _bin_tables(), _gen()
    bins = [B(input_tokens=512, output_tokens=128, n_requests=300), B(input_tokens=256, output_tokens=64, n_requests=100)]
    row = {"input_tokens": 512, "output_tokens": 128, "n_requests": 300, "batch_size": 10, "windows": 2,
           "energy_cv": 0.004, "energy_per_request_j": 12.5, "wall_s": 60}
    _plant_call(tmp_path, "vllm-graphs", 1, [row], 3.0)
    _plant_call(tmp_path, "vllm-graphs", 2, [row, {**row, "input_tokens": 256, "output_tokens": 64, "n_requests": 100,
                                                   "energy_per_request_j": 3.25, "wall_s": 30}], 1.5)
    _plant_call(tmp_path, "hf-eager", 1, [{**row, "energy_per_request_j": 50.0}], 2.0)
    q = gen.Quotes()
    text = bt.section(q, tmp_path, bins, {})
    gen.verify(text, q)
    vllm_line = next(line for line in text.splitlines() if line.startswith("| vllm graphs |"))
    assert "| 2 | 4.5 | 2 of 2 | 100.0% |" in vllm_line  # two calls, 3.0 + 1.5 min, the repeated bin once
    assert "512/128: 75%" in text  # 1 - 12.5 / 50: savings where both engines measured the bin
    hf_line = next(line for line in text.splitlines() if line.startswith("| hf eager |"))
    assert "75.0%" in hf_line  # 300 of 400 requests covered


def test_bin_table_faithfulness_sets_each_old_protocol_bin_beside_its_fast_cell(tmp_path):
    from types import SimpleNamespace as B

    bt, gen = _bin_tables(), _gen()
    bins = [B(input_tokens=512, output_tokens=128, n_requests=300), B(input_tokens=256, output_tokens=64, n_requests=100)]
    fast = {"input_tokens": 512, "output_tokens": 128, "n_requests": 300, "batch_size": 102, "windows": 2,
            "energy_cv": 0.004, "energy_per_request_j": 10.3, "wall_s": 60}
    _plant_call(tmp_path, "vllm-graphs", 1, [fast, {**fast, "input_tokens": 256, "output_tokens": 64}], 3.0)
    _plant_call(tmp_path, "vllm-graphs", 2, [{**fast, "protocol": "full", "batch_size": 100,
                                              "energy_per_request_j": 10.0, "max_batch_probes": 14}], 2.0)
    _plant_call(tmp_path, "hf-eager", 1, [fast], 2.0)
    q = gen.Quotes()
    text = bt.section(q, tmp_path, bins, {})
    gen.verify(text, q)
    assert "| 512/128 | 102, 10.30 | 100 (14 probes), 10.00 | +3.0% | +2.0% |" in text
    assert "energy 3.00%, batch 2.00%, outside the targets (2% and 5%) on 1 of the 5 bins" in text
    assert "Faithfulness, hf eager: no bin re-measured with the old protocol yet." in text
    # the check's 60 s are its own cost: the table's GPU-minutes are 3.0 + 2.0 - 1.0
    assert "| vllm graphs | 2 | 4.0 |" in text and "took 1.0 GPU-minutes, left out" in text


def test_bin_table_projection_scales_seconds_per_token_and_labels_itself():
    from types import SimpleNamespace as B

    bt = _bin_tables()
    bins = [B(input_tokens=100, output_tokens=0, n_requests=5), B(input_tokens=50, output_tokens=0, n_requests=5)]
    measured = {(100, 0): {"batch_size": "10", "wall_s": "20", "windows": "2"}}  # 1000 tokens in 20 s
    total = bt.projection_minutes(measured, bins, {(50, 0): 4}, load_minutes=1.0)
    assert total == (20 + 0.02 * 4 * 50) / 60 + 1.0
    floor = bt.projection_minutes(measured, bins, {(50, 0): 4}, load_minutes=0.0, one_window=True)
    assert floor == (10 + 0.01 * 4 * 50) / 60
    assert bt.projection_minutes({}, bins, {}, 0.0) is None


def test_bin_table_section_without_evidence_quotes_nothing(tmp_path):
    bt, gen = _bin_tables(), _gen()
    q = gen.Quotes()
    text = bt.section(q, tmp_path / "missing", [], {})
    gen.verify(text, q)
    assert "No bin table" in text


def test_replay_section_reads_the_stores_replay_records(tmp_path):
    """A planted store with one hf replay: the section quotes its measured total and estimates,
    says the sample is conditional, and is empty for a store without replays."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    import results_replays
    from tokenjoule.store.db import CellRecord, ResultStore

    gen = _gen()
    db = tmp_path / "bt.db"
    with ResultStore(db) as store:
        assert results_replays.section(gen.Quotes(), db) == ""
        spec = {"model": "m", "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
                "replay": {"trace": "azure-conv-2023", "n": 1000, "seed": 0, "engine": "hf", "mode": "eager"}}
        metrics = {"energy_j": 7.2e6, "duration_s": 300.0, "n_kept": 1000, "energy_per_request_j": 7200.0,
                   "estimate_paper_j": 7.92e6, "estimate_ceil_j": 1.08e7, "estimate_measured_j": 7.56e6,
                   "difference_paper": 0.1, "difference_ceil": 0.5, "difference_measured": 0.05,
                   "fit_corrected_j": 7.3e6, "computed_input_tokens": 1_300_000, "computed_output_tokens": 290_000,
                   "useful_input_tokens": 1_100_000, "useful_output_tokens": 230_000}
        within = {"tables": ["hf:eager"], "bins": [[256, 256], [512, 128]], "n_pool": 13712, "n_trace": 19366,
                  "share_of_trace": 13712 / 19366}
        store.add(CellRecord.replay(spec, metrics, {"within_tables": within}, {"time_utc": "2026-12-03T12:00:00",
                                                                              "gpu_names": ["NVIDIA H200"]}))
    q = gen.Quotes()
    text = results_replays.section(q, db)
    gen.verify(text, q)
    assert "NVIDIA H200, 2026-12-03" in text and "2.0000 kWh" in text and "+10.0%" in text
    assert "conditional sample" in text.lower() and "13,712 requests (70.8% of 19,366)" in text


def test_replay_padding_note_sets_each_padded_batch_beside_its_table_cell(tmp_path):
    """An hf replay with its batches and the table cell of their bin: the note quotes each batch's
    energy over the cell's, and the full-batch ratio, only when no row exceeds the bin's edges."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    import results_replays
    from fakes.planted_store import offline_record
    from tokenjoule.store.db import CellRecord, ResultStore

    gen = _gen()
    (tmp_path / "bin_table_h200").mkdir()
    db = tmp_path / "bin_table_h200" / "bt.db"
    cell = offline_record("llama-3.1-8b", "hf", "eager", "greedy", 8, 512, 64)
    cell_j = cell.metrics["energy_j"]
    batches = [{"bin": [512, 64], "requests": 8, "table_batch_size": 8, "energy_j": 3 * cell_j, "duration_s": 9.0,
                "computed_input_tokens": 8 * 500, "computed_output_tokens": 8 * 60},
               {"bin": [512, 64], "requests": 3, "table_batch_size": 8, "energy_j": 0.5 * cell_j, "duration_s": 4.0,
                "computed_input_tokens": 3 * 400, "computed_output_tokens": 3 * 64}]
    spec = {"model": "llama-3.1-8b", "engine": "hf", "mode": "eager", "decoding": {"strategy": "greedy"},
            "replay": {"trace": "azure-conv-2023", "n": 11, "seed": 0, "engine": "hf", "mode": "eager",
                       "model": "llama-3.1-8b"}}
    metrics = {"energy_j": 3.5 * cell_j, "duration_s": 13.0, "n_kept": 11, "difference_paper": -0.6}
    with ResultStore(db) as store:
        store.add(cell)
        store.add(CellRecord.replay(spec, metrics, {"batches": batches}, {"time_utc": "2026-12-03T12:00:00"}))
        rec = results_replays.read_replays(db)[0]
    q = gen.Quotes()
    text = "\n".join(results_replays.padding_note(q, db, rec))
    gen.verify(text, q)
    assert "| 512/64 | 8, 500/60 |" in text and "| 3.00x |" in text and "| 0.50x |" in text
    assert "0.50x to 3.00x" in text and "exactly the cell's rows, it drew 3.00x" in text
    assert "So the gap is neither the lengths" in text and "-60.0% on this sample" in text
    assert "8 key-value heads for the 32 query heads" in text  # from the model's preset
    assert "not yet measured on the GPU" in text

    # the A/B of benchmarks/padding_check.py, once committed, replaces the suspicion by its numbers
    check = {"gpu_name": "NVIDIA H200", "date_utc": "2026-12-04T10:00:00+00:00", "repeats": 2,
             "provenance": {"transformers_version": "5.17.0"},
             "shapes_summary": [{"input_tokens": 512, "output_tokens": 128, "batch_size": 256,
                                 "uniform": {"energy_j": 4000.0, "duration_s": 10.0,
                                             "sdpa_path": {"gqa_kernel": 4128, "masked_fallback": 0}},
                                 "one-pad": {"energy_j": 9000.0, "duration_s": 21.0,
                                             "sdpa_path": {"gqa_kernel": 0, "masked_fallback": 4128}},
                                 "energy_ratio": 2.25, "time_ratio": 2.1}]}
    (tmp_path / results_replays.PADDING_CHECK).write_text(json.dumps(check))
    q = gen.Quotes()
    text = "\n".join(results_replays.padding_note(q, db, rec))
    gen.verify(text, q)
    assert "not yet measured" not in text and "| 512 x 128 x 256 |" in text and "| 2.25x | 2.10x |" in text
    assert "grouped-query kernel 4,128, masked fallback 0 calls" in text and "transformers 5.17.0" in text

    # a batch whose rows ran past the bin's edges: no claim that the cell's rows compute more
    batches[1]["computed_input_tokens"] = 3 * 600
    with ResultStore(db) as store:
        store.add(CellRecord.replay(spec, metrics, {"batches": batches}, {"time_utc": "2026-12-03T12:05:00"}))
        rec = results_replays.read_replays(db)[0]
    text = "\n".join(results_replays.padding_note(gen.Quotes(), db, rec))
    assert "no row computed more tokens" not in text and "So the gap is neither" not in text


def test_paper_figures_section_lists_cells_brackets_and_findings(tmp_path):
    """A planted store with a greedy cell and both speculative brackets at batch 1: the section
    quotes each cell, the brackets against greedy, and every figure's finding (unmeasured ones
    say so); an empty store gives no section."""
    import dataclasses
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    import results_paper_figures
    from fakes.planted_store import offline_record
    from tokenjoule.store.db import ResultStore

    gen = _gen()
    db = tmp_path / "pf.db"
    assert results_paper_figures.section(gen.Quotes(), db) == ""
    greedy = offline_record("llama-3.1-8b", "hf", "eager", "greedy", 1, 512, 64)
    spec = offline_record("llama-3.1-8b", "hf", "eager", "speculative", 1, 512, 64)
    low = dataclasses.replace(spec, metrics={**spec.metrics, "acceptance_rate": 0.0,
                                             "energy_per_output_token_j": 3 * greedy.energy_per_output_token_j})
    high_spec = {**spec.spec, "decoding": {**spec.spec["decoding"], "draft_model": "self"}}
    high = dataclasses.replace(spec, spec=high_spec, spec_hash=spec.spec_hash + "s",
                               metrics={**spec.metrics, "acceptance_rate": 0.9,
                                        "energy_per_output_token_j": 1.1 * greedy.energy_per_output_token_j})
    with ResultStore(db) as store:
        for rec in (greedy, low, high):
            store.add(rec)
    q = gen.Quotes()
    text = results_paper_figures.section(q, db)
    gen.verify(text, q)
    assert "speculative, draft llama-3.2-1b, look-ahead 4" in text and "draft the target itself" in text
    assert "0.00 (llama-3.2-1b)" in text and "+200.0%" in text and "0.90 (self)" in text and "+10.0%" in text
    assert text.count("Store shows it:") == 5 and "**not measured yet**" in text
    assert "interpolated, not measured" in text
