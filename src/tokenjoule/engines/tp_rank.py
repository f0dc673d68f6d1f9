"""One rank of an hf tensor-parallel group (`python -m tokenjoule.engines.tp_rank`, started by
`torch.distributed.run` for engines.tp_group; not a command for users).

Rank 0 receives each engine call from the measuring process and broadcasts it (over a gloo
group, so no GPU memory is used for it); every rank runs it on its own HFEngine; then the
ranks gather their errors, which is also the barrier that makes a `sync` a group-wide window
edge; rank 0 answers with its result or the first rank's error.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tokenjoule.engines.tp_group import ENV_DEVICE, connect_to_coordinator


def run_op(engine: Any, op: str, args: tuple) -> Any:
    """One engine call on this rank's engine."""
    from tokenjoule.spec import RunSpec

    if op == "load":
        return engine.load(RunSpec(**args[0]))
    if op == "generate":
        return engine.generate(RunSpec(**args[0]), args[1])
    if op == "generate_requests":
        return engine.generate_requests(args[0], args[1])
    if op == "probe_memory":
        return engine.probe_memory(RunSpec(**args[0]))
    if op == "sync":
        return engine.synchronize()
    if op == "provenance":
        return engine.provenance()
    raise ValueError(f"unknown tensor-parallel op {op!r}")


def main() -> int:
    import torch
    import torch.distributed as dist

    from tokenjoule.engines.hf import HFEngine
    from tokenjoule.records import error_text

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    on_gpu = os.environ.get(ENV_DEVICE, "cuda") == "cuda"
    if on_gpu:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if on_gpu else "gloo")
    control = dist.new_group(backend="gloo")
    conn = connect_to_coordinator() if rank == 0 else None
    engine = HFEngine(rank_device=f"cuda:{local}" if on_gpu else "cpu")
    try:
        while True:
            box = [conn.recv() if conn is not None else None]
            dist.broadcast_object_list(box, src=0, group=control)
            op, args = box[0]
            if op == "close":
                break
            value, error = None, None
            try:
                value = run_op(engine, op, args)
            except Exception as exc:  # noqa: BLE001 - reported to the measuring process
                error = f"rank {rank}: {error_text(exc)}"
            errors: list[Any] = [None] * world
            dist.all_gather_object(errors, error, group=control)  # every rank done: the edge
            if conn is not None:
                first = next((e for e in errors if e), None)
                conn.send(("error", first) if first else ("ok", value))
    finally:
        engine.close()
        if conn is not None:
            conn.close()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
