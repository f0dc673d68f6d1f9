"""Hugging Face tensor parallelism: the measuring process drives a group of torch.distributed
ranks that tokenjoule starts itself.

transformers shards a model over the ranks of a torch.distributed group (`tp_plan="auto"`),
and every rank must make the same calls in the same order. A cell with `tensor_parallel` k
on the hf engine therefore runs as

    this process (runner, meter, store)
      └─ python -m torch.distributed.run --standalone --nproc-per-node k -m tokenjoule.engines.tp_rank
           ├─ rank 0: receives each engine call over a local authenticated socket, broadcasts it
           └─ ranks 1..k-1: receive it from rank 0; every rank runs it on its own GPU (cuda:<rank>)

`TensorParallelHF` is the engine the runner sees (load / generate / synchronize / close, as
any engine). Its `synchronize` is a group-wide edge: every rank synchronizes its device and
then waits for the others, and only then does this process get its answer, so a measurement
window opens and closes in step on every rank. The meter lives here, in ONE process that is
not a rank: it reads the energy counter of every GPU of the group, and the record is written
once, by this process. The ranks are this process's descendants, so the meter's ownership
check counts them as ours and a process of anyone else on one of the GPUs is still named.

Nothing here imports torch: the ranks do.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Sequence

from tokenjoule.engines.base import ENGINE_CAPABILITIES, EngineBase, GenerationResult
from tokenjoule.errors import TokenjouleError
from tokenjoule.spec import RunSpec

RANK_ENTRY = "tokenjoule.engines.tp_rank"
ENV_ADDRESS = "TOKENJOULE_TP_ADDRESS"  # host:port of this process's listener (rank 0 connects)
ENV_AUTHKEY = "TOKENJOULE_TP_AUTHKEY"  # hex; the socket accepts only a peer that knows it
ENV_DEVICE = "TOKENJOULE_TP_DEVICE"  # cuda | cpu: where the ranks run
START_TIMEOUT_S = 600.0  # torch import + process group + rendezvous; model loads come after
CALL_TIMEOUT_S = 6 * 3600.0  # one engine call (a model load of a 32B preset included)
POLL_S = 0.2


class RankError(TokenjouleError):
    """An engine call failed on a rank; the text is that rank's error (an out-of-memory error
    keeps "out of memory" in it, so the runner's step-down still recognises it)."""

    exit_code = 1


def launch_command(nproc: int, python: str = sys.executable) -> list[str]:
    """The command that starts `nproc` ranks on this host. `--standalone` picks a free
    rendezvous port, so several groups (sweep workers) can run side by side."""
    if nproc < 2:
        raise TokenjouleError(f"a tensor-parallel group needs at least 2 ranks, got {nproc}")
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", RANK_ENTRY]


def rank_env(address: str, authkey: bytes, device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the group: how rank 0 reaches this process, where the ranks run."""
    env = dict(os.environ if base is None else base)
    env.update({ENV_ADDRESS: address, ENV_AUTHKEY: authkey.hex(), ENV_DEVICE: device, "PYTHONUNBUFFERED": "1"})
    return env


class RankGroup:
    """The started ranks and the connection to rank 0: `call(op, *args)` returns rank 0's answer
    once every rank finished the call, or raises RankError with the first rank's error."""

    def __init__(self, nproc: int, device: str, log_path: str | Path | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, command: Sequence[str] | None = None):
        self.nproc, self.device = nproc, device
        self.command = list(command) if command is not None else launch_command(nproc)
        self.start_timeout_s = start_timeout_s
        self._tmp = None if log_path else tempfile.TemporaryDirectory(prefix="tokenjoule-tp-")
        self.log_path = Path(log_path) if log_path else Path(self._tmp.name) / "ranks.log"  # type: ignore[union-attr]
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None

    def start(self) -> "RankGroup":
        authkey = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=authkey)
        host, port = listener.address
        env = rank_env(f"{host}:{port}", authkey, self.device)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Its own session, so close() can stop the launcher and every rank as one group.
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        accepted: list[Connection] = []
        failed: list[BaseException] = []

        def accept() -> None:
            try:
                accepted.append(listener.accept())
            except BaseException as exc:  # noqa: BLE001 - reported below
                failed.append(exc)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not accepted:
                if failed:
                    raise TokenjouleError(f"the tensor-parallel ranks could not connect: {failed[0]}{self._log_tail()}")
                if self.proc.poll() is not None:
                    raise TokenjouleError(f"the tensor-parallel ranks exited with code {self.proc.returncode} before "
                                          f"they were ready{self._log_tail()}")
                if time.monotonic() > deadline:
                    raise TokenjouleError(f"the tensor-parallel ranks did not start within {self.start_timeout_s:.0f} s"
                                          f"{self._log_tail()}")
                thread.join(POLL_S)
        except BaseException:
            listener.close()
            self.stop()
            raise
        listener.close()
        self.conn = accepted[0]
        return self

    def call(self, op: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        if self.conn is None or self.proc is None:
            raise TokenjouleError("the tensor-parallel ranks are not running")
        self.conn.send((op, args))
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(POLL_S):
            if self.proc.poll() is not None:
                raise RankError(f"the tensor-parallel ranks exited (code {self.proc.returncode}) during {op}"
                                f"{self._log_tail()}")
            if time.monotonic() > deadline:
                raise RankError(f"the tensor-parallel ranks did not finish {op} within {timeout_s:.0f} s")
        status, value = self.conn.recv()
        if status == "error":
            raise RankError(str(value))
        return value

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f"; last log line: {lines[-1][:300]} (log: {self.log_path})" if lines else ""

    def stop(self, grace_s: float = 30.0) -> None:
        """Ask the ranks to finish, then stop the whole group; idempotent."""
        if self.conn is not None:
            try:
                self.conn.send(("close", ()))
            except OSError:
                pass
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(grace_s if self.conn is not None else 0.1)
            except subprocess.TimeoutExpired:
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(10)
                except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                    continue
        if self.conn is not None:
            self.conn.close()
        self.conn, self.proc = None, None


def group_device(spec: RunSpec, cuda_available: bool) -> str:
    """Where the ranks run: the GPUs cuda:0..k-1 (CUDA_VISIBLE_DEVICES chooses them), or the
    CPU (a test path: gloo ranks on the host's cores)."""
    name = (spec.device or "auto").lower()
    if name == "cpu" or (name == "auto" and not cuda_available):
        return "cpu"
    if name not in ("auto", "cuda", "cuda:0"):
        raise TokenjouleError(f"hf tensor parallelism runs rank r on cuda:r (cuda:0..cuda:{spec.tensor_parallel - 1}); "
                              f"got --device {spec.device}: choose the GPUs with CUDA_VISIBLE_DEVICES and use "
                              "--device cuda")
    return "cuda"


class TensorParallelHF(EngineBase):
    """The hf engine on a tensor-parallel group (the module docstring says how)."""

    name = "hf"
    capabilities = ENGINE_CAPABILITIES["hf"]

    def __init__(self, group_factory: Any = RankGroup, cuda_available: bool | None = None):
        self._factory = group_factory
        self._cuda = cuda_available
        self._group: Any = None
        self._spec: RunSpec | None = None

    def _cuda_available(self) -> bool:
        if self._cuda is None:
            import torch  # whether the ranks run on GPUs

            self._cuda = bool(torch.cuda.is_available())
        return self._cuda

    def load(self, spec: RunSpec) -> None:
        device = group_device(spec, self._cuda_available())
        if self._group is None or self._group.nproc != spec.tensor_parallel or self._group.device != device:
            self.close()
            self._group = self._factory(spec.tensor_parallel, device).start()
        self._group.call("load", spec.model_dump(mode="json"))
        self._spec = spec

    def generate(self, spec: RunSpec, output_tokens: int | None = None) -> GenerationResult:
        return self._call("generate", spec.model_dump(mode="json"), output_tokens)

    def generate_requests(self, lengths: Sequence[tuple[int, int]], seed: int = 0) -> GenerationResult:
        return self._call("generate_requests", [tuple(map(int, p)) for p in lengths], seed)

    def probe_memory(self, spec: RunSpec) -> float | None:
        self._call("probe_memory", spec.model_dump(mode="json"))
        return None  # each rank holds a shard: one rank's peak is not the group's

    def synchronize(self) -> None:
        """Every rank's device synchronised and every rank at this point (a window edge)."""
        if self._group is not None:
            self._group.call("sync")

    def device_indices(self) -> list[int]:
        if self._group is None or self._group.device != "cuda":
            return []
        return list(range(self._group.nproc))

    def provenance(self) -> dict[str, Any]:
        out = dict(self._call("provenance")) if self._group is not None else {"engine": self.name}
        if self._group is not None:
            out |= {"tensor_parallel_ranks": self._group.nproc, "rank_launcher": "torch.distributed.run",
                    "rank_device": self._group.device}
        return out

    def _call(self, op: str, *args: Any) -> Any:
        if self._group is None:
            raise TokenjouleError("hf engine: load(spec) must be called before " + op)
        return self._group.call(op, *args)

    def close(self) -> None:
        if self._group is not None:
            self._group.stop()
        self._group, self._spec = None, None


def connect_to_coordinator() -> Connection:
    """Rank 0's side of the socket (tp_rank calls it)."""
    address, key = os.environ.get(ENV_ADDRESS), os.environ.get(ENV_AUTHKEY)
    if not address or not key:
        raise TokenjouleError(f"{RANK_ENTRY} is started by tokenjoule for hf tensor parallelism "
                              f"({ENV_ADDRESS} is not set); run `tokenjoule measure --tp N` instead")
    host, port = address.rsplit(":", 1)
    return Client((host, int(port)), authkey=bytes.fromhex(key))
