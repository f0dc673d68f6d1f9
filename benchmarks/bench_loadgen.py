"""Load-generator send lag: Poisson 200 requests/s for 10 s against the local mock server.

The mock server runs in its own process (as a real server would), on loopback, streaming
16 tokens per request 2 ms apart. Prints p50/p99/max send lag (actual - targeted send time)
and the achieved rate. Target: p99 under 5 ms on a 2-core machine.

    .venv/bin/python benchmarks/bench_loadgen.py [--rate 200] [--duration-s 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tokenjoule.serving.arrivals import ArrivalSpec  # noqa: E402
from tokenjoule.serving.loadgen import LoadConfig, run_load_sync  # noqa: E402
from tokenjoule.serving.online_metrics import summarize  # noqa: E402
from tokenjoule.workloads.request import Request  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--input-tokens", type=int, default=128)
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--token-delay-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()

    server = subprocess.Popen([sys.executable, str(ROOT / "tests/serving/mock_server.py"),
                               "--token-delay-ms", str(args.token_delay_ms)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        n = int(args.rate * args.duration_s)
        cfg = LoadConfig(url=f"http://127.0.0.1:{port}", model="mock",
                         arrival=ArrivalSpec("poisson", rate_rps=args.rate, seed=args.seed), vocab_size=32000)
        requests = [Request(args.input_tokens, args.output_tokens)] * n
        t0 = time.perf_counter()
        result = run_load_sync(cfg, requests)
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(10)
    m = summarize(result.records, result.duration_s)
    last_send = max(r.actual_send_s for r in result.records)
    summary = {
        "rate_rps_target": args.rate, "requests": n, "requests_ok": m["requests_ok"],
        "requests_failed": m["requests_failed"], "achieved_send_rate_rps": (n - 1) / last_send,
        "send_lag_ms_p50": m["send_lag_ms_p50"], "send_lag_ms_p99": m["send_lag_ms_p99"],
        "send_lag_ms_max": m["send_lag_ms_max"], "ttft_ms_p50": m["ttft_ms_p50"], "wall_s": wall,
        "event_loop": result.extra.get("event_loop"), "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0], "python": platform.python_version(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"event loop {summary['event_loop']}, load average {summary['load_average_1m']:.2f} "
          f"on {summary['cpu_count']} CPUs")
    print(f"{n} requests at {args.rate:g}/s: sent at {summary['achieved_send_rate_rps']:.1f}/s, "
          f"ok {summary['requests_ok']}, failed {summary['requests_failed']}")
    print(f"send lag p50 {summary['send_lag_ms_p50']:.3f} ms, p99 {summary['send_lag_ms_p99']:.3f} ms, "
          f"max {summary['send_lag_ms_max']:.3f} ms  (target p99 < 5 ms: "
          f"{'met' if summary['send_lag_ms_p99'] < 5 else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
