"""A planted store and trace shared by the report tests (built once per session)."""

from __future__ import annotations

import pytest

from fakes.planted_store import plant_store, write_planted_trace


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    info = plant_store(root / "planted.db")
    trace = write_planted_trace(root / "planted_trace.csv")
    return info, trace


@pytest.fixture(scope="session")
def built_report(planted, tmp_path_factory):
    """The full report of the planted store with its trace (about 3 s)."""
    from tokenjoule.report.build import build_report
    from tokenjoule.store.db import ResultStore

    info, trace = planted
    out = tmp_path_factory.mktemp("report")
    with ResultStore(info.path) as store:
        result = build_report(store, out, traces=[str(trace)])
    return info, trace, result
