"""Shared fixtures and markers.

- `gpu`-marked tests are skipped when CUDA is unavailable; `vllm`-marked ones when vLLM is
  not importable. Both checks run only if such tests were collected (importing torch costs
  seconds).
- `tests/` and the repository root are put on sys.path so tests can import the fakes as
  `from fakes.fake_engine import FakeEngine` (or `tests.fakes...`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
for _p in (str(TESTS_DIR), str(TESTS_DIR.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    vllm_items = [i for i in items if i.get_closest_marker("vllm")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
    if vllm_items and importlib.util.find_spec("vllm") is None:
        skip = pytest.mark.skip(reason="needs vLLM installed")
        for item in vllm_items:
            item.add_marker(skip)


@pytest.fixture
def tiny_spec():
    """A fast CPU cell of the `tiny` preset (seconds on 2 cores with the real HF engine)."""
    from tokenjoule.spec import RunSpec

    return RunSpec(model="tiny", engine="hf", mode="eager", batch_size=2, input_tokens=16, output_tokens=4,
                   warmup=1, repeats=2, device="cpu", min_window_s=0.05)


@pytest.fixture
def store(tmp_path):
    """A fresh results store in a temporary directory."""
    from tokenjoule.store.db import ResultStore

    s = ResultStore(tmp_path / "results.db")
    yield s
    s.close()


@pytest.fixture
def fake_clock():
    from fakes.clock_meter import FakeClock

    return FakeClock()
