"""The report page in headless Chromium: it renders (not one flat colour) and logs nothing to
the console (the page has no script, so any console message is a problem)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")


def _render(page: Path, tmp: Path) -> tuple[Path, list[str]]:
    shot = tmp / f"{page.stem}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return shot, console


def _colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_console_check_catches_a_broken_page(tmp_path):
    """The detector itself: a page with a script error must be caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFn();</script></body></html>")
    _, console = _render(bad, tmp_path)
    assert any("undefinedFn" in line for line in console)


def test_report_page_renders_without_console_errors(built_report, tmp_path):
    _, _, result = built_report
    shot, console = _render(result.index_html, tmp_path)
    assert console == []
    assert shot.exists() and shot.stat().st_size > 10_000
    assert _colours(shot) > 50  # text, figures and tables, not a blank or single-colour page


def _missing_box_share(png: Path) -> float:
    """Share of the screenshot painted in the missing-cells box colour (#fff7e6)."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 22) or []
        total = rgb.width * rgb.height
    return sum(n for n, c in colours if c == (0xFF, 0xF7, 0xE6)) / total


def _first_screen(page: Path, tmp: Path) -> tuple[Path, list[str]]:
    shot = tmp / f"{page.parent.name}-first.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={tmp / 'profile2'}", "--enable-logging=stderr", "--v=0",
           f"--screenshot={shot}", "--window-size=1200,900", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    return shot, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_four_cell_and_evidence_first_screens_show_the_answer(tmp_path):
    import shutil as _sh

    from fakes.planted_store import offline_record
    from tokenjoule.report.build import build_report
    from tokenjoule.store.db import ResultStore

    stores = []
    with ResultStore(tmp_path / "four.db") as store:
        for b in (1, 4):
            for i in (32, 128):
                store.add(offline_record("olmo-1b", "hf", "eager", "greedy", b, i, 16))
        stores.append((build_report(store, tmp_path / "four", traces=["task:translation"]), "four"))
    evidence = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "h100_evidence.db"
    if evidence.is_file():
        _sh.copy(evidence, tmp_path / "evidence.db")
        with ResultStore(tmp_path / "evidence.db") as store:
            stores.append((build_report(store, tmp_path / "evidence", traces=["azure-code-2023"]), "evidence"))
    for result, name in stores:
        shot, console = _first_screen(result.index_html, tmp_path)
        assert console == [], name
        assert _colours(shot) > 50, name
        assert _missing_box_share(shot) < 0.02, name  # the first screen is not a missing-cells list
        html_text = result.index_html.read_text()
        assert html_text.index('id="table_savings"') < html_text.index('id="to-measure"') \
            if 'id="to-measure"' in html_text else True
