"""`SimulatedMeter` (method "simulated"): scripted power and counters for tests.

Deterministic and thread-free. The window's duration comes from `clock` (real
`time.monotonic` by default; pass a `FakeClock` and advance it inside the window so tests
never sleep). Each device draws `power_w`, so a window's GPU energy is
`power_w x devices x duration`. Its timeline is synthesised at `sample_hz` from the same
power, and its counters go through the same edge logic as the NVML meter, so flags
(short-window, counter-went-backwards, counter-did-not-move, timeline-disagrees) mean the
same thing.

Advanced options (keyword-only):
    power_fn(t_s) -> W per device, t_s seconds since the window opened (overrides power_w)
    window_powers_w: per-device W for successive windows (then power_w again)
    counter_script: counter readings (J) consumed two per window (start, end); each entry a
        number (every device) or a sequence with one value per device; None = a failed read
    timeline_scale: the timeline's power is this x the true power (to provoke disagreement)
    cpu_power_w / dram_power_w: W for RAPL-like CPU/DRAM energy (None = unreadable, with reason)
    flags: extra flags attached to every window (e.g. FLAG_FOREIGN_PROCESS)
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from tokenjoule.energy.counters import TIMELINE_DISAGREEMENT_THRESHOLD, assemble_gpu_energy
from tokenjoule.energy.measurement import Measurement, PowerSample
from tokenjoule.energy.nvml_meter import WindowHandle
from tokenjoule.energy.timeline import integrate_timeline

_INTEGRATION_STEPS = 2000  # for power_fn: fine trapezoid, "the counter's" ground truth


class _SimulatedBackend:
    """Just enough of GpuBackend for provenance."""

    backend_name = "simulated"

    def __init__(self, devices: int):
        self.devices = devices

    def device_count(self) -> int:
        return self.devices

    def name(self, index: int) -> str:
        return "Simulated GPU"

    def power_limit_w(self, index: int) -> float | None:
        return None

    def driver_version(self) -> str | None:
        return None

    def cuda_version(self) -> str | None:
        return None


class SimulatedMeter:
    method = "simulated"

    def __init__(
        self,
        power_w: float = 300.0,
        idle_power_w: float | None = 60.0,
        devices: int = 1,
        sample_hz: float = 20,
        clock: Callable[[], float] | None = None,
        *,
        power_fn: Callable[[float], float] | None = None,
        window_powers_w: Sequence[float] | None = None,
        counter_script: Sequence[float | Sequence[float | None] | None] | None = None,
        timeline_scale: float = 1.0,
        cpu_power_w: float | None = None,
        dram_power_w: float | None = None,
        flags: Sequence[str] = (),
        disagreement_threshold: float = TIMELINE_DISAGREEMENT_THRESHOLD,
    ):
        if devices < 1:
            raise ValueError("devices must be >= 1")
        self.power_w = power_w
        self.idle_script_w = idle_power_w
        self.devices = devices
        self.sample_hz = sample_hz
        self.clock = clock or time.monotonic
        self.power_fn = power_fn
        self.window_powers_w = list(window_powers_w or [])
        self.counter_script = list(counter_script or [])
        self.timeline_scale = timeline_scale
        self.cpu_power_w = cpu_power_w
        self.dram_power_w = dram_power_w
        self.extra_flags = tuple(flags)
        self.disagreement_threshold = disagreement_threshold
        self.idle_power_w: float | None = None  # set by measure_idle, like the real meter
        self.windows: list[Measurement] = []
        self._counter_j = 0.0  # cumulative simulated counter per device

    def measure_idle(self, duration_s: float = 5.0) -> float | None:
        """Returns `idle_power_w x devices` without sleeping; advances a fake clock if given."""
        advance = getattr(self.clock, "advance", None)
        if advance is not None:
            advance(duration_s)
        self.idle_power_w = None if self.idle_script_w is None else self.idle_script_w * self.devices
        return self.idle_power_w

    def _power_at(self, constant_w: float) -> Callable[[float], float]:
        return self.power_fn if self.power_fn is not None else (lambda t: constant_w)

    def _next_edge(self) -> list[float | None]:
        entry = self.counter_script.pop(0)
        if entry is None or isinstance(entry, (int, float)):
            return [None if entry is None else float(entry)] * self.devices
        if len(entry) != self.devices:
            raise ValueError(f"counter_script entry {entry!r} needs {self.devices} values")
        return [None if v is None else float(v) for v in entry]

    @contextmanager
    def window(self, sync: Callable[[], None] | None = None) -> Iterator[WindowHandle]:
        handle = WindowHandle()
        if sync is not None:
            sync()
        t0 = self.clock()
        yield handle
        if sync is not None:
            sync()
        duration_s = self.clock() - t0
        power = self._power_at(self.window_powers_w.pop(0) if self.window_powers_w else self.power_w)

        # the truth: energy per device over the window
        if self.power_fn is None:
            true_j = power(0.0) * duration_s
        else:
            dt = duration_s / _INTEGRATION_STEPS
            true_j = sum((power(i * dt) + power((i + 1) * dt)) * dt / 2 for i in range(_INTEGRATION_STEPS))

        # the timeline: samples at k / sample_hz plus one at the end edge
        times = [k / self.sample_hz for k in range(int(duration_s * self.sample_hz) + 1)]
        if not times or times[-1] < duration_s:
            times.append(duration_s)
        samples = tuple(
            PowerSample(t_s=t, power_w=(power(t) * self.timeline_scale,) * self.devices) for t in times
        )
        timeline = integrate_timeline(samples, self.devices)

        # the counters: scripted, or advancing by the true energy
        if len(self.counter_script) >= 2:
            start_j, end_j = self._next_edge(), self._next_edge()
        else:
            start_j = [self._counter_j] * self.devices
            self._counter_j += true_j
            end_j = [self._counter_j] * self.devices
        gpu = assemble_gpu_energy(
            list(range(self.devices)), start_j, end_j, duration_s, timeline, self.disagreement_threshold
        )
        cpu = None if self.cpu_power_w is None else self.cpu_power_w * duration_s
        dram = None if self.dram_power_w is None else self.dram_power_w * duration_s
        handle.result = Measurement(
            method=self.method,
            duration_s=duration_s,
            gpu_energy_j=gpu.gpu_energy_j,
            gpu_energy_by_device_j=gpu.by_device_j,
            gpu_energy_reason=gpu.reason,
            timeline_energy_j=gpu.timeline_energy_j,
            timeline_disagreement=gpu.timeline_disagreement,
            idle_power_w=self.idle_power_w,
            cpu_energy_j=cpu,
            cpu_energy_reason=None if cpu is not None else "simulated meter: no CPU power scripted",
            dram_energy_j=dram,
            dram_energy_reason=None if dram is not None else "simulated meter: no DRAM power scripted",
            flags=tuple(dict.fromkeys([*gpu.flags, *self.extra_flags])),
            samples=samples,
            notes={**gpu.notes, "simulated": True, "sample_count": len(samples)},
        )
        self.windows.append(handle.result)

    def provenance(self) -> dict:
        from tokenjoule.energy.provenance import collect_provenance

        return collect_provenance(list(range(self.devices)), backend=_SimulatedBackend(self.devices))

    def close(self) -> None:
        pass
