"""Model presets (architecture-only config dicts) and name resolution.

A preset is a Hugging Face `config.json` stored in `presets/<name>.json`; building it gives a
real-size model with random weights, which is enough for energy work (energy depends on shapes
and token counts, not on weight values). Anything containing "/" is taken as a Hugging Face
id instead and is loaded with `from_pretrained` (needs the Hub or a local cache).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from tokenjoule.errors import TokenjouleError, UnknownNameError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SOURCES_FILE = PRESET_DIR / "SOURCES.md"

# Preset name -> JSON file. Listed explicitly (not globbed) so a stray file is not a preset.
PRESETS: dict[str, Path] = {
    name: PRESET_DIR / f"{name}.json"
    for name in (
        "llama-3.1-8b",
        "llama-3.2-1b",
        "olmo-1b",
        "olmo-7b",
        "olmoe-1b-7b",
        "qwen1.5-32b",
        "r1-distill-qwen-32b",
        "r1-distill-qwen-1.5b",
        "smollm2-135m",
        "smollm2-360m",
        "tiny",
    )
}

# Default draft model for speculative decoding, by target model family (same tokenizer/vocab).
DEFAULT_DRAFTS: dict[str, str] = {
    "llama-3.1-8b": "llama-3.2-1b",
    "r1-distill-qwen-32b": "r1-distill-qwen-1.5b",
    "smollm2-360m": "smollm2-135m",
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a preset (config known offline) or a Hugging Face id."""

    kind: Literal["preset", "hf-id"]
    name: str
    config: dict[str, Any] | None  # the preset's config dict; None for an HF id

    @property
    def is_preset(self) -> bool:
        return self.kind == "preset"


def list_presets() -> list[str]:
    """Preset names, in a stable order."""
    return list(PRESETS)


@lru_cache(maxsize=None)
def _load_json(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_preset_config(name: str) -> dict[str, Any]:
    """The preset's config dict (a fresh copy the caller may modify)."""
    if name not in PRESETS:
        raise UnknownNameError("model preset", name, list_presets())
    path = PRESETS[name]
    try:
        return json.loads(_load_json(str(path)))
    except (OSError, json.JSONDecodeError) as exc:  # a broken install, not user input
        raise TokenjouleError(f"preset {name!r} could not be read from {path}: {exc}") from exc


def resolve_model(name_or_id: str) -> ModelSource:
    """A preset name gives its config; anything with "/" is an HF id; other names are errors."""
    name = (name_or_id or "").strip()
    if name in PRESETS:
        return ModelSource("preset", name, load_preset_config(name))
    if "/" in name:
        return ModelSource("hf-id", name, None)
    raise UnknownNameError(
        "model preset", name_or_id, list_presets() + ["(or a Hugging Face id such as org/model)"]
    )


def default_draft_for(model: str) -> str | None:
    """The draft preset used for speculative decoding when the spec names none."""
    if model in DEFAULT_DRAFTS:
        return DEFAULT_DRAFTS[model]
    if model.startswith("llama") or "llama" in model.lower():
        return "llama-3.2-1b"
    return None


@lru_cache(maxsize=1)
def preset_sources() -> dict[str, str]:
    """Preset name -> Hugging Face repo id the config was taken from (parsed from SOURCES.md).

    Section headers look like `## llama-3.1-8b.json: meta-llama/Llama-3.1-8B (base). ...`.
    """
    out: dict[str, str] = {}
    try:
        text = SOURCES_FILE.read_text(encoding="utf-8")
    except OSError:
        return out
    for m in re.finditer(r"^##\s+([\w.\-]+)\.json:\s+\*{0,2}([\w.\-]+/[\w.\-]+)", text, re.M):
        out[m.group(1)] = m.group(2).rstrip(".")
    return out


def context_tokens(model: str) -> int | None:
    """The preset's context window (max_position_embeddings); None for an HF id or unknown."""
    try:
        src = resolve_model(model)
    except TokenjouleError:
        return None
    value = (src.config or {}).get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def check_context(model: str, input_tokens: int, output_tokens: int) -> None:
    """Raise a one-line error when input + output tokens exceed a preset's context window.
    (HF ids are checked by the engine when it loads the config.)"""
    window = context_tokens(model)
    if window is not None and input_tokens + output_tokens > window:
        raise TokenjouleError(f"input_tokens + output_tokens = {input_tokens + output_tokens:,} exceeds the "
                              f"{window:,}-token context of {model}")
