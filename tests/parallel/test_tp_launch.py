"""hf tensor parallelism: the rank launcher's command, window edges in step on every rank
(a fake group), one record from one measuring process, and a real 2-rank gloo group on the
CPU with the `tiny` preset (transformers tp_plan="auto")."""

from __future__ import annotations

import sys

import pytest

from fakes.fake_nvml import FakeGpuBackend
from tokenjoule.energy import FakeClock, NvmlMeter
from tokenjoule.energy.rapl import RaplReader
from tokenjoule.engines import tp_group
from tokenjoule.engines.base import GenerationResult
from tokenjoule.engines.hf import HFEngine
from tokenjoule.errors import TokenjouleError
from tokenjoule.spec import RunSpec


def test_launch_command_starts_k_ranks_of_the_rank_entry():
    cmd = tp_group.launch_command(4, python="/py")
    assert cmd[:3] == ["/py", "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc-per-node") + 1] == "4" and "--standalone" in cmd  # free rendezvous port
    assert cmd[-2:] == ["-m", "tokenjoule.engines.tp_rank"]
    with pytest.raises(TokenjouleError, match="at least 2"):
        tp_group.launch_command(1)
    env = tp_group.rank_env("127.0.0.1:5000", b"\x01\x02", "cuda", base={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert env[tp_group.ENV_ADDRESS] == "127.0.0.1:5000" and bytes.fromhex(env[tp_group.ENV_AUTHKEY]) == b"\x01\x02"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"  # the ranks see the GPUs this process was given


def test_ranks_run_on_cuda_0_to_k_or_the_cpu():
    assert tp_group.group_device(RunSpec(model="tiny", device="cpu", tensor_parallel=2), True) == "cpu"
    assert tp_group.group_device(RunSpec(model="tiny", device="auto", tensor_parallel=2), False) == "cpu"
    assert tp_group.group_device(RunSpec(model="tiny", device="cuda", tensor_parallel=2), True) == "cuda"
    with pytest.raises(TokenjouleError, match="CUDA_VISIBLE_DEVICES"):
        tp_group.group_device(RunSpec(model="tiny", device="cuda:2", tensor_parallel=2), True)


class FakeGroup:
    """Stands in for the started ranks: logs every call into a shared event list."""

    def __init__(self, nproc, device, events):
        self.nproc, self.device, self.events = nproc, device, events

    def start(self):
        self.events.append(("start", self.nproc))
        return self

    def call(self, op, *args):
        self.events.append(("call", op))
        if op == "generate":
            spec = RunSpec(**args[0])
            n = args[1] or spec.output_tokens
            return GenerationResult([spec.input_tokens] * spec.batch_size, [n] * spec.batch_size, 0.5)
        if op == "provenance":
            return {"engine": "hf", "model": "tiny"}
        return None

    def stop(self):
        self.events.append(("stop",))


class LoggingBackend(FakeGpuBackend):
    def __init__(self, events, **kw):
        super().__init__(**kw)
        self.events = events

    def energy_j(self, index):
        self.events.append(("read", index))
        return super().energy_j(index)


def test_window_edges_are_group_syncs_before_every_counter_read(tmp_path):
    from tokenjoule.runs.offline import run_measure
    from tokenjoule.store.db import ResultStore

    events: list = []
    clock = FakeClock()
    engine = HFEngine()
    engine._group = tp_group.TensorParallelHF(group_factory=lambda n, d: FakeGroup(n, d, events), cuda_available=True)
    meter = NvmlMeter(LoggingBackend(events, devices=2, power_w=[300.0, 250.0], clock=clock), clock=clock,
                      sleep=clock.sleep, rapl=RaplReader(str(tmp_path / "none")), settle_rule=None)
    spec = RunSpec(model="tiny", device="cuda", tensor_parallel=2, batch_size=2, input_tokens=8, output_tokens=4,
                   warmup=1, repeats=2, min_window_s=0, split_prefill=False)
    with ResultStore(tmp_path / "r.db") as store:
        record = run_measure(spec, store, engine=engine, meter=meter, idle_s=0)
        assert len(store.to_dataframe()) == 1  # recorded once, by this process
    assert events[0] == ("start", 2) and ("call", "load") in events
    # Every counter read at a window edge comes right after a group-wide sync (all ranks synced
    # and at the barrier): reads of both GPUs, never between a rank's work and the edge.
    reads = [i for i, e in enumerate(events) if e[0] == "read"]
    edges = [i for i in reads if events[i - 1][0] != "read"]
    assert edges and all(events[i - 1] == ("call", "sync") for i in edges)
    assert {events[i][1] for i in reads} == {0, 1}
    assert record.metrics["gpus_measured"] == 2
    split = record.metrics["gpu_energy_by_device_j"]
    assert record.metrics["energy_j"] == pytest.approx(split["0"] + split["1"])
    assert record.provenance["engine_devices"] == [0, 1] and record.provenance["tensor_parallel_ranks"] == 2


def test_hf_tp_refuses_modes_it_does_not_run():
    engine = HFEngine()
    with pytest.raises(TokenjouleError, match="--engine vllm"):
        engine.load(RunSpec(model="tiny", device="cpu", tensor_parallel=2, pipeline_parallel=2))
    with pytest.raises(TokenjouleError, match="eager"):
        engine.load(RunSpec(model="tiny", device="cuda", mode="compile", tensor_parallel=2))


def test_rank_entry_refuses_to_run_by_hand(monkeypatch):
    monkeypatch.delenv(tp_group.ENV_ADDRESS, raising=False)
    with pytest.raises(TokenjouleError, match="tokenjoule measure --tp"):
        tp_group.connect_to_coordinator()


def test_a_rank_that_dies_is_one_error_not_a_hang(tmp_path):
    group = tp_group.RankGroup(2, "cpu", log_path=tmp_path / "ranks.log", start_timeout_s=60,
                               command=[sys.executable, "-c", "import sys; print('rank failed'); sys.exit(3)"])
    with pytest.raises(TokenjouleError, match="exited with code 3.*rank failed"):
        group.start()


def test_two_cpu_ranks_measure_tiny_with_tensor_parallel_weights(tmp_path, monkeypatch):
    """The real path: torch.distributed.run, gloo, transformers tp_plan on 2 CPU ranks."""
    pytest.importorskip("torch.distributed")
    from tokenjoule.runs.offline import run_measure
    from tokenjoule.store.db import ResultStore

    monkeypatch.setenv("TOKENJOULE_RANDOM_WEIGHTS_DIR", str(tmp_path / "weights"))
    spec = RunSpec(model="tiny", device="cpu", tensor_parallel=2, batch_size=2, input_tokens=8, output_tokens=4,
                   warmup=1, repeats=2, min_window_s=0, split_prefill=False)
    with ResultStore(tmp_path / "r.db") as store:
        record = run_measure(spec, store, meter_kind="simulated", idle_s=0)
        assert len(store.to_dataframe()) == 1
    assert record.status == "ok" and record.metrics["output_tokens_total"] == 2 * 4
    assert record.provenance["tensor_parallel_ranks"] == 2 and record.provenance["rank_device"] == "cpu"
    assert (tmp_path / "weights").is_dir()  # the seeded random weights every rank read its shard of


def test_the_meter_covers_the_gpus_the_engine_uses():
    from tokenjoule.runs.offline import meter_devices

    assert meter_devices(RunSpec(model="tiny", engine="vllm", device="cuda:0", tensor_parallel=2,
                                 pipeline_parallel=2)) == [0, 1, 2, 3]
    assert meter_devices(RunSpec(model="tiny", device="cuda:0", tensor_parallel=2)) == [0, 1]
    assert meter_devices(RunSpec(model="tiny", device="cpu", tensor_parallel=2)) == []  # CPU ranks: no GPU
