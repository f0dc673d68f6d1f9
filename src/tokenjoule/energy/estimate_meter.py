"""`CpuTimeEstimateMeter` (method "estimate-cpu-time"): an estimate for hosts with no GPU
energy sensor, such as CI machines running the CPU build of torch.

energy = CPU time used by this process and its waited-for children (user + system, all
threads) x WATTS_PER_BUSY_CORE. It is an estimate: it ignores idle/static power, memory,
turbo and frequency, and uses one figure for every CPU. Every result carries the flag
`estimate`, `gpu_energy_j=None` with the reason, and the assumptions in `notes`; the
headline `Measurement.energy_j` returns the estimate. RAPL is attached where readable.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tokenjoule.energy.measurement import FLAG_ESTIMATE, Measurement
from tokenjoule.energy.nvml_meter import WindowHandle
from tokenjoule.energy.rapl import RaplReader

# Assumed power of one fully busy core (W): roughly a server CPU's TDP divided by its core
# count (e.g. 280 W / 32 cores ~ 9 W, 125 W / 16 ~ 8 W; laptops are lower). Documented in
# docs/METHOD.md. Change it per host with CpuTimeEstimateMeter(watts_per_busy_core=...).
WATTS_PER_BUSY_CORE = 10.0

ASSUMPTION = (
    "energy = CPU time (user+system, this process and its waited-for children) x "
    "{w:g} W per busy core; idle/static, memory and GPU power are not included"
)


def process_cpu_time_s() -> float:
    """User + system CPU seconds of this process (all threads) and its reaped children."""
    try:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    except ImportError:  # Windows: os.times has the same fields at tick resolution
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


class CpuTimeEstimateMeter:
    method = "estimate-cpu-time"

    def __init__(
        self,
        watts_per_busy_core: float = WATTS_PER_BUSY_CORE,
        clock: Callable[[], float] = time.monotonic,
        cpu_time: Callable[[], float] = process_cpu_time_s,
        rapl: RaplReader | None = None,
        gpu_reason: str = "no GPU energy sensor",
    ):
        if not watts_per_busy_core > 0:
            raise ValueError("watts_per_busy_core must be positive")
        self.watts_per_busy_core = watts_per_busy_core
        self.clock = clock
        self.cpu_time = cpu_time
        self.rapl = rapl if rapl is not None else RaplReader()
        self.gpu_reason = gpu_reason
        self.idle_power_w: float | None = None

    def measure_idle(self, duration_s: float = 5.0) -> float | None:
        # No power sensor: an idle baseline cannot be measured, and a CPU-time estimate of an
        # idle process would be ~0 W, which would be a made-up number. Return None, don't wait.
        return None

    @contextmanager
    def window(self, sync: Callable[[], None] | None = None) -> Iterator[WindowHandle]:
        handle = WindowHandle()
        if sync is not None:
            sync()
        rapl_start = self.rapl.read()
        cpu0, t0 = self.cpu_time(), self.clock()
        yield handle
        if sync is not None:
            sync()
        cpu1, t1 = self.cpu_time(), self.clock()
        rapl = self.rapl.energy_between(rapl_start, self.rapl.read())
        cpu_s = max(cpu1 - cpu0, 0.0)
        duration_s = t1 - t0
        handle.result = Measurement(
            method=self.method,
            duration_s=duration_s,
            gpu_energy_j=None,
            gpu_energy_reason=self.gpu_reason,
            idle_power_w=None,
            cpu_energy_j=rapl.cpu_energy_j,
            cpu_energy_reason=rapl.cpu_energy_reason,
            dram_energy_j=rapl.dram_energy_j,
            dram_energy_reason=rapl.dram_energy_reason,
            flags=(FLAG_ESTIMATE,),
            estimated_energy_j=cpu_s * self.watts_per_busy_core,
            notes={
                "assumption": ASSUMPTION.format(w=self.watts_per_busy_core),
                "cpu_time_s": cpu_s,
                "busy_cores_mean": cpu_s / duration_s if duration_s > 0 else None,
                "watts_per_busy_core": self.watts_per_busy_core,
                "idle_power_reason": "no power sensor: idle power is not measured by the CPU-time estimate",
            },
        )

    def provenance(self) -> dict:
        from tokenjoule.energy.provenance import collect_provenance

        return collect_provenance([], backend=None)

    def close(self) -> None:
        pass
