"""Traces as users have them: `--columns`, `--time-unit` on every command that takes a trace,
and a loud warning when binning drops more than 5% of the requests."""

from __future__ import annotations

import json

import pytest

from fakes.planted_store import plant_store
from tokenjoule.cli.main import main

MAPPING = "input=prompt_tokens,output=completion_tokens,arrival=timestamp"


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def user_trace(tmp_path):
    """The planted bins' lengths (40 x 100/50, 25 x 400/60, 10 x 1000/200) under the column
    names an OpenAI-style log uses, with ISO timestamps 0.5 s apart."""
    lines = ["prompt_tokens,completion_tokens,timestamp"]
    lengths = [(100, 50)] * 40 + [(400, 60)] * 25 + [(1000, 200)] * 10
    for k, (i, o) in enumerate(lengths):
        lines.append(f"{i},{o},2024-05-01T10:00:{k // 2:02d}.{5 * (k % 2)}Z")
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unmapped_columns_say_how_to_map_them(capsys, user_trace):
    rc, _, err = run_cli(capsys, "workload", "stats", str(user_trace))
    assert rc == 2 and err.count("\n") == 1
    assert "missing column 'input_tokens'" in err and "--columns input=COL" in err


def test_workload_stats_with_columns_and_iso_time(capsys, user_trace):
    rc, out, err = run_cli(capsys, "workload", "stats", str(user_trace), "--columns", MAPPING, "--time-unit", "iso",
                           "--json")
    assert rc == 0, err
    stats = json.loads(out)
    assert stats["requests"] == 75 and stats["duration_s"] == pytest.approx(37.0)


def test_estimate_and_recommend_with_columns(capsys, tmp_path, user_trace):
    plant_store(tmp_path / "p.db")
    rc, out, err = run_cli(capsys, "estimate", "--trace", str(user_trace), "--columns", MAPPING, "--model",
                           "llama-3.1-8b", "--db", str(tmp_path / "p.db"), "--json")
    assert rc == 0, err
    est = json.loads(out)["estimates"][0]
    assert est["complete"] and est["n_total"] == 75 and est["n_dropped"] == 0
    rc, out, err = run_cli(capsys, "recommend", "--trace", str(user_trace), "--columns", MAPPING,
                           "--db", str(tmp_path / "p.db"), "--json")
    assert rc == 0, err
    assert json.loads(out)["binning"]["n_total"] == 75


def test_serve_bench_builds_requests_from_a_mapped_trace(user_trace):
    from tokenjoule.cli.options import TraceReading
    from tokenjoule.cli.serve import _trace_options
    from tokenjoule.serving.arrivals import ArrivalSpec
    from tokenjoule.serving.bench import ServeBenchConfig, build_requests

    opts = _trace_options(str(user_trace), TraceReading.from_cli(None, MAPPING, "iso"))
    cfg = ServeBenchConfig(model="tiny", arrival=ArrivalSpec("trace"), url="http://x", workload=str(user_trace),
                           n_requests=75, trace_options=opts)
    wl = build_requests(cfg)
    assert len(wl) == 75 and wl.requests[1].arrival_s == pytest.approx(0.5)


def test_dropping_more_than_5_percent_is_a_loud_warning_with_the_bins_that_keep_them(capsys, user_trace):
    rc, out, err = run_cli(capsys, "workload", "bins", str(user_trace), "--columns", MAPPING,
                           "--input-bins", "128,512", "--output-bins", "64")
    assert rc == 0
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "13.3%" in warning and "10 of 75" in warning  # the 1000/200 requests
    assert "--input-bins 128,512,1024" in warning and "--output-bins 64,128,256" in warning
    rc, _, err = run_cli(capsys, "workload", "bins", str(user_trace), "--columns", MAPPING,
                         "--input-bins", "128,512,1024", "--output-bins", "64,256")
    assert rc == 0 and "warning:" not in err  # nothing dropped, nothing shouted


def test_keeping_bins_keep_every_request(user_trace):
    from tokenjoule.workloads import bin_workload, load_trace
    from tokenjoule.workloads.binning import Bins

    wl = load_trace(user_trace, columns={"input": "prompt_tokens", "output": "completion_tokens"})
    binned = bin_workload(wl, Bins((128,), (8,)))
    assert binned.n_dropped == 75
    assert bin_workload(wl, binned.keeping_bins()).n_dropped == 0


def test_task_profiles_refuse_file_options(capsys):
    rc, _, err = run_cli(capsys, "workload", "stats", "task:translation", "--columns", MAPPING)
    assert rc == 2 and "do not apply to task profiles" in err


def test_report_reads_a_mapped_trace(capsys, tmp_path, user_trace):
    plant_store(tmp_path / "p.db")
    rc, _, err = run_cli(capsys, "report", "--db", str(tmp_path / "p.db"), "-o", str(tmp_path / "rep"),
                         "--trace", str(user_trace), "--columns", MAPPING, "--time-unit", "iso")
    assert rc == 0, err
    import pandas as pd

    savings = pd.read_csv(tmp_path / "rep" / "table_savings.csv")
    assert savings["best (J)"].notna().all()  # the mapped trace was binned and answered
    assert (tmp_path / "rep" / "traces" / "mine.csv").read_text().startswith("input_tokens,output_tokens,arrival_s")


def test_sweep_preset_reads_a_trace_through_its_column_mapping(capsys, tmp_path, user_trace):
    db = tmp_path / "r.db"
    rc, out, err = run_cli(capsys, "sweep", "--preset", "paper-bins", "--model", "tiny", "--trace", str(user_trace),
                           "--columns", MAPPING, "--time-unit", "iso", "--db", str(db), "--dry-run")
    assert rc == 0, err
    # the three occupied bins of the user's trace (default power-of-two edges), one cell each
    assert "in128 out64" in out and "in512 out64" in out and "in1024 out256" in out
    mapped = tmp_path / "r.db.traces" / "mine.csv"
    assert mapped.read_text().splitlines()[0] == "input_tokens,output_tokens,arrival_s"
    assert not db.exists()  # a dry run never creates the store
    # without the mapping the same file is refused in one line
    rc, _, err = run_cli(capsys, "sweep", "--preset", "paper-bins", "--model", "tiny", "--trace", str(user_trace),
                         "--db", str(db), "--dry-run")
    assert rc == 2 and "prompt_tokens" in err.strip().splitlines()[-1]
