"""The documented maxima of every numeric input, in one place (docs/METHOD.md, "Limits").

Why bounds at all: a value far outside what any real run uses is a typo or hostile input, and
unbounded it turns into hours of work, gigabytes of memory, an integer SQLite cannot store
(64-bit) or a float that overflows a sleep. Each bound is generous for real hardware (the
largest context windows, batches and runs people measure) and checked before any work starts.
The pydantic models (RunSpec, the sweep config, serve-bench options) use these constants.
"""

from __future__ import annotations

import math

# -- cells ----------------------------------------------------------------------------------
MAX_TOKENS = 2**21  # input or output tokens per request (2,097,152: above any shipped context window)
MAX_BATCH_SIZE = 2**16  # requests per batch (65,536)
MAX_REPEATS = 10_000  # measured repeats of a cell
MAX_WARMUP = 10_000  # unmeasured warm-up runs
MAX_PARALLEL = 1024  # tensor / pipeline parallel degree
MAX_SEED = 2**63 - 1  # seeds are stored as SQLite 64-bit integers
MAX_WINDOW_S = 3600.0  # --min-window-s: one measurement window of at most an hour
# -- sweeps ---------------------------------------------------------------------------------
MAX_COOLDOWN_S = 3600.0  # pause between cells
MAX_IDLE_S = 3600.0  # idle-power baseline
MAX_BATCH_CAP = MAX_BATCH_SIZE  # ceiling of the largest-batch search
MAX_BATCH_RETRIES = 100
MAX_GRID_CELLS = 1_000_000  # cells one sweep config may describe (counted before anything is expanded)
# -- serve-bench ----------------------------------------------------------------------------
MAX_REQUESTS = 1_000_000  # requests per online run
MIN_RATE_RPS = 1e-4  # one request per ~3 hours; slower is not a load test
MAX_RATE_RPS = 1e6
MAX_CONCURRENCY = 100_000
MAX_TIMEOUT_S = 86400.0  # per request, end to end
MAX_SPEEDUP = 1e6
MAX_SLO_MS = 86_400_000.0
MAX_SSE_LINE_BYTES = 1 << 20  # one server-sent-events line (a token chunk is ~200 bytes)
MAX_ERROR_BODY_BYTES = 64 << 10  # read of a non-200 response body
MAX_STREAM_BYTES = 1 << 30  # one whole streamed response
# -- files ----------------------------------------------------------------------------------
MAX_YAML_BYTES = 1 << 20  # a sweep config
MAX_YAML_NODES = 200_000  # YAML nodes after alias expansion
MAX_YAML_DEPTH = 64  # nesting of mappings / lists
# -- store ----------------------------------------------------------------------------------
STORE_BUSY_TIMEOUT_S = 60.0  # longest wait for another process's write lock (then a side file)
INT64_MAX = 2**63 - 1


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_range(name: str, value: float | int | None, low: float, high: float) -> None:
    """Raise a one-line error when `value` (not None) is outside [low, high] or not finite."""
    from tokenjoule.errors import TokenjouleError

    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise TokenjouleError(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise TokenjouleError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
