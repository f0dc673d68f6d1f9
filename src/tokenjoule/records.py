"""The stored cell (`CellRecord`): its typed read properties and the constructors that make one.

A record keeps four JSON blobs (spec, metrics, measurement, provenance) exactly as the store
persists them; everything that interprets them lives here, once: the decoding name, the GPU
name (never a CPU name), the cell's flags, the measurement method, whether its energy is an
estimate, and the cell kind (offline / online / comparison). Modules read these properties
instead of string keys, so a blob's layout has one owner.

Constructors: `CellRecord.ok(spec, metrics, measurement)`, `CellRecord.failed(spec, exc)`,
`CellRecord.online(spec_dict, ...)`, `CellRecord.comparison(spec_dict, ...)`.
Also here, because every producer of records needs them and they must not live above the
engines: host provenance (`base_provenance`, `safe_provenance`), the error text of a failed
cell (`error_text`, `is_out_of_memory`) and the thinning of stored timelines (`downsample`).
"""

from __future__ import annotations

import math
import platform
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from tokenjoule import __version__
from tokenjoule.spec import RunSpec, spec_hash

MAX_STORED_SAMPLES = 2000  # power samples kept per stored window (the timeline is thinned)
FLAG_ESTIMATE = "estimate"  # the energy is an estimate, not a sensor reading


def is_estimate(method: Any, flags: Any) -> bool:
    """True when an energy came from an estimate (e.g. method `estimate-cpu-time`), not from a
    sensor: such a number is never shown or ranked as a measurement. `flags` may be a list or
    a comma-separated string."""
    flag_list = flags.split(",") if isinstance(flags, str) else list(flags or [])
    return (isinstance(method, str) and method.startswith("estimate")) or FLAG_ESTIMATE in flag_list


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- error text -----------------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, Python's MemoryError, or any error whose text says
    "out of memory"."""
    torch = sys.modules.get("torch")  # never import torch just to classify an error
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


def error_text(exc: BaseException) -> str:
    """One line naming the error kind; stored in the failed record."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    prefix = "out of memory" if is_out_of_memory(exc) else type(exc).__name__
    return f"{prefix}: {text}"


# -- provenance -----------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def base_provenance() -> dict[str, Any]:
    from tokenjoule.codeversion import code_version

    return {"tokenjoule_version": __version__, **code_version(), "hostname": socket.gethostname(),
            "cpu_name": _cpu_name(), "python_version": platform.python_version(), "time_utc": utc_now()}


def safe_provenance(fn: Callable[[], Any]) -> dict[str, Any]:
    """Call a provenance getter; an error becomes a recorded note, never a lost cell."""
    try:
        return dict(fn() or {})
    except Exception as exc:  # provenance must never lose a measured cell
        return {"provenance_error": " ".join(str(exc).split())}


def downsample(samples: Sequence[Any], max_samples: int = MAX_STORED_SAMPLES) -> list[Any]:
    """Every k-th sample so at most `max_samples` remain (the last one is always kept)."""
    samples = list(samples)
    if len(samples) <= max_samples:
        return samples
    step = math.ceil(len(samples) / max_samples)
    kept = samples[::step]
    if kept[-1] is not samples[-1]:
        kept[-1] = samples[-1]
    return kept


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- the record -----------------------------------------------------------------------------------
@dataclass
class CellRecord:
    """One stored cell. `metrics` holds the per-cell numbers (names in runs.metrics and
    serving.online_metrics); read them through the properties below where one exists."""

    spec: dict[str, Any]
    spec_hash: str
    kind: str = "offline"  # stored kind: offline | online (a comparison is stored as offline)
    status: str = "ok"
    metrics: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    id: int | None = None
    created_at: str | None = None

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def ok(cls, spec: RunSpec, metrics: dict[str, Any], measurement: dict[str, Any],
           provenance: dict[str, Any] | None = None) -> "CellRecord":
        """A measured offline cell (unsaved)."""
        return cls(spec=spec.canonical(), spec_hash=spec.spec_hash(), kind="offline", status="ok",
                   metrics=metrics, measurement=measurement, provenance=dict(provenance or {}))

    @classmethod
    def failed(cls, spec: RunSpec | dict[str, Any], error: BaseException | str,
               provenance: dict[str, Any] | None = None, *, key: str | None = None, kind: str = "offline",
               prefix: str = "", metrics: dict[str, Any] | None = None,
               measurement: dict[str, Any] | None = None) -> "CellRecord":
        """A failed cell: the error as one line (`error_text` for exceptions), no numbers.
        `key` overrides the resume key (an unresolved `batch: max` cell)."""
        spec_dict = spec.canonical() if isinstance(spec, RunSpec) else dict(spec)
        text = error_text(error) if isinstance(error, BaseException) else " ".join(str(error).split())
        return cls(spec=spec_dict, spec_hash=key or spec_hash(spec), kind=kind, status="failed",
                   metrics=dict(metrics or {}), measurement=dict(measurement or {}),
                   provenance=dict(provenance or {}), error=prefix + text)

    @classmethod
    def online(cls, spec: dict[str, Any], metrics: dict[str, Any], measurement: dict[str, Any],
               provenance: dict[str, Any], error: str | None = None) -> "CellRecord":
        """An online (served) run; `error` makes it a failed cell that keeps its rows."""
        return cls(spec=spec, spec_hash=spec_hash(spec), kind="online", status="failed" if error else "ok",
                   metrics=metrics, measurement=measurement, provenance=provenance, error=error)

    @classmethod
    def comparison(cls, spec: dict[str, Any], metrics: dict[str, Any], measurement: dict[str, Any],
                   provenance: dict[str, Any]) -> "CellRecord":
        """The offline side of an offline-vs-online comparison (stored with kind offline and a
        `comparison` key in its spec, as before)."""
        if "comparison" not in spec:
            raise ValueError("a comparison cell's spec names its comparison (spec['comparison'])")
        return cls(spec=spec, spec_hash=spec_hash(spec), kind="offline", status="ok", metrics=metrics,
                   measurement=measurement, provenance=provenance)

    @classmethod
    def replay(cls, spec: dict[str, Any], metrics: dict[str, Any], measurement: dict[str, Any],
               provenance: dict[str, Any]) -> "CellRecord":
        """A direct replay of a trace sample (runs.replay): stored with kind replay, so the
        estimate never reads it as a bin's cell; its spec holds the replay config."""
        if "replay" not in spec:
            raise ValueError("a replay record's spec holds its config (spec['replay'])")
        return cls(spec=spec, spec_hash=spec_hash(spec), kind="replay", status="ok", metrics=metrics,
                   measurement=measurement, provenance=provenance)

    # -- reads ------------------------------------------------------------------------------------
    @property
    def is_ok(self) -> bool:
        return self.status == "ok"

    @property
    def out_of_memory(self) -> bool:
        """A failed cell whose error was running out of memory (see `error_text`)."""
        return self.status == "failed" and (self.error or "").startswith("out of memory")

    @property
    def cell_kind(self) -> str:
        """offline | online | comparison | replay."""
        if self.kind in ("online", "replay"):
            return self.kind
        return "comparison" if "comparison" in self.spec else "offline"

    @property
    def model(self) -> str | None:
        return self.spec.get("model")

    @property
    def engine(self) -> str | None:
        return self.spec.get("engine")

    @property
    def mode(self) -> str | None:
        return self.spec.get("mode")

    @property
    def decoding(self) -> str | None:
        """The decoding strategy name (a spec stores a dict, an online spec may store a name)."""
        value = self.spec.get("decoding")
        if isinstance(value, dict):
            return value.get("strategy")
        return value if isinstance(value, str) else None

    @property
    def batch_size(self) -> int | None:
        value = self.spec.get("batch_size")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def input_tokens(self) -> int | None:
        value = self.spec.get("input_tokens")
        return int(value) if isinstance(value, int) else None

    @property
    def output_tokens(self) -> int | None:
        value = self.spec.get("output_tokens")
        return int(value) if isinstance(value, int) else None

    @property
    def gpu_names(self) -> list[str]:
        return [str(g) for g in (self.provenance.get("gpu_names") or [])]

    @property
    def gpu_name(self) -> str | None:
        """The first GPU's name; None for a cell run without a GPU (never the CPU's name)."""
        names = self.gpu_names
        return names[0] if names else None

    @property
    def gpu_count(self) -> int:
        return len(self.gpu_names)

    @property
    def device_name(self) -> str | None:
        """What ran the cell, for display: the GPU, else the CPU."""
        return self.gpu_name or self.provenance.get("cpu_name")

    @property
    def method(self) -> str | None:
        """How the energy was obtained (nvml-counter, rapl, estimate-cpu-time, simulated...):
        the stored window's method, else the one in the metrics (compare-serving cells)."""
        return (self.measurement or {}).get("method") or self.metrics.get("method")

    @property
    def flags(self) -> list[str]:
        """The cell's flags: the union over all its windows (in metrics) when present, else
        the stored window's."""
        return list(self.metrics.get("flags") or (self.measurement or {}).get("flags") or [])

    @property
    def is_estimate(self) -> bool:
        """True when the energy is an estimate, not a sensor reading (energy.measurement rule)."""
        return is_estimate(self.method, self.flags)

    @property
    def energy_j(self) -> float | None:
        return _number(self.metrics.get("energy_j"))

    @property
    def duration_s(self) -> float | None:
        return _number(self.metrics.get("duration_s"))

    @property
    def energy_per_output_token_j(self) -> float | None:
        return _number(self.metrics.get("energy_per_output_token_j"))

    @property
    def idle_power_w(self) -> float | None:
        return _number(self.metrics.get("idle_power_w"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "created_at": self.created_at, "kind": self.kind, "status": self.status,
            "spec_hash": self.spec_hash, "spec": self.spec, "metrics": self.metrics,
            "measurement": self.measurement, "provenance": self.provenance, "error": self.error,
        }


# -- the settling rule of adaptive windows (runs.windows), on stored records ------------------------
STOP_AGREE = "agree"
MIN_AGREEING_WINDOWS = 2


def settling_count(reason: str, n_windows: int, min_windows: int = MIN_AGREEING_WINDOWS) -> int:
    """Windows before the agreeing ones: only a stop by agreement says which windows settled
    (the last `min_windows`); without agreement every window counts."""
    return max(0, n_windows - min_windows) if reason == STOP_AGREE else 0


def settled_figures(stop_reason: str | None, windows: Sequence[dict]) -> dict | None:
    """Energy and time per batch of the windows a cell's figures use, from its stored window
    summaries (`measurement["windows"]`, kinds `full` and `full-settling`), the settling rule
    applied: also to adaptive cells stored before the rule existed, whose settling window was
    averaged in. None when a window lacks its energy or time, or there are none.

    Returns (all per batch) {"energy_j", "duration_s" (means of the windows used),
    "windows_used", "settling_windows", "energy_j_all_windows", "used_energies_j",
    "settling_energies_j", "settling_durations_s"}."""
    full = [w for w in windows if w.get("kind") in ("full", "full-settling")]
    if not full or any(w.get("energy_j") is None or w.get("duration_s") is None for w in full):
        return None
    per = [(float(w["energy_j"]) / max(int(w.get("iterations") or 1), 1),
            float(w["duration_s"]) / max(int(w.get("iterations") or 1), 1)) for w in full]
    k = settling_count(stop_reason or "", len(per))
    used, early = per[k:], per[:k]
    return {"energy_j": sum(e for e, _ in used) / len(used), "duration_s": sum(d for _, d in used) / len(used),
            "windows_used": len(used), "settling_windows": k,
            "energy_j_all_windows": sum(e for e, _ in per) / len(per),
            "used_energies_j": [e for e, _ in used], "settling_energies_j": [e for e, _ in early],
            "settling_durations_s": [d for _, d in early]}


def finished_replays(store, **columns: Any) -> list["CellRecord"]:
    """The store's finished replays, the newest of each config (spec hash), oldest first."""
    latest = {rec.spec_hash: rec for rec in store.find(status="ok", kind="replay", **columns)}  # find: oldest first
    return sorted(latest.values(), key=lambda r: r.id or 0)
