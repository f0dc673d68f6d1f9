"""Metrics of an online run: latency percentiles, the steady-state window, goodput under SLOs,
and energy over the whole run and over the steady-state window.

Steady-state window rule (client side, documented in docs/METHOD.md):
- in-flight count C(t): requests sent and not yet finished (actual send to end of stream);
- the *sending period* runs from the first to the last actual send;
- the *full level* is the time-weighted median of C(t) over the sending period (for a closed
  loop of N clients this is N);
- the window opens when C(t) first reaches the full level (the running batch has filled) and
  closes at the last send (no request arrives after it, so the queue only drains).
If C never reaches the level before the last send, there is no window (None + reason).

Energy in the window integrates the meter's power timeline (trapezoids, interpolated at the
edges) and is labelled `steady_energy_method = "timeline"`; without a timeline it is None with
the reason. Whole-run energy is the meter's own figure (the counter where there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from tokenjoule.serving.client import RequestRecord


@dataclass(frozen=True)
class SteadyWindow:
    start_s: float | None  # from the run start
    end_s: float | None
    full_level: float | None  # in-flight requests that count as "full"
    reason: str | None = None  # why there is no window

    @property
    def duration_s(self) -> float | None:
        if self.start_s is None or self.end_s is None:
            return None
        return self.end_s - self.start_s


def percentile(values: Iterable[float], q: float) -> float | None:
    data = [v for v in values if v is not None]
    return float(np.percentile(data, q)) if data else None


def in_flight_steps(records: Sequence[RequestRecord]) -> list[tuple[float, int]]:
    """(time, in-flight count from that time on), sorted; ends before starts at equal times."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.actual_send_s is not None and r.done_s is not None:
            events += [(r.actual_send_s, 1), (r.done_s, -1)]
    events.sort(key=lambda e: (e[0], e[1]))
    steps, level = [], 0
    for t, d in events:
        level += d
        steps.append((t, level))
    return steps


def steady_window(records: Sequence[RequestRecord]) -> SteadyWindow:
    sends = sorted(r.actual_send_s for r in records if r.actual_send_s is not None and r.done_s is not None)
    if len(sends) < 2:
        return SteadyWindow(None, None, None, "fewer than two requests were sent")
    first, last = sends[0], sends[-1]
    steps = in_flight_steps(records)
    # Time-weighted distribution of C(t) over the sending period.
    weights: dict[int, float] = {}
    for (t0, level), (t1, _) in zip(steps, steps[1:]):
        a, b = max(t0, first), min(t1, last)
        if b > a:
            weights[level] = weights.get(level, 0.0) + (b - a)
    if not weights:
        return SteadyWindow(None, None, None, "all requests were sent at the same instant")
    total, acc, full = sum(weights.values()), 0.0, 0
    for level in sorted(weights):
        acc += weights[level]
        if acc >= total / 2:
            full = max(level, 1)  # an idle server is never "full"
            break
    start = next((t for t, level in steps if level >= full and t >= first), None)
    if start is None or start >= last:
        return SteadyWindow(None, None, full, "the running batch did not fill before the last request was sent")
    return SteadyWindow(start, last, float(full))


def _total_power(sample: Any) -> tuple[float, float] | None:
    """(t_s, total W) of one timeline sample; None for a failed read (no value, or a device
    that returned None), which must be skipped, not read as 0 W."""
    if hasattr(sample, "t_s"):
        t, powers = sample.t_s, sample.power_w
    else:
        t, powers = sample[0], sample[1]
    values = list(powers) if isinstance(powers, (list, tuple)) else [powers]
    if not values or any(v is None for v in values):
        return None
    return float(t), float(sum(values))


def integrate_power_j(samples: Sequence[Any], start_s: float, end_s: float) -> float | None:
    """Energy (J) of a power timeline between two times (trapezoids, linear at the edges).
    None when the timeline does not cover [start_s, end_s]."""
    pts = sorted(p for p in map(_total_power, samples) if p is not None)
    if len(pts) < 2 or end_s <= start_s or pts[0][0] > start_s or pts[-1][0] < end_s:
        return None
    ts = np.array([p[0] for p in pts])
    ps = np.array([p[1] for p in pts])
    inner = (ts > start_s) & (ts < end_s)
    grid = np.concatenate([[start_s], ts[inner], [end_s]])
    power = np.interp(grid, ts, ps)
    return float(np.sum((power[1:] + power[:-1]) / 2 * np.diff(grid)))


def token_times(record: RequestRecord) -> list[float]:
    """Run-relative times of a request's token events."""
    if record.actual_send_s is None or record.ttft_s is None:
        return []
    t = record.actual_send_s + record.ttft_s
    out = [t]
    for gap in record.itl_s:
        t += gap
        out.append(t)
    return out


def goodput_count(records: Sequence[RequestRecord], slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> int:
    """Requests that succeeded and met every given SLO (a one-token request has no TPOT and
    passes the TPOT SLO)."""
    good = 0
    for r in records:
        if not r.ok:
            continue
        if slo_ttft_ms is not None and r.ttft_s * 1e3 > slo_ttft_ms:  # type: ignore[operator]
            continue
        tpot = r.tpot_s
        if slo_tpot_ms is not None and tpot is not None and tpot * 1e3 > slo_tpot_ms:
            continue
        good += 1
    return good


def _ms(values: Iterable[float | None]) -> list[float]:
    return [v * 1e3 for v in values if v is not None]


def summarize(records: Sequence[RequestRecord], duration_s: float, measurement: Any | None = None,
              slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None,
              meter_offset_s: float = 0.0) -> dict[str, Any]:
    """All metrics of one online run (names as stored in CellRecord.metrics).

    `measurement` is the meter's Measurement over the run (or None); `meter_offset_s` is how
    long after the meter window opened the run started (to place the steady window on the
    power timeline)."""
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    ttft, tpot, e2e = _ms(r.ttft_s for r in ok), _ms(r.tpot_s for r in ok), _ms(r.e2e_s for r in ok)
    itl = _ms(g for r in ok for g in r.itl_s)
    lag = _ms(r.send_lag_s for r in records)
    good = goodput_count(records, slo_ttft_ms, slo_tpot_ms)
    m: dict[str, Any] = {
        "requests_total": len(records), "requests_ok": len(ok), "requests_failed": len(records) - len(ok),
        "output_tokens_total": out_tokens, "input_tokens_total": sum(r.input_tokens for r in ok),
        "duration_s": duration_s,
        "throughput_tokens_per_s": out_tokens / duration_s if duration_s > 0 else None,
        "request_throughput_rps": len(ok) / duration_s if duration_s > 0 else None,
        "goodput_requests": good, "goodput_rps": good / duration_s if duration_s > 0 else None,
        "slo_ttft_ms": slo_ttft_ms, "slo_tpot_ms": slo_tpot_ms,
    }
    for name, values, qs in (("ttft_ms", ttft, (50, 90, 99)), ("tpot_ms", tpot, (50, 90, 99)),
                             ("itl_ms", itl, (50, 99)), ("e2e_ms", e2e, (50, 99)),
                             ("send_lag_ms", lag, (50, 99))):
        for q in qs:
            m[f"{name}_p{q}"] = percentile(values, q)
    m["send_lag_ms_max"] = max(lag) if lag else None

    energy = getattr(measurement, "energy_j", None) if measurement is not None else None
    m_duration = getattr(measurement, "duration_s", None) if measurement is not None else None
    m["energy_j"] = energy
    m["meter_duration_s"] = m_duration
    m["avg_power_w"] = energy / m_duration if energy is not None and m_duration else None
    m["energy_per_request_j"] = energy / len(ok) if energy is not None and ok else None
    m["energy_per_output_token_j"] = energy / out_tokens if energy is not None and out_tokens else None
    m["method"] = getattr(measurement, "method", None)
    m["flags"] = list(getattr(measurement, "flags", ()) or ())
    m["idle_power_w"] = getattr(measurement, "idle_power_w", None)
    m["active_energy_j"] = getattr(measurement, "active_energy_j", None)

    window = steady_window(records)
    m["steady_start_s"], m["steady_end_s"] = window.start_s, window.end_s
    m["steady_duration_s"], m["steady_full_level"] = window.duration_s, window.full_level
    steady_tokens = None
    if window.start_s is not None:
        steady_tokens = sum(1 for r in ok for t in token_times(r) if window.start_s <= t <= window.end_s)
    m["steady_output_tokens"] = steady_tokens
    steady_energy, reason = None, window.reason
    samples = getattr(measurement, "samples", None) if measurement is not None else None
    if window.start_s is not None:
        if not samples:
            reason = "the meter recorded no power timeline"
        else:
            steady_energy = integrate_power_j(samples, window.start_s + meter_offset_s, window.end_s + meter_offset_s)
            if steady_energy is None:
                reason = "the power timeline does not cover the steady-state window"
    m["steady_energy_j"] = steady_energy
    m["steady_energy_method"] = "timeline" if steady_energy is not None else None
    m["steady_energy_reason"] = None if steady_energy is not None else reason
    m["steady_avg_power_w"] = (steady_energy / window.duration_s
                               if steady_energy is not None and window.duration_s else None)
    m["steady_energy_per_output_token_j"] = (steady_energy / steady_tokens
                                             if steady_energy is not None and steady_tokens else None)
    return m
