"""Build a shipped reference bin table from a committed results database.

    python benchmarks/build_reference.py                       # the H100 table from h100_evidence.db
    python benchmarks/build_reference.py --db OUT/case_study.db --name h200-llama-3.1-8b --setup hf:eager \
        --setup vllm:graphs --coverage "every occupied default bin of the case-study workloads"

Reads the ok offline cells of one model (and GPU) for the given setups and writes
src/tokenjoule/reference/data/NAME.json: card, date (of the newest cell), versions, the commands
that measured them, and per cell its lengths, batch size, energy and time. For each bin only the
cells the estimate would choose are kept (largest batch, newest row), so the table is small.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.analysis.estimate import select_cells  # noqa: E402
from tokenjoule.analysis.gpus import find_gpu  # noqa: E402
from tokenjoule.analysis.savings import parse_setup  # noqa: E402
from tokenjoule.store.db import ResultStore  # noqa: E402

VERSION_KEYS = ("tokenjoule_version", "torch_version", "transformers_version", "vllm_version", "driver_version",
                "cuda_version", "zeus_version", "python_version")
DEFAULT_COVERAGE = ("partial: hf eager, 11 paper-size bins of the Azure 2023 traces plus 512-in/64-out; "
                    "vllm graphs only at 512-in/64-out (the 63-bin table was not finished)")


def build(db: Path, name: str, model: str, setups: list[str], coverage: str, title: str) -> dict:
    cells, versions, dates, cards, commands = [], {}, [], set(), set()
    with ResultStore(db) as store:
        for text in setups:
            s = parse_setup(text)
            chosen, _ = select_cells(store, model=model, engine=s.engine, mode=s.mode, decoding=s.decoding)
            for (i, o), (rec, _sizes) in sorted(chosen.items()):
                prov, m = rec.provenance, rec.metrics
                cards.update(prov.get("gpu_names") or [])
                dates.append(rec.created_at)
                versions.update({k: prov[k] for k in VERSION_KEYS if prov.get(k)})
                if prov.get("command"):
                    commands.add(prov["command"])
                cells.append({"engine": s.engine, "mode": s.mode, "decoding": s.decoding, "input_tokens": i,
                              "output_tokens": o, "batch_size": int(rec.spec["batch_size"]),
                              "energy_j": m["energy_j"], "duration_s": m.get("duration_s"),
                              "avg_power_w": m.get("avg_power_w"), "idle_power_w": m.get("idle_power_w"),
                              "method": m.get("method") or rec.measurement.get("method"),
                              "flags": list(m.get("flags") or []), "dtype": prov.get("dtype") or rec.spec.get("dtype"),
                              "source_cell_id": rec.id, "created_at": rec.created_at})
    if not cells:
        raise SystemExit(f"no ok offline cells of {model} for {', '.join(setups)} in {db}")
    if len(cards) != 1:
        raise SystemExit(f"cells come from {len(cards)} GPUs ({', '.join(sorted(cards))}); one table per card")
    card = cards.pop()
    gpu = find_gpu(card)
    return {"format_version": 1, "name": name, "title": title, "card": card, "gpu": gpu.name if gpu else None,
            "date": max(dates)[:10], "model": model, "coverage": coverage,
            "source": str(db.relative_to(ROOT)) if db.is_relative_to(ROOT) else str(db),
            "built_by": " ".join(["python benchmarks/build_reference.py", *sys.argv[1:]]),
            "commands": sorted(commands) or ["python benchmarks/paper_bins.py (see docs/RESULTS.md)"],
            "versions": versions, "cells": cells}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=ROOT / "benchmarks/results/h100_evidence.db")
    ap.add_argument("--name", default="h100-llama-3.1-8b")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--setup", action="append", help="engine:mode[:decoding] (repeatable)")
    ap.add_argument("--coverage", default=DEFAULT_COVERAGE)
    ap.add_argument("--title", default=None)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "src/tokenjoule/reference/data")
    args = ap.parse_args()
    setups = args.setup or ["hf:eager", "vllm:graphs"]
    title = args.title or f"{args.model} bin table ({', '.join(setups)})"
    table = build(args.db.resolve(), args.name, args.model, setups, args.coverage, title)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{args.name}.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {path}: {len(table['cells'])} cells, {table['card']}, {table['date']}")


if __name__ == "__main__":
    main()
