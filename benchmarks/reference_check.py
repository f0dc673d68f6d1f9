#!/usr/bin/env python3
"""tokenjoule against a bare reference, alternating in one process; and the meter's overhead.

Reference check (default): for each batch size, `--pairs` pairs of
- `bare`: the energy counter read around n calls of the same `engine.generate` (device
  synchronised at both edges, nothing else in the process), `--bare-windows` windows, n =
  ceil(min_window_s / batch time) as the runner chooses it;
- `tj`: the real measure path, `runs.offline.measure_cell` on the same loaded engine with the
  production meter (`make_meter("nvml")`: counter + timeline sampled from another process)
  and the CLI's progress display (`cli.measure.RichProgress`), warm-up, calibration, windows;
- `tj-old` (batches in `--old-arm-batches`): the same path as it was before the fix: an
  in-process sampling thread and rich's auto-refreshing progress bar.
Arms alternate inside each pair, the order rotating pair by pair. Ratios tj / bare of energy
and time per batch, with 95% confidence intervals over the pairs (t distribution).

Overhead (`--overhead`): triples of windows of the same n batches: bare counter reads, a
meter window with the process sampler, a meter window with the thread sampler, order rotated.

    source benchmarks/device/env.sh; python benchmarks/reference_check.py --engine hf --mode eager
    source benchmarks/device/env.sh; python benchmarks/reference_check.py --engine vllm --mode graphs
    source benchmarks/device/env.sh; python benchmarks/reference_check.py --overhead --batches 8 --pairs 30
    python benchmarks/reference_check.py --dry-run            # CPU: tiny model, a scripted sensor

Writes $OUT/<--name>.json after every pair (a timeout keeps what finished) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# two-sided 95% quantiles of Student's t, by degrees of freedom (1..30); beyond, the normal's
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.960


def paired_ratio_ci(num: Sequence[float], den: Sequence[float]) -> dict[str, Any]:
    """Mean of the per-pair ratios num_i / den_i with its 95% confidence interval."""
    ratios = [a / b for a, b in zip(num, den) if a is not None and b]
    out: dict[str, Any] = {"n": len(ratios), "ratios": ratios, "mean": None, "ci_low": None, "ci_high": None,
                           "half_width": None}
    if not ratios:
        return out
    mean = statistics.fmean(ratios)
    out["mean"] = mean
    if len(ratios) >= 2:
        half = t95(len(ratios) - 1) * statistics.stdev(ratios) / math.sqrt(len(ratios))
        out.update(ci_low=mean - half, ci_high=mean + half, half_width=half)
    return out


def within(ci: dict, tolerance: float) -> bool | None:
    """True when the whole 95% interval of the ratio lies inside 1 +- tolerance."""
    if ci.get("ci_low") is None:
        return None
    return 1 - tolerance <= ci["ci_low"] and ci["ci_high"] <= 1 + tolerance


# -- the arms ------------------------------------------------------------------------------------
def bare_window(engine, spec, n: int, read_energy_j: Callable[[], float], clock=time.monotonic) -> dict:
    """Counter difference and time over n batches, per batch; nothing else runs in the process."""
    engine.synchronize()
    e0, t0 = read_energy_j(), clock()
    for _ in range(n):
        engine.generate(spec)
    engine.synchronize()
    e1, t1 = read_energy_j(), clock()
    return {"energy_j": (e1 - e0) / n, "duration_s": (t1 - t0) / n, "iterations": n}


def bare_arm(engine, spec, n: int, windows: int, read_energy_j, clock=time.monotonic) -> dict:
    ws = [bare_window(engine, spec, n, read_energy_j, clock) for _ in range(windows)]
    return {"energy_j": statistics.fmean(w["energy_j"] for w in ws),
            "duration_s": statistics.fmean(w["duration_s"] for w in ws), "windows": ws}


def tj_arm(engine, spec, meter, on_progress=None) -> dict:
    from tokenjoule.runs.offline import measure_cell

    rec = measure_cell(spec, engine, meter, on_progress=on_progress)
    m = rec.metrics
    return {"energy_j": m["energy_j"], "duration_s": m["duration_s"], "energy_cv": m["energy_cv"],
            "duration_cv": m["duration_cv"], "iterations": m["iterations_per_window"], "flags": m["flags"],
            "timeline_disagreement": m["timeline_disagreement"], "calls": rec.measurement.get("calls"),
            "sampler": rec.measurement.get("notes", {}).get("sampler")}


def iterations_for(batch_s: float, min_window_s: float) -> int:
    return max(1, math.ceil(min_window_s / batch_s)) if batch_s > 0 else 1


def summarize(pairs: list[dict], arms: Sequence[str]) -> dict:
    out = {}
    for arm in arms:
        if arm == "bare":
            continue
        both = [p for p in pairs if arm in p and "bare" in p]
        out[arm] = {
            "energy": paired_ratio_ci([p[arm]["energy_j"] for p in both], [p["bare"]["energy_j"] for p in both]),
            "time": paired_ratio_ci([p[arm]["duration_s"] for p in both], [p["bare"]["duration_s"] for p in both]),
        }
    return out


def reference_check(engine, base_spec, batches: Sequence[int], pairs: int, arms_for: Callable[[int], list[str]],
                    meters: dict[str, Any], read_energy_j, progress_for: dict[str, Any], bare_windows: int = 3,
                    warmups: int = 2, on_pair: Callable[[dict], None] | None = None, clock=time.monotonic) -> dict:
    """The alternating reference check over `batches`; returns {batch: {pairs, summary, ...}}."""
    results: dict[str, Any] = {}
    for b in batches:
        spec = base_spec.model_copy(update={"batch_size": b})
        for _ in range(warmups):
            engine.generate(spec)
        engine.synchronize()
        t0 = clock()
        engine.generate(spec)
        engine.synchronize()
        n = iterations_for(clock() - t0, spec.min_window_s)
        arms = arms_for(b)
        entry = {"batch_size": b, "bare_iterations": n, "arms": arms, "pairs": []}
        results[str(b)] = entry
        for i in range(pairs):
            order = arms[i % len(arms):] + arms[:i % len(arms)]
            pair: dict[str, Any] = {"order": order}
            for arm in order:
                if arm == "bare":
                    pair[arm] = bare_arm(engine, spec, n, bare_windows, read_energy_j, clock)
                else:
                    pair[arm] = tj_arm(engine, spec, meters[arm], progress_for.get(arm))
            entry["pairs"].append(pair)
            entry["summary"] = summarize(entry["pairs"], arms)
            if on_pair:
                on_pair(results)
    return results


def overhead_check(engine, spec, triples: int, meters: dict[str, Any], read_energy_j,
                   on_triple: Callable[[dict], None] | None = None, clock=time.monotonic) -> dict:
    """Windows of the same n batches: bare counter reads vs each meter's window, rotated."""
    engine.generate(spec)
    engine.synchronize()
    t0 = clock()
    engine.generate(spec)
    engine.synchronize()
    n = iterations_for(clock() - t0, spec.min_window_s)
    arms = ["bare", *meters]
    out: dict[str, Any] = {"batch_size": spec.batch_size, "iterations": n, "arms": arms, "pairs": []}
    for i in range(triples):
        order = arms[i % len(arms):] + arms[:i % len(arms)]
        row: dict[str, Any] = {"order": order}
        for arm in order:
            if arm == "bare":
                row[arm] = bare_window(engine, spec, n, read_energy_j, clock)
            else:
                with meters[arm].window(sync=engine.synchronize) as w:
                    for _ in range(n):
                        engine.generate(spec)
                m = w.result
                row[arm] = {"energy_j": m.energy_j / n, "duration_s": m.duration_s / n,
                            "timeline_disagreement": m.timeline_disagreement,
                            "sample_count": m.notes.get("sample_count"), "sampler": m.notes.get("sampler")}
        out["pairs"].append(row)
        out["summary"] = summarize(out["pairs"], arms)
        if on_triple:
            on_triple(out)
    return out


class LaunchLoopEngine:
    """`--launch-loop`: a CPU-bound stand-in for eager decode with little noise of its own:
    each "batch" launches `launches` tiny kernels from Python, the work a sampling thread in
    the same process competes with. Only what overhead_check uses (generate, synchronize)."""

    def __init__(self, launches: int, device: str):
        import torch

        self.torch = torch
        self.launches = launches
        self.device = device
        self.x = torch.zeros(256, device=device)

    def generate(self, spec=None, output_tokens=None):
        x = self.x
        for _ in range(self.launches):
            x.add_(1.0)
        return None

    def synchronize(self) -> None:
        if self.device != "cpu":
            self.torch.cuda.synchronize()

    def provenance(self) -> dict:
        return {"engine": "launch-loop", "launches_per_batch": self.launches, "torch_version": self.torch.__version__}

    def close(self) -> None:
        pass


# -- the command ---------------------------------------------------------------------------------
class _ScriptedSensor:
    """--dry-run: a GpuBackend whose counter is 300 W x wall time (no GPU needed)."""

    backend_name = "dry-run"

    def __init__(self, watts: float = 300.0):
        self.watts = watts

    def device_count(self): return 1
    def name(self, index): return "dry-run sensor"
    def energy_j(self, index): return self.watts * time.monotonic()
    def instant_power_w(self, index): return self.watts
    def average_power_w(self, index): return self.watts
    def power_limit_w(self, index): return None
    def driver_version(self): return None
    def cuda_version(self): return None
    def compute_pids(self, index): return []
    def temperature_c(self, index): return None
    def sm_clock_mhz(self, index): return None
    def mem_clock_mhz(self, index): return None
    def close(self): pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    p.add_argument("--mode", default="eager")
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--input", type=int, default=512)
    p.add_argument("--output", type=int, default=64)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--bare-windows", type=int, default=3)
    p.add_argument("--tj-warmup", type=int, default=1, help="the measured cell's warm-up (engine already warm)")
    p.add_argument("--old-arm-batches", default="", help="batches that also get the tj-old arm, e.g. 1,8")
    p.add_argument("--overhead", action="store_true", help="meter overhead triples instead of the reference check")
    p.add_argument("--launch-loop", type=int, default=0, metavar="LAUNCHES",
                   help="with --overhead: time a loop of this many tiny kernel launches instead of the model")
    p.add_argument("--idle", action="store_true", help="also record idle settle readings (before load, after the runs)")
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--name", default=None, help="output file stem (default: reference_<engine>_<mode> / overhead_...)")
    p.add_argument("--dry-run", action="store_true", help="CPU: tiny model, scripted sensor, 1 pair")
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.old_arm_batches = {int(b) for b in args.old_arm_batches.split(",") if b}
    if args.dry_run:
        args.model, args.batches, args.pairs, args.input, args.output = "tiny", args.batches[:2] or [1], 1, 16, 8
    kind = "overhead" if args.overhead else "reference"
    if args.launch_loop and not args.overhead:
        p.error("--launch-loop needs --overhead")
    args.name = args.name or (f"{kind}_launchloop" if args.launch_loop else f"{kind}_{args.engine}_{args.mode}") + ("_dryrun" if args.dry_run else "")
    return args


def _print_table(results: dict, kind: str) -> None:
    rows = results.items() if kind == "reference" else [(str(results["batch_size"]), results)]
    print(f"{'batch':>5} {'arm':>14} {'n':>3} {'energy ratio [95% CI]':>28} {'time ratio [95% CI]':>28}")
    for b, entry in rows:
        for arm, s in (entry.get("summary") or {}).items():
            def f(ci):
                if ci["mean"] is None:
                    return "-"
                if ci["ci_low"] is None:
                    return f"{ci['mean']:.4f}"
                return f"{ci['mean']:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}]"
            print(f"{b:>5} {arm:>14} {s['energy']['n']:>3} {f(s['energy']):>28} {f(s['time']):>28}")


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.json"
    from tokenjoule.codeversion import code_version
    from tokenjoule.energy.nvml_meter import NvmlMeter

    meta: dict[str, Any] = {"args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
                            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **code_version()}
    doc: dict[str, Any] = {"meta": meta}

    def save(*_):
        path.write_text(json.dumps(doc, indent=1, default=str))

    if args.dry_run:
        backend_for = lambda: _ScriptedSensor()  # noqa: E731
        device = "cpu"
    else:
        from tokenjoule.energy.gpu_backend import open_gpu_backend

        backend_for = open_gpu_backend
        device = "cuda"
    meters = {"tj": NvmlMeter(backend_for(), devices=[0], sampler="process")}
    if args.overhead:
        meters["tj-old"] = NvmlMeter(backend_for(), devices=[0], sampler="thread")
    elif args.old_arm_batches:
        meters["tj-old"] = NvmlMeter(backend_for(), devices=[0], sampler="thread")
    counter = backend_for()
    read_energy_j = lambda: counter.energy_j(0)  # noqa: E731
    meta["sensor"] = getattr(counter, "backend_name", None)
    if args.idle:
        meters["tj"].measure_idle(args.idle_s)
        doc["idle_before_load"] = dict(meters["tj"].idle_details)
        save()

    from tokenjoule.engines.base import get_engine
    from tokenjoule.spec import RunSpec

    spec = RunSpec(model=args.model, engine=args.engine, mode=args.mode, batch_size=args.batches[0],
                   input_tokens=args.input, output_tokens=args.output, warmup=args.tj_warmup, repeats=3,
                   device=device, split_prefill=False)
    engine = LaunchLoopEngine(args.launch_loop, device) if args.launch_loop else get_engine(args.engine)
    t_load = time.monotonic()
    if not args.launch_loop:
        engine.load(spec)
    meta["load_s"] = time.monotonic() - t_load
    meta["engine_provenance"] = engine.provenance()
    meta["meter_provenance"] = meters["tj"].provenance()
    save()
    try:
        if args.overhead:
            ospec = spec.model_copy(update={"batch_size": args.batches[0]})
            doc["overhead"] = overhead_check(engine, ospec, args.pairs, {"tj": meters["tj"], "tj-old": meters["tj-old"]},
                                             read_energy_j, on_triple=lambda r: (doc.__setitem__("overhead", r), save()))
            _print_table(doc["overhead"], "overhead")
        else:
            from tokenjoule.cli.measure import RichProgress
            from rich.console import Console

            err = Console(stderr=True)
            progress = {"tj": RichProgress(err), "tj-old": RichProgress(err, auto_refresh=True)}
            for p in progress.values():
                p.__enter__()
            try:
                arms_for = lambda b: ["bare", "tj"] + (["tj-old"] if b in args.old_arm_batches else [])  # noqa: E731
                doc["reference"] = reference_check(
                    engine, spec, args.batches, args.pairs, arms_for, meters, read_energy_j, progress,
                    bare_windows=args.bare_windows, on_pair=lambda r: (doc.__setitem__("reference", r), save()))
            finally:
                for p in progress.values():
                    p.__exit__(None, None, None)
            _print_table(doc["reference"], "reference")
        if args.idle:
            meters["tj"].measure_idle(args.idle_s)  # right after the runs: the settle wait shows
            doc["idle_after_runs"] = dict(meters["tj"].idle_details)
            s = doc["idle_after_runs"].get("idle_settle") or {}
            print(f"idle after runs: {meters['tj'].idle_power_w} W, settle {s.get('settled')} after "
                  f"{s.get('waited_s')} s (first {s.get('first_power_w')} W)")
    finally:
        meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        save()
        engine.close()
        for m in meters.values():
            m.close()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
