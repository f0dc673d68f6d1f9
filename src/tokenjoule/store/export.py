"""Export the results store as one flat table (CSV or Parquet) for analysis elsewhere.

Columns come from `ResultStore.to_dataframe()`: the indexed columns, every scalar metric and
every spec field (nested values as JSON text), so a row is self-describing.
"""

from __future__ import annotations

from pathlib import Path

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.store.db import ResultStore

FORMATS = ("csv", "parquet", "sqlite")
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def infer_format(path: str | Path, fmt: str | None) -> str:
    """The explicit format, else the file suffix; errors list the valid formats."""
    if fmt is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        fmt = {"pq": "parquet", "db": "sqlite", "sqlite3": "sqlite"}.get(suffix, suffix)
        if fmt not in FORMATS:
            raise TokenjouleError(f"cannot tell the export format from {str(path)!r}; pass --format "
                                  f"({', '.join(FORMATS)})")
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    return fmt


def export_results(store: ResultStore, path: str | Path, fmt: str | None = None, status: str | None = None) -> int:
    """Write the cells (all, or those with `status`) to `path`; returns the row count."""
    fmt = infer_format(path, fmt)
    path = Path(path)
    check_output_path(path)
    if fmt == "sqlite":
        if status is not None:
            raise TokenjouleError("--format sqlite copies the whole store; drop --status")
        return store.backup(path)
    frame = store.to_dataframe(status=status)
    if fmt == "csv":
        try:
            escape_formulas(frame).to_csv(path, index=False)
        except OSError as exc:
            raise TokenjouleError(f"cannot write {path}: {exc.strerror or exc}") from None
        return len(frame)
    else:
        try:
            import pyarrow  # noqa: F401  (pandas' parquet engine)
        except ImportError:
            from tokenjoule.errors import MissingDependencyError

            raise MissingDependencyError("pyarrow", "pip install pyarrow") from None
        # Columns mixing None and numbers/strings are fine for pyarrow; all-None columns
        # become null-typed, which round-trips as None.
        try:
            frame.to_parquet(path, index=False)
        except OSError as exc:
            raise TokenjouleError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(frame)


def escape_formulas(frame):
    """A copy whose text cells that a spreadsheet would run as a formula start with a quote
    (OWASP's CSV-injection advice). Numbers (a negative energy delta) are left as numbers."""
    from pandas.api.types import is_numeric_dtype

    out = frame.copy()
    for column in out.columns:
        if not is_numeric_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_STARTS) else v)
    return out


def check_output_path(path: Path) -> None:
    """One-line errors for an output file that cannot be written; creates a missing folder."""
    from tokenjoule.paths import ensure_output_file

    ensure_output_file(path)
