"""Does one padding token change what a transformers batch costs? A controlled A/B on one GPU.

The hf eager replay of 1,000 Azure-conversation requests (docs/RESULTS.md, "The binned estimate
against a direct replay") spent about 3x the binned estimate, and a padded batch of the same
rows as a table cell, at shorter lengths, took 2.8x the cell's energy. The suspected cause is
the attention path, not the tokens: the table's cells have one length per batch, so
transformers drops their all-ones mask and SDPA runs its grouped-query (GQA) kernel, while any
padding keeps a mask, and on CUDA transformers then leaves that kernel (its `use_gqa_in_sdpa`
requires `attention_mask is None`): it repeats the key/value heads (4x for Llama-3.1-8B's 32
query / 8 key-value heads) or packs the query heads, with a masked kernel, on every layer of
every step.

This script isolates that: per shape (input x output x batch), it alternates

  uniform   B requests of exactly I input and O output tokens (no padding, as a table cell),
  one-pad   the same, except that one request has I - 1 input tokens (one pad token in the
            whole batch: the same computed tokens, but an attention mask),

through the same `generate_requests` call the replay uses, one meter window per call, and
counts which SDPA path transformers took in each (calls of `use_gqa_in_sdpa` answering yes/no).
It reports per shape the energy and time of each variant (median of --repeats) and their ratio.

    source benchmarks/device/env.sh && python benchmarks/padding_check.py            # ~3 min, H200 (a prediction)
    python benchmarks/padding_check.py --model tiny --device cpu --meter simulated \\
        --shapes 16x4x4 --repeats 1                                                  # smoke test

Output: $OUT/padding_check.json (GPU, date, versions, command, every window, the path counts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_SHAPES = "512x128x256,2048x128x64"
VARIANTS = ("uniform", "one-pad")


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            i, o, b = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--shapes: {part!r} is not INPUTxOUTPUTxBATCH (e.g. 512x128x256)") from None
        if i < 2 or o < 1 or b < 2:
            raise SystemExit(f"--shapes: {part!r} needs input >= 2, output >= 1, batch >= 2 (one row is padded)")
        shapes.append((i, o, b))
    return shapes


def lengths_for(variant: str, i: int, o: int, b: int) -> list[tuple[int, int]]:
    """The requests of one variant: one-pad differs from uniform by one input token of one row."""
    if variant == "uniform":
        return [(i, o)] * b
    if variant == "one-pad":
        return [(i - 1, o)] + [(i, o)] * (b - 1)
    raise ValueError(variant)


class SdpaPathCounter:
    """Counts transformers' choice of SDPA path: its `use_gqa_in_sdpa` answers, per variant.

    Wraps the module-level function that sdpa_attention_forward looks up at call time, so the
    count is of the real decision in this transformers version (None where it has no such
    function: then the path is not known, and the report says so)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"gqa_kernel": 0, "masked_fallback": 0}
        self._module: Any = None
        self._original: Any = None

    def install(self) -> bool:
        try:
            import transformers.integrations.sdpa_attention as sdpa
        except ImportError:
            return False
        original = getattr(sdpa, "use_gqa_in_sdpa", None)
        if original is None:
            return False

        def counted(*args: Any, **kwargs: Any) -> bool:
            answer = bool(original(*args, **kwargs))
            self.counts["gqa_kernel" if answer else "masked_fallback"] += 1
            return answer

        self._module, self._original = sdpa, original
        sdpa.use_gqa_in_sdpa = counted
        return True

    def take(self) -> dict[str, int]:
        out, self.counts = self.counts, {"gqa_kernel": 0, "masked_fallback": 0}
        return out

    def uninstall(self) -> None:
        if self._module is not None:
            self._module.use_gqa_in_sdpa = self._original


def summarize(windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shape: median energy and time of each variant, and one-pad / uniform."""
    out = []
    shapes = sorted({tuple(w["shape"]) for w in windows}, key=lambda s: [tuple(w["shape"]) for w in windows].index(s))
    for shape in shapes:
        row: dict[str, Any] = {"input_tokens": shape[0], "output_tokens": shape[1], "batch_size": shape[2]}
        for v in VARIANTS:
            ws = [w for w in windows if tuple(w["shape"]) == shape and w["variant"] == v]
            energies = [w["energy_j"] for w in ws if w["energy_j"] is not None]
            row[v] = {"windows": len(ws),
                      "energy_j": statistics.median(energies) if energies else None,
                      "duration_s": statistics.median(w["duration_s"] for w in ws) if ws else None,
                      "sdpa_path": ws[-1]["sdpa_path"] if ws else None}
        u, p = row["uniform"], row["one-pad"]
        row["energy_ratio"] = (p["energy_j"] / u["energy_j"]) if u["energy_j"] and p["energy_j"] is not None else None
        row["time_ratio"] = (p["duration_s"] / u["duration_s"]) if u["duration_s"] and p["duration_s"] else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated INPUTxOUTPUTxBATCH")
    p.add_argument("--repeats", type=int, default=2, help="windows per variant and shape (alternating)")
    p.add_argument("--device", default="auto")
    p.add_argument("--meter", default="auto", help="auto | nvml | estimate | simulated")
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    a = p.parse_args(argv)
    if a.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {a.repeats}")
    shapes = parse_shapes(a.shapes)

    from tokenjoule.energy import make_meter
    from tokenjoule.engines.base import get_engine
    from tokenjoule.records import base_provenance
    from tokenjoule.spec import RunSpec

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "padding_check.json"
    engine = get_engine("hf")
    spec = RunSpec(model=a.model, engine="hf", mode="eager", device=a.device,
                   batch_size=max(b for _, _, b in shapes), input_tokens=max(i for i, _, _ in shapes),
                   output_tokens=max(o for _, o, _ in shapes))
    counter = SdpaPathCounter()
    windows: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "what": "one-pad vs uniform batches through HfEngine.generate_requests (benchmarks/padding_check.py)",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/padding_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": a.model, "shapes": [list(s) for s in shapes], "repeats": a.repeats,
    }
    meter = None
    try:
        engine.load(spec)
        meter = make_meter(a.meter, devices=engine.device_indices())
        report["sdpa_path_known"] = counter.install()
        for shape in shapes:
            i, o, b = shape
            for v in VARIANTS:  # warm-up by name, small: the first call of a new mask shape allocates
                engine.generate_requests(lengths_for(v, i, o, min(b, 4)))
            counter.take()
            for k in range(a.repeats):
                order = VARIANTS if k % 2 == 0 else VARIANTS[::-1]  # alternate: drift hits both alike
                for v in order:
                    with meter.window(sync=engine.synchronize) as window:
                        engine.generate_requests(lengths_for(v, i, o, b))
                    m = window.result
                    windows.append({"shape": list(shape), "variant": v, "repeat": k, "energy_j": m.energy_j,
                                    "duration_s": m.duration_s, "method": m.method, "flags": sorted(m.flags),
                                    "sdpa_path": counter.take() if report["sdpa_path_known"] else None})
                    print(f"{i}x{o}x{b} {v:8s} {m.duration_s:7.2f} s "
                          f"{m.energy_j if m.energy_j is None else round(m.energy_j, 1)} J {windows[-1]['sdpa_path']}",
                          flush=True)
            report["windows"], report["shapes_summary"] = windows, summarize(windows)
            path.write_text(json.dumps(report, indent=1, default=str))  # after every shape: a cut run keeps it
        report["provenance"] = {**base_provenance(), **meter.provenance(), **engine.provenance()}
        report["gpu_name"] = ", ".join(report["provenance"].get("gpu_names") or []) or None
    finally:
        counter.uninstall()
        engine.close()
        if meter is not None:
            meter.close()
        report["windows"], report["shapes_summary"] = windows, summarize(windows)
        path.write_text(json.dumps(report, indent=1, default=str))
    for row in report["shapes_summary"]:
        print(f"{row['input_tokens']}x{row['output_tokens']}x{row['batch_size']}: one-pad / uniform energy "
              f"{row['energy_ratio']}, time {row['time_ratio']}; paths {row['uniform']['sdpa_path']} vs "
              f"{row['one-pad']['sdpa_path']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
