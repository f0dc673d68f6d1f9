"""The high-acceptance bracket of speculative decoding: the target drafting for itself, and
prompts built to repeat (for n-gram speculation). Real transformers generation, tiny preset."""

from __future__ import annotations

import pytest

from tokenjoule.engines.tokens import repeating_prompts, synthetic_prompts
from tokenjoule.spec import SELF_DRAFT, DecodingSpec, RunSpec

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenjoule.engines.hf import HFEngine  # noqa: E402


def _spec(**dec) -> RunSpec:
    return RunSpec(model="tiny", device="cpu", batch_size=1, input_tokens=16, output_tokens=15, warmup=0,
                   repeats=1, decoding=DecodingSpec(strategy="speculative", lookahead_tokens=4, **dec))


def test_self_draft_accepts_every_proposal_and_loads_no_second_model():
    engine = HFEngine()
    try:
        result = engine.generate(_spec(draft_model=SELF_DRAFT))
        assert engine._draft is engine._loaded  # the same module, not a copy
        provenance = engine.provenance()
    finally:
        engine.close()
    assert result.output_tokens == [15]
    assert result.acceptance_rate == 1.0
    assert result.extra["draft_is_target"] is True
    # 4 accepted + 1 from the target per verification step: 15 tokens in 3 steps
    assert result.extra["verification_steps"] == 3
    assert provenance["draft_model"] == SELF_DRAFT


def test_self_draft_and_separate_draft_bracket_the_acceptance():
    engine = HFEngine()
    try:
        high = engine.generate(_spec(draft_model=SELF_DRAFT)).acceptance_rate
        low = engine.generate(_spec(draft_model="tiny")).acceptance_rate  # seed + 1: another model
    finally:
        engine.close()
    assert low is not None and high == 1.0 and low < high


def test_repeat_prompt_is_hashed_only_when_set():
    plain = DecodingSpec(strategy="speculative", draft_model="tiny")
    assert "repeat_prompt" not in plain.canonical()  # existing spec hashes do not move
    assert DecodingSpec(strategy="speculative", repeat_prompt=True).canonical()["repeat_prompt"] is True
    assert "repeat_prompt" not in DecodingSpec(strategy="greedy", repeat_prompt=True).canonical()
    assert RunSpec(model="tiny", decoding=plain).spec_hash() != RunSpec(
        model="tiny", decoding=plain.model_copy(update={"repeat_prompt": True})).spec_hash()


def test_repeating_prompts_repeat_a_pattern_of_the_period():
    prompts = repeating_prompts(3, 40, vocab_size=1000, seed=0, period_tokens=16)
    assert [len(p) for p in prompts] == [40, 40, 40]
    for p in prompts:
        assert p[:16] == p[16:32] and p[32:] == p[:8]
    assert prompts[0] != prompts[1]
    assert repeating_prompts(1, 40, 1000, 0)[0] == prompts[0]  # independent of the batch
    assert prompts[0] != synthetic_prompts(1, 40, 1000, 0)[0]


def test_hf_generates_on_repeating_prompts():
    engine = HFEngine()
    try:
        spec = _spec(draft_model=SELF_DRAFT, repeat_prompt=True).model_copy(update={"input_tokens": 40})
        result = engine.generate(spec)
        ids = next(iter(engine._prompt_cache.values()))[0][0].tolist()
    finally:
        engine.close()
    assert result.output_tokens == [15]
    assert ids[:16] == ids[16:32]


def test_vllm_self_draft_points_at_the_targets_own_config_without_vllm():
    import json
    from pathlib import Path

    from tokenjoule.engines.vllm_offline import VLLMEngine

    engine = object.__new__(VLLMEngine)  # no vLLM here: only the config building is exercised
    engine._tmp, engine._config, engine._avoid, engine.llm = [], {}, (), None
    spec = RunSpec(model="llama-3.1-8b", engine="vllm", mode="graphs", batch_size=4,
                   decoding=DecodingSpec(strategy="speculative", draft_model=SELF_DRAFT, lookahead_tokens=4))
    target_dir, dummy = engine._model_dir(spec.model)
    config = engine._speculative_config(spec)
    try:
        assert dummy and config["num_speculative_tokens"] == 4
        draft_cfg = json.loads((Path(config["model"]) / "config.json").read_text())
        assert draft_cfg == json.loads((Path(target_dir) / "config.json").read_text())
        assert engine._config["vocab_size"] == draft_cfg["vocab_size"]  # the target's config is kept
        ngram = engine._speculative_config(spec.model_copy(update={"decoding": DecodingSpec(
            strategy="speculative", ngram=True, repeat_prompt=True)}))
        assert ngram["method"] == "ngram"
    finally:
        for tmp in engine._tmp:
            tmp.cleanup()
