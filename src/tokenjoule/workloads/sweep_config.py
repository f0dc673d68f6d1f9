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


def _comment(text: str) -> str:
    # A comment is one line: a line break (e.g. in a trace file name) would start a YAML key.
    return "# " + "".join(c if c.isprintable() else " " for c in str(text))


def sweep_yaml(cells: list[dict[str, Any]], comments: list[str] | None = None, bins: Any = None) -> str:
    """YAML text of a sweep config with an explicit `cells:` list (see the module docstring).
    `bins` (a `Bins`): written as `bins: {input: [...], output: [...]}` so the sweep stores them.

    Written by the YAML library, so any name round-trips (`true`, `null`, `1.5`, quotes, line
    breaks); each cell of scalars is one flow-style line."""
    import yaml

    if not cells:
        raise TokenjouleError("no cells to write: the workload has no occupied bins")
    first = cells[0]
    doc: dict[str, Any] = {key: first[key] for key in ("model", "engine", "mode", "decoding") if key in first}
    if bins is not None:
        doc["bins"] = {"input": list(bins.input_edges), "output": list(bins.output_edges)}
    rows = []
    for cell in cells:
        missing = [k for k in CELL_KEYS if k not in cell]
        if missing:
            raise TokenjouleError(f"sweep cell {cell} lacks {', '.join(missing)}")
        rows.append({k: cell[k] for k in CELL_KEYS})
    doc["cells"] = rows
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=float("inf"), allow_unicode=True)
    return "".join(_comment(c) + "\n" for c in (comments or [])) + body


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
    from tokenjoule.safe_yaml import load_yaml_bounded

    doc = load_yaml_bounded(text, source)
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
