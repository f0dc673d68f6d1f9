"""RAPL through a fake powercap tree in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenjoule.energy import rapl as rapl_mod
from tokenjoule.energy.rapl import RaplReader


def _domain(root: Path, entry: str, name: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    d = root / entry
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def test_missing_powercap_gives_none_and_reason(tmp_path):
    reader = RaplReader(str(tmp_path / "no-such-dir"))
    e = reader.energy_between(reader.read(), reader.read())
    assert e.cpu_energy_j is None and e.dram_energy_j is None
    assert "no " in e.cpu_energy_reason and str(tmp_path) in e.cpu_energy_reason
    assert e.dram_energy_reason


def test_empty_powercap_gives_reason(tmp_path):
    reader = RaplReader(str(tmp_path))
    e = reader.energy_between(reader.read(), reader.read())
    assert e.cpu_energy_j is None and "package" in e.cpu_energy_reason


def test_packages_summed_dram_by_name_psys_skipped(tmp_path):
    p0 = _domain(tmp_path, "intel-rapl:0", "package-0", 100)
    p1 = _domain(tmp_path, "intel-rapl:1", "package-1", 200)
    core = _domain(tmp_path, "intel-rapl:0:0", "core", 50)
    dram = _domain(tmp_path, "intel-rapl:0:1", "dram", 10)
    psys = _domain(tmp_path, "intel-rapl:2", "psys", 0)
    reader = RaplReader(str(tmp_path))
    start = reader.read()
    (p0 / "energy_uj").write_text("1100100")  # +1.1 J
    (p1 / "energy_uj").write_text("2000200")  # +2.0 J
    (core / "energy_uj").write_text("999999")  # inside package-0: not added again
    (dram / "energy_uj").write_text("500010")  # +0.5 J
    (psys / "energy_uj").write_text("9000000")
    e = reader.energy_between(start, reader.read())
    assert e.cpu_energy_j == pytest.approx(3.1)
    assert e.dram_energy_j == pytest.approx(0.5)
    assert e.cpu_energy_reason is None and e.dram_energy_reason is None


def test_wrap_is_unwrapped_with_max_range(tmp_path):
    p0 = _domain(tmp_path, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    reader = RaplReader(str(tmp_path))
    start = reader.read()
    (p0 / "energy_uj").write_text("100000")
    e = reader.energy_between(start, reader.read())
    assert e.cpu_energy_j == pytest.approx(0.2)
    assert e.dram_energy_j is None and "DRAM" in e.dram_energy_reason


def test_permission_denied_names_the_file(tmp_path, monkeypatch):
    _domain(tmp_path, "intel-rapl:0", "package-0", 1)
    real = rapl_mod._read_text

    def deny(path):
        if path.endswith("energy_uj"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(rapl_mod, "_read_text", deny)
    reader = RaplReader(str(tmp_path))
    e = reader.energy_between(reader.read(), reader.read())
    assert e.cpu_energy_j is None
    assert "permission denied" in e.cpu_energy_reason and "energy_uj" in e.cpu_energy_reason
