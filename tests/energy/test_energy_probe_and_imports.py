"""The GPU probe's analysis helpers on a synthetic stream, and import hygiene."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tokenjoule.energy.measurement import PowerSample

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("meter_probe", ROOT / "benchmarks" / "meter_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _true_power(t: float) -> float:
    return 100.0 if t < 1.0 else 400.0


def _stream(lag_s: float = 0.05, period_s: float = 0.1, hz: int = 100, span_s: float = 3.0):
    """Channels (instant, average, usage, counter): instant = true power lagging `lag_s`;
    the counter integrates the true power and only moves every `period_s`."""

    def energy(t):  # integral of _true_power from 0 to t
        return 100.0 * min(t, 1.0) + 400.0 * max(t - 1.0, 0.0)

    out = []
    for k in range(int(span_s * hz) + 1):
        t = k / hz
        counter = energy(math.floor(t / period_s + 1e-9) * period_s)
        inst = _true_power(max(t - lag_s, 0.0))
        out.append(PowerSample(t, (inst, inst, inst, counter)))
    return out


def test_probe_update_period_and_lag(probe):
    samples = _stream(lag_s=0.05)
    periods = probe.update_periods(samples)
    assert periods and all(p == pytest.approx(0.1) for p in periods)
    lag = probe.best_lag(samples, 0)
    assert lag["lag_s"] == pytest.approx(0.05, abs=0.011)


def test_probe_edges_and_powermonitor_emulation(probe):
    samples = _stream(lag_s=0.0)
    full = probe.integrate(samples, 0, stride=5, edges=True)
    assert full == pytest.approx(100.0 + 400.0 * 2.0, rel=0.01)
    # without edges and with deduplication, a flat stretch collapses: the integral falls short
    pm = probe.powermonitor_style(samples, 0)
    assert pm < full * 0.9


def test_probe_help_runs_without_torch():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "meter_probe.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--windows" in res.stdout


def test_energy_package_does_not_import_torch():
    code = ("import sys, tokenjoule.energy as e; e.make_meter('auto').provenance(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_probe_dry_run_on_cpu(probe, monkeypatch, tmp_path):
    """The whole probe on the CPU with the tiny preset and a fake GPU backend, so a bug in the
    script shows here rather than on the GPU host."""
    import torch

    from fakes.fake_nvml import FakeGpuBackend
    from tokenjoule.energy import gpu_backend

    monkeypatch.setattr(probe, "torch_device", lambda index: "cpu")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(gpu_backend, "open_gpu_backend", lambda: FakeGpuBackend(power_w=300.0))
    rc = probe.main(["--preset", "tiny", "--windows", "0.15,0.3", "--repeats", "1", "--pairs", "5",
                     "--overhead-window", "0.1", "--idle-s", "0.3", "--batch", "2", "--input", "16",
                     "--no-powermonitor", "--out", str(tmp_path)])
    assert rc == 0
    import json

    data = json.loads((tmp_path / "meter_probe.json").read_text())
    assert len(data["windows"]) == 2 and len(data["overhead"]["pairs"]) == 5
    assert data["idle"]["idle_power_w"] == pytest.approx(300.0, rel=0.01)
    for row in data["windows"]:
        assert row["counter_j"] == pytest.approx(300.0 * row["duration_s"], rel=0.01)
