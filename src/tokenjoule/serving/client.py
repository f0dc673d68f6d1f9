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
Errors (HTTP status, broken stream, timeout) are recorded in `error`, never raised.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

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


async def stream_completion(client: httpx.AsyncClient, url: str, body: dict[str, Any] | bytes,
                            record: RequestRecord, run_start: float) -> RequestRecord:
    """Send one request and fill `record` in place. Never raises (except cancellation).
    `body` may be pre-serialised JSON bytes (the load generator encodes before the run)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    token_times: list[float] = []
    usage: dict[str, Any] | None = None
    send = time.perf_counter()
    record.actual_send_s = send - run_start
    try:
        async with client.stream("POST", url, content=content, headers=JSON_HEADERS) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                record.error = f"HTTP {response.status_code}: {' '.join(text.split())[:300]}"
                return record
            done = False
            buffer = b""
            # Raw bytes, split on line ends here: cheaper per chunk than text line decoding,
            # which matters when one loop reads hundreds of streams. Read to the end of the
            # body even after [DONE]: a stream left unread closes the connection, and
            # reconnecting per request costs the sender time.
            async for raw in response.aiter_raw():
                buffer += raw
                *lines, buffer = buffer.split(b"\n")
                now = time.perf_counter()
                for line in lines:
                    if done or not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk and not chunk.get("choices"):
                        record.error = f"server error: {json.dumps(chunk['error'])[:300]}"
                        done = True
                        continue
                    if _is_token_event(chunk):
                        token_times.append(now)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
    except Exception as exc:  # noqa: BLE001 - any transport failure is a recorded failure
        record.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    finally:
        record.done_s = time.perf_counter() - run_start
        if token_times:
            record.ttft_s = token_times[0] - send
            record.itl_s = [b - a for a, b in zip(token_times, token_times[1:])]
            record.e2e_s = token_times[-1] - send
        if usage is not None:
            record.output_tokens = usage.get("completion_tokens")
            record.prompt_tokens = usage.get("prompt_tokens")
            record.output_tokens_source = "usage"
        elif token_times:
            record.output_tokens = len(token_times)
            record.output_tokens_source = "token-events"
    if record.error is None and not token_times:
        record.error = "stream ended without any generated token"
    return record
