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
