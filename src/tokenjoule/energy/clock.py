"""Clocks for meters: the real monotonic clock, and a fake one so tests need not sleep.

A meter takes `clock` (a callable returning seconds) and, for its background sampler,
`sleep`. With `FakeClock`, tests control time:

    clock = FakeClock()
    meter = SimulatedMeter(clock=clock)
    with meter.window() as w:
        clock.advance(2.0)      # the "work" takes exactly 2 s
    w.result.duration_s == 2.0

`FakeClock(sleep_advances=True)` lets a sampler thread drive time instead: each `sleep(dt)`
moves the clock forward by `dt`, so sample timestamps are exact and deterministic.
"""

from __future__ import annotations

import threading
import time


class FakeClock:
    def __init__(self, start_s: float = 0.0, sleep_advances: bool = False):
        self._t_s = float(start_s)
        self.sleep_advances = sleep_advances
        self._lock = threading.Condition()

    def __call__(self) -> float:
        with self._lock:
            return self._t_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._t_s += seconds
            self._lock.notify_all()

    def sleep(self, seconds: float) -> None:
        """Advance (when `sleep_advances`), then yield the CPU briefly in real time so other
        threads run; never sleeps for `seconds` of real time."""
        if self.sleep_advances and seconds > 0:
            self.advance(seconds)
        time.sleep(0.0005)

    def wait_until(self, t_s: float, timeout_s: float = 10.0) -> None:
        """Block (real time) until another thread has advanced the clock to `t_s`."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._t_s < t_s:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake clock stuck at {self._t_s} s, waiting for {t_s} s")
                self._lock.wait(min(left, 0.05))
