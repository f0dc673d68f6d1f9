"""The out-of-process power sampler: a real child process, real pipe, real clock."""

from __future__ import annotations

import time

from tokenjoule.energy.sampler_proc import ProcessPowerSampler


def test_child_samples_between_start_and_stop_at_the_rate():
    sampler = ProcessPowerSampler(lambda: (50.0,), devices=[0], fields=["instant"], hz=50.0,
                                  backend="constant:123")
    try:
        for _ in range(2):  # the process is reused window after window
            sampler.start()
            assert sampler.running
            time.sleep(0.4)
            samples = sampler.stop(final_sample=True)
            assert not sampler.running
            inner = samples[1:-1]
            # the edges are the parent's own reads, the inside is the child's
            assert samples[0].power_w == (50.0,) and samples[-1].power_w == (50.0,)
            assert inner and all(s.power_w == (123.0,) for s in inner)
            assert 5 <= len(inner) <= 25  # ~20 at 50 Hz over 0.4 s
            times = [s.t_s for s in samples]
            assert times == sorted(times) and 0.0 <= times[0] < 0.01 and times[-1] >= 0.4
            assert sampler.read_errors == 0
    finally:
        sampler.close()
    assert sampler._proc.poll() is not None  # the child exited
