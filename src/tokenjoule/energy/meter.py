"""The `Meter` protocol: measure energy and time over a window of work.

    meter = make_meter("auto", devices=[0])
    idle_w = meter.measure_idle(5.0)
    with meter.window(sync=engine.synchronize) as w:
        engine.generate(...)
    w.result  # Measurement

`sync` is called at both window edges so that queued device work is inside the window.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Protocol, runtime_checkable

from tokenjoule.energy.measurement import Measurement


class WindowHandle(Protocol):
    result: Measurement  # set when the `with` block exits


@runtime_checkable
class Meter(Protocol):
    method: str  # written into every Measurement

    def measure_idle(self, duration_s: float) -> float | None:
        """Measure idle power (W, summed over devices) for `duration_s`; remembered and
        attached to later windows as `idle_power_w`. None where no sensor reads power."""

    def window(self, sync: Callable[[], None] | None = None) -> ContextManager[Any]:
        """Open a measurement window; it yields a WindowHandle whose `result` is a Measurement
        after exit (typed Any: the meters' handles hold None until then)."""

    def provenance(self) -> dict:
        """Hardware facts of the measured devices (names, count, driver, power limit...)."""

    def close(self) -> None: ...
