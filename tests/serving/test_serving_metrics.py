"""Online metrics on hand-made request timelines: steady window, goodput, energy arithmetic."""

import pytest

from tokenjoule.energy.measurement import Measurement, PowerSample
from tokenjoule.serving.client import RequestRecord
from tokenjoule.serving.online_metrics import (
    goodput_count, in_flight_steps, integrate_power_j, percentile, steady_window, summarize, token_times,
)


def rec(i, send, done, ttft=0.1, out=3, error=None):
    """A finished request: tokens evenly spread from send+ttft to done (e2e = done - send)."""
    e2e = done - send
    gaps = [(e2e - ttft) / (out - 1)] * (out - 1) if out > 1 else []
    return RequestRecord(index=i, input_tokens=10, output_tokens_requested=out, targeted_send_s=send,
                         actual_send_s=send, ttft_s=None if error else ttft, itl_s=[] if error else gaps,
                         e2e_s=None if error else e2e, done_s=done, output_tokens=None if error else out,
                         error=error)


TIMELINE = [rec(0, 0, 10), rec(1, 1, 10), rec(2, 2, 11), rec(3, 3, 12), rec(4, 8, 13)]


def test_in_flight_steps():
    levels = dict(in_flight_steps(TIMELINE))
    assert levels[0] == 1 and levels[3] == 4 and levels[8] == 5 and levels[13] == 0


def test_steady_window_rule_on_a_hand_made_timeline():
    # Sending period [0, 8]: C=1,2,3 for 1 s each, C=4 for 5 s -> full level 4 (time-weighted
    # median), first reached at t=3; the window closes at the last send (t=8).
    w = steady_window(TIMELINE)
    assert (w.start_s, w.end_s, w.full_level, w.duration_s) == (3, 8, 4.0, 5)


def test_steady_window_absent_with_reason():
    w = steady_window([rec(0, 0, 1)])
    assert w.start_s is None and "fewer than two" in w.reason
    # Every request finishes before the next is sent: level 1 from the first send -> the window
    # is the whole sending period.
    w = steady_window([rec(0, 0, 1), rec(1, 2, 3), rec(2, 4, 5)])
    assert (w.start_s, w.end_s) == (0, 4)


def test_goodput_hand_computed():
    records = [
        rec(0, 0, 0.5, ttft=0.1, out=5),  # TPOT 100 ms
        rec(1, 0, 0.5, ttft=0.3, out=5),  # TTFT 300 ms, TPOT 50 ms
        rec(2, 0, 0.1, ttft=0.1, out=1),  # no TPOT (one token)
        rec(3, 0, 0.2, error="boom"),
    ]
    assert records[0].tpot_s == pytest.approx(0.1) and records[2].tpot_s is None
    assert goodput_count(records, None, None) == 3
    assert goodput_count(records, 200, None) == 2
    assert goodput_count(records, 200, 80) == 1
    assert goodput_count(records, 400, 80) == 2


def test_integrate_power_piecewise_linear():
    samples = [PowerSample(0, (100.0,)), PowerSample(1, (200.0,)), PowerSample(2, (150.0, 50.0)),
               PowerSample(3, (100.0,))]
    # total power 100, 200, 200, 100 -> [0.5, 2.5]: 87.5 + 200 + 87.5
    assert integrate_power_j(samples, 0.5, 2.5) == pytest.approx(375.0)
    assert integrate_power_j(samples, 0.0, 3.0) == pytest.approx(150 + 200 + 150)
    assert integrate_power_j(samples, 2.0, 4.0) is None  # not covered
    assert integrate_power_j([[0, [10.0]], [2, [10.0]]], 0, 2) == pytest.approx(20.0)


def test_percentile_and_token_times():
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([], 99) is None
    r = rec(0, 1.0, 2.0, ttft=0.2, out=3)
    assert token_times(r) == pytest.approx([1.2, 1.6, 2.0])


def test_summarize_energy_arithmetic():
    records = [rec(0, 0, 0.5, ttft=0.1, out=5), rec(1, 0.1, 0.6, ttft=0.1, out=5), rec(2, 0.2, 0.3, out=1),
               rec(3, 0.3, 0.4, error="x")]
    samples = tuple(PowerSample(t / 10, (100.0,)) for t in range(0, 11))
    m = Measurement(method="simulated", duration_s=1.0, gpu_energy_j=120.0, samples=samples, idle_power_w=50.0)
    out = summarize(records, duration_s=0.6, measurement=m, slo_ttft_ms=150, meter_offset_s=0.05)
    assert out["requests_ok"] == 3 and out["requests_failed"] == 1
    assert out["output_tokens_total"] == 11
    assert out["energy_j"] == 120.0
    assert out["energy_per_request_j"] == pytest.approx(40.0)
    assert out["energy_per_output_token_j"] == pytest.approx(120 / 11)
    assert out["energy_per_output_token_j"] * out["output_tokens_total"] == pytest.approx(out["energy_j"])
    assert out["avg_power_w"] == pytest.approx(120.0)
    assert out["throughput_tokens_per_s"] == pytest.approx(11 / 0.6)
    assert out["goodput_rps"] == pytest.approx(3 / 0.6)
    assert out["active_energy_j"] == pytest.approx(120 - 50 * 1.0)
    # Steady window: constant 100 W timeline -> 100 W x window length.
    assert out["steady_energy_j"] == pytest.approx(100.0 * out["steady_duration_s"])
    assert out["steady_energy_method"] == "timeline"
    for key in ("ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50", "itl_ms_p99", "e2e_ms_p50",
                "send_lag_ms_p99"):
        assert out[key] is not None


def test_summarize_without_energy_or_timeline_says_why():
    records = [rec(0, 0, 1), rec(1, 0.5, 1.5), rec(2, 0.7, 2)]
    out = summarize(records, 2.0, None)
    assert out["energy_j"] is None and out["energy_per_request_j"] is None and out["steady_energy_j"] is None
    m = Measurement(method="estimate-cpu-time", duration_s=2.0, gpu_energy_j=None, gpu_energy_reason="no GPU")
    out = summarize(records, 2.0, m)
    assert out["energy_per_output_token_j"] is None
    assert out["steady_energy_reason"] == "the meter recorded no power timeline"


def test_failed_power_reads_are_skipped_not_read_as_zero():
    samples = [(0.0, (100.0,)), (0.5, ()), (1.0, (100.0, None)), (2.0, (100.0,))]
    assert integrate_power_j(samples, 0.0, 2.0) == pytest.approx(200.0)
