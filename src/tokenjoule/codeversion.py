"""Which code produced a number: the git commit of the tokenjoule checkout, else the version.

Recorded with every cell (provenance key `code_version`):
- `TOKENJOULE_CODE_VERSION` when set (a copy of the tree without .git, e.g. on a GPU host the
  tree was sent to, gets the commit from whoever sent it);
- else `git rev-parse HEAD` of the checkout holding this package, with `-dirty` appended when
  tracked files differ from that commit;
- else the installed package version, marked `(no git checkout)`.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import tokenjoule

ENV_VAR = "TOKENJOULE_CODE_VERSION"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str | bool | None]:
    """{"code_version": ..., "code_version_source": env | git | package, "code_dirty": bool | None}."""
    env = os.environ.get(ENV_VAR)
    if env:
        return {"code_version": env, "code_version_source": "env", "code_dirty": env.endswith("-dirty")}
    root = Path(tokenjoule.__file__).resolve().parents[2]
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        if commit:
            status = _git(root, "status", "--porcelain", "--untracked-files=no")
            dirty = bool(status) if status is not None else None
            return {"code_version": commit + ("-dirty" if dirty else ""), "code_version_source": "git",
                    "code_dirty": dirty}
    return {"code_version": f"{tokenjoule.__version__} (no git checkout)", "code_version_source": "package",
            "code_dirty": None}
