"""Selecting the cells behind each figure and table, and saying which ones are missing.

Everything the report shows comes from one flat frame of the store's successful cells
(`cells_frame`). Helpers here pick the reference model and lengths, mark estimates and
flagged measurements, and describe cells that would have to be measured (`MissingCell`),
so a figure that cannot be drawn lists exactly what to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tokenjoule.energy.measurement import FLAG_ESTIMATE as ESTIMATE_FLAG
from tokenjoule.energy.measurement import is_estimate  # noqa: F401  (used here and by report modules)


def warning_flags(flags: Any) -> list[str]:
    """The meter's flags a reader must see next to a number: every flag except `estimate`
    (which is labelled separately), so a flag added to the meter later is marked too."""
    items = flags.split(",") if isinstance(flags, str) else list(flags or [])
    return [f for f in items if f and f != ESTIMATE_FLAG]

# The paper's reference lengths: Figures 3-6 are drawn at 512 input / 64 output tokens.
REF_INPUT_TOKENS = 512
REF_OUTPUT_TOKENS = 64


@dataclass(frozen=True)
class MissingCell:
    """A cell a figure or table needs that the store does not have (a `measure` command)."""

    model: str
    engine: str = "hf"
    mode: str = "eager"
    decoding: str = "greedy"
    batch_size: int | str = 1
    input_tokens: int = REF_INPUT_TOKENS
    output_tokens: int = REF_OUTPUT_TOKENS
    tensor_parallel: int = 1

    def command(self) -> str:
        tp = f" --tensor-parallel {self.tensor_parallel}" if self.tensor_parallel > 1 else ""
        return (f"tokenjoule measure --model {self.model} --engine {self.engine} --mode {self.mode} "
                f"--decoding {self.decoding} --batch-size {self.batch_size} --input-tokens {self.input_tokens} "
                f"--output-tokens {self.output_tokens}{tp}")

    def label(self) -> str:
        tp = f" tp{self.tensor_parallel}" if self.tensor_parallel > 1 else ""
        return (f"{self.model} {self.engine}/{self.mode} {self.decoding} b{self.batch_size} "
                f"in{self.input_tokens} out{self.output_tokens}{tp}")


@dataclass
class Section:
    """One figure or table of the report: either drawn, or missing cells / not available."""

    name: str  # file stem: NAME.png, NAME.csv
    title: str
    caption: str = ""
    png_path: str | None = None
    csv_path: str | None = None
    cell_ids: list[int] = field(default_factory=list)
    missing: list[MissingCell] = field(default_factory=list)
    unavailable: str | None = None  # "not available: <what is missing>"
    table: Any = None  # a tables.Table for table sections
    notes: list[str] = field(default_factory=list)

    @property
    def drawn(self) -> bool:
        return self.png_path is not None or self.table is not None


def cells_frame(store) -> Any:
    """Successful cells as a DataFrame with the columns the report needs, always present."""
    import pandas as pd

    df = store.to_dataframe(status="ok")
    if df.empty:
        df = pd.DataFrame(columns=["id", "kind", "model", "engine", "mode", "decoding", "batch_size",
                                   "input_tokens", "output_tokens", "tensor_parallel", "method", "flags"])
    for col, default in (("tensor_parallel", 1), ("decoding", None), ("method", None), ("flags", "")):
        if col not in df.columns:
            df[col] = default
    df["tensor_parallel"] = df["tensor_parallel"].fillna(1).astype(int)
    df["flags"] = df["flags"].fillna("")
    df["is_estimate"] = [is_estimate(m, f) for m, f in zip(df["method"], df["flags"])]
    df["warnings"] = [",".join(warning_flags(f)) for f in df["flags"]]
    return df


def offline(df, **eq: Any):
    """Offline cells whose columns equal the given values (None values are ignored)."""
    if df.empty:
        return df
    sel = df[df["kind"] == "offline"]
    # Online rows have no batch/lengths, which makes these columns float; offline ones are ints.
    for col in ("batch_size", "input_tokens", "output_tokens"):
        if col in sel.columns and len(sel) and sel[col].notna().all():
            sel = sel.astype({col: int})
    for col, val in eq.items():
        if val is None:
            continue
        if col not in sel.columns:
            return sel.iloc[0:0]
        sel = sel[sel[col] == val]
    return sel


def reference_model(df, model: str | None = None) -> str | None:
    """The model the single-model figures show: the one asked for, else the most-measured."""
    if model:
        return model
    off = offline(df)
    if off.empty:
        return None
    return str(off["model"].value_counts().idxmax())


def latest_per_spec(df):
    """One row per spec hash (the newest), so re-measured cells are not plotted twice."""
    if df.empty or "spec_hash" not in df.columns:
        return df
    return df.sort_values("id").drop_duplicates("spec_hash", keep="last")


def one_per_point(data, x: str):
    """One row per x of a plotted series: analysis.selection.one_per_length's rule on a frame (the
    row run like most of the series, then the newest), so a figure and its finding use the same
    cells and a shape measured by two sweeps is not drawn as a vertical step."""
    if data.empty or x not in data.columns or not data[x].duplicated().any():
        return data
    protocol = data[[c for c in ("warmup", "repeats") if c in data.columns]].astype(str).agg("/".join, axis=1)
    ranked = data.assign(_n=protocol.map(protocol.value_counts()).values).sort_values(["_n", "id"])
    return ranked.drop_duplicates(x, keep="last").drop(columns="_n").sort_values(x)


def ids(rows) -> list[int]:
    return sorted(int(i) for i in rows["id"]) if len(rows) else []


def missing_grid(model: str, present: Iterable[tuple], keys: tuple[str, ...],
                 grid: Iterable[tuple], **fixed: Any) -> list[MissingCell]:
    """Cells of `grid` (tuples over `keys`) not in `present`, as MissingCell(model, **fixed)."""
    have = set(present)
    out = []
    for combo in grid:
        if combo not in have:
            out.append(MissingCell(model=model, **fixed, **dict(zip(keys, combo))))
    return out


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number for a table: 3 significant digits below 1,000, whole units above; None is '—'."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:  # NaN
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 1e3:  # whole units with separators: 8,987 rather than 8.99e+03
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"
