"""Server launch: always stopped (error, Ctrl-C, early exit), and a real `transformers serve`."""

import os
import sys

import pytest

from tokenjoule.errors import MissingDependencyError, TokenjouleError
from tokenjoule.serving.launch import ServerProcess, free_port


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_child_is_terminated_when_the_body_raises(exc_type, tmp_path):
    port = free_port()
    srv = ServerProcess(_http_server(port), port, health_path="/", startup_timeout_s=30,
                        log_path=tmp_path / "s.log")
    with pytest.raises(exc_type):
        with srv:
            pid = srv.pid
            assert srv.proc.poll() is None  # healthy and running
            raise exc_type("boom")
    assert srv.proc.poll() is not None and _gone(pid)


def test_child_that_exits_early_is_a_one_line_error(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; print('cannot load model'); sys.exit(3)"]
    with pytest.raises(TokenjouleError) as info:
        with ServerProcess(cmd, port, log_path=tmp_path / "s.log", name="fake server"):
            pass
    msg = str(info.value)
    assert "exited with code 3" in msg and "cannot load model" in msg and "\n" not in msg


def test_health_timeout_stops_the_child(tmp_path):
    port = free_port()
    srv = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"], port, startup_timeout_s=0.5)
    with pytest.raises(TokenjouleError, match="not healthy"):
        srv.__enter__()
    assert srv.proc.poll() is not None


def test_vllm_launcher_without_vllm_is_one_line(monkeypatch):
    import importlib.util

    from tokenjoule.serving.launch import server_command

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="pip install"):
        server_command("vllm", "/tmp/x", 1234, "m")


def _serve_available() -> bool:
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        return False
    return is_serve_available()


@pytest.mark.skipif(not _serve_available(), reason="transformers serve needs fastapi, uvicorn and openai "
                                                   "(pip install 'tokenjoule[serve]')")
def test_transformers_serve_tiny_end_to_end(tmp_path, capsys):
    """A real `transformers serve` of the tiny preset on CPU (about 10 s): exact output lengths
    from a model without EOS, token counts from the server's usage, the server stopped after."""
    from tokenjoule.cli.main import main
    from tokenjoule.store.db import ResultStore

    rc = main(["serve-bench", "--launch", "transformers", "--device", "cpu", "--model", "tiny",
               "--arrival", "closed", "--concurrency", "2", "--input-tokens", "12", "--output-tokens", "5",
               "--n-requests", "4", "--meter", "simulated", "--idle-s", "0", "--warmup-requests", "1",
               "--db", str(tmp_path / "r.db"), "--json"])
    assert rc == 0, capsys.readouterr().err
    with ResultStore(tmp_path / "r.db") as store:
        row = store.find(kind="online")[0]
    assert row.metrics["requests_ok"] == 4, row.measurement["requests"]
    for r in row.measurement["requests"]:
        assert r["output_tokens"] == 5 and r["output_tokens_source"] == "usage"
        assert r["prompt_tokens"] == 12
    assert row.provenance["server"] == "transformers"
