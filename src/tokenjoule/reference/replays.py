"""What a shipped reference table's direct replays found, in one line each.

A replay (`tokenjoule validate`) ran a seeded trace sample for real on the table's card and
compared the measured total with the binned estimate of the same requests; the lines say that
result wherever the table is used (the demo, `estimate --reference`), so a user who estimates
from the table sees how far the estimate was from a measurement."""

from __future__ import annotations

from typing import Any

# Below this the estimate undercharged a padded hf replay: the lines say why (docs/METHOD.md,
# "Padding changes the attention path").
PADDED_UNDERCHARGE = -0.10


def replays_of(ref: Any, engine: str | None = None, mode: str | None = None) -> list[dict[str, Any]]:
    """The replays shipped with `ref`, only `engine`/`mode`'s when given."""
    return [r for r in ref.replays
            if (engine is None or r.get("engine") == engine) and (mode is None or r.get("mode") == mode)]


def replay_lines(ref: Any, engine: str | None = None, mode: str | None = None) -> list[str]:
    """One line per replay shipped with `ref` (only `engine`/`mode`'s when given)."""
    lines = []
    for r in replays_of(ref, engine, mode):
        if not r.get("energy_j") or not r.get("n_kept"):
            continue
        pool = r.get("conditional_pool")
        where = (f" in the {len(pool['bins'])} bins both tables measured ({100 * pool['share_of_trace']:.0f}% of "
                 "the trace)" if pool else "")
        fitted = r.get("fit_corrected_j")  # vllm: bins at their mean lengths; hf: rescaled to the batches run
        what = "at the requests' mean lengths" if r["engine"] != "hf" else "rescaled by the fit to the batches run"
        at_mean = f", {100 * (fitted / r['energy_j'] - 1):+.1f}% {what}" if fitted else ""
        # hf replays pad each batch as static batching does; the table's cells have no padding
        padded = (" — the replay pads its static batches and the table's cells do not, so for a padded "
                  "deployment the estimate is low" if r["engine"] == "hf" and r["difference_paper"] < PADDED_UNDERCHARGE
                  else "")
        lines.append(f"checked against a direct replay on {ref.card}, {r['date']}: {r['engine']} {r['mode']}, "
                     f"{r['n_kept']:,} requests of {r['trace']}{where}: measured {r['energy_j'] / 1e3:,.1f} kJ; "
                     f"binned estimate {100 * r['difference_paper']:+.1f}% (paper rounding){at_mean}{padded} "
                     "(tokenjoule validate; docs/RESULTS.md section 11)")
    return lines
