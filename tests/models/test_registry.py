"""Preset registry and name resolution."""

from __future__ import annotations

import pytest

from tokenjoule.errors import UnknownNameError
from tokenjoule.models.registry import (
    PRESETS,
    default_draft_for,
    list_presets,
    load_preset_config,
    preset_sources,
    resolve_model,
)


def test_every_preset_file_exists_and_loads():
    assert "tiny" in list_presets()
    for name, path in PRESETS.items():
        assert path.is_file(), name
        cfg = load_preset_config(name)
        assert cfg["model_type"] in {"llama", "olmo", "olmoe", "qwen2"}


def test_load_preset_returns_a_copy():
    a = load_preset_config("tiny")
    a["hidden_size"] = 1
    assert load_preset_config("tiny")["hidden_size"] == 64


def test_resolve_preset_and_hf_id():
    src = resolve_model("tiny")
    assert src.kind == "preset" and src.config["vocab_size"] == 512
    hf = resolve_model("meta-llama/Llama-3.1-8B")
    assert hf.kind == "hf-id" and hf.config is None


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        resolve_model("llama-9b")
    msg = str(info.value)
    assert "llama-9b" in msg
    for name in list_presets():
        assert name in msg
    with pytest.raises(UnknownNameError):
        load_preset_config("nope")


def test_sources_give_hf_repo_for_every_real_preset():
    sources = preset_sources()
    assert set(sources) == set(list_presets()) - {"tiny"}
    assert sources["llama-3.1-8b"] == "meta-llama/Llama-3.1-8B"
    assert all("/" in v for v in sources.values())


def test_default_drafts():
    assert default_draft_for("llama-3.1-8b") == "llama-3.2-1b"
    assert default_draft_for("olmo-7b") is None
