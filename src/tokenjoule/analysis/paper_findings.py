"""The paper's controlled findings (Figures 2-5), each checked against a store's cells.

Each check returns a `Finding`: the paper's claim (its words, /work/shared/paper/NUMBERS.md),
the criterion used to decide, what the cells show (numbers computed here, each with the cell
ids behind it) and `shows`: True, False, or None when the store has too few cells to say.
Nothing observed is typed in: every value comes from the cells.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from tokenjoule.analysis.selection import one_per_length, usable_cells
from tokenjoule.analysis.speculative import analyse, brackets, break_even
from tokenjoule.records import CellRecord

REF_INPUT, REF_OUTPUT = 512, 64
PREFILL_KNEE_TOKENS = 128  # the paper's convergence point
GROWING_SLOPE = 0.7  # log-log slope of prefill energy vs input length counted as "grows with it"
LINEAR_R2 = 0.98
NO_EXTRA_ENERGY = 1.05  # a mode "costs no extra energy" within 5 %


@dataclass
class Finding:
    figure: str
    paper: str
    criterion: str
    shows: bool | None
    observed: dict[str, Any] = field(default_factory=dict)
    cell_ids: list[int] = field(default_factory=list)
    reason: str = ""  # why shows is None
    summary: str = ""  # the observed numbers behind the verdict, in one line (computed, never typed)

    @property
    def verdict(self) -> str:
        """yes / no; undecided: "not decided yet" when cells exist, else "not measured yet"."""
        if self.shows is None:
            return "not decided yet" if self.cell_ids else "not measured yet"
        return "yes" if self.shows else "no"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": self.verdict}


def _cells(records: Iterable[CellRecord], **eq: Any) -> list[CellRecord]:
    out = []
    for r in records:
        if all(getattr(r, k) == v for k, v in eq.items()) and int(r.spec.get("tensor_parallel", 1) or 1) == 1 \
                and not r.is_estimate:
            out.append(r)
    return out


def _metric(rec: CellRecord, name: str) -> float | None:
    v = rec.metrics.get(name)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _by_batch(cells: list[CellRecord]) -> dict[int, list[CellRecord]]:
    out: dict[int, list[CellRecord]] = {}
    for r in cells:
        out.setdefault(int(r.batch_size or 0), []).append(r)
    return out


def prefill_convergence(records: list[CellRecord], model: str) -> Finding:
    f = Finding("Figure 2", "Prefill energy grows with input length at the same rate for every batch size above "
                "about 128 input tokens; below that it is roughly flat.",
                f"per batch, the knee is the shortest input from which every log-log slope of prefill energy vs "
                f"input length is >= {GROWING_SLOPE}; shown when the median knee is within 2x of "
                f"{PREFILL_KNEE_TOKENS} tokens", None)
    cells = [r for r in _cells(records, model=model, engine="hf", mode="eager", decoding="greedy")
             if r.output_tokens == REF_OUTPUT and _metric(r, "prefill_energy_j")]
    knees: dict[int, int] = {}
    slopes_above: dict[int, list[float]] = {}
    slopes_without_knee: dict[int, list[float]] = {}
    longest_input = 0
    for b, group in sorted(_by_batch(cells).items()):
        group = one_per_length(group, lambda r: int(r.input_tokens or 0))
        pts = [(int(r.input_tokens or 0), _metric(r, "prefill_energy_j")) for r in group]
        if len(pts) < 3:
            continue
        slopes = [(x1, math.log(y1 / y0) / math.log(x1 / x0)) for (x0, y0), (x1, y1) in zip(pts, pts[1:])
                  if y0 and y1 and y0 > 0 and y1 > 0]
        knee = None
        for i in range(len(slopes)):
            if all(s >= GROWING_SLOPE for _, s in slopes[i:]):
                knee = pts[i][0]
                break
        if knee is not None:
            knees[b] = knee
            slopes_above[b] = [round(s, 3) for x, s in slopes if x > knee]
        else:
            slopes_without_knee[b] = [round(s, 3) for _, s in slopes]
        longest_input = max(longest_input, pts[-1][0])
        f.cell_ids += [int(r.id or 0) for r in group]
    if not knees and slopes_without_knee:
        # Measured, but prefill has not started to grow yet within the measured inputs: the
        # claim is about longer inputs than these, so it is undecided, not contradicted.
        f.observed = {"log_log_slopes_by_batch": slopes_without_knee, "longest_input_tokens": longest_input}
        f.summary = "; ".join(f"batch {b}: log-log slopes {', '.join(f'{x:.2f}' for x in v)}"
                              for b, v in slopes_without_knee.items())
        f.reason = (f"no input from which every log-log slope is >= {GROWING_SLOPE} within the inputs measured "
                    f"(up to {longest_input} tokens); needs the longer inputs of paper-lengths")
        return f
    if not knees:
        f.reason = "needs prefill energies at >= 3 input lengths for one batch (paper-lengths)"
        return f
    median = sorted(knees.values())[len(knees) // 2]
    f.shows = PREFILL_KNEE_TOKENS / 2 <= median <= PREFILL_KNEE_TOKENS * 2
    f.observed = {"knee_input_tokens_by_batch": knees, "median_knee_input_tokens": median,
                  "log_log_slopes_above_knee_by_batch": slopes_above}
    f.summary = "; ".join(f"batch {b}: knee at {k} input tokens" for b, k in knees.items())
    return f


def decode_linear(records: list[CellRecord], model: str) -> Finding:
    f = Finding("Figure 2", "Decode energy grows linearly with output length and dominates except for very short "
                "generations.", f"per batch, a least-squares line of decode energy vs output length has "
                f"R^2 >= {LINEAR_R2} and a positive slope", None)
    cells = [r for r in _cells(records, model=model, engine="hf", mode="eager", decoding="greedy")
             if r.input_tokens == REF_INPUT and _metric(r, "decode_energy_j") is not None]
    fits: dict[int, dict[str, float]] = {}
    for b, group in sorted(_by_batch(cells).items()):
        group = one_per_length(group, lambda r: int(r.output_tokens or 0))
        pts = [(int(r.output_tokens or 0), _metric(r, "decode_energy_j")) for r in group]
        if len(pts) < 3:
            continue
        xs, ys = [float(x) for x, _ in pts], [float(y) for _, y in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
        ss_tot = sum((y - my) ** 2 for y in ys)
        longest = max(group, key=lambda r: r.output_tokens or 0)
        share = (_metric(longest, "decode_energy_j") or 0) / (longest.energy_j or math.inf)
        fits[b] = {"slope_j_per_token": slope, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0,
                   "decode_share_at_longest_output": share}
        f.cell_ids += [int(r.id or 0) for r in group]
    if not fits:
        f.reason = "needs decode energies at >= 3 output lengths for one batch (paper-lengths)"
        return f
    f.shows = all(v["r2"] >= LINEAR_R2 and v["slope_j_per_token"] > 0 for v in fits.values())
    f.observed = {"fit_by_batch": fits}
    f.summary = "; ".join(f"batch {b}: R^2 {v['r2']:.5f}, slope {v['slope_j_per_token']:.2f} J per output token, "
                          f"decode {100 * v['decode_share_at_longest_output']:.0f}% of the longest output's energy"
                          for b, v in fits.items())
    return f


def speculative_break_even(records: list[CellRecord], model: str,
                           reference_acceptance: float | None = None) -> Finding:
    f = Finding("Figure 3", "Speculative decoding (look-ahead 4, Llama-3.2-1B drafting Llama-3.1-8B): up to "
                "29.14% less energy at batch sizes up to 16; 25.65% more than autoregressive decoding at batch 128.",
                "per bracket family, the batch at which speculation's energy per output token reaches greedy's "
                "(at the high bracket's measured acceptance, and at the reference acceptance when given: "
                "interpolated, not measured); shown when it lies above 16 and at most 128", None)
    data = analyse(records, model=model, acceptances=(), reference_acceptance=reference_acceptance)
    per_family: list[dict[str, Any]] = []
    verdicts = []
    for s in data["setups"]:
        complete = [row for row in s["batches"] if row["complete"] and row["baseline_energy_per_output_token_j"]]
        if len(complete) < 2:
            continue
        group = [b for b in brackets(records, model) if (b.engine, b.mode, b.family, b.lookahead_tokens) ==
                 (s["engine"], s["mode"], s["family"], s["lookahead_tokens"]) and b.complete]
        high_rate = min(b.high.acceptance_rate for b in group if b.high is not None)
        points = {"measured high bracket": high_rate}
        if reference_acceptance is not None:
            points["reference acceptance"] = reference_acceptance
        for label, rate in points.items():
            be = break_even(group, rate)
            if be is None:
                continue
            small = [r["ratio"] for r in be.ratios if r["batch_size"] <= 16]
            entry = {"engine": s["engine"], "mode": s["mode"], "family": s["family"], "at": label,
                     "acceptance_rate": rate, "status": be.status, "break_even_batch": be.batch_size,
                     "kind": be.kind, "best_saving_up_to_batch_16": (1 - min(small)) if small else None,
                     "ratios": be.ratios}
            per_family.append(entry)
            verdicts.append(be.batch_size is not None and 16 < be.batch_size <= 128)
        f.cell_ids += sorted({c for b in group for c in (b.low.cell_id, b.high.cell_id if b.high else None,
                                                          b.baseline_cell_id) if c is not None})
    if not per_family:
        f.reason = ("needs both acceptance brackets and a greedy baseline at >= 2 batches "
                    "(paper-decoding-brackets)")
        return f
    f.shows = any(verdicts)
    f.observed = {"break_even": per_family, "model": data["model"]}
    return f


def moe_vs_dense(records: list[CellRecord], moe: str = "olmoe-1b-7b", same_active: str = "olmo-1b",
                 same_total: str = "olmo-7b") -> Finding:
    f = Finding("Figure 4", "OLMo-1B and OLMoE use far less energy than OLMo-7B; OLMoE uses up to 54.24% more than "
                "OLMo-1B, growing with batch size.", f"energy per output token of {moe} / {same_active} > 1 and "
                f"{moe} / {same_total} < 1 at every batch measured for all three", None)
    per: dict[str, dict[int, CellRecord]] = {}
    for m in (moe, same_active, same_total):
        for r in _cells(records, model=m, engine="hf", mode="eager", decoding="greedy"):
            if (r.input_tokens, r.output_tokens) == (REF_INPUT, REF_OUTPUT) and r.energy_per_output_token_j:
                per.setdefault(m, {})[int(r.batch_size or 0)] = r
    common = sorted(set.intersection(*(set(per.get(m, {})) for m in (moe, same_active, same_total))))
    if not common:
        f.reason = f"needs {moe}, {same_active} and {same_total} at a common batch (paper-moe)"
        return f
    rows = {}
    for b in common:
        e = {m: per[m][b].energy_per_output_token_j for m in (moe, same_active, same_total)}
        rows[b] = {"vs_same_active": e[moe] / e[same_active], "vs_same_total": e[moe] / e[same_total]}
        f.cell_ids += [int(per[m][b].id or 0) for m in (moe, same_active, same_total)]
    f.shows = all(v["vs_same_active"] > 1 and v["vs_same_total"] < 1 for v in rows.values())
    ratios = [rows[b]["vs_same_active"] for b in common]
    f.summary = "; ".join(f"batch {b}: {moe} / {same_active} {v['vs_same_active']:.2f}x, {moe} / {same_total} "
                          f"{v['vs_same_total']:.2f}x" for b, v in rows.items())
    f.observed = {"ratio_by_batch": rows, "excess_over_same_active_grows_with_batch":
                  all(b >= a for a, b in zip(ratios, ratios[1:])) if len(ratios) > 1 else None}
    return f


def frameworks(records: list[CellRecord], model: str) -> Finding:
    f = Finding("Figure 5", "torch.compile and CUDA graphs raise throughput at no extra energy cost, most at small "
                "batches; vLLM fits larger batches than PyTorch.",
                f"at each batch measured in both, hf compile and cudagraphs have higher throughput than hf eager "
                f"and energy per output token at most {NO_EXTRA_ENERGY:.2f}x eager's", None)
    ref = [r for r in _cells(records, model=model, decoding="greedy")
           if (r.input_tokens, r.output_tokens) == (REF_INPUT, REF_OUTPUT)]
    by: dict[tuple[str, str], dict[int, CellRecord]] = {}
    for r in ref:
        by.setdefault((str(r.engine), str(r.mode)), {})[int(r.batch_size or 0)] = r
    eager = by.get(("hf", "eager"), {})
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for mode in ("compile", "cudagraphs"):
        for b, r in sorted(by.get(("hf", mode), {}).items()):
            base = eager.get(b)
            tp, tp0 = _metric(r, "throughput_tokens_per_s"), base and _metric(base, "throughput_tokens_per_s")
            if base is None or not tp or not tp0 or not r.energy_per_output_token_j \
                    or not base.energy_per_output_token_j:
                continue
            rows.setdefault(mode, {})[b] = {"throughput_ratio": tp / tp0,
                                            "energy_ratio": r.energy_per_output_token_j / base.energy_per_output_token_j}
            f.cell_ids += [int(r.id or 0), int(base.id or 0)]
    largest = {f"{e}/{m}": max(cells) for (e, m), cells in by.items()}
    if not rows:
        f.reason = "needs hf eager and a compiled hf mode at a common batch (paper-frameworks)"
        f.observed = {"largest_batch_measured": largest}
        return f
    f.shows = all(v["throughput_ratio"] > 1 and v["energy_ratio"] <= NO_EXTRA_ENERGY
                  for mode_rows in rows.values() for v in mode_rows.values())
    vllm = max((b for (e, _), cells in by.items() if e == "vllm" for b in cells), default=None)
    hf = max((b for (e, _), cells in by.items() if e == "hf" for b in cells), default=None)
    f.observed = {"vs_hf_eager_by_batch": rows, "largest_batch_measured": largest,
                  "vllm_fits_larger_batches": (vllm > hf) if vllm is not None and hf is not None else None}
    return f


CHECKS: tuple[Callable[..., Finding], ...] = (prefill_convergence, decode_linear, speculative_break_even,
                                              moe_vs_dense, frameworks)


def check_findings(records: Iterable[CellRecord], model: str = "llama-3.1-8b",
                   reference_acceptance: float | None = None) -> list[Finding]:
    """Every finding of Figures 2-5 against the store's usable cells (newest row per spec)."""
    cells, _ = usable_cells(records)
    return [prefill_convergence(cells, model), decode_linear(cells, model),
            speculative_break_even(cells, model, reference_acceptance), moe_vs_dense(cells),
            frameworks(cells, model)]
