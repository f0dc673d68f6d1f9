"""A store with no cell at the figures' reference lengths lists missing cells, never crashes."""

from tokenjoule.report.build import build_report
from tokenjoule.store.db import CellRecord, ResultStore


def test_parallel_figure_lists_missing_cells_on_a_sparse_store(tmp_path):
    with ResultStore(tmp_path / "t.db") as store:
        store.add(CellRecord(spec={"model": "tiny", "engine": "hf", "mode": "eager",
                                   "decoding": {"strategy": "greedy"}, "batch_size": 2, "input_tokens": 16,
                                   "output_tokens": 4, "tensor_parallel": 1},
                             spec_hash="x", metrics={"energy_j": 1.0, "duration_s": 1.0}))
        result = build_report(store, tmp_path / "rep")
    fig6 = next(s for s in result.sections if s.name == "fig6_parallel")
    assert fig6.missing and len(fig6.missing) == 12  # tp 1, 2, 4 x batch 1, 64 x hf/eager, vllm/graphs
