"""Start an OpenAI-compatible server on a free loopback port, wait for it to be healthy, and
always shut it down: on normal exit, on an error, and on Ctrl-C.

The server runs in its own process group (vLLM starts engine subprocesses), and the whole
group is stopped: SIGINT first (a graceful shutdown), then SIGTERM, then SIGKILL. An atexit hook
covers the case where the interpreter exits without unwinding the context manager.

Models given as presets have no weights or tokenizer on disk, so `write_model_dir` writes a
directory the server can load: the preset's config.json and a word-level tokenizer with one
word `t<ID>` per id of the vocabulary (so any token-id prompt is valid and a text prompt of N
words is exactly N tokens). vLLM loads it with `--load-format dummy` (random weights);
`transformers serve` needs real files, so random weights are saved there too.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tokenjoule.errors import MissingDependencyError, TokenjouleError, UnknownNameError

LAUNCHERS = ("vllm", "transformers")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`with ServerProcess(cmd, port) as srv: ... srv.url` (health-checked, always stopped)."""

    def __init__(self, cmd: Sequence[str], port: int, host: str = "127.0.0.1", health_path: str = "/health",
                 env: dict[str, str] | None = None, startup_timeout_s: float = 900.0,
                 log_path: str | Path | None = None, name: str = "server"):
        self.cmd, self.port, self.host = list(cmd), port, host
        self.health_path, self.env, self.name = health_path, env, name
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ServerProcess":
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")
        env = dict(os.environ, **(self.env or {}))
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            raise TokenjouleError(f"cannot start {self.name} ({self.cmd[0]}): {exc.strerror}") from None
        atexit.register(self.stop)
        return self

    def wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        url = self.url + self.health_path
        while True:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                raise TokenjouleError(f"{self.name} exited with code {code} before it was healthy{self._log_tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TokenjouleError(f"{self.name} was not healthy at {url} after {self.startup_timeout_s:.0f} s"
                                      f"{self._log_tail()}")
            time.sleep(0.25)

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        return f"; last log line: {lines[-1][:300]} (log: {self.log_path})" if lines else ""

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop the whole process group; idempotent."""
        proc = self.proc
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        # Children that outlived the leader (engine workers) are in the same group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> "ServerProcess":
        self.start()
        try:
            self.wait_healthy()
        except BaseException:  # also KeyboardInterrupt: __exit__ does not run when __enter__ raises
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- model directories --------------------------------------------------------------------------
def write_word_tokenizer(vocab_size: int, dest: Path) -> None:
    """A word-level tokenizer with the words t0..t{vocab_size-1} (one per model id)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # No eos token on purpose: generation must run to max_tokens, not stop at a random EOS.
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(str(dest))


def write_model_dir(model: str, dest: str | Path, launcher: str, seed: int = 0) -> dict[str, Any]:
    """Write a servable directory for a preset; returns {"path", "vocab_size", "max_model_len",
    "eos_token_id"}. An HF id is served as is (the server downloads or finds it in its cache)."""
    from tokenjoule.models.registry import resolve_model

    source = resolve_model(model)
    if not source.is_preset:
        return {"path": model, "vocab_size": None, "max_model_len": None, "eos_token_id": None}
    cfg = dict(source.config or {})
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab = int(cfg["vocab_size"])
    info = {"path": str(dest), "vocab_size": vocab, "max_model_len": cfg.get("max_position_embeddings"),
            "eos_token_id": cfg.get("eos_token_id")}
    if launcher == "transformers":
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(seed)
        hf_cfg = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
        hf_cfg.architectures = cfg.get("architectures")
        hf_cfg.eos_token_id = None  # exact output lengths: nothing can end a request early
        net = AutoModelForCausalLM.from_config(hf_cfg)
        net.generation_config.eos_token_id = None
        net.save_pretrained(str(dest))
    else:
        (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    write_word_tokenizer(vocab, dest)
    return info


def server_command(launcher: str, model_dir: str, port: int, served_name: str, mode: str = "graphs",
                   device: str = "auto", extra_args: Sequence[str] = (), host: str = "127.0.0.1",
                   dummy_weights: bool = True, tensor_parallel: int = 1, pipeline_parallel: int = 1) -> list[str]:
    """The command line that serves `model_dir` on host:port (vLLM on tensor_parallel x
    pipeline_parallel GPUs; transformers serve on one device only)."""
    if launcher == "vllm":
        from tokenjoule.engines.vllm_offline import INSTALL, vllm_available

        if not vllm_available():
            raise MissingDependencyError("vLLM", INSTALL)
        cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model_dir, "--host", host,
               "--port", str(port), "--served-model-name", served_name, "--seed", "0"]
        if dummy_weights:
            cmd += ["--load-format", "dummy"]
        if mode == "eager":
            cmd.append("--enforce-eager")
        if tensor_parallel > 1:
            cmd += ["--tensor-parallel-size", str(tensor_parallel)]
        if pipeline_parallel > 1:
            cmd += ["--pipeline-parallel-size", str(pipeline_parallel)]
        return cmd + list(extra_args)
    if launcher == "transformers":
        if tensor_parallel * pipeline_parallel > 1:
            raise TokenjouleError("transformers serve runs on one device; use --launch vllm for --tp/--pp above 1")
        from transformers.utils.import_utils import is_serve_available

        if not is_serve_available():
            raise MissingDependencyError("transformers serve (fastapi, uvicorn, openai)",
                                         "pip install 'tokenjoule[serve]'")
        code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
        return [sys.executable, "-c", code, "serve", model_dir, "--host", host, "--port", str(port),
                "--device", device, "--log-level", "warning", *extra_args]
    raise UnknownNameError("launcher", launcher, LAUNCHERS)
