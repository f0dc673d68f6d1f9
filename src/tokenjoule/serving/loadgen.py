"""The load generator: send requests on an arrival schedule (open loop) or from N clients
(closed loop), streaming every response, and record per request the targeted and the actual
send time so the generator's own lag is visible.

One asyncio loop sends and reads everything. Open loop: a dispatcher sleeps until each
request's targeted time and starts its task; responses are read concurrently, so a slow
server never delays later sends (a request is never held back waiting for another). The
connection pool is unbounded so requests never queue inside the HTTP client either.
Closed loop: N workers each send their next request as soon as the previous one finishes;
its targeted time is the moment the worker became free. Failures are recorded in the request
rows, never raised into the loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import httpx

from tokenjoule.serving.arrivals import ArrivalSpec
from tokenjoule.serving.client import RequestRecord, completion_body, stream_completion, synthetic_prompt
from tokenjoule.workloads.request import Request


@dataclass
class LoadConfig:
    url: str  # base URL of the server, e.g. http://127.0.0.1:8000
    model: str  # model name the server expects in the body
    arrival: ArrivalSpec
    dialect: str = "vllm"  # vllm (token ids, exact lengths) | openai (text prompt)
    vocab_size: int = 32000
    seed: int = 0  # prompts
    timeout_s: float = 600.0  # per request, end to end (send to the end of the stream)
    endpoint: str = "/v1/completions"
    avoid: tuple[int, ...] = ()  # token ids prompts never contain (bos/eos/pad)
    # Sent with every request, never stored or printed (see serving.secrets).
    api_key: str | None = field(default=None, repr=False)
    params: dict[str, str] = field(default_factory=dict, repr=False)  # the URL's query string

    @property
    def completions_url(self) -> str:
        return self.url.rstrip("/") + self.endpoint

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass
class LoadResult:
    records: list[RequestRecord]
    duration_s: float  # run start to the end of the last stream
    arrival: dict[str, Any]
    start_wall_s: float = 0.0  # time.time() at the run start
    extra: dict[str, Any] = field(default_factory=dict)


def build_records(requests: Sequence[Request]) -> list[RequestRecord]:
    return [RequestRecord(index=i, input_tokens=r.input_tokens, output_tokens_requested=r.output_tokens)
            for i, r in enumerate(requests)]


def prepare_bodies(config: LoadConfig, requests: Sequence[Request]) -> list[bytes]:
    """Encode every request body. Call this BEFORE the run starts (and before a meter window
    opens): building thousands of long token-id prompts takes seconds, which would otherwise
    delay the first sends and turn the arrival schedule into a catch-up burst."""
    return [json.dumps(completion_body(config.model,
                                       synthetic_prompt(i, r.input_tokens, config.vocab_size, config.seed, config.avoid),
                                       r.output_tokens, config.dialect)).encode()
            for i, r in enumerate(requests)]


async def run_load(config: LoadConfig, requests: Sequence[Request],
                   on_done: Callable[[RequestRecord], None] | None = None,
                   run_start: float | None = None, bodies: Sequence[bytes] | None = None) -> LoadResult:
    """Run the whole load and return one record per request (in request order).

    `run_start` (a `time.perf_counter()` value) lets the caller align the run with a meter
    window opened just before; by default the run starts now. `bodies` from
    `prepare_bodies` (required with `run_start`, so no encoding happens after it)."""
    if run_start is not None and bodies is None:
        raise ValueError("run_load: pass bodies=prepare_bodies(...) together with run_start")
    records = build_records(requests)
    bodies = list(bodies) if bodies is not None else prepare_bodies(config, requests)
    if len(bodies) != len(requests):
        raise ValueError(f"run_load: {len(bodies)} bodies for {len(requests)} requests")
    schedule = config.arrival.schedule(len(requests), [r.arrival_s for r in requests]
                                       if config.arrival.process == "trace" else None)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(config.timeout_s, connect=min(30.0, config.timeout_s))
    url = config.completions_url
    headers, params = config.headers, config.params

    async def one(i: int, start: float) -> None:
        await stream_completion(client, url, bodies[i], records[i], start, deadline_s=config.timeout_s,
                                headers=headers, params=params)
        if on_done is not None:
            on_done(records[i])

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter() if run_start is None else run_start
        start_wall = time.time() - (time.perf_counter() - start)
        if schedule is None:
            await _closed_loop(records, config.arrival.concurrency or 1, start, one)
        else:
            await _open_loop(records, schedule, start, one)
        duration = max((r.done_s for r in records if r.done_s is not None), default=0.0)
    return LoadResult(records=records, duration_s=duration, arrival=config.arrival.to_dict(),
                      start_wall_s=start_wall)


async def _open_loop(records: list[RequestRecord], schedule: list[float], start: float, one) -> None:
    tasks: list[asyncio.Task] = []
    try:
        for i, target_s in enumerate(schedule):
            # Loop timers round to milliseconds and may fire a little early: sleep again
            # until the target has passed, so no request is ever sent before its time.
            while (delay := start + target_s - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            records[i].targeted_send_s = target_s
            tasks.append(asyncio.create_task(one(i, start)))
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()


async def _closed_loop(records: list[RequestRecord], concurrency: int, start: float, one) -> None:
    next_index = iter(range(len(records)))

    async def worker() -> None:
        for i in next_index:  # a shared iterator: each index is taken by exactly one worker
            records[i].targeted_send_s = time.perf_counter() - start
            await one(i, start)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(records)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()


def run_load_sync(config: LoadConfig, requests: Sequence[Request],
                  on_done: Callable[[RequestRecord], None] | None = None,
                  run_start: float | None = None, bodies: Sequence[bytes] | None = None) -> LoadResult:
    """Run the load on uvloop where installed (vLLM depends on it; it cuts the loop's own CPU
    per event by about a fifth, which lowers send lag), else on the standard asyncio loop.
    The loop used is recorded in `LoadResult.extra["event_loop"]`."""
    coro = run_load(config, requests, on_done=on_done, run_start=run_start, bodies=bodies)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
        result.extra["event_loop"] = "asyncio"
        return result
    result = uvloop.run(coro)
    result.extra["event_loop"] = f"uvloop {uvloop.__version__}"
    return result


def max_in_flight(records: Sequence[RequestRecord]) -> int:
    """The largest number of requests open at once (from actual send to end of stream)."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.actual_send_s is not None and r.done_s is not None:
            events.append((r.actual_send_s, 1))
            events.append((r.done_s, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at equal times
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak
