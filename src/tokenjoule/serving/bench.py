"""One online benchmark (`tokenjoule serve-bench`): build the requests, start or attach to a
server, measure idle power, warm the server up, then send the load inside one meter window and
store the run as an `online` cell.

Order matters for honest numbers: idle power is measured before the server starts (a loaded
model already draws more than idle); warm-up requests run before the window and are stored
under their own name; the meter window spans exactly the load (first send to last stream end).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tokenjoule.errors import CellFailure, TokenjouleError
from tokenjoule.limits import MAX_TOKENS
from tokenjoule.serving.arrivals import ArrivalSpec
from tokenjoule.serving.client import RequestRecord
from tokenjoule.serving.loadgen import LoadConfig, LoadResult, prepare_bodies, run_load_sync
from tokenjoule.serving.online_metrics import summarize
from tokenjoule.records import CellRecord, base_provenance, downsample, safe_provenance
from tokenjoule.serving.secrets import ServerURL, redact_args, scrub, secret_values, split_url
from tokenjoule.spec import spec_hash  # noqa: F401  (one hasher; re-exported for callers)
from tokenjoule.store.db import ResultStore
from tokenjoule.workloads.request import Request, Workload


@dataclass
class ServeBenchConfig:
    model: str  # preset or HF id (for --url: what the server serves; used for vocab size + labels)
    arrival: ArrivalSpec
    launch: str | None = None  # vllm | transformers | None (then url)
    url: str | None = None
    mode: str = "graphs"  # vllm: graphs | eager
    workload: str | None = None  # trace name/path or task:NAME; None = fixed lengths
    input_tokens: int | None = None  # fixed lengths (or the cap for trace lengths, see clip)
    output_tokens: int | None = None
    n_requests: int = 100
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_model_len: int | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    meter: str = "auto"
    idle_s: float = 5.0
    warmup_requests: int = 2
    seed: int = 0
    dialect: str | None = None  # default: openai for transformers, vllm otherwise
    served_model: str | None = None  # name sent in the body (--url); default: model
    vocab_size: int | None = None  # --url with an HF id
    device: str = "auto"  # transformers serve device
    server_args: list[str] = field(default_factory=list)
    timeout_s: float = 600.0
    startup_timeout_s: float = 900.0
    log_dir: str | None = None
    engine_name: str | None = None  # --url: the engine behind it, when known (recorded in the spec)
    trace_options: dict[str, Any] = field(default_factory=dict)  # load_trace kwargs: fmt, columns, time_unit
    api_key: str | None = field(default=None, repr=False)  # bearer token; sent, never stored
    tensor_parallel: int = 1  # vLLM --tensor-parallel-size (launched) / what the server uses (--url)
    pipeline_parallel: int = 1  # vLLM --pipeline-parallel-size

    @property
    def gpus(self) -> int:
        """GPUs the server runs on: the first tp x pp visible ones (vLLM's placement)."""
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def engine(self) -> str:
        return self.launch or self.engine_name or "url"

    @property
    def resolved_dialect(self) -> str:
        return self.dialect or ("openai" if self.launch == "transformers" else "vllm")


def check_bounds(cfg: ServeBenchConfig) -> None:
    """Every numeric option within the documented maxima (tokenjoule.limits), before any work."""
    from tokenjoule.limits import (MAX_IDLE_S, MAX_REQUESTS, MAX_SLO_MS, MAX_TIMEOUT_S, MAX_TOKENS, MAX_WARMUP,
                                   check_range)

    for name, value in (("--input-tokens", cfg.input_tokens), ("--output-tokens", cfg.output_tokens),
                        ("--max-input-tokens", cfg.max_input_tokens),
                        ("--max-output-tokens", cfg.max_output_tokens), ("--max-model-len", cfg.max_model_len)):
        check_range(name, value, 1 if name != "--max-model-len" else 2, MAX_TOKENS)
    check_range("--n-requests", cfg.n_requests, 1, MAX_REQUESTS)
    check_range("--warmup-requests", cfg.warmup_requests, 0, MAX_WARMUP)
    check_range("--idle-s", cfg.idle_s, 0, MAX_IDLE_S)
    check_range("--timeout-s", cfg.timeout_s, 1e-3, MAX_TIMEOUT_S)
    check_range("--startup-timeout-s", cfg.startup_timeout_s, 1e-3, MAX_TIMEOUT_S)
    check_range("--slo-ttft-ms", cfg.slo_ttft_ms, 0, MAX_SLO_MS)
    check_range("--slo-tpot-ms", cfg.slo_tpot_ms, 0, MAX_SLO_MS)
    check_range("--vocab-size", cfg.vocab_size, 2, 2**31 - 1)
    from tokenjoule.limits import MAX_PARALLEL

    check_range("--tp", cfg.tensor_parallel, 1, MAX_PARALLEL)
    check_range("--pp", cfg.pipeline_parallel, 1, MAX_PARALLEL)


# -- requests ---------------------------------------------------------------------------------
def build_requests(cfg: ServeBenchConfig, model_max_len: int | None = None) -> Workload:
    """The run's requests: a trace / task profile (first n, lengths clipped) or fixed lengths."""
    if cfg.n_requests < 1:
        raise TokenjouleError(f"--n-requests must be >= 1, got {cfg.n_requests}")
    if cfg.workload:
        from tokenjoule.workloads.traces import resolve_workload

        wl = resolve_workload(cfg.workload, n=cfg.n_requests, seed=cfg.seed, **cfg.trace_options)
        reqs = list(wl.requests[: cfg.n_requests])
        provenance = {"source": cfg.workload, "trace_provenance": wl.provenance, "first_n": len(reqs)}
        if cfg.input_tokens or cfg.output_tokens:
            raise TokenjouleError("give either --trace/--task (lengths from the workload) or "
                                  "--input-tokens/--output-tokens (fixed lengths), not both")
    else:
        if not cfg.input_tokens or not cfg.output_tokens:
            raise TokenjouleError("give --trace/--task, or both --input-tokens and --output-tokens")
        reqs = [Request(cfg.input_tokens, cfg.output_tokens) for _ in range(cfg.n_requests)]
        provenance = {"source": "fixed", "input_tokens": cfg.input_tokens, "output_tokens": cfg.output_tokens}
    if cfg.arrival.process == "trace" and not all(r.arrival_s is not None for r in reqs):
        raise TokenjouleError("--arrival trace needs a workload with timestamps (a trace such as azure-conv-2023)")
    clipped, out = 0, []
    max_len = cfg.max_model_len or model_max_len
    for r in reqs:
        i, o = r.input_tokens, r.output_tokens
        if cfg.max_output_tokens:
            o = min(o, cfg.max_output_tokens)
        if cfg.max_input_tokens:
            i = min(i, cfg.max_input_tokens)
        if max_len:
            o = min(o, max_len - 1)
            i = min(i, max_len - o)
        clipped += (i, o) != (r.input_tokens, r.output_tokens)
        if max(i, o) > MAX_TOKENS:
            raise TokenjouleError(f"request {len(out)} asks for {i:,} input / {o:,} output tokens; the limit is "
                                  f"{MAX_TOKENS:,}: clip with --max-input-tokens / --max-output-tokens / --max-model-len")
        out.append(Request(max(1, i), max(1, o), r.arrival_s))
    provenance.update(clipped_requests=clipped, max_input_tokens=cfg.max_input_tokens,
                      max_output_tokens=cfg.max_output_tokens, max_model_len=max_len)
    return Workload(name=cfg.workload or "fixed", requests=out, provenance=provenance)


def online_spec(cfg: ServeBenchConfig, workload: Workload) -> dict[str, Any]:
    """The stored spec of an online run (everything that changes what is measured)."""
    return {
        "model": cfg.model, "engine": cfg.engine, "mode": cfg.mode if cfg.engine == "vllm" else None,
        "arrival": cfg.arrival.to_dict(), "workload": workload.provenance.get("source"),
        "n_requests": len(workload), "input_tokens_total": sum(r.input_tokens for r in workload),
        "output_tokens_requested_total": sum(r.output_tokens for r in workload),
        "max_input_tokens": cfg.max_input_tokens, "max_output_tokens": cfg.max_output_tokens,
        "slo_ttft_ms": cfg.slo_ttft_ms, "slo_tpot_ms": cfg.slo_tpot_ms, "seed": cfg.seed,
        "dialect": cfg.resolved_dialect, "warmup_requests": cfg.warmup_requests,
        "server_args": redact_args(list(cfg.server_args)),  # the server gets them; the store never does
        # Only when above 1, so the resume keys of single-GPU runs stored before stay the same.
        **({"tensor_parallel": cfg.tensor_parallel} if cfg.tensor_parallel > 1 else {}),
        **({"pipeline_parallel": cfg.pipeline_parallel} if cfg.pipeline_parallel > 1 else {}),
    }


def _preset_info(model: str) -> dict[str, Any]:
    from tokenjoule.models.registry import resolve_model
    from tokenjoule.engines.tokens import special_ids_from_config

    src = resolve_model(model)
    if not src.is_preset:
        return {"vocab_size": None, "max_model_len": None, "avoid": ()}
    cfg = src.config or {}
    return {"vocab_size": int(cfg["vocab_size"]), "max_model_len": cfg.get("max_position_embeddings"),
            "avoid": tuple(sorted(special_ids_from_config(cfg)))}


# -- the run ----------------------------------------------------------------------------------
def run_serve_bench(cfg: ServeBenchConfig, store: ResultStore, meter: Any | None = None,
                    on_request: Callable[[RequestRecord], None] | None = None,
                    on_stage: Callable[[str], None] | None = None) -> CellRecord:
    """Run and store one online benchmark; a failed run is stored, then raised as CellFailure."""
    if (cfg.launch is None) == (cfg.url is None):
        raise TokenjouleError("give exactly one of --launch (vllm|transformers) or --url")
    check_bounds(cfg)
    target = split_url(cfg.url) if cfg.url else None
    api_key = cfg.api_key or (target.token if target else None)
    secrets = secret_values(list(cfg.server_args), api_key, target.token if target else None,
                            *(target.params.values() if target else ()))
    stage = on_stage or (lambda s: None)
    info = _preset_info(cfg.model)
    vocab = cfg.vocab_size or info["vocab_size"]
    if vocab is None:
        raise TokenjouleError(f"{cfg.model} is not a preset: give --vocab-size so prompts use valid token ids")
    workload = build_requests(cfg, info["max_model_len"])
    spec = online_spec(cfg, workload)
    own_meter = meter is None
    if meter is None:
        from tokenjoule.energy import make_meter

        # Several GPUs: exactly the server's (the first tp x pp visible); one: every visible GPU, as before.
        meter = make_meter(cfg.meter, devices=list(range(cfg.gpus)) if cfg.gpus > 1 else None)
    provenance: dict[str, Any] = {**base_provenance()}
    try:
        stage("measuring idle power")
        idle_w = meter.measure_idle(cfg.idle_s) if cfg.idle_s > 0 else None
        provenance.update(safe_provenance(meter.provenance))
        with _server(cfg, stage, target) as (url, served_name, server_info):
            provenance.update(server_info)
            provenance["server_auth"] = "bearer token (not stored)" if api_key else None
            load_cfg = LoadConfig(url=url, model=served_name, arrival=cfg.arrival, dialect=cfg.resolved_dialect,
                                  vocab_size=vocab, seed=cfg.seed, timeout_s=cfg.timeout_s, avoid=info["avoid"],
                                  api_key=api_key, params=dict(target.params) if target else {})
            warm = _warmup(load_cfg, workload.requests, cfg.warmup_requests, stage)
            bodies = prepare_bodies(load_cfg, workload.requests)  # before the window: see prepare_bodies
            stage("sending load")
            with meter.window() as window:
                # The timeline starts when the window opens; the run starts a moment later.
                opened = time.perf_counter()
                run_start = time.perf_counter()
                result = run_load_sync(load_cfg, workload.requests, on_done=on_request, run_start=run_start,
                                       bodies=bodies)
            measurement = window.result
    except KeyboardInterrupt:
        raise
    except TokenjouleError as exc:
        record = CellRecord.failed(spec, scrub(" ".join(str(exc).split()), secrets), provenance, kind="online")
        store.add(record)
        raise CellFailure(f"online run failed ({record.error}); stored as failed cell #{record.id} in {store.path}") from None
    finally:
        if own_meter:
            meter.close()
    metrics = summarize(result.records, result.duration_s, measurement, cfg.slo_ttft_ms, cfg.slo_tpot_ms,
                        meter_offset_s=run_start - opened)
    if metrics.get("idle_power_w") is None:
        metrics["idle_power_w"] = idle_w
    metrics["warmup_requests_ok"] = sum(r.ok for r in warm)
    mdict = _measurement_dict(measurement)
    mdict["requests"] = [r.to_dict() for r in result.records]
    mdict["warmup_requests"] = [r.to_dict() for r in warm]
    mdict["meter_window_lead_s"] = run_start - opened
    mdict["idle"] = {"duration_s": cfg.idle_s, "power_w": idle_w}
    mdict["workload"] = workload.provenance
    mdict["run_start_wall_s"] = result.start_wall_s
    mdict["event_loop"] = result.extra.get("event_loop")
    # A run in which no request succeeded measured nothing about serving: keep every row for
    # diagnosis, but as a failed cell (it must never rank as a cheap configuration).
    failed = not metrics.get("requests_ok")
    for r in list(result.records) + list(warm):
        r.error = scrub(r.error, secrets)
    errors = sorted({r.error for r in result.records if r.error})
    record = CellRecord.online(spec, metrics, mdict, provenance,
                               error=("no request succeeded: " + "; ".join(errors[:3])) if failed else None)
    store.add(record)
    if failed:
        raise CellFailure(f"online run failed: {record.error}; stored as failed cell #{record.id} in {store.path}")
    return record


def _measurement_dict(measurement: Any) -> dict[str, Any]:
    data = measurement.to_dict(with_samples=True)
    full = len(data["samples"])
    data["samples"] = downsample(data["samples"])
    data["samples_stored_of"] = full  # the timeline is thinned for storage, and says so
    return data


def _warmup(load_cfg: LoadConfig, requests: Sequence[Request], n: int, stage) -> list[RequestRecord]:
    """A few requests, one at a time, before the window (first-request costs stay out of it)."""
    if n <= 0:
        return []
    stage("warming up the server")
    warm_cfg = LoadConfig(**{**load_cfg.__dict__, "arrival": ArrivalSpec("closed", concurrency=1),
                             "seed": load_cfg.seed + 1_000_000})
    picks = [requests[i % len(requests)] for i in range(n)]
    result: LoadResult = run_load_sync(warm_cfg, [Request(r.input_tokens, r.output_tokens) for r in picks])
    return result.records


class _server:
    """Context manager yielding (base url, model name for the body, provenance)."""

    def __init__(self, cfg: ServeBenchConfig, stage, target: ServerURL | None = None):
        self.cfg, self.stage, self.target = cfg, stage, target
        self.proc = None
        self.tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self):
        cfg = self.cfg
        if cfg.url:
            target = self.target or split_url(cfg.url)
            # Only the bare base URL is ever stored: no credentials, no query string.
            return target.base, cfg.served_model or cfg.model, {"server": "url", "server_url": target.base}
        from tokenjoule.serving.launch import ServerProcess, free_port, server_command, write_model_dir

        self.tmp = tempfile.TemporaryDirectory(prefix="tokenjoule-serve-")
        try:
            self.stage(f"preparing {cfg.model} for {cfg.launch}")
            info = write_model_dir(cfg.model, self.tmp.name + "/model", cfg.launch, seed=cfg.seed)
            port = free_port()
            served = info["path"] if cfg.launch == "transformers" else cfg.model
            cmd = server_command(cfg.launch, info["path"], port, served, mode=cfg.mode, device=cfg.device,
                                 extra_args=cfg.server_args, dummy_weights=info["vocab_size"] is not None,
                                 tensor_parallel=cfg.tensor_parallel, pipeline_parallel=cfg.pipeline_parallel)
            log_dir = cfg.log_dir or self.tmp.name
            self.proc = ServerProcess(cmd, port, startup_timeout_s=cfg.startup_timeout_s,
                                      log_path=f"{log_dir}/{cfg.launch}-server.log", name=f"{cfg.launch} server")
            self.stage(f"starting {cfg.launch} server")
            self.proc.__enter__()
        except BaseException:
            self.tmp.cleanup()
            raise
        return self.proc.url, served, {"server": cfg.launch, "server_version": _version(cfg.launch),
                                       "server_command": redact_args(cmd)}

    def __exit__(self, *exc):
        try:
            if self.proc is not None:
                self.stage(f"stopping {self.cfg.launch} server")
                self.proc.stop()
        finally:
            if self.tmp is not None:
                self.tmp.cleanup()


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        try:
            module = __import__(package)
            return getattr(module, "__version__", None)
        except ImportError:
            return None
