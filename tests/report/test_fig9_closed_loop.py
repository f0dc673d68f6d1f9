"""Figure 9 with a closed-loop transformers run (no arrival rate, no mode), as the demo stores it:
a real x-range and no "nan" in the legend."""

from __future__ import annotations

import dataclasses

from fakes.planted_store import MODEL, online_record
from tokenjoule.report import figures_runs
from tokenjoule.report.data import cells_frame
from tokenjoule.store.db import ResultStore


def test_closed_loop_online_run_is_drawn_against_concurrency(tmp_path, monkeypatch):
    with ResultStore(tmp_path / "s.db") as store:
        for clients in (1, 4):
            rec = online_record(2.0, engine="transformers", mode=None)
            spec = {**rec.spec, "arrival": {"process": "closed", "concurrency": clients, "seed": 0}}
            store.add(dataclasses.replace(rec, spec=spec, spec_hash=f"closed-{clients}"))
        df = cells_frame(store)
    seen = {}

    def capture(sec, fig, data, out_dir):
        ax = fig.axes[0]
        seen["labels"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["xlim"] = ax.get_xlim()
        seen["xlabel"] = ax.get_xlabel()
        sec.png_path = "x.png"
        return sec

    monkeypatch.setattr(figures_runs, "save", capture)
    sec = figures_runs.fig9_online(df, tmp_path, MODEL)
    assert sec.drawn
    assert seen["labels"] == ["online transformers"] and not any("nan" in t for t in seen["labels"])
    lo, hi = seen["xlim"]
    assert lo < 1 and hi > 4 and "clients" in seen["xlabel"]
