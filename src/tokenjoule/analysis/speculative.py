"""Speculative decoding's energy as a function of its acceptance rate, from bracket cells.

With random weights a separate draft never agrees with the target (acceptance ~0), so its
measured energy is speculation's worst case. A draft that agrees by construction (the target
itself, `decoding.draft_model: self`; or n-gram lookup on repeating prompts) gives the other
end (acceptance ~1). Between the two, this module *interpolates*; it never measures a real
draft. Every value it computes carries `kind`: "measured" (a stored cell's own number) or
"interpolated, not measured".

The model (stated in `MODEL_TEXT`): with look-ahead k and acceptance rate r (accepted /
proposed draft tokens, as the engines count it), each verification step emits its accepted
tokens plus one token of the target, so tokens per step = 1 + k r, an accounting identity,
no assumption about how acceptances are distributed. The energy of one step,
S = e x (1 + k r) with e the measured energy per output token, is computed at both brackets
and taken linear in r between them; the energy per output token at r is S(r) / (1 + k r).
A self-draft's step costs more than a small draft's (the draft is as large as the target), so
near r = 1 the curve is an upper bound for a real small draft at the same acceptance.

Speculation "stops paying" at batch B when its energy per output token reaches that of
greedy decoding at the same batch (ratio >= 1); between two measured batches the crossing
is interpolated linearly in log2(batch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from tokenjoule.analysis.selection import protocol_of, usable_cells
from tokenjoule.records import CellRecord

INTERPOLATED = "interpolated, not measured"
MEASURED = "measured"
MODEL_TEXT = ("energy per output token at acceptance r = S(r) / (1 + k r): tokens per verification step "
              "1 + k r (accepted + one target token, look-ahead k); step energy S = e x (1 + k r) from the "
              "two measured brackets, linear in r between them")
ACCEPTANCE_GRID = tuple(round(0.1 * i, 1) for i in range(11))
MIN_BRACKET_SPAN = 0.3  # the two brackets must differ at least this much in acceptance

# A real draft's acceptance, published. accepted / proposed draft tokens, the rate the engines
# record. The pair this project runs (Llama-3.2-1B drafting Llama-3.1-8B) has no citable figure
# in the sources searched: its value is a labelled placeholder (None) until one is found.
REFERENCE_ACCEPTANCE: tuple[dict[str, Any], ...] = (
    {"pair": "Llama-3.2-1B drafting Llama-3.1-8B", "acceptance_rate": None,
     "source": "placeholder: no published figure found; pass --acceptance to place one"},
    {"pair": "Qwen3-1.7B drafting Qwen3-32B (a different pair)", "acceptance_rate": 65181 / 109779,
     "source": "vLLM PR #43091 (github.com/vllm-project/vllm/pull/43091), Model Runner V1: 65,181 accepted "
               "of 109,779 draft tokens, greedy, 3 speculative tokens, MT-Bench, 400 prompts"},
)


def tokens_per_step(acceptance: float, lookahead_tokens: int) -> float:
    """Output tokens per verification step: accepted proposals plus the target's own token."""
    return 1.0 + lookahead_tokens * acceptance


@dataclass(frozen=True)
class SpecCell:
    """A speculative cell's numbers the bracket needs."""

    cell_id: int
    batch_size: int
    acceptance_rate: float
    lookahead_tokens: int
    draft: str  # the draft model, "self", or "ngram"
    repeat_prompt: bool
    energy_per_output_token_j: float
    is_estimate: bool

    @property
    def family(self) -> str:
        """Cells bracket each other only within a family: n-gram lookup (no draft model, step
        cost independent of the prompts) or a draft model (separate or the target itself)."""
        return "ngram" if self.draft == "ngram" else "draft-model"

    @property
    def step_energy_j(self) -> float:
        return self.energy_per_output_token_j * tokens_per_step(self.acceptance_rate, self.lookahead_tokens)


@dataclass
class Bracket:
    """One (setup, batch): the non-speculative baseline and the two measured brackets."""

    model: str
    engine: str
    mode: str
    input_tokens: int
    output_tokens: int
    batch_size: int
    lookahead_tokens: int
    family: str
    low: SpecCell
    high: SpecCell | None
    baseline_cell_id: int | None
    baseline_energy_per_output_token_j: float | None

    @property
    def complete(self) -> bool:
        return self.high is not None and self.high.acceptance_rate - self.low.acceptance_rate >= MIN_BRACKET_SPAN

    def energy_per_output_token_j(self, acceptance: float) -> tuple[float, str] | None:
        """(value, kind) at `acceptance`; a measured bracket's own value at its acceptance."""
        for cell in (self.low, self.high):
            if cell is not None and math.isclose(acceptance, cell.acceptance_rate, abs_tol=1e-9):
                return cell.energy_per_output_token_j, MEASURED
        if not self.complete or self.high is None:
            return None
        lo, hi = self.low, self.high
        t = (acceptance - lo.acceptance_rate) / (hi.acceptance_rate - lo.acceptance_rate)
        step_j = lo.step_energy_j + t * (hi.step_energy_j - lo.step_energy_j)
        return step_j / tokens_per_step(acceptance, self.lookahead_tokens), INTERPOLATED

    def ratio_to_baseline(self, acceptance: float) -> tuple[float, str] | None:
        value = self.energy_per_output_token_j(acceptance)
        if value is None or not self.baseline_energy_per_output_token_j:
            return None
        return value[0] / self.baseline_energy_per_output_token_j, value[1]


def _spec_cell(rec: CellRecord) -> SpecCell | None:
    dec = rec.spec.get("decoding") or {}
    rate, e_tok = rec.metrics.get("acceptance_rate"), rec.energy_per_output_token_j
    if not isinstance(dec, dict) or rate is None or e_tok is None or rec.batch_size is None:
        return None  # no acceptance recorded: not placeable on the curve (None, not 0)
    draft = "ngram" if dec.get("ngram") else str(dec.get("draft_model") or "default")
    return SpecCell(int(rec.id or 0), rec.batch_size, float(rate), int(dec.get("lookahead_tokens", 4)), draft,
                    bool(dec.get("repeat_prompt", False)), float(e_tok), rec.is_estimate)


def _setup(rec: CellRecord) -> tuple[Any, ...]:
    return (rec.model, rec.engine, rec.mode, rec.input_tokens, rec.output_tokens,
            int(rec.spec.get("tensor_parallel", 1) or 1))


def _baseline(greedy: list[CellRecord], spec_protocols: set[tuple[Any, Any]]) -> CellRecord | None:
    """The greedy cell to compare speculation with: measured over estimated, then the one run with the
    speculative cells' warm-ups and repeats (a batch-1 window of a few seconds moves by several
    percent between protocols, so mixing them would move the bracket's ratio too), then the latest."""
    if not greedy:
        return None
    return max(greedy, key=lambda r: (not r.is_estimate, protocol_of(r) in spec_protocols, int(r.id or 0)))


def brackets(records: Iterable[CellRecord], model: str | None = None) -> list[Bracket]:
    """Every (setup, batch, look-ahead) with speculative cells: the lowest- and highest-acceptance
    cells and the greedy baseline of the same setup and batch (measured preferred)."""
    cells, _ = usable_cells(records)
    if model:
        cells = [r for r in cells if r.model == model]
    baselines: dict[tuple[Any, ...], list[CellRecord]] = {}
    groups: dict[tuple[Any, ...], list[SpecCell]] = {}
    protocols: dict[tuple[Any, ...], set[tuple[Any, Any]]] = {}
    for rec in cells:
        key = (*_setup(rec), rec.batch_size)
        if rec.decoding == "greedy":
            baselines.setdefault(key, []).append(rec)
        elif rec.decoding == "speculative":
            sc = _spec_cell(rec)
            if sc is not None:
                groups.setdefault((*key, sc.lookahead_tokens, sc.family), []).append(sc)
                protocols.setdefault(key, set()).add(protocol_of(rec))
    out = []
    for key, group in sorted(groups.items(), key=lambda kv: (tuple(str(x) for x in kv[0][:6]), kv[0][6:])):
        measured = [c for c in group if not c.is_estimate] or group
        low = min(measured, key=lambda c: (c.acceptance_rate, -c.cell_id))
        high = max(measured, key=lambda c: (c.acceptance_rate, c.cell_id))
        base = _baseline(baselines.get(key[:7], []), protocols.get(key[:7], set()))  # setup + batch
        out.append(Bracket(model=key[0], engine=key[1], mode=key[2], input_tokens=key[3], output_tokens=key[4],
                           batch_size=key[6], lookahead_tokens=key[7], family=key[8], low=low,
                           high=high if high is not low else None,
                           baseline_cell_id=int(base.id) if base is not None and base.id is not None else None,
                           baseline_energy_per_output_token_j=base.energy_per_output_token_j if base else None))
    return out


@dataclass
class BreakEven:
    """Where speculation stops paying at one acceptance rate, for one setup."""

    acceptance_rate: float
    batch_size: float | None  # None: it pays at every measured batch, or never
    status: str  # "stops paying" | "pays at every measured batch" | "never pays at measured batches"
    kind: str  # MEASURED only when both neighbouring values are measured
    ratios: list[dict[str, Any]] = field(default_factory=list)  # per batch: ratio, kind


def break_even(setup_brackets: list[Bracket], acceptance: float) -> BreakEven | None:
    """The batch at which speculation's energy per output token reaches greedy's."""
    points = []
    for b in sorted(setup_brackets, key=lambda b: b.batch_size):
        r = b.ratio_to_baseline(acceptance)
        if r is not None:
            points.append((b.batch_size, r[0], r[1]))
    if not points:
        return None
    ratios = [{"batch_size": bs, "ratio": ratio, "kind": kind} for bs, ratio, kind in points]
    if points[0][1] >= 1:
        return BreakEven(acceptance, None, "never pays at measured batches", points[0][2], ratios)
    for (b0, r0, k0), (b1, r1, k1) in zip(points, points[1:]):
        if r0 < 1 <= r1:
            x = math.log2(b0) + (1 - r0) / (r1 - r0) * (math.log2(b1) - math.log2(b0))
            return BreakEven(acceptance, 2 ** x, "stops paying", INTERPOLATED, ratios)
    return BreakEven(acceptance, None, "pays at every measured batch", points[-1][2], ratios)


def analyse(records: Iterable[CellRecord], model: str | None = None,
            acceptances: Iterable[float] = ACCEPTANCE_GRID,
            reference_acceptance: float | None = None) -> dict[str, Any]:
    """The whole view as JSON-ready data: brackets, curves, break-even batches, reference point."""
    found = brackets(records, model)
    grid = sorted({round(float(a), 6) for a in acceptances} | (
        {round(reference_acceptance, 6)} if reference_acceptance is not None else set()))
    setups: dict[tuple[Any, ...], list[Bracket]] = {}
    for b in found:
        setups.setdefault((b.model, b.engine, b.mode, b.input_tokens, b.output_tokens, b.lookahead_tokens,
                           b.family), []).append(b)
    out_setups = []
    for key, group in setups.items():
        rows = []
        for b in sorted(group, key=lambda b: b.batch_size):
            curve = []
            for a in grid:
                v = b.energy_per_output_token_j(a)
                ratio = b.ratio_to_baseline(a)
                if v is not None:
                    curve.append({"acceptance_rate": a, "energy_per_output_token_j": v[0], "kind": v[1],
                                  "ratio_to_greedy": ratio[0] if ratio else None})
            rows.append({
                "batch_size": b.batch_size, "complete": b.complete,
                "low": asdict(b.low), "high": asdict(b.high) if b.high else None,
                "baseline_cell_id": b.baseline_cell_id,
                "baseline_energy_per_output_token_j": b.baseline_energy_per_output_token_j,
                "curve": curve,
            })
        breaks = [asdict(x) for a in grid if (x := break_even(group, a)) is not None]
        out_setups.append({"model": key[0], "engine": key[1], "mode": key[2], "input_tokens": key[3],
                           "output_tokens": key[4], "lookahead_tokens": key[5], "family": key[6], "batches": rows,
                           "break_even": breaks})
    references = [dict(r) for r in REFERENCE_ACCEPTANCE]
    if reference_acceptance is not None:
        references.insert(0, {"pair": "given with --acceptance", "acceptance_rate": reference_acceptance,
                              "source": "user"})
    return {"model": MODEL_TEXT, "labels": {"measured": MEASURED, "interpolated": INTERPOLATED},
            "setups": out_setups, "reference_acceptance": references,
            "note": "interpolated values place a real draft's acceptance on the measured brackets; "
                    "they are not measurements of a real draft"}
