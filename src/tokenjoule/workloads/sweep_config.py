"""The sweep config written by `tokenjoule workload bins --emit-sweep` and `tokenjoule estimate`.

Format (YAML; the sweep command reads it):

    # comment lines say where the cells came from
    model: llama-3.1-8b
    engine: hf
    mode: eager
    decoding: greedy
    cells:
      - {model: llama-3.1-8b, engine: hf, mode: eager, decoding: greedy, input_tokens: 512, output_tokens: 64, batch_size: max}

The top-level model/engine/mode/decoding are the defaults; every cell also carries them
explicitly, so a reader may use either. `batch_size` is a positive integer or `max` (the
largest batch that fits, found by the sweep). `read_cells` returns the cells with the
defaults filled in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenjoule.errors import TokenjouleError

CELL_KEYS = ("model", "engine", "mode", "decoding", "input_tokens", "output_tokens", "batch_size")


def _scalar(value: Any) -> str:
    text = str(value)
    # Quote anything YAML might read as something other than the plain string we mean.
    if isinstance(value, str) and (not text or any(c in text for c in ":#{}[],&*?|<>=!%@`'\"") or text != text.strip()):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def sweep_yaml(cells: list[dict[str, Any]], comments: list[str] | None = None, bins: Any = None) -> str:
    """YAML text of a sweep config with an explicit `cells:` list (see the module docstring).
    `bins` (a `Bins`): written as `bins: {input: [...], output: [...]}` so the sweep stores them."""
    if not cells:
        raise TokenjouleError("no cells to write: the workload has no occupied bins")
    lines = [f"# {c}" for c in (comments or [])]
    first = cells[0]
    for key in ("model", "engine", "mode", "decoding"):
        lines.append(f"{key}: {_scalar(first[key])}")
    if bins is not None:
        lines.append(f"bins: {{input: [{', '.join(str(e) for e in bins.input_edges)}], "
                     f"output: [{', '.join(str(e) for e in bins.output_edges)}]}}")
    lines.append("cells:")
    for cell in cells:
        missing = [k for k in CELL_KEYS if k not in cell]
        if missing:
            raise TokenjouleError(f"sweep cell {cell} lacks {', '.join(missing)}")
        body = ", ".join(f"{k}: {_scalar(cell[k])}" for k in CELL_KEYS)
        lines.append(f"  - {{{body}}}")
    return "\n".join(lines) + "\n"


def write_sweep(path: str | Path, cells: list[dict[str, Any]], comments: list[str] | None = None,
                bins: Any = None) -> Path:
    path = Path(path)
    text = sweep_yaml(cells, comments, bins)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: a crash never leaves half a config
    except OSError as exc:
        raise TokenjouleError(f"{path}: cannot write the sweep config ({exc.strerror})") from None
    return path


def read_cells(text: str, source: str = "sweep config") -> list[dict[str, Any]]:
    """Cells of a sweep config with the top-level defaults filled in."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TokenjouleError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        raise TokenjouleError(f"{source}: expected a mapping with a 'cells:' list")
    defaults = {k: doc[k] for k in ("model", "engine", "mode", "decoding") if k in doc}
    defaults.setdefault("decoding", "greedy")
    out = []
    for n, cell in enumerate(doc["cells"], start=1):
        if not isinstance(cell, dict):
            raise TokenjouleError(f"{source}: cell {n} is not a mapping")
        merged = {**defaults, **cell}
        missing = [k for k in CELL_KEYS if k not in merged]
        if missing:
            raise TokenjouleError(f"{source}: cell {n} lacks {', '.join(missing)}")
        out.append(merged)
    return out
