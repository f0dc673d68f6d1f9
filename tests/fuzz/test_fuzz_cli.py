"""Fuzzing the CLI with hypothesis: numeric options, trace files and sweep YAML. A case fails
on a traceback or a hang (see conftest.run_cli); every answer must be an exit code with, for
errors, one line on stderr."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.conftest import run_cli

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
WORK = Path(tempfile.mkdtemp(prefix="tokenjoule-fuzz-"))

# Integers and floats around every interesting boundary: 0, signs, 64-bit, huge, non-finite.
BIG_INTS = st.sampled_from([0, -1, 1, 2, 2**31, 2**63 - 1, 2**63, 2**64, 10**24, 10**30, -(2**63) - 1])
INTS = st.one_of(st.integers(-10, 10_000), BIG_INTS)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-300, 1e308, -0.0, 1e9]))
NUMBER_TEXT = st.one_of(INTS.map(str), FLOATS.map(repr), st.sampled_from(["²", "1e400", "nan", "-inf", "0x10", "",
                                                                          "1_000", " 7", "٣", "10^26"]))


def _one_line_error(code: int, err: str) -> None:
    if code == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert lines, "exit 2 without a message"


@FUZZ
@given(batch=NUMBER_TEXT, inp=NUMBER_TEXT, out=NUMBER_TEXT, repeats=NUMBER_TEXT, window=NUMBER_TEXT,
       idle=NUMBER_TEXT, seed=NUMBER_TEXT)
def test_measure_numeric_options(batch, inp, out, repeats, window, idle, seed):
    # --meter is invalid on purpose: every numeric check runs before it, and nothing is measured.
    code, _, err = run_cli(["measure", "--model", "tiny", "--batch", batch, "--input", inp, "--output", out,
                            "--repeats", repeats, "--min-window-s", window, "--idle-s", idle, "--seed", seed,
                            "--meter", "no-such-meter", "--db", str(WORK / "never.db")])
    assert code == 2
    _one_line_error(code, err)
    assert not (WORK / "never.db").exists()


@FUZZ
@given(rate=NUMBER_TEXT, n=NUMBER_TEXT, timeout=NUMBER_TEXT, inp=NUMBER_TEXT, conc=NUMBER_TEXT,
       burst=NUMBER_TEXT, arrival=st.sampled_from(["poisson", "gamma", "constant", "closed"]))
def test_serve_bench_numeric_options(rate, n, timeout, inp, conc, burst, arrival):
    from tokenjoule.limits import MAX_REQUESTS

    # A valid run would send requests; keep the valid ones tiny by refusing any n above 3 here.
    try:
        if 3 < int(n) <= MAX_REQUESTS:
            n = "3"
    except ValueError:
        pass
    code, _, err = run_cli(["serve-bench", "--url", "http://127.0.0.1:9", "--model", "tiny", "--arrival", arrival,
                            "--rate", rate, "--n-requests", n, "--timeout-s", timeout, "--input-tokens", inp,
                            "--output-tokens", "2", "--concurrency", conc, "--burstiness", burst,
                            "--meter", "simulated", "--idle-s", "0", "--warmup-requests", "0",
                            "--db", str(WORK / "serve.db")], limit_s=60)
    assert code in (0, 1, 2)
    _one_line_error(code, err)


@FUZZ
@given(batch=NUMBER_TEXT, input_bins=st.lists(NUMBER_TEXT, min_size=0, max_size=4).map(",".join),
       overflow=st.sampled_from(["drop", "clip", "bogus"]))
def test_workload_bins_options(batch, input_bins, overflow):
    code, _, err = run_cli(["workload", "bins", "task:generation", "--batch", batch, "--input-bins", input_bins or "1",
                            "--overflow", overflow, "--json"])
    assert code in (0, 2)
    _one_line_error(code, err)


# -- traces ------------------------------------------------------------------------------------
CELL = st.one_of(INTS.map(str), FLOATS.map(repr), st.text(max_size=8), st.just(""), st.just("null"))
ROWS = st.lists(st.tuples(CELL, CELL, CELL), min_size=0, max_size=30)


@FUZZ
@given(rows=ROWS, header=st.sampled_from(["input_tokens,output_tokens,timestamp", "ContextTokens,GeneratedTokens,"
                                          "TIMESTAMP", "a,b,c", ""]),
       junk=st.binary(max_size=64), suffix=st.sampled_from([".csv", ".jsonl", ".txt"]))
def test_trace_files(planted_db, rows, header, junk, suffix):
    path = WORK / f"trace{suffix}"
    if suffix == ".jsonl":
        text = "\n".join(json.dumps({"input_tokens": a, "output_tokens": b, "timestamp": c}) for a, b, c in rows)
        path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
    else:
        lines = [header] + [",".join(r) for r in rows]
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + junk)
    for args in (["workload", "stats", str(path)], ["workload", "bins", str(path), "--json"],
                 ["estimate", "--trace", str(path), "--db", str(planted_db), "--model", "llama-3.1-8b"]):
        code, _, err = run_cli(args)
        assert code in (0, 1, 2), (args, err)
        _one_line_error(code, err)


# -- sweep YAML ----------------------------------------------------------------------------------
SCALAR = st.one_of(INTS, FLOATS, st.booleans(), st.none(), st.text(max_size=6),
                   st.sampled_from(["max", "1..max", "tiny", "hf", "eager", "greedy", "cpu"]))
VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(st.text(max_size=5), SCALAR, max_size=2))
KEYS = st.sampled_from(["model", "engine", "mode", "decoding", "input_tokens", "output_tokens", "batch", "batch_size",
                        "repeats", "warmup", "seed", "device", "min_window_s", "cooldown_s", "idle_s",
                        "max_batch_cap", "max_batch_retries", "order", "cells", "tensor_parallel", "unknown"])
CONFIG = st.dictionaries(KEYS, VALUE, max_size=8).map(lambda d: {"model": "tiny", "device": "cpu", **d})


@FUZZ
@given(config=CONFIG)
def test_sweep_yaml_structures(config):
    path = WORK / "grid.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    code, _, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(WORK / "never.db")])
    assert code in (0, 1, 2), err
    _one_line_error(code, err)
    assert not (WORK / "never.db").exists()


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.sampled_from([b"\xe9t\xe9: 1\n", b"model: [" * 500, b"a: &a [1]\n" + b"".join(
                         b"%c: &%c [*%c, *%c, *%c, *%c]\n" % (98 + i, 98 + i, 97 + i, 97 + i, 97 + i, 97 + i)
                         for i in range(12)), b"- " * 300 + b"x", b"x: !!python/object:os.system ls"])))
def test_sweep_yaml_bytes(raw):
    path = WORK / "raw.yaml"
    path.write_bytes(raw)
    code, _, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(WORK / "never.db")])
    assert code in (0, 1, 2), err
    _one_line_error(code, err)


@FUZZ
@given(cell_id=NUMBER_TEXT, limit=NUMBER_TEXT)
def test_results_ids_and_limits(planted_db, cell_id, limit):
    for args in (["results", "show", cell_id, "--db", str(planted_db)],
                 ["results", "--limit", limit, "--db", str(planted_db)]):
        code, _, err = run_cli(args)
        assert code in (0, 2), err
        _one_line_error(code, err)


def test_numbers_are_finite_in_a_valid_dry_run():
    path = WORK / "ok.yaml"
    path.write_text("model: tiny\ndevice: cpu\ninput_tokens: [8, 16]\noutput_tokens: 4\nbatch: [1, 2]\n")
    code, out, err = run_cli(["sweep", str(path), "--dry-run", "--db", str(WORK / "never.db")])
    assert code == 0, err
    assert "4 cells" in out
