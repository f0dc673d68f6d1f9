"""A fake GPU backend with the interface of `tokenjoule.energy.gpu_backend.GpuBackend`.

Its energy counter is the integral of a scripted power curve over a (fake) clock, optionally
stepping like NVML's counter (`counter_period_s`); counters can be scripted reading by
reading or reset mid-run; compute PIDs can include foreign processes.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Sequence

PowerSpec = float | Callable[[float], float]


class FakeGpuBackend:
    backend_name = "fake"

    def __init__(
        self,
        devices: int = 1,
        power_w: PowerSpec | Sequence[PowerSpec] = 300.0,
        clock: Callable[[], float] | None = None,
        counter_period_s: float = 0.0,
        counter_script: dict[int, list[float]] | None = None,
        instant_supported: bool = True,
        pids: dict[int, list[int] | None] | None = None,
        name: str = "Fake H100",
        power_limit_w: float = 700.0,
        sm_clock_mhz: float | Callable[[float], float] = 1980.0,
    ):
        import time

        self.devices = devices
        powers = list(power_w) if isinstance(power_w, (list, tuple)) else [power_w] * devices
        self.power_fns = [p if callable(p) else (lambda t, p=p: float(p)) for p in powers]
        self.constant = [not callable(p) for p in powers]
        self.clock = clock or time.monotonic
        self.t_origin = self.clock()
        self.counter_period_s = counter_period_s
        self.counter_script = {k: list(v) for k, v in (counter_script or {}).items()}
        self.instant_supported = instant_supported
        self.pids = pids or {}
        self._name = name
        self._limit = power_limit_w
        self._sm_clock = sm_clock_mhz if callable(sm_clock_mhz) else (lambda t, c=sm_clock_mhz: float(c))
        self.offsets_j = [0.0] * devices
        self.power_reads = 0
        self.closed = False
        self._lock = threading.Lock()

    # --- the truth -------------------------------------------------------------------
    def true_energy_j(self, index: int, t: float) -> float:
        """Integral of the device's power from the origin to clock time t."""
        span = t - self.t_origin
        if span <= 0:
            return 0.0
        fn = self.power_fns[index]
        if self.constant[index]:
            return fn(0.0) * span
        steps = max(200, int(span * 2000))
        dt = span / steps
        return sum((fn(i * dt) + fn((i + 1) * dt)) * dt / 2 for i in range(steps))

    def reset(self, index: int) -> None:
        """Simulate a driver reset: the counter restarts from 0."""
        self.offsets_j[index] = -self.true_energy_j(index, self.clock())

    # --- GpuBackend ------------------------------------------------------------------
    def device_count(self) -> int:
        return self.devices

    def name(self, index: int) -> str:
        return self._name

    def energy_j(self, index: int) -> float:
        with self._lock:
            script = self.counter_script.get(index)
            if script:
                return script.pop(0)
            t = self.clock()
            if self.counter_period_s > 0:  # the counter only moves at its update steps
                rel = t - self.t_origin
                t = self.t_origin + math.floor(rel / self.counter_period_s + 1e-9) * self.counter_period_s
            return self.true_energy_j(index, t) + self.offsets_j[index]

    def instant_power_w(self, index: int) -> float | None:
        if not self.instant_supported:
            return None
        self.power_reads += 1
        return self.power_fns[index](self.clock() - self.t_origin)

    def average_power_w(self, index: int) -> float | None:
        self.power_reads += 1
        return self.power_fns[index](self.clock() - self.t_origin)

    def power_limit_w(self, index: int) -> float | None:
        return self._limit

    def driver_version(self) -> str | None:
        return "999.99"

    def cuda_version(self) -> str | None:
        return "13.0"

    def compute_pids(self, index: int) -> list[int] | None:
        return self.pids.get(index, [])

    def temperature_c(self, index: int) -> float | None:
        return 30.0 + self.power_fns[index](self.clock() - self.t_origin) / 10.0

    def sm_clock_mhz(self, index: int) -> float | None:
        return self._sm_clock(self.clock() - self.t_origin)

    def mem_clock_mhz(self, index: int) -> float | None:
        return 3201.0

    def close(self) -> None:
        self.closed = True
