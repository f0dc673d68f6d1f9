"""The results store: SQLite, versioned schema, one row per measured cell."""

from tokenjoule.store.db import CellRecord, ResultStore

__all__ = ["CellRecord", "ResultStore"]
