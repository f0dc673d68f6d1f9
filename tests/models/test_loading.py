"""Building models from presets: parameter counts of the real transformers modules."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenjoule.errors import TokenjouleError, UnknownNameError  # noqa: E402
from tokenjoule.models.architecture import architecture_from_config  # noqa: E402
from tokenjoule.models.loading import (  # noqa: E402
    config_from_preset,
    count_params,
    load_model,
    resolve_device,
    resolve_dtype,
)
from tokenjoule.models.registry import list_presets, load_preset_config  # noqa: E402


@pytest.mark.parametrize("name", list_presets())
def test_architecture_count_equals_transformers_module_count(name):
    # Built on the meta device: shapes only, no memory, so even the 32B presets are instant.
    from transformers import AutoModelForCausalLM

    cfg = load_preset_config(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_from_preset(cfg))
    assert count_params(model) == architecture_from_config(cfg).params_total


@pytest.mark.parametrize("name", ["tiny", "smollm2-135m"])
def test_real_cpu_build_matches_architecture(name):
    lm = load_model(name, "cpu")
    arch = architecture_from_config(load_preset_config(name))
    assert sum(p.numel() for p in lm.model.parameters()) == arch.params_total
    assert lm.dtype == torch.float32 and lm.device.type == "cpu"
    assert not lm.model.training


def test_random_weights_are_seeded_and_not_zero():
    a = load_model("tiny", "cpu", seed=0).model
    b = load_model("tiny", "cpu", seed=0).model
    c = load_model("tiny", "cpu", seed=1).model
    wa = a.model.layers[0].mlp.up_proj.weight
    assert wa.abs().sum() > 0 and wa.std() > 0
    assert torch.equal(wa, b.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(wa, c.model.layers[0].mlp.up_proj.weight)


def test_explicit_dtype_is_used():
    lm = load_model("tiny", "cpu", dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_device_and_dtype_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    with pytest.raises(UnknownNameError, match="float32"):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(UnknownNameError, match="cuda:N"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_device_without_gpu_is_a_clear_error():
    with pytest.raises(TokenjouleError, match="needs a CUDA GPU"):
        resolve_device("cuda")


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="tiny"):
        load_model("not-a-model", "cpu")


def test_unloadable_hf_id_is_one_line_error():
    with pytest.raises(TokenjouleError, match="could not load Hugging Face model") as info:
        load_model("./no such dir/model", "cpu")
    assert "\n" not in str(info.value)
