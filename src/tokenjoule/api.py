"""The Python entry points of tokenjoule (also reachable as `tokenjoule.NAME`).

- `measure_energy()`: a context manager and a decorator that measure a block of your own code
  (the GPU energy counter where one is readable, else a CPU-time estimate labelled as one).
- `read_results(path)`: a results store as a pandas DataFrame, opened for reading only.
- `load_trace(path, columns=...)`: a request trace, with your column names mapped.
- `estimate(trace, db, model=...)`: the binned energy of a trace from a store's measured cells.

Every example below is run by the tests (tests/test_api.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tokenjoule.errors import TokenjouleError

__all__ = ["measure_energy", "read_results", "load_trace", "estimate"]


class measure_energy:  # noqa: N801 - used like a function: `with measure_energy() as m`
    """Measure the energy and time of a block of code, or of every call of a function.

    `meter`: "auto" (NVML GPU energy counter when readable, else the CPU-time estimate),
    "nvml", "estimate" or "simulated". `devices`: CUDA indices to measure (None: all visible;
    [] for CPU-only work). `sync`: called at both window edges (e.g. `torch.cuda.synchronize`)
    so queued GPU work falls inside the window.

    After the block, `m.result` is the `Measurement` (per-device energy, method, flags...), and
    `m.energy_j`, `m.duration_s`, `m.method`, `m.is_estimate` are shortcuts. An estimate is
    always flagged: `m.is_estimate` is True and `m.method` says how it was obtained.

    >>> import tokenjoule
    >>> with tokenjoule.measure_energy(meter="estimate") as m:
    ...     total = sum(i * i for i in range(200_000))
    >>> m.method, m.is_estimate, m.energy_j >= 0, m.duration_s > 0
    ('estimate-cpu-time', True, True, True)

    As a decorator, each call is measured; the latest `Measurement` is `func.last_measurement`
    and `on_result(measurement)` (if given) sees every one:

    >>> @tokenjoule.measure_energy(meter="estimate")
    ... def work(n):
    ...     return sum(range(n))
    >>> work(10_000)
    49995000
    >>> work.last_measurement.method
    'estimate-cpu-time'
    """

    def __init__(self, meter: str = "auto", devices: Optional[Sequence[int]] = None,
                 sync: Optional[Callable[[], None]] = None,
                 on_result: Optional[Callable[[Any], None]] = None):
        from tokenjoule.energy import METER_KINDS

        if meter not in METER_KINDS:
            from tokenjoule.errors import UnknownNameError

            raise UnknownNameError("meter", meter, METER_KINDS)
        self.meter_kind = meter
        self.devices = devices
        self.sync = sync
        self.on_result = on_result
        self.result: Any = None
        self._meter: Any = None
        self._window: Any = None
        self._handle: Any = None

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> "measure_energy":
        from tokenjoule.energy import make_meter

        self._meter = make_meter(self.meter_kind, devices=self.devices)
        self._window = self._meter.window(sync=self.sync)
        self._handle = self._window.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._window.__exit__(*exc)
            self.result = getattr(self._handle, "result", None)
        finally:
            self._meter.close()
        if self.on_result is not None and self.result is not None:
            self.on_result(self.result)

    # -- decorator ---------------------------------------------------------------------------
    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            window = measure_energy(self.meter_kind, self.devices, self.sync, self.on_result)
            with window:
                value = func(*args, **kwargs)
            wrapper.last_measurement = window.result  # type: ignore[attr-defined]
            return value

        wrapper.last_measurement = None  # type: ignore[attr-defined]
        return wrapper

    # -- shortcuts ---------------------------------------------------------------------------
    def _need(self) -> Any:
        if self.result is None:
            raise TokenjouleError("no measurement yet: read it after the `with` block ends")
        return self.result

    @property
    def energy_j(self) -> Optional[float]:
        """GPU energy when measured, else the labelled estimate; None when neither exists."""
        return self._need().energy_j

    @property
    def duration_s(self) -> float:
        return self._need().duration_s

    @property
    def method(self) -> str:
        return self._need().method

    @property
    def is_estimate(self) -> bool:
        return bool(self._need().is_estimate)


def read_results(path: str | Path, status: Optional[str] = None):
    """A results store as a pandas DataFrame (one row per cell: spec fields, metrics, method,
    flags, GPU). The store is read only; a path that does not exist is an error, never a new
    empty store. `status`: "ok", "failed" or None (all).

    >>> import tokenjoule
    >>> tokenjoule.read_results("no/such/store.db")
    Traceback (most recent call last):
    ...
    tokenjoule.errors.TokenjouleError: no results store at no/such/store.db; give the path of an existing store
    """
    import sqlite3

    from tokenjoule.store.db import ResultStore

    p = Path(path).expanduser()
    if not p.is_file():
        raise TokenjouleError(f"no results store at {path}; give the path of an existing store")
    try:  # read-only: the file must be a SQLite database already (nothing is written to it)
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        conn.execute("PRAGMA user_version").fetchone()
        conn.close()
    except sqlite3.DatabaseError as exc:
        raise TokenjouleError(f"{path} is not a results store ({exc})") from None
    with ResultStore(p, create=False, read_only=True) as store:
        return store.to_dataframe(status=status)


def load_trace(name_or_path: str | Path, fmt: Optional[str] = None, *, columns: Optional[dict[str, str]] = None,
               time_unit: str = "s", **kwargs: Any):
    """A request trace as a `Workload` (requests with input/output tokens and arrival seconds).

    `name_or_path`: a built-in trace name (`tokenjoule.workloads.list_traces()`), a file, or
    `task:NAME`. `columns` maps your column names: keys `input_tokens`, `output_tokens`,
    `arrival_s` (or the short `input`, `output`, `arrival`). `time_unit`: s, ms, us, ns, or iso
    for wall-clock timestamps.

    >>> import tempfile, os, tokenjoule
    >>> path = os.path.join(tempfile.mkdtemp(), "mine.csv")
    >>> _ = open(path, "w").write("prompt_tokens,completion_tokens,timestamp\\n"
    ...                           "100,20,2024-01-01T00:00:00Z\\n300,50,2024-01-01T00:00:02.5Z\\n")
    >>> wl = tokenjoule.load_trace(path, columns={"input": "prompt_tokens", "output": "completion_tokens",
    ...                                           "arrival": "timestamp"}, time_unit="iso")
    >>> [(r.input_tokens, r.output_tokens, r.arrival_s) for r in wl.requests]
    [(100, 20, 0.0), (300, 50, 2.5)]
    """
    from tokenjoule.workloads.traces import resolve_workload

    key = str(name_or_path)
    if key.startswith("task:"):
        return resolve_workload(key, **{k: v for k, v in kwargs.items() if k in ("n", "seed")})
    extra: dict[str, Any] = dict(kwargs)
    if columns or time_unit != "s":  # role names are checked (and short ones mapped) by the parser
        extra.update(columns=columns, time_unit=time_unit)
    return resolve_workload(key, fmt=fmt, **extra)


def estimate(trace: Any, db: str | Path, *, model: str, engine: str = "hf", mode: str = "eager",
             decoding: str = "greedy", input_bins: Optional[Sequence[int]] = None,
             output_bins: Optional[Sequence[int]] = None, overflow: str = "drop", gpu_name: Optional[str] = None,
             rounding: str = "paper"):
    """The binned energy of a trace from the measured cells of a store: the sum over length
    bins of N / B x E_batch (`tokenjoule estimate`; `rounding`: paper, ceil or measured). `trace`: a name, path, `task:NAME`
    or a `Workload` from `load_trace`. Returns an `EstimateResult`: `total_energy_j` (None
    while a bin is unmeasured), `rows` (bin, cell, energy), `missing` (the bins to measure),
    `notes` (estimates among the cells, flags).

    >>> import tempfile, os, tokenjoule
    >>> from tokenjoule.store.db import ResultStore
    >>> db = os.path.join(tempfile.mkdtemp(), "empty.db")
    >>> ResultStore(db).close()  # a store with no cells yet
    >>> res = tokenjoule.estimate("task:translation", db, model="tiny", input_bins=[64, 256], output_bins=[64])
    >>> res.complete, res.total_energy_j, [(m.input_tokens, m.output_tokens) for m in res.missing]
    (False, None, [(64, 64), (256, 64)])
    """
    from tokenjoule.analysis.estimate import binned_estimate
    from tokenjoule.store.db import ResultStore
    from tokenjoule.workloads.binning import DEFAULT_INPUT_EDGES, DEFAULT_OUTPUT_EDGES, Bins
    from tokenjoule.workloads.request import Workload

    workload = trace if isinstance(trace, Workload) else load_trace(trace)
    bins = Bins(tuple(input_bins or DEFAULT_INPUT_EDGES), tuple(output_bins or DEFAULT_OUTPUT_EDGES))
    p = Path(db).expanduser()
    if not p.is_file():
        raise TokenjouleError(f"no results store at {db}; give the path of an existing store")
    with ResultStore(p, create=False, read_only=True) as store:
        return binned_estimate(workload, store, model=model, engine=engine, mode=mode, decoding=decoding,
                               bins=bins, overflow=overflow, gpu_name=gpu_name, rounding=rounding)
