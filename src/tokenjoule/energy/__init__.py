"""Energy measurement: meters that turn a window of work into a `Measurement`.

    from tokenjoule.energy import make_meter
    meter = make_meter("auto", devices=[0])
    meter.measure_idle(5.0)
    with meter.window(sync=engine.synchronize) as w:
        engine.generate(spec)
    w.result.energy_j, w.result.method, w.result.flags

Meters: "nvml" (GPU energy counters, method nvml-counter), "estimate" (CPU-time estimate,
method estimate-cpu-time), "simulated" (scripted, for tests). "auto" picks nvml when a GPU
energy counter is readable, else the estimate. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Sequence

from tokenjoule.energy.clock import FakeClock
from tokenjoule.energy.counters import COUNTER_UPDATE_PERIOD_S, TIMELINE_DISAGREEMENT_THRESHOLD
from tokenjoule.energy.estimate_meter import WATTS_PER_BUSY_CORE, CpuTimeEstimateMeter
from tokenjoule.energy.measurement import Measurement, PowerSample
from tokenjoule.energy.meter import Meter
from tokenjoule.energy.nvml_meter import NvmlMeter
from tokenjoule.energy.provenance import collect_provenance
from tokenjoule.energy.simulated import SimulatedMeter
from tokenjoule.errors import TokenjouleError, UnknownNameError

METER_KINDS = ("auto", "nvml", "estimate", "simulated")

__all__ = [
    "COUNTER_UPDATE_PERIOD_S",
    "METER_KINDS",
    "TIMELINE_DISAGREEMENT_THRESHOLD",
    "WATTS_PER_BUSY_CORE",
    "CpuTimeEstimateMeter",
    "FakeClock",
    "Measurement",
    "Meter",
    "NvmlMeter",
    "PowerSample",
    "SimulatedMeter",
    "collect_provenance",
    "make_meter",
]


def make_meter(kind: str = "auto", devices: Sequence[int] | None = None, **options) -> Meter:
    """Build a meter. `devices`: CUDA indices to measure (None: every visible GPU, i.e. the
    CUDA_VISIBLE_DEVICES set; [] means the work uses no GPU, so "auto" gives the estimate).
    `options` go to the meter's constructor (e.g. sample_hz=50)."""
    if kind not in METER_KINDS:
        raise UnknownNameError("meter", kind, METER_KINDS)
    if kind == "simulated":
        if devices and "devices" not in options:
            options["devices"] = len(devices)  # the simulated meter takes a device count
        return SimulatedMeter(**options)
    if kind == "estimate":
        return CpuTimeEstimateMeter(**options)

    from tokenjoule.energy.gpu_backend import probe_gpu_backend

    if kind == "auto" and devices is not None and len(devices) == 0:
        return CpuTimeEstimateMeter(gpu_reason="no GPU energy sensor: the work runs on no GPU")
    backend, reason = probe_gpu_backend()
    if backend is not None:
        supports = getattr(backend, "supports_energy_counter", None)
        indices = range(backend.device_count()) if devices is None else devices
        if supports is not None and not all(supports(d) for d in indices if d < backend.device_count()):
            reason = "the GPU has no total-energy counter (NVML supports it from Volta on)"
            backend = None
    if backend is None:
        if kind == "nvml":
            raise TokenjouleError(f"cannot use the nvml meter: {reason}; valid meters here: estimate, simulated")
        return CpuTimeEstimateMeter(gpu_reason=f"no GPU energy sensor: {reason}")
    return NvmlMeter(backend, devices=devices, **options)
