"""Keep a measurement whose store write failed: one JSON line per record in a side file.

A cell can take minutes of GPU time; losing it because the store was locked, read-only or
damaged when the row was written would waste that. The record goes to
`<store>.unsaved.jsonl` next to the store (or, when that folder is not writable, the system
temp folder), and `tokenjoule results import FILE` adds it to a store later.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def side_file_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".unsaved.jsonl")


def save_unsaved(store_path: Path, record: dict[str, Any]) -> Path:
    """Append `record` to the side file; returns its path. Raises OSError only when neither the
    store's folder nor the temp folder can be written."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    candidates = [side_file_for(store_path),
                  Path(tempfile.gettempdir()) / f"tokenjoule-{os.getpid()}-{store_path.name}.unsaved.jsonl"]
    last: OSError | None = None
    for path in candidates:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            return path
        except OSError as exc:
            last = exc
    assert last is not None
    raise last


def read_unsaved(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, record or None when the line is damaged) for each line of a side file."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                yield number, None
                continue
            yield number, data if isinstance(data, dict) else None
