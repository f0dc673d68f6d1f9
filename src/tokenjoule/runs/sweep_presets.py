"""The paper's experiment grids as built-in sweeps (`tokenjoule sweep --preset NAME`).

Each preset is a plain config dict (the same format as a YAML sweep file), built from the
options `--model`, `--quick`, `--trace` and `--with-vllm`. `--quick` keeps each figure's
shape but drops points so a preset fits a short GPU session; PRESET_HELP says what it drops.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.runs.sweep_config import SweepConfig, config_from_dict

DEFAULT_MODEL = "llama-3.1-8b"
MOE_MODELS = ("olmo-1b", "olmo-7b", "olmoe-1b-7b")
DEFAULT_BIN_TRACES = ("azure-conv-2023", "azure-code-2023")
# Draft models for speculative decoding (same tokenizer family, much smaller).
DRAFT_MODELS = {"llama-3.1-8b": "llama-3.2-1b", "r1-distill-qwen-32b": "r1-distill-qwen-1.5b",
                "smollm2-360m": "smollm2-135m", "tiny": "tiny"}
# Figure 6: tensor-parallel sizes per model (a 32B model in bf16 is measured from 2 GPUs on).
PARALLEL_MODELS = ("llama-3.1-8b", "r1-distill-qwen-32b")
PARALLEL_TP = {"r1-distill-qwen-32b": [2, 4]}
DEFAULT_TP = [1, 2, 4]
PARALLEL_BATCHES = [1, 64]
QUICK_RUNS = {"warmup": 1, "repeats": 2}
FULL_RUNS = {"warmup": 2, "repeats": 3}
QUICK_BIN_SHARE = 0.8  # --quick paper-bins: the most requested bins holding 80% of requests...
QUICK_BIN_MAX = 8  # ...but at most this many

PRESET_HELP = {
    "paper-lengths": "Figure 2: input 2^0..2^15 at output 64 and 8; output 2^0..2^12 at input 512 and 64; "
                     "batch 1, 8, 64 (162 cells). --quick: inputs 2^1,2^3..2^15 at output 64, outputs "
                     "2^0,2^2..2^12 at input 512, batch 1 and 8, warm-up 1, repeats 2 (28 cells).",
    "paper-decoding": "Figure 3: greedy, sampling (T 0.7, top-p 0.9), beam 4 at batch 1..128 and speculative "
                      "(draft model, look-ahead 4; models with a known draft) at batch 1, the only batch "
                      "transformers' assisted generation runs, input 512, output 64 (25 cells). --quick: "
                      "batch 1, 8, 64, warm-up 1, repeats 2 (10 cells).",
    "paper-decoding-brackets": "Figure 3's speculative decoding bracketed by acceptance rate (random weights): "
                               "greedy and speculative with the separate draft (acceptance ~0) and with the "
                               "target drafting for itself (draft_model self, ~1), look-ahead 4, input 512, output "
                               "64: hf eager at batch 1 (its only speculative batch); with vllm also graphs at "
                               "batch 1..128 with n-gram on random and on repeating prompts (models with a known "
                               "draft). --quick: vllm batch 1, 16, 128, warm-up 1, repeats 2.",
    "paper-moe": "Figure 4: olmo-1b, olmo-7b, olmoe-1b-7b at batch 1 and 8, input 512, output 64 (6 cells). "
                 "--quick: warm-up 1, repeats 2 (same cells).",
    "paper-frameworks": "Figure 5: hf eager/compile/cudagraphs (+ vllm eager/graphs with --with-vllm, or when "
                        "vllm is importable) at batch 1, 2, 4, ... up to the largest that fits, plus the "
                        "largest itself, input 512, output 64 (12 cells per engine mode). --quick: batch 1, "
                        "16 and max, warm-up 1, repeats 2 (3 cells per engine mode).",
    "paper-parallel": "Figure 6: tensor parallelism 1, 2, 4 GPUs for llama-3.1-8b and 2, 4 for r1-distill-qwen-32b "
                      "at batch 1 and 64, input 512, output 64, on hf eager (+ vllm graphs with --with-vllm, or when "
                      "vllm is importable) (20 cells with vllm). Cells need different GPU counts: with --gpus give "
                      "--gpus-per-worker 4. --quick: batch 1 only, warm-up 1, repeats 2.",
    "paper-bins": "Binned estimate table: one cell per occupied (input, output) bin of --trace (comma-"
                  "separated traces give the union; default azure-conv-2023,azure-code-2023) at the "
                  "largest fitting batch, most requested bins first, no prefill split. --quick: the most "
                  "requested bins holding 80% of the requests (at most 8), warm-up 1, repeats 2.",
    "paper-bins-fast": "paper-bins with the fast protocol: the largest batch predicted by the memory model "
                       "and confirmed by one probe (max_batch_method: predict), adaptive windows "
                       "(protocol: adaptive: warm-up by mode, two windows that agree within 1%, a third "
                       "otherwise). Same --trace and --quick as paper-bins.",
}


def _pow2(lo: int, hi: int, step: int = 1) -> list[int]:
    return [2 ** k for k in range(lo, hi + 1, step)]


def _models(model: str | None, default: tuple[str, ...] | str) -> list[str]:
    if model:
        return [m.strip() for m in model.split(",") if m.strip()]
    return [default] if isinstance(default, str) else list(default)


def paper_lengths(models: list[str], quick: bool, **_: Any) -> dict[str, Any]:
    if quick:
        cells = [{"input_tokens": _pow2(1, 15, 2), "output_tokens": 64},
                 {"input_tokens": 512, "output_tokens": _pow2(0, 12, 2)}]
        batch = [1, 8]
    else:
        cells = [{"input_tokens": _pow2(0, 15), "output_tokens": [64, 8]},
                 {"input_tokens": [512, 64], "output_tokens": _pow2(0, 12)}]
        batch = [1, 8, 64]
    return {"model": models, "batch_size": batch, "cells": cells}


def paper_decoding(models: list[str], quick: bool, **_: Any) -> dict[str, Any]:
    cells: list[dict[str, Any]] = []
    for m in models:
        strategies: list[Any] = ["greedy", {"strategy": "sample", "temperature": 0.7, "top_p": 0.9},
                                 {"strategy": "beam", "num_beams": 4}]
        cells.append({"model": m, "decoding": strategies})
        if m in DRAFT_MODELS:
            # transformers' assisted generation runs batch 1 only; the batch sweep of speculation
            # is paper-decoding-brackets' vllm part.
            cells.append({"model": m, "batch_size": 1, "decoding": [
                {"strategy": "speculative", "draft_model": DRAFT_MODELS[m], "lookahead_tokens": 4}]})
    return {"input_tokens": 512, "output_tokens": 64,
            "batch_size": [1, 8, 64] if quick else _pow2(0, 7), "cells": cells}


def paper_decoding_brackets(models: list[str], quick: bool, with_vllm: bool | None = None,
                            **_: Any) -> dict[str, Any]:
    if with_vllm is None:
        with_vllm = importlib.util.find_spec("vllm") is not None
    cells: list[dict[str, Any]] = []
    for m in models:
        if m not in DRAFT_MODELS:
            raise TokenjouleError(f"paper-decoding-brackets needs a model with a known draft ({', '.join(DRAFT_MODELS)}), "
                                  f"got {m}")
        low = {"strategy": "speculative", "draft_model": DRAFT_MODELS[m], "lookahead_tokens": 4}
        high = {"strategy": "speculative", "draft_model": "self", "lookahead_tokens": 4}
        cells.append({"model": m, "engine": "hf", "mode": "eager", "batch_size": 1,
                      "decoding": ["greedy", low, high]})
        if with_vllm:
            ngram = {"strategy": "speculative", "ngram": True, "lookahead_tokens": 4}
            cells.append({"model": m, "engine": "vllm", "mode": "graphs",
                          "batch_size": [1, 16, 128] if quick else _pow2(0, 7),
                          "decoding": ["greedy", low, high, ngram, {**ngram, "repeat_prompt": True}]})
    return {"input_tokens": 512, "output_tokens": 64, "cells": cells,
            "description": f"vllm cells {'included' if with_vllm else 'left out (vllm not importable)'}"}


def paper_moe(models: list[str], quick: bool, **_: Any) -> dict[str, Any]:
    return {"model": models, "input_tokens": 512, "output_tokens": 64, "batch_size": [1, 8]}


def paper_frameworks(models: list[str], quick: bool, with_vllm: bool | None = None, **_: Any) -> dict[str, Any]:
    if with_vllm is None:  # decided by whether vllm can be imported here
        with_vllm = importlib.util.find_spec("vllm") is not None
    cells = [{"engine": "hf", "mode": ["eager", "compile", "cudagraphs"]}]
    if with_vllm:
        cells.append({"engine": "vllm", "mode": ["eager", "graphs"]})
    return {"model": models, "input_tokens": 512, "output_tokens": 64,
            "batch_size": [1, 16, "max"] if quick else "1..max", "cells": cells,
            "description": f"vllm cells {'included' if with_vllm else 'left out (vllm not importable)'}"}


def paper_parallel(models: list[str], quick: bool, with_vllm: bool | None = None, **_: Any) -> dict[str, Any]:
    if with_vllm is None:  # decided by whether vllm can be imported here
        with_vllm = importlib.util.find_spec("vllm") is not None
    engines = [("hf", "eager")] + ([("vllm", "graphs")] if with_vllm else [])
    cells = [{"model": m, "engine": e, "mode": mode, "tensor_parallel": PARALLEL_TP.get(m, DEFAULT_TP)}
             for m in models for e, mode in engines]
    return {"input_tokens": 512, "output_tokens": 64, "batch_size": [1] if quick else PARALLEL_BATCHES,
            "cells": cells,
            "description": f"vllm cells {'included' if with_vllm else 'left out (vllm not importable)'}"}


def bin_rows(traces: list[str]) -> list[dict[str, Any]]:
    """Occupied bins of the union of `traces`: input/output edges and request counts, the most
    requested first (ties by lengths)."""
    from tokenjoule.workloads import bin_workload, load_trace

    counts: dict[tuple[int, int], int] = {}
    for name in traces:
        for (i, o), n in bin_workload(load_trace(name)).counts.items():
            counts[(i, o)] = counts.get((i, o), 0) + n
    return [{"input_tokens": i, "output_tokens": o, "n_requests": n}
            for (i, o), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def paper_bins(models: list[str], quick: bool, trace: str | None = None, **_: Any) -> dict[str, Any]:
    traces = [t.strip() for t in (trace or ",".join(DEFAULT_BIN_TRACES)).split(",") if t.strip()]
    rows = bin_rows(traces)
    if not rows:
        raise TokenjouleError(f"trace {', '.join(traces)} has no requests inside the bins")
    if quick:
        total, acc = sum(r["n_requests"] for r in rows), 0
        kept: list[dict[str, Any]] = []
        for r in rows:
            if acc >= QUICK_BIN_SHARE * total or len(kept) >= QUICK_BIN_MAX:
                break
            kept.append(r)
            acc += r["n_requests"]
        rows = kept
    # Most requested bins first (order: as-written), so a budget-limited session measures the
    # bins that weigh most in the estimate.
    return {"model": models, "engine": "hf", "mode": "eager", "batch_size": "max", "split_prefill": False,
            "order": "as-written", "description": f"bins of {', '.join(traces)}",
            "cells": [{"input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"]} for r in rows]}


def paper_bins_fast(models: list[str], quick: bool, trace: str | None = None, **kw: Any) -> dict[str, Any]:
    data = paper_bins(models, quick, trace=trace, **kw)
    return {**data, "protocol": "adaptive", "max_batch_method": "predict"}


PRESETS: dict[str, tuple[Callable[..., dict[str, Any]], tuple[str, ...] | str]] = {
    "paper-lengths": (paper_lengths, DEFAULT_MODEL),
    "paper-decoding": (paper_decoding, DEFAULT_MODEL),
    "paper-decoding-brackets": (paper_decoding_brackets, DEFAULT_MODEL),
    "paper-moe": (paper_moe, MOE_MODELS),
    "paper-frameworks": (paper_frameworks, DEFAULT_MODEL),
    "paper-parallel": (paper_parallel, PARALLEL_MODELS),
    "paper-bins": (paper_bins, DEFAULT_MODEL),
    "paper-bins-fast": (paper_bins_fast, DEFAULT_MODEL),
}


def preset_dict(name: str, *, model: str | None = None, quick: bool = False, trace: str | None = None,
                with_vllm: bool | None = None) -> dict[str, Any]:
    if name not in PRESETS:
        raise UnknownNameError("sweep preset", name, list(PRESETS))
    if trace is not None and name not in ("paper-bins", "paper-bins-fast"):
        raise TokenjouleError(f"--trace applies to --preset paper-bins only, not {name}")
    build, default_models = PRESETS[name]
    data = build(_models(model, default_models), quick, trace=trace, with_vllm=with_vllm)
    data.setdefault("name", name)
    for key, value in (QUICK_RUNS if quick else FULL_RUNS).items():
        data.setdefault(key, value)
    return data


def build_preset(name: str, *, model: str | None = None, quick: bool = False, trace: str | None = None,
                 with_vllm: bool | None = None, **options: Any) -> SweepConfig:
    """A preset as a validated SweepConfig; `options` override top-level keys (device, idle_s...)."""
    data = preset_dict(name, model=model, quick=quick, trace=trace, with_vllm=with_vllm)
    data.update({k: v for k, v in options.items() if v is not None})
    source = f"--preset {name}" + (f" --model {model}" if model else "") + (" --quick" if quick else "")
    source += f" --trace {trace}" if trace else ""
    source += {True: " --with-vllm", False: " --without-vllm", None: ""}[with_vllm]  # None: auto-detected
    return config_from_dict(data, source)
