"""Arrival schedules: requested rate, seed-stable order, trace replay speed-up, bad input."""

import numpy as np
import pytest

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.serving.arrivals import ArrivalSpec, trace_schedule


@pytest.mark.parametrize("process,kw", [("poisson", {}), ("gamma", {"burstiness": 0.5}),
                                        ("gamma", {"burstiness": 4.0}), ("constant", {})])
def test_schedule_has_requested_rate(process, kw):
    rate = 20.0
    times = ArrivalSpec(process, rate_rps=rate, seed=3, **kw).schedule(5000)
    gaps = np.diff(times)
    assert times[0] == 0.0 and len(times) == 5000
    assert np.all(gaps >= 0)
    assert abs(gaps.mean() - 1 / rate) / (1 / rate) < 0.05


def test_gamma_burstiness_sets_the_spread():
    # Gamma gaps with shape k have coefficient of variation 1/sqrt(k).
    for k in (0.25, 1.0, 4.0):
        gaps = np.diff(ArrivalSpec("gamma", rate_rps=10, burstiness=k, seed=1).schedule(5000))
        assert abs(gaps.std() / gaps.mean() - 1 / np.sqrt(k)) < 0.1 / np.sqrt(k)


def test_constant_gaps_are_exact():
    assert ArrivalSpec("constant", rate_rps=4).schedule(4) == pytest.approx([0, 0.25, 0.5, 0.75])


def test_seed_stable_and_seed_sensitive():
    a = ArrivalSpec("poisson", rate_rps=5, seed=7).schedule(100)
    assert a == ArrivalSpec("poisson", rate_rps=5, seed=7).schedule(100)
    assert a != ArrivalSpec("poisson", rate_rps=5, seed=8).schedule(100)
    # A longer schedule starts with the same arrivals (prefix-stable).
    assert ArrivalSpec("poisson", rate_rps=5, seed=7).schedule(200)[:100] == a


def test_trace_replay_honours_speedup():
    assert trace_schedule([10.0, 12.0, 15.0], speedup=2.0) == pytest.approx([0.0, 1.0, 2.5])
    spec = ArrivalSpec("trace", speedup=4.0)
    assert spec.schedule(2, [100.0, 108.0, 120.0]) == pytest.approx([0.0, 2.0])


def test_closed_loop_has_no_schedule():
    assert ArrivalSpec("closed", concurrency=3).schedule(10) is None


def test_to_dict_records_only_what_applies():
    assert ArrivalSpec("gamma", rate_rps=2, burstiness=0.5, seed=4).to_dict() == {
        "process": "gamma", "rate_rps": 2, "burstiness": 0.5, "seed": 4}
    assert ArrivalSpec("closed", concurrency=8).to_dict() == {"process": "closed", "concurrency": 8}


@pytest.mark.parametrize("kwargs,exc", [
    ({"process": "poisson"}, TokenjouleError),
    ({"process": "poisson", "rate_rps": 0}, TokenjouleError),
    ({"process": "gamma", "rate_rps": 1, "burstiness": 0}, TokenjouleError),
    ({"process": "closed"}, TokenjouleError),
    ({"process": "trace", "speedup": -1}, TokenjouleError),
    ({"process": "bursty"}, UnknownNameError),
])
def test_bad_arrival_specs_are_one_line_errors(kwargs, exc):
    with pytest.raises(exc) as info:
        ArrivalSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_trace_replay_needs_timestamps():
    with pytest.raises(TokenjouleError, match="timestamp"):
        trace_schedule([0.0, None])
    with pytest.raises(TokenjouleError, match="non-decreasing"):
        trace_schedule([2.0, 1.0])
