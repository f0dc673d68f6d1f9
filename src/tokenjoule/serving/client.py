"""One streaming request to an OpenAI-compatible `/v1/completions` endpoint (server-sent events).

Timing rules (all from `time.perf_counter`, the same clock as the load generator):
- `actual_send_s`: just before the request is handed to the HTTP client.
- a *token event* is an SSE chunk that carries generated text or token ids (or, for servers
  that do not detokenise, a chunk with a choice that is not the finishing marker).
- `ttft_s`: first token event - actual send; `itl_s`: gaps between successive token events;
- `e2e_s`: last token event - actual send, so `e2e_s - ttft_s == sum(itl_s)` exactly;
  `done_s` is when the stream closed (after the usage chunk), kept separately.
- Output token counts come from the server's `usage`, never re-tokenised; where a server sends
  no usage the count of token events is used and `output_tokens_source` says so.
Errors (HTTP status, broken stream, timeout) are recorded in `error`, never raised. A
response that contradicts the request (usage that is not a count, negative, or more output
tokens than `max_tokens`) is a failed request with the reason, never an ok one.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from tokenjoule.limits import MAX_ERROR_BODY_BYTES, MAX_SSE_LINE_BYTES, MAX_STREAM_BYTES, MAX_TOKENS

DIALECTS = ("vllm", "openai")


@dataclass
class RequestRecord:
    index: int
    input_tokens: int  # requested prompt length
    output_tokens_requested: int
    targeted_send_s: float | None = None  # from the run start; None before it was scheduled
    actual_send_s: float | None = None  # from the run start
    ttft_s: float | None = None  # from actual send
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float | None = None  # from actual send to the last token event
    done_s: float | None = None  # from the run start to the end of the stream
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    output_tokens_source: str | None = None  # usage | token-events
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None

    @property
    def send_lag_s(self) -> float | None:
        if self.targeted_send_s is None or self.actual_send_s is None:
            return None
        return self.actual_send_s - self.targeted_send_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - ttft) / (output_tokens - 1)."""
        if not self.ok or self.e2e_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["send_lag_s"] = self.send_lag_s
        data["tpot_s"] = self.tpot_s
        return data


def synthetic_prompt(index: int, input_tokens: int, vocab_size: int, seed: int,
                     avoid: tuple[int, ...] = ()) -> list[int]:
    """Request `index`'s prompt: the engines' own generator (`engines.tokens`), so online
    runs and the offline half of `compare-serving` send the same prompts."""
    from tokenjoule.engines.tokens import synthetic_prompt as engine_prompt

    return engine_prompt(index, input_tokens, vocab_size, seed, avoid)


def ids_to_text(token_ids: list[int]) -> str:
    """Text for servers that only accept strings: one word per token (`t<ID>`), which the
    word-level tokenizer written by `launch.write_model_dir` maps back to exactly one token."""
    return " ".join(f"t{t}" for t in token_ids)


def completion_body(model: str, prompt_ids: list[int], max_tokens: int, dialect: str = "vllm",
                    seed: int | None = None) -> dict[str, Any]:
    """The JSON body of one streaming completion that generates exactly `max_tokens` tokens.

    vllm: token-id prompt, `min_tokens = max_tokens` and `ignore_eos` (vLLM extensions).
    openai: a text prompt and standard fields only (servers such as `transformers serve`
    reject unknown fields; exact lengths there come from a model without an EOS token).
    """
    body: dict[str, Any] = {
        "model": model, "max_tokens": max_tokens, "stream": True, "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    if dialect == "vllm":
        body.update(prompt=prompt_ids, min_tokens=max_tokens, ignore_eos=True)
    elif dialect == "openai":
        body["prompt"] = ids_to_text(prompt_ids)
    else:
        from tokenjoule.errors import UnknownNameError

        raise UnknownNameError("server dialect", dialect, DIALECTS)
    if seed is not None:
        body["seed"] = seed
    return body


def _is_token_event(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        if choice.get("text") or choice.get("token_ids"):
            return True
        if choice.get("finish_reason") is None and "text" in choice:
            return True  # a server that does not detokenise sends empty text per token
    return False


JSON_HEADERS = {"content-type": "application/json"}


class StreamViolation(Exception):
    """The server's stream broke the protocol or the request (a failed request, with the reason)."""


def _count(value: Any, name: str, limit: int | None = None) -> int | None:
    """A token count from the server's `usage`: a non-negative integer (not above `limit`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StreamViolation(f"usage.{name} is not an integer: {json.dumps(value)[:60]}")
    if value < 0:
        raise StreamViolation(f"usage.{name} is negative: {value}")
    if limit is not None and value > limit:
        raise StreamViolation(f"usage.{name} is {value}, more than the {limit} requested (max_tokens)")
    return value


class _Stream:
    """What one request has received so far (kept when a deadline cuts the stream)."""

    def __init__(self) -> None:
        self.token_times: list[float] = []
        self.usage: dict[str, Any] | None = None


def _parse_event(data: bytes, state: _Stream, record: RequestRecord, now: float) -> bool:
    """One `data:` payload; returns True when the stream is finished ([DONE] or an error)."""
    if data == b"[DONE]":
        return True
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        raise StreamViolation(f"invalid JSON in the stream: {data[:80]!r}") from None
    if not isinstance(chunk, dict):
        raise StreamViolation(f"stream event is not a JSON object: {data[:80]!r}")
    choices = chunk.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices)):
        raise StreamViolation(f"'choices' is not a list of objects: {json.dumps(choices)[:80]}")
    if "error" in chunk and not choices:
        record.error = f"server error: {json.dumps(chunk['error'])[:300]}"
        return True
    if _is_token_event(chunk):
        state.token_times.append(now)
    usage = chunk.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise StreamViolation(f"'usage' is not an object: {json.dumps(usage)[:80]}")
        if usage:
            _count(usage.get("completion_tokens"), "completion_tokens", record.output_tokens_requested)
            _count(usage.get("prompt_tokens"), "prompt_tokens", MAX_TOKENS)
            state.usage = usage
    return False


async def _read_stream(response: httpx.Response, state: _Stream, record: RequestRecord) -> None:
    """Read the SSE body in linear time with bounded line and body sizes."""
    done = False
    pending: list[bytes] = []  # the unfinished line, in pieces (joined once, when it ends)
    pending_bytes = total_bytes = 0
    # Raw bytes, split on line ends here: cheaper per chunk than text line decoding, which
    # matters when one loop reads hundreds of streams. Only the new chunk is searched for line
    # ends, so one huge line costs linear time. Read to the end of the body even after [DONE]:
    # a stream left unread closes the connection, and reconnecting costs the sender time.
    async for raw in response.aiter_raw():
        total_bytes += len(raw)
        if total_bytes > MAX_STREAM_BYTES:
            raise StreamViolation(f"response larger than {MAX_STREAM_BYTES} bytes")
        now = time.perf_counter()
        start = 0
        while True:
            end = raw.find(b"\n", start)
            if end < 0:
                break
            if pending:
                line = b"".join(pending) + raw[start:end]
                pending, pending_bytes = [], 0
            else:
                line = raw[start:end]
            start = end + 1
            if not done and line.startswith(b"data:"):
                done = _parse_event(line[5:].strip(), state, record, now)
        rest = raw[start:]
        if rest:
            pending_bytes += len(rest)
            if pending_bytes > MAX_SSE_LINE_BYTES:
                raise StreamViolation(f"stream line longer than {MAX_SSE_LINE_BYTES} bytes")
            pending.append(rest)


async def _error_text(response: httpx.Response) -> str:
    """At most MAX_ERROR_BODY_BYTES of an error body (a hostile server may send gigabytes)."""
    data = b""
    async for raw in response.aiter_raw():
        data += raw[: MAX_ERROR_BODY_BYTES - len(data)]
        if len(data) >= MAX_ERROR_BODY_BYTES:
            break
    return data.decode(errors="replace")


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict[str, Any] | bytes,
                            record: RequestRecord, run_start: float, deadline_s: float | None = None,
                            headers: dict[str, str] | None = None,
                            params: dict[str, str] | None = None) -> RequestRecord:
    """Send one request and fill `record` in place. Never raises (except cancellation).
    `body` may be pre-serialised JSON bytes (the load generator encodes before the run).
    `deadline_s` bounds the whole request, send to end of stream (a server that drips
    keep-alive comments cannot hold it open). `headers` (auth) and `params` (query string)
    are sent, never stored."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    state = _Stream()
    send = time.perf_counter()
    record.actual_send_s = send - run_start

    async def exchange() -> None:
        async with client.stream("POST", url, content=content, headers={**JSON_HEADERS, **(headers or {})},
                                 params=params or None) as response:
            if response.status_code != 200:
                text = await _error_text(response)
                record.error = f"HTTP {response.status_code}: {' '.join(text.split())[:300]}"
                return
            await _read_stream(response, state, record)

    try:
        if deadline_s is None:
            await exchange()
        else:
            async with asyncio.timeout(deadline_s):
                await exchange()
    except TimeoutError:
        record.error = f"timeout: no complete response within {deadline_s:g} s (--timeout-s)"
    except StreamViolation as exc:
        record.error = f"invalid server response: {exc}"
    except Exception as exc:  # noqa: BLE001 - any transport failure is a recorded failure
        record.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        record.done_s = time.perf_counter() - run_start
        token_times = state.token_times
        if token_times:
            record.ttft_s = token_times[0] - send
            record.itl_s = [b - a for a, b in zip(token_times, token_times[1:])]
            record.e2e_s = token_times[-1] - send
        if state.usage is not None:
            record.output_tokens = state.usage.get("completion_tokens")
            record.prompt_tokens = state.usage.get("prompt_tokens")
            record.output_tokens_source = "usage"
        elif token_times:
            record.output_tokens = len(token_times)
            record.output_tokens_source = "token-events"
            if record.error is None and len(token_times) > record.output_tokens_requested:
                record.error = (f"invalid server response: {len(token_times)} token events for max_tokens "
                                f"{record.output_tokens_requested}")
    if record.error is None and not state.token_times:
        record.error = "stream ended without any generated token"
    return record
