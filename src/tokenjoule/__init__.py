"""tokenjoule: measure, model and reduce the energy of LLM inference.

Python entry points (details and runnable examples: `help(tokenjoule.api)`, README "Python API"):

    measure_energy(meter="auto", devices=None, sync=None)
        Context manager and decorator: energy and time of your own code.
            with tokenjoule.measure_energy() as m:
                run_my_model()
            m.energy_j, m.duration_s, m.method, m.is_estimate, m.result (a Measurement)
        GPU energy counter (NVML) where readable; otherwise a CPU-time estimate, flagged as one.

    read_results(path, status=None)
        A results store (made by `tokenjoule measure/sweep`) as a pandas DataFrame; read only,
        a missing path is an error (never a new empty store).

    load_trace(name_or_path, fmt=None, columns=None, time_unit="s")
        A request trace as a Workload; columns={"input": "prompt_tokens", "output":
        "completion_tokens", "arrival": "timestamp"} maps your column names.

    estimate(trace, db, model=..., engine="hf", mode="eager", input_bins=None, output_bins=None)
        The binned energy of a trace from the store's measured cells (EstimateResult).

Lower-level pieces: tokenjoule.energy.make_meter(...).window(), tokenjoule.store.db.ResultStore,
tokenjoule.workloads (bins, traces, task profiles), tokenjoule.analysis (estimate, savings,
theory, recommend). `import tokenjoule` is light: these load on first use (no torch import).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; loaded on first attribute access (PEP 562)
_LAZY = {
    "measure_energy": "tokenjoule.api",
    "read_results": "tokenjoule.api",
    "load_trace": "tokenjoule.api",
    "estimate": "tokenjoule.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip this hook
        return value
    raise AttributeError(f"module 'tokenjoule' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
