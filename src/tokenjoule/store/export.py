"""Export the results store as one flat table (CSV or Parquet) for analysis elsewhere.

Columns come from `ResultStore.to_dataframe()`: the indexed columns, every scalar metric and
every spec field (nested values as JSON text), so a row is self-describing.
"""

from __future__ import annotations

from pathlib import Path

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.store.db import ResultStore

FORMATS = ("csv", "parquet")


def infer_format(path: str | Path, fmt: str | None) -> str:
    """The explicit format, else the file suffix; errors list the valid formats."""
    if fmt is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        fmt = {"pq": "parquet"}.get(suffix, suffix)
        if fmt not in FORMATS:
            raise TokenjouleError(f"cannot tell the export format from {str(path)!r}; pass --format "
                                  f"({', '.join(FORMATS)})")
    if fmt not in FORMATS:
        raise UnknownNameError("export format", fmt, FORMATS)
    return fmt


def export_results(store: ResultStore, path: str | Path, fmt: str | None = None, status: str | None = None) -> int:
    """Write the cells (all, or those with `status`) to `path`; returns the row count."""
    fmt = infer_format(path, fmt)
    frame = store.to_dataframe(status=status)
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        try:
            import pyarrow  # noqa: F401  (pandas' parquet engine)
        except ImportError:
            from tokenjoule.errors import MissingDependencyError

            raise MissingDependencyError("pyarrow", "pip install pyarrow") from None
        # Columns mixing None and numbers/strings are fine for pyarrow; all-None columns
        # become null-typed, which round-trips as None.
        frame.to_parquet(path, index=False)
    return len(frame)
