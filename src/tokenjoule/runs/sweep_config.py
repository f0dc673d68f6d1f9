"""Sweep configuration: a YAML grid of cells, validated with errors that name the key and line.

    model: llama-3.1-8b          # any axis may be a list; the product of the lists is the grid
    engine: hf
    mode: [eager, compile]
    decoding: [greedy, {strategy: sample, temperature: 0.7}]
    input_tokens: [64, 512]
    output_tokens: 64
    batch_size: [1, 8, max]      # "max": largest fitting batch; "1..max": powers of two up to it
    cooldown_s: 10               # sweep options (not part of a cell)
    cells:                       # optional explicit cells; top-level values are their defaults
      - {input_tokens: 512, output_tokens: 64, batch_size: max}

Without `cells:` the grid is the product of the top-level axes. With it, every cell is the
top-level values overridden by the cell's own keys, and each cell expands to the product of
its (inherited or own) list-valued axes. Identical cells are kept once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.spec import (  # noqa: F401  (unresolved_hash re-exported)
    BATCH_MAX,
    DECODING_STRATEGIES,
    DEFAULT_MAX_BATCH_CAP,
    DecodingSpec,
    RunSpec,
    load_key,
    unresolved_hash,
)

# Keys that may be lists (one grid axis each) and keys that are one value per cell.
AXES = ("model", "engine", "mode", "decoding", "input_tokens", "output_tokens", "batch_size",
        "repeats", "warmup", "dtype", "seed", "tensor_parallel", "pipeline_parallel")
CELL_SCALARS = ("device", "min_window_s", "split_prefill", "engine_options", "protocol", "window_agree_rel",
                "max_windows")
ALIASES = {"batch": "batch_size"}
BATCH_UPTO_MAX = "1..max"
ORDERS = ("ascending", "as-written")


class SweepConfigError(TokenjouleError):
    """A sweep config that cannot be used; the message names the file, line and key."""


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _ints(value: Any, minimum: int) -> Any:
    for item in _as_list(value):
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f"expected an integer >= {minimum} (or a list of them), got {item!r}")
    if isinstance(value, list) and not value:
        raise ValueError("empty list")
    return value


def _strs(value: Any) -> Any:
    for item in _as_list(value):
        if not isinstance(item, str) or not item:
            raise ValueError(f"expected a name (or a list of names), got {item!r}")
    if isinstance(value, list) and not value:
        raise ValueError("empty list")
    return value


class CellTemplate(BaseModel):
    """The keys one cell (or the top level) may set. None means "inherit"."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: Any = None
    engine: Any = None
    mode: Any = None
    decoding: Any = None
    input_tokens: Any = None
    output_tokens: Any = None
    batch_size: Any = Field(None, alias="batch")
    repeats: Any = None
    warmup: Any = None
    dtype: Any = None
    seed: Any = None
    tensor_parallel: Any = None
    pipeline_parallel: Any = None
    device: str | None = None
    min_window_s: float | None = Field(None, ge=0)
    split_prefill: bool | None = None
    engine_options: dict[str, Any] | None = None
    protocol: str | None = None  # full | adaptive (runs.windows)
    window_agree_rel: float | None = Field(None, gt=0)
    max_windows: int | None = Field(None, ge=2)

    @field_validator("model", "engine", "mode", "dtype")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return None if v is None else _strs(v)

    @field_validator("input_tokens", "output_tokens", "repeats", "tensor_parallel", "pipeline_parallel")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        return None if v is None else _ints(v, 1)

    @field_validator("warmup", "seed")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        return None if v is None else _ints(v, 0)

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: Any) -> Any:
        if v is None:
            return None
        for item in _as_list(v):
            ok_int = isinstance(item, int) and not isinstance(item, bool) and item >= 1
            if not ok_int and item not in (BATCH_MAX, BATCH_UPTO_MAX):
                raise ValueError(f"expected an integer >= 1, {BATCH_MAX!r} or {BATCH_UPTO_MAX!r}, got {item!r}")
        return v

    @field_validator("decoding")
    @classmethod
    def _decoding(cls, v: Any) -> Any:
        if v is None:
            return None
        out = []
        for item in _as_list(v):
            if isinstance(item, str):
                if item not in DECODING_STRATEGIES:
                    raise ValueError(str(UnknownNameError("decoding", item, DECODING_STRATEGIES)))
                out.append(DecodingSpec(strategy=item))
            elif isinstance(item, dict):
                try:
                    out.append(DecodingSpec(**item))
                except UnknownNameError as exc:
                    raise ValueError(str(exc)) from None
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(str(p) for p in err.get("loc", ()))
                    raise ValueError(f"{where}: {str(err.get('msg')).removeprefix('Value error, ')}") from None
            else:
                raise ValueError(f"expected a strategy name or a mapping, got {item!r}")
        return out if isinstance(v, list) else out[0]

    def set_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in AXES + CELL_SCALARS if getattr(self, k) is not None}


class SweepConfig(CellTemplate):
    """A whole sweep: default cell values, optional explicit cells, and run options."""

    name: str | None = None
    description: str | None = None
    idle_s: float = Field(5.0, ge=0)  # idle-power baseline measured once per model load
    cooldown_s: float = Field(0.0, ge=0)  # pause between cells (thermal comparability)
    max_batch_cap: int = Field(DEFAULT_MAX_BATCH_CAP, ge=1)  # ceiling of the largest-batch search
    max_batch_retries: int = Field(5, ge=0)  # x0.8 steps when the measurement at "max" runs out of memory
    order: str = "ascending"
    # batch: max by "search" (doubling + bisection) or "predict" (memory model + one probe; runs.max_batch)
    max_batch_method: str = "search"
    cells: list[CellTemplate] | None = None

    _source: str = PrivateAttr("config")
    _lines: dict[tuple, int] = PrivateAttr(default_factory=dict)

    @field_validator("order")
    @classmethod
    def _order(cls, v: str) -> str:
        if v not in ORDERS:
            raise ValueError(str(UnknownNameError("order", v, ORDERS)))
        return v

    @field_validator("max_batch_method")
    @classmethod
    def _max_batch_method(cls, v: str) -> str:
        from tokenjoule.runs.max_batch import MAX_BATCH_METHODS

        if v not in MAX_BATCH_METHODS:
            raise ValueError(str(UnknownNameError("max_batch_method", v, MAX_BATCH_METHODS)))
        return v

    @property
    def source(self) -> str:
        return self._source

    def where(self, *path: Any) -> str:
        """`file:line` of the deepest known part of `path` (or just the file)."""
        for cut in range(len(path), 0, -1):
            line = self._lines.get(tuple(path[:cut]))
            if line is not None:
                return f"{self._source}:{line}"
        return self._source

    def override(self, **values: Any) -> "SweepConfig":
        """A copy with top-level keys replaced in every cell too (e.g. device="cpu")."""
        data = self.model_dump(exclude_none=True)
        data.update(values)
        for cell in data.get("cells") or []:
            for key in values:
                cell.pop(key, None)
        config = config_from_dict(data, self._source)
        return config

    def expand(self) -> list["CellPlan"]:
        """All cells of the grid, deduplicated, in the order written."""
        defaults = self.set_fields()
        templates: list[tuple[tuple[Any, ...], dict[str, Any]]] = [(("cells", i), c.set_fields()) for i, c in enumerate(self.cells)] if self.cells else [((), {})]
        plans: list[CellPlan] = []
        seen: set[str] = set()
        for path, own in templates:
            merged = {**defaults, **own}
            axes = [k for k in AXES if k in merged]
            lists = [_as_list(merged[k]) for k in axes]
            for combo in itertools.product(*lists):
                values = dict(zip(axes, combo))
                values.update({k: merged[k] for k in CELL_SCALARS if k in merged})
                for plan in self._plans(values, path, own):
                    if plan.key not in seen:
                        seen.add(plan.key)
                        plans.append(plan)
        return plans

    def _plans(self, values: dict[str, Any], path: tuple, own: dict[str, Any]) -> list["CellPlan"]:
        values.setdefault("model", None)
        if values["model"] is None:
            raise SweepConfigError(f"{self.where(*path)}: model: missing; set it at the top level or in the cell")
        batch = values.pop("batch_size", 8)
        if batch == BATCH_UPTO_MAX:
            sizes, kind = _powers_of_two(self.max_batch_cap), "upto-max"
            extra = [("max", 1)]
        elif batch == BATCH_MAX:
            sizes, kind, extra = [], "max", [("max", 1)]
        else:
            sizes, kind, extra = [batch], "fixed", []
        plans = []
        for batch_kind, size in [(kind, s) for s in sizes] + extra:
            try:
                spec = RunSpec(**values, batch_size=size)
            except UnknownNameError as exc:
                key = "mode" if exc.kind.startswith("mode") else exc.kind
                line_path = path + (key,) if key in own else (key,)
                raise SweepConfigError(f"{self.where(*line_path)}: {key}: {exc}") from None
            except ValidationError as exc:
                err = exc.errors()[0]
                key = str(err["loc"][0]) if err.get("loc") else "cell"
                line_path = path + (key,) if key in own else (key,)
                msg = str(err.get("msg")).removeprefix("Value error, ")
                raise SweepConfigError(f"{self.where(*line_path)}: {key}: {msg}") from None
            plans.append(CellPlan(spec=spec, batch=batch_kind))
        return plans


@dataclass(frozen=True)
class CellPlan:
    """One planned cell. `batch` is "fixed" (measure at spec.batch_size), "max" (search the
    largest fitting batch first; spec.batch_size is a placeholder) or "upto-max" (measure at
    spec.batch_size only if it is not above the largest fitting batch)."""

    spec: RunSpec
    batch: str = "fixed"

    @property
    def key(self) -> str:
        """Resume key: the spec hash, or for an unresolved "max" cell a hash with batch "max"."""
        if self.batch != "max":
            return self.spec.spec_hash()
        return unresolved_hash(self.spec)

    @property
    def label(self) -> str:
        if self.batch == "max":
            return self.spec.label.replace(f" b{self.spec.batch_size} ", " b=max ")
        return self.spec.label

    def group_key(self) -> str:
        """Cells with the same group key share one engine load (`spec.load_key`)."""
        return load_key(self.spec)

    def failure_spec(self) -> dict[str, Any]:
        """The spec dict stored for a failed cell whose batch was never resolved."""
        data = self.spec.canonical()
        if self.batch == "max":
            data["batch_size"] = None
            data["batch"] = BATCH_MAX
        return data


def _powers_of_two(cap: int) -> list[int]:
    out, b = [], 1
    while b <= cap:
        out.append(b)
        b *= 2
    return out


# -- loading -------------------------------------------------------------------------------
def _line_map(node: Any, path: tuple = (), out: dict[tuple, int] | None = None) -> dict[tuple, int]:
    """Map each key path (('cells', 2, 'input_tokens')) to its 1-based line in the YAML."""
    import yaml

    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = ALIASES.get(key_node.value, key_node.value)
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_map(item, path + (i,), out)
    return out


def parse_config(text: str, source: str = "config") -> SweepConfig:
    """Validate YAML text as a sweep config; errors read `source:line: key: problem`."""
    import yaml

    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SweepConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SweepConfigError(f"{source}: expected a mapping of sweep keys (model, input_tokens, cells...)")
    return config_from_dict(data, source, _line_map(node))


def config_from_dict(data: dict[str, Any], source: str = "config",
                     lines: dict[tuple, int] | None = None) -> SweepConfig:
    """Validate a dict (a parsed YAML file or a preset) as a sweep config."""
    lines = lines or {}
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(ALIASES.get(p, p) if isinstance(p, str) else p for p in err.get("loc", ()))
        where = source
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in lines:
                where = f"{source}:{lines[loc[:cut]]}"
                break
        key = ".".join(str(p) for p in loc) or "config"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            fields = CellTemplate.model_fields if loc and loc[0] == "cells" else SweepConfig.model_fields
            valid = ", ".join(sorted(set(fields) | set(ALIASES)))
            msg = f"unknown key; valid: {valid}"
        raise SweepConfigError(f"{where}: {key}: {msg}") from None
    except UnknownNameError as exc:  # pragma: no cover - pydantic wraps these as ValueErrors
        raise SweepConfigError(f"{source}: {exc}") from None
    config._source = source
    config._lines = lines
    return config


def load_config(path: str | Path) -> SweepConfig:
    p = Path(path)
    if not p.is_file():
        raise SweepConfigError(f"{p}: no such sweep config file (give a YAML file or --preset NAME)")
    return parse_config(p.read_text(), str(p))
