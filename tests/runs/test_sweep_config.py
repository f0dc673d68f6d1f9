"""Sweep config: grid expansion, explicit cells, presets, and errors naming key and line."""

from __future__ import annotations

import pytest

from tokenjoule.runs.sweep_config import SweepConfigError, load_config, parse_config
from tokenjoule.runs.sweep_presets import build_preset


def _error(text: str) -> str:
    with pytest.raises(SweepConfigError) as info:
        parse_config(text, "grid.yaml").expand()
    return str(info.value)


def test_grid_is_the_product_of_list_axes():
    cfg = parse_config("model: tiny\ninput_tokens: [8, 16, 32]\noutput_tokens: [4, 8]\nbatch: [1, 2]\n"
                       "decoding: [greedy, {strategy: beam, num_beams: 3}]\n")
    plans = cfg.expand()
    assert len(plans) == 3 * 2 * 2 * 2
    assert len({p.key for p in plans}) == len(plans)
    beams = [p for p in plans if p.spec.decoding.strategy == "beam"]
    assert {p.spec.decoding.num_beams for p in beams} == {3}


def test_cells_inherit_top_level_and_duplicates_are_kept_once():
    cfg = parse_config("model: tiny\nwarmup: 0\nrepeats: 1\nbatch_size: [1, 8]\ncells:\n"
                       "  - {input_tokens: [16, 32], output_tokens: 4}\n"
                       "  - {input_tokens: 16, output_tokens: [4, 8], repeats: 2}\n"
                       "  - {input_tokens: 32, output_tokens: 4}\n")
    plans = cfg.expand()
    # cell 1: 2x2; cell 2: 1x2x2 (repeats differ, so none duplicates cell 1); cell 3 duplicates cell 1.
    assert len(plans) == 4 + 4
    assert {p.spec.warmup for p in plans} == {0}
    assert {(p.spec.input_tokens, p.spec.repeats) for p in plans} == {(16, 1), (32, 1), (16, 2)}


def test_batch_max_and_upto_max():
    cfg = parse_config("model: tiny\nmax_batch_cap: 16\ncells:\n  - {batch_size: max}\n  - {batch: 1..max, input_tokens: 8}\n")
    kinds = [(p.batch, p.spec.batch_size) for p in cfg.expand()]
    assert kinds[0] == ("max", 1)
    assert kinds[1:] == [("upto-max", b) for b in (1, 2, 4, 8, 16)] + [("max", 1)]


def test_emitted_bins_config_is_accepted(tmp_path):
    from tokenjoule.workloads import write_sweep

    cells = [{"model": "llama-3.1-8b", "engine": "hf", "mode": "eager", "decoding": "greedy",
              "input_tokens": i, "output_tokens": o, "batch_size": "max"} for i, o in ((512, 64), (1024, 8))]
    path = write_sweep(tmp_path / "bins.yaml", cells, comments=["from a test"])
    plans = load_config(path).expand()
    assert [(p.spec.input_tokens, p.spec.output_tokens, p.batch) for p in plans] == [(512, 64, "max"), (1024, 8, "max")]


@pytest.mark.parametrize("text, where, key", [
    ("model: tiny\ninput_tokens: [8, 0]\n", "grid.yaml:2", "input_tokens"),
    ("model: tiny\noutput_tokens: 4\nbatch: lots\n", "grid.yaml:3", "batch_size"),
    ("model: tiny\ncells:\n  - {input_tokens: 8}\n  - {input_tokens: 8, outptu_tokens: 3}\n", "grid.yaml:4", "outptu_tokens"),
    ("model: tiny\ncells:\n  - input_tokens: 8\n    mode: turbo\n", "grid.yaml:4", "mode"),
    ("model: tiny\n\nengine: hf\nmode: graphs\n", "grid.yaml:4", "mode"),
    ("model: tiny\ndecoding: [greedy, nucleus]\n", "grid.yaml:2", "decoding"),
    ("model: tiny\ndecoding: {strategy: beam, num_beams: 1}\n", "grid.yaml:2", "decoding"),
    ("model: tiny\ncooldown_s: -1\n", "grid.yaml:2", "cooldown_s"),
    ("input_tokens: 8\n", "grid.yaml", "model"),
])
def test_errors_name_key_and_line(text, where, key):
    message = _error(text)
    assert message.startswith(where + ":"), message
    assert key in message
    assert "\n" not in message


def test_error_lists_valid_names():
    assert "valid: greedy, sample, beam, speculative" in _error("model: tiny\ndecoding: nucleus\n")
    assert "valid: eager, compile, cudagraphs" in _error("model: tiny\nmode: turbo\n")


def test_not_yaml_or_not_a_mapping(tmp_path):
    assert _error("model: [tiny\n").startswith("grid.yaml:2: not valid YAML")
    assert "expected a mapping" in _error("- 1\n- 2\n")
    with pytest.raises(SweepConfigError, match="no such sweep config"):
        load_config(tmp_path / "missing.yaml")


def test_override_device_reaches_every_cell():
    cfg = parse_config("model: tiny\ndevice: cuda\ncells:\n  - {input_tokens: 8, device: cuda:1}\n  - {input_tokens: 16}\n")
    assert {p.spec.device for p in cfg.override(device="cpu").expand()} == {"cpu"}


# -- presets: documented cell counts (see PRESET_HELP) ---------------------------------------
@pytest.mark.parametrize("name, quick, cells", [
    ("paper-lengths", False, 162), ("paper-lengths", True, 28),
    ("paper-decoding", False, 25), ("paper-decoding", True, 10),
    ("paper-moe", False, 6), ("paper-moe", True, 6),
    ("paper-frameworks", False, 36), ("paper-frameworks", True, 9),
])
def test_presets_expand_to_documented_cells(name, quick, cells):
    cfg = build_preset(name, quick=quick, with_vllm=False)
    assert len(cfg.expand()) == cells
    assert {p.spec.repeats for p in cfg.expand()} == ({2} if quick else {3})


def test_preset_details():
    lengths = build_preset("paper-lengths").expand()
    pairs = {(p.spec.input_tokens, p.spec.output_tokens) for p in lengths}
    assert (32768, 64) in pairs and (32768, 8) in pairs and (512, 4096) in pairs and (64, 4096) in pairs
    assert {p.spec.batch_size for p in lengths} == {1, 8, 64}
    decoding = build_preset("paper-decoding").expand()
    spec = [p.spec for p in decoding if p.spec.decoding.strategy == "speculative"]
    assert {s.decoding.draft_model for s in spec} == {"llama-3.2-1b"} and {s.decoding.lookahead_tokens for s in spec} == {4}
    assert {s.batch_size for s in spec} == {1}  # transformers' assisted generation: batch 1 only
    assert {p.spec.batch_size for p in decoding} == {1, 2, 4, 8, 16, 32, 64, 128}
    # A model without a known draft keeps the other three strategies.
    assert len(build_preset("paper-decoding", model="olmo-7b").expand()) == 24
    assert {p.spec.model for p in build_preset("paper-moe").expand()} == {"olmo-1b", "olmo-7b", "olmoe-1b-7b"}
    assert {p.spec.model for p in build_preset("paper-moe", model="tiny").expand()} == {"tiny"}
    vllm = build_preset("paper-frameworks", with_vllm=True).expand()
    assert len(vllm) == 60 and {(p.spec.engine, p.spec.mode) for p in vllm if p.spec.engine == "vllm"} == {
        ("vllm", "eager"), ("vllm", "graphs")}


def test_paper_bins_preset_covers_every_occupied_bin():
    from tokenjoule.workloads import bin_workload, load_trace

    occupied = set(bin_workload(load_trace("azure-code-2023")).counts)
    plans = build_preset("paper-bins", trace="azure-code-2023").expand()
    assert {(p.spec.input_tokens, p.spec.output_tokens) for p in plans} == occupied
    assert {p.batch for p in plans} == {"max"}
    quick = build_preset("paper-bins", trace="azure-code-2023", quick=True).expand()
    assert 1 <= len(quick) <= 8 and {(p.spec.input_tokens, p.spec.output_tokens) for p in quick} <= occupied
    fast = build_preset("paper-bins-fast", trace="azure-code-2023")
    assert fast.max_batch_method == "predict" and {p.spec.protocol for p in fast.expand()} == {"adaptive"}
    assert [(p.spec.input_tokens, p.spec.output_tokens) for p in fast.expand()] == [
        (p.spec.input_tokens, p.spec.output_tokens) for p in plans]  # the same bins, same order


def test_unknown_preset_and_misplaced_trace():
    from tokenjoule.errors import TokenjouleError, UnknownNameError

    with pytest.raises(UnknownNameError, match="paper-bins"):
        build_preset("paper-everything")
    with pytest.raises(TokenjouleError, match="--trace applies to --preset paper-bins"):
        build_preset("paper-moe", trace="azure-code-2023")
