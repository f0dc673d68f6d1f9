"""A scripted clock and a meter driven by it, so runner tests need no sensor and no sleeps.

`FakeClock` is advanced by the fake engine (a batch "takes" its scripted duration) and read by
`ScriptedMeter`, so window durations are exact. Window energies are either power x duration
or taken from a script, which lets tests check means, standard deviations and CVs by hand.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from tokenjoule.energy.measurement import Measurement


class FakeClock:
    def __init__(self, start_s: float = 0.0):
        self.t_s = start_s

    def __call__(self) -> float:
        return self.t_s

    def advance(self, seconds: float) -> None:
        self.t_s += seconds


class _Handle:
    result: Measurement


class ScriptedMeter:
    """Meter protocol implementation over a FakeClock.

    energies_j: optional per-window energies, consumed in window order (then power x time).
    cpu_energy_j: None means "unreadable" (with a reason), as a real RAPL-less host reports.
    """

    method = "scripted"

    def __init__(
        self,
        clock: FakeClock,
        power_w: float = 100.0,
        idle_power_w: float | None = 20.0,
        energies_j: list[float] | None = None,
        flags: tuple[str, ...] = (),
        cpu_power_w: float | None = None,
        gpu_energy_available: bool = True,
    ):
        self.clock = clock
        self.power_w = power_w
        self.idle_power_w_script = idle_power_w
        self.energies_j = list(energies_j or [])
        self.flags = flags
        self.cpu_power_w = cpu_power_w
        self.gpu_energy_available = gpu_energy_available
        self.idle_power_w: float | None = None
        self.windows: list[Measurement] = []
        self.idle_calls: list[float] = []
        self.closed = False

    def measure_idle(self, duration_s: float) -> float | None:
        self.idle_calls.append(duration_s)
        self.clock.advance(duration_s)
        self.idle_power_w = self.idle_power_w_script
        return self.idle_power_w

    @contextmanager
    def window(self, sync: Callable[[], None] | None = None) -> Iterator[_Handle]:
        handle = _Handle()
        if sync:
            sync()
        start = self.clock()
        yield handle
        if sync:
            sync()
        duration = self.clock() - start
        if not self.gpu_energy_available:
            energy, reason = None, "no sensor in this fake"
        elif self.energies_j:
            energy, reason = self.energies_j.pop(0), None
        else:
            energy, reason = self.power_w * duration, None
        cpu = None if self.cpu_power_w is None else self.cpu_power_w * duration
        handle.result = Measurement(
            method=self.method,
            duration_s=duration,
            gpu_energy_j=energy,
            gpu_energy_by_device_j={"0": energy},
            gpu_energy_reason=reason,
            timeline_energy_j=None if energy is None else energy * 0.98,
            timeline_disagreement=None if energy is None else -0.02,
            idle_power_w=self.idle_power_w,
            cpu_energy_j=cpu,
            cpu_energy_reason=None if cpu is not None else "RAPL not readable in this fake",
            dram_energy_j=None,
            dram_energy_reason="RAPL not readable in this fake",
            flags=self.flags,
        )
        self.windows.append(handle.result)

    def provenance(self) -> dict:
        return {"gpu_names": ["Fake GPU"], "gpu_count": 1, "driver_version": "0", "power_limit_w": [700.0]}

    def close(self) -> None:
        self.closed = True
