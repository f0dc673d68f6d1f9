"""The typed reads of a stored cell, its constructors, the spec rules, and a store written
by earlier versions (the committed H100 evidence) read through them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tokenjoule.records import CellRecord, error_text, is_estimate
from tokenjoule.spec import DecodingSpec, RunSpec, canonical_json, hash_of, load_key, memory_key, spec_hash, weights_key
from tokenjoule.store.db import ResultStore

EVIDENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "h100_evidence.db"


def test_constructors_and_reads():
    spec = RunSpec(model="tiny", batch_size=4, decoding=DecodingSpec(strategy="sample"))
    ok = CellRecord.ok(spec, {"energy_j": 2.0, "flags": ["short-window"]}, {"method": "nvml-counter"},
                       {"gpu_names": ["NVIDIA H100"], "cpu_name": "Xeon"})
    assert (ok.spec_hash, ok.kind, ok.status, ok.cell_kind) == (spec.spec_hash(), "offline", "ok", "offline")
    assert (ok.decoding, ok.batch_size, ok.gpu_name, ok.gpu_count, ok.method) == ("sample", 4, "NVIDIA H100", 1,
                                                                                  "nvml-counter")
    assert ok.flags == ["short-window"] and not ok.is_estimate and ok.energy_j == 2.0

    failed = CellRecord.failed(spec, MemoryError("CUDA out of memory.\n Tried"), {"cpu_name": "Xeon"})
    assert failed.status == "failed" and failed.out_of_memory and "\n" not in failed.error
    assert failed.error == error_text(MemoryError("CUDA out of memory.\n Tried"))
    assert failed.gpu_name is None and failed.device_name == "Xeon"  # never a CPU name as the GPU

    online = CellRecord.online({"model": "tiny", "decoding": "greedy"}, {"energy_j": 1.0}, {}, {})
    assert online.cell_kind == "online" and online.decoding == "greedy" and online.is_ok
    assert CellRecord.online({"model": "tiny"}, {}, {}, {}, error="no request succeeded").status == "failed"
    comparison = CellRecord.comparison({"model": "tiny", "comparison": "offline-all-at-once"}, {}, {"method": "x"}, {})
    assert (comparison.kind, comparison.cell_kind) == ("offline", "comparison")
    with pytest.raises(ValueError):
        CellRecord.comparison({"model": "tiny"}, {}, {}, {})


def test_estimate_rule_reads_method_and_flags():
    est = CellRecord.ok(RunSpec(model="tiny"), {"flags": ["estimate"]}, {"method": "estimate-cpu-time"})
    assert est.is_estimate and is_estimate("estimate-cpu-time", "") and is_estimate("x", "a,estimate")
    assert not is_estimate("nvml-counter", ["short-window"])


def test_spec_rules():
    a = RunSpec(model="tiny", batch_size=1, input_tokens=8)
    b = a.model_copy(update={"batch_size": 64, "input_tokens": 512, "repeats": 7})
    assert load_key(a) == load_key(b) and weights_key(a) == weights_key(b)
    assert load_key(a) != load_key(a.model_copy(update={"mode": "compile"}))
    assert weights_key(a) == weights_key(a.model_copy(update={"mode": "compile"}))  # HF keeps the weights
    spec_d = a.model_copy(update={"decoding": DecodingSpec(strategy="speculative", draft_model="tiny")})
    assert load_key(spec_d) != load_key(a)
    assert memory_key(a, "G") != memory_key(b, "G") and memory_key(a, "G") != memory_key(a, "H")
    assert spec_hash(a) == a.spec_hash() == hash_of(a.canonical()) and spec_hash({"x": 1}) == hash_of({"x": 1})
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    # The stored cache key's form is what existing databases hold.
    assert memory_key(a, None, 64).startswith('{"cap":64,"decoding":{"strategy":"greedy"},"dtype":"auto"')


@pytest.mark.skipif(not EVIDENCE.is_file(), reason="evidence database not in this checkout")
def test_a_store_written_by_earlier_versions_opens_and_reads(tmp_path):
    db = tmp_path / "evidence.db"
    shutil.copyfile(EVIDENCE, db)
    with ResultStore(db) as store:
        records = store.find(status=None)
        assert records and store.schema_version == 1
        offline = [r for r in records if r.kind == "offline" and r.is_ok and r.batch_size]
        assert offline and all(r.gpu_name and "H100" in r.gpu_name for r in offline)
        assert all(r.decoding in ("greedy", "sample", "beam", "speculative") for r in offline)
        assert all(r.spec_hash == RunSpec.model_validate(r.spec).spec_hash() for r in offline[:50])
        assert {r.cell_kind for r in records} <= {"offline", "online", "comparison"}
        frame = store.to_dataframe()
        assert len(frame) == len(records) and "cell_kind" in frame and "is_estimate" in frame


def test_engine_capabilities_are_declared():
    from tokenjoule.engines.base import CAP_GENERATE_REQUESTS, CAP_PROBE_MEMORY, CapabilityMissing, EngineBase, supports
    from tokenjoule.engines.vllm_offline import VLLMEngine

    assert supports(EngineBase(), CAP_PROBE_MEMORY) is False
    with pytest.raises(CapabilityMissing):
        EngineBase().generate_requests([(1, 1)])
    assert EngineBase().kv_cache_tokens() is None
    assert {CAP_PROBE_MEMORY, CAP_GENERATE_REQUESTS} <= VLLMEngine.capabilities
    with pytest.raises(ValueError, match="unknown engine capability"):
        supports(EngineBase(), "teleport")
