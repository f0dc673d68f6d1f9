"""A fast mock OpenAI-compatible completions server on loopback, for tests and benchmarks.

Plain asyncio HTTP/1.1 (keep-alive, chunked SSE) so it adds little latency of its own.
Scripted timing: `ttft_s` before the first token, then `token_delays_s` between tokens
(cycled). Each request streams exactly `max_tokens` tokens (vLLM style: one token per chunk,
the last chunk with finish_reason, then a usage chunk when asked, then [DONE]).

Injected failures: a request whose prompt has a length in `fail_prompt_tokens` breaks after
`error_after_tokens` tokens, either by dropping the connection (`error_mode="abort"`) or by
sending an error event (`error_mode="event"`). Misbehaviour for the hostile-server tests:
`usage` replaces the usage object sent (a list, a string, wrong counts...), `comment_every_s`
drip-feeds SSE comments and never sends a token, `huge_line_bytes` sends one endless line.
Every request's path (with its query string) and headers are kept in `paths` / `headers`.

Use in tests: `with MockServer(MockConfig(...)) as srv: srv.url`. As a process (benchmarks):
`python tests/serving/mock_server.py --token-delay-ms 5` prints `PORT <n>` then serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field


@dataclass
class MockConfig:
    ttft_s: float = 0.0
    token_delays_s: list[float] = field(default_factory=lambda: [0.0])
    fail_prompt_tokens: set[int] = field(default_factory=set)
    error_after_tokens: int = 2
    error_mode: str = "abort"  # abort | event
    send_usage: bool = True
    usage: object = None  # when not None: sent verbatim as the usage value
    comment_every_s: float | None = None  # drip-feed ": ping" comments forever, no tokens
    huge_line_bytes: int = 0  # one data line this long (no line end), then the connection closes
    extra_tokens: int = 0  # stream this many tokens more than max_tokens asked for


class MockServer:
    def __init__(self, config: MockConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or MockConfig()
        self.host, self.port = host, port
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests_seen = 0
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "MockServer":
        self._thread = threading.Thread(target=self._run_thread, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("mock server did not start")
        return self

    def _run_thread(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Idempotent: stop serving, then end the thread."""
        if self._loop is None or self._loop.is_closed():
            return

        async def _close() -> None:
            assert self._server is not None
            self._server.close()
            # End handlers still streaming (a drip-feeding one never ends by itself).
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self._loop.stop()  # type: ignore[union-attr]

        asyncio.run_coroutine_threadsafe(_close(), self._loop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "MockServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP -----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if method == "GET" and path in ("/health", "/v1/models"):
                    payload = b"{}" if path == "/health" else json.dumps(
                        {"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                    await writer.drain()
                elif method == "POST" and path.split("?", 1)[0] == "/v1/completions":
                    self.paths.append(path)
                    self.headers.append(headers)
                    if not await self._completion(json.loads(body), writer):
                        return  # connection dropped on purpose
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _completion(self, body: dict, writer: asyncio.StreamWriter) -> bool:
        cfg = self.config
        self.requests_seen += 1
        self.bodies.append(body)
        prompt = body.get("prompt", [])
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        max_tokens = int(body.get("max_tokens") or 16) + cfg.extra_tokens
        fail = prompt_tokens in cfg.fail_prompt_tokens
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            created = int(time.time())
            if cfg.comment_every_s is not None:
                while True:
                    self._chunk(writer, b": ping\n\n")
                    await writer.drain()
                    await asyncio.sleep(cfg.comment_every_s)
            if cfg.huge_line_bytes:
                piece = b"x" * 65536
                self._chunk(writer, b"data: ")
                for _ in range(cfg.huge_line_bytes // len(piece)):
                    self._chunk(writer, piece)
                    await writer.drain()
                writer.transport.abort()
                return False
            if cfg.ttft_s:
                await asyncio.sleep(cfg.ttft_s)
            for k in range(max_tokens):
                if k:
                    delay = cfg.token_delays_s[(k - 1) % len(cfg.token_delays_s)]
                    if delay:
                        await asyncio.sleep(delay)
                if fail and k == cfg.error_after_tokens:
                    if cfg.error_mode == "abort":
                        writer.transport.abort()
                        return False
                    self._event(writer, {"error": {"message": "injected failure", "code": 500}})
                    break
                finish = "length" if k == max_tokens - 1 else None
                self._event(writer, {"id": "cmpl-mock", "object": "text_completion", "created": created,
                                     "model": body.get("model"),
                                     "choices": [{"index": 0, "text": f" t{k}", "finish_reason": finish}]})
                await writer.drain()
            else:
                if cfg.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                    usage = cfg.usage if cfg.usage is not None else {
                        "prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                        "total_tokens": prompt_tokens + max_tokens}
                    self._event(writer, {"id": "cmpl-mock", "object": "text_completion", "choices": [],
                                         "usage": usage})
            self._chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            self.in_flight -= 1

    def _event(self, writer: asyncio.StreamWriter, obj: dict) -> None:
        self._chunk(writer, b"data: " + json.dumps(obj).encode() + b"\n\n")

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    srv = MockServer(MockConfig(ttft_s=args.ttft_ms / 1e3, token_delays_s=[args.token_delay_ms / 1e3]),
                     port=args.port).start()
    print(f"PORT {srv.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
