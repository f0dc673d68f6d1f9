"""The power timeline: a background sampler and its trapezoid integral.

The sampler reads the power of every measured device at a fixed rate (default 20 Hz) on a
schedule anchored at the window's start (sample k is due at t0 + k / hz; a late sample skips
the missed slots rather than bunching up), so the timeline has even spacing and the rate
can be checked from the timestamps. The meter adds one sample at each window edge, so the
integral covers the whole window.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Sequence

from tokenjoule.energy.measurement import PowerSample

DEFAULT_SAMPLE_HZ = 20.0
MIN_SAMPLE_HZ = 10.0  # below this, a 100 ms power step can fall between two samples

PowerReader = Callable[[], tuple]  # () -> per-device power in W (None where unreadable)


class EdgeSampling:
    """`sample_now` for samplers that keep `read_power`, `clock`, `_t0`, `samples` and
    `read_errors`: the window-edge samples both samplers take in the measured process."""

    read_power: Callable[[], Any]
    clock: Callable[[], float]
    samples: list[PowerSample]
    read_errors: int
    _t0: float

    def sample_now(self) -> PowerSample:
        """Read power once (timestamp relative to the window start) and record it."""
        t = self.clock()
        try:
            power = tuple(self.read_power())
        except Exception:  # a failed read is a gap in the timeline, not a crash
            self.read_errors += 1
            power = ()
        sample = PowerSample(t_s=t - self._t0, power_w=power)
        self.samples.append(sample)
        return sample


class PowerSampler(EdgeSampling):
    """Samples `read_power` in a daemon thread from `start()` until `stop()`.

    For fake clocks and tests; on a real GPU the meter samples from another process
    (energy/sampler_proc.py), since this thread takes the interpreter lock at every sample."""

    kind = "thread"

    def __init__(
        self,
        read_power: PowerReader,
        hz: float = DEFAULT_SAMPLE_HZ,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ):
        if not hz >= MIN_SAMPLE_HZ:
            raise ValueError(f"sample rate {hz} Hz is too low; use at least {MIN_SAMPLE_HZ} Hz")
        self.read_power = read_power
        self.period_s = 1.0 / hz
        self.clock = clock
        self._sleep = sleep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self.samples: list[PowerSample] = []
        self.read_errors = 0

    @property
    def running(self) -> bool:
        return self._thread is not None

    def close(self) -> None:
        self.stop(final_sample=False)

    def _wait(self, seconds: float) -> None:
        if self._sleep is None:
            self._stop.wait(seconds)
        else:
            self._sleep(seconds)

    def _run(self) -> None:
        k = 0  # sample 0 was taken by start(), in the caller's thread, exactly at the edge
        while True:
            k += 1
            due = self._t0 + k * self.period_s
            now = self.clock()
            if due <= now:  # fell behind: skip to the next slot in the future
                k = math.floor((now - self._t0) / self.period_s) + 1
                due = self._t0 + k * self.period_s
            self._wait(due - now)
            if self._stop.is_set():
                return
            self.sample_now()

    def start(self, t0: float | None = None) -> None:
        self._t0 = self.clock() if t0 is None else t0
        self.samples = []
        self.read_errors = 0
        self._stop.clear()
        self.sample_now()
        self._thread = threading.Thread(target=self._run, name="tokenjoule-power-sampler", daemon=True)
        self._thread.start()

    def stop(self, final_sample: bool = True) -> list[PowerSample]:
        """Stop the thread; by default take one last sample now, at the window's end edge."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if final_sample:
            self.sample_now()
        return self.samples


def integrate_device(samples: Sequence[PowerSample], device: int) -> float | None:
    """Trapezoid integral (J) of one device's power over the sample timestamps; points where
    that device has no reading are skipped (the gap is bridged linearly). None if fewer than
    two readings."""
    points = [
        (s.t_s, s.power_w[device])
        for s in samples
        if device < len(s.power_w) and s.power_w[device] is not None
    ]
    if len(points) < 2:
        return None
    points.sort(key=lambda p: p[0])
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(points, points[1:]))


def integrate_timeline(samples: Sequence[PowerSample], devices: int) -> list[float | None]:
    """Per-device timeline energy (J)."""
    return [integrate_device(samples, d) for d in range(devices)]


def mean_total_power_w(samples: Sequence[PowerSample], devices: int) -> float | None:
    """Time-weighted mean of the summed power (W): the integral divided by the span."""
    energies = integrate_timeline(samples, devices)
    if not samples or any(e is None for e in energies):
        return None
    span_s = max(s.t_s for s in samples) - min(s.t_s for s in samples)
    if span_s <= 0:
        return None
    return sum(e for e in energies if e is not None) / span_s
