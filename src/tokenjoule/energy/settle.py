"""The settle rule for the idle baseline: wait until the GPU's power has stopped falling.

Right after a run a GPU draws far more than at rest (seen on an H100: 132 W idle measured
right after a run, 73 W cold) while its clocks and temperature come down. Idle is measured
only once power is settled, by this rule (the numbers are recorded with every cell):

- power (summed over the measured devices) is read every `period_s`;
- over the last `window_s` seconds, the readings span at most `range_tolerance`
  (max - min <= max(range_w, range_frac x mean)), and the mean of the window's second half is
  within `drift_tolerance` of its first half (|second - first| <= max(drift_w, drift_frac x
  mean)): the range rule rejects noise, the drift rule a slow decay that is smooth;
- where the meter knows the GPU's resting SM clock (the lowest it has read), every device's SM
  clock is at most `clock_frac` x that: on an H200 (2026-12-02) power sat flat at 123 W for
  seconds after a run, with the SM clock still at 1980 MHz (resting: 345 MHz, 79 W), which
  the two power rules alone took for settled;
- the wait gives up after `timeout_s`; the idle window then still runs, and the cell records
  `settled: false` (so a reader sees the baseline may be high).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass(frozen=True)
class SettleRule:
    window_s: float = 4.0
    period_s: float = 0.1
    range_w: float = 4.0
    range_frac: float = 0.04
    drift_w: float = 1.0
    drift_frac: float = 0.01
    clock_frac: float = 1.5
    timeout_s: float = 30.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SettleResult:
    settled: bool
    waited_s: float
    readings: int
    window_mean_w: float | None = None
    window_range_w: float | None = None
    window_drift_w: float | None = None
    first_power_w: float | None = None
    rule: dict = field(default_factory=dict)
    reason: str | None = None
    clock_note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def judge_window(values: list[float], rule: SettleRule) -> tuple[bool, float, float, float]:
    """(settled, mean, range, drift) of readings evenly spaced over one window."""
    mean = statistics.fmean(values)
    spread = max(values) - min(values)
    half = len(values) // 2
    drift = statistics.fmean(values[half:]) - statistics.fmean(values[:half]) if half else 0.0
    ok = spread <= max(rule.range_w, rule.range_frac * mean) and abs(drift) <= max(rule.drift_w, rule.drift_frac * mean)
    return ok, mean, spread, drift


def wait_until_settled(
    read_power_w: Callable[[], float | None],
    clock: Callable[[], float],
    wait: Callable[[float], None],
    rule: SettleRule = SettleRule(),
    clock_ok: Callable[[], tuple[bool, str | None]] | None = None,
) -> SettleResult:
    """Read power until the last `rule.window_s` of readings pass the rule, or the timeout."""
    start = clock()
    points: list[tuple[float, float]] = []
    first = None
    result = None
    while True:
        now = clock()
        value = read_power_w()
        if value is None:
            return SettleResult(False, now - start, len(points), rule=rule.to_dict(), first_power_w=first,
                                reason="power is not readable, so settling cannot be judged")
        first = value if first is None else first
        points.append((now, float(value)))
        # keep one reading at or before the window's start so the kept span covers the window
        while len(points) > 1 and points[1][0] <= now - rule.window_s:
            points.pop(0)
        span = now - points[0][0]
        if span >= rule.window_s - 1e-9 and len(points) >= 4:
            ok, mean, spread, drift = judge_window([p for _, p in points], rule)
            note = None
            if ok and clock_ok is not None:
                ok, note = clock_ok()
            result = SettleResult(ok, now - start, 0, mean, spread, drift, first, rule.to_dict(), clock_note=note)
            if ok:
                break
        if now - start >= rule.timeout_s:
            if result is None:
                result = SettleResult(False, now - start, 0, first_power_w=first, rule=rule.to_dict())
            result.reason = f"power did not settle within {rule.timeout_s:g} s"
            break
        wait(rule.period_s)
    result.waited_s = clock() - start
    result.readings = len(points)
    return result
