"""Workloads: requests (token counts + arrivals), trace loaders, task profiles, statistics, binning.

Nothing here imports torch; numpy is imported inside the functions that need it.
"""

from tokenjoule.workloads.binning import (
    DEFAULT_INPUT_EDGES,
    DEFAULT_OUTPUT_EDGES,
    BinnedWorkload,
    Bins,
    bin_workload,
)
from tokenjoule.workloads.profiles import TASK_PROFILES, task_profile
from tokenjoule.workloads.request import Request, Workload
from tokenjoule.workloads.stats import WorkloadStats, workload_stats
from tokenjoule.workloads.sweep_config import read_cells, sweep_yaml, write_sweep
from tokenjoule.workloads.traces import BUILTIN_TRACES, list_traces, load_trace, resolve_workload

__all__ = [
    "BUILTIN_TRACES", "DEFAULT_INPUT_EDGES", "DEFAULT_OUTPUT_EDGES", "TASK_PROFILES", "BinnedWorkload",
    "Bins", "Request", "Workload", "WorkloadStats", "bin_workload", "list_traces", "load_trace",
    "read_cells", "resolve_workload", "sweep_yaml", "task_profile", "workload_stats", "write_sweep",
]
