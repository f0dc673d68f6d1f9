"""Fit the paper-matched length distributions and write them as package data.

    .venv/bin/python benchmarks/fit_paper_lengths.py

Writes src/tokenjoule/workloads/data/paper_lengths.json: per workload (BurstGPT, Azure
conversation, Azure code) and per length (input, output) the mixture parameters fitted to the
paper's Tables 1-2 (see tokenjoule.workloads.synthetic) and the fitted distribution's statistics.
Takes a few minutes on a laptop CPU (a grid of Nelder-Mead starts per length set).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from tokenjoule.workloads.synthetic import FAMILY, PAPER_WORKLOADS, PARAMS_FILE, fit_mixture

OUT = Path(__file__).resolve().parents[1] / "src" / "tokenjoule" / "workloads" / "data" / PARAMS_FILE


def main() -> None:
    import scipy

    out: dict = {"_meta": {"family": FAMILY, "fitted_at": datetime.now(timezone.utc).date().isoformat(),
                           "scipy_version": scipy.__version__, "command": "python benchmarks/fit_paper_lengths.py",
                           "params": "logit w, mu1, log s1, mu2, log s2"}}
    for name, info in PAPER_WORKLOADS.items():
        out[name] = {}
        for side, target in (("input", info.input_target), ("output", info.output_target)):
            fit = fit_mixture(target)
            out[name][side] = {**fit, "target": list(target)}
            errs = ", ".join(f"{(s - t) / t:+.2%}" for s, t in zip(fit["stats"], target))
            print(f"{name} {side}: objective {fit['objective']:.2e}; mean/std/median/p99 errors {errs}", flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
