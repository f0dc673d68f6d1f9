"""The paper-decoding-brackets preset: the two acceptance brackets and their greedy baselines."""

from __future__ import annotations

import pytest

from tokenjoule.errors import TokenjouleError
from tokenjoule.runs.sweep_presets import build_preset


def _cells(**kw):
    return [p.spec for p in build_preset("paper-decoding-brackets", **kw).expand()]


def test_hf_brackets_run_at_batch_one_with_both_drafts_and_a_baseline():
    specs = _cells(with_vllm=False)
    assert {(s.engine, s.batch_size) for s in specs} == {("hf", 1)}
    assert [s.decoding.strategy for s in specs] == ["greedy", "speculative", "speculative"]
    assert {s.decoding.draft_model for s in specs if s.decoding.strategy == "speculative"} == {"llama-3.2-1b", "self"}


def test_vllm_brackets_cover_every_batch_with_a_baseline_and_ngram_on_repeating_prompts():
    specs = [s for s in _cells(with_vllm=True, quick=True) if s.engine == "vllm"]
    batches = {s.batch_size for s in specs}
    assert batches == {1, 16, 128}
    for b in batches:
        at = [s.decoding for s in specs if s.batch_size == b]
        assert sum(d.strategy == "greedy" for d in at) == 1
        assert {d.draft_model for d in at if d.strategy == "speculative" and not d.ngram} == {"llama-3.2-1b", "self"}
        assert {d.repeat_prompt for d in at if d.ngram} == {False, True}
    assert len({s.spec_hash() for s in specs}) == len(specs)


def test_a_model_without_a_draft_is_a_clear_error():
    with pytest.raises(TokenjouleError, match="known draft"):
        build_preset("paper-decoding-brackets", model="olmo-7b", with_vllm=False)
