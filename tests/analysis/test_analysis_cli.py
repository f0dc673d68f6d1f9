"""`tokenjoule workload stats|bins`, `tokenjoule estimate`, `tokenjoule savings` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tokenjoule.cli.main import main
from tokenjoule.store.db import ResultStore

from test_analysis_estimate import add_cell  # noqa: E402  (tests/analysis is on sys.path via rootdir)

TRACE = "input_tokens,output_tokens,arrival_s\n" + "".join(
    f"{i},{o},{t}\n" for t, (i, o) in enumerate([(10, 3)] * 5 + [(50, 12), (64, 16), (100, 4)]))


@pytest.fixture
def trace(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(TRACE)
    return str(p)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as s:
        for engine, mode, scale in (("hf", "eager", 1.0), ("vllm", "graphs", 0.25)):
            add_cell(s, 32, 8, 2, 10.0 * scale, engine=engine, mode=mode)
            add_cell(s, 64, 16, 4, 100.0 * scale, engine=engine, mode=mode)
    return str(path)


BINS = ["--input-bins", "32,64", "--output-bins", "8,16"]


def test_stats_json(trace, capsys):
    assert main(["workload", "stats", trace, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["requests"] == 8 and d["input_tokens"]["max"] == 100
    assert d["duration_s"] == 7.0 and d["mean_rate_rps"] == pytest.approx(1.0) and d["burstiness"] == 0.0


def test_stats_table_and_task_profile(capsys):
    assert main(["workload", "stats", "task:classification"]) == 0
    assert "1,024" in capsys.readouterr().out


def test_bins_png_and_sweep(trace, tmp_path, capsys):
    png, sweep = tmp_path / "cdf.png", tmp_path / "sweep.yaml"
    rc = main(["workload", "bins", trace, *BINS, "--png", str(png), "--emit-sweep", str(sweep),
               "--model", "llama-3.1-8b", "--engine", "vllm", "--mode", "graphs", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["n_kept"], d["n_dropped"]) == (7, 1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = yaml.safe_load(sweep.read_text())
    assert doc["engine"] == "vllm" and len(doc["cells"]) == 2


@pytest.mark.parametrize("args,msg", [
    (["--input-bins", "64,32"], "strictly increasing"),
    (["--overflow", "wrap"], "overflow"),
    (["--emit-sweep", "x.yaml"], "--model"),
    (["--emit-sweep", "x.yaml", "--model", "m", "--engine", "hf", "--mode", "graphs"], "mode"),
])
def test_bins_bad_input_is_one_line_error(trace, capsys, args, msg):
    assert main(["workload", "bins", trace, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1


def test_estimate_complete_json_with_theory(trace, db, capsys):
    rc = main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf", "--engine",
               "vllm:graphs", "--db", db, *BINS, "--json", "--compare-theory"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    totals = [e["total_energy_j"] for e in d["estimates"]]
    assert totals == [75.0, 18.75]  # the paper's N/B (default rounding)
    assert [e["rounding"] for e in d["estimates"]] == ["paper", "paper"]
    assert len(d["theory"]) == 2 and d["theory"][0]["gpu"] == "H100 SXM"
    assert d["missing_cells"] == []


def test_estimate_rounding_flag(trace, db, capsys):
    base = ["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf", "--engine",
            "vllm:graphs", "--db", db, *BINS]
    assert main([*base, "--json", "--rounding", "ceil"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [e["total_energy_j"] for e in d["estimates"]] == [130.0, 32.5]  # today's ceil(N/B)
    assert all(e["partial_share"] > 0.1 for e in d["estimates"])
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "rounding: paper" in out and "warning: partly filled batches" in out
    assert main([*base, "--rounding", "floor"]) == 2
    err = capsys.readouterr().err
    assert "floor" in err and "paper, ceil, measured" in err and len(err.strip().splitlines()) == 1


def test_estimate_table(trace, db, capsys):
    assert main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--db", db, *BINS,
                 "--compare-theory", "--gpu", "A6000"]) == 0
    out = capsys.readouterr().out
    assert "RTX A6000" in out


def test_estimate_missing_cells_exit_1_with_sweep(trace, db, tmp_path, capsys):
    rc = main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf:compile", "--db", db, *BINS])
    assert rc == 1
    out = capsys.readouterr().out
    doc = yaml.safe_load(out[out.index("# cells missing"):])
    assert sorted((c["input_tokens"], c["output_tokens"]) for c in doc["cells"]) == [(32, 8), (64, 16)]
    assert all(c["mode"] == "compile" for c in doc["cells"])
    sweep = tmp_path / "missing.yaml"
    rc = main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--engine", "hf:compile", "--db", db,
               *BINS, "--emit-sweep", str(sweep)])
    assert rc == 1 and len(yaml.safe_load(sweep.read_text())["cells"]) == 2


def test_estimate_without_db_is_an_error(trace, tmp_path, capsys):
    rc = main(["estimate", "--trace", trace, "--model", "m", "--db", str(tmp_path / "none.db")])
    assert rc == 2 and "no results database" in capsys.readouterr().err


def test_savings(trace, db, capsys):
    rc = main(["savings", "--trace", trace, "--baseline", "hf:eager", "--optimized", "vllm:graphs",
               "--model", "llama-3.1-8b", "--db", db, *BINS, "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["saved_percent"] == pytest.approx(75.0)
    rc = main(["savings", "--trace", trace, "--baseline", "hf:eager", "--optimized", "hf:compile",
               "--model", "llama-3.1-8b", "--db", db, *BINS])
    assert rc == 1


def test_cli_modules_import_no_heavy_packages():
    code = ("import sys, tokenjoule.cli.workload, tokenjoule.cli.estimate; "
            "print([m for m in ('torch', 'numpy', 'pandas', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bins_emit_remainder_cells_then_measured_rounding_uses_them(trace, db, tmp_path, capsys):
    sweep = tmp_path / "rem.yaml"
    base = ["workload", "bins", trace, *BINS, "--model", "llama-3.1-8b", "--engine", "hf",
            "--emit-sweep", str(sweep), "--remainders"]
    assert main([*base, "--batch", "3"]) == 0  # 5 mod 3 = 2 and 2 mod 3 = 2
    cells = yaml.safe_load(sweep.read_text())["cells"]
    assert sorted((c["input_tokens"], c["output_tokens"], c["batch_size"]) for c in cells) == [
        (32, 8, 2), (32, 8, 3), (64, 16, 2), (64, 16, 3)]
    assert main(base) == 2 and "--db" in capsys.readouterr().err  # batch max needs the store's B
    assert main([*base, "--db", db]) == 0  # stored B: 2 and 4 -> remainders 1 and 2
    rem = [c for c in yaml.safe_load(sweep.read_text())["cells"] if c["batch_size"] != "max"]
    assert sorted((c["input_tokens"], c["output_tokens"], c["batch_size"]) for c in rem) == [(32, 8, 1), (64, 16, 2)]
    with ResultStore(db) as s:  # "measure" the remainder cells
        add_cell(s, 32, 8, 1, 7.0)
        add_cell(s, 64, 16, 2, 60.0)
    capsys.readouterr()
    assert main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--db", db, *BINS,
                 "--rounding", "measured", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)["estimates"][0]
    assert est["remainders_predicted"] == 0
    assert est["total_energy_j"] == pytest.approx(2 * 10.0 + 7.0 + 60.0)


def test_estimate_measured_emits_predicted_remainders(trace, db, tmp_path, capsys):
    sweep = tmp_path / "rem.yaml"
    assert main(["estimate", "--trace", trace, "--model", "llama-3.1-8b", "--db", db, *BINS,
                 "--rounding", "measured", "--emit-sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "PREDICTED" in out and "remainder cell" in out
    cells = yaml.safe_load(sweep.read_text())["cells"]
    # bins: 5 requests at batch 2 -> remainder 1; 2 requests at batch 4 -> remainder 2
    assert sorted((c["input_tokens"], c["output_tokens"], c["batch_size"]) for c in cells) == [(32, 8, 1), (64, 16, 2)]
