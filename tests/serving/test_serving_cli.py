"""serve-bench / compare-serving end to end on CPU: mock server + simulated meter + store."""

import json

import pytest

from serving.mock_server import MockConfig
from tokenjoule.cli.main import main
from tokenjoule.serving.compare import comparison_metrics, relative_difference
from tokenjoule.store.db import ResultStore


def test_serve_bench_url_stores_an_online_row(mock_server, tmp_path, capsys):
    srv = mock_server(MockConfig(ttft_s=0.003, token_delays_s=[0.001], fail_prompt_tokens={33}))
    db = tmp_path / "r.db"
    rc = main(["serve-bench", "--url", srv.url, "--model", "tiny", "--arrival", "poisson", "--rate", "200",
               "--input-tokens", "16", "--output-tokens", "6", "--n-requests", "40", "--meter", "simulated",
               "--idle-s", "0", "--warmup-requests", "1", "--slo-ttft-ms", "1000", "--db", str(db), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    with ResultStore(db) as store:
        rows = store.find(kind="online")
    assert len(rows) == 1 and rows[0].id == printed["id"]
    row = rows[0]
    m = row.metrics
    assert row.spec["engine"] == "url" and row.spec["arrival"] == {"process": "poisson", "rate_rps": 200.0, "seed": 0}
    assert row.spec["n_requests"] == 40 and row.spec["slo_ttft_ms"] == 1000
    assert m["requests_ok"] == 40 and m["requests_failed"] == 0 and m["output_tokens_total"] == 240
    # Simulated meter draws 300 W: energy = 300 W x window; per-token figures follow from it.
    assert m["energy_j"] == pytest.approx(300.0 * m["meter_duration_s"], rel=1e-6)
    assert m["energy_per_output_token_j"] * 240 == pytest.approx(m["energy_j"])
    assert m["energy_per_request_j"] * 40 == pytest.approx(m["energy_j"])
    assert m["goodput_rps"] == pytest.approx(40 / m["duration_s"])
    assert len(srv.bodies) == 41  # one warm-up request + the load
    requests = row.measurement["requests"]
    assert len(requests) == 40 and len(row.measurement["warmup_requests"]) == 1
    for r in requests:
        for key in ("targeted_send_s", "actual_send_s", "ttft_s", "itl_s", "e2e_s", "output_tokens", "error"):
            assert key in r
        assert r["e2e_s"] - r["ttft_s"] == pytest.approx(sum(r["itl_s"]), abs=1e-9)
    assert row.measurement["method"] == "simulated"


def test_serve_bench_trace_replay_with_clipping(mock_server, tmp_path, capsys):
    srv = mock_server()
    db = tmp_path / "r.db"
    rc = main(["serve-bench", "--url", srv.url, "--model", "tiny", "--arrival", "trace", "--speedup", "200",
               "--trace", "azure-conv-2023", "--n-requests", "15", "--max-input-tokens", "64",
               "--max-output-tokens", "4", "--meter", "simulated", "--idle-s", "0", "--warmup-requests", "0",
               "--db", str(db), "--json"])
    assert rc == 0
    with ResultStore(db) as store:
        row = store.find(kind="online")[0]
    assert row.metrics["requests_ok"] == 15
    assert all(len(b["prompt"]) <= 64 and b["max_tokens"] <= 4 for b in srv.bodies)
    assert row.spec["arrival"] == {"process": "trace", "speedup": 200.0}


@pytest.mark.parametrize("args,needle", [
    (["--url", "http://127.0.0.1:1", "--launch", "vllm", "--rate", "1"], "exactly one of"),
    (["--rate", "1"], "exactly one of"),
    (["--url", "http://127.0.0.1:1", "--arrival", "bursty"], "unknown arrival process"),
    (["--url", "http://127.0.0.1:1", "--arrival", "poisson"], "--rate"),
    (["--url", "127.0.0.1:1", "--rate", "1"], "must start with http"),
    (["--launch", "sglang", "--rate", "1"], "unknown launcher"),
])
def test_serve_bench_bad_input_is_one_line(args, needle, tmp_path, capsys):
    rc = main(["serve-bench", "--model", "tiny", "--input-tokens", "4", "--output-tokens", "2",
               "--meter", "simulated", "--db", str(tmp_path / "r.db"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_serve_bench_unreachable_server_stores_failures_not_a_crash(tmp_path, capsys):
    rc = main(["serve-bench", "--url", "http://127.0.0.1:9", "--model", "tiny", "--rate", "100",
               "--input-tokens", "4", "--output-tokens", "2", "--n-requests", "3", "--meter", "simulated",
               "--idle-s", "0", "--warmup-requests", "0", "--db", str(tmp_path / "r.db"), "--json"])
    assert rc == 1  # nothing succeeded: a failed cell, exit 1, one line
    assert "no request succeeded" in capsys.readouterr().err
    with ResultStore(tmp_path / "r.db") as store:
        row = store.find(kind="online", status="failed")[0]
        assert store.find(kind="online") == []
    assert row.metrics["requests_failed"] == 3 and row.metrics["energy_per_request_j"] is None


def test_compare_serving_without_vllm_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    rc = main(["compare-serving", "--trace", "azure-conv-2023", "--model", "tiny", "--engine", "vllm",
               "--db", str(tmp_path / "r.db")])
    err = capsys.readouterr().err
    assert rc == 2 and "vLLM is not installed" in err and "pip install" in err and err.count("\n") == 1
    rc = main(["compare-serving", "--trace", "azure-conv-2023", "--model", "tiny", "--engine", "hf",
               "--db", str(tmp_path / "r.db")])
    assert rc == 2 and "unknown engine for compare-serving" in capsys.readouterr().err


def test_relative_difference_sign_convention():
    # Online used more energy than offline for the same requests -> negative.
    assert relative_difference(100.0, 130.0) == pytest.approx(-0.3)
    assert relative_difference(100.0, 80.0) == pytest.approx(0.2)
    assert relative_difference(None, 80.0) is None and relative_difference(0.0, 1.0) is None
    out = comparison_metrics({"energy_j": 100.0, "requests_ok": 10, "output_tokens_total": 50},
                             {"energy_j": 150.0, "requests_ok": 10, "output_tokens_total": 50})
    assert out["offline_energy_per_request_j"] == 10.0 and out["online_energy_per_output_token_j"] == 3.0
    assert out["relative_difference"] == pytest.approx(-0.5)


def test_run_compare_with_injected_runners(tmp_path):
    from tokenjoule.energy.simulated import SimulatedMeter
    from tokenjoule.serving.compare import CompareConfig, run_compare
    from tokenjoule.store.db import CellRecord

    seen = {}

    def online(cfg, store, meter, on_stage):
        rec = CellRecord(spec={"model": cfg.model}, spec_hash="x", kind="online",
                         metrics={"energy_j": 90.0, "requests_ok": 5, "output_tokens_total": 20, "duration_s": 3.0})
        store.add(rec)
        return rec

    def offline(cfg, requests, meter, avoid=()):
        seen["n"] = len(requests)
        return {"energy_j": 60.0, "requests_ok": 5, "output_tokens_total": 20, "duration_s": 1.0, "method": "x"}

    with ResultStore(tmp_path / "r.db") as store:
        out = run_compare(CompareConfig(trace="azure-conv-2023", model="tiny", n_requests=5), store,
                          meter=SimulatedMeter(), offline_runner=offline, online_runner=online)
        assert seen["n"] == 5
        assert out["relative_difference"] == pytest.approx(-0.5)
        offline_row = store.get(out["offline_cell"])
        assert offline_row.kind == "offline" and offline_row.metrics["compared_online_cell"] == out["online_cell"]


def test_serve_bench_encodes_prompts_before_the_run_and_its_window(mock_server, tmp_path, capsys, monkeypatch):
    # Slow prompt encoding (long prompts, many requests) must not count as send lag or fall
    # inside the measured window: the first requests would otherwise go out in a burst.
    import time as _time

    import tokenjoule.serving.loadgen as loadgen

    real = loadgen.synthetic_prompt

    def slow_prompt(*args, **kw):
        _time.sleep(0.02)
        return real(*args, **kw)

    monkeypatch.setattr(loadgen, "synthetic_prompt", slow_prompt)
    srv = mock_server(MockConfig(ttft_s=0.001, token_delays_s=[0.001]))
    db = tmp_path / "r.db"
    rc = main(["serve-bench", "--url", srv.url, "--model", "tiny", "--arrival", "constant", "--rate", "100",
               "--input-tokens", "8", "--output-tokens", "2", "--n-requests", "30", "--meter", "simulated",
               "--idle-s", "0", "--warmup-requests", "0", "--db", str(db), "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)["metrics"]
    assert m["send_lag_ms_p99"] < 200  # 30 x 20 ms = 600 ms of encoding happened before the run
    assert m["meter_duration_s"] < 0.29 + 0.3 + 0.5  # schedule (0.29 s) + streams, not + encoding


def test_serve_bench_launch_vllm_without_vllm_is_one_line_and_stores_nothing(tmp_path, capsys, monkeypatch):
    import tokenjoule.engines.vllm_offline as vllm_offline

    monkeypatch.setattr(vllm_offline, "vllm_available", lambda: False)
    db = tmp_path / "r.db"
    rc = main(["serve-bench", "--launch", "vllm", "--model", "tiny", "--input-tokens", "4", "--output-tokens", "2",
               "--rate", "1", "--db", str(db)])
    err = capsys.readouterr().err
    assert rc == 2 and "vLLM is not installed" in err and len(err.strip().splitlines()) == 1
    assert not db.exists()
