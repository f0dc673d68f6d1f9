"""From energy-counter readings at the window edges to per-device and total GPU energy.

Shared by the NVML meter and the simulated meter, so the flags mean the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from tokenjoule.energy.measurement import (
    FLAG_COUNTER_BACKWARDS,
    FLAG_SHORT_WINDOW,
    FLAG_TIMELINE_DISAGREES,
    FLAG_ZERO_DELTA,
)

# The NVML total-energy counter steps about every 100 ms on an H100 (seen 2026-11-26), so a
# window shorter than this can read 0 J or one whole step.
COUNTER_UPDATE_PERIOD_S = 0.1

# |timeline - counter| / counter above this flags the window. Set from the H100 probe of
# 2026-11-26 (benchmarks/meter_probe.py, docs/METHOD.md "Energy measurement"): our 20 Hz
# timeline with edge samples stayed within -2.1%..+3.3% of the counter on windows of 2 s and
# more (and within 1.7% on the mean of every offline-evidence cell), but swung by up to +-17%
# on sub-second windows. 5% sits above what a healthy >= 2 s window shows, so a flag means a
# real anomaly (a sensor fault, a stuck field, foreign load) or a window that is too short.
TIMELINE_DISAGREEMENT_THRESHOLD = 0.05

# The cross-check is judged only on windows at least this long: the same probe saw +-17% on
# sub-second windows from timing alone (the counter's 100 ms steps, the sampler's 50 ms
# spacing), so a shorter window cannot tell a sensor fault from quantisation. The
# disagreement of a shorter window is still recorded; it just raises no flag.
TIMELINE_JUDGE_MIN_WINDOW_S = 2.0


@dataclass
class GpuEnergy:
    gpu_energy_j: float | None
    by_device_j: dict[str, float | None]
    reason: str | None
    timeline_energy_j: float | None
    timeline_disagreement: float | None
    flags: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def assemble_gpu_energy(
    devices: Sequence[int],
    start_j: Sequence[float | None],
    end_j: Sequence[float | None],
    duration_s: float,
    timeline_j: Sequence[float | None],
    disagreement_threshold: float = TIMELINE_DISAGREEMENT_THRESHOLD,
    judge_min_window_s: float = TIMELINE_JUDGE_MIN_WINDOW_S,
) -> GpuEnergy:
    flags: list[str] = []
    reasons: list[str] = []
    by_device: dict[str, float | None] = {}
    source: dict[str, str | None] = {}
    total: float | None = 0.0
    short = duration_s < COUNTER_UPDATE_PERIOD_S
    if short:
        flags.append(FLAG_SHORT_WINDOW)
    for i, dev in enumerate(devices):
        key = str(dev)
        a, b = start_j[i], end_j[i]
        energy, problem = None, None
        if a is None or b is None:
            problem = f"device {dev}: energy counter read failed"
        elif b < a:
            flags.append(FLAG_COUNTER_BACKWARDS)
            problem = f"device {dev}: energy counter went backwards ({a:.3f} -> {b:.3f} J; driver reset or wrap)"
        elif b == a and not short:
            flags.append(FLAG_ZERO_DELTA)
            problem = f"device {dev}: energy counter did not move in {duration_s:.3f} s"
        else:
            energy = b - a
        by_device[key] = energy
        if problem is None:
            source[key] = "counter"
            contribution = energy
        else:
            # Labelled fallback: the timeline integral stands in for this device's counter.
            contribution = timeline_j[i] if i < len(timeline_j) else None
            source[key] = "timeline" if contribution is not None else None
            reasons.append(problem + ("; its timeline integral is used instead" if contribution is not None else ""))
        total = None if (total is None or contribution is None) else total + contribution
    timeline_total = None if any(t is None for t in timeline_j) or not timeline_j else float(sum(t for t in timeline_j if t is not None))
    disagreement = None
    counter_only = all(s == "counter" for s in source.values())
    judged = duration_s >= judge_min_window_s
    if counter_only and total and timeline_total is not None:
        disagreement = (timeline_total - total) / total
        if judged and abs(disagreement) > disagreement_threshold:
            flags.append(FLAG_TIMELINE_DISAGREES)
    notes: dict[str, Any] = {
        "gpu_energy_source": source,
        "timeline_judged": judged,  # long enough for timeline-disagrees to be raised
        # worst-case counter quantisation relative to the window: each edge reads a value up
        # to one update period old; the two lags partly cancel, leaving at most one period.
        "counter_step_fraction": (COUNTER_UPDATE_PERIOD_S / duration_s) if duration_s > 0 else None,
    }
    if total is None and not reasons:
        reasons.append("no GPU energy reading")
    return GpuEnergy(
        gpu_energy_j=total,
        by_device_j=by_device,
        reason="; ".join(reasons) or None,
        timeline_energy_j=timeline_total,
        timeline_disagreement=disagreement,
        flags=list(dict.fromkeys(flags)),
        notes=notes,
    )
