"""serve-bench's client against a misbehaving loopback server: malformed usage, wrong counts,
drip-fed SSE comments against the whole-request deadline, one huge line. Every bad response
is a failed request with the reason (never a crash, never an ok row); and no credential put in
the URL, the server arguments or the environment reaches the store, an export or the output."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from serving.mock_server import MockConfig
from tokenjoule.cli.main import main
from tokenjoule.limits import MAX_SSE_LINE_BYTES
from tokenjoule.serving.arrivals import ArrivalSpec
from tokenjoule.serving.loadgen import LoadConfig, run_load_sync
from tokenjoule.serving.secrets import redact_args, split_url
from tokenjoule.workloads.request import Request


def _run(srv, requests, **kw):
    cfg = LoadConfig(url=srv.url, model="mock", arrival=ArrivalSpec("closed", concurrency=2), vocab_size=512, **kw)
    return run_load_sync(cfg, requests).records


@pytest.mark.parametrize("usage,needle", [
    ([1, 2], "'usage' is not an object"),
    ("lots", "'usage' is not an object"),
    ({"completion_tokens": "4", "prompt_tokens": 8}, "not an integer"),
    ({"completion_tokens": 4.0, "prompt_tokens": 8}, "not an integer"),
    ({"completion_tokens": -4, "prompt_tokens": 8}, "negative"),
    ({"completion_tokens": 10**308, "prompt_tokens": 8}, "more than the 4 requested"),
    ({"completion_tokens": 100_000, "prompt_tokens": 8}, "more than the 4 requested"),
    ({"completion_tokens": 4, "prompt_tokens": True}, "not an integer"),
])
def test_malformed_or_impossible_usage_is_a_failed_request(mock_server, usage, needle):
    srv = mock_server(MockConfig(usage=usage))
    records = _run(srv, [Request(8, 4)] * 3)
    for rec in records:
        assert not rec.ok and needle in rec.error and rec.error.startswith("invalid server response")


def test_more_tokens_than_requested_is_a_failed_request(mock_server):
    for usage in (True, False):  # counted by the server's usage, or by token events
        srv = mock_server(MockConfig(extra_tokens=50, send_usage=usage))
        rec = _run(srv, [Request(8, 4)])[0]
        assert not rec.ok and ("more than the 4 requested" in rec.error or "54 token events" in rec.error), rec.error


def test_drip_fed_comments_cannot_outlast_the_whole_request_deadline(mock_server):
    srv = mock_server(MockConfig(comment_every_s=0.05))  # a comment well inside any read timeout
    start = time.monotonic()
    records = _run(srv, [Request(8, 4)], timeout_s=0.6)
    elapsed_s = time.monotonic() - start
    assert records[0].error.startswith("timeout") and "0.6" in records[0].error
    assert elapsed_s < 30  # bounded by the deadline (generous: CI machines are slow)


def test_a_line_longer_than_the_bound_fails_the_request(mock_server):
    srv = mock_server(MockConfig(huge_line_bytes=MAX_SSE_LINE_BYTES + (1 << 18)))
    rec = _run(srv, [Request(8, 4)])[0]
    assert not rec.ok and "longer than" in rec.error


def test_bearer_token_and_query_string_are_sent_but_never_part_of_the_path(mock_server):
    srv = mock_server()
    target = split_url(srv.url.replace("http://", "http://user:url-secret@") + "/?api-version=2024&k=v")
    assert target.base == srv.url and target.token == "url-secret"
    records = _run(srv, [Request(8, 4)], api_key="sk-test-1234567890", params=target.params)
    assert records[0].ok, records[0].error
    assert srv.headers[0]["authorization"] == "Bearer sk-test-1234567890"
    assert srv.paths[0] == "/v1/completions?api-version=2024&k=v"


def test_redact_args():
    assert redact_args(["--api-key", "abc", "--port", "1"]) == ["--api-key", "<redacted>", "--port", "1"]
    assert redact_args(["--hf-token=abc", "--max-model-len=9"]) == ["--hf-token=<redacted>", "--max-model-len=9"]
    assert redact_args(["sk-abcdefghijkl"]) == ["<redacted>"]


def test_no_credential_reaches_the_store_exports_or_output(mock_server, tmp_path, capsys, monkeypatch):
    planted = {"url_password": "pw-planted-0001", "url_query": "q-planted-0002", "arg": "arg-planted-0003",
               "env": "sk-envplanted00004"}
    monkeypatch.setenv("OPENAI_API_KEY", planted["env"])
    srv = mock_server()
    url = srv.url.replace("http://", f"http://me:{planted['url_password']}@") + f"?api_key={planted['url_query']}"
    db = tmp_path / "r.db"
    rc = main(["serve-bench", "--url", url, "--model", "tiny", "--arrival", "closed", "--concurrency", "2",
               "--input-tokens", "8", "--output-tokens", "3", "--n-requests", "4", "--meter", "simulated",
               "--idle-s", "0", "--warmup-requests", "0", "--server-arg", f"--api-key={planted['arg']}",
               "--db", str(db), "--json"])
    assert rc == 0
    assert srv.headers[0]["authorization"] == f"Bearer {planted['env']}"  # --api-key/env wins over the URL
    assert srv.paths[0].endswith(f"api_key={planted['url_query']}")
    assert main(["results", "export", "-o", str(tmp_path / "all.csv"), "--db", str(db)]) == 0
    assert main(["results", "show", "1", "--db", str(db)]) == 0
    assert main(["results", "show", "1", "--json", "--db", str(db)]) == 0
    printed = capsys.readouterr()
    conn = sqlite3.connect(db)
    stored = json.dumps([list(r) for r in conn.execute("SELECT * FROM cells")])
    conn.close()
    exported = (tmp_path / "all.csv").read_text()
    for name, secret in planted.items():
        for where, text in (("store", stored), ("export", exported), ("stdout", printed.out), ("stderr", printed.err)):
            assert secret not in text, f"{name} leaked into {where}"
    assert srv.url in stored  # the bare URL is kept as provenance
