"""Trace loaders: hand-made files of every format, filters, malformed input, shipped traces."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenjoule.errors import TokenjouleError, UnknownNameError
from tokenjoule.workloads import list_traces, load_trace, resolve_workload
from tokenjoule.workloads.formats import detect_format

AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:50.9951690,396,109\n"
    "2023-11-16 23:59:59.9999999,10,1\n"
    "2023-11-17 00:00:01.5000000,20,2\n"
)

BURSTGPT = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,0,1087,Conversation log\n"
    "118,GPT-4,417,30,447,Conversation log\n"
    "140,ChatGPT,1360,180,1540,API log\n"
    "150,ChatGPT,20,7,27,Conversation log\n"
)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_azure_timestamps_with_seven_fraction_digits_rebased_to_first(tmp_path):
    w = load_trace(write(tmp_path, "a.csv", AZURE))
    assert w.provenance["format"] == "azure"
    assert [r.input_tokens for r in w] == [374, 396, 10, 20]
    assert [r.output_tokens for r in w] == [44, 109, 1, 2]
    arr = [r.arrival_s for r in w]
    assert arr[0] == 0.0
    assert arr[1] == pytest.approx(50.9951690 - 46.6805900, abs=1e-6)
    # crosses midnight: 23:59:59.9999999 -> 00:00:01.5 is 1.5000001 s later
    assert arr[3] - arr[2] == pytest.approx(1.5000001, abs=1e-6)
    assert arr[2] == pytest.approx((23 - 18) * 3600 + (59 - 15) * 60 + (59.9999999 - 46.68059), abs=1e-6)


def test_mooncake_jsonl_ms_to_seconds(tmp_path):
    lines = [{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [0]},
             {"timestamp": 3000, "input_length": 600, "output_length": 7, "hash_ids": [0, 1]}]
    p = write(tmp_path, "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    w = load_trace(p)
    assert w.provenance["format"] == "mooncake"
    assert [(r.input_tokens, r.output_tokens, r.arrival_s) for r in w] == [(100, 5, 0.0), (600, 7, 3.0)]


def test_burstgpt_filters_and_failures_are_counted(tmp_path):
    p = write(tmp_path, "b.csv", BURSTGPT)
    all_rows = load_trace(p)
    assert all_rows.provenance["format"] == "burstgpt"
    assert len(all_rows) == 4
    assert all_rows.provenance["removed"] == {"failed request (0 response tokens)": 1}
    chat_conv = load_trace(p, model="ChatGPT", log_type="conversation")
    assert [(r.input_tokens, r.output_tokens) for r in chat_conv] == [(472, 18), (20, 7)]
    assert [r.arrival_s for r in chat_conv] == [0.0, 145.0]
    removed = chat_conv.provenance["removed"]
    assert removed == {"failed request (0 response tokens)": 1, "model is not ChatGPT": 1,
                       "log type is not conversation": 1}
    assert chat_conv.provenance["rows_read"] == len(chat_conv) + sum(removed.values())


def test_filters_rejected_for_non_burstgpt(tmp_path):
    with pytest.raises(TokenjouleError, match="BurstGPT"):
        load_trace(write(tmp_path, "a.csv", AZURE), model="ChatGPT")


def test_generic_csv_with_mapping_and_time_unit(tmp_path):
    p = write(tmp_path, "g.csv", "prompt,gen,t_ms\n3,4,1000\n5,6,500\n")
    w = load_trace(p, columns={"input_tokens": "prompt", "output_tokens": "gen", "arrival_s": "t_ms"},
                   time_unit="ms")
    # arrivals are sorted (stable) and rebased to the first request
    assert [(r.input_tokens, r.output_tokens, r.arrival_s) for r in w] == [(5, 6, 0.0), (3, 4, 0.5)]
    assert w.provenance["sorted_by_arrival"] is False


def test_generic_jsonl_without_arrivals(tmp_path):
    p = write(tmp_path, "g.jsonl", '{"input_tokens": 3, "output_tokens": 4}\n{"input_tokens": 8.0, "output_tokens": 1}\n')
    w = load_trace(p)
    assert [(r.input_tokens, r.output_tokens) for r in w] == [(3, 4), (8, 1)]
    assert not w.has_arrivals


@pytest.mark.parametrize("text,line,what", [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,3\n", 1, "missing column 'GeneratedTokens'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,4\n2023-11-16 18:15:47,x,4\n", 3,
     "ContextTokens must be a non-negative integer"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,-4\n", 2, "GeneratedTokens is negative"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,4\n\n2023-13-40 18:15:46,3,4\n", 4,
     "impossible date"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,3,4\n", 2, "not a timestamp"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3\n", 2, "column 'GeneratedTokens' is missing"),
])
def test_malformed_azure_names_file_and_line(tmp_path, text, line, what):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(TokenjouleError) as exc:
        load_trace(p, fmt="azure")
    assert str(exc.value).startswith(f"{p}:{line}: ")
    assert what in str(exc.value)


def test_malformed_jsonl_line(tmp_path):
    p = write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 2}\n{"timestamp": 1,\n')
    with pytest.raises(TokenjouleError, match=rf"^{p}:2: not valid JSON"):
        load_trace(p, fmt="mooncake")
    p2 = write(tmp_path, "m2.jsonl", '{"timestamp": 0, "input_length": 1}\n')
    with pytest.raises(TokenjouleError, match=rf"^{p2}:1: missing key 'output_length'"):
        load_trace(p2, fmt="mooncake")


def test_non_utf8_and_empty_files(tmp_path):
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TokenjouleError, match="not UTF-8"):
        load_trace(p)
    with pytest.raises(TokenjouleError, match="empty file"):
        load_trace(write(tmp_path, "e.csv", "\n\n"))


def test_detect_format():
    assert detect_format(AZURE, "x") == "azure"
    assert detect_format(BURSTGPT, "x") == "burstgpt"
    assert detect_format('{"timestamp": 1, "input_length": 2, "output_length": 3}', "x") == "mooncake"
    assert detect_format('{"a": 1}', "x") == "jsonl"
    assert detect_format("input_tokens,output_tokens\n1,2", "x") == "csv"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.lists(st.text(alphabet="0123456789-:. ,xTZ\"\n{}[]", max_size=40), max_size=6).map(
        lambda rows: "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows)),
    st.lists(st.text(alphabet='0123456789-.,"{}:[] \nabtimesplngthuo_', max_size=60), max_size=5).map("\n".join),
), fmt=st.sampled_from([None, "azure", "mooncake", "burstgpt", "csv", "jsonl"]))
def test_fuzzed_files_give_clean_errors(tmp_path, data, fmt):
    p = tmp_path / "fuzz.trace"
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    try:
        w = load_trace(p, fmt=fmt)
    except TokenjouleError as exc:
        assert str(exc)
    else:
        assert len(w) >= 1
        assert all(r.input_tokens >= 0 and r.output_tokens >= 0 for r in w)


@pytest.mark.parametrize("name,n", [("azure-conv-2023", 19_366), ("azure-code-2023", 8_819),
                                    ("mooncake-conversation", 12_031)])
def test_shipped_traces(name, n):
    assert name in list_traces()
    w = load_trace(name)
    assert len(w) == n
    assert w.provenance["removed"] == {}
    assert w.requests[0].arrival_s == 0.0
    arr = [r.arrival_s for r in w]
    assert arr == sorted(arr)
    assert w.provenance["license"]


def test_resolve_workload_names_paths_and_tasks(tmp_path):
    assert len(resolve_workload("task:translation", n=10)) == 10
    assert resolve_workload(write(tmp_path, "a.csv", AZURE)).name == "a"
    with pytest.raises(UnknownNameError, match="azure-conv-2023"):
        resolve_workload("no-such-trace")
    with pytest.raises(UnknownNameError, match="translation"):
        resolve_workload("task:poetry")
