"""GPU evidence: llama-3.1-8b (random weights) served by `vllm serve` (CUDA graphs), replaying
the Azure 2023 conversation trace's request lengths at three Poisson rates; then the same
requests of the middle rate offline (one `LLM.generate` over all of them) for
(E_offline - E_online) / E_offline.

One server is started for all three rates (start-up is paid once) and stopped before the
offline engine loads. Lengths are clipped (--max-input-tokens / --max-output-tokens) and the
request counts chosen so each online run takes about a minute; about 8 minutes in all.

    export PYTHONPATH=/tmp/vsite:$PYTHONPATH VLLM_USE_FLASHINFER_SAMPLER=0
    python benchmarks/serve_evidence.py --out $OUT
Writes $OUT/serve_evidence.db, $OUT/serve_evidence.json and the server log; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--trace", default="azure-conv-2023")
    ap.add_argument("--rates", type=float, nargs=3, default=[1.0, 4.0, 8.0], help="Poisson requests/s")
    ap.add_argument("--run-s", type=float, default=60.0, help="target sending time per rate")
    ap.add_argument("--max-input-tokens", type=int, default=2048)
    ap.add_argument("--max-output-tokens", type=int, default=512)
    ap.add_argument("--compare-rate-index", type=int, default=1)
    ap.add_argument("--skip-offline", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from tokenjoule.energy import make_meter
    from tokenjoule.serving.arrivals import ArrivalSpec
    from tokenjoule.serving.bench import ServeBenchConfig, _preset_info, build_requests, run_serve_bench
    from tokenjoule.serving.compare import CompareConfig, comparison_metrics, run_offline_requests
    from tokenjoule.serving.launch import ServerProcess, free_port, server_command, write_model_dir
    from tokenjoule.store.db import ResultStore

    t_start = time.time()
    store = ResultStore(out / "serve_evidence.db")
    meter = make_meter("auto")
    idle_w = meter.measure_idle(5.0)
    print(f"idle power {idle_w} W", flush=True)
    configs = [ServeBenchConfig(model=args.model, arrival=ArrivalSpec("poisson", rate_rps=r, seed=0),
                                workload=args.trace, n_requests=max(10, int(r * args.run_s)),
                                max_input_tokens=args.max_input_tokens, max_output_tokens=args.max_output_tokens,
                                meter="auto", idle_s=0.0, warmup_requests=3, seed=0, engine_name="vllm", mode="graphs")
               for r in args.rates]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        info = write_model_dir(args.model, tmp + "/model", "vllm")
        port = free_port()
        cmd = server_command("vllm", info["path"], port, args.model, mode="graphs",
                             extra_args=["--max-model-len", str(args.max_input_tokens + args.max_output_tokens)])
        with ServerProcess(cmd, port, log_path=out / "vllm-server.log", name="vllm server") as srv:
            print(f"server healthy after {time.time() - t_start:.0f} s", flush=True)
            for cfg in configs:
                cfg.url = srv.url
                t0 = time.time()
                rec = run_serve_bench(cfg, store, meter=meter, on_stage=lambda s: print(f"  {s}", flush=True))
                rec.metrics.setdefault("idle_power_w", idle_w)
                records.append(rec)
                m = rec.metrics
                print(f"rate {cfg.arrival.rate_rps}: {m['requests_ok']} ok / {m['requests_failed']} failed, "
                      f"{time.time() - t0:.0f} s, {m['energy_per_request_j']} J/request", flush=True)
    comparison = None
    if not args.skip_offline:
        cfg = configs[args.compare_rate_index]
        online = records[args.compare_rate_index]
        workload = build_requests(cfg, _preset_info(args.model)["max_model_len"])
        ccfg = CompareConfig(trace=args.trace, model=args.model, mode="graphs", n_requests=cfg.n_requests,
                             max_input_tokens=args.max_input_tokens, max_output_tokens=args.max_output_tokens,
                             engine_options={"max_model_len": args.max_input_tokens + args.max_output_tokens})
        offline = run_offline_requests(ccfg, workload.requests, meter, avoid=_preset_info(args.model)["avoid"])
        comparison = comparison_metrics(offline, online.metrics)
        comparison.update(rate_rps=cfg.arrival.rate_rps, n_requests=cfg.n_requests,
                          offline_output_tokens=offline["output_tokens_total"], offline_method=offline["method"])
    meter.close()

    keys = ("requests_ok", "requests_failed", "duration_s", "energy_j", "steady_energy_j", "energy_per_request_j",
            "energy_per_output_token_j", "avg_power_w", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99", "tpot_ms_p50",
            "tpot_ms_p90", "tpot_ms_p99", "throughput_tokens_per_s", "send_lag_ms_p99", "method")
    summary = {"model": args.model, "trace": args.trace, "idle_power_w": idle_w,
               "gpu": (records[0].provenance.get("gpu_names") or [None])[0] if records else None,
               "runs": [{"rate_rps": c.arrival.rate_rps, "n_requests": c.n_requests, "cell": r.id,
                         **{k: r.metrics.get(k) for k in keys}} for c, r in zip(configs, records)],
               "offline_vs_online": comparison, "wall_s": round(time.time() - t_start, 1),
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args)}
    (out / "serve_evidence.json").write_text(json.dumps(summary, indent=1))
    store.close()

    f = lambda v, p=".4g": "n/a" if v is None else format(v, p)  # noqa: E731
    print(f"\n{args.model} on {summary['gpu']}, {args.trace} lengths (clipped to {args.max_input_tokens} in / "
          f"{args.max_output_tokens} out), Poisson arrivals")
    print(f"{'rate/s':>7}{'n':>6}{'ok':>6}{'J/req':>9}{'J/tok':>9}{'W':>7}{'TTFT p50/p90/p99 ms':>24}"
          f"{'TPOT p50/p90/p99 ms':>24}")
    for r in summary["runs"]:
        print(f"{r['rate_rps']:>7g}{r['n_requests']:>6}{r['requests_ok']:>6}{f(r['energy_per_request_j']):>9}"
              f"{f(r['energy_per_output_token_j']):>9}{f(r['avg_power_w'], '.0f'):>7}"
              f"{f(r['ttft_ms_p50'], '.0f') + '/' + f(r['ttft_ms_p90'], '.0f') + '/' + f(r['ttft_ms_p99'], '.0f'):>24}"
              f"{f(r['tpot_ms_p50'], '.1f') + '/' + f(r['tpot_ms_p90'], '.1f') + '/' + f(r['tpot_ms_p99'], '.1f'):>24}")
    if comparison:
        print(f"offline vs online ({comparison['n_requests']} requests, online at {comparison['rate_rps']:g}/s): "
              f"E_offline {f(comparison['offline_energy_j'])} J, E_online {f(comparison['online_energy_j'])} J, "
              f"(E_off - E_on)/E_off = {f(comparison['relative_difference'], '+.1%')}")
    print(f"wall {summary['wall_s']} s")


if __name__ == "__main__":
    main()
