#!/usr/bin/env python3
"""Why does a CPU-bound GPU loop vary 11-18% between windows on the GPU host? Find out.

Eager decode at small batch is bound by the host CPU launching kernels, so the host's own
speed variation is in every hf-eager number and in the reference check's intervals. This
script times back-to-back windows of a fixed loop of tiny CUDA kernel launches (the same
stand-in as `reference_check.py --launch-loop`) and, per window, reads what could explain the
spread: the process's CPU time (on-CPU share of the window), involuntary context switches,
the host's steal time (/proc/stat, a VM's "another guest had the core"), the core the loop
ran on, and the GPU's SM clock. It runs the loop under several CPU placements, each in its
own child process:

- `default`:   as launched (the scheduler may move the process between cores);
- `pinned`:    `os.sched_setaffinity` to one core (the last one, away from IRQ-heavy core 0);
- `pinned-1t`: pinned, with torch's intra-op threads set to 1.

    python benchmarks/host_noise.py --out $OUT                       # GPU host, ~2 min
    python benchmarks/host_noise.py --out out --device cpu --windows 4 --launches 2000   # a CPU check

Writes OUT/host_noise.json (per placement: every window's duration and readings, the CV of the
durations) and prints one line per placement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PLACEMENTS = ("default", "pinned", "pinned-1t")


def steal_ticks() -> int | None:
    """Host-wide steal time in clock ticks (the 8th field of /proc/stat's cpu line)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) if len(fields) > 8 else None
    except (OSError, ValueError, IndexError):
        return None


def current_core() -> int | None:
    try:
        return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def sm_clock_mhz() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return float(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
    except Exception:  # noqa: BLE001 - no NVML: the reading is None
        return None


def cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 and statistics.fmean(values) else None


def child(args: argparse.Namespace) -> dict:
    """One placement: set it up, warm up, time the windows."""
    import torch

    if args.placement.startswith("pinned"):
        core = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    if args.placement == "pinned-1t":
        torch.set_num_threads(1)
    device = torch.device(args.device)
    x = torch.ones(16, device=device)

    def loop() -> None:
        for _ in range(args.launches):
            x.add_(1.0)
        if device.type == "cuda":
            torch.cuda.synchronize()

    loop()  # warm-up: first launches pay lazy initialisation
    hz = os.sysconf("SC_CLK_TCK")
    windows = []
    for _ in range(args.windows):
        ru0, st0, t0 = resource.getrusage(resource.RUSAGE_SELF), steal_ticks(), time.perf_counter()
        core0 = current_core()
        loop()
        duration_s = time.perf_counter() - t0
        ru1, st1 = resource.getrusage(resource.RUSAGE_SELF), steal_ticks()
        cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        windows.append({
            "duration_s": duration_s,
            "cpu_share": cpu_s / duration_s if duration_s > 0 else None,
            "involuntary_switches": ru1.ru_nivcsw - ru0.ru_nivcsw,
            "host_steal_s": None if st0 is None or st1 is None else (st1 - st0) / hz,
            "core_start": core0, "core_end": current_core(), "sm_clock_mhz": sm_clock_mhz(),
        })
    durations = [w["duration_s"] for w in windows]
    return {"placement": args.placement, "affinity": sorted(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "launches": args.launches,
            "duration_cv": cv(durations), "duration_min_s": min(durations), "duration_max_s": max(durations),
            "windows": windows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--launches", type=int, default=60000, help="kernel launches per window (~0.4 s on the H200 host)")
    p.add_argument("--placements", default=",".join(PLACEMENTS))
    p.add_argument("--placement", default=None, help=argparse.SUPPRESS)  # the child's own
    args = p.parse_args(argv)
    if args.placement:
        print(json.dumps(child(args)))
        return 0
    results = []
    for placement in [s for s in args.placements.split(",") if s]:
        if placement not in PLACEMENTS:
            raise SystemExit(f"error: unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
        cmd = [sys.executable, __file__, "--placement", placement, "--device", args.device,
               "--windows", str(args.windows), "--launches", str(args.launches)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            results.append({"placement": placement, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(r)
        shares = [w["cpu_share"] for w in r["windows"] if w["cpu_share"] is not None]
        steals = [w["host_steal_s"] for w in r["windows"] if w["host_steal_s"] is not None]
        print(f"{placement:10s} duration CV {100 * (r['duration_cv'] or 0):5.1f}%  "
              f"min {r['duration_min_s']:.3f} s max {r['duration_max_s']:.3f} s  "
              f"on-CPU share {min(shares, default=0):.2f}-{max(shares, default=0):.2f}  "
              f"host steal/window {max(steals, default=0):.3f} s max")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "benchmarks/host_noise.py", *(argv if argv is not None else sys.argv[1:])]),
            "cpu_count": os.cpu_count(), "device": args.device}
    (out / "host_noise.json").write_text(json.dumps({"meta": meta, "placements": results}, indent=1))
    print(f"wrote {out / 'host_noise.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
