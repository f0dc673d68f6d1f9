"""Build a reference table (the shipped format, see tokenjoule.reference.tables) from a results database.

Used by `benchmarks/build_reference.py` (the shipped tables) and the case-study session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenjoule.analysis.estimate import select_cells
from tokenjoule.analysis.gpus import find_gpu
from tokenjoule.analysis.savings import parse_setup
from tokenjoule.errors import TokenjouleError
from tokenjoule.store.db import ResultStore

REPO_ROOT = Path(__file__).resolve().parents[3]  # src/tokenjoule/analysis/ -> the repository


def _relative(db: Path) -> str:
    db = Path(db).resolve()
    return str(db.relative_to(REPO_ROOT)) if db.is_relative_to(REPO_ROOT) else str(db)


VERSION_KEYS = ("tokenjoule_version", "torch_version", "transformers_version", "vllm_version", "driver_version",
                "cuda_version", "zeus_version", "python_version")
DEFAULT_COVERAGE = ("partial: hf eager, 11 paper-size bins of the Azure 2023 traces plus 512-in/64-out; "
                    "vllm graphs only at 512-in/64-out (the 63-bin table was not finished)")


# What the H100 table's cells were measured by (their provenance predates recording the command).
FALLBACK_COMMAND = "python benchmarks/paper_bins.py (see docs/RESULTS.md)"


def _figures(rec: Any) -> tuple[float, float | None, str]:
    """A cell's energy and time per batch: as stored, except for adaptive cells whose stored
    windows show settling windows averaged in (stored before runs.windows' settling rule): those
    are recomputed from the windows with the rule, and say so."""
    from tokenjoule.records import settled_figures

    m = rec.metrics
    if m.get("protocol") == "adaptive" and not m.get("windows_used"):
        fig = settled_figures(m.get("stop_reason"), (rec.measurement or {}).get("windows", []))
        if fig is not None and fig["settling_windows"]:
            return fig["energy_j"], fig["duration_s"], (
                f"settling rule applied to the stored windows ({fig['settling_windows']} of "
                f"{fig['settling_windows'] + fig['windows_used']} left out)")
    return m["energy_j"], m.get("duration_s"), "as stored"


def build_table(db: Path, name: str, model: str, setups: list[str], coverage: str, title: str,
                command: str = "python benchmarks/build_reference.py") -> dict:
    """The reference-table dict of the ok offline cells of `model` for `setups` in `db` (see
    tables.py for the format): every usable candidate cell of each bin (analysis.selection)."""
    cells: list[dict] = []
    versions: dict = {}
    dates: list[str] = []
    cards: set[str] = set()
    commands: set[str] = set()
    with ResultStore(db, create=False, read_only=True) as store:  # building a table never rewrites its evidence
        for text in setups:
            s = parse_setup(text)
            chosen, _ = select_cells(store, model=model, engine=s.engine, mode=s.mode, decoding=s.decoding)
            # every candidate of a bin: which one answers depends on the user's request count
            # (analysis.selection.choose_cell), so the table keeps them all
            for (i, o), candidates in sorted(chosen.items()):
                for rec in sorted(candidates, key=lambda r: (r.batch_size or 0, r.id or 0)):
                    prov, m = rec.provenance, rec.metrics
                    cards.update(prov.get("gpu_names") or [])
                    dates.append(rec.created_at)
                    versions.update({k: prov[k] for k in VERSION_KEYS if prov.get(k)})
                    if prov.get("command"):
                        commands.add(prov["command"])
                    energy_j, duration_s, figures = _figures(rec)
                    cells.append({"engine": s.engine, "mode": s.mode, "decoding": s.decoding, "input_tokens": i,
                                  "output_tokens": o, "batch_size": int(rec.spec["batch_size"]),
                                  "energy_j": energy_j, "duration_s": duration_s, "figures": figures,
                                  "avg_power_w": m.get("avg_power_w"), "idle_power_w": m.get("idle_power_w"),
                                  "method": m.get("method") or rec.measurement.get("method"),
                                  "flags": list(m.get("flags") or []),
                                  "dtype": prov.get("dtype") or rec.spec.get("dtype"),
                                  "source_cell_id": rec.id, "created_at": rec.created_at})
        replays = replay_summaries(store, model, setups)
    if not cells:
        raise TokenjouleError(f"no ok offline cells of {model} for {', '.join(setups)} in {db}")
    if len(cards) != 1:
        raise TokenjouleError(f"cells come from {len(cards)} GPUs ({', '.join(sorted(cards)) or 'none named'}); "
                              "one table per card")
    card = cards.pop()
    gpu = find_gpu(card)
    return {"format_version": 1, "name": name, "title": title, "card": card, "gpu": gpu.name if gpu else None,
            "date": max(dates)[:10], "model": model, "coverage": coverage,
            "source": _relative(db), "built_by": command,
            "commands": sorted(commands) or [FALLBACK_COMMAND],
            "versions": versions, "cells": cells, **({"replays": replays} if replays else {})}


REPLAY_METRICS = ("energy_j", "duration_s", "n_kept", "estimate_paper_j", "estimate_ceil_j", "estimate_measured_j",
                  "difference_paper", "difference_ceil", "difference_measured", "fit_corrected_j",
                  "useful_input_tokens", "useful_output_tokens")


def replay_summaries(store, model: str, setups: list[str]) -> list[dict]:
    """The finished direct replays (tokenjoule validate) of the table's setups: what checks the
    table against the requests it stands for, shipped with it (newest of each sample and setup)."""
    from tokenjoule.records import finished_replays

    wanted = {(parse_setup(t).engine, parse_setup(t).mode) for t in setups}
    out = []
    for rec in finished_replays(store, model=model):
        cfg = rec.spec.get("replay") or {}
        if (cfg.get("engine"), cfg.get("mode")) not in wanted:
            continue
        within = (rec.measurement or {}).get("within_tables")
        out.append({
            "engine": cfg["engine"], "mode": cfg["mode"], "trace": cfg.get("trace"), "n": cfg.get("n"),
            "seed": cfg.get("seed"), **{k: rec.metrics.get(k) for k in REPLAY_METRICS},
            "conditional_pool": None if not within else {k: within.get(k) for k in ("tables", "bins", "n_pool",
                                                                                     "share_of_trace")},
            "date": str(rec.provenance.get("time_utc") or rec.created_at or "")[:10], "source_record_id": rec.id})
    return out
