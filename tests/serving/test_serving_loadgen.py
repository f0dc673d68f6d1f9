"""The load generator against the mock server: timing invariants, failures, concurrency."""

import pytest

from serving.mock_server import MockConfig
from tokenjoule.serving.arrivals import ArrivalSpec
from tokenjoule.serving.client import completion_body
from tokenjoule.serving.loadgen import LoadConfig, max_in_flight, run_load_sync
from tokenjoule.workloads.request import Request


def _run(srv, requests, arrival=None, **kw):
    cfg = LoadConfig(url=srv.url, model="mock", arrival=arrival or ArrivalSpec("poisson", rate_rps=200, seed=0),
                     vocab_size=512, **kw)
    return run_load_sync(cfg, requests)


def test_latency_minus_ttft_is_the_sum_of_inter_token_gaps(mock_server):
    srv = mock_server(MockConfig(ttft_s=0.005, token_delays_s=[0.001, 0.003]))
    reqs = [Request(8 + i, 3 + i % 5) for i in range(12)]
    res = _run(srv, reqs)
    assert len(res.records) == 12
    for req, rec in zip(reqs, res.records):
        assert rec.ok, rec.error
        assert rec.e2e_s - rec.ttft_s == pytest.approx(sum(rec.itl_s), abs=1e-9)
        # One token per chunk: usage count = requested, and one gap fewer than tokens.
        assert rec.output_tokens == req.output_tokens and rec.output_tokens_source == "usage"
        assert rec.prompt_tokens == req.input_tokens
        assert len(rec.itl_s) == req.output_tokens - 1
        assert rec.ttft_s >= 0.005 - 0.002  # the scripted first-token delay (lower bound only)
        assert rec.done_s >= rec.actual_send_s + rec.e2e_s
        assert rec.tpot_s == pytest.approx((rec.e2e_s - rec.ttft_s) / (rec.output_tokens - 1))


def test_request_bodies_ask_for_exact_lengths(mock_server):
    srv = mock_server()
    _run(srv, [Request(5, 7)])
    body = srv.bodies[0]
    assert len(body["prompt"]) == 5 and body["max_tokens"] == body["min_tokens"] == 7
    assert body["ignore_eos"] is True and body["stream"] is True
    openai = completion_body("m", [11, 12], 3, dialect="openai")
    assert openai["prompt"] == "t11 t12" and "min_tokens" not in openai and "ignore_eos" not in openai


@pytest.mark.parametrize("mode", ["abort", "event"])
def test_mid_stream_error_is_a_failure_and_the_run_continues(mock_server, mode):
    srv = mock_server(MockConfig(token_delays_s=[0.001], fail_prompt_tokens={13}, error_after_tokens=2,
                                 error_mode=mode))
    reqs = [Request(8, 5), Request(13, 6), Request(9, 4), Request(13, 6), Request(10, 5)]
    res = _run(srv, reqs, arrival=ArrivalSpec("constant", rate_rps=100))
    failed = [r for r in res.records if not r.ok]
    assert [r.index for r in failed] == [1, 3]
    assert all(r.error for r in failed)
    assert all(r.ok and r.output_tokens == reqs[r.index].output_tokens for r in res.records if r.index not in (1, 3))


def test_unreachable_server_is_recorded_not_raised(mock_server):
    srv = mock_server()
    srv.stop()
    res = _run(srv, [Request(4, 2)] * 3)
    assert all(not r.ok and r.error for r in res.records)


def test_http_error_is_recorded(mock_server):
    srv = mock_server()
    cfg = LoadConfig(url=srv.url, model="m", arrival=ArrivalSpec("constant", rate_rps=50), vocab_size=512,
                     endpoint="/v1/nowhere")
    res = run_load_sync(cfg, [Request(4, 2)])
    assert res.records[0].error.startswith("HTTP 404")


def test_closed_loop_never_exceeds_concurrency(mock_server):
    srv = mock_server(MockConfig(ttft_s=0.002, token_delays_s=[0.001]))
    res = _run(srv, [Request(4, 3 + i % 4) for i in range(30)], arrival=ArrivalSpec("closed", concurrency=4))
    assert all(r.ok for r in res.records)
    assert srv.max_in_flight == 4  # filled, never exceeded
    assert max_in_flight(res.records) <= 4


def test_open_loop_sends_in_schedule_order_not_before_target(mock_server):
    srv = mock_server()
    arrival = ArrivalSpec("poisson", rate_rps=100, seed=5)
    res = _run(srv, [Request(4, 2)] * 20, arrival=arrival)
    assert [r.targeted_send_s for r in res.records] == pytest.approx(arrival.schedule(20))
    assert all(r.send_lag_s >= 0 for r in res.records)


def test_trace_replay_sends_at_scaled_trace_times(mock_server):
    srv = mock_server()
    reqs = [Request(4, 2, arrival_s=t) for t in (50.0, 50.2, 50.6, 51.0)]
    res = _run(srv, reqs, arrival=ArrivalSpec("trace", speedup=4.0))
    assert [r.targeted_send_s for r in res.records] == pytest.approx([0.0, 0.05, 0.15, 0.25])
    assert all(r.actual_send_s >= r.targeted_send_s for r in res.records)


def test_slow_body_encoding_never_delays_the_first_sends(mock_server, monkeypatch):
    # Encoding long prompts takes time; it must happen before the run's clock starts, or the
    # first requests go out late and the schedule collapses into a catch-up burst.
    import time as _time

    import tokenjoule.serving.loadgen as loadgen

    real = loadgen.synthetic_prompt

    def slow_prompt(*args, **kw):
        _time.sleep(0.02)
        return real(*args, **kw)

    monkeypatch.setattr(loadgen, "synthetic_prompt", slow_prompt)
    srv = mock_server()
    reqs = [Request(8, 2) for _ in range(25)]  # 0.5 s of encoding
    res = _run(srv, reqs, arrival=ArrivalSpec("constant", rate_rps=100))
    lags = [r.actual_send_s - r.targeted_send_s for r in res.records]
    assert max(lags) < 0.2


def test_run_start_without_prepared_bodies_is_refused():
    from tokenjoule.serving.loadgen import run_load

    cfg = LoadConfig(url="http://127.0.0.1:9", model="m", arrival=ArrivalSpec("constant", rate_rps=1))
    import asyncio

    with pytest.raises(ValueError, match="prepare_bodies"):
        asyncio.run(run_load(cfg, [Request(4, 2)], run_start=0.0))
