"""Options shared by the commands, so one concept has one name everywhere.

The vocabulary (also in the README, "One vocabulary"):
- lengths and batch: `--input-tokens`, `--output-tokens`, `--batch-size` (the YAML keys
  `input_tokens`, `output_tokens`, `batch_size`); older spellings stay as aliases.
- `--db PATH`: the results store, accepted before or after any (sub)command.
- `--trace`: repeatable and comma-separated; a built-in name, a file, or `task:NAME`;
  `--columns`, `--time-unit`, `--trace-format` say how to read a file.
- `-o` / `--output`: an output path only. `--format`: the format of a file we write.
- `--json` / `--csv`: machine-readable list views on stdout.

Only typer and the standard library are imported here (the module is loaded by `--help`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import typer

from tokenjoule.errors import TokenjouleError

DEFAULT_DB = "tokenjoule.db"  # the same default as tokenjoule.store.db.DEFAULT_DB
DB_HELP = "Results store (SQLite). Accepted before or after the command name."
TRACE_HELP = "Trace: built-in name, file path or task:NAME (repeatable, or comma-separated)."
COLUMNS_HELP = ("Map a CSV/JSONL trace's columns, e.g. input=prompt_tokens,output=completion_tokens,"
                "arrival=timestamp.")
TIME_UNIT_HELP = "Unit of the trace's arrival column: s | ms | us | ns | iso (wall-clock; detected too)."
TRACE_FORMAT_HELP = "Trace format: azure, mooncake, burstgpt, csv, jsonl (default: detected)."
DROP_WARN_SHARE = 0.05  # more than this share of requests dropped by binning is shouted, not noted


# -- --db ------------------------------------------------------------------------------------
def db_option(default: Optional[str] = None) -> Any:
    """`--db PATH`; None means "not given here" so a value given before the command applies."""
    return typer.Option(default, "--db", help=DB_HELP, show_default=DEFAULT_DB)


@dataclass(frozen=True)
class DbChoice:
    path: str
    explicit: bool  # given with --db (anywhere on the line), not the default

    def missing_message(self, what: str = "results database") -> str:
        if self.explicit:
            return (f"no {what} at {self.path} (the path given with --db); check the path, or measure "
                    "cells into it first (tokenjoule measure / tokenjoule sweep --db PATH)")
        return (f"no {what} at ./{self.path} (the default); pass --db PATH of an existing store, "
                "or measure cells first (tokenjoule measure / tokenjoule sweep)")


def resolve_db(ctx: Optional[typer.Context], value: Optional[Any]) -> DbChoice:
    """The store path for this command: its own --db, else one given before the command name
    (`tokenjoule --db X results export`, `tokenjoule results --db X show 3`). Two different
    paths on one line are an error, never a silent choice."""
    given: list[str] = [str(value)] if value is not None else []
    parent = ctx.parent if ctx is not None else None
    while parent is not None:
        v = parent.params.get("db") if parent.params else None
        if v is not None:
            given.append(str(v))
        parent = parent.parent
    distinct = list(dict.fromkeys(given))
    if len(distinct) > 1:
        raise TokenjouleError(f"--db given twice with different paths ({', '.join(distinct)}); give it once")
    if distinct:
        return DbChoice(distinct[0], True)
    return DbChoice(DEFAULT_DB, False)


def open_existing_store(choice: DbChoice, what: str = "results database"):
    """Open a store that must exist already: reading never creates an empty store here."""
    from tokenjoule.store.db import ResultStore

    path = Path(choice.path).expanduser()
    if not path.is_file():
        raise TokenjouleError(choice.missing_message(what))
    return ResultStore(path, create=False, read_only=True)


# -- traces ----------------------------------------------------------------------------------
def parse_traces(values: Optional[Iterable[str]]) -> list[str]:
    """`--trace a --trace b,c` -> [a, b, c] (blank items ignored, order kept, duplicates once)."""
    out: list[str] = []
    for value in values or []:
        for item in str(value).split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def one_trace(values: Optional[Iterable[str]], command: str, required: bool = True) -> Optional[str]:
    traces = parse_traces(values)
    if len(traces) > 1:
        raise TokenjouleError(f"{command} takes one trace, got {len(traces)} ({', '.join(traces)}); "
                              "run it once per trace")
    if not traces and required:
        raise TokenjouleError(f"{command} needs --trace NAME (a built-in trace, a file path or task:NAME)")
    return traces[0] if traces else None




def parse_columns(text: Optional[str]) -> Optional[dict[str, str]]:
    """`input=prompt_tokens,output=completion_tokens,arrival=timestamp` -> the load_trace mapping."""
    from tokenjoule.workloads.formats import COLUMN_ROLES

    if not text:
        return None
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        role, sep, column = item.partition("=")
        role, column = role.strip().lower(), column.strip()
        if not sep or not column:
            raise TokenjouleError(f"--columns takes ROLE=COLUMN pairs, e.g. input=prompt_tokens,"
                                  f"output=completion_tokens,arrival=timestamp; got {item.strip()!r}")
        if role not in COLUMN_ROLES:
            raise TokenjouleError(f"unknown column role {role!r} in --columns; valid: input, output, arrival")
        mapping[COLUMN_ROLES[role]] = column
    return mapping


@dataclass(frozen=True)
class TraceReading:
    """How to read a trace file: what `--trace-format/--columns/--time-unit` (and the BurstGPT
    filters) said. Task profiles and built-in traces ignore what does not apply to them."""

    fmt: Optional[str] = None
    columns: Optional[dict[str, str]] = None
    time_unit: str = "s"
    trace_model: Optional[str] = None
    log_type: Optional[str] = None

    @classmethod
    def from_cli(cls, fmt: Optional[str] = None, columns: Optional[str] = None, time_unit: Optional[str] = None,
                 trace_model: Optional[str] = None, log_type: Optional[str] = None) -> "TraceReading":
        return cls(fmt=fmt, columns=parse_columns(columns), time_unit=time_unit or "s",
                   trace_model=trace_model, log_type=log_type)

    @property
    def any_file_option(self) -> bool:
        return bool(self.fmt or self.columns or self.time_unit != "s" or self.trace_model or self.log_type)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `workloads.traces.load_trace` (through `resolve_workload`)."""
        out: dict[str, Any] = {}
        if self.fmt:
            out["fmt"] = self.fmt
        if self.trace_model:
            out["model"] = self.trace_model
        if self.log_type:
            out["log_type"] = self.log_type
        if self.columns or self.time_unit != "s":
            if self.fmt not in (None, "csv", "jsonl"):
                raise TokenjouleError(f"--columns/--time-unit apply to csv/jsonl traces, not --trace-format {self.fmt}")
            out["columns"] = self.columns
            out["time_unit"] = self.time_unit
        return out


def merge_format(trace_format: Optional[str], old_format: Optional[str]) -> Optional[str]:
    """`--trace-format`, or the older `--format` spelling of the same thing on trace commands."""
    if trace_format and old_format and trace_format != old_format:
        raise TokenjouleError(f"--trace-format {trace_format} and --format {old_format} disagree; give one")
    return trace_format or old_format


def columns_option() -> Any:
    return typer.Option(None, "--columns", help=COLUMNS_HELP)


def time_unit_option() -> Any:
    return typer.Option(None, "--time-unit", help=TIME_UNIT_HELP)


def trace_format_option() -> Any:
    return typer.Option(None, "--trace-format", help=TRACE_FORMAT_HELP)


def old_format_option() -> Any:
    """`--format` meant the trace format on trace commands; kept working, hidden from help."""
    return typer.Option(None, "--format", hidden=True, help="Old spelling of --trace-format.")


def load_workload(trace: str, reading: Optional[TraceReading] = None):
    """The workload a CLI --trace value names, read the way `reading` says."""
    from tokenjoule.workloads.traces import resolve_workload

    reading = reading or TraceReading()
    if trace.startswith(("task:", "paper:")):
        if reading.any_file_option:
            raise TokenjouleError("--trace-format/--columns/--time-unit/--trace-model/--log-type do not apply "
                                  "to task profiles or paper:NAME synthetic workloads")
        return resolve_workload(trace)
    return resolve_workload(trace, **reading.kwargs())


def map_trace_files(traces: list[str], reading: TraceReading, folder: Path) -> list[str]:
    """Trace files read with --columns/--time-unit/--trace-format, rewritten once in the canonical
    columns under `folder`: every later reader (each report section, a sweep preset and its resume
    command) then reads the same requests without the mapping flags. Built-in traces pass as they are."""
    if not reading.any_file_option:
        return traces
    from tokenjoule.workloads.traces import BUILTIN_TRACES

    mapped = []
    for name in traces:
        if name.startswith(("task:", "paper:")) or name in BUILTIN_TRACES:
            mapped.append(name)
            continue
        workload = load_workload(name, reading)
        path = folder / f"{Path(name).stem}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            timed = all(r.arrival_s is not None for r in workload.requests)
            writer.writerow(["input_tokens", "output_tokens", *(["arrival_s"] if timed else [])])
            for r in workload.requests:
                writer.writerow([r.input_tokens, r.output_tokens, *([f"{r.arrival_s:.6f}"] if timed else [])])
        mapped.append(str(path))
    return mapped


def drop_warning(binned) -> Optional[str]:
    """A loud line when binning drops more than DROP_WARN_SHARE of the requests (share, count,
    and the bin edges that would keep them); None otherwise."""
    if not binned.n_total or binned.n_dropped <= DROP_WARN_SHARE * binned.n_total:
        return None
    hint = binned.keeping_bins_hint()
    return (f"warning: {100 * binned.n_dropped / binned.n_total:.1f}% of {binned.name}'s requests "
            f"({binned.n_dropped:,} of {binned.n_total:,}) fall beyond the largest bins and are dropped "
            f"from the estimate; {hint} would keep them (or --overflow clip measures them at the largest bin)")


# -- list views ------------------------------------------------------------------------------
def emit_rows(rows: Sequence[dict[str, Any]], as_json: bool, as_csv: bool) -> bool:
    """Print rows as JSON or CSV on stdout; True when done (then no table is drawn)."""
    if as_json and as_csv:
        raise TokenjouleError("give --json or --csv, not both")
    if as_json:
        typer.echo(json.dumps(list(rows), indent=2, default=str))
        return True
    if as_csv:
        buf = io.StringIO()
        fields: list[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        typer.echo(buf.getvalue(), nl=False)
        return True
    return False


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


# -- carbon and cost -------------------------------------------------------------------------
def carbon_intensity_option() -> Any:
    return typer.Option(None, "--carbon-intensity", metavar="G_PER_KWH",
                        help="Grid carbon intensity (g CO2e per kWh) for the grams beside every kWh.")


def region_option() -> Any:
    return typer.Option(None, "--region", metavar="CODE",
                        help="Grid intensity by country (ISO alpha-3: USA, FRA, DEU...) or cloud region "
                             "(gcp:europe-west1), from CodeCarbon's published tables.")


def price_option() -> Any:
    return typer.Option(None, "--price", metavar="PER_KWH", help="Electricity price per kWh, for a cost beside every kWh.")


def pue_option() -> Any:
    return typer.Option(None, "--pue", help="Power usage effectiveness of the facility (>= 1; default 1: device energy only).")


def footprint_from_cli(carbon_intensity: Optional[float], region: Optional[str], price: Optional[float],
                       pue: Optional[float]):
    from tokenjoule.analysis.carbon import Footprint

    return Footprint.resolve(carbon_intensity, region, price, pue)


class StdoutToStderr:
    """While the engine runs, send file descriptor 1 to stderr, so that what libraries and their
    subprocesses print there (vLLM logs to stdout, from its engine process too) cannot corrupt
    the `--json` document a command prints once the run is over. A no-op when `enabled` is false
    or stdout has no file descriptor to move."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._saved: int | None = None

    def __enter__(self) -> "StdoutToStderr":
        import os
        import sys

        if not self.enabled:
            return self
        try:
            sys.stdout.flush()
            self._saved = os.dup(1)
            os.dup2(2, 1)
        except OSError:  # no descriptor 1 to move (a closed or captured stdout): nothing to protect
            self._saved = None
        return self

    def __exit__(self, *exc: Any) -> None:
        import os
        import sys

        if self._saved is None:
            return
        try:
            sys.stdout.flush()
        finally:
            os.dup2(self._saved, 1)
            os.close(self._saved)
            self._saved = None
