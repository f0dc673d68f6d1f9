"""The power timeline sampled from another process, so the measured process does no work for it.

Why: a sampling thread inside the measured process needs the interpreter lock at every
sample. Eager decode at small batch is bound by the host CPU launching kernels from Python,
and every hand-over of the lock costs that loop time (docs/METHOD.md, "Meter overhead").
Zeus's PowerMonitor samples from a subprocess for the same reason.

`ProcessPowerSampler` has the interface of `timeline.PowerSampler` (start / stop /
sample_now / samples / read_errors / running). It starts `python -m
tokenjoule.energy.sampler_proc` once (a fresh interpreter: never a fork of a process that
holds CUDA), which opens NVML itself and waits on its stdin:

    parent -> child: "start\\n"   child samples at `hz` until
    parent -> child: "stop\\n"    child answers one JSON line {"samples": [[t, [W, ...]], ...], "errors": n}
    parent -> child: "quit\\n"    (or EOF) child exits

Timestamps are `time.monotonic()` in the child; on Linux that clock is system-wide, so the
parent subtracts its own window start. The parent still takes the two edge samples itself.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
from typing import Callable, Sequence

from tokenjoule.energy.measurement import PowerSample
from tokenjoule.energy.timeline import EdgeSampling

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class SamplerProcessError(RuntimeError):
    """The sampler process did not start or stopped answering."""


class ProcessPowerSampler(EdgeSampling):
    """Power samples taken by a child process between `start()` and `stop()`."""

    kind = "process"

    def __init__(
        self,
        read_power: Callable[[], tuple],
        devices: Sequence[int],
        fields: Sequence[str],
        hz: float,
        clock: Callable[[], float] = time.monotonic,
        backend: str = "nvml",
    ):
        self.read_power = read_power  # the parent's own reader, for the edge samples
        self.hz = hz
        self.clock = clock
        self.samples: list[PowerSample] = []
        self.read_errors = 0
        self._t0 = 0.0
        self._running = False
        cmd = [sys.executable, "-m", "tokenjoule.energy.sampler_proc", "--hz", repr(hz),
               "--devices", ",".join(map(str, devices)), "--fields", ",".join(fields), "--backend", backend]
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=env, close_fds=True)
        line = self._readline(READY_TIMEOUT_S)
        if line.strip() != "ready":
            err = self._stderr_tail()
            self.close()
            raise SamplerProcessError(f"sampler process did not start: {line.strip() or err or 'no answer'}")

    @property
    def running(self) -> bool:
        return self._running

    def _readline(self, timeout_s: float) -> str:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        if not ready:
            return ""
        return self._proc.stdout.readline().decode("utf-8", "replace")

    def _stderr_tail(self) -> str:
        if self._proc.poll() is None or self._proc.stderr is None:
            return ""
        return " ".join(self._proc.stderr.read().decode("utf-8", "replace").split()[-30:])

    def _send(self, word: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(word.encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SamplerProcessError(f"sampler process is gone ({exc})") from exc

    def start(self, t0: float | None = None) -> None:
        self._t0 = self.clock() if t0 is None else t0
        self.samples = []
        self.read_errors = 0
        self.sample_now()  # the start-edge sample, in this process, exactly at the edge
        self._send("start")
        self._running = True

    def stop(self, final_sample: bool = True) -> list[PowerSample]:
        if self._running:
            self._running = False
            self._send("stop")
            line = self._readline(STOP_TIMEOUT_S)
            if not line:
                raise SamplerProcessError("sampler process did not answer 'stop'")
            data = json.loads(line)
            self.read_errors += int(data.get("errors", 0))
            edge = self.samples[:1]
            inner = [PowerSample(t_s=t - self._t0, power_w=tuple(p)) for t, p in data["samples"]]
            self.samples = edge + [s for s in inner if s.t_s > 0] + self.samples[1:]
        if final_sample:
            self.sample_now()
        return self.samples

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                self._send("quit")
            except SamplerProcessError:
                pass
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=2.0)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


# -- the child ----------------------------------------------------------------------------------
class _ConstantBackend:
    """`--backend constant:W`: every device reads W watts (tests and CPU dry runs only)."""

    def __init__(self, watts: float):
        self.watts = watts

    def instant_power_w(self, index: int) -> float:
        return self.watts

    average_power_w = instant_power_w


def _open_backend(spec: str):
    if spec.startswith("constant:"):
        return _ConstantBackend(float(spec.split(":", 1)[1]))
    from tokenjoule.energy.gpu_backend import PynvmlGpuBackend  # plain NVML: no Zeus start-up cost

    return PynvmlGpuBackend()


def _child(argv: Sequence[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="tokenjoule.energy.sampler_proc")
    p.add_argument("--hz", type=float, required=True)
    p.add_argument("--devices", required=True)
    p.add_argument("--fields", required=True)
    p.add_argument("--backend", default="nvml")
    args = p.parse_args(argv)
    devices = [int(d) for d in args.devices.split(",")]
    fields = args.fields.split(",")
    backend = _open_backend(args.backend)
    getters = [backend.instant_power_w if f == "instant" else backend.average_power_w for f in fields]
    period_s = 1.0 / args.hz
    out = sys.stdout
    fd = sys.stdin.fileno()
    out.write("ready\n")
    out.flush()
    buffer = b""
    samples: list = []
    sampling, errors, t0, k = False, 0, 0.0, 0
    while True:
        if sampling:
            due = t0 + k * period_s
            now = time.monotonic()
            if due <= now:  # fell behind: skip to the next slot in the future
                k = math.floor((now - t0) / period_s) + 1
                due = t0 + k * period_s
            timeout = max(0.0, due - now)
        else:
            timeout = None
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return 0
            buffer += chunk
            while b"\n" in buffer:
                word, buffer = buffer.split(b"\n", 1)
                word = word.strip()
                if word == b"start":
                    sampling, samples, errors, t0, k = True, [], 0, time.monotonic(), 1
                elif word == b"stop":
                    sampling = False
                    out.write(json.dumps({"samples": samples, "errors": errors}) + "\n")
                    out.flush()
                elif word == b"quit":
                    return 0
            continue
        if sampling:
            t = time.monotonic()
            try:
                power = [get(d) for get, d in zip(getters, devices)]
                samples.append([t, power])
            except Exception:  # a failed read is a gap, counted
                errors += 1
            k += 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
