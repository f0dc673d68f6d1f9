"""Model presets, architecture shapes (parameter/KV counts) and model loading.

`architecture` and `registry` import no heavy packages; `loading` imports torch and
transformers and is imported only where a model is built.
"""

from tokenjoule.models.architecture import Architecture, architecture_from_config
from tokenjoule.models.registry import (
    PRESETS,
    ModelSource,
    list_presets,
    load_preset_config,
    resolve_model,
)

__all__ = [
    "PRESETS",
    "Architecture",
    "ModelSource",
    "architecture_from_config",
    "list_presets",
    "load_preset_config",
    "resolve_model",
]
