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
