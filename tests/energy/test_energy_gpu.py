"""NvmlMeter on a real GPU (skipped without CUDA)."""

from __future__ import annotations

import pytest


@pytest.mark.gpu
def test_nvml_meter_on_real_gpu():
    import torch

    from tokenjoule.energy import NvmlMeter, make_meter

    meter = make_meter("nvml", devices=[0])
    assert isinstance(meter, NvmlMeter)
    idle_w = meter.measure_idle(1.0)
    assert idle_w is not None and idle_w > 0
    a = torch.randn(4096, 4096, device="cuda")
    sync = torch.cuda.synchronize
    with meter.window(sync=sync) as w:
        t_end = __import__("time").monotonic() + 1.5
        while __import__("time").monotonic() < t_end:
            a = (a @ a).clamp_(-1, 1)
    m = w.result
    assert m.method == "nvml-counter"
    assert m.gpu_energy_j is not None and m.gpu_energy_j > 0
    assert m.avg_power_w > idle_w * 0.9  # busy is not below idle
    assert m.timeline_energy_j is not None and abs(m.timeline_disagreement) < 0.2
    assert m.notes["sample_hz_achieved"] >= 10
    assert "counter-went-backwards" not in m.flags
    prov = meter.provenance()
    assert prov["gpu_count"] == 1 and prov["gpu_names"][0]
    meter.close()
