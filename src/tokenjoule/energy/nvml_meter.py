"""`NvmlMeter` (method "nvml-counter"): GPU energy from each device's cumulative energy counter.

At each window edge the caller's `sync` runs first (so queued kernels belong to the window),
then the counters are read. Power is sampled at `sample_hz`, by default from a separate
process (energy/sampler_proc.py: the measured process then does no work per sample; an
in-process thread cost CPU-bound eager decode time, see docs/METHOD.md "Meter overhead");
its trapezoid integral is reported next to the counter energy with their relative
disagreement, as a cross-check and as the labelled fallback for a device whose counter
misbehaved. RAPL CPU/DRAM energy is attached where readable. The GPU's temperature and
clocks are recorded at each window start; the idle baseline waits for power to settle
(energy/settle.py) first.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from tokenjoule.energy.counters import (
    COUNTER_UPDATE_PERIOD_S,
    TIMELINE_DISAGREEMENT_THRESHOLD,
    assemble_gpu_energy,
)
from tokenjoule.energy.gpu_backend import GpuBackend
from tokenjoule.energy.measurement import FLAG_FOREIGN_PROCESS, FLAG_IDLE_NOT_SETTLED, Measurement
from tokenjoule.energy.processes import classify_gpu_pids, own_pids
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.energy.settle import SettleRule, wait_until_settled
from tokenjoule.energy.timeline import DEFAULT_SAMPLE_HZ, PowerSampler, integrate_timeline, mean_total_power_w
from tokenjoule.errors import TokenjouleError

POWER_FIELDS = ("auto", "instant", "average")
SAMPLER_KINDS = ("auto", "process", "thread")
REAL_BACKENDS = ("zeus", "pynvml")


class WindowHandle:
    """What `with meter.window() as w` yields; `w.result` is set when the block exits."""

    def __init__(self) -> None:
        self.result: Measurement | None = None


class NvmlMeter:
    method = "nvml-counter"

    def __init__(
        self,
        backend: GpuBackend,
        devices: Sequence[int] | None = None,
        sample_hz: float = DEFAULT_SAMPLE_HZ,
        power_field: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rapl: RaplReader | None = None,
        check_processes: bool = True,
        disagreement_threshold: float = TIMELINE_DISAGREEMENT_THRESHOLD,
        sampler: str = "auto",
        settle_rule: SettleRule | None = SettleRule(),
    ):
        count = backend.device_count()
        valid = list(range(count))
        self.devices = list(valid if devices is None else devices)
        bad = [d for d in self.devices if d not in valid]
        if not self.devices:
            raise TokenjouleError(f"no GPU device given to measure; valid indices: {valid}")
        if bad:
            raise TokenjouleError(
                f"GPU device(s) {bad} not visible; valid indices: {valid} "
                "(indices follow CUDA_VISIBLE_DEVICES)"
            )
        if power_field not in POWER_FIELDS:
            raise TokenjouleError(f"unknown power field {power_field!r}; valid: {', '.join(POWER_FIELDS)}")
        self.backend = backend
        self.sample_hz = sample_hz
        self.clock = clock
        self._sleep = sleep
        self.rapl = rapl if rapl is not None else RaplReader()
        self.check_processes = check_processes
        self.disagreement_threshold = disagreement_threshold
        self.idle_power_w: float | None = None
        self.idle_details: dict = {}
        self.power_fields = [self._choose_field(d, power_field) for d in self.devices]
        self._getters = [
            (backend.instant_power_w if f == "instant" else backend.average_power_w) for f in self.power_fields
        ]
        if sampler not in SAMPLER_KINDS:
            raise TokenjouleError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLER_KINDS)}")
        self.settle_rule = settle_rule
        self.resting_sm_clock_mhz: float | None = None  # the lowest SM clock read (see gpu_state)
        self._idle_settled: bool | None = None
        self.gpu_state()  # a meter is made before the work starts: learn the resting clock
        self.sampler_fallback_reason: str | None = None
        self.sampler = self._make_sampler(sampler)
        self.sampler_kind: str = self.sampler.kind

    def _make_sampler(self, wanted: str):
        thread = lambda: PowerSampler(self._read_power, hz=self.sample_hz, clock=self.clock, sleep=self._sleep)  # noqa: E731
        real = getattr(self.backend, "backend_name", "") in REAL_BACKENDS and self.clock is time.monotonic
        if wanted == "thread" or (wanted == "auto" and not real):
            return thread()
        from tokenjoule.energy.sampler_proc import ProcessPowerSampler, SamplerProcessError

        try:
            return ProcessPowerSampler(self._read_power, self.devices, self.power_fields, self.sample_hz,
                                       clock=self.clock, backend="nvml" if real else "constant:0")
        except (SamplerProcessError, OSError) as exc:
            if wanted == "process":
                raise TokenjouleError(f"the power-sampling process failed to start: {exc}") from exc
            self.sampler_fallback_reason = str(exc)  # recorded in every window's notes
            return thread()

    def gpu_state(self) -> dict[str, dict]:
        """Temperature (C) and SM/memory clocks (MHz) of each device now; None where unreadable."""
        state = {}
        for d in self.devices:
            entry = {}
            for key, read in (("temperature_c", self.backend.temperature_c), ("sm_clock_mhz", self.backend.sm_clock_mhz),
                              ("mem_clock_mhz", self.backend.mem_clock_mhz)):
                try:
                    entry[key] = read(d)
                except Exception:  # a state read must never fail a window
                    entry[key] = None
            state[str(d)] = entry
            clock = entry.get("sm_clock_mhz")
            if clock is not None and (self.resting_sm_clock_mhz is None or clock < self.resting_sm_clock_mhz):
                self.resting_sm_clock_mhz = clock
        return state

    def _clocks_resting(self) -> tuple[bool, str | None]:
        """Part of the settle rule: every SM clock is back near the resting clock."""
        rule, resting = self.settle_rule, self.resting_sm_clock_mhz
        if rule is None or resting is None:
            return True, "resting SM clock unknown: judged on power alone"
        clocks = {d: e.get("sm_clock_mhz") for d, e in self.gpu_state().items()}
        high = {d: c for d, c in clocks.items() if c is not None and c > rule.clock_frac * resting}
        if high:
            return False, f"SM clock {high} MHz still above {rule.clock_frac:g} x resting {resting:g} MHz"
        return True, None

    def _choose_field(self, device: int, wanted: str) -> str:
        # The instant field follows load changes within the window; the average field is a
        # ~1 s moving average on recent drivers, so it lags. Use it only when instant is absent.
        if wanted != "auto":
            return wanted
        return "instant" if self.backend.instant_power_w(device) is not None else "average"

    def _read_power(self) -> tuple:
        return tuple(get(d) for get, d in zip(self._getters, self.devices))

    def _read_counters(self) -> list[float | None]:
        values: list[float | None] = []
        for d in self.devices:
            try:
                values.append(float(self.backend.energy_j(d)))
            except Exception:  # a failed read becomes None with a reason downstream
                values.append(None)
        return values

    def _gpu_pids(self) -> dict[int, list[int] | None]:
        return {d: self.backend.compute_pids(d) for d in self.devices} if self.check_processes else {}

    def _wait(self, seconds: float) -> None:
        """Wait until `seconds` have passed on `self.clock` (works with a fake clock too)."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            (self._sleep or time.sleep)(left)

    def _total_power_w(self) -> float | None:
        values = self._read_power()
        return None if not values or any(v is None for v in values) else float(sum(values))

    def measure_idle(self, duration_s: float = 5.0) -> float | None:
        """Idle power (W, summed over devices) over `duration_s`, once power has settled (see
        energy/settle.py; the wait and its outcome are in `idle_details["settle"]`). The
        counter's energy divided by the time is used when it is valid (the same sensor as the
        windows, so active energy is consistent); else the timeline's mean. Both are kept in
        `idle_details`."""
        if duration_s <= 0:
            raise TokenjouleError(f"idle duration must be positive, got {duration_s} s")
        state_before = self.gpu_state()
        settle = None
        if self.settle_rule is not None:
            settle = wait_until_settled(self._total_power_w, self.clock, self._wait, self.settle_rule,
                                        clock_ok=self._clocks_resting).to_dict()
        state_start = self.gpu_state()
        start_j = self._read_counters()
        t0 = self.clock()
        self.sampler.start(t0)
        try:
            self._wait(duration_s)
        finally:
            self.sampler.stop(final_sample=False)
        end_j = self._read_counters()
        elapsed_s = self.clock() - t0
        self.sampler.sample_now()
        samples = list(self.sampler.samples)
        timeline_w = mean_total_power_w(samples, len(self.devices))
        counter_w = None
        deltas = [None if a is None or b is None else b - a for a, b in zip(start_j, end_j)]
        if elapsed_s >= 2 * COUNTER_UPDATE_PERIOD_S and all(d is not None and d > 0 for d in deltas):
            counter_w = sum(d for d in deltas if d is not None) / elapsed_s
        measured_w = counter_w if counter_w is not None else timeline_w
        settled = None if settle is None else bool(settle["settled"])
        previous_w, previous_settled = self.idle_power_w, self._idle_settled
        keep_previous = settled is False and previous_settled and previous_w is not None
        # An unsettled reading never replaces a settled baseline of the same meter (it would
        # be the 132-W-after-a-run idle of an H100); it is recorded next to it instead.
        self.idle_power_w = previous_w if keep_previous else measured_w
        self._idle_settled = previous_settled if keep_previous else settled
        self.idle_details = {
            "idle_duration_s": elapsed_s,
            "idle_power_counter_w": counter_w,
            "idle_power_timeline_w": timeline_w,
            "idle_power_source": ("previous settled baseline" if keep_previous else
                                  "counter" if counter_w is not None else ("timeline" if timeline_w else None)),
            "idle_power_measured_w": measured_w,
            "idle_settled": self._idle_settled,
            "idle_resting_sm_clock_mhz": self.resting_sm_clock_mhz,
            "idle_settle": settle,
            "idle_gpu_state_before_settle": state_before,
            "idle_gpu_state_start": state_start,
        }
        return self.idle_power_w

    @contextmanager
    def window(self, sync: Callable[[], None] | None = None) -> Iterator[WindowHandle]:
        if self.sampler.running:
            raise TokenjouleError("a window of this meter is already open; windows cannot nest")
        handle = WindowHandle()
        if sync is not None:
            sync()
        pids_start = self._gpu_pids()
        state_start = self.gpu_state()
        rapl_start = self.rapl.read()
        start_j = self._read_counters()
        t0 = self.clock()
        self.sampler.start(t0)
        try:
            yield handle
            if sync is not None:
                sync()
        except BaseException:
            self.sampler.stop(final_sample=False)
            raise
        if self.sampler_kind == "thread":
            # stopping the thread takes microseconds; doing it before the end reads keeps
            # the sampler from competing with them
            self.sampler.stop(final_sample=False)
            end_j = self._read_counters()
            t1 = self.clock()
        else:
            # the process answers 'stop' over a pipe (a millisecond or so): read the edge first
            end_j = self._read_counters()
            t1 = self.clock()
            self.sampler.stop(final_sample=False)
        samples = list(self.sampler.samples)
        samples.append(self.sampler.sample_now())  # the end-edge sample
        rapl_end = self.rapl.read()
        pids_end = self._gpu_pids()
        handle.result = self._build(t1 - t0, start_j, end_j, samples, rapl_start, rapl_end, pids_start, pids_end,
                                    state_start)

    def _build(self, duration_s, start_j, end_j, samples, rapl_start, rapl_end, pids_start, pids_end,
               state_start=None) -> Measurement:
        timeline = integrate_timeline(samples, len(self.devices))
        gpu = assemble_gpu_energy(self.devices, start_j, end_j, duration_s, timeline, self.disagreement_threshold)
        flags, notes = list(gpu.flags), dict(gpu.notes)
        if self.idle_power_w is not None and self._idle_settled is False:
            flags.append(FLAG_IDLE_NOT_SETTLED)
        if self.check_processes:
            foreign, unattributed, unknown, by_device = self._attribute(pids_start, pids_end)
            if foreign:
                flags.append(FLAG_FOREIGN_PROCESS)
                notes["foreign_pids"] = foreign
                # which GPU(s) of the measured set another process was using: their energy
                # includes its work; the other GPUs' readings are clean
                notes["foreign_processes_by_device"] = by_device
            if unattributed:
                notes["unattributed_gpu_pids"] = unattributed  # e.g. host PIDs seen from a container
            if unknown:
                notes["process_list_unavailable"] = unknown
        span = samples[-1].t_s - samples[0].t_s if len(samples) > 1 else 0.0
        notes.update(
            backend=getattr(self.backend, "backend_name", type(self.backend).__name__),
            devices=list(self.devices),
            power_field=dict(zip(map(str, self.devices), self.power_fields)),
            sample_hz_target=self.sample_hz,
            sample_count=len(samples),
            sample_hz_achieved=(len(samples) - 1) / span if span > 0 else None,
            sample_read_errors=self.sampler.read_errors,
            sampler=self.sampler_kind,
            gpu_state_start=state_start,
            timeline_energy_by_device_j=dict(zip(map(str, self.devices), timeline)),
            **self.idle_details,
        )
        if self.sampler_fallback_reason:
            notes["sampler_fallback_reason"] = self.sampler_fallback_reason
        rapl = self.rapl.energy_between(rapl_start, rapl_end)
        return Measurement(
            method=self.method,
            duration_s=duration_s,
            gpu_energy_j=gpu.gpu_energy_j,
            gpu_energy_by_device_j=gpu.by_device_j,
            gpu_energy_reason=gpu.reason,
            timeline_energy_j=gpu.timeline_energy_j,
            timeline_disagreement=gpu.timeline_disagreement,
            idle_power_w=self.idle_power_w,
            cpu_energy_j=rapl.cpu_energy_j,
            cpu_energy_reason=rapl.cpu_energy_reason,
            dram_energy_j=rapl.dram_energy_j,
            dram_energy_reason=rapl.dram_energy_reason,
            flags=tuple(dict.fromkeys(flags)),
            samples=tuple(samples),
            notes=notes,
        )

    def _attribute(self, pids_start, pids_end) -> tuple[list[int], list[int], list[int], dict[str, list[int]]]:
        """(foreign PIDs, unattributed PIDs, devices without a process list, foreign PIDs by
        device index as a string key, only devices that had one)."""
        ours = own_pids()
        foreign: set[int] = set()
        by_device: dict[str, list[int]] = {}
        unattributed: set[int] = set()
        unknown: list[int] = []
        for d in self.devices:
            reported = set()
            for snapshot in (pids_start, pids_end):
                pids = snapshot.get(d)
                if pids is None:
                    unknown.append(d)
                else:
                    reported.update(pids)
            f, u = classify_gpu_pids(sorted(reported), ours)
            foreign.update(f)
            unattributed.update(u)
            if f:
                by_device[str(d)] = sorted(f)
        return sorted(foreign), sorted(unattributed), sorted(set(unknown)), by_device

    def provenance(self) -> dict:
        from tokenjoule.energy.provenance import collect_provenance

        return collect_provenance(self.devices, backend=self.backend)

    def close(self) -> None:
        self.sampler.stop(final_sample=False)
        self.sampler.close()
        self.backend.close()
