"""Turn the measurement windows of one offline cell into the stored metrics.

The runner (runs.offline) produces a `PhaseResult` for the full batch and, optionally, one for
the 1-output-token (prefill) batch. Every value here is per ONE batch: a window that held n
iterations of the batch has its energy and time divided by n before anything is averaged.
Missing sensor values stay None (with the reason next to them); they are never averaged as 0.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from tokenjoule.energy.measurement import FLAG_TIMELINE_DISAGREES, Measurement, PowerSample
from tokenjoule.engines.base import GenerationResult
from tokenjoule.records import MAX_STORED_SAMPLES, downsample  # noqa: F401  (moved; re-exported)
from tokenjoule.spec import RunSpec


# Flags the runner itself adds (next to the meter's window flags).
FLAG_DECODE_NEGATIVE = "prefill-exceeds-full"  # 1-token run used more energy than the full run
FLAG_TOKEN_MISMATCH = "token-count-mismatch"  # the engine generated other counts than asked
FLAG_ITERATIONS_CAPPED = "iterations-capped"  # a batch so short the window could not reach min_window_s
FLAG_WINDOW_BELOW_MIN = "window-below-min"  # a window ended shorter than min_window_s

# Flags of prefill windows that say nothing about the cell's stored energies: the timeline is
# a cross-check of the counter, and a prefill window is a train of bursts of a few tens of ms
# that a 20 Hz timeline cannot follow. Such flags stay in `prefill_flags` only; every other
# prefill flag (a counter fault, a foreign process) also reaches the cell's `flags`, since
# decode = full - prefill depends on it.
PREFILL_ONLY_FLAGS = frozenset({FLAG_TIMELINE_DISAGREES})


@dataclass
class PhaseResult:
    """The measurement windows of one phase ("full" or "prefill") of a cell."""

    name: str
    output_tokens: int
    iterations_per_window: int
    windows: list[Measurement] = field(default_factory=list)  # the windows the figures come from
    # Adaptive protocol: windows measured before the agreeing ones (runs.windows.settling_count),
    # kept in the record, left out of the figures.
    settling: list[Measurement] = field(default_factory=list)
    results: list[GenerationResult] = field(default_factory=list)  # every measured batch
    flags: set[str] = field(default_factory=set)
    # How the windows ended and what warmed them up (runs.windows); None under no protocol record.
    stop: dict[str, Any] | None = None
    warmup: dict[str, Any] | None = None

    def per_batch(self, attr: str) -> list[float | None]:
        """A window field divided by the iterations it held (energy or time of one batch)."""
        n = self.iterations_per_window
        out: list[float | None] = []
        for m in self.windows:
            value = getattr(m, attr)
            out.append(None if value is None else value / n)
        return out

    @property
    def energies_j(self) -> list[float | None]:
        return self.per_batch("energy_j")

    @property
    def durations_s(self) -> list[float]:
        return [d for d in self.per_batch("duration_s") if d is not None]


def mean_std_cv(values: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    """Mean, sample standard deviation (n - 1) and coefficient of variation (std / mean).

    None if any value is missing (a partial average would hide a sensor gap); std and CV are
    None with fewer than two values, since one repeat says nothing about spread."""
    if not values or any(v is None for v in values):
        return None, None, None
    vals = [float(v) for v in values]  # type: ignore[arg-type]
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return mean, None, None
    std = statistics.stdev(vals)
    cv = std / mean if mean else None
    return mean, std, cv


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    return mean_std_cv(values)[0]


def _first_reason(windows: list[Measurement], attr: str) -> str | None:
    for m in windows:
        reason = getattr(m, attr)
        if reason:
            return reason
    return None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def build_metrics(spec: RunSpec, full: PhaseResult, prefill: PhaseResult | None) -> dict[str, Any]:
    """The contract metric names of one offline cell (see the module docstring)."""
    energy_j, energy_std_j, energy_cv = mean_std_cv(full.energies_j)
    duration_s, duration_std_s, duration_cv = mean_std_cv(full.durations_s)
    last = full.results[-1]
    out_total, in_total = last.total_output_tokens, last.total_input_tokens
    flags = set(full.flags)
    for m in full.windows:
        flags.update(m.flags)
    expected_out = spec.batch_size * full.output_tokens
    if any(r.total_output_tokens != expected_out for r in full.results):
        flags.add(FLAG_TOKEN_MISMATCH)

    metrics: dict[str, Any] = {
        "energy_j": energy_j,
        "energy_std_j": energy_std_j,
        "energy_cv": energy_cv,
        "duration_s": duration_s,
        "duration_std_s": duration_std_s,
        "duration_cv": duration_cv,
        "energy_per_request_j": _ratio(energy_j, spec.batch_size),
        "energy_per_output_token_j": _ratio(energy_j, out_total),
        "energy_per_token_j": _ratio(energy_j, out_total + in_total),
        "avg_power_w": _ratio(energy_j, duration_s),
        "throughput_tokens_per_s": _ratio(out_total, duration_s),
        "active_energy_j": _mean_or_none(full.per_batch("active_energy_j")),
        "idle_power_w": _mean_or_none([m.idle_power_w for m in full.windows]),
        "timeline_energy_j": _mean_or_none(full.per_batch("timeline_energy_j")),
        "timeline_disagreement": _mean_or_none([m.timeline_disagreement for m in full.windows]),
        "cpu_energy_j": _mean_or_none(full.per_batch("cpu_energy_j")),
        "dram_energy_j": _mean_or_none(full.per_batch("dram_energy_j")),
        "iterations_per_window": full.iterations_per_window,
        "repeats": len(full.windows),
        "method": full.windows[-1].method,
        "input_tokens_total": in_total,
        "output_tokens_total": out_total,
    }
    if energy_j is None:
        metrics["energy_reason"] = _first_reason(full.windows, "gpu_energy_reason") or "not measured"
    if metrics["cpu_energy_j"] is None:
        metrics["cpu_energy_reason"] = _first_reason(full.windows, "cpu_energy_reason") or "not measured"
    if metrics["dram_energy_j"] is None:
        metrics["dram_energy_reason"] = _first_reason(full.windows, "dram_energy_reason") or "not measured"

    metrics.update(per_gpu_metrics(full))
    rates = [r.acceptance_rate for r in full.results if r.acceptance_rate is not None]
    metrics["acceptance_rate"] = statistics.fmean(rates) if rates else None

    metrics.update(_split_metrics(energy_j, duration_s, full, prefill, flags))
    metrics.update(protocol_metrics(spec, full, prefill))
    metrics["flags"] = sorted(flags)
    return metrics


def per_gpu_metrics(full: PhaseResult) -> dict[str, Any]:
    """The per-GPU split of one batch's energy (mean over windows, per batch; a device missing
    from any window is None, never averaged over fewer windows), the number of GPUs measured and,
    where another process used one of them, which (a flag on the cell says so too)."""
    devices: list[str] = []
    for m in full.windows:
        devices += [d for d in m.gpu_energy_by_device_j if d not in devices]
    if not devices:
        return {}
    n = full.iterations_per_window
    split: dict[str, float | None] = {}
    for d in devices:
        values = [m.gpu_energy_by_device_j.get(d) for m in full.windows]
        split[d] = _mean_or_none([None if v is None else v / n for v in values])
    out: dict[str, Any] = {"gpu_energy_by_device_j": split, "gpus_measured": len(devices)}
    foreign: dict[str, list[int]] = {}
    for m in full.windows:
        for d, pids in (m.notes.get("foreign_processes_by_device") or {}).items():
            foreign[str(d)] = sorted(set(foreign.get(str(d), [])) | set(pids))
    if foreign:
        out["foreign_processes_by_device"] = foreign
    return out


def protocol_metrics(spec: RunSpec, full: PhaseResult, prefill: PhaseResult | None) -> dict[str, Any]:
    """Warm-ups, windows and why they stopped, for the full phase (and the prefill phase)."""
    # `windows` counts every window measured (the cost); `windows_used` those the figures average
    out: dict[str, Any] = {"protocol": spec.protocol, "windows": len(full.windows) + len(full.settling),
                           "windows_used": len(full.windows)}
    if full.stop:
        out["stop_reason"] = full.stop.get("stop_reason")
        out["window_spread_rel"] = full.stop.get("window_spread_rel")
        out["settling_windows"] = full.stop.get("settling_windows", 0)
        out["settling_excess_rel"] = full.stop.get("settling_excess_rel")
    if full.warmup:
        out["warmup_full_length"] = full.warmup.get("full_length")
        out["warmup_short"] = full.warmup.get("short")
    if prefill is not None:
        out["prefill_windows"] = len(prefill.windows)
        if prefill.stop:
            out["prefill_stop_reason"] = prefill.stop.get("stop_reason")
    return out


def _split_metrics(
    energy_j: float | None, duration_s: float | None, full: PhaseResult, prefill: PhaseResult | None,
    flags: set[str],
) -> dict[str, Any]:
    """Prefill = the 1-output-token batch; decode = full - prefill (see docs/METHOD.md)."""
    if prefill is None:
        if full.output_tokens == 1:  # the full batch IS the prefill run
            return {"prefill_energy_j": energy_j, "prefill_duration_s": duration_s, "ttft_s": duration_s,
                    "decode_energy_j": 0.0 if energy_j is not None else None,
                    "decode_duration_s": 0.0 if duration_s is not None else None,
                    "prefill_iterations_per_window": full.iterations_per_window}
        return {"prefill_energy_j": None, "prefill_duration_s": None, "ttft_s": None,
                "decode_energy_j": None, "decode_duration_s": None, "prefill_iterations_per_window": None}
    prefill_flags = set(prefill.flags)
    for m in prefill.windows:
        prefill_flags.update(m.flags)
    flags.update(prefill_flags - PREFILL_ONLY_FLAGS)
    p_energy = _mean_or_none(prefill.energies_j)
    p_duration = _mean_or_none(prefill.durations_s)
    decode_energy = None if energy_j is None or p_energy is None else energy_j - p_energy
    decode_duration = None if duration_s is None or p_duration is None else duration_s - p_duration
    if decode_energy is not None and decode_energy < 0:
        flags.add(FLAG_DECODE_NEGATIVE)  # kept as measured: noise, not hidden by clamping
    return {
        "prefill_energy_j": p_energy,
        "prefill_duration_s": p_duration,
        "ttft_s": p_duration,  # estimate: the whole batch's prefill plus one sampling step
        "decode_energy_j": decode_energy,
        "decode_duration_s": decode_duration,
        "prefill_iterations_per_window": prefill.iterations_per_window,
        "prefill_flags": sorted(prefill_flags),
        "prefill_timeline_disagreement": _mean_or_none([m.timeline_disagreement for m in prefill.windows]),
    }


def window_summaries(phase: PhaseResult) -> list[dict[str, Any]]:
    """One entry per measured window of a phase, told apart by kind (full, prefill, or either
    with "-settling": measured before the agreeing windows and left out of the figures)."""
    out = []
    kinds = [f"{phase.name}-settling"] * len(phase.settling) + [phase.name] * len(phase.windows)
    for kind, m in zip(kinds, [*phase.settling, *phase.windows]):
        out.append({
            "kind": kind,
            "iterations": phase.iterations_per_window,
            "duration_s": m.duration_s,
            "energy_j": m.energy_j,
            "timeline_disagreement": m.timeline_disagreement,
            "timeline_judged": m.notes.get("timeline_judged"),
            "flags": list(m.flags),
            "sampler": m.notes.get("sampler"),
            "gpu_state_start": m.notes.get("gpu_state_start"),
        })
    return out


def measurement_dict(full: PhaseResult, prefill: PhaseResult | None) -> dict[str, Any]:
    """The stored measurement: the last full window (samples downsampled) + per-repeat values."""
    last = full.windows[-1]
    data = last.to_dict(with_samples=True)
    data["samples"] = downsample(data["samples"])
    data["samples_stored_of"] = len(last.samples)
    data["per_repeat"] = {"energy_j": full.energies_j, "duration_s": full.durations_s}
    if full.stop or full.warmup:
        data["protocol"] = {"stop": full.stop, "warmup": full.warmup}
    if prefill is not None:
        data["prefill_per_repeat"] = {"energy_j": prefill.energies_j, "duration_s": prefill.durations_s}
    data["windows"] = window_summaries(full) + (window_summaries(prefill) if prefill is not None else [])
    return data
