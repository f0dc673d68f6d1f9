"""The memory model and the predict -> confirm -> step-down largest batch, against planted limits."""

from __future__ import annotations

import pytest

from tokenjoule.errors import TokenjouleError
from tokenjoule.models.architecture import architecture_from_config
from tokenjoule.models.memory import MemoryProfile, calibrate, vllm_max_batch
from tokenjoule.models.registry import load_preset_config
from tokenjoule.runs.max_batch import confirm_max_batch, step_down

GIB = 1024 ** 3
# A planted device: 80 GiB, 16 GiB of weights, 1.5 GiB fixed workspace, Llama-3.1-8B KV bytes
# (bf16) and 200 KB of prefill activations per token in flight.
CAPACITY, WEIGHTS, FIXED, ACT = 80 * GIB, 16 * GIB, 1.5 * GIB, 200e3
KV = architecture_from_config(load_preset_config("llama-3.1-8b")).kv_bytes_per_token(2)


def planted_peak(rows: int, tokens_per_row: int) -> float:
    return WEIGHTS + FIXED + rows * tokens_per_row * (KV + ACT)


def planted_limit(i: int, o: int) -> int:
    """The largest batch whose planted peak fits the capacity (what a full search finds)."""
    return int((CAPACITY - WEIGHTS - FIXED) // ((i + o) * (KV + ACT)))


def test_kv_bytes_from_the_architecture():
    # 32 layers x 8 KV heads x 128 head dim x K and V x 2 bytes = 128 KiB per token
    assert KV == 2 * 32 * 8 * 128 * 2


def test_two_profiles_recover_the_planted_model():
    profiles = [MemoryProfile(r, 1024, planted_peak(r, 1024)) for r in (1, 4)]
    model = calibrate(profiles, capacity_bytes=CAPACITY, weights_bytes=WEIGHTS, kv_bytes_per_token=KV,
                      method="planted", headroom=1.0)
    assert model.activation_bytes_per_token == pytest.approx(ACT)
    assert model.fixed_bytes == pytest.approx(FIXED)
    for i, o in ((256, 64), (1024, 256), (8192, 512), (32, 8)):
        assert abs(model.predict_max_batch(i, o) - planted_limit(i, o)) <= 1
    # the default headroom stays below the limit, within 2%, so one confirming probe fits
    tight = calibrate(profiles, capacity_bytes=CAPACITY, weights_bytes=WEIGHTS, kv_bytes_per_token=KV,
                      method="planted")
    b, limit = tight.predict_max_batch(1024, 256), planted_limit(1024, 256)
    assert 0.96 * limit <= b <= limit
    assert tight.peak_bytes(b, 1024, 256) <= CAPACITY


def test_one_profile_puts_the_fixed_workspace_into_the_slope():
    model = calibrate([MemoryProfile(4, 1024, planted_peak(4, 1024))], capacity_bytes=CAPACITY,
                      weights_bytes=WEIGHTS, kv_bytes_per_token=KV, method="planted", headroom=1.0)
    assert model.fixed_bytes == 0.0 and model.activation_bytes_per_token > ACT  # conservative: predicts less
    assert model.predict_max_batch(1024, 256) <= planted_limit(1024, 256)


def test_beams_and_cap_bound_the_prediction():
    model = calibrate([MemoryProfile(r, 512, planted_peak(r, 512)) for r in (1, 2)], capacity_bytes=CAPACITY,
                      weights_bytes=WEIGHTS, kv_bytes_per_token=KV, method="planted", headroom=1.0)
    one = model.predict_max_batch(512, 128)
    assert model.predict_max_batch(512, 128, beams=4) == pytest.approx(one / 4, abs=1)
    assert model.predict_max_batch(512, 128, cap=64) == 64
    with pytest.raises(TokenjouleError):
        calibrate([], capacity_bytes=1, weights_bytes=0, kv_bytes_per_token=1, method="x")


def test_vllm_largest_batch_is_bounded_by_cache_and_scheduler():
    assert vllm_max_batch(100_000, 900, 100) == 100
    assert vllm_max_batch(100_000, 900, 100, beams=2) == 50
    assert vllm_max_batch(100_000, 90, 10, max_num_seqs=256) == 256
    assert vllm_max_batch(100_000, 90, 10, max_num_seqs=256, cap=128) == 128


def test_confirm_once_when_the_prediction_fits():
    probes = []

    def fits(b):
        probes.append(b)
        return b <= 500

    res = confirm_max_batch(fits, 480, cap=1024, method="memory-model")
    assert (res.max_batch, probes) == (480, [480])
    m = res.metrics()
    assert m["max_batch_predicted"] == 480 and m["max_batch_probes"] == 1 and m["max_batch_method"] == "memory-model"


def test_step_down_after_out_of_memory_until_a_probe_fits():
    res = confirm_max_batch(lambda b: b <= 300, 600, cap=1024, method="memory-model")
    sizes = [p["batch_size"] for p in res.probes]
    assert sizes == [600, 480, 384, 307, 245] and res.max_batch == 245
    assert [p["fits"] for p in res.probes] == [False, False, False, False, True]
    assert confirm_max_batch(lambda b: False, 3, cap=8, method="m").max_batch is None
    assert step_down(2) == 1 and step_down(1) == 1


def test_planted_engine_end_to_end_probe_count():
    """Prediction from two profiles of a planted device, confirmed by one probe on every bin."""
    model = calibrate([MemoryProfile(r, 1024, planted_peak(r, 1024)) for r in (1, 4)], capacity_bytes=CAPACITY,
                      weights_bytes=WEIGHTS, kv_bytes_per_token=KV, method="planted")
    bins = [(i, o) for i in (64, 256, 1024, 4096, 8192) for o in (16, 128, 512)]
    for i, o in bins:
        res = confirm_max_batch(lambda b: planted_peak(b, i + o) <= CAPACITY,
                                model.predict_max_batch(i, o, cap=4096), cap=4096, method="memory-model")
        assert len(res.probes) == 1
        assert res.max_batch >= 0.95 * min(planted_limit(i, o), 4096)


def test_resolver_vllm_uses_the_kv_cache_and_the_scheduler(store):
    from tokenjoule.runs.max_batch import MaxBatchResolver
    from tokenjoule.spec import RunSpec

    from tokenjoule.engines.base import CAP_KV_CACHE_TOKENS, CAP_PROBE_MEMORY, EngineBase

    class Vllm(EngineBase):
        name = "vllm"
        capabilities = frozenset({CAP_KV_CACHE_TOKENS, CAP_PROBE_MEMORY})
        probes: list = []

        def kv_cache_tokens(self):
            return 100_000

        def max_num_seqs(self):
            return 256

        def probe_memory(self, spec):
            self.probes.append(spec.batch_size)

    eng = Vllm()
    spec = RunSpec(model="tiny", engine="vllm", mode="graphs", input_tokens=900, output_tokens=100)
    res = MaxBatchResolver(store, cap=1024).resolve(eng, spec, "Fake GPU")
    assert (res.max_batch, res.method, eng.probes) == (100, "vllm-kv-cache", [100])
    short = spec.model_copy(update={"input_tokens": 90, "output_tokens": 10})
    assert MaxBatchResolver(store, cap=1024).resolve(eng, short, "Fake GPU").max_batch == 256  # max_num_seqs
