"""YAML loading with bounded work: size, encoding, nesting depth and alias expansion are all
checked BEFORE any value is built.

Why: a few hundred bytes of nested aliases (`a: &a [x, x]`, `b: &b [*a, *a]`, ...) expand to
gigabytes once constructed or walked, and deeply nested brackets overflow Python's stack.
The composed node graph is small (aliases share nodes), so its expanded size and depth are
computed on the graph itself, memoised per node, in time linear in the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenjoule.errors import TokenjouleError
from tokenjoule.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES


def read_text_bounded(path: str | Path, what: str = "YAML file", error: type[TokenjouleError] = TokenjouleError,
                      max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of `path`; one-line errors for missing, unreadable, huge or non-UTF-8 files."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise error(f"{p}: {what} is {size:,} bytes; the limit is {max_bytes:,}")
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    return decode_utf8(raw, str(p), what, error)


def decode_utf8(raw: bytes, source: str, what: str = "YAML file",
                error: type[TokenjouleError] = TokenjouleError) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(f"{source}:{line}: the {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                    "save it as UTF-8") from None
    if "\x00" in text:
        raise error(f"{source}: the {what} contains NUL bytes (a binary file?)")
    return text


def _check_graph(root: Any, source: str, error: type[TokenjouleError]) -> None:
    """Raise when the document, aliases expanded, has more than MAX_YAML_NODES nodes or is
    nested deeper than MAX_YAML_DEPTH (iterative: no recursion on hostile input)."""
    import yaml

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = _children(node, yaml)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                raise error(f"{source}: the YAML expands to more than {MAX_YAML_NODES:,} values "
                            "(nested aliases?); write the values out or shrink the file")
            if depth[key] > MAX_YAML_DEPTH:
                raise error(f"{source}: the YAML is nested more than {MAX_YAML_DEPTH} levels deep")
            continue
        if key in size:
            continue
        if key in on_path:
            raise error(f"{source}: the YAML contains a recursive alias (a value that contains itself)")
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node, yaml):
            if id(kid) not in size:
                stack.append((kid, False))
        if len(on_path) > MAX_YAML_DEPTH + 1:
            raise error(f"{source}: the YAML is nested more than {MAX_YAML_DEPTH} levels deep")


def _children(node: Any, yaml: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def compose_bounded(text: str, source: str = "YAML", error: type[TokenjouleError] = TokenjouleError):
    """(data, root node) of one YAML document, after the size/depth/alias checks. The node
    carries line numbers (for error messages that name a line)."""
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise error(f"{source}: the YAML is {len(text):,} characters; the limit is {MAX_YAML_BYTES:,}")
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise error(f"{source}: the YAML is nested more than {MAX_YAML_DEPTH} levels deep") from None
        if node is None:
            return None, None
        _check_graph(node, source, error)
        try:
            data = loader.construct_document(node)
        except RecursionError:  # pragma: no cover - depth is bounded above
            raise error(f"{source}: the YAML is nested too deeply") from None
        return data, node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()


def load_yaml_bounded(source_text: str | Path, source: str | None = None,
                      error: type[TokenjouleError] = TokenjouleError) -> Any:
    """Parse YAML text, or the file at a Path, with bounded work (see the module docstring)."""
    if isinstance(source_text, Path):
        name = source or str(source_text)
        return compose_bounded(read_text_bounded(source_text, error=error), name, error)[0]
    return compose_bounded(source_text, source or "YAML", error)[0]
