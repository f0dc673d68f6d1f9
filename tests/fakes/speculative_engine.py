"""A simulated speculative-decoding engine: the number of verification steps follows from the
acceptance rate (accepted + one target token per step) and each step's duration from a small
roofline-like cost, so the energy of a bracket cell is known in closed form."""

from __future__ import annotations

import math

from fakes.clock_meter import ScriptedMeter
from fakes.fake_engine import FakeEngine
from tokenjoule.engines.base import GenerationResult
from tokenjoule.runs.offline import measure_cell
from tokenjoule.spec import DecodingSpec, RunSpec
from tokenjoule.store.db import ResultStore

# acceptance of each draft kind in the simulation (the real engines measure it)
DRAFT_ACCEPTANCE = {"self": 1.0, "tiny": 0.0, "half": 0.5}


class SpeculativeSimEngine(FakeEngine):
    """Greedy step: max(floor_s, s_per_token x batch); a speculative step verifies k + 1 tokens
    per row (max(floor_s, s_per_token x batch x (k + 1))) after k draft steps of draft_step_s."""

    def __init__(self, clock=None, floor_s: float = 0.01, s_per_token: float = 2e-4,
                 draft_step_s: float = 0.002, prefill_s_per_token: float = 1e-5):
        super().__init__(clock, prefill_s_per_token=prefill_s_per_token)
        self.floor_s, self.s_per_token, self.draft_step_s = floor_s, s_per_token, draft_step_s

    def acceptance_of(self, spec: RunSpec) -> float | None:
        if spec.decoding.strategy != "speculative":
            return None
        return DRAFT_ACCEPTANCE[spec.decoding.draft_model or "tiny"]

    def step_s(self, spec: RunSpec) -> float:
        b = spec.batch_size
        if spec.decoding.strategy != "speculative":
            return max(self.floor_s, self.s_per_token * b)
        k = spec.decoding.lookahead_tokens
        return max(self.floor_s, self.s_per_token * b * (k + 1)) + k * self.draft_step_s

    def steps(self, spec: RunSpec, output_tokens: int) -> int:
        a = self.acceptance_of(spec)
        per_step = 1.0 if a is None else 1.0 + spec.decoding.lookahead_tokens * a
        return math.ceil(output_tokens / per_step)

    def batch_duration_s(self, spec: RunSpec, output_tokens: int) -> float:
        prefill = self.prefill_s_per_token * spec.batch_size * spec.input_tokens
        return prefill + self.steps(spec, output_tokens) * self.step_s(spec)

    def generate(self, spec: RunSpec, output_tokens: int | None = None) -> GenerationResult:
        result = super().generate(spec, output_tokens)
        result.acceptance_rate = self.acceptance_of(spec)
        return result


GREEDY = DecodingSpec()
LOW = DecodingSpec(strategy="speculative", draft_model="tiny", lookahead_tokens=4)
HIGH = DecodingSpec(strategy="speculative", draft_model="self", lookahead_tokens=4)


def measure_brackets(tmp_path, engine, batches, power_w: float = 100.0) -> ResultStore:
    store = ResultStore(tmp_path / "brackets.db")
    for b in batches:
        for dec in (GREEDY, LOW, HIGH):
            spec = RunSpec(model="tiny", batch_size=b, input_tokens=64, output_tokens=60, warmup=0, repeats=1,
                           min_window_s=0.0, split_prefill=False, decoding=dec)
            engine.load(spec)
            store.add(measure_cell(spec, engine, ScriptedMeter(engine.clock, power_w=power_w)))
    return store
