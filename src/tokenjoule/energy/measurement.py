"""What one measurement window produced: energy, time, power timeline, flags and method.

Every energy field is either a measured number or `None` together with the reason it is
missing. A missing sensor is never reported as 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Flags a window can carry. They are recorded, never hidden.
FLAG_SHORT_WINDOW = "short-window"  # shorter than the counter's update period
FLAG_COUNTER_BACKWARDS = "counter-went-backwards"  # reset or wrap during the window
FLAG_FOREIGN_PROCESS = "foreign-process-on-gpu"  # another process was using a measured GPU
FLAG_TIMELINE_DISAGREES = "timeline-disagrees"  # |timeline - counter| / counter over threshold
FLAG_ZERO_DELTA = "counter-did-not-move"  # counter returned the same value at both edges
FLAG_IDLE_NOT_SETTLED = "idle-not-settled"  # the idle baseline in use was read before power settled
# The estimate flag and the is_estimate rule belong to the stored records (one rule for every reader).
from tokenjoule.records import FLAG_ESTIMATE, is_estimate  # noqa: E402,F401


@dataclass(frozen=True)
class PowerSample:
    """One timeline sample: seconds since the window opened, power per device in W."""

    t_s: float
    power_w: tuple[float, ...]


@dataclass(frozen=True)
class Measurement:
    """The result of one window. Energy fields are in joules; `None` means not measured."""

    method: str  # nvml-counter | estimate-cpu-time | simulated | ...
    duration_s: float
    gpu_energy_j: float | None  # summed over measured devices
    gpu_energy_by_device_j: dict[str, float | None] = field(default_factory=dict)
    gpu_energy_reason: str | None = None  # why gpu_energy_j is None
    timeline_energy_j: float | None = None  # integral of the sampled power timeline
    timeline_disagreement: float | None = None  # (timeline - counter) / counter
    idle_power_w: float | None = None  # measured before the run (sum over devices)
    cpu_energy_j: float | None = None
    cpu_energy_reason: str | None = None
    dram_energy_j: float | None = None
    dram_energy_reason: str | None = None
    flags: tuple[str, ...] = ()
    samples: tuple[PowerSample, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)
    # Set only by estimating meters (method estimate-cpu-time), with FLAG_ESTIMATE; the
    # assumptions are in notes and docs/METHOD.md. Never mixed with a sensor reading.
    estimated_energy_j: float | None = None

    @property
    def energy_j(self) -> float | None:
        """The headline energy of the window: the GPU energy when measured, else the estimate."""
        if self.gpu_energy_j is not None:
            return self.gpu_energy_j
        return self.estimated_energy_j

    @property
    def is_estimate(self) -> bool:
        return FLAG_ESTIMATE in self.flags

    @property
    def active_energy_j(self) -> float | None:
        """Energy above the idle baseline: total - idle power x duration (both shown, never
        silently substituted)."""
        if self.energy_j is None or self.idle_power_w is None:
            return None
        return self.energy_j - self.idle_power_w * self.duration_s

    @property
    def avg_power_w(self) -> float | None:
        if self.energy_j is None or self.duration_s <= 0:
            return None
        return self.energy_j / self.duration_s

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = [[s.t_s, list(s.power_w)] for s in self.samples] if with_samples else []
        data["flags"] = list(self.flags)
        data["energy_j"] = self.energy_j
        data["active_energy_j"] = self.active_energy_j
        data["avg_power_w"] = self.avg_power_w
        return data
