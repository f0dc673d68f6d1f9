"""Hostile inputs, one by one: each answers with one line (exit 2) quickly."""

from __future__ import annotations

import time

import pytest
import yaml

from fuzz.conftest import run_cli
from tokenjoule.errors import TokenjouleError
from tokenjoule.limits import MAX_YAML_NODES
from tokenjoule.safe_yaml import load_yaml_bounded

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))


def test_alias_bomb_is_refused_before_expansion():
    assert len(ALIAS_BOMB) < 600  # 9**10 values once expanded
    start = time.monotonic()
    with pytest.raises(TokenjouleError, match=f"more than {MAX_YAML_NODES:,} values"):
        load_yaml_bounded(ALIAS_BOMB)
    assert time.monotonic() - start < 10


def test_modest_aliases_still_load():
    assert load_yaml_bounded("a: &a [1, 2]\nb: *a\n") == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)),
                                  "- " * 2000 + "x"])
def test_deep_nesting_is_one_line(text):
    with pytest.raises(TokenjouleError, match="nest"):  # ours, or libyaml's own depth limit
        load_yaml_bounded(text)


def test_recursive_alias_is_refused():
    with pytest.raises(TokenjouleError, match="recursive|nested"):
        load_yaml_bounded("a: &a [*a]\n")


@pytest.mark.parametrize("raw,needle", [("modèle: tiny\n".encode("latin-1"), "not UTF-8"),
                                        (b"\x00\x01\x02binary", "NUL"),
                                        (b"model: tiny\n" + b"#" * (2 << 20), "limit")])
def test_sweep_file_encoding_and_size(tmp_path, raw, needle):
    path = tmp_path / "grid.yaml"
    path.write_bytes(raw)
    code, _, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "x.db")])
    assert code == 2 and needle in err


@pytest.mark.parametrize("line", ["cooldown_s: .inf", "cooldown_s: 1e6", "idle_s: .nan", "min_window_s: 1e9",
                                  "input_tokens: [8, 1000000000000000000000000]", "batch: 9223372036854775808",
                                  "input_tokens: 4000\noutput_tokens: 200"])
def test_sweep_values_beyond_the_limits(tmp_path, line):
    path = tmp_path / "grid.yaml"
    path.write_text(f"model: tiny\ndevice: cpu\noutput_tokens: 4\ninput_tokens: 8\n{line}\n")
    code, _, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "x.db")])
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_grid_too_large_is_refused_without_expanding(tmp_path):
    path = tmp_path / "grid.yaml"
    axis = "[" + ", ".join(str(i) for i in range(1, 101)) + "]"
    path.write_text(f"model: tiny\ninput_tokens: {axis}\noutput_tokens: {axis}\nbatch: {axis}\nseed: {axis}\n")
    code, _, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(tmp_path / "x.db")], limit_s=30)
    assert code == 2 and "100,000,000 cells" in err


@pytest.mark.parametrize("args", [["--batch", "²"], ["--batch", "99999999999999999999"], ["--input", str(2**63)],
                                  ["--output", str(10**9)], ["--min-window-s", "1e9"], ["--idle-s", "inf"],
                                  ["--input", "4000", "--output", "200"]])
def test_measure_values_beyond_the_limits(tmp_path, args):
    code, _, err = run_cli(["measure", "--model", "tiny", *args, "--meter", "simulated", "--db", str(tmp_path / "x.db")])
    assert code == 2 and err.startswith(("error:", "Usage:")), err
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("args", [["--rate", "1e-300"], ["--rate", "inf"], ["--n-requests", str(2**63)],
                                  ["--timeout-s", "nan"], ["--idle-s", "1e9"]])
def test_serve_bench_values_beyond_the_limits(tmp_path, args):
    code, _, err = run_cli(["serve-bench", "--url", "http://127.0.0.1:9", "--model", "tiny", "--rate", "1",
                            "--input-tokens", "4", "--output-tokens", "2", *args, "--meter", "simulated",
                            "--db", str(tmp_path / "x.db")])
    assert code == 2, err


def test_bins_edges_and_batch(tmp_path):
    for args in (["--input-bins", "10^26"], ["--input-bins", str(10**26)], ["--batch", "²"]):
        code, _, err = run_cli(["workload", "bins", "task:generation", *args])
        assert code == 2, (args, err)


@pytest.mark.parametrize("name", ["true", "null", "1.5", "no", "~", "0x1F", "a: b", "- x", "#x", "it's", 'say "hi"'])
def test_emitted_sweep_yaml_round_trips_any_model_name(name):
    from tokenjoule.workloads.sweep_config import read_cells, sweep_yaml

    cells = [{"model": name, "engine": "hf", "mode": "eager", "decoding": "greedy", "input_tokens": 8,
              "output_tokens": 4, "batch_size": "max"}]
    text = sweep_yaml(cells, ["from trace\ninjected: key"])
    doc = yaml.safe_load(text)
    assert doc["model"] == name and "injected" not in doc
    assert read_cells(text)[0]["model"] == name


def test_trace_name_with_a_newline_does_not_inject_keys(tmp_path):
    trace = tmp_path / "evil\ninjected_key: 1.csv"
    trace.write_text("input_tokens,output_tokens\n100,20\n300,40\n")
    out = tmp_path / "cells.yaml"
    code, _, err = run_cli(["workload", "bins", str(trace), "--emit-sweep", str(out), "--model", "tiny",
                            "--engine", "hf"])
    assert code == 0, err
    doc = yaml.safe_load(out.read_text())
    assert "injected_key" not in doc and doc["model"] == "tiny"


def test_estimate_when_every_request_is_beyond_the_largest_bin(tmp_path, planted_db):
    trace = tmp_path / "huge.csv"
    trace.write_text("input_tokens,output_tokens\n100000,100000\n200000,5\n")
    for extra in ([], ["--json"]):
        code, out, err = run_cli(["estimate", "--trace", str(trace), "--db", str(planted_db),
                                  "--model", "llama-3.1-8b", *extra])
        assert code == 2 and "beyond the largest bins" in err
        assert '"complete": true' not in out


@pytest.mark.parametrize("target", ["folder", "file/child.png", "missing/deeper/plot.png"])
def test_output_paths(tmp_path, planted_db, target):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    path = tmp_path / target
    code, _, err = run_cli(["workload", "bins", "task:generation", "--png", str(path)])
    if target.startswith("missing"):
        assert code == 0 and path.is_file()  # a missing folder is created
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    report_target = tmp_path / "file" if target != "folder" else tmp_path / "file" / "r"
    code, _, err = run_cli(["report", "--db", str(planted_db), "-o", str(report_target)])
    assert code == 2 and "cannot write" in err


def test_trace_in_an_unreadable_or_overlong_path(tmp_path):
    code, _, err = run_cli(["workload", "stats", str(tmp_path / ("x" * 5000))])
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_a_full_device_is_one_line(planted_db):
    for args in (["results", "export", "-o", "/dev/full", "--format", "csv", "--db", str(planted_db)],
                 ["workload", "bins", "task:generation", "--png", "/dev/full"]):
        code, _, err = run_cli(args)
        assert code == 2 and "No space left" in err, (args, err)
