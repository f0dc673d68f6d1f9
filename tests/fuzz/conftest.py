"""Helpers of the fuzz suite: run the CLI in-process and fail on any traceback or hang.

`run_cli(args)` calls `tokenjoule.cli.main.main` (the real entry point, which turns user errors
into one line and an exit code) with stdout/stderr captured and a wall-clock alarm: an
exception escaping `main` is a traceback, the alarm firing is a hang; both fail the case.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading

import pytest

CASE_LIMIT_S = 20  # per case; a generous bound on a slow shared 2-core machine


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return

    def _alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(args: list[str], limit_s: int = CASE_LIMIT_S) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one in-process CLI run; raises AssertionError for a
    traceback (any exception escaping main) or a hang."""
    from tokenjoule.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with time_limit(limit_s), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    except Hang as exc:
        raise AssertionError(f"hang: tokenjoule {args!r}: {exc}") from None
    except SystemExit as exc:  # pragma: no cover - main returns codes, never exits
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        raise AssertionError(f"traceback: tokenjoule {args!r}: {type(exc).__name__}: {exc}") from exc
    assert "Traceback (most recent call last)" not in err.getvalue(), err.getvalue()[-2000:]
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def planted_db(tmp_path_factory):
    """A store filled with realistic planted cells (read-only use)."""
    from fakes.planted_store import plant_store

    path = tmp_path_factory.mktemp("fuzz") / "planted.db"
    plant_store(path)
    return path
