"""One-line errors for output paths (`-o`, `--png`, report folders) before any work is done.

A bad output path found after minutes of work (or a traceback from deep inside pandas or
matplotlib) wastes the run; these checks run first and name the path and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenjoule.errors import TokenjouleError


def _make_parent(path: Path, what: str) -> None:
    parent = path.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise TokenjouleError(f"cannot write {what} {path}: {ancestor} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TokenjouleError(f"cannot write {what} {path}: cannot create folder {parent} "
                              f"({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TokenjouleError(f"cannot write {what} {path}: folder {parent} is not writable")


def ensure_output_file(path: str | Path, what: str = "file") -> Path:
    """`path` as a file that can be written (its folder created); raises one line otherwise."""
    path = Path(path)
    if not str(path) or str(path) == ".":
        raise TokenjouleError(f"the {what} path is empty; give a file name")
    try:
        if path.is_dir():
            raise TokenjouleError(f"cannot write {what} {path}: it is a folder; give a file name")
        _make_parent(path, what)
        if path.exists() and not os.access(path, os.W_OK):
            raise TokenjouleError(f"cannot write {what} {path}: the file is read-only")
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise TokenjouleError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    return path


def ensure_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """`path` as a folder that exists (created) and can be written; raises one line otherwise."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise TokenjouleError(f"cannot write {what} {path}: it is a file, not a folder")
        _make_parent(path / "x", what)
    except OSError as exc:
        raise TokenjouleError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    return path
