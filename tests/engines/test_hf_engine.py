"""The transformers engine, generating for real with the `tiny` preset on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenjoule.engines.base import get_engine  # noqa: E402
from tokenjoule.engines.hf import HFEngine  # noqa: E402
from tokenjoule.engines.hf_decoding import check_supported  # noqa: E402
from tokenjoule.errors import TokenjouleError, UnknownNameError  # noqa: E402
from tokenjoule.spec import DecodingSpec, RunSpec  # noqa: E402

requires_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")


def cpu_spec(**kw) -> RunSpec:
    base = dict(model="tiny", device="cpu", batch_size=3, input_tokens=17, output_tokens=9)
    return RunSpec(**(base | kw))


@pytest.fixture(scope="module")
def engine():
    e = HFEngine()
    e.load(cpu_spec())
    yield e
    e.close()


@pytest.mark.parametrize(
    "decoding",
    [DecodingSpec(), DecodingSpec(strategy="sample", temperature=0.8, top_p=0.95), DecodingSpec(strategy="beam", num_beams=3)],
    ids=["greedy", "sample", "beam"],
)
def test_exact_output_counts(engine, decoding):
    spec = cpu_spec(decoding=decoding)
    result = engine.generate(spec)
    assert result.input_tokens == [17, 17, 17]
    assert result.output_tokens == [9, 9, 9]
    assert result.total_output_tokens == 27
    assert result.duration_s > 0
    assert result.acceptance_rate is None
    assert result.extra["decoding"] == decoding.strategy


def test_output_tokens_override_and_model_reuse(engine):
    model_before = engine._loaded.model
    one = engine.generate(cpu_spec(batch_size=2, input_tokens=5), output_tokens=1)
    assert one.output_tokens == [1, 1]
    assert engine._loaded.model is model_before  # other shapes reuse the loaded model


def test_get_engine_by_name():
    assert isinstance(get_engine("hf"), HFEngine)


def test_speculative_tiny_draft(engine):
    spec = cpu_spec(batch_size=1, output_tokens=12, decoding=DecodingSpec(strategy="speculative", draft_model="tiny"))
    result = engine.generate(spec)
    assert result.output_tokens == [12]
    assert result.acceptance_rate is not None and 0.0 <= result.acceptance_rate <= 1.0
    extra = result.extra
    assert extra["proposed_tokens"] > 0
    assert 0 <= extra["accepted_tokens"] <= extra["proposed_tokens"]
    assert extra["accepted_tokens"] / extra["proposed_tokens"] == result.acceptance_rate
    # every verification step yields the accepted tokens plus one from the target
    assert extra["accepted_tokens"] + extra["verification_steps"] == 12
    assert "random-weight" in extra["note"]
    assert engine.provenance()["draft_model"] == "tiny"


def test_identical_draft_is_always_accepted():
    # A draft that *is* the target must have every proposal accepted: checks the counter.
    e = HFEngine()
    spec = cpu_spec(batch_size=1, output_tokens=15, decoding=DecodingSpec(strategy="speculative", draft_model="tiny", lookahead_tokens=4))
    e.load(spec)
    e._draft = e._loaded
    result = e.generate(spec)
    e.close()
    assert result.output_tokens == [15]
    assert result.acceptance_rate == 1.0
    # 4 accepted + 1 bonus per step: 15 tokens in 3 steps
    assert result.extra["verification_steps"] == 3


def test_speculative_batch_above_one_is_rejected(engine):
    spec = cpu_spec(batch_size=2, decoding=DecodingSpec(strategy="speculative", draft_model="tiny"))
    with pytest.raises(TokenjouleError, match="batch_size 1 only"):
        engine.generate(spec)


def test_speculative_needs_eager_mode():
    spec = RunSpec(model="tiny", mode="cudagraphs", batch_size=1, decoding=DecodingSpec(strategy="speculative"))
    with pytest.raises(TokenjouleError, match="mode eager only"):
        check_supported(spec)


def test_speculative_without_default_draft_fails_before_loading():
    e = HFEngine()
    spec = RunSpec(model="olmo-7b", device="cpu", batch_size=1, decoding=DecodingSpec(strategy="speculative"))
    with pytest.raises(TokenjouleError, match="needs decoding.draft_model"):
        e.load(spec)
    assert e._loaded is None


@requires_cpu_only
@pytest.mark.parametrize("mode", ["compile", "cudagraphs"])
def test_gpu_modes_on_cpu_are_a_clear_error(mode):
    e = HFEngine()
    with pytest.raises(TokenjouleError, match=f"mode {mode} needs a CUDA GPU; valid on CPU: eager"):
        e.load(cpu_spec(mode=mode))
    with pytest.raises(TokenjouleError, match="needs a CUDA GPU"):
        e.generate(cpu_spec(mode=mode))


def test_unknown_model_lists_presets():
    with pytest.raises(UnknownNameError, match="llama-3.1-8b"):
        HFEngine().load(cpu_spec(model="llama-99b"))


def test_wrong_output_count_is_detected(engine, monkeypatch):
    real_generate = engine._loaded.model.generate

    def short_generate(**kw):
        return real_generate(**(kw | {"max_new_tokens": 3, "min_new_tokens": 3}))

    monkeypatch.setattr(engine._loaded.model, "generate", short_generate)
    with pytest.raises(TokenjouleError, match="expected 3 sequences of 9 new tokens, got 3 of 3"):
        engine.generate(cpu_spec())


def test_probe_memory_fits_on_cpu(engine):
    assert engine.probe_memory(cpu_spec(batch_size=4, input_tokens=32, output_tokens=16)) is None


def test_provenance_and_devices(engine):
    engine.generate(cpu_spec())
    prov = engine.provenance()
    assert prov["model_params"] == prov["model_active_params"] == 139_584
    assert prov["torch_version"] and prov["transformers_version"]
    assert prov["dtype"] == "float32" and prov["attn_implementation"]
    assert engine.device_indices() == []


# ----- GPU ------------------------------------------------------------------------------------
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@gpu
@needs_cuda
@pytest.mark.parametrize("mode", ["eager", "compile", "cudagraphs"])
def test_gpu_modes_exact_counts(mode):
    e = HFEngine()
    spec = RunSpec(model="tiny", device="cuda", mode=mode, batch_size=2, input_tokens=32, output_tokens=8)
    try:
        e.load(spec)
        for _ in range(2):  # the first call compiles
            result = e.generate(spec)
        assert result.output_tokens == [8, 8]
        assert e.device_indices() == [0]
        assert result.extra["kv_cache"] == ("dynamic" if mode == "eager" else "reused")
    finally:
        e.close()


@gpu
@needs_cuda
def test_gpu_cudagraphs_are_replayed_not_rerecorded(monkeypatch):
    # The kept StaticCache keeps its tensors' addresses, so after the calls that record the
    # decode-step graphs, later calls of the same shape only replay them.
    trees = pytest.importorskip("torch._inductor.cudagraph_trees")
    manager = trees.CUDAGraphTreeManager
    if not hasattr(manager, "record_function"):
        pytest.skip("this torch's CUDA graph trees have no record_function to count")
    recorded = [0]
    real_record = manager.record_function

    def record_function(self, *args, **kwargs):
        recorded[0] += 1
        return real_record(self, *args, **kwargs)

    monkeypatch.setattr(manager, "record_function", record_function)
    e = HFEngine()
    spec = RunSpec(model="tiny", device="cuda", mode="cudagraphs", batch_size=2, input_tokens=32, output_tokens=8)
    try:
        for _ in range(2):  # compile, warm up, record
            e.generate(spec)
        assert recorded[0] > 0  # graphs were really used
        before = recorded[0]
        for _ in range(2):
            result = e.generate(spec)
        assert result.output_tokens == [8, 8] and result.extra["kv_cache"] == "reused"
        assert recorded[0] == before
    finally:
        e.close()


@gpu
@needs_cuda
def test_gpu_probe_memory_raises_oom_for_an_impossible_batch():
    e = HFEngine()
    spec = RunSpec(model="smollm2-135m", device="cuda", batch_size=100_000, input_tokens=4096, output_tokens=64)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            e.probe_memory(spec)
        e.probe_memory(spec.model_copy(update={"batch_size": 1}))  # memory was freed
    finally:
        e.close()


def test_mode_kwargs_select_cache_and_compile_mode():
    from tokenjoule.engines.hf_decoding import mode_kwargs

    assert mode_kwargs("eager") == {"disable_compile": True}
    assert mode_kwargs("compile")["cache_implementation"] == "static"
    assert mode_kwargs("compile")["compile_config"].mode == "default"
    assert mode_kwargs("cudagraphs")["compile_config"].mode == "reduce-overhead"
    with pytest.raises(TokenjouleError, match="valid: eager, compile, cudagraphs"):
        mode_kwargs("turbo")


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_static_cache_path_gives_exact_counts_on_cpu(engine, strategy):
    # The compiled modes' static KV cache, run uncompiled on CPU: same arguments otherwise.
    from tokenjoule.engines.hf_decoding import decoding_kwargs

    spec = cpu_spec(decoding=DecodingSpec(strategy=strategy))
    ids = torch.randint(20, 400, (3, 17))
    lm = engine._loaded
    for new in (9, 4):  # a shorter call after a longer one
        engine._reset_static_cache_size(lm.model)
        out = lm.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
            pad_token_id=2, cache_implementation="static", disable_compile=True, **decoding_kwargs(spec),
        )
        assert out.shape == (3, 17 + new)


# ----- the kept static cache of the compiled modes (run uncompiled on CPU) --------------------
import warnings  # noqa: E402

from tokenjoule.engines import hf as hf_module  # noqa: E402
from tokenjoule.engines.hf_decoding import (  # noqa: E402
    StaticCachePool,
    cache_kwarg_name,
    static_cache_len,
)


def _slots(cache) -> int:
    return cache.layers[0].max_cache_len


def _cpu_static_engine() -> HFEngine:
    """An engine that runs the compiled modes on CPU: its device check is lifted, and
    transformers itself skips compilation off GPU, so the static-cache path runs eagerly with
    the same arguments."""
    e = HFEngine()
    e._check_mode = lambda spec, device: None  # instance only: other engines keep the check
    return e


@pytest.fixture(scope="module")
def static_engine():
    """A CPU engine in mode cudagraphs; a spy on `generate` records each call's cache object,
    arguments and output sequences."""
    e = _cpu_static_engine()
    e.load(cpu_spec(mode="cudagraphs"))
    real_generate = e._loaded.model.generate
    calls: list[dict] = []

    def spy(**kw):
        out = real_generate(**kw)
        calls.append({"cache": kw.get(cache_kwarg_name()), "kwargs": kw, "sequences": out.clone()})
        return out

    e._loaded.model.generate = spy
    e.calls = calls
    yield e
    e.close()


def test_same_shape_reuses_one_static_cache(static_engine):
    spec = cpu_spec(mode="cudagraphs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = static_engine.generate(spec)
        second = static_engine.generate(spec)
    assert not [w for w in caught if "past_key_values" in str(w.message)]  # the non-deprecated keyword
    a, b = static_engine.calls[-2:]
    assert a["cache"] is not None and b["cache"] is a["cache"]
    assert second.extra["kv_cache"] == "reused"
    assert first.output_tokens == second.output_tokens == [9, 9, 9]
    assert "cache_implementation" not in b["kwargs"]  # transformers refuses it next to a cache
    assert b["kwargs"]["compile_config"].mode == "reduce-overhead"


def test_other_shape_gets_another_cache_and_the_first_is_kept(static_engine):
    static_engine.generate(cpu_spec(mode="cudagraphs"))
    cache_a = static_engine.calls[-1]["cache"]
    other = static_engine.generate(cpu_spec(mode="cudagraphs", batch_size=2, input_tokens=5, output_tokens=4))
    cache_b = static_engine.calls[-1]["cache"]
    assert other.output_tokens == [4, 4]
    assert cache_b is not cache_a
    assert _slots(cache_b) == 9 and _slots(cache_a) == 26
    back = static_engine.generate(cpu_spec(mode="cudagraphs"))
    assert static_engine.calls[-1]["cache"] is cache_a and back.extra["kv_cache"] == "reused"
    assert back.output_tokens == [9, 9, 9]


def test_reused_cache_gives_the_tokens_of_a_fresh_cache(static_engine):
    # greedy: a first call on a new cache; then other prompts of the same shape fill that cache;
    # then the first call again, on the reused and reset cache, must give the same tokens.
    # (The seed stays fixed: it also seeds the weights, so another seed would load another model.)
    spec = cpu_spec(mode="cudagraphs", batch_size=2, input_tokens=11, output_tokens=7)
    assert static_engine.generate(spec).extra["kv_cache"] == "new"
    first = static_engine.calls[-1]
    lm = static_engine._loaded
    ids = first["kwargs"]["input_ids"]
    common = dict(max_new_tokens=7, min_new_tokens=7, pad_token_id=first["kwargs"]["pad_token_id"],
                  do_sample=False, num_beams=1, disable_compile=True)
    other = (ids + 7) % 400 + 20
    first["cache"].reset()
    lm.model.generate(input_ids=other, attention_mask=torch.ones_like(other), **common,
                      **{cache_kwarg_name(): first["cache"]})
    assert not torch.equal(static_engine.calls[-1]["sequences"][:, 11:], first["sequences"][:, 11:])
    assert static_engine.generate(spec).extra["kv_cache"] == "reused"
    again = static_engine.calls[-1]
    assert again["cache"] is first["cache"]
    assert torch.equal(again["sequences"], first["sequences"])
    # and the same tokens as transformers' own per-call static cache
    static_engine._reset_static_cache_size(lm.model)
    fresh = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache_implementation="static", **common)
    assert torch.equal(fresh, first["sequences"])


def test_prefill_only_call_uses_the_cells_cache(static_engine):
    spec = cpu_spec(mode="cudagraphs")
    static_engine.generate(spec)
    full = static_engine.calls[-1]["cache"]
    prefill = static_engine.generate(spec, output_tokens=1)
    assert prefill.output_tokens == [1, 1, 1]
    assert static_engine.calls[-1]["cache"] is full  # same length: the full run's prefill work
    longer = static_engine.generate(spec, output_tokens=12)
    assert longer.output_tokens == [12, 12, 12]
    assert _slots(static_engine.calls[-1]["cache"]) == 17 + 12


def test_sampling_reuses_the_cache_and_beam_search_does_not(static_engine):
    sample = cpu_spec(mode="compile", decoding=DecodingSpec(strategy="sample"))
    static_engine.generate(sample)
    assert static_engine.generate(sample).extra["kv_cache"] == "reused"
    beam = cpu_spec(mode="compile", decoding=DecodingSpec(strategy="beam", num_beams=3))
    result = static_engine.generate(beam)
    kw = static_engine.calls[-1]["kwargs"]
    assert result.extra["kv_cache"] == "per-call" and result.output_tokens == [9, 9, 9]
    assert kw["cache_implementation"] == "static" and cache_kwarg_name() not in kw


def test_decode_steps_still_use_the_compiled_forward(static_engine, monkeypatch):
    # transformers compiles only on GPU unless the config says otherwise; with that flag set and
    # get_compiled_call spied (returning the plain forward), generate must pick the compiled call
    # for our kept StaticCache exactly as it does for its own.
    from transformers import CompileConfig

    if not hasattr(CompileConfig, "_compile_all_devices"):
        pytest.skip("this transformers has no CompileConfig._compile_all_devices")
    real_config = hf_module.compile_config

    def all_devices(mode):
        cfg = real_config(mode)
        cfg._compile_all_devices = True
        return cfg

    monkeypatch.setattr(hf_module, "compile_config", all_devices)
    model = static_engine._loaded.model
    asked: list = []

    def get_compiled_call(cfg):
        asked.append(cfg)
        return model.__call__

    monkeypatch.setattr(model, "get_compiled_call", get_compiled_call)
    result = static_engine.generate(cpu_spec(mode="cudagraphs"))
    assert result.output_tokens == [9, 9, 9]
    assert asked and asked[0].mode == "reduce-overhead"


def test_close_frees_the_static_caches():
    e = _cpu_static_engine()
    e.generate(cpu_spec(mode="compile", batch_size=1, output_tokens=2))
    assert len(e._static_caches) == 1
    e.close()
    assert len(e._static_caches) == 0 and e._loaded is None


def test_static_cache_len_is_exact():
    spec = cpu_spec()  # 17 in, 9 out
    assert static_cache_len(spec, 9) == 26
    assert static_cache_len(spec, 1) == 26  # prefill-only call: the cell's cache
    assert static_cache_len(spec, 12) == 29


def _pool_get(pool, model, rows, length):
    return pool.get(model, rows, length, torch.float32, torch.device("cpu"))


def test_pool_drops_least_recently_used_beyond_max_entries(engine):
    model = engine._loaded.model
    pool = StaticCachePool(max_entries=2)
    a, new_a = _pool_get(pool, model, 1, 32)
    b, _ = _pool_get(pool, model, 2, 32)
    assert new_a is False and b is not a
    assert _pool_get(pool, model, 1, 32) == (a, True)  # a is now the most recent
    _pool_get(pool, model, 3, 32)  # evicts b
    assert len(pool) == 2
    assert _pool_get(pool, model, 1, 32)[0] is a
    b2, reused = _pool_get(pool, model, 2, 32)
    assert b2 is not b and reused is False
    pool.clear()
    assert len(pool) == 0
    with pytest.raises(TokenjouleError, match="max_entries must be >= 1"):
        StaticCachePool(max_entries=0)


@pytest.mark.parametrize("available_gib, kept", [(100, 2), (1, 1)])
def test_pool_drops_other_shapes_only_when_memory_is_tight(engine, available_gib, kept):
    model = engine._loaded.model
    gib = 1024**3
    pool = StaticCachePool(memory_bytes=lambda device: (available_gib * gib, 80 * gib))
    first, _ = _pool_get(pool, model, 1, 32)
    _pool_get(pool, model, 2, 32)
    assert len(pool) == kept  # 1 GiB free < 16 GiB headroom (20 % of 80): the first cache goes
    assert (_pool_get(pool, model, 1, 32)[0] is first) == (kept == 2)
