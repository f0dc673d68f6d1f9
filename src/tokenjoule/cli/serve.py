"""`tokenjoule serve-bench` (an online benchmark against a launched or running server) and
`tokenjoule compare-serving` (offline vs online on the same requests).

Only light packages at import time; the serving modules (httpx, numpy) and anything heavy are
imported inside the commands.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tokenjoule.cli.options import (TraceReading, columns_option, db_option, one_trace, resolve_db,
                                    time_unit_option, trace_format_option)

ONLINE_ROWS: list[tuple[str, str, str]] = [
    ("requests_ok", "requests ok", "{}"),
    ("requests_failed", "requests failed", "{}"),
    ("duration_s", "run duration (s)", "{:.4g}"),
    ("energy_j", "energy, whole run (J)", "{:.4g}"),
    ("steady_energy_j", "energy, steady-state window (J)", "{:.4g}"),
    ("steady_duration_s", "steady-state window (s)", "{:.4g}"),
    ("energy_per_request_j", "energy per request (J)", "{:.4g}"),
    ("energy_per_output_token_j", "energy per output token (J)", "{:.4g}"),
    ("avg_power_w", "average power (W)", "{:.4g}"),
    ("idle_power_w", "idle power (W)", "{:.4g}"),
    ("throughput_tokens_per_s", "throughput (output tokens/s)", "{:.4g}"),
    ("goodput_rps", "goodput under SLOs (req/s)", "{:.4g}"),
    ("ttft_ms_p50", "TTFT p50 (ms)", "{:.4g}"),
    ("ttft_ms_p99", "TTFT p99 (ms)", "{:.4g}"),
    ("tpot_ms_p50", "TPOT p50 (ms)", "{:.4g}"),
    ("tpot_ms_p99", "TPOT p99 (ms)", "{:.4g}"),
    ("itl_ms_p99", "ITL p99 (ms)", "{:.4g}"),
    ("e2e_ms_p50", "end-to-end p50 (ms)", "{:.4g}"),
    ("send_lag_ms_p99", "client send lag p99 (ms)", "{:.4g}"),
    ("method", "energy method", "{}"),
]


def _fmt(value: Any, fmt: str) -> str:
    from tokenjoule.cli.measure import format_value

    return format_value(value, fmt)


def _arrival(arrival: str, rate: Optional[float], burstiness: float, concurrency: Optional[int], speedup: float,
             seed: int):
    from tokenjoule.serving.arrivals import ArrivalSpec

    return ArrivalSpec(process=arrival, rate_rps=rate, burstiness=burstiness, concurrency=concurrency,
                       speedup=speedup, seed=seed)


def _workload(trace: Optional[list[str]], task: Optional[str]) -> Optional[str]:
    """--trace NAME (one; task:NAME included) or --task NAME, its alias for task profiles."""
    from tokenjoule.errors import TokenjouleError

    name = one_trace(trace, "serve-bench", required=False)
    if name and task:
        raise TokenjouleError("give --trace or --task, not both (--task NAME is --trace task:NAME)")
    return name or (f"task:{task}" if task else None)


def _trace_options(name: Optional[str], reading: TraceReading) -> dict:
    """load_trace keyword arguments for a trace file; none for task profiles and fixed lengths."""
    from tokenjoule.errors import TokenjouleError

    if not name or name.startswith("task:"):
        if reading.any_file_option:
            raise TokenjouleError("--trace-format/--columns/--time-unit apply to a trace file (--trace PATH)")
        return {}
    return reading.kwargs()


def register(app: typer.Typer) -> None:
    @app.command("serve-bench")
    def serve_bench(
        ctx: typer.Context,
        model: str = typer.Option(..., "--model", help="Preset (random weights) or Hugging Face id."),
        launch: Optional[str] = typer.Option(None, "--launch", help="Start a server: vllm | transformers."),
        url: Optional[str] = typer.Option(None, "--url", help="Attach to a running OpenAI-compatible server."),
        mode: str = typer.Option("graphs", "--mode", help="vLLM: graphs (CUDA graphs) | eager."),
        arrival: str = typer.Option("poisson", "--arrival", help="poisson | gamma | constant | closed | trace."),
        rate: Optional[float] = typer.Option(None, "--rate", help="Requests per second (poisson, gamma, constant)."),
        burstiness: float = typer.Option(1.0, "--burstiness", help="Gamma shape (1 = Poisson, < 1 burstier)."),
        concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Closed loop: clients in flight."),
        speedup: float = typer.Option(1.0, "--speedup", help="Trace replay: divide the trace's gaps by this."),
        trace: Optional[list[str]] = typer.Option(None, "--trace", help="Request lengths (and times) from a trace: "
                                                  "name, file or task:NAME."),
        task: Optional[str] = typer.Option(None, "--task", help="Request lengths from a task profile "
                                           "(the same as --trace task:NAME)."),
        trace_format: Optional[str] = trace_format_option(),
        columns: Optional[str] = columns_option(),
        time_unit: Optional[str] = time_unit_option(),
        input_tokens: Optional[int] = typer.Option(None, "--input-tokens", min=1, help="Fixed input length."),
        output_tokens: Optional[int] = typer.Option(None, "--output-tokens", min=1, help="Fixed output length."),
        n_requests: int = typer.Option(100, "--n-requests", min=1, help="Requests to send (first N of a trace)."),
        max_input_tokens: Optional[int] = typer.Option(None, "--max-input-tokens", min=1, help="Clip input lengths."),
        max_output_tokens: Optional[int] = typer.Option(None, "--max-output-tokens", min=1, help="Clip output lengths."),
        max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="Clip input+output to this."),
        slo_ttft_ms: Optional[float] = typer.Option(None, "--slo-ttft-ms", help="Goodput SLO on time to first token."),
        slo_tpot_ms: Optional[float] = typer.Option(None, "--slo-tpot-ms", help="Goodput SLO on time per output token."),
        meter: str = typer.Option("auto", "--meter", help="auto | nvml | estimate | simulated."),
        idle_s: float = typer.Option(5.0, "--idle-s", min=0.0, help="Seconds of idle power before the server starts."),
        warmup_requests: int = typer.Option(2, "--warmup-requests", help="Unmeasured requests sent first."),
        seed: int = typer.Option(0, "--seed", help="Seed of arrivals and prompts."),
        dialect: Optional[str] = typer.Option(None, "--dialect", help="vllm (token ids, exact lengths) | openai."),
        served_model: Optional[str] = typer.Option(None, "--served-model", help="--url: model name to send."),
        vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="--url with an HF id: its vocabulary."),
        device: str = typer.Option("auto", "--device", help="transformers serve: auto | cpu | cuda."),
        server_arg: list[str] = typer.Option([], "--server-arg", help="Extra argument for the server (repeat)."),
        tensor_parallel: int = typer.Option(1, "--tensor-parallel", "--tp",
                                            help="vLLM tensor-parallel GPUs (--url: what the server uses); "
                                                 "the meter reads the first tp x pp GPUs."),
        pipeline_parallel: int = typer.Option(1, "--pipeline-parallel", "--pp",
                                              help="vLLM pipeline-parallel stages."),
        timeout_s: float = typer.Option(600.0, "--timeout-s", help="Per-request deadline, send to end of stream (s)."),
        api_key: Optional[str] = typer.Option(None, "--api-key", show_default=False,
                                              help="Bearer token for the server (default: $OPENAI_API_KEY); "
                                                   "sent, never stored."),
        log_dir: Optional[str] = typer.Option(None, "--log-dir", help="Keep the server log here."),
        db: Optional[str] = db_option(),
        as_json: bool = typer.Option(False, "--json", help="Print the stored metrics as JSON."),
    ) -> None:
        """Send requests that arrive like real traffic to a server; measure latency and energy."""
        from tokenjoule.serving.bench import ServeBenchConfig, run_serve_bench
        from tokenjoule.store.db import ResultStore

        db = resolve_db(ctx, db).path
        workload = _workload(trace, task)
        trace_options = _trace_options(workload, TraceReading.from_cli(trace_format, columns, time_unit))

        cfg = ServeBenchConfig(
            model=model, arrival=_arrival(arrival, rate, burstiness, concurrency, speedup, seed), launch=launch,
            url=url, mode=mode, workload=workload, input_tokens=input_tokens,
            output_tokens=output_tokens, n_requests=n_requests, max_input_tokens=max_input_tokens,
            max_output_tokens=max_output_tokens, max_model_len=max_model_len, slo_ttft_ms=slo_ttft_ms,
            slo_tpot_ms=slo_tpot_ms, meter=meter, idle_s=idle_s, warmup_requests=warmup_requests, seed=seed,
            dialect=dialect, served_model=served_model, vocab_size=vocab_size, device=device,
            server_args=list(server_arg), timeout_s=timeout_s, log_dir=log_dir, trace_options=trace_options,
            tensor_parallel=tensor_parallel, pipeline_parallel=pipeline_parallel)
        from tokenjoule.serving.secrets import api_key_from

        cfg.api_key = api_key_from(api_key) if url else api_key
        _validate(cfg)
        _preflight(cfg)
        console = Console(stderr=True)
        with ResultStore(db) as store, _Progress(console, n_requests) as progress:
            record = run_serve_bench(cfg, store, on_request=progress.request_done, on_stage=progress.stage)
        if as_json:
            typer.echo(json.dumps({"id": record.id, "spec": record.spec, "metrics": record.metrics}, indent=1))
            return
        table = Table(title=f"{model} online ({cfg.engine}, {cfg.arrival.to_dict()}) - cell #{record.id}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, label, fmt in ONLINE_ROWS:
            table.add_row(label, _fmt(record.metrics.get(key), fmt))
        Console().print(table)
        reason = record.metrics.get("steady_energy_reason")
        if reason:
            Console().print(f"steady-state energy: n/a ({reason})")

    @app.command("compare-serving")
    def compare_serving(
        ctx: typer.Context,
        trace: list[str] = typer.Option(..., "--trace", help="Requests (lengths) from this trace or task:NAME."),
        model: str = typer.Option(..., "--model", help="Preset (random weights) or Hugging Face id."),
        engine: str = typer.Option("vllm", "--engine", help="Serving engine (vllm)."),
        mode: str = typer.Option("graphs", "--mode", help="graphs | eager."),
        arrival: str = typer.Option("poisson", "--arrival", help="Online arrivals: poisson | gamma | constant | trace."),
        rate: Optional[float] = typer.Option(4.0, "--rate", help="Online requests per second."),
        burstiness: float = typer.Option(1.0, "--burstiness"),
        speedup: float = typer.Option(1.0, "--speedup"),
        n_requests: int = typer.Option(200, "--n-requests", min=1, help="First N requests of the trace."),
        max_input_tokens: Optional[int] = typer.Option(None, "--max-input-tokens", min=1),
        max_output_tokens: Optional[int] = typer.Option(None, "--max-output-tokens", min=1),
        meter: str = typer.Option("auto", "--meter"),
        idle_s: float = typer.Option(5.0, "--idle-s", min=0.0),
        seed: int = typer.Option(0, "--seed"),
        db: Optional[str] = db_option(),
        as_json: bool = typer.Option(False, "--json"),
        trace_format: Optional[str] = trace_format_option(),
        columns: Optional[str] = columns_option(),
        time_unit: Optional[str] = time_unit_option(),
    ) -> None:
        """The same requests offline (all at once) and online (at a rate): (E_offline - E_online) / E_offline."""
        from tokenjoule.errors import TokenjouleError
        from tokenjoule.serving.compare import CompareConfig, run_compare
        from tokenjoule.store.db import ResultStore

        db = resolve_db(ctx, db).path
        trace = one_trace(trace, "compare-serving")
        trace_options = _trace_options(trace, TraceReading.from_cli(trace_format, columns, time_unit))
        if arrival == "closed":
            raise TokenjouleError("compare-serving needs an open-loop arrival: poisson, gamma, constant or trace")
        cfg = CompareConfig(trace=trace, model=model, engine=engine, mode=mode,
                            arrival=_arrival(arrival, rate, burstiness, None, speedup, seed), n_requests=n_requests,
                            max_input_tokens=max_input_tokens, max_output_tokens=max_output_tokens, meter=meter,
                            idle_s=idle_s, seed=seed, trace_options=trace_options)
        console = Console(stderr=True)
        with ResultStore(db) as store:
            result = run_compare(cfg, store, on_stage=lambda s: console.print(f"[dim]{s}[/dim]"))
        if as_json:
            typer.echo(json.dumps(result, indent=1))
            return
        table = Table(title=f"{model} offline vs online, {n_requests} requests of {trace}")
        for col in ("", "offline", "online"):
            table.add_column(col, justify="right" if col else "left")
        for key, label in (("energy_j", "energy (J)"), ("duration_s", "duration (s)"),
                           ("energy_per_request_j", "J per request"),
                           ("energy_per_output_token_j", "J per output token")):
            table.add_row(label, _fmt(result.get(f"offline_{key}"), "{:.4g}"), _fmt(result.get(f"online_{key}"), "{:.4g}"))
        Console().print(table)
        Console().print(f"(E_offline - E_online) / E_offline = {_fmt(result['relative_difference'], '{:+.1%}')}"
                        " (negative: online used more energy)")


def _preflight(cfg) -> None:
    """`--launch transformers` loads the model in this tool's reach: check device, context and
    memory (batch 1: the server batches what fits) before idle power is measured or a server starts."""
    if cfg.launch == "vllm" and cfg.gpus > 1:
        from tokenjoule.models.preflight import check_gpu_count
        from tokenjoule.spec import RunSpec

        check_gpu_count(RunSpec(model=cfg.model, engine="vllm", tensor_parallel=cfg.tensor_parallel,
                                pipeline_parallel=cfg.pipeline_parallel, device="cuda"))
    if cfg.launch != "transformers":
        return
    from tokenjoule.models.preflight import preflight
    from tokenjoule.spec import RunSpec

    lengths = (cfg.input_tokens or 1, cfg.output_tokens or 1)
    if cfg.max_model_len:
        lengths = (1, 1)  # lengths are clipped to the model length the user gave
    preflight(RunSpec(model=cfg.model, engine="hf", batch_size=1, input_tokens=lengths[0],
                      output_tokens=lengths[1], device=cfg.device))


def _validate(cfg) -> None:
    from tokenjoule.errors import TokenjouleError, UnknownNameError
    from tokenjoule.serving.client import DIALECTS
    from tokenjoule.serving.launch import LAUNCHERS

    if (cfg.launch is None) == (cfg.url is None):
        raise TokenjouleError("give exactly one of --launch (vllm|transformers) or --url URL")
    if cfg.launch is not None and cfg.launch not in LAUNCHERS:
        raise UnknownNameError("launcher", cfg.launch, LAUNCHERS)
    if cfg.dialect is not None and cfg.dialect not in DIALECTS:
        raise UnknownNameError("dialect", cfg.dialect, DIALECTS)
    if cfg.launch == "transformers" and cfg.gpus > 1:
        raise TokenjouleError("--launch transformers serves on one device; use --launch vllm for --tp/--pp above 1")
    if cfg.launch == "vllm" and cfg.mode not in ("graphs", "eager"):
        raise UnknownNameError("mode for vllm", cfg.mode, ("graphs", "eager"))
    if cfg.launch == "vllm":
        # Checked before the store is opened: a missing install is a usage error, not a cell.
        from tokenjoule.engines.vllm_offline import INSTALL, vllm_available
        from tokenjoule.errors import MissingDependencyError

        if not vllm_available():
            raise MissingDependencyError("vLLM", INSTALL)
    if cfg.url is not None:
        from tokenjoule.serving.secrets import redact_url, split_url

        if not cfg.url.startswith(("http://", "https://")):
            raise TokenjouleError(f"--url must start with http:// or https://, got {redact_url(cfg.url)!r}")
        split_url(cfg.url)
    from tokenjoule.serving.bench import check_bounds

    check_bounds(cfg)


class _Progress:
    """A rich progress bar of finished requests, with the current stage as its label."""

    def __init__(self, console: Console, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=total)
        self.failed = 0

    def stage(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def request_done(self, record) -> None:
        self.failed += not record.ok
        desc = "sending load" + (f" ({self.failed} failed)" if self.failed else "")
        self.progress.update(self.task, advance=1, description=desc)

    def __enter__(self) -> "_Progress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)
