"""The largest-batch search: exact answer, logarithmic number of probes, cached in the store."""

from __future__ import annotations

import math

import pytest

from fakes.clock_meter import FakeClock
from fakes.sweep_fakes import LimitEngine
from tokenjoule.runs.batch_search import BISECTION_RESOLUTION, find_max_batch, max_batch_key, search_max_batch
from tokenjoule.spec import RunSpec

SPEC = RunSpec(model="tiny", device="cpu", input_tokens=64, output_tokens=8)


@pytest.mark.parametrize("limit", list(range(1, 130)) + [255, 256, 257, 511, 700, 1000, 1023])
def test_search_finds_planted_limit_in_log_probes(limit):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= limit

    result = search_max_batch(fits, cap=1024, resolution=0)
    assert result.max_batch == limit
    assert len(result.probes) == len(tried) <= 2 * math.log2(limit) + 2
    assert [p["batch_size"] for p in result.probes] == tried
    assert all(p["fits"] == (p["batch_size"] <= limit) for p in result.probes)


@pytest.mark.parametrize("limit", [1, 31, 32, 33, 87, 350, 700, 1000, 1023])
def test_default_search_lands_within_its_resolution_below_the_limit(limit):
    tried = []

    def fits(b):
        tried.append(b)
        return b <= limit

    result = search_max_batch(fits, cap=1024)
    assert limit * (1 - BISECTION_RESOLUTION) - 1 <= result.max_batch <= limit
    assert result.max_batch == limit or limit >= 32  # exact below 32
    assert len(tried) <= len(search_max_batch(lambda b: b <= limit, cap=1024, resolution=0).probes)


def test_search_stops_at_cap_and_reports_nothing_fits():
    assert search_max_batch(lambda b: True, cap=1024).max_batch == 1024
    assert search_max_batch(lambda b: True, cap=100).max_batch == 100
    assert search_max_batch(lambda b: b <= 99, cap=100, resolution=0).max_batch == 99
    none = search_max_batch(lambda b: False, cap=1024)
    assert none.max_batch is None and len(none.probes) == 1


def test_find_max_batch_uses_probe_memory_and_caches(store):
    engine = LimitEngine(limit_batch=300, clock=FakeClock())
    engine.load(SPEC)
    first = find_max_batch(store, engine, SPEC, "Fake GPU", cap=1024)
    assert 300 * (1 - BISECTION_RESOLUTION) - 1 <= first.max_batch <= 300 and not first.cached
    assert len(engine.probes) <= 2 * math.log2(300) + 2
    assert engine.calls == []  # probes only, no generate
    assert store.get_max_batch(max_batch_key(SPEC, "Fake GPU", 1024)) == first.max_batch
    n_probes = len(engine.probes)
    again = find_max_batch(store, engine, SPEC, "Fake GPU", cap=1024)
    assert again.max_batch == first.max_batch and again.cached and len(engine.probes) == n_probes
    # Another GPU, other lengths or another cap are other keys.
    other = SPEC.model_copy(update={"input_tokens": 128})
    assert max_batch_key(other, "Fake GPU", 1024) != max_batch_key(SPEC, "Fake GPU", 1024)
    assert max_batch_key(SPEC, "Other GPU", 1024) != max_batch_key(SPEC, "Fake GPU", 1024)
    assert max_batch_key(SPEC, "Fake GPU", 512) != max_batch_key(SPEC, "Fake GPU", 1024)


def test_find_max_batch_without_probe_uses_generate(store):
    from fakes.fake_engine import FakeEngine

    engine = FakeEngine(oom_at_batch=21)  # generate raises out-of-memory from batch 21 on
    engine.load(SPEC)
    result = find_max_batch(store, engine, SPEC, "Fake GPU", cap=1024)
    assert result.max_batch == 20
    assert {p["how"] for p in result.probes} == {"generate"}


def test_non_memory_error_propagates(store):
    class Broken(LimitEngine):
        def probe_memory(self, spec):
            raise ValueError("kernel missing")

    engine = Broken()
    with pytest.raises(ValueError, match="kernel missing"):
        find_max_batch(store, engine, SPEC, "Fake GPU", cap=64)
    assert store.get_max_batch(max_batch_key(SPEC, "Fake GPU", 64)) is None
