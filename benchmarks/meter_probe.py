#!/usr/bin/env python3
"""Probe the GPU energy meter on a real GPU (H100): idle power, counter vs power-timeline
agreement on generate windows of 0.5-5 s, and the meter's overhead.

    source benchmarks/device/env.sh && python benchmarks/meter_probe.py        # ~2-3 min
    python benchmarks/meter_probe.py --quick                                   # ~1 min

Writes $OUT/meter_probe.json (OUT defaults to ./out) and prints compact tables.

What it measures, per generate window (Llama-3.1-8B shape, random bf16 weights, batch 8,
512 input tokens, max_new_tokens = min_new_tokens chosen so the window lasts ~0.5/1/2.5/5 s):
- the energy counter's difference (the meter's headline);
- tokenjoule's NvmlMeter result (20 Hz instant field, edge samples) and its disagreement;
- a 100 Hz raw stream of the instant field, the averaged field, nvmlDeviceGetPowerUsage and
  the counter itself, integrated at 10/20/50/100 Hz (by taking every 10th/5th/2nd/1st
  sample), with and without the window-edge samples;
- an emulation of Zeus PowerMonitor's integral (samples deduplicated on equal values, only
  those inside [start, end], no edge samples) and, if it starts, the real PowerMonitor.
Hypotheses for the 2-10% PowerMonitor-vs-counter gap seen before, each with its evidence:
  H1 the instant field lags the counter   -> best lag of instant vs counter-derived power
  H2 sampling misses the window edges      -> with- vs without-edge integrals, PM emulation
  H3 the averaged field is a ~1 s average  -> its lag, and its fit to a 1 s mean of instant
  H4 the counter counts what power doesn't -> idle and long-window ratios power/counter
Overhead: the same ~2.5 s generate timed with and without the meter, alternating order,
>= 5 pairs; without the meter only the counter is read at the edges (two NVML calls).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RATES_HZ = (10, 20, 50, 100)
RAW_HZ = 100
CHANNELS = ("instant", "average", "usage", "counter")  # order of the raw stream's values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama-3.1-8b", help="model preset (src/tokenjoule/models/presets)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index")
    p.add_argument("--windows", default="0.5,1,2.5,5", help="target window lengths in seconds")
    p.add_argument("--repeats", type=int, default=3, help="windows per target length")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--input", type=int, default=512, help="input tokens per request")
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--pairs", type=int, default=6, help="with/without-meter pairs for the overhead")
    p.add_argument("--overhead-window", type=float, default=2.5, help="seconds per overhead run")
    p.add_argument("--no-powermonitor", action="store_true", help="skip Zeus PowerMonitor")
    p.add_argument("--quick", action="store_true", help="1 repeat, 5 pairs, 2 s idle")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="output folder (default $OUT or ./out)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.pairs, args.idle_s = 1, 5, 2.0
    args.windows = [float(w) for w in args.windows.split(",")]
    return args


# --- analysis of a raw stream (pure functions: samples are tokenjoule PowerSample) --------
def integrate(samples, channel: int, stride: int = 1, edges: bool = True) -> float | None:
    from tokenjoule.energy.timeline import integrate_device

    if len(samples) < 3:
        return None
    inner = samples[1:-1][::stride]
    picked = [samples[0], *inner, samples[-1]] if edges else inner
    return integrate_device(picked, channel)


def powermonitor_style(samples, channel: int, stride: int = 1) -> float | None:
    """Zeus PowerMonitor's integral: keep a sample only when the value changed, keep those
    strictly inside the window (no edge samples), trapezoid over what is left."""
    from tokenjoule.energy.timeline import integrate_device

    kept, prev = [], None
    for s in samples[1:-1][::stride]:
        v = ch(s, channel)
        if v is not None and v != prev:
            kept.append(s)
            prev = v
    return integrate_device(kept, channel)


def counter_steps(samples, channel: int = 3) -> list[tuple[float, float]]:
    """(time first seen, value) each time the counter changed."""
    steps, prev = [], None
    for s in samples:
        v = ch(s, channel)
        if v is not None and v != prev:
            steps.append((s.t_s, v))
            prev = v
    return steps


def update_periods(samples) -> list[float]:
    steps = counter_steps(samples)
    return [b[0] - a[0] for a, b in zip(steps[1:], steps[2:])]  # skip the first (partial) step


def best_lag(samples, channel: int) -> dict | None:
    """Shift the power channel by tau (-0.6..+0.6 s) and compare its mean over each counter
    interval with the counter-derived power of that interval; the tau with the lowest RMS
    error is the channel's lag behind the counter (positive: the channel is late)."""
    import bisect

    steps = counter_steps(samples)[1:]
    intervals = [(a[0], b[0], (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(steps, steps[1:]) if b[0] > a[0]]
    pts = [(s.t_s, ch(s, channel)) for s in samples if ch(s, channel) is not None]
    if len(intervals) < 4 or len(pts) < 10:
        return None
    times = [t for t, _ in pts]
    prefix = [0.0]
    for _, p in pts:
        prefix.append(prefix[-1] + p)
    best = None
    for k in range(-60, 61):
        tau = k / 100
        errs, ratios = [], []
        for t0, t1, p_counter in intervals:
            i, j = bisect.bisect_left(times, t0 + tau), bisect.bisect_left(times, t1 + tau)
            if j > i:
                mean = (prefix[j] - prefix[i]) / (j - i)
                errs.append((mean - p_counter) ** 2)
                if p_counter:
                    ratios.append(mean / p_counter)
        if len(errs) >= max(3, len(intervals) // 2):
            rms = (sum(errs) / len(errs)) ** 0.5
            if best is None or rms < best["rms_w"]:
                best = {"lag_s": tau, "rms_w": rms, "mean_ratio_to_counter": statistics.fmean(ratios) if ratios else None}
    return best


def moving_average_fit(samples, window_s: float = 1.0) -> dict | None:
    """RMS difference between the averaged field and a trailing `window_s` mean of the instant
    field (H3), next to the RMS difference between the two raw fields."""
    pts = [(s.t_s, ch(s, 0), ch(s, 1)) for s in samples if ch(s, 0) is not None and ch(s, 1) is not None]
    if len(pts) < 10 or pts[-1][0] - pts[0][0] < window_s + 0.5:
        return None
    d_ma, d_raw = [], []
    for t, inst, avg in pts:
        if t - pts[0][0] < window_s:
            continue
        trail = [i for tt, i, _ in pts if t - window_s < tt <= t]
        d_ma.append((statistics.fmean(trail) - avg) ** 2)
        d_raw.append((inst - avg) ** 2)
    return {"rms_vs_1s_mean_of_instant_w": statistics.fmean(d_ma) ** 0.5, "rms_vs_instant_w": statistics.fmean(d_raw) ** 0.5}


def ch(sample, channel: int):
    """One channel of a raw sample; None where the read failed."""
    return sample.power_w[channel] if channel < len(sample.power_w) else None


def fmt(x, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def rel(x, ref):
    return None if x is None or not ref else (x - ref) / ref


def pct(x):
    return "   n/a" if x is None else f"{100 * x:+6.2f}"


# --- GPU work ---------------------------------------------------------------------------
def torch_device(index: int) -> str:
    return f"cuda:{index}"  # a CPU dry run in the tests replaces this


def start_power_monitor(index: int):
    """Created before torch is imported: after, its subprocesses failed to start (seen on H100)."""
    try:
        from zeus.monitor.power import PowerDomain, PowerMonitor

        t = time.monotonic()
        pm = PowerMonitor(gpu_indices=[index], power_domains=[PowerDomain.DEVICE_INSTANT])
        return pm, {"started": True, "start_s": time.monotonic() - t, "update_period_s": pm.update_period}
    except Exception as exc:
        return None, {"started": False, "error": f"{type(exc).__name__}: {exc}"}


def build_model(preset: str, device: int):
    import torch
    import transformers

    cfg_json = json.loads((ROOT / "src/tokenjoule/models/presets" / f"{preset}.json").read_text())
    cfg = transformers.AutoConfig.for_model(**cfg_json)
    t = time.monotonic()
    with torch.device(torch_device(device)):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    torch.cuda.synchronize(device)
    return model, cfg, time.monotonic() - t


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": {k: v for k, v in vars(args).items()}, "time_utc_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    pm, result["powermonitor"] = (None, {"started": False, "error": "disabled"}) if args.no_powermonitor else start_power_monitor(args.device)
    print("PowerMonitor:", result["powermonitor"])

    import torch

    from tokenjoule.energy.gpu_backend import open_gpu_backend
    from tokenjoule.energy.nvml_meter import NvmlMeter
    from tokenjoule.energy.provenance import collect_provenance
    from tokenjoule.energy.timeline import PowerSampler

    backend = open_gpu_backend()
    dev = args.device
    try:
        import pynvml

        handle = pynvml.nvmlDeviceGetHandleByIndex(dev)  # note: NVML index; fine without CUDA_VISIBLE_DEVICES
        def usage():
            try:
                return pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except pynvml.NVMLError:
                return None
    except Exception:
        usage = lambda: None  # noqa: E731

    def raw_read():
        return (backend.instant_power_w(dev), backend.average_power_w(dev), usage(), backend.energy_j(dev))

    raw = PowerSampler(raw_read, hz=RAW_HZ)
    meter = NvmlMeter(backend, devices=[dev], sample_hz=20)

    model, cfg, build_s = build_model(args.preset, dev)
    result["model"] = {"preset": args.preset, "build_s": build_s, "params": sum(p.numel() for p in model.parameters())}
    gen = torch.Generator(device="cpu").manual_seed(0)
    input_ids = torch.randint(0, cfg.vocab_size, (args.batch, args.input), generator=gen).to(torch_device(dev))
    mask = torch.ones_like(input_ids)
    sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731

    def generate(n: int) -> None:
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    # warm-up, then calibrate t(n) = a + b n
    generate(8)
    sync()
    times = {}
    for n in (16, 64):
        t = time.perf_counter()
        generate(n)
        sync()
        times[n] = time.perf_counter() - t
    b = (times[64] - times[16]) / 48
    a = times[16] - 16 * b
    result["calibration"] = {"prefill_plus_overhead_s": a, "decode_step_s": b}
    tokens_for = lambda target: max(1, round((target - a) / b))  # noqa: E731

    # (a) idle, model loaded, nothing running
    time.sleep(1.0)
    raw.start()
    idle_w = meter.measure_idle(args.idle_s)
    idle_samples = raw.stop()
    result["idle"] = {
        **meter.idle_details,
        "idle_power_w": idle_w,
        **{f"mean_{c}_w": statistics.fmean([ch(s, i) for s in idle_samples if ch(s, i) is not None] or [float("nan")])
           for i, c in enumerate(CHANNELS[:3])},
        "counter_update_periods_s": update_periods(idle_samples),
    }
    print(f"idle: {fmt(idle_w)} W ({meter.idle_details['idle_power_source']}); counter "
          f"{fmt(meter.idle_details['idle_power_counter_w'])} W, timeline {fmt(meter.idle_details['idle_power_timeline_w'])} W; "
          f"raw means: instant {fmt(result['idle']['mean_instant_w'])}, average {fmt(result['idle']['mean_average_w'])}, "
          f"usage {fmt(result['idle']['mean_usage_w'])} W")

    # (b) windows
    rows = []
    for target in args.windows:
        n = tokens_for(target)
        for rep in range(args.repeats):
            wall0 = time.time()
            with meter.window(sync=sync) as w:
                raw.start()
                generate(n)
                sync()
                samples = raw.stop()
            wall1 = time.time()
            m = w.result
            counter = m.gpu_energy_j
            row = {"target_s": target, "repeat": rep, "output_tokens": n, "duration_s": m.duration_s,
                   "counter_j": counter, "meter": m.to_dict(with_samples=False),
                   "meter_disagreement": m.timeline_disagreement, "raw_samples": len(samples),
                   "raw_duration_s": samples[-1].t_s - samples[0].t_s,
                   "counter_update_periods_s": update_periods(samples)}
            c0, c1 = ch(samples[0], 3), ch(samples[-1], 3)
            raw_counter = c1 - c0 if c0 is not None and c1 is not None else None
            row["raw_counter_j"] = raw_counter
            for ci, cname in enumerate(CHANNELS[:3]):
                for hz in RATES_HZ:
                    row[f"{cname}_{hz}hz_edges"] = rel(integrate(samples, ci, RAW_HZ // hz, True), raw_counter)
                row[f"{cname}_20hz_noedges"] = rel(integrate(samples, ci, RAW_HZ // 20, False), raw_counter)
                row[f"{cname}_pmstyle"] = rel(powermonitor_style(samples, ci), raw_counter)
            row["lag_instant"] = best_lag(samples, 0)
            row["lag_average"] = best_lag(samples, 1)
            row["lag_usage"] = best_lag(samples, 2)
            row["average_fit"] = moving_average_fit(samples)
            row["raw"] = [[round(s.t_s, 5), *s.power_w] for s in samples]  # for offline analysis
            if pm is not None:
                try:
                    e = pm.get_energy(wall0, wall1)
                    row["powermonitor"] = rel(e.get(dev) if e else None, counter)
                except Exception as exc:
                    row["powermonitor_error"] = str(exc)
            rows.append(row)
    result["windows"] = rows
    if pm is not None:
        try:
            pm.stop()
        except Exception:
            pass

    # (c) overhead: with vs without the meter, alternating which goes first
    n = tokens_for(args.overhead_window)
    pairs = []
    for i in range(args.pairs):
        runs = {}
        for kind in (("with", "without") if i % 2 == 0 else ("without", "with")):
            if kind == "with":
                t = time.perf_counter()
                with meter.window(sync=sync) as w:
                    generate(n)
                wall_s = time.perf_counter() - t
                runs[kind] = (w.result.duration_s, w.result.gpu_energy_j, wall_s)
            else:
                sync()
                e0, t = backend.energy_j(dev), time.perf_counter()
                generate(n)
                sync()
                elapsed_s = time.perf_counter() - t
                runs[kind] = (elapsed_s, backend.energy_j(dev) - e0, elapsed_s)
        # with_s: the window as the meter timed it (the work, perturbed by the sampler);
        # with_wall_s adds the meter's bookkeeping around it (process checks, integration)
        pairs.append({"with_s": runs["with"][0], "with_j": runs["with"][1], "with_wall_s": runs["with"][2],
                      "without_s": runs["without"][0], "without_j": runs["without"][1]})
    dt = [p["with_s"] / p["without_s"] - 1 for p in pairs]
    dw = [p["with_wall_s"] / p["without_s"] - 1 for p in pairs]
    de = [p["with_j"] / p["without_j"] - 1 for p in pairs if p["with_j"] and p["without_j"]]
    result["overhead"] = {"output_tokens": n, "pairs": pairs,
                          "time_pct_mean": 100 * statistics.fmean(dt), "time_pct_std": 100 * statistics.pstdev(dt),
                          "wall_pct_mean": 100 * statistics.fmean(dw), "wall_pct_std": 100 * statistics.pstdev(dw),
                          "energy_pct_mean": 100 * statistics.fmean(de) if de else None,
                          "energy_pct_std": 100 * statistics.pstdev(de) if de else None}
    result["provenance"] = collect_provenance([dev], backend=backend)
    result["backend"] = backend.backend_name
    write_and_print(result, out_dir)
    return 0


def write_and_print(result: dict, out_dir: Path) -> None:
    path = out_dir / "meter_probe.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    periods = [p for r in result["windows"] for p in r["counter_update_periods_s"]]
    if periods:
        print(f"counter update period: median {statistics.median(periods) * 1000:.1f} ms, "
              f"min {min(periods) * 1000:.1f}, max {max(periods) * 1000:.1f} ms (n={len(periods)})")
    print("timeline vs counter, % ((timeline - counter) / counter); edges = with window-edge samples")
    head = ("target", "dur_s", "counter_J", "meter20", "inst10", "inst20", "inst50", "inst100", "inst20ne",
            "instPM", "avg20", "usage20", "PM", "lagI_s", "lagA_s")
    print(" ".join(f"{h:>8}" for h in head))
    for r in result["windows"]:
        li, la = r.get("lag_instant") or {}, r.get("lag_average") or {}
        vals = [f"{r['target_s']:8.2f}", f"{r['duration_s']:8.3f}", f"{(r['counter_j'] or 0):8.1f}",
                *(f"{pct(r.get(k)):>8}" for k in ("meter_disagreement", "instant_10hz_edges", "instant_20hz_edges",
                                                  "instant_50hz_edges", "instant_100hz_edges", "instant_20hz_noedges",
                                                  "instant_pmstyle", "average_20hz_edges", "usage_20hz_edges",
                                                  "powermonitor")),
                f"{li.get('lag_s', float('nan')):8.2f}", f"{la.get('lag_s', float('nan')):8.2f}"]
        print(" ".join(vals))
    o = result["overhead"]
    print(f"overhead ({len(o['pairs'])} pairs, {o['output_tokens']} tokens): time {o['time_pct_mean']:+.2f}% "
          f"+- {o['time_pct_std']:.2f} (with bookkeeping {o['wall_pct_mean']:+.2f}% +- {o['wall_pct_std']:.2f}), "
          f"energy {fmt(o['energy_pct_mean'], '+.2f')}% +- {fmt(o['energy_pct_std'], '.2f')}")
    idle = result["idle"]
    print(f"idle power (W): counter {fmt(idle['idle_power_counter_w'])}, instant {fmt(idle['mean_instant_w'])}, "
          f"average {fmt(idle['mean_average_w'])}, usage {fmt(idle['mean_usage_w'])}")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
