"""benchmarks/paper_figures.py on CPU: its plan, a dry run, a real tiny run through the sweep
runner (resumable), the budget stop and the findings summary of a planted store."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from fakes.planted_store import plant_store
from tokenjoule.store.db import ResultStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("paper_figures", ROOT / "benchmarks" / "paper_figures.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up while being built
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_plan_runs_the_brackets_first_and_every_figure_preset(script):
    runs = script.plan(with_vllm=True)
    assert [r.name for r in runs] == ["paper-decoding-brackets", "paper-lengths", "paper-moe", "paper-frameworks",
                                      "paper-decoding"]
    assert next(r for r in runs if r.name == "paper-lengths").quick  # always --quick
    specs = {r.name: [c.spec for c in script.build(r).expand()] for r in runs}
    assert {s.mode for s in specs["paper-frameworks"] if s.engine == "vllm"} == {"eager", "graphs"}
    assert {s.model for s in specs["paper-moe"]} == {"olmo-1b", "olmo-7b", "olmoe-1b-7b"}
    drafts = {s.decoding.draft_model for s in specs["paper-decoding-brackets"] if s.decoding.strategy == "speculative"}
    assert {"self", "llama-3.2-1b"} <= drafts


def test_dry_run_measures_nothing(script, tmp_path, capsys):
    assert script.main(["--dry-run", "--out", str(tmp_path), "--without-vllm", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "== paper-decoding-brackets" in out and "== paper-frameworks" in out
    with ResultStore(tmp_path / "paper_figures.db") as store:
        assert store.find() == []


def test_a_tiny_bracket_run_records_acceptance_and_resumes(script, tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--model", "tiny", "--only", "paper-decoding-brackets", "--without-vllm",
            "--device", "cpu", "--meter", "simulated", "--idle-s", "0", "--min-window-s", "0", "--quick",
            "--input-tokens", "24", "--output-tokens", "9"]
    assert script.main(argv) == 0
    with ResultStore(tmp_path / "paper_figures.db") as store:
        ok = store.find(status="ok")
        rates = {r.spec["decoding"].get("draft_model"): r.metrics.get("acceptance_rate") for r in ok}
    assert len(ok) == 3 and rates["self"] == 1.0 and rates[None] is None and rates["tiny"] < 1.0
    capsys.readouterr()
    assert script.main(argv) == 0  # again: everything is skipped, nothing measured twice
    assert "0 measured" in capsys.readouterr().out
    with ResultStore(tmp_path / "paper_figures.db") as store:
        assert len(store.find()) == 3
    found = json.loads((tmp_path / "paper_figures_findings.json").read_text())["findings"]
    assert [f["figure"] for f in found] == ["Figure 2", "Figure 2", "Figure 3", "Figure 4", "Figure 5"]


def test_a_spent_budget_stops_and_prints_the_resume_command(script, tmp_path, capsys):
    assert script.main(["--out", str(tmp_path), "--budget-minutes", "0", "--without-vllm", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    # runnable as printed: the same store (which skips what is done), the same vLLM choice
    assert f"python benchmarks/paper_figures.py --db {tmp_path / 'paper_figures.db'}" in out
    resume = out.split("e.g.: ")[1]
    assert "--without-vllm" in resume
    # nothing was measured, so the command it prints is not the one that just measured nothing
    assert "before any cell was measured" in out and "--budget-minutes 5 " in resume
    data = json.loads((tmp_path / "paper_figures_findings.json").read_text())
    assert data["stopped_by_budget"] and data["resume_command"]


def test_summary_of_a_planted_store_states_each_finding(script, tmp_path, capsys):
    plant_store(tmp_path / "p.db")
    assert script.main(["--db", str(tmp_path / "p.db"), "--out", str(tmp_path), "--summary-only"]) == 0
    md = (tmp_path / "paper_figures_findings.md").read_text()
    for fig in ("Figure 2", "Figure 3", "Figure 4", "Figure 5"):
        assert f"**{fig}**" in md
    assert md.count("store shows it: **yes**") == 4 and "not measured yet" in md


def test_unknown_preset_in_only_is_refused(script, tmp_path, capsys):
    assert script.main(["--out", str(tmp_path), "--only", "paper-nope"]) == 2
    assert "unknown preset(s) paper-nope" in capsys.readouterr().out
