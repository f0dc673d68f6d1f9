"""The memory-model path with the real transformers engine and the `tiny` preset on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenjoule.engines.hf import HFEngine  # noqa: E402
from tokenjoule.runs.batch_search import engine_fits  # noqa: E402
from tokenjoule.runs.max_batch import calibrate_engine, predicted_max_batch, sampled_peak_rss  # noqa: E402
from tokenjoule.spec import RunSpec  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    e = HFEngine()
    e.load(RunSpec(model="tiny", device="cpu", batch_size=1, input_tokens=16, output_tokens=8))
    yield e
    e.close()


def test_sampled_rss_sees_an_allocation():
    holder = []
    before, peak = sampled_peak_rss(lambda: holder.append(bytearray(64 * 1024 * 1024)))
    assert peak - before >= 32 * 1024 * 1024


def test_tiny_calibration_and_one_confirming_probe(engine):
    spec = RunSpec(model="tiny", device="cpu", batch_size=1, input_tokens=64, output_tokens=16)
    model = calibrate_engine(engine, spec, rows=(1, 8), tokens_per_row=256)
    assert model.method == "rss-sampled" and len(model.profiles) == 2
    assert model.kv_bytes_per_token > 0 and model.activation_bytes_per_token >= 0
    assert model.capacity_bytes > model.weights_bytes > 0
    fits, how = engine_fits(engine, spec)
    res = predicted_max_batch(engine, spec, model, cap=16, fits=fits, how=how)
    # CPU memory dwarfs a tiny model's batch: the prediction reaches the cap and one probe confirms it
    assert res.predicted == 16 and res.max_batch == 16 and len(res.probes) == 1
    assert res.metrics()["max_batch_method"] == "memory-model (rss-sampled)"
