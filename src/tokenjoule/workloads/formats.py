"""Parsers for the request-trace file formats tokenjoule reads.

Every parser turns text into parallel lists of input tokens, output tokens and arrival times
(seconds, absolute in the file's own clock; the caller rebases them to the first request),
plus a record of every row it removed and why. Nothing is dropped silently, and malformed
input stops with `file:line: what is wrong` (a `TokenjouleError`), never another exception.

Formats:
- `azure`: Azure LLM inference trace 2023/2024, CSV `TIMESTAMP,ContextTokens,GeneratedTokens`,
  wall-clock timestamps with 7 fractional digits (which `datetime.strptime` rejects).
- `mooncake`: Mooncake JSONL, `timestamp` (ms), `input_length`, `output_length`, `hash_ids`.
- `burstgpt`: BurstGPT CSV `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`
  (timestamp in seconds); filters on model and log type; 0 response tokens = failed request.
- `csv` / `jsonl`: generic, with a column mapping (`input_tokens`, `output_tokens`, optional
  `arrival_s`) and a time unit for the arrival column.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterator

from tokenjoule.errors import TokenjouleError, UnknownNameError

FORMATS = ("azure", "mooncake", "burstgpt", "csv", "jsonl")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
ISO_TIME = "iso"  # a time unit meaning "wall-clock timestamps" (YYYY-MM-DD[ T]HH:MM:SS[.f][Z])
# Longer than any context window anyone serves; beyond this a length is a corrupt value.
MAX_TOKENS = 2**31 - 1

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
GENERIC_COLUMNS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens", "arrival_s": "arrival_s"}
# Role names a column mapping may use (CLI `--columns input=...`, Python `columns={"input": ...}`).
COLUMN_ROLES = {"input": "input_tokens", "input_tokens": "input_tokens", "output": "output_tokens",
                "output_tokens": "output_tokens", "arrival": "arrival_s", "arrival_s": "arrival_s",
                "time": "arrival_s", "timestamp": "arrival_s"}

_INTEGER = re.compile(r"[+-]?[0-9]+")
_WALLCLOCK = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)\s*(?:Z|[+-]00:?00)?\s*$"
)


@dataclass
class Parsed:
    """What a parser read: parallel columns plus the rows it removed, by reason."""

    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    arrival_s: list[float] | None = field(default_factory=list)
    rows_read: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    filters: list[str] = field(default_factory=list)
    first_timestamp: str | None = None

    def remove(self, reason: str) -> None:
        self.removed[reason] = self.removed.get(reason, 0) + 1


class _Where:
    """Formats `file:line:` prefixes for error messages."""

    def __init__(self, source: str):
        self.source = source

    def error(self, line: int, what: str) -> TokenjouleError:
        return TokenjouleError(f"{self.source}:{line}: {what}")


def parse_tokens(value: Any, column: str, where: _Where, line: int) -> int:
    """A non-negative integer token count from a CSV string or a JSON value."""
    if isinstance(value, bool) or value is None:
        raise where.error(line, f"{column} must be a non-negative integer, got {value!r}")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise where.error(line, f"{column} must be a non-negative integer, got {value!r}")
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise where.error(line, f"{column} must be a non-negative integer, got {value!r}")
        value = int(text)
    elif not isinstance(value, int):
        raise where.error(line, f"{column} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise where.error(line, f"{column} is negative ({value})")
    if value > MAX_TOKENS:
        raise where.error(line, f"{column} is implausibly large ({value})")
    return value


def parse_number(value: Any, column: str, where: _Where, line: int) -> float:
    """A finite, non-negative number of seconds/ms from a CSV string or JSON value."""
    if isinstance(value, bool) or value is None:
        raise where.error(line, f"{column} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise where.error(line, f"{column} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise where.error(line, f"{column} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise where.error(line, f"{column} must be a finite non-negative number, got {value!r}")
    return value


_ORDINALS: dict[tuple[str, str, str], int] = {}


_UNIX_EPOCH_DAY = date(1970, 1, 1).toordinal()


def parse_wallclock(text: str, column: str, where: _Where, line: int) -> float:
    """Seconds since 1970-01-01 (no timezone applied) of `YYYY-MM-DD HH:MM:SS[.fraction]` (any number of digits).

    Hand-parsed because `strptime` accepts at most 6 fractional digits and is slow; the day
    ordinal is cached since a trace spans few dates."""
    m = _WALLCLOCK.match(text) if isinstance(text, str) else None
    if m is None:
        raise where.error(line, f"{column} is not a timestamp like 2023-11-16 18:15:46.6805900: {text!r}")
    y, mo, d, hh, mm, ss = m.groups()
    key = (y, mo, d)
    days = _ORDINALS.get(key)
    if days is None:
        try:
            days = date(int(y), int(mo), int(d)).toordinal()
        except ValueError:
            raise where.error(line, f"{column} has an impossible date: {text!r}") from None
        _ORDINALS[key] = days
    h, mi, s = int(hh), int(mm), float(ss)
    if h > 23 or mi > 59 or s >= 61:
        raise where.error(line, f"{column} has an impossible time of day: {text!r}")
    return (days - _UNIX_EPOCH_DAY) * 86400.0 + h * 3600 + mi * 60 + s


def decode_text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TokenjouleError(f"{source}: not UTF-8 text (byte {exc.start}); expected a CSV or JSONL trace") from None


def _csv_rows(text: str, where: _Where) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank CSV row after the header, csv errors made clean."""
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise where.error(line, "contains a NUL byte; not a text CSV file")
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row
    except csv.Error as exc:
        raise where.error(reader.line_num, f"malformed CSV ({exc})") from None


def _header_index(header: list[str], wanted: dict[str, str], where: _Where, line: int) -> dict[str, int]:
    """Column positions of `wanted` {role: column name}; a missing column is an error."""
    names = [h.strip() for h in header]
    out = {}
    for role, col in wanted.items():
        if col not in names:
            hint = ("; map your columns with --columns input=COL,output=COL[,arrival=COL] "
                    "(Python: load_trace(columns={'input_tokens': COL, ...}))" if role in GENERIC_COLUMNS else "")
            raise where.error(line, f"missing column {col!r}; found {', '.join(repr(n) for n in names)}{hint}")
        out[role] = names.index(col)
    return out


def _field(row: list[str], idx: int, col: str, where: _Where, line: int) -> str:
    if idx >= len(row):
        raise where.error(line, f"row has {len(row)} fields; column {col!r} is missing")
    return row[idx]


def parse_azure(text: str, source: str) -> Parsed:
    where, out = _Where(source), Parsed()
    rows = _csv_rows(text, where)
    first = next(rows, None)
    if first is None:
        raise where.error(1, "empty file; expected the header " + ",".join(AZURE_COLUMNS))
    idx = _header_index(first[1], dict(zip(("t", "i", "o"), AZURE_COLUMNS)), where, first[0])
    for line, row in rows:
        stamp = _field(row, idx["t"], "TIMESTAMP", where, line)
        out.arrival_s.append(parse_wallclock(stamp, "TIMESTAMP", where, line))
        if out.first_timestamp is None:
            out.first_timestamp = stamp.strip()
        out.input_tokens.append(parse_tokens(_field(row, idx["i"], "ContextTokens", where, line),
                                             "ContextTokens", where, line))
        out.output_tokens.append(parse_tokens(_field(row, idx["o"], "GeneratedTokens", where, line),
                                              "GeneratedTokens", where, line))
        out.rows_read += 1
    return out


def parse_burstgpt(text: str, source: str, *, model: str | None = None, log_type: str | None = None) -> Parsed:
    """BurstGPT: keep rows of `model` and `log_type` (case-insensitive; a log type may be given
    by its first word, e.g. "conversation" for "Conversation log"); rows with 0 response tokens
    are failed requests and are removed (counted)."""
    where, out = _Where(source), Parsed()
    rows = _csv_rows(text, where)
    first = next(rows, None)
    if first is None:
        raise where.error(1, "empty file; expected the header " + ",".join(BURSTGPT_COLUMNS))
    roles = {"t": "Timestamp", "m": "Model", "i": "Request tokens", "o": "Response tokens", "l": "Log Type"}
    idx = _header_index(first[1], roles, where, first[0])
    want_model = model.strip().lower() if model else None
    want_log = log_type.strip().lower() if log_type else None
    for line, row in rows:
        out.rows_read += 1
        row_model = _field(row, idx["m"], "Model", where, line).strip()
        row_log = _field(row, idx["l"], "Log Type", where, line).strip()
        t = parse_number(_field(row, idx["t"], "Timestamp", where, line), "Timestamp", where, line)
        i = parse_tokens(_field(row, idx["i"], "Request tokens", where, line), "Request tokens", where, line)
        o = parse_tokens(_field(row, idx["o"], "Response tokens", where, line), "Response tokens", where, line)
        if want_model and row_model.lower() != want_model:
            out.remove(f"model is not {model}")
            continue
        if want_log and not (row_log.lower() == want_log or row_log.lower().split(" ")[0] == want_log):
            out.remove(f"log type is not {log_type}")
            continue
        if o == 0:
            out.remove("failed request (0 response tokens)")
            continue
        out.arrival_s.append(t)
        out.input_tokens.append(i)
        out.output_tokens.append(o)
    if want_model:
        out.filters.append(f"model == {model!r}")
    if want_log:
        out.filters.append(f"log type == {log_type!r}")
    out.filters.append("response tokens > 0")
    return out


def parse_generic_csv(text: str, source: str, *, columns: dict[str, str] | None = None,
                      time_unit: str = "s") -> Parsed:
    """Any CSV with input/output token columns; the arrival column is optional (numbers in
    `time_unit`, or wall-clock timestamps)."""
    where, out = _Where(source), Parsed()
    cols = _columns(columns)
    scale = _time_scale(time_unit)
    rows = _csv_rows(text, where)
    first = next(rows, None)
    if first is None:
        raise where.error(1, f"empty file; expected a header with {cols['input_tokens']!r} and {cols['output_tokens']!r}")
    header = [h.strip() for h in first[1]]
    wanted = {k: v for k, v in cols.items() if k != "arrival_s" or v in header}
    idx = _header_index(header, wanted, where, first[0])
    if "arrival_s" not in idx:
        out.arrival_s = None
    for line, row in rows:
        out.rows_read += 1
        out.input_tokens.append(parse_tokens(_field(row, idx["input_tokens"], cols["input_tokens"], where, line),
                                             cols["input_tokens"], where, line))
        out.output_tokens.append(parse_tokens(_field(row, idx["output_tokens"], cols["output_tokens"], where, line),
                                              cols["output_tokens"], where, line))
        if out.arrival_s is not None:
            raw = _field(row, idx["arrival_s"], cols["arrival_s"], where, line)
            out.arrival_s.append(_arrival(raw, cols["arrival_s"], scale, where, line))
    return out


def _json_lines(text: str, where: _Where) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise where.error(line, f"not valid JSON ({str(exc).split(':')[0]})") from None
        if not isinstance(obj, dict):
            raise where.error(line, f"expected a JSON object per line, got {type(obj).__name__}")
        yield line, obj


def _key(obj: dict[str, Any], key: str, where: _Where, line: int) -> Any:
    if key not in obj:
        raise where.error(line, f"missing key {key!r}; found {', '.join(repr(k) for k in list(obj)[:8])}")
    return obj[key]


def parse_mooncake(text: str, source: str) -> Parsed:
    where, out = _Where(source), Parsed()
    for line, obj in _json_lines(text, where):
        out.rows_read += 1
        out.arrival_s.append(parse_number(_key(obj, "timestamp", where, line), "timestamp", where, line) / 1000.0)
        out.input_tokens.append(parse_tokens(_key(obj, "input_length", where, line), "input_length", where, line))
        out.output_tokens.append(parse_tokens(_key(obj, "output_length", where, line), "output_length", where, line))
    if out.rows_read == 0:
        raise where.error(1, "empty file; expected JSON lines with " + ", ".join(MOONCAKE_KEYS))
    return out


def parse_generic_jsonl(text: str, source: str, *, columns: dict[str, str] | None = None,
                        time_unit: str = "s") -> Parsed:
    where, out = _Where(source), Parsed()
    cols = _columns(columns)
    scale = _time_scale(time_unit)
    for line, obj in _json_lines(text, where):
        if out.rows_read == 0 and cols["arrival_s"] not in obj:
            out.arrival_s = None
        out.rows_read += 1
        out.input_tokens.append(parse_tokens(_key(obj, cols["input_tokens"], where, line),
                                             cols["input_tokens"], where, line))
        out.output_tokens.append(parse_tokens(_key(obj, cols["output_tokens"], where, line),
                                              cols["output_tokens"], where, line))
        if out.arrival_s is not None:
            raw = _key(obj, cols["arrival_s"], where, line)
            out.arrival_s.append(_arrival(raw, cols["arrival_s"], scale, where, line))
    if out.rows_read == 0:
        raise where.error(1, f"empty file; expected JSON lines with {cols['input_tokens']!r} and {cols['output_tokens']!r}")
    return out


def _arrival(raw: Any, column: str, scale: float | None, where: _Where, line: int) -> float:
    if scale is None:  # --time-unit iso: every value must be a wall-clock timestamp
        return parse_wallclock(raw if isinstance(raw, str) else repr(raw), column, where, line)
    if isinstance(raw, str) and ("-" in raw.strip()[1:] or ":" in raw):
        return parse_wallclock(raw, column, where, line)
    return parse_number(raw, column, where, line) * scale


def _columns(columns: dict[str, str] | None) -> dict[str, str]:
    cols = dict(GENERIC_COLUMNS)
    for role, name in (columns or {}).items():
        if role not in COLUMN_ROLES:
            raise UnknownNameError("column role", role, ["input", "output", "arrival", *GENERIC_COLUMNS])
        cols[COLUMN_ROLES[role]] = name
    return cols


def _time_scale(unit: str) -> float | None:
    if unit == ISO_TIME:
        return None
    if unit not in TIME_UNITS:
        raise UnknownNameError("time unit", unit, [*TIME_UNITS, ISO_TIME])
    return TIME_UNITS[unit]


def detect_format(text: str, source: str) -> str:
    """Guess the format from the first non-blank line (header or first JSON object)."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise TokenjouleError(f"{source}:1: empty file; cannot detect its format")
    if first.lstrip().startswith("{"):
        try:
            obj = json.loads(first)
        except ValueError:
            raise TokenjouleError(f"{source}:1: starts like JSON but is not valid JSON") from None
        return "mooncake" if isinstance(obj, dict) and all(k in obj for k in MOONCAKE_KEYS) else "jsonl"
    header = [h.strip().strip('"') for h in first.split(",")]
    if all(c in header for c in AZURE_COLUMNS):
        return "azure"
    if all(c in header for c in ("Timestamp", "Model", "Request tokens", "Response tokens")):
        return "burstgpt"
    return "csv"
